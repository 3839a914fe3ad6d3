//! The stream's compaction: a history's objects joined into fewer, larger ones, so that a
//! restore of a day's history reads a few dozen objects, not one per second or minute.
//!
//! Two levels, each object replacing a run of the level below (its key names the segments
//! `n..=m` it holds: [`super::layout::segment_key`], and a restore reads the object that
//! reaches furthest: [`super::layout::History::chain`]):
//! - **the minute**: the segments shipped since the last pack (about a second each), packed
//!   into one object once the first is [`Levels::minute`] old or [`PACK_BYTES`] wait. The
//!   stream still holds their bytes, so this costs one write and no read;
//! - **the hour**: the minute's objects since the last repack, packed again once the first
//!   is [`Levels::hour`] old and a second has come ([`repack`]; a lone one waits to be
//!   packed with the next): read from the store one after the other and streamed into one
//!   upload (bounded memory however large the hour), in the background beside the stream,
//!   so the segments' lag never waits for it.
//!
//! Each new object is stored whole before the ones it replaces are deleted: a crash between
//! the two leaves both, and a restore reads the new one. A history's end packs its last
//! minute; its last hour stays in minutes.
//!
//! A restore of a moment `--pitr-base-hours` (a day) into a history then reads its base,
//! one object per hour before the moment's hour, and at most about 60 after: about 85,
//! against 1,441 with minutes alone. The cost: per hour, about 60 reads (GET), one upload
//! and one batched delete.

use super::layout;
use super::segment;
use crate::storage::{BackupStore, PutOptions};
use bytes::Bytes;
use futures::TryStreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Segments are packed once this many bytes of them wait (besides [`Levels::minute`]).
pub const PACK_BYTES: usize = 8 << 20;

/// When each level packs.
#[derive(Debug, Clone, Copy)]
pub struct Levels {
    /// Segments are packed once the first is this old.
    pub minute: Duration,
    /// The minute's objects are packed again once the first is this old.
    pub hour: Duration,
}

impl Default for Levels {
    fn default() -> Self {
        Self {
            minute: Duration::from_secs(60),
            hour: Duration::from_secs(3600),
        }
    }
}

/// One object of a history (stored, or on its way to the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub key: String,
    /// Its length in bytes (0 for an hour's pack, whose length the upload tells).
    pub size: u64,
    /// The segment numbers it holds.
    pub n: (u64, u64),
    /// The times of its first and last commits.
    pub first_ms: i64,
    pub last_ms: i64,
}

/// An object that replaces a run of others.
#[derive(Debug, Clone)]
pub enum Job {
    /// The minute's: its bytes are the segments' (still held), [`segment::pack`]ed.
    Pack {
        piece: Piece,
        bytes: Bytes,
        replaces: Vec<String>,
    },
    /// The hour's: packed from `parts`, read from the store ([`repack`]).
    Repack { piece: Piece, parts: Vec<Piece> },
}

/// Which objects of one history are packed when.
pub struct Planner {
    rel: String,
    history: String,
    levels: Levels,
    /// The segments shipped since the last pack, with their bytes.
    minute: Vec<(Piece, Bytes)>,
    minute_bytes: usize,
    /// The minute's objects stored since the last repack (packs, and segments that were
    /// alone in their minute).
    hour: Vec<Piece>,
}

impl Planner {
    pub fn new(rel: &str, history: &str, levels: Levels) -> Self {
        Self {
            rel: rel.to_string(),
            history: history.to_string(),
            levels,
            minute: Vec::new(),
            minute_bytes: 0,
            hour: Vec::new(),
        }
    }

    /// A segment handed to the shipper at `now_ms`: the objects due to replace others now,
    /// in the order they must be stored.
    pub fn shipped(&mut self, segment: Piece, bytes: Bytes, now_ms: i64) -> Vec<Job> {
        self.minute_bytes += bytes.len();
        self.minute.push((segment, bytes));
        let mut jobs = Vec::new();
        let first_ms = self.minute[0].0.first_ms;
        if self.minute_bytes >= PACK_BYTES || now_ms - first_ms >= millis(self.levels.minute) {
            jobs.extend(self.pack_minute());
        }
        // A lone object waits for the next one (an hour with a single minute of commits,
        // or a stream held up past the hour): they are packed together then, so that the
        // history's first hour is one object whenever the stream ran at the hour.
        if self.hour.len() >= 2 && now_ms - self.hour[0].first_ms >= millis(self.levels.hour) {
            let parts = std::mem::take(&mut self.hour);
            jobs.push(Job::Repack {
                piece: self.piece(&parts, 0),
                parts,
            });
        }
        jobs
    }

    /// At the history's end: the last minute's pack (the last hour stays in minutes).
    pub fn end(&mut self) -> Option<Job> {
        self.pack_minute()
    }

    /// The minute's segments as one object (none for a single segment: it stays as it is).
    fn pack_minute(&mut self) -> Option<Job> {
        let group = std::mem::take(&mut self.minute);
        self.minute_bytes = 0;
        let pieces: Vec<Piece> = group.iter().map(|(p, _)| p.clone()).collect();
        if group.len() < 2 {
            self.hour.extend(pieces);
            return None;
        }
        let parts: Vec<&[u8]> = group.iter().map(|(_, b)| b.as_ref()).collect();
        let bytes = Bytes::from(segment::pack(&parts));
        let piece = self.piece(&pieces, bytes.len() as u64);
        self.hour.push(piece.clone());
        Some(Job::Pack {
            piece,
            bytes,
            replaces: pieces.into_iter().map(|p| p.key).collect(),
        })
    }

    /// The object that holds `parts` (in order), of `size` bytes.
    fn piece(&self, parts: &[Piece], size: u64) -> Piece {
        let (first, last) = (&parts[0], &parts[parts.len() - 1]);
        let n = (first.n.0, last.n.1);
        Piece {
            key: layout::segment_key(&self.rel, &self.history, n, first.first_ms, last.last_ms),
            size,
            n,
            first_ms: first.first_ms,
            last_ms: last.last_ms,
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The hour's pack: `parts`, read from the store one after the other, each checked whole
/// (sizes, CRC-32s, compression) before it goes in, streamed into one upload under
/// `piece.key` (memory: the upload's part buffers, within the budget, and one part), then
/// deleted. Returns the stored size.
///
/// # Errors
/// A read or the upload failed, or a part is not the size it was stored with or is damaged:
/// nothing is stored then and nothing deleted.
pub async fn repack(
    store: Arc<dyn BackupStore>,
    piece: Piece,
    parts: Vec<Piece>,
    opts: PutOptions,
) -> Result<u64, String> {
    let (tx, body) = crate::storage::channel_body(2);
    let read = {
        let store = store.clone();
        let parts = parts.clone();
        async move {
            let sent = |b: Bytes| {
                let tx = tx.clone();
                async move {
                    tx.send(Ok(b))
                        .await
                        .map_err(|_| "the upload ended".to_string())
                }
            };
            let read = async {
                let mut packer = segment::Packer::default();
                let count = u32::try_from(parts.len()).map_err(|e| e.to_string())?;
                sent(Bytes::from(packer.head(count))).await?;
                for p in &parts {
                    // Read whole and checked before it goes in (its original is deleted
                    // after): one part held at a time, a minute's pack.
                    let mut body = store.get(&p.key, None).await.map_err(|e| e.to_string())?;
                    let mut part = Vec::with_capacity(usize::try_from(p.size).unwrap_or(0));
                    while let Some(chunk) = body.try_next().await.map_err(|e| e.to_string())? {
                        if (part.len() + chunk.len()) as u64 > p.size {
                            return Err(format!("{} is larger than {} bytes", p.key, p.size));
                        }
                        part.extend_from_slice(&chunk);
                    }
                    if part.len() as u64 != p.size {
                        return Err(format!("{} is {} bytes, not {}", p.key, part.len(), p.size));
                    }
                    segment::unpack_each(part.clone(), |_| true)
                        .map_err(|e| format!("{}: {e}", p.key))?;
                    sent(Bytes::copy_from_slice(&packer.part_len(p.size))).await?;
                    packer.bytes(&part);
                    sent(Bytes::from(part)).await?;
                }
                sent(Bytes::copy_from_slice(&packer.trailer())).await
            };
            let result: Result<(), String> = read.await;
            if let Err(e) = &result {
                // The upload fails with it, and leaves nothing.
                let _ = tx.send(Err(std::io::Error::other(e.clone()))).await;
            }
            result
        }
    };
    let put = store.put(&piece.key, body, opts);
    let (read, stored) = tokio::join!(read, put);
    let size = stored.map_err(|e| format!("storing {}: {e}", piece.key))?;
    read?;
    let keys: Vec<String> = parts.into_iter().map(|p| p.key).collect();
    // The parts go once the whole is stored; a failure leaves both, which a restore reads
    // as the whole, and retention deletes with the history.
    if let Err(e) = store.delete_objects(&keys).await {
        tracing::warn!(key = %piece.key, error = %e, "deleting repacked objects failed");
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn segment(n: u64, at_ms: i64) -> (Piece, Bytes) {
        let key = layout::segment_key("data.db", "h", (n, n), at_ms, at_ms + 500);
        let bytes = Bytes::from(vec![n as u8; 10]);
        let piece = Piece {
            key,
            size: 10,
            n: (n, n),
            first_ms: at_ms,
            last_ms: at_ms + 500,
        };
        (piece, bytes)
    }

    #[test]
    fn a_minute_of_segments_is_packed_and_an_hour_of_minutes_repacked() {
        let mut planner = Planner::new("data.db", "h", Levels::default());
        let mut packs = Vec::new();
        let mut repacks = Vec::new();
        // A segment a second for two hours and a bit.
        for n in 0..(2 * 3600 + 30) {
            let at = n as i64 * 1000;
            let (piece, bytes) = segment(n, at);
            for job in planner.shipped(piece, bytes, at + 900) {
                match job {
                    Job::Pack {
                        piece, replaces, ..
                    } => {
                        assert_eq!(replaces.len() as u64, piece.n.1 - piece.n.0 + 1);
                        packs.push(piece);
                    }
                    Job::Repack { piece, parts } => {
                        // Every part a pack of the minute, in order, none left out.
                        assert!(parts.windows(2).all(|w| w[0].n.1 + 1 == w[1].n.0));
                        assert_eq!((parts[0].n.0, parts[parts.len() - 1].n.1), piece.n);
                        assert!(parts.iter().all(|p| packs.contains(p)));
                        repacks.push((piece, parts.len()));
                    }
                }
            }
        }
        // A pack every 61 segments: the first at t, packed when the 61st sees t + 60.9 s.
        assert_eq!(packs.len(), (2 * 3600 + 30) / 61, "one pack a minute");
        assert!(packs.iter().all(|p| p.n.1 - p.n.0 == 60), "{packs:?}");
        // An hour's repack when a segment comes an hour after the first pack's first commit:
        // 59 minutes of 61 s each, then the next from where it ended.
        assert_eq!(repacks.len(), 2, "{repacks:?}");
        assert_eq!(repacks[0].0.n.0, 0);
        assert_eq!(repacks[1].0.n.0, repacks[0].0.n.1 + 1);
        for (hour, minutes) in &repacks {
            assert_eq!(*minutes, 59, "{hour:?}");
            assert!(
                hour.last_ms - hour.first_ms >= 3600 * 1000 - MIN,
                "{hour:?}"
            );
        }
        // The end packs the last minute; the hour since the repack stays in minutes.
        let last = planner.end().expect("a minute of segments waits");
        assert!(matches!(last, Job::Pack { .. }));
        assert!(planner.end().is_none());
    }

    #[test]
    fn a_lone_segment_is_its_minutes_object_and_bytes_pack_before_the_minute() {
        let mut planner = Planner::new("data.db", "h", Levels::default());
        // One segment in a minute: nothing to pack, it stays as it is.
        let (piece, bytes) = segment(0, 0);
        assert!(planner.shipped(piece.clone(), bytes, 61 * 1000).is_empty());
        assert_eq!(planner.hour, vec![piece]);
        // Large segments: packed by size within the minute.
        let big = Bytes::from(vec![0u8; PACK_BYTES / 2 + 1]);
        let (a, _) = segment(1, 62_000);
        let (b, _) = segment(2, 63_000);
        assert!(planner.shipped(a, big.clone(), 62_500).is_empty());
        let jobs = planner.shipped(b, big, 63_500);
        assert!(matches!(&jobs[..], [Job::Pack { .. }]), "{jobs:?}");
        // An hour later, the lone segment and the pack are packed again.
        let (c, bytes) = segment(3, 3700 * 1000);
        let jobs = planner.shipped(c, bytes, 3700 * 1000);
        let Some(Job::Repack { piece, parts }) = jobs.last() else {
            panic!("{jobs:?}");
        };
        assert_eq!(parts.len(), 2);
        assert_eq!(piece.n, (0, 2));
    }

    #[test]
    fn an_hour_of_one_object_waits_for_the_next_and_is_packed_with_it() {
        let levels = Levels {
            minute: Duration::from_secs(1),
            hour: Duration::from_secs(5),
        };
        let mut planner = Planner::new("data.db", "h", levels);
        // Three segments 0.4 s apart: one pack of the minute.
        let mut jobs = Vec::new();
        for n in 0..3 {
            let (piece, bytes) = segment(n, n as i64 * 400);
            jobs.extend(planner.shipped(piece, bytes, n as i64 * 400 + 500));
        }
        assert!(matches!(&jobs[..], [Job::Pack { .. }]), "{jobs:?}");
        // The stream held up past the hour: the next segment is recent, its minute not due,
        // and the hour holds the pack alone. Nothing is repacked, nothing is forgotten.
        let (late, bytes) = segment(3, 9_000);
        assert!(planner.shipped(late.clone(), bytes, 9_400).is_empty());
        assert_eq!(planner.hour.len(), 1);
        // The next minute's object joins it, and the two are one object.
        let (next, bytes) = segment(4, 10_000);
        let jobs = planner.shipped(next, bytes, 10_600);
        let Some(Job::Repack { piece, parts }) = jobs.last() else {
            panic!("{jobs:?}");
        };
        assert_eq!(parts.len(), 2);
        assert_eq!(piece.n, (0, 4));
        assert!(planner.hour.is_empty());
    }
}
