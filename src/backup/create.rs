//! The create itself: zip the data directory straight into the store.
//!
//! First the tree is surveyed (size estimate, SQLite databases) and every database's
//! snapshot is opened ([`archive::sqlite`]): a database that cannot be read consistently
//! fails the create here, before anything is uploaded. The zip writer runs on a blocking
//! thread and hands 256 KiB chunks through a channel of four to the store's `put`, which
//! cuts them into parts and uploads a bounded number at once. Nothing touches the disk but the data being read. If anything fails, or the
//! request is dropped, both sides stop: the writer sees the channel closed, the store
//! aborts its multipart upload.
//!
//! Memory: the parts reserve their share of the process's budget ([`crate::util::bufpool`]) as the
//! store fills them, and the create reserves the rest of what it holds (the compression
//! window, the channel, the page cache of the database being streamed) once, for its whole
//! run ([`window_share`]), so that the budget bounds every buffer of backup bytes.

use crate::AppState;
use crate::archive::reuse::{Manifest, Reuse};
use crate::archive::{self, SnapshotError, Snapshots, WriteOptions};
use crate::ops::progress::{Phase, Progress};
use crate::storage::parts::{MAX_PARTS, MIN_PART_SIZE, part_size_for};
use crate::storage::{ByteRange, CopyFrom, PutOptions, StorageError};
use crate::util::bufpool::BufPool;
use bytes::Bytes;
use std::io::{self, Write};
use std::sync::Arc;
use tokio::sync::mpsc;

const CHUNK: usize = 256 * 1024;
const CHANNEL_DEPTH: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("reading the data directory failed")]
    Archive(#[source] io::Error),
    /// A SQLite database that cannot be read consistently (locked, damaged, not SQLite).
    #[error(transparent)]
    Database(SnapshotError),
    #[error("storing the backup failed")]
    Storage(#[source] StorageError),
}

/// What a create stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Created {
    /// The archive's size.
    pub size: u64,
    /// Files and directories in it.
    pub entries: u64,
}

/// Zips the data directory into the store under `key`, counting into `progress`. Where
/// the store can copy ranges of an existing backup and `--incremental` allows it, the
/// unchanged files' entries are copied from the newest backup the gateway wrote
/// ([`archive::reuse`]); if that backup vanishes or changes meanwhile, the create starts
/// over as a full one.
///
/// # Errors
/// An unreadable data directory ([`CreateError::Archive`]) or a store failure
/// ([`CreateError::Storage`]); either way nothing is left in the store.
#[tracing::instrument(skip(state, store, progress), fields(key = %key))]
pub async fn create(
    state: &AppState,
    store: &dyn crate::storage::BackupStore,
    key: &str,
    progress: &Arc<Progress>,
) -> Result<Created, CreateError> {
    let previous = if state.config.incremental_allowed() && store.copies() {
        previous_archive(state, store, key).await.map(Arc::new)
    } else {
        None
    };
    match create_from(state, store, key, progress, previous.clone()).await {
        Err(CreateError::Storage(StorageError::CopySource(why))) if previous.is_some() => {
            tracing::warn!(reason = %why, "the previous backup changed during an incremental create; making a full one");
            progress.restart();
            create_from(state, store, key, progress, None).await
        }
        other => other,
    }
}

/// The file system's time before the create looks at any file, which its archive records
/// with every entry of the same device ([`archive::reuse`] says why). None (entries never
/// reused by a later create) when it cannot be had, or where the data directory's file
/// system does not keep real change times ([`crate::util::fsutil::keeps_change_times`]).
fn reading_starts(root: &std::path::Path) -> crate::util::fsutil::FsNow {
    let state = crate::util::state_dir::root(root);
    match crate::util::fsutil::file_system_now(&state) {
        Ok(now) if crate::util::fsutil::keeps_change_times(&state) => now,
        Ok(_) => {
            tracing::warn!(
                "the data directory's file system does not keep real change times: every create is a full one"
            );
            crate::util::fsutil::FsNow::default()
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the file system's time: the next create will be a full one");
            crate::util::fsutil::FsNow::default()
        }
    }
}

/// The newest backup this gateway wrote, with its manifest.
struct Previous {
    key: String,
    etag: Option<String>,
    manifest: Manifest,
}

/// The newest of the backups this gateway last created (its last API create and its last
/// scheduled one, as recorded in its state), if it is still in the store with the size it
/// was created with and holds a manifest. An archive that was only uploaded is never
/// copied from, even one with the gateway's layout.
async fn previous_archive(
    state: &AppState,
    store: &dyn crate::storage::BackupStore,
    key: &str,
) -> Option<Previous> {
    let created: Vec<(String, Option<u64>)> = [
        state
            .outcomes
            .create
            .last()
            .filter(|o| o.status == crate::ops::outcomes::Status::Ok)
            .map(|o| (o.key, o.size)),
        state
            .scheduled_runs
            .last()
            .filter(|r| r.status == crate::ops::outcomes::RunStatus::Ok)
            .map(|r| (r.key, r.size)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if created.is_empty() {
        return None;
    }
    let mut listed = match store.list().await {
        Ok(listed) => listed,
        Err(e) => {
            tracing::debug!(error = %e, "no incremental create: listing failed");
            return None;
        }
    };
    listed.retain(|b| {
        b.key != key
            && !state.jobs.is_being_written(&b.key)
            && created
                .iter()
                .any(|(k, size)| *k == b.key && size.is_none_or(|s| s == b.size))
    });
    listed.sort_by_key(|b| std::cmp::Reverse(b.modified));
    let max_index = state.config.restore_limits.max_index_bytes;
    for b in listed {
        let Ok((dir, entries)) = crate::index::read_index(store, &b.key, b.size, max_index).await
        else {
            continue;
        };
        if let Some(manifest) = Manifest::new(entries, dir.offset) {
            return Some(Previous {
                key: b.key,
                etag: b.etag,
                manifest,
            });
        }
    }
    None
}

async fn create_from(
    state: &AppState,
    store: &dyn crate::storage::BackupStore,
    key: &str,
    progress: &Arc<Progress>,
    previous: Option<Arc<Previous>>,
) -> Result<Created, CreateError> {
    let root = state.config.data_dir.clone();
    let exclude = state.backup_exclude();
    let (read_from, survey, databases) = survey(state, previous.clone()).await?;
    progress.set_totals(survey.bytes, survey.entries);
    progress.set_phase(Phase::Archive);
    let part_size = part_size_for(state.config.part_size, survey.bytes);
    let reuse = match &previous {
        Some(p) => reuse_of(p, &survey, part_size),
        None => Reuse::default(),
    };
    let copy = previous
        .as_deref()
        .filter(|_| !reuse.copies.is_empty())
        .map(|p| copy_from(p, &reuse));
    let opts = PutOptions {
        part_size,
        parts_in_flight: state.config.parts_in_flight,
        budget: state.budget.clone(),
        copy,
    };

    // The compression window and the channel to the store hold backup bytes too: they take
    // their share of the memory budget for the whole create.
    let _window = match window_share(state.budget.total_bytes(), opts.part_size) {
        0 => None,
        bytes => Some(state.budget.reserve(bytes).await),
    };
    let (tx, body) = crate::storage::channel_body(CHANNEL_DEPTH);
    let write = WriteOptions {
        level: state.config.compression_level,
        exclude,
        progress: Some(Arc::clone(progress)),
        read_from,
    };
    let writer =
        tokio::task::spawn_blocking(move || write_archive(&root, &write, databases, &reuse, tx));
    let put = store.put(key, body, opts.clone()).await;
    let written = writer
        .await
        .map_err(|e| CreateError::Archive(io::Error::other(e)))?;
    match (written, put) {
        (Ok(stats), Ok(size)) => {
            // The summary line is logged by the caller ([`crate::ops::outcomes::finished`]).
            tracing::debug!(
                databases = survey.databases.len(),
                files = stats.files,
                dirs = stats.dirs,
                bytes_in = stats.bytes_in,
                size,
                part_size = opts.part_size,
                "backup created"
            );
            Ok(Created {
                size,
                entries: stats.files + stats.dirs,
            })
        }
        // The body failed: the writer's error is the cause.
        (Err(e), Err(StorageError::Body(_)) | Ok(_)) => Err(match SnapshotError::find(&e) {
            Some(db) => CreateError::Database(db.clone()),
            None => CreateError::Archive(e),
        }),
        // The store failed (the writer then only saw the channel close).
        (_, Err(e)) => Err(CreateError::Storage(e)),
    }
}

/// The tree surveyed (against the previous archive's manifest, when there is one) and
/// every database's snapshot opened, on a blocking thread: a database that cannot be read
/// consistently fails the create here, before anything is uploaded. Also the file system's
/// time before any file was looked at ([`reading_starts`]).
async fn survey(
    state: &AppState,
    previous: Option<Arc<Previous>>,
) -> Result<(crate::util::fsutil::FsNow, archive::Survey, Snapshots), CreateError> {
    let root = state.config.data_dir.clone();
    let exclude = state.backup_exclude();
    let snapshot_opts = state.config.snapshot;
    let started = std::time::Instant::now();
    let (read_from, survey, databases) = tokio::task::spawn_blocking(move || {
        let read_from = reading_starts(&root);
        let manifest = previous.as_deref().map(|p| &p.manifest);
        let survey = archive::survey(&root, &exclude, manifest).map_err(CreateError::Archive)?;
        let databases = Snapshots::open(&root, &survey.databases, snapshot_opts)
            .map_err(CreateError::Database)?;
        Ok::<_, CreateError>((read_from, survey, databases))
    })
    .await
    .map_err(|e| CreateError::Archive(io::Error::other(e)))??;
    tracing::debug!(
        databases = survey.databases.len(),
        held = databases.held(),
        snapshot_ms = started.elapsed().as_millis() as u64,
        "snapshots open"
    );
    Ok((read_from, survey, databases))
}

/// The copies of `reuse` as the store's `put` takes them: ranges of `previous`, pinned to
/// its ETag.
fn copy_from(previous: &Previous, reuse: &Reuse) -> CopyFrom {
    tracing::info!(
        from = %previous.key,
        entries = reuse.entries.len(),
        copied_bytes = reuse.bytes,
        parts = reuse.copies.len(),
        "incremental create: unchanged entries are copied in the store"
    );
    CopyFrom {
        key: previous.key.clone(),
        etag: previous.etag.clone(),
        ranges: reuse
            .copies
            .iter()
            .map(|r| ByteRange {
                start: r.start,
                end: r.end - 1,
            })
            .collect(),
    }
}

/// The writer's side, on a blocking thread: the archive written into `tx` in chunks.
fn write_archive(
    root: &std::path::Path,
    opts: &WriteOptions,
    mut databases: Snapshots,
    reuse: &Reuse,
    tx: mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<archive::zip::WriteStats> {
    let mut out = ChannelWriter::new(tx.clone());
    let result = archive::create::write_dir_reusing(root, opts, &mut databases, reuse, &mut out)
        .and_then(|stats| out.finish().map(|()| stats));
    // The store now writes the last parts and assembles the archive.
    if let Some(p) = &opts.progress {
        p.set_phase(Phase::Complete);
    }
    if let Err(e) = &result {
        // Make the store see the failure, not a clean end of a truncated archive.
        let _ = tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
    }
    result
}

/// The largest range one `UploadPartCopy` copies (S3 allows 5 GiB): a request that the
/// store answers in seconds, well within the client's read timeout.
const COPY_PIECE: u64 = 1 << 30;

/// What to take from `previous`: the runs of its unchanged entries, or nothing when the
/// parts of the copies and of the rest together would pass S3's 10,000.
fn reuse_of(previous: &Previous, survey: &archive::Survey, part_size: u64) -> Reuse {
    let reuse = previous
        .manifest
        .plan(&survey.unchanged, MIN_PART_SIZE, COPY_PIECE);
    let fresh = survey.bytes.saturating_sub(reuse.file_bytes);
    let fresh_parts = (fresh + fresh / 10).div_ceil(part_size.max(1)) + 1;
    if reuse.copies.len() as u64 + fresh_parts > MAX_PARTS {
        return Reuse::default();
    }
    reuse
}

/// What a create reserves of a budget of `total` bytes besides its parts: the compression
/// window ([`archive::create::memory_bound`]), the chunks of the channel to the store and
/// the page cache of the database being streamed, but never so much that one part of
/// `part_size` would not fit beside it (the create would wait for itself); 0 when even
/// that leaves nothing.
fn window_share(total: u64, part_size: u64) -> u64 {
    let wanted = archive::create::memory_bound()
        + ((CHANNEL_DEPTH + 2) * CHUNK) as u64
        + archive::sqlite::CACHE_BYTES;
    wanted.min(total.saturating_sub(part_size))
}

/// `Write` into a bounded channel, in chunks of [`CHUNK`] bytes (recycled buffers).
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    pool: Arc<BufPool>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        // In the channel, in this writer, and the one the store is copying from.
        let pool = BufPool::new(CHUNK, CHANNEL_DEPTH + 2);
        let buf = pool.take();
        Self { tx, pool, buf }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, self.pool.take());
        let chunk = self.pool.freeze(full);
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    fn finish(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creates_window_share_always_leaves_room_for_one_part() {
        const MIB: u64 = 1 << 20;
        let wanted = window_share(u64::MAX, 8 * MIB);
        assert!(wanted > archive::create::memory_bound(), "{wanted}");
        // The default budget takes the whole window beside one part.
        assert_eq!(window_share(64 * MIB, 8 * MIB), wanted);
        // A small budget gives what is left beside one part, or nothing.
        assert_eq!(window_share(16 * MIB, 8 * MIB), 8 * MIB);
        assert_eq!(window_share(8 * MIB, 8 * MIB), 0);
        assert_eq!(window_share(8 * MIB, 100 * MIB), 0);
    }
}
