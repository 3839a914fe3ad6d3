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
        if let Ok(bytes) = serde_json::to_vec_pretty(&value)
            && let Err(e) = write_atomic(&self.path, &bytes, 0o600)
        {
            tracing::error!(error = %e, path = %self.path.display(), "cannot save the outcome");
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
    }
}

/// A random string of `[a-zA-Z0-9]` from the thread's CSPRNG (names, token secrets).
pub fn random_string(len: usize) -> String {
    random_from(
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        len,
    )
}

/// `len` characters drawn from the ASCII alphabet `chars` by the thread's CSPRNG.
pub fn random_from(chars: &[u8], len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| chars[rng.random_range(0..chars.len())] as char)
        .collect()
}
