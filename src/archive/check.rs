//! The checks every entry of an archive passes before a restore writes anything: no
//! absolute paths, no `..`, no backslashes or drive letters, no control characters, no links
//! or special files, no duplicates, no encryption, only Stored and Deflate, limits on entry
//! count, path depth and length, total size and compression ratio, and entries that overlap
//! neither each other nor the central directory. What passes is the [`Plan`].

use crate::archive::error::ArchiveError;
use crate::archive::zip::Entry;
use crate::archive::zip::spec::*;
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

/// Restore limits (zip-bomb and sanity guards).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entries: u64,
    /// Total uncompressed size.
    pub max_total_size: u64,
    /// Largest uncompressed/compressed ratio of one entry (for entries over 1 MiB).
    pub max_ratio: u64,
    /// Largest central directory read into memory.
    pub max_index_bytes: u64,
    /// Most path components of one entry.
    pub max_depth: usize,
    /// Longest path component, in bytes (what most file systems allow).
    pub max_component_bytes: usize,
    /// Longest entry path, in bytes.
    pub max_path_bytes: usize,
}

impl Limits {
    /// The defaults, once for the code and the command line (`--restore-max-*`).
    pub const DEFAULT: Self = Self {
        max_entries: 1_000_000,
        max_total_size: 1 << 40,
        max_ratio: 200,
        max_index_bytes: 256 << 20,
        max_depth: 64,
        max_component_bytes: 255,
        max_path_bytes: 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// An entry that passed the checks, with where it goes.
#[derive(Debug, Clone)]
pub struct Planned {
    pub entry: Entry,
    /// Relative path (normal components only).
    pub path: PathBuf,
    pub is_dir: bool,
}

/// The restore plan: checked entries in archive order, and what they add up to.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub items: Vec<Planned>,
    pub total_size: u64,
    /// Entries left out because they fall under excluded paths.
    pub skipped: u64,
}

/// Checks every entry (see the module docs) and returns the plan, in offset order.
/// `exclude` are paths a restore leaves alone (their entries are skipped, not refused).
///
/// # Errors
/// The first entry that is unsafe, unsupported, over a limit, or overlapping another.
pub fn check_entries(
    entries: Vec<Entry>,
    cd_offset: u64,
    limits: &Limits,
    exclude: &[PathBuf],
) -> Result<Plan, ArchiveError> {
    check_count(entries.len(), limits)?;
    let mut plan = Plan::default();
    let mut tree = Tree::default();
    for entry in entries {
        let name = entry.name_lossy();
        let is_dir = entry.is_dir();
        check_kind(&entry, &name, is_dir)?;
        let path = safe_path(&entry.raw_name).map_err(|why| unsafe_entry(&name, why))?;
        check_path_limits(&name, &path, entry.raw_name.len(), limits)?;
        if exclude.iter().any(|x| path.starts_with(x)) {
            plan.skipped += 1;
            continue;
        }
        if is_dir && entry.uncompressed != 0 {
            return Err(unsafe_entry(&name, "directory with contents"));
        }
        tree.claim(&path, is_dir)
            .map_err(|why| unsafe_entry(&name, why))?;
        if !is_dir {
            check_sizes(&entry, &name, limits)?;
            plan.total_size = plan.total_size.saturating_add(entry.uncompressed);
            if plan.total_size > limits.max_total_size {
                return Err(ArchiveError::Limit(format!(
                    "more than {} bytes uncompressed",
                    limits.max_total_size
                )));
            }
        }
        plan.items.push(Planned {
            entry,
            path,
            is_dir,
        });
    }
    if plan.items.is_empty() {
        return Err(ArchiveError::Empty(
            "every entry is in a path that a restore leaves alone",
        ));
    }
    plan.items.sort_by_key(|p| p.entry.offset);
    check_layout(&plan.items, cd_offset)?;
    Ok(plan)
}

fn unsafe_entry(name: &str, why: &'static str) -> ArchiveError {
    ArchiveError::UnsafeEntry {
        name: name.to_string(),
        why,
    }
}

/// At least one entry, at most `max_entries`.
fn check_count(count: usize, limits: &Limits) -> Result<(), ArchiveError> {
    if count == 0 {
        return Err(ArchiveError::Empty("no entries"));
    }
    if count as u64 > limits.max_entries {
        return Err(ArchiveError::Limit(format!(
            "{count} entries, at most {} allowed",
            limits.max_entries
        )));
    }
    Ok(())
}

/// Not encrypted, a plain file or directory, and (for a file) Stored or Deflated.
fn check_kind(entry: &Entry, name: &str, is_dir: bool) -> Result<(), ArchiveError> {
    if entry.flags & FLAG_ENCRYPTED != 0 {
        return Err(ArchiveError::Unsupported {
            name: name.to_string(),
            why: "encrypted",
        });
    }
    if let Some(mode) = entry.unix_mode {
        match mode & S_IFMT {
            0 | S_IFREG | S_IFDIR => {}
            S_IFLNK => return Err(unsafe_entry(name, "symbolic link")),
            _ => return Err(unsafe_entry(name, "special file")),
        }
    }
    if !is_dir && entry.method != METHOD_STORED && entry.method != METHOD_DEFLATE {
        return Err(ArchiveError::Unsupported {
            name: name.to_string(),
            why: "compression method (only Stored and Deflate)",
        });
    }
    Ok(())
}

/// The paths claimed so far: a file path may appear once, and never also as a directory
/// or below a file. `dirs` and `files` never share a path.
#[derive(Default)]
struct Tree {
    files: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
}

impl Tree {
    fn claim(&mut self, path: &Path, is_dir: bool) -> Result<(), &'static str> {
        for parent in path.ancestors().skip(1) {
            if parent.as_os_str().is_empty() {
                break;
            }
            if self.files.contains(parent) {
                return Err("entry below a file");
            }
            if self.dirs.contains(parent) {
                // Its ancestors were checked and recorded with it: no allocation per
                // ancestor per entry.
                break;
            }
            self.dirs.insert(parent.to_path_buf());
        }
        if self.files.contains(path) || (!is_dir && self.dirs.contains(path)) {
            return Err("duplicate entry");
        }
        if is_dir {
            self.dirs.insert(path.to_path_buf());
        } else {
            self.files.insert(path.to_path_buf());
        }
        Ok(())
    }
}

/// A file's sizes: a compression ratio within the limit, and equal sizes when Stored.
fn check_sizes(entry: &Entry, name: &str, limits: &Limits) -> Result<(), ArchiveError> {
    let ratio = entry.uncompressed / entry.compressed.max(1);
    if entry.uncompressed > (1 << 20) && ratio > limits.max_ratio {
        return Err(ArchiveError::Limit(format!(
            "entry {name:?} expands {ratio}x, at most {}x allowed",
            limits.max_ratio
        )));
    }
    if entry.method == METHOD_STORED && entry.compressed != entry.uncompressed {
        return Err(ArchiveError::Corrupt {
            name: name.to_string(),
            why: "stored entry with different sizes".into(),
        });
    }
    Ok(())
}

/// Entries (in offset order) may not overlap each other or the central directory.
fn check_layout(items: &[Planned], cd_offset: u64) -> Result<(), ArchiveError> {
    let end = |e: &Entry| e.offset + LOCAL_HEADER_LEN + e.compressed;
    for pair in items.windows(2) {
        let (a, b) = (&pair[0].entry, &pair[1].entry);
        if end(a) > b.offset {
            return Err(unsafe_entry(&b.name_lossy(), "overlaps another entry"));
        }
    }
    if let Some(last) = items.last()
        && end(&last.entry) > cd_offset
    {
        return Err(unsafe_entry(
            &last.entry.name_lossy(),
            "overlaps the central directory",
        ));
    }
    Ok(())
}

/// Depth and length limits of one entry's path (`name_len`: the stored name's bytes).
fn check_path_limits(
    name: &str,
    path: &Path,
    name_len: usize,
    limits: &Limits,
) -> Result<(), ArchiveError> {
    let depth = path.components().count();
    if depth > limits.max_depth {
        return Err(ArchiveError::Limit(format!(
            "entry {:?}: {depth} path components, at most {} allowed",
            truncated(name),
            limits.max_depth
        )));
    }
    if let Some(long) = path
        .components()
        .map(|c| c.as_os_str().len())
        .find(|&n| n > limits.max_component_bytes)
    {
        return Err(ArchiveError::Limit(format!(
            "entry {:?}: a path component of {long} bytes, at most {} allowed",
            truncated(name),
            limits.max_component_bytes
        )));
    }
    if name_len > limits.max_path_bytes {
        return Err(ArchiveError::Limit(format!(
            "entry {:?}: a path of {name_len} bytes, at most {} allowed",
            truncated(name),
            limits.max_path_bytes
        )));
    }
    Ok(())
}

/// The start of a long name, for messages.
fn truncated(name: &str) -> String {
    match name.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &name[..i]),
        None => name.to_string(),
    }
}

/// The relative path of an entry name, or why it is unsafe.
fn safe_path(raw: &[u8]) -> Result<PathBuf, &'static str> {
    if raw.is_empty() {
        return Err("empty name");
    }
    if raw.contains(&0) {
        return Err("NUL in name");
    }
    // Terminal escapes, line breaks and the like: no file name needs them, and they would
    // reach logs and listings as they are.
    if raw.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err("control character in name");
    }
    if raw.contains(&b'\\') {
        return Err("backslash in name");
    }
    if raw[0] == b'/' {
        return Err("absolute path");
    }
    if raw.len() >= 2 && raw[1] == b':' && raw[0].is_ascii_alphabetic() {
        return Err("drive letter");
    }
    let trimmed = raw.strip_suffix(b"/").unwrap_or(raw);
    let mut path = PathBuf::new();
    for part in trimmed.split(|&b| b == b'/') {
        match part {
            b"" => return Err("empty path component"),
            b"." | b".." => return Err("relative path component"),
            _ => path.push(os_str(part)?),
        }
    }
    // Belt and braces: the platform's own view of the path must agree.
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err("not a plain relative path");
    }
    Ok(path)
}

#[cfg(unix)]
fn os_str(b: &[u8]) -> Result<&std::ffi::OsStr, &'static str> {
    Ok(std::os::unix::ffi::OsStrExt::from_bytes(b))
}

#[cfg(not(unix))]
fn os_str(b: &[u8]) -> Result<&std::ffi::OsStr, &'static str> {
    std::str::from_utf8(b)
        .map(std::ffi::OsStr::new)
        .map_err(|_| "name is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names_are_refused() {
        for bad in [
            &b"../x"[..],
            b"/etc/passwd",
            b"a/../../x",
            b"a\\..\\x",
            b"C:/x",
            b"a//b",
            b"./a",
            b"",
            b"a\0b",
        ] {
            assert!(
                safe_path(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(safe_path(b"a/b/c").unwrap(), PathBuf::from("a/b/c"));
        assert_eq!(safe_path(b"a/b/").unwrap(), PathBuf::from("a/b"));
    }
}
