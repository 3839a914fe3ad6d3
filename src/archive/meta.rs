//! What an archive records of an entry besides its bytes: its name, Unix mode,
//! modification time and identity ([`EntryMeta`]), and the mapping between zip names and
//! relative paths.

use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The name (relative, `/`-separated, without a directory's trailing `/`), the Unix mode
/// (type and permission bits), the modification time (Unix nanoseconds) and the identity
/// of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    pub name: Vec<u8>,
    pub mode: u32,
    pub mtime_ns: i64,
    pub identity: Identity,
}

/// What tells a file apart from another of the same name, size, mode and modification
/// time: its change time, which no user-space call can set (every write, `utimensat`,
/// `chmod` and rename moves it to the current time), and its device and inode, which a
/// new file renamed over it does not share. An incremental create takes a file's entry
/// from the previous archive only when these are the ones recorded there
/// ([`super::reuse`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Identity {
    /// The change time, Unix nanoseconds.
    pub ctime_ns: i64,
    pub dev: u64,
    pub ino: u64,
}

impl Identity {
    /// The identity in `meta` (the default where the platform has none).
    #[cfg(unix)]
    pub fn of(meta: &Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            ctime_ns: crate::util::fsutil::ctime_ns(meta),
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// The identity in `meta` (the default where the platform has none).
    #[cfg(not(unix))]
    pub fn of(_meta: &Metadata) -> Self {
        Self::default()
    }
}

impl EntryMeta {
    /// The entry of the path `rel` (relative to the archived root) with metadata `meta`.
    pub fn of(rel: &Path, meta: &Metadata) -> Self {
        Self {
            name: zip_name(rel),
            mode: mode(meta),
            mtime_ns: mtime_ns(meta),
            identity: Identity::of(meta),
        }
    }

    /// The modification time in whole seconds (what the zip's time fields hold).
    pub fn mtime(&self) -> i64 {
        self.mtime_ns.div_euclid(1_000_000_000)
    }

    /// The name for messages.
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// The zip name of a relative path: its components joined by `/`.
#[cfg(unix)]
pub fn zip_name(rel: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for (i, c) in rel.components().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c.as_os_str().as_bytes());
    }
    out
}

/// The zip name of a relative path: its components joined by `/`.
#[cfg(not(unix))]
pub fn zip_name(rel: &Path) -> Vec<u8> {
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.join("/").into_bytes()
}

/// The relative path of a zip name made by [`zip_name`] (its inverse).
#[cfg(unix)]
pub fn rel_path(name: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(name))
}

/// The relative path of a zip name made by [`zip_name`] (its inverse).
#[cfg(not(unix))]
pub fn rel_path(name: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(name).into_owned())
}

#[cfg(unix)]
fn mode(meta: &Metadata) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&meta.permissions())
}

#[cfg(not(unix))]
fn mode(meta: &Metadata) -> u32 {
    use super::zip::spec::{S_IFDIR, S_IFREG};
    if meta.is_dir() {
        S_IFDIR | 0o755
    } else {
        S_IFREG | 0o644
    }
}

fn mtime_ns(meta: &Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zip_names_and_relative_paths_are_inverses() {
        let rel = Path::new("storage/ünï/a b.txt");
        let name = zip_name(rel);
        assert_eq!(name, "storage/ünï/a b.txt".as_bytes());
        assert_eq!(rel_path(&name), rel);
    }
}
