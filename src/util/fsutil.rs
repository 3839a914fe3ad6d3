//! Filesystem helpers shared by the local store, the state files, restore and the schedule:
//! directory fsync, atomic file writes, the last value of a kind kept in a file, and the
//! random names of temporary files, work directories and secrets.

use std::io;
use std::path::Path;

/// fsyncs a directory so that a rename or create inside it survives a crash.
///
/// # Errors
/// When the directory cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it (created with `mode` on
/// Unix), fsync, rename, fsync of the directory. Directories it creates are 0700. A crash leaves the old file or the new one,
/// never a mix; the temporary file is removed on error.
///
/// # Errors
/// When the directory cannot be created or any step fails.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", random_string(8)));
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The file system's own "now" in `dir`: the change time (Unix nanoseconds) of a file
/// written there and removed at once, and the device it is on. It is the time, in the file
/// system's granularity and from the clock it takes times from (the kernel's coarse clock,
/// or an NFS server's), that a file of that device changed from now on gets at the least,
/// which the wall clock is not.
///
/// # Errors
/// When the file cannot be written, inspected or removed.
pub fn file_system_now(dir: &Path) -> io::Result<FsNow> {
    use std::io::Write;
    create_private_dir_all(dir)?;
    let path = dir.join(format!(".clock.{}.tmp", random_string(8)));
    let result = (|| -> io::Result<FsNow> {
        let mut f = std::fs::File::create_new(&path)?;
        f.write_all(b"t")?;
        let meta = f.metadata()?;
        Ok(FsNow {
            ns: ctime_ns(&meta),
            dev: device(&meta),
        })
    })();
    let removed = std::fs::remove_file(&path);
    let now = result?;
    removed?;
    Ok(now)
}

/// What [`file_system_now`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsNow {
    /// The change time of a file written then, Unix nanoseconds.
    pub ns: i64,
    /// The device it was on: the time holds for files of this device only.
    pub dev: u64,
}

#[cfg(unix)]
fn device(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::dev(meta)
}

#[cfg(not(unix))]
fn device(_meta: &std::fs::Metadata) -> u64 {
    0
}

/// True when the file system of `dir` keeps real change times and inode numbers, which
/// no user-space call can set back: ext2/3/4, XFS, btrfs, ZFS, F2FS, tmpfs and overlayfs
/// (by `statfs`'s type). FAT and exFAT derive them from the modification time and the
/// directory entry's place, FUSE file systems report what their daemon says, and NFS
/// clients cache attributes: files there are never taken as unchanged.
pub fn keeps_change_times(dir: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        const TRUSTED: [i64; 7] = [
            0xEF53,      // ext2, ext3, ext4
            0x5846_5342, // XFS
            0x9123_683E, // btrfs
            0x2FC1_2FC1, // ZFS
            0xF2F5_2010, // F2FS
            0x0102_1994, // tmpfs
            0x794C_7630, // overlayfs
        ];
        // `f_type` is an i64 on x86_64 and narrower elsewhere.
        #[allow(clippy::unnecessary_cast)]
        rustix::fs::statfs(dir).is_ok_and(|s| TRUSTED.contains(&(s.f_type as i64)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}

/// The change time of `meta` in Unix nanoseconds (the modification time where the
/// platform has no change time).
#[cfg(unix)]
pub fn ctime_ns(meta: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    meta.ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.ctime_nsec())
}

/// The change time of `meta` in Unix nanoseconds (the modification time where the
/// platform has no change time).
#[cfg(not(unix))]
pub fn ctime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// `create_dir_all`, the directories it creates 0700 whatever the umask (the state
/// directory's, the pending uploads'). Existing ones are left as they are.
///
/// # Errors
/// When a directory cannot be created.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Makes `dir` 0700 (readable by the gateway's user only).
///
/// # Errors
/// When its permissions cannot be changed.
pub fn make_private_dir(dir: &Path) -> io::Result<()> {
    set_mode(dir, 0o700)
}

/// Sets `path`'s permission bits to `mode` unless they are already `mode` (Unix only).
///
/// # Errors
/// When the permissions cannot be read or changed.
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::symlink_metadata(path)?;
        if meta.permissions().mode() & 0o7777 != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// The last value of a kind (an operation's outcome), in memory and in a JSON file beside
/// the gateway's state, so that it survives restarts. A file that cannot be read or parsed
/// counts as none; a failed write is logged, and the value is kept in memory anyway.
#[derive(Debug)]
pub struct Kept<T> {
    path: std::path::PathBuf,
    last: std::sync::Mutex<Option<T>>,
}

impl<T: Clone + serde::Serialize + serde::de::DeserializeOwned> Kept<T> {
    pub fn open(path: std::path::PathBuf) -> Self {
        let last = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        Self {
            path,
            last: std::sync::Mutex::new(last),
        }
    }

    pub fn last(&self) -> Option<T> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, value: T) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        self.save(&value);
        *last = Some(value);
    }

    /// Changes the value in place (from its default when there is none yet), and saves it;
    /// two updates never lose each other's change.
    pub fn update(&self, change: impl FnOnce(&mut T))
    where
        T: Default,
    {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let mut value = last.take().unwrap_or_default();
        change(&mut value);
        self.save(&value);
        *last = Some(value);
    }

    fn save(&self, value: &T) {
        if let Ok(bytes) = serde_json::to_vec_pretty(value)
            && let Err(e) = write_atomic(&self.path, &bytes, 0o600)
        {
            tracing::error!(error = %e, path = %self.path.display(), "cannot save the outcome");
        }
    }
}

/// A random string of `[a-zA-Z0-9]` from the thread's CSPRNG (names, token secrets).
pub fn random_string(len: usize) -> String {
    random_from(
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        len,
    )
}

/// `n` random characters of `[a-z0-9]` (PocketBase's alphabet for ids and file names).
pub fn random_lower(n: usize) -> String {
    random_from(b"abcdefghijklmnopqrstuvwxyz0123456789", n)
}

/// `len` characters drawn from the ASCII alphabet `chars` by the thread's CSPRNG.
pub fn random_from(chars: &[u8], len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| chars[rng.random_range(0..chars.len())] as char)
        .collect()
}
