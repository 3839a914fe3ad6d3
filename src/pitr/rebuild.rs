//! The restore's side of the stream: which history and segments bring each database to a
//! moment (from one listing of the store), and the database rebuilt into a file from them
//! and checked.

use super::layout::{self, History, SegmentRef};
use super::segment::Rebuild;
use crate::archive::sqlite::Sidecar;
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

/// What can be restored of each database at `now_ms`.
pub fn windows(
    histories: &BTreeMap<String, Vec<History>>,
    now_ms: i64,
) -> BTreeMap<String, Window> {
    histories
        .iter()
        .map(|(db, hs)| {
            let spans = hs
                .iter()
                .enumerate()
                .filter(|(_, h)| h.usable())
                .filter_map(|(i, h)| {
                    let until = known_until(h, i + 1 == hs.len(), now_ms);
                    h.ready_ms.map(|r| (r, until))
                })
                .collect();
            (db.clone(), Window { spans })
        })
        .collect()
}

/// Up to when a restorable history is known: its last commit that can be applied (its
/// `ready` moment when none); past it up to the end marker when every segment is there;
/// the newest history of the database (`newest`: none began after it, restorable or not)
/// without an end marker is being written now: up to `now_ms`.
fn known_until(h: &History, newest: bool, now_ms: i64) -> i64 {
    let chain = h.chain();
    let ready = h.ready_ms.unwrap_or(h.start_ms);
    let last = chain.last().map_or(ready, |s| s.last_ms.max(ready));
    match h.end_marker_ms {
        _ if !whole(h, &chain) => last,
        Some(end) => end.max(last),
        None if newest => now_ms.max(last),
        None => last,
    }
}

/// Whether `chain` (of `h`) reaches its last segment: none is missing in between.
fn whole(h: &History, chain: &[SegmentRef]) -> bool {
    chain.last().map(|s| s.m) == h.segments.iter().map(|s| s.m).max()
}

/// The plan of every database that has a history: the newest history restorable at
/// `until_ms` (`None`: the latest moment), with its unbroken segments up to the moment.
///
/// # Errors
/// Why the moment cannot be restored, as a sentence for the API: no history at all, a
/// moment in the future, before a database's first history, or in a gap of its history
/// (the gateway was down, or a segment is missing).
pub fn plan(
    histories: &BTreeMap<String, Vec<History>>,
    until_ms: Option<i64>,
    now_ms: i64,
) -> Result<Vec<DbPlan>, String> {
    let fmt = crate::util::time_fmt::format_ms;
    if until_ms.is_some_and(|t| t > now_ms) {
        return Err("the moment is in the future".into());
    }
    let until = until_ms.unwrap_or(i64::MAX);
    let mut plans = Vec::new();
    for (rel, hs) in histories {
        let usable: Vec<&History> = hs.iter().filter(|h| h.usable()).collect();
        let Some(i) = usable
            .iter()
            .rposition(|h| h.ready_ms.is_some_and(|r| r <= until))
        else {
            let Some(first) = usable.first() else {
                continue;
            };
            return Err(format!(
                "{rel} can be restored from {} on",
                fmt(first.ready_ms.unwrap_or(first.start_ms))
            ));
        };
        let h = usable[i];
        let newest = hs.last().is_some_and(|last| last.name == h.name);
        let known = known_until(h, newest, now_ms);
        if until_ms.is_some() && until > known {
            let next = usable
                .get(i + 1)
                .and_then(|n| n.ready_ms)
                .map_or_else(|| "now".to_string(), fmt);
            return Err(format!(
                "{rel} cannot be restored between {} and {next}: nothing of it was streamed \
                 then (the gateway was down, or the stream was off or broken)",
                fmt(known)
            ));
        }
        let chain = h.chain();
        if until_ms.is_none() && !whole(h, &chain) {
            // "Latest" is never less than the latest.
            let missing = chain.last().map_or(0, |s| s.m + 1);
            return Err(format!(
                "{rel}: segment {missing} of its newest history is not in the store's \
                 listing, though later ones are (the listing met a compaction, or an object \
                 is lost): try again, or restore a moment up to {}",
                fmt(known)
            ));
        }
        plans.push(DbPlan {
            rel: rel.clone(),
            history: h.name.clone(),
            base: h.base.clone().expect("usable"),
            segments: chain.into_iter().filter(|s| s.first_ms <= until).collect(),
            until_ms: until,
        });
    }
    if plans.is_empty() {
        return Err(
            "the store holds no point-in-time history (is the stream on: backups.pitr, --pitr?)"
                .into(),
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
    // The next object is asked for while one is applied (a remote store's round trip, once
    // an object), and read as it arrives: an hour's pack is held one part at a time.
    let fetch = |s: &SegmentRef| {
        let (store, key) = (store.clone(), s.key.clone());
        // Dropped (the moment reached, an error), it is cancelled.
        tokio_util::task::AbortOnDropHandle::new(
            rt.spawn(async move { store.get(&key, None).await }),
        )
    };
    let mut next = plan.segments.first().map(fetch);
    for (i, s) in plan.segments.iter().enumerate() {
        let body = rt
            .block_on(next.take().expect("asked for"))
            .map_err(io::Error::other)?
            .map_err(io::Error::other)?;
        next = plan.segments.get(i + 1).map(fetch);
        let mut reader = io::BufReader::with_capacity(
            256 << 10,
            tokio_util::io::SyncIoBridge::new_with_handle(
                tokio_util::io::StreamReader::new(body),
                rt.clone(),
            ),
        );
        read += 1;
        let mut applied: io::Result<bool> = Ok(true);
        super::segment::unpack_read(&mut reader, |segment| {
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
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", s.key)))?;
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
    for side in [Sidecar::Wal, Sidecar::Shm] {
        let _ = std::fs::remove_file(side.of(out));
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

#[cfg(test)]
mod tests {
    use super::super::layout::{self, base_key, end_key, ready_key, segment_key};
    use super::*;

    const S: i64 = 1000;
    const T0: i64 = 1_800_000_000_000;

    fn history(
        db: &str,
        start: i64,
        ready: Option<i64>,
        last: i64,
        end: Option<i64>,
    ) -> Vec<(String, u64)> {
        let name = format!("{start:013}-abcdef");
        let mut keys = vec![
            (base_key(db, &name, 4096), 8192),
            (segment_key(db, &name, (0, 0), start, last), 10),
        ];
        keys.extend(ready.map(|r| (ready_key(db, &name, r), 0)));
        keys.extend(end.map(|e| (end_key(db, &name, e), 0)));
        keys
    }

    fn plan_at(
        listing: &[(String, u64)],
        until: Option<i64>,
        now: i64,
    ) -> Result<Vec<DbPlan>, String> {
        let mut listing = listing.to_vec();
        listing.sort();
        plan(&layout::parse(&listing), until, now)
    }

    #[test]
    fn a_moment_is_planned_from_the_history_that_covers_it_and_refused_in_a_gap() {
        // Killed at T0+60 s after its last commit at T0+50 s (no end marker); the next
        // history began at T0+100 s and was stopped cleanly at T0+200 s.
        let mut listing = history("data.db", T0, Some(T0 + 2 * S), T0 + 50 * S, None);
        listing.extend(history(
            "data.db",
            T0 + 100 * S,
            Some(T0 + 101 * S),
            T0 + 150 * S,
            Some(T0 + 200 * S),
        ));
        let now = T0 + 300 * S;
        let at = |t| plan_at(&listing, Some(t), now);
        assert_eq!(
            at(T0 + 10 * S).unwrap()[0].history,
            format!("{T0:013}-abcdef")
        );
        assert_eq!(at(T0 + 50 * S).unwrap()[0].segments.len(), 1);
        // Between the last commit of the killed history and the next's ready moment.
        let gap = at(T0 + 70 * S).unwrap_err();
        assert!(gap.contains("cannot be restored between"), "{gap}");
        // Up to the clean end of the second, not after it (the stream was stopped).
        assert!(at(T0 + 199 * S).is_ok());
        assert!(
            at(T0 + 250 * S)
                .unwrap_err()
                .contains("cannot be restored between")
        );
        // Before the first history became restorable, and in the future.
        assert!(at(T0 + S).unwrap_err().contains("can be restored from"));
        assert!(at(now + 60 * S).unwrap_err().contains("future"));
        // The latest: the newest history, every segment.
        let latest = plan_at(&listing, None, now).unwrap();
        assert_eq!(latest[0].history, format!("{:013}-abcdef", T0 + 100 * S));
    }

    #[test]
    fn latest_is_refused_when_a_segment_is_missing_and_a_moment_before_it_is_not() {
        let name = format!("{T0:013}-abcdef");
        let mut listing = history("data.db", T0, Some(T0 + S), T0 + 5 * S, None);
        listing.push((
            segment_key("data.db", &name, (2, 2), T0 + 8 * S, T0 + 9 * S),
            10,
        ));
        let now = T0 + 60 * S;
        let err = plan_at(&listing, None, now).unwrap_err();
        assert!(err.contains("segment 1 of its newest history"), "{err}");
        assert_eq!(
            plan_at(&listing, Some(T0 + 4 * S), now).unwrap()[0]
                .segments
                .len(),
            1
        );
        assert!(plan_at(&listing, Some(T0 + 9 * S), now).is_err());
    }

    #[test]
    fn the_newest_history_covers_up_to_now_and_one_with_a_successor_only_up_to_its_last_commit() {
        let mut listing = history("data.db", T0, Some(T0 + S), T0 + 5 * S, None);
        // A history whose `ready` marker never came (the gateway died during its base).
        listing.extend(history("data.db", T0 + 10 * S, None, T0 + 10 * S, None));
        let now = T0 + 60 * S;
        // The first is the newest restorable one, but another began after it (the gateway
        // restarted): known up to its last commit only.
        assert!(plan_at(&listing, Some(T0 + 30 * S), now).is_err());
        let p = plan_at(&listing, Some(T0 + 4 * S), now).unwrap();
        assert_eq!(p[0].history, format!("{T0:013}-abcdef"));
        let w = windows(&layout::parse(&listing), now);
        assert_eq!(w["data.db"].spans, vec![(T0 + S, T0 + 5 * S)]);
        // Alone, without an end marker, it is being written: known up to now.
        let alone = history("data.db", T0, Some(T0 + S), T0 + 5 * S, None);
        assert!(plan_at(&alone, Some(T0 + 30 * S), now).is_ok());
        assert_eq!(
            windows(&layout::parse(&alone), now)["data.db"].spans,
            vec![(T0 + S, now)]
        );
        assert!(
            plan_at(&[], None, now)
                .unwrap_err()
                .contains("no point-in-time history")
        );
    }
}
