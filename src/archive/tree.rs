//! The data directory as the archive sees it: one walk in archive order ([`walk`]), the
//! survey a create makes before it starts ([`survey`]: the size estimate and the SQLite
//! databases), and what is left out ([`Exclude`]).
//!
//! It owns no zip format and no SQLite access: the writer and [`super::sqlite`] consume
//! what it finds.

use super::meta::EntryMeta;
use super::reuse::Manifest;
use super::sqlite;
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io;
use std::path::{Path, PathBuf};

/// Paths left out of an archive (with everything below them): exact paths relative to the
/// root (the gateway's own state, a local backups directory, PocketBase's scratch
/// directories) and `--exclude` globs.
///
/// A glob is matched against the path relative to the data directory with `/` between
/// components: `*` stays inside one component, `**` crosses them (`logs/*.log`,
/// `**/*.tmp`, `storage/big_collection`). A matching directory is left out whole.
#[derive(Debug, Clone, Default)]
pub struct Exclude {
    paths: Vec<PathBuf>,
    globs: globset::GlobSet,
}

impl Exclude {
    /// Exact paths only.
    pub fn paths(paths: Vec<PathBuf>) -> Self {
        Self {
            paths,
            globs: globset::GlobSet::empty(),
        }
    }

    /// Exact paths and glob patterns.
    ///
    /// # Errors
    /// A pattern that is not a valid glob.
    pub fn new(paths: Vec<PathBuf>, patterns: &[String]) -> Result<Self, globset::Error> {
        let mut set = globset::GlobSetBuilder::new();
        for p in patterns {
            set.add(
                globset::GlobBuilder::new(p.trim_end_matches('/'))
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()?,
            );
        }
        Ok(Self {
            paths,
            globs: set.build()?,
        })
    }

    /// True when `rel` (relative to the root) is left out.
    pub fn excludes(&self, rel: &Path) -> bool {
        self.paths.iter().any(|p| p == rel) || self.globs.is_match(rel)
    }
}

/// One thing found by [`walk`], in archive order.
pub(crate) enum Found {
    Dir(EntryMeta),
    /// A regular file, not opened (see [`walk`]), and where it is.
    File {
        meta: EntryMeta,
        path: PathBuf,
    },
}

/// Walks the tree: each directory's entries in name order, then its subdirectories the same
/// way, depth first; skipping excluded paths, links and special files.
///
/// Files are found, not opened: closing any descriptor of a file drops every POSIX lock
/// the process holds on it, SQLite's included, so a database or its `-wal`, `-shm` or
/// `-journal` must never be opened as a plain file while one of the create's snapshots
/// may hold it. The consumer decides first ([`open_file`] for the plain files).
///
/// # Errors
/// Unreadable directories, or an error of `visit`.
pub(crate) fn walk(
    root: &Path,
    exclude: &Exclude,
    visit: &mut dyn FnMut(Found) -> io::Result<()>,
) -> io::Result<()> {
    traverse(root, exclude, &mut |rel, meta| {
        let ft = meta.file_type();
        if ft.is_dir() {
            visit(Found::Dir(EntryMeta::of(rel, meta)))
        } else if ft.is_file() {
            visit(Found::File {
                meta: EntryMeta::of(rel, meta),
                path: root.join(rel),
            })
        } else {
            tracing::warn!(path = %rel.display(), "skipping a link or special file");
            Ok(())
        }
    })
}

/// Opens a plain file found by [`walk`] (never a database or a sidecar of one: see there).
/// `None` when it vanished since it was found.
///
/// # Errors
/// Any other failure to open it, naming the file by `name`.
pub(crate) fn open_file(path: &Path, name: &[u8]) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot read {}: {e}", String::from_utf8_lossy(name)),
        )),
    }
}

/// The one traversal behind [`walk`] and [`survey`]: `visit` gets every path that is not
/// excluded (relative to `root`) with its metadata (links not followed), in archive order.
fn traverse(
    root: &Path,
    exclude: &Exclude,
    visit: &mut dyn FnMut(&Path, &Metadata) -> io::Result<()>,
) -> io::Result<()> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut subdirs = Vec::new();
        for (name, meta) in children(root, &rel, exclude)? {
            let child_rel = rel.join(&name);
            visit(&child_rel, &meta)?;
            if meta.is_dir() {
                subdirs.push(child_rel);
            }
        }
        // Depth first, in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

/// The entries of `root/rel` that are not excluded, in name order, with their metadata
/// (not following links). Entries that vanish meanwhile are left out.
fn children(root: &Path, rel: &Path, exclude: &Exclude) -> io::Result<Vec<(OsString, Metadata)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let name = entry.file_name();
        if exclude.excludes(&rel.join(&name)) {
            continue;
        }
        match entry.path().symlink_metadata() {
            Ok(meta) => out.push((name, meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// What a create needs to know before it streams anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Survey {
    /// Sum of the regular files' sizes (for choosing the part size).
    pub bytes: u64,
    /// Files and directories: the entries the archive will have (for the progress).
    pub entries: u64,
    /// Regular files that start with SQLite's header, relative to the root, in walk order.
    pub databases: Vec<PathBuf>,
    /// Files and directories (zip names, a directory's without its `/`) that the previous
    /// archive holds as they are now (see [`super::reuse`]); never a database or a sidecar
    /// of one.
    pub unchanged: std::collections::HashSet<Vec<u8>>,
}

/// Walks the tree once: the size estimate, and every SQLite database recognised by its
/// header whatever its name (a file of at least one page that starts with
/// `SQLite format 3\0`). The sidecars of a database found (which sort after it) are not
/// opened: they are never databases, and they hold SQLite's locks (see [`walk`]). With the
/// previous archive's `manifest`, the files it holds unchanged too.
///
/// # Errors
/// When a directory cannot be read.
pub fn survey(root: &Path, exclude: &Exclude, manifest: Option<&Manifest>) -> io::Result<Survey> {
    let mut out = Survey::default();
    let mut databases = std::collections::HashSet::new();
    traverse(root, exclude, &mut |rel, meta| {
        if !meta.is_file() && !meta.is_dir() {
            return Ok(());
        }
        out.entries += 1;
        let entry = EntryMeta::of(rel, meta);
        if meta.is_dir() {
            if manifest.is_some_and(|m| m.unchanged_dir(&entry)) {
                out.unchanged.insert(entry.name);
            }
            return Ok(());
        }
        out.bytes += meta.len();
        if sqlite::is_sidecar(&entry.name, &databases) {
            return Ok(());
        }
        if meta.len() >= sqlite::MIN_FILE_LEN && sqlite::has_header(&root.join(rel), meta) {
            out.databases.push(rel.to_path_buf());
            databases.insert(entry.name);
        } else if manifest.is_some_and(|m| m.unchanged(&entry, meta.len())) {
            out.unchanged.insert(entry.name);
        }
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(root: &Path, exclude: &Exclude) -> Vec<String> {
        let mut out = Vec::new();
        walk(root, exclude, &mut |found| {
            out.push(match found {
                Found::Dir(meta) => format!("{}/", meta.name_lossy()),
                Found::File { meta, .. } => meta.name_lossy(),
            });
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn globs_leave_out_files_and_whole_directories_and_stay_inside_a_component() {
        let dir = tempfile::tempdir().unwrap();
        for rel in [
            "data.db",
            "logs/a.log",
            "logs/keep.txt",
            "logs/deep/b.log",
            "cache/x/y.bin",
            "storage/tmp.tmp",
            "storage/c/d.tmp",
        ] {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let patterns = ["logs/*.log".to_string(), "cache/".into(), "**/*.tmp".into()];
        let exclude = Exclude::new(vec![PathBuf::from("data.db")], &patterns).unwrap();

        let got = names(dir.path(), &exclude);

        assert_eq!(
            got,
            // A directory's entries in name order, then its subdirectories.
            [
                "logs/",
                "storage/",
                "logs/deep/",
                "logs/keep.txt",
                "logs/deep/b.log",
                "storage/c/"
            ]
        );
    }

    #[test]
    fn an_invalid_glob_is_refused() {
        let err = Exclude::new(Vec::new(), &["logs/[".to_string()]).unwrap_err();
        assert!(
            err.to_string().contains("unclosed character class"),
            "{err}"
        );
    }
}
