//! Backups in a local directory (the default: `<data dir>/backups`).
//!
//! A put writes to a hidden temporary file in the same directory, fsyncs it, and then
//! hard-links it to its final name, which fails if the name exists (an atomic no-clobber
//! rename); the temporary file is removed on every path, including a dropped future.
//!
//! A backup is a whole copy of the database: the files are created 0600 and the directory
//! is made 0700 when the store opens, whatever the umask.

use super::{BackupInfo, BackupStore, ByteRange, ByteStream, PutOptions, Result, StorageError};
use futures::TryStreamExt;
use std::io;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

/// Prefix of in-progress files; never listed.
const TEMP_PREFIX: &str = ".tmp-";

#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    /// A store in `dir`, created if missing.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        crate::util::fsutil::make_private_dir(&dir)?;
        // Leftovers of a crash in the middle of a put: beside the backups, and in the
        // point-in-time history's folders.
        remove_temp_files(&dir, 0);
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }
}

fn io_err(context: &str, e: io::Error) -> StorageError {
    if e.kind() == io::ErrorKind::NotFound {
        StorageError::NotFound
    } else {
        StorageError::backend(context.to_string(), e)
    }
}

fn info(key: String, meta: &std::fs::Metadata) -> BackupInfo {
    let modified = meta
        .modified()
        .map(time::OffsetDateTime::from)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    BackupInfo {
        key,
        size: meta.len(),
        modified,
        etag: None,
    }
}

/// Deletes the temporary files under `dir` (its folders too, a few levels deep: the
/// history's `.pitr/v1/<db>/<history>/`).
fn remove_temp_files(dir: &Path, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && depth < 4 {
            remove_temp_files(&e.path(), depth + 1);
        } else if !is_dir && e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `body` to `path` whole or not at all (a temporary file beside it, synced, then
/// renamed), creating its directories.
fn write_nested(path: &Path, body: &[u8]) -> io::Result<()> {
    let parent = path.parent().ok_or_else(|| io::Error::other("no parent"))?;
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(
        "{TEMP_PREFIX}{}",
        crate::util::fsutil::random_string(12)
    ));
    let guard = TempGuard(tmp.clone());
    std::fs::write(&tmp, body)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::mem::forget(guard);
    crate::util::fsutil::sync_dir(parent)
}

/// The files under `dir` (recursively), as keys relative to `root`, with their sizes;
/// temporary files left out. A missing `dir` has none.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        // An object deleted since the directory was read (a compaction's parts) is not
        // listed, and is no error.
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let path = entry.path();
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if meta.is_file()
            && let Some(key) = path.strip_prefix(root).ok().and_then(|k| k.to_str())
        {
            out.push((key.to_string(), meta.len()));
        }
    }
    Ok(())
}

/// Removes the temporary file on every path: after the final name is linked, on an error,
/// and when the put future is dropped.
struct TempGuard(PathBuf);

impl Drop for TempGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[async_trait::async_trait]
impl BackupStore for LocalStore {
    #[tracing::instrument(skip(self))]
    async fn list(&self) -> Result<Vec<BackupInfo>> {
        let mut out = Vec::new();
        let mut rd = tokio::fs::read_dir(&self.dir)
            .await
            .map_err(|e| io_err("listing backups", e))?;
        while let Some(e) = rd
            .next_entry()
            .await
            .map_err(|e| io_err("listing backups", e))?
        {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || crate::keys::check_key(&name).is_err() {
                continue;
            }
            let Ok(meta) = e.metadata().await else {
                continue;
            };
            if meta.is_file() {
                out.push(info(name, &meta));
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn stat(&self, key: &str) -> Result<Option<BackupInfo>> {
        match tokio::fs::metadata(self.path(key)).await {
            Ok(meta) if meta.is_file() => Ok(Some(info(key.to_string(), &meta))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading a backup's metadata", e)),
        }
    }

    #[tracing::instrument(skip(self, body, opts), fields(key = %key))]
    async fn put(&self, key: &str, mut body: ByteStream<'_>, opts: PutOptions) -> Result<u64> {
        if opts.copy.is_some() {
            return Err(StorageError::Backend(
                "the local store copies no ranges (full creates only)".into(),
                None,
            ));
        }
        let final_path = self.path(key);
        if tokio::fs::symlink_metadata(&final_path).await.is_ok() {
            return Err(StorageError::AlreadyExists);
        }
        // Beside the final name: a key with `/` (the point-in-time history) lives in
        // folders of its own.
        let parent = final_path.parent().unwrap_or(&self.dir).to_path_buf();
        if parent != self.dir {
            tokio::fs::create_dir_all(&parent)
                .await
                .map_err(|e| io_err("creating a folder", e))?;
        }
        let tmp = parent.join(format!(
            "{TEMP_PREFIX}{}-{}",
            crate::util::fsutil::random_string(12),
            key.rsplit('/').next().unwrap_or(key)
        ));
        let _guard = TempGuard(tmp.clone());
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .await
            .map_err(|e| io_err("creating a temporary file", e))?;
        let mut size = 0u64;
        while let Some(chunk) = body.try_next().await.map_err(StorageError::Body)? {
            file.write_all(&chunk)
                .await
                .map_err(|e| io_err("writing a backup", e))?;
            size += chunk.len() as u64;
        }
        file.flush()
            .await
            .map_err(|e| io_err("writing a backup", e))?;
        file.sync_all()
            .await
            .map_err(|e| io_err("syncing a backup", e))?;
        drop(file);
        match tokio::fs::hard_link(&tmp, &final_path).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StorageError::AlreadyExists);
            }
            // Filesystems without hard links: check, then rename (not atomic against a
            // concurrent writer of the same key, which the API's key reservation excludes).
            Err(_) => {
                if tokio::fs::symlink_metadata(&final_path).await.is_ok() {
                    return Err(StorageError::AlreadyExists);
                }
                tokio::fs::rename(&tmp, &final_path)
                    .await
                    .map_err(|e| io_err("renaming a backup", e))?;
            }
        }
        let _ = tokio::task::spawn_blocking(move || crate::util::fsutil::sync_dir(&parent)).await;
        Ok(size)
    }

    async fn put_object(&self, key: &str, body: bytes::Bytes) -> Result<()> {
        let path = self.path(key);
        tokio::task::spawn_blocking(move || write_nested(&path, &body))
            .await
            .map_err(|e| StorageError::backend("writing an object", e))?
            .map_err(|e| io_err("writing an object", e))
    }

    async fn list_under(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let (dir, prefix) = (self.dir.clone(), prefix.to_string());
        tokio::task::spawn_blocking(move || {
            let start = dir.join(prefix.rsplit_once('/').map_or("", |(d, _)| d));
            let mut out = Vec::new();
            walk(&dir, &start, &mut out)?;
            out.retain(|(k, _): &(String, u64)| k.starts_with(&prefix));
            out.sort();
            Ok(out)
        })
        .await
        .map_err(|e| StorageError::backend("listing objects", e))?
        .map_err(|e| io_err("listing objects", e))
    }

    async fn delete_objects(&self, keys: &[String]) -> Result<()> {
        let (root, paths): (PathBuf, Vec<PathBuf>) = (
            self.dir.clone(),
            keys.iter().map(|k| self.path(k)).collect(),
        );
        tokio::task::spawn_blocking(move || {
            for path in &paths {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                // Folders left empty go too (never the store's own directory).
                let mut dir = path.parent();
                while let Some(d) = dir.filter(|d| *d != root && d.starts_with(&root)) {
                    if std::fs::remove_dir(d).is_err() {
                        break;
                    }
                    dir = d.parent();
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| StorageError::backend("deleting objects", e))?
        .map_err(|e| io_err("deleting objects", e))
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<ByteStream<'static>> {
        let mut file = tokio::fs::File::open(self.path(key))
            .await
            .map_err(|e| io_err("opening a backup", e))?;
        let body: ByteStream<'static> = match range {
            None => Box::pin(ReaderStream::with_capacity(file, 256 * 1024)),
            Some(r) => {
                file.seek(io::SeekFrom::Start(r.start))
                    .await
                    .map_err(|e| io_err("reading a backup", e))?;
                Box::pin(ReaderStream::with_capacity(file.take(r.size()), 256 * 1024))
            }
        };
        Ok(body)
    }

    #[tracing::instrument(skip(self), fields(key = %key))]
    async fn delete(&self, key: &str) -> Result<()> {
        tokio::fs::remove_file(self.path(key))
            .await
            .map_err(|e| io_err("deleting a backup", e))
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.dir.display())
    }
}
