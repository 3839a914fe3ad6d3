//! The restore's side of the stream: which history and segments bring each database to a
//! moment (from one listing of the store), and the database rebuilt into a file from them
//! and checked.

use super::layout::{self, History, SegmentRef};
use super::segment::Rebuild;
use crate::storage::BackupStore;
use futures::TryStreamExt;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

/// How one database is brought to the moment.
#[derive(Debug, Clone)]
pub struct DbPlan {
    /// Its path in the data directory.
    pub rel: String,
    pub history: String,
    /// The base image's key, page size and size.
    pub base: (String, u32, u64),
    /// The segments to apply, in order (the last may hold commits after the moment).
    pub segments: Vec<SegmentRef>,
    /// The moment (Unix ms); `i64::MAX` for the latest.
    pub until_ms: i64,
}

/// One database's restorable span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Each history that can be restored: (start, end), Unix ms, oldest first.
    pub spans: Vec<(i64, i64)>,
}

impl Window {
    pub fn earliest(&self) -> Option<i64> {
        self.spans.first().map(|s| s.0)
    }

    pub fn latest(&self) -> Option<i64> {
        self.spans.iter().map(|s| s.1).max()
    }
}

/// The stored history of every database, from one listing.
///
/// # Errors
/// The store's.
pub async fn histories(
    store: &dyn BackupStore,
) -> crate::storage::Result<BTreeMap<String, Vec<History>>> {
    let listing = store.list_under(layout::NAMESPACE).await?;
    Ok(layout::parse(&listing))
}

/// What can be restored of each database.
pub fn windows(histories: &BTreeMap<String, Vec<History>>) -> BTreeMap<String, Window> {
    histories
        .iter()
        .map(|(db, hs)| {
            let spans = hs
                .iter()
                .filter(|h| h.base.is_some())
                .map(|h| {
                    let end = h.chain().last().map_or(h.start_ms, |s| s.last_ms);
                    (h.start_ms, end)
                })
                .collect();
            (db.clone(), Window { spans })
        })
        .collect()
}

/// The plan of every database that has a history: the newest history begun at or before
/// `until_ms` (`None`: the latest moment), with its unbroken segments up to the moment.
///
/// # Errors
/// Why the moment cannot be restored (no history at all, or a database whose history
/// begins after it), as a sentence for the API.
pub fn plan(
    histories: &BTreeMap<String, Vec<History>>,
    until_ms: Option<i64>,
) -> Result<Vec<DbPlan>, String> {
    let until = until_ms.unwrap_or(i64::MAX);
    let mut plans = Vec::new();
    for (rel, hs) in histories {
        let usable: Vec<&History> = hs.iter().filter(|h| h.base.is_some()).collect();
        let Some(h) = usable.iter().rev().find(|h| h.start_ms <= until) else {
            let Some(first) = usable.first() else {
                continue;
            };
            return Err(format!(
                "{rel} can be restored from {} on",
                crate::util::time_fmt::format_ms(first.start_ms)
            ));
        };
        let base = h.base.clone().expect("filtered");
        let segments = h
            .chain()
            .into_iter()
            .filter(|s| s.first_ms <= until)
            .collect();
        plans.push(DbPlan {
            rel: rel.clone(),
            history: h.name.clone(),
            base,
            segments,
            until_ms: until,
        });
    }
    if plans.is_empty() {
        return Err(
            "the store holds no point-in-time history (is the gateway running with --pitr?)".into(),
        );
    }
    Ok(plans)
}

/// What a rebuild reached.
#[derive(Debug, Clone, Copy)]
pub struct Rebuilt {
    /// The time of the last commit applied (none: the base as it was).
    pub last_commit_ms: Option<i64>,
    pub segments_read: usize,
}

/// Rebuilds the database of `plan` into `out` (a new file), then checks it with
/// `integrity_check`. Runs on a blocking thread; reads through `rt`.
///
/// # Errors
/// The store's, a damaged or discontinuous segment, a database that fails the check.
pub fn rebuild(
    rt: &tokio::runtime::Handle,
    store: &Arc<dyn BackupStore>,
    budget: &Arc<crate::util::bufpool::Budget>,
    plan: &DbPlan,
    out: &Path,
) -> io::Result<Rebuilt> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)?;
    // The base in ranged reads, several at once, within the memory budget (as a restore
    // reads an archive).
    let (key, _, size) = plan.base.clone();
    let mut body = crate::storage::parallel_reads(store.clone(), key, 0..size, budget.clone());
    rt.block_on(async {
        while let Some(chunk) = body.try_next().await? {
            file.write_all(&chunk)?;
        }
        io::Result::Ok(())
    })?;
    let mut rebuild: Option<Rebuild<std::fs::File>> = None;
    let mut file = Some(file);
    let mut read = 0;
    for s in &plan.segments {
        let bytes = rt.block_on(async {
            let body = store.get(&s.key, None).await.map_err(io::Error::other)?;
            let chunks: Vec<bytes::Bytes> = body.try_collect().await?;
            io::Result::Ok(chunks.concat())
        })?;
        read += 1;
        let mut applied: io::Result<bool> = Ok(true);
        super::segment::unpack_each(bytes, |segment| {
            let r = rebuild.get_or_insert_with(|| {
                Rebuild::new(
                    file.take().expect("taken once"),
                    plan.base.1,
                    segment.header.salt,
                )
            });
            applied = (|| {
                if segment.header.salt != r.salt() {
                    r.next_generation(segment.header.salt)?;
                }
                r.apply(&segment, plan.until_ms)
            })();
            matches!(applied, Ok(true))
        })
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", s.key)))?;
        if !applied? {
            break;
        }
    }
    let (mut file, last_commit_ms) = match (rebuild, file) {
        (Some(r), _) => {
            let last = r.last_time_ms;
            (r.finish()?, last)
        }
        (None, Some(f)) => (f, None),
        (None, None) => unreachable!("the file is in one or the other"),
    };
    file.flush()?;
    file.sync_all()?;
    drop(file);
    check(out)?;
    // The check's connection leaves nothing beside the image, or only empty files.
    for suffix in ["-wal", "-shm"] {
        let mut side = out.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(side);
    }
    Ok(Rebuilt {
        last_commit_ms,
        segments_read: read,
    })
}

/// `integrity_check` on the rebuilt database.
fn check(path: &Path) -> io::Result<()> {
    let conn = crate::archive::sqlite::connect(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(io::Error::other)?;
    let result: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(io::Error::other)?;
    if result != "ok" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the rebuilt database fails integrity_check: {result}"),
        ));
    }
    Ok(())
}
