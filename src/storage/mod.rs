//! Where backup archives live: the [`BackupStore`] trait and its two backends, [`s3`] (any
//! S3-compatible bucket) and [`local`] (a directory; the default).
//!
//! The trait speaks in backup terms and moves bytes as streams, never as whole buffers.
//! Keys reaching a store have already been checked by [`crate::keys`]. A `put` is all or
//! nothing: a failure or a dropped future leaves no object and no pending upload behind.

pub mod local;
pub mod parts;
pub mod s3;

use crate::util::bufpool::BufPool;
use bytes::Bytes;
use futures::Stream;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use time::OffsetDateTime;

/// A body of backup bytes. Bodies going into a store may borrow (an upload streams straight
/// from the request); bodies coming out are `'static`.
pub type ByteStream<'a> = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'a>>;

/// A body fed through a channel `depth` chunks deep: what is sent is what the store reads,
/// and an `Err` sent fails the `put` (which then leaves nothing).
pub fn channel_body(
    depth: usize,
) -> (
    tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    ByteStream<'static>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(depth);
    (
        tx,
        Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx))),
    )
}

/// One backup as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    pub key: String,
    pub size: u64,
    pub modified: OffsetDateTime,
    /// The store's version tag of the object, where it has one (S3's ETag): a copy from it
    /// is pinned to it.
    pub etag: Option<String>,
}

/// An inclusive byte range `start..=end`, already resolved against the object's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range (at least 1).
    pub fn size(&self) -> u64 {
        self.end - self.start + 1
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("backup not found")]
    NotFound,
    #[error("a backup with that key already exists")]
    AlreadyExists,
    /// The body stream failed (an unreadable file, a client that went away): not the
    /// store's fault.
    #[error("reading the backup body failed")]
    Body(#[source] io::Error),
    /// A range to copy ([`PutOptions::copy`]) could not be: its source vanished or changed.
    #[error("the previous backup to copy from vanished or changed: {0}")]
    CopySource(String),
    #[error("storage backend error: {0}")]
    Backend(
        String,
        #[source] Option<Box<dyn std::error::Error + Send + Sync>>,
    ),
}

impl StorageError {
    pub fn backend(
        context: impl Into<String>,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Backend(context.into(), Some(Box::new(e)))
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Options of one `put`.
#[derive(Debug, Clone)]
pub struct PutOptions {
    /// Part size for multipart uploads (every part but the last has exactly this size).
    pub part_size: u64,
    /// Parts uploaded at the same time.
    pub parts_in_flight: usize,
    /// Where part buffers are reserved.
    pub budget: Arc<crate::util::bufpool::Budget>,
    /// Ranges of an existing backup that the new one starts with, copied by the store
    /// itself; the body follows them. Only for a store whose [`BackupStore::copies`] is true.
    pub copy: Option<CopyFrom>,
}

/// The ranges a `put` copies from an existing backup, in order: every range is a part of
/// its own, so each is between [`parts::MIN_PART_SIZE`] and [`parts::MAX_PART_SIZE`].
#[derive(Debug, Clone)]
pub struct CopyFrom {
    pub key: String,
    /// The source's version tag when it was read: the copy fails if it changed since.
    pub etag: Option<String>,
    pub ranges: Vec<ByteRange>,
}

#[async_trait::async_trait]
pub trait BackupStore: Send + Sync + 'static {
    /// Every backup, sorted by key.
    async fn list(&self) -> Result<Vec<BackupInfo>>;

    /// One backup's size and time, or `None`.
    async fn stat(&self, key: &str) -> Result<Option<BackupInfo>>;

    /// Stores `body` under `key`, which must not exist. Returns the stored size. All or
    /// nothing: on error, or when the future is dropped, nothing is left behind.
    async fn put(&self, key: &str, body: ByteStream<'_>, opts: PutOptions) -> Result<u64>;

    /// Reads `key`, whole or the given range.
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<ByteStream<'static>>;

    /// Deletes `key`; [`StorageError::NotFound`] if it does not exist.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Stores the small object `body` under `key` in one request, `key` being new by
    /// construction (the point-in-time stream's segments: [`crate::pitr`]). Keys may hold
    /// `/`; such keys are never listed by [`BackupStore::list`].
    async fn put_object(&self, key: &str, body: Bytes) -> Result<()>;

    /// Every object whose key starts with `prefix` (`/` included), with its size, sorted
    /// by key: the point-in-time history ([`crate::pitr`]), not backups.
    async fn list_under(&self, prefix: &str) -> Result<Vec<(String, u64)>>;

    /// Deletes the objects `keys` (of [`BackupStore::list_under`]), in as few requests as
    /// the store allows; keys that do not exist are no error.
    async fn delete_objects(&self, keys: &[String]) -> Result<()>;

    /// True when `put` can copy ranges of an existing backup ([`PutOptions::copy`]).
    fn copies(&self) -> bool {
        false
    }

    /// Where the backups are, for logs (no secrets).
    fn describe(&self) -> String;
}

/// Large reads are split into ranges of this size, [`RANGES_IN_FLIGHT`] fetched at once:
/// S3 serves one stream far slower than several (AWS recommends ranged GETs for
/// throughput; the s3s-fs test server reads 4 KiB at a time per stream).
pub const RANGE_CHUNK: u64 = 4 << 20;
pub const RANGES_IN_FLIGHT: usize = 6;

/// The bytes `span` of `key` as a stream of ranged reads, [`RANGES_IN_FLIGHT`] at once,
/// delivered in order. Memory: (`RANGES_IN_FLIGHT` + 2) x [`RANGE_CHUNK`] at most, in
/// recycled buffers ([`BufPool::shared`]), each reserved from `budget` before its read starts
/// (when the budget is taken, fewer reads are ahead).
pub fn parallel_reads(
    store: Arc<dyn BackupStore>,
    key: String,
    span: std::ops::Range<u64>,
    budget: Arc<crate::util::bufpool::Budget>,
) -> ByteStream<'static> {
    use futures::StreamExt;
    let end = span.end;
    let ranges = span.step_by(RANGE_CHUNK as usize).map(move |s| ByteRange {
        start: s,
        end: (s + RANGE_CHUNK).min(end) - 1,
    });
    let pool = BufPool::shared(RANGE_CHUNK as usize);
    Box::pin(
        futures::stream::iter(ranges)
            .map(move |r| {
                let (store, key, pool) = (store.clone(), key.clone(), pool.clone());
                let budget = budget.clone();
                async move {
                    let (buf, reserved) = pool.take_reserved(&budget, r.size()).await;
                    read_range_into(store.as_ref(), &key, r, buf)
                        .await
                        .map(|buf| pool.freeze_reserved(buf, reserved))
                        .map_err(|e| io::Error::other(crate::error::ErrorChain(&e).to_string()))
                }
            })
            .buffered(RANGES_IN_FLIGHT),
    )
}

/// Reads a range fully into memory: for small reads only (zip headers, central directories).
///
/// # Errors
/// Any store or body error; a short read is an `UnexpectedEof` body error.
pub async fn read_range(store: &dyn BackupStore, key: &str, range: ByteRange) -> Result<Vec<u8>> {
    read_range_into(store, key, range, Vec::new()).await
}

/// [`read_range`] into `out` (cleared first; a recycled buffer saves an allocation). A body
/// cut short is resumed from where it stopped ([`resuming`]).
///
/// # Errors
/// As [`read_range`].
pub async fn read_range_into(
    store: &dyn BackupStore,
    key: &str,
    range: ByteRange,
    mut out: Vec<u8>,
) -> Result<Vec<u8>> {
    use futures::TryStreamExt;
    let first = store.get(key, Some(range)).await?;
    let mut body = resuming(store, key, range, first);
    out.clear();
    out.reserve(usize::try_from(range.size()).unwrap_or(0));
    while let Some(chunk) = body.try_next().await.map_err(StorageError::Body)? {
        out.extend_from_slice(&chunk);
    }
    if out.len() as u64 != range.size() {
        return Err(StorageError::Body(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "short read",
        )));
    }
    Ok(out)
}

/// How many times one ranged read is resumed after its body failed or ended early.
pub const BODY_RESUMES: u32 = 4;

/// `first`, the body of a read of `range`, made to deliver exactly `range`: when it fails
/// or ends early, the rest is read again from the offset reached, at most [`BODY_RESUMES`]
/// times, with a growing pause (the store's own client already retries whole requests; this
/// covers a body cut after its `200` started). When the resumes are spent, the stream ends
/// with the error, never short.
pub fn resuming<'a, S, K>(
    store: S,
    key: K,
    range: ByteRange,
    first: ByteStream<'static>,
) -> ByteStream<'a>
where
    S: std::ops::Deref<Target = dyn BackupStore> + Send + 'a,
    K: AsRef<str> + Send + 'a,
{
    use futures::StreamExt;
    struct State<S, K> {
        store: S,
        key: K,
        next: u64,
        end: u64,
        body: Option<ByteStream<'static>>,
        resumes: u32,
        failed: bool,
    }
    let state = State {
        store,
        key,
        next: range.start,
        end: range.end,
        body: Some(first),
        resumes: 0,
        failed: false,
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.failed || s.next > s.end {
                return None;
            }
            let Some(body) = s.body.as_mut() else {
                let rest = ByteRange {
                    start: s.next,
                    end: s.end,
                };
                match s.store.get(s.key.as_ref(), Some(rest)).await {
                    Ok(body) => s.body = Some(body),
                    Err(e @ StorageError::NotFound) => {
                        s.failed = true;
                        return Some((Err(io::Error::other(e)), s));
                    }
                    Err(e) => {
                        if !pause_before_resume(&mut s.resumes, s.key.as_ref(), s.next, &e).await {
                            s.failed = true;
                            return Some((Err(io::Error::other(e)), s));
                        }
                    }
                }
                continue;
            };
            let failure = match body.next().await {
                Some(Ok(chunk)) => {
                    let room = usize::try_from(s.end + 1 - s.next).unwrap_or(usize::MAX);
                    let chunk = if chunk.len() > room {
                        chunk.slice(..room)
                    } else {
                        chunk
                    };
                    s.next += chunk.len() as u64;
                    return Some((Ok(chunk), s));
                }
                Some(Err(e)) => e,
                None => io::Error::new(io::ErrorKind::UnexpectedEof, "body ended early"),
            };
            s.body = None;
            if !pause_before_resume(&mut s.resumes, s.key.as_ref(), s.next, &failure).await {
                s.failed = true;
                return Some((Err(failure), s));
            }
        }
    }))
}

/// Counts one resume and waits before it (100 ms, 200 ms, 400 ms, ...); false when the
/// resumes are spent.
async fn pause_before_resume(
    resumes: &mut u32,
    key: &str,
    offset: u64,
    cause: &(dyn std::error::Error + Send + Sync),
) -> bool {
    if *resumes >= BODY_RESUMES {
        return false;
    }
    *resumes += 1;
    tracing::warn!(key, offset, attempt = *resumes, error = %cause, "read cut short; resuming");
    tokio::time::sleep(std::time::Duration::from_millis(100 << (*resumes - 1))).await;
    true
}
