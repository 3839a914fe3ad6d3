//! One database's stream: its committed transactions captured ([`super::capture`]) and
//! shipped to the store as segments, history after history ([`super::layout`]).
//!
//! One concern: one database's stream, from its capture to the store (the history's loop,
//! its status), about 500 lines of code and its helpers; the shipper task is `ship`.
//!
//! A history begins with a capture round and the database's image as the capture's pin
//! sees it (the base, streamed to the store as it is read; an application checkpoint that
//! waits for the pin meanwhile ends the read, which begins again a moment later: for at
//! most [`GIVE_WAY_FOR`]), then a second round, which
//! captures what was committed meanwhile, and the `ready` marker
//! ([`layout::ready_key`]): the history is restorable from that moment. Then, on a thread
//! of its own:
//! - a round whenever the WAL's size, time or inode changed since the last, and at least
//!   every [`IDLE_ROUND`] (the handoff that lets the application's checkpoints through);
//! - every tick, a look at the application's locks: a blocking checkpoint that waits gets
//!   the capture out of its way ([`Capture::make_way`]; rounds pause while it is aside);
//! - the rounds' segments are joined and handed to the shipper once the oldest of them is
//!   [`SHIP_AFTER`] old (or [`SHIP_BYTES`] are waiting): about one store write a second
//!   under a steady writer, none while the database is idle;
//! - the shipper (a task on the runtime) writes them in order, retrying; the capture
//!   thread never waits for the store;
//! - every minute the segments written since the last time are packed into one object,
//!   and every hour those objects again, in the background ([`super::compact`]): a restore
//!   of a day reads a few dozen objects, not one per second;
//! - once the WAL passes [`CHECKPOINT_FRAMES`], a PASSIVE checkpoint of the stream's own (at
//!   most every [`CHECKPOINT_EVERY`]) copies what is captured, so that a WAL under a writer
//!   that never pauses can restart.
//!
//! The history ends, and a new one begins with a fresh base, after `--pitr-base-hours` or
//! once it takes half of `--pitr-max-size-mib` (so that old history can be deleted:
//! [`super::retention`]) and when continuity is lost:
//! a WAL restart the capture did not see through (a gap), the store changed, the shipper
//! gave up, or more than [`MAX_UNSHIPPED`] bytes wait for a store that does not answer. A
//! clean end (a stop: shutdown, a restore's swap, the setting off; a new base; another
//! store; the database file replaced) takes a last round, ships what was captured, then
//! writes the `end` marker ([`layout::end_key`]).

use super::capture::{Capture, Round};
use super::compact::{self, Piece, Planner};
use super::layout;
use super::segment;
use super::ship::{Shipment, Shipper};
use crate::archive::sqlite::Sidecar;
use crate::storage::{BackupStore, PutOptions};
use bytes::Bytes;
use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the WAL and the application's locks are looked at: an application checkpoint
/// that waits on the capture is let through within about this (its busy handler sleeps 1,
/// 2, 5, then 10 ms between tries).
const TICK: Duration = Duration::from_millis(2);
/// The WAL's size, in frames, past which the stream copies it into the database itself
/// (SQLite's own autocheckpoint threshold), ...
const CHECKPOINT_FRAMES: u64 = 1000;
/// ... at most this often.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// The loop's pace while the capture is aside for a checkpoint: the pin comes back within
/// this of the checkpoint's end.
const ASIDE_TICK: Duration = Duration::from_millis(1);
/// The loop's pace while a checkpoint that waits is being confirmed ([`Capture::suspects`]).
const SUSPECT_TICK: Duration = Duration::from_micros(250);
/// A round at least this often, even with nothing written.
const IDLE_ROUND: Duration = Duration::from_millis(50);
/// A database with nothing written for this long is **quiet**: the stream copies what it
/// captured into the database (a PASSIVE checkpoint), moves its pin to slot 0 (the
/// database alone), and then looks only every [`QUIET_TICK`], a round every
/// [`QUIET_ROUND`]. From slot 0 the pin is in no checkpoint's way while nothing is
/// written (there is nothing to copy, and a WAL restart waits only for the other slots);
/// the first change of the WAL ends the quiet. An idle stream then costs about a tenth of
/// what it did (docs/pitr.md).
const QUIET_AFTER: Duration = Duration::from_secs(5);
const QUIET_TICK: Duration = Duration::from_millis(20);
const QUIET_ROUND: Duration = Duration::from_secs(1);
/// Captured commits are shipped once the oldest waiting is this old.
pub const SHIP_AFTER: Duration = Duration::from_millis(850);
/// ... or once this many bytes wait.
const SHIP_BYTES: usize = 8 << 20;
/// Bytes captured but not yet stored past which the history is given up (the store does
/// not answer): memory stays bounded, and the gap shows.
const MAX_UNSHIPPED: usize = 64 << 20;
/// A stream whose store is this far behind is stalled (health, notifications).
pub const STALLED_AFTER: Duration = Duration::from_secs(10);
/// Lags kept for the percentiles.
pub(super) const LAGS_KEPT: usize = 1024;
/// A base read gives way to an application's blocking checkpoint (which would wait for its
/// pin, holding the application's writes) and begins again this long after ...
const BASE_AGAIN_AFTER: Duration = Duration::from_millis(250);
/// ... for this long; then it is read through, the checkpoint waiting (a database whose
/// checkpoints never pause still gets a history).
const GIVE_WAY_FOR: Duration = Duration::from_secs(60);

/// What a stream needs from the gateway.
#[derive(Clone)]
pub struct Ctx {
    pub rt: tokio::runtime::Handle,
    /// The store of the current settings: a change begins a new history in the new store.
    pub store: Arc<dyn Fn() -> Arc<dyn BackupStore> + Send + Sync>,
    /// How base images are uploaded.
    pub put: PutOptions,
    /// A history ends, and a new one begins with a fresh base, after this long
    /// (`--pitr-base-hours`).
    pub base_every: Duration,
    /// When the history's objects are packed into fewer.
    pub levels: compact::Levels,
    /// `--pitr-max-size-mib`: a history that takes half of it ends, and a new one begins,
    /// so that the one before can be deleted ([`super::retention`]).
    pub max_bytes: Option<u64>,
}

/// A stream's state, as `GET /api/gateway/pitr` and the metrics show it.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The history being written.
    pub history: Option<String>,
    /// Its base is stored and rounds run.
    pub streaming: bool,
    /// Nothing written for a while: the stream looks at the database at a slow pace
    /// ([`QUIET_AFTER`]).
    pub quiet: bool,
    /// The newest commit stored (Unix ms, when the stream saw it).
    pub last_shipped_commit_ms: Option<i64>,
    /// When the last segment was stored.
    pub last_shipped_at_ms: Option<i64>,
    /// The oldest commit handed to the shipper and not yet stored.
    pub oldest_unshipped_ms: Option<i64>,
    /// The oldest commit captured and not yet handed to the shipper.
    pub pending_since_ms: Option<i64>,
    pub commits_shipped: u64,
    pub segments_shipped: u64,
    pub bytes_shipped: u64,
    pub histories_started: u64,
    /// Packs written: each a minute of segments, and each an hour of those.
    pub minute_packs: u64,
    pub hour_packs: u64,
    /// Base reads ended to let an application checkpoint through.
    pub bases_given_way: u64,
    /// The last failure, cleared by the next success.
    pub error: Option<String>,
    /// Commit-to-stored times of the last segments, ms.
    pub lags_ms: VecDeque<u64>,
}

impl Status {
    /// The `p`-th percentile (0..=100) of the kept lags.
    pub fn lag_percentile(&self, p: usize) -> Option<u64> {
        let mut lags: Vec<u64> = self.lags_ms.iter().copied().collect();
        if lags.is_empty() {
            return None;
        }
        lags.sort_unstable();
        Some(lags[(lags.len() - 1) * p.min(100) / 100])
    }

    /// Why the stream is stalled at `now_ms`, if it is: it is not streaming (its last
    /// error), or the store is more than [`STALLED_AFTER`] behind.
    pub fn stalled(&self, now_ms: i64) -> Option<String> {
        let lag = self.lag_now_ms(now_ms);
        if !self.streaming {
            let why = self.error.as_deref().unwrap_or("starting");
            // A stream that is only starting is not stalled; one that failed is.
            return self.error.as_ref().map(|_| format!("not streaming: {why}"));
        }
        (lag > STALLED_AFTER.as_millis() as u64).then(|| {
            format!(
                "the store is {} s behind{}",
                lag / 1000,
                self.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )
        })
    }

    /// How far the store is behind now, ms.
    pub fn lag_now_ms(&self, now_ms: i64) -> u64 {
        [self.oldest_unshipped_ms, self.pending_since_ms]
            .into_iter()
            .flatten()
            .min()
            .map_or(0, |t| u64::try_from(now_ms - t).unwrap_or(0))
    }
}

pub type Shared = Arc<Mutex<Status>>;

pub(super) fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Status> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn now_ms() -> i64 {
    crate::util::time_fmt::unix_ms(time::OffsetDateTime::now_utc())
}

/// Streams the database at `path` (named `rel`) until `stop`, history after history.
pub fn run(path: &Path, rel: &str, ctx: &Ctx, stop: &AtomicBool, status: &Shared) {
    // Since when the base reads have given way to the application's checkpoints, one after
    // the other.
    let mut giving_way: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        let give_way = giving_way.is_none_or(|t| t.elapsed() < GIVE_WAY_FOR);
        match history(path, rel, ctx, stop, status, give_way) {
            Ok(()) => giving_way = None,
            Err(e) if GaveWay::is(&e) => {
                // Not a failure: the stream is starting.
                giving_way.get_or_insert_with(Instant::now);
                lock(status).bases_given_way += 1;
                tracing::debug!(db = rel, reason = %e, "point-in-time stream: the base gave way");
                pause(stop, BASE_AGAIN_AFTER);
            }
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                tracing::info!(db = rel, reason = %e, "point-in-time stream: not streamed");
                lock(status).error = Some(e.to_string());
                break;
            }
            Err(e) => {
                giving_way = None;
                tracing::warn!(db = rel, error = %e, "point-in-time stream: the history ended; a new one begins");
                let mut s = lock(status);
                s.error = Some(e.to_string());
                s.streaming = false;
                drop(s);
                pause(stop, Duration::from_secs(1));
            }
        }
    }
    lock(status).streaming = false;
}

/// A base read that ended to let an application checkpoint through ([`ship_base`]).
#[derive(Debug)]
struct GaveWay;

impl std::fmt::Display for GaveWay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an application checkpoint waits: the base is read again after it")
    }
}

impl std::error::Error for GaveWay {}

impl GaveWay {
    fn error() -> io::Error {
        io::Error::other(Self)
    }

    fn is(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<Self>())
    }
}

/// Sleeps `d`, cut short by a stop.
fn pause(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Commits captured and not yet handed to the shipper, all of one WAL generation.
#[derive(Default)]
struct Pending {
    parts: Vec<Vec<u8>>,
    first_ms: i64,
    last_ms: i64,
    commits: usize,
    bytes: usize,
}

/// A history's beginning: the capture, its first rounds, the base stored.
struct Begun {
    capture: Capture,
    store: Arc<dyn BackupStore>,
    name: String,
    /// The rounds run so far: the first, read before the base, and the one after it, which
    /// captured every commit made while the base was stored (the history can be restored
    /// from its time on).
    rounds: [Round; 2],
    /// The base image's size.
    base_bytes: u64,
}

fn begin(
    path: &Path,
    rel: &str,
    ctx: &Ctx,
    stop: &AtomicBool,
    status: &Shared,
    give_way: bool,
) -> io::Result<Begun> {
    // Not streaming until the base is stored (the last history ended; the API and the
    // metrics show the gap while a base is read, or gives way).
    let mut s = lock(status);
    (s.streaming, s.quiet) = (false, false);
    drop(s);
    let mut capture = Capture::open(path)?;
    let store = (ctx.store)();
    let start = now_ms();
    let first = capture.round(&now_ms)?;
    let name = layout::history(start);
    let base = layout::base_key(rel, &name, capture.page_size()?);
    let base_bytes = ship_base(&capture, &store, &base, ctx, stop, give_way)?;
    let second = capture.round(&now_ms)?;
    let mut s = lock(status);
    s.history = Some(name.clone());
    s.streaming = true;
    s.histories_started += 1;
    s.error = None;
    s.oldest_unshipped_ms = None;
    s.pending_since_ms = None;
    drop(s);
    tracing::info!(db = rel, history = %name, "point-in-time stream: a history begins");
    Ok(Begun {
        capture,
        store,
        name,
        rounds: [first, second],
        base_bytes,
    })
}

/// How a history's loop ended.
enum End {
    /// Cleanly (a stop, a new base, another store, the database replaced): nothing was
    /// committed that the stream did not capture, up to now.
    Clean,
    /// A WAL restart the capture did not see through: commits may be missing.
    Gap,
}

/// One history, from its base to its end: `Ok` when it ended to begin another (or on
/// stop), `Err` when it failed ([`GaveWay`]: its base gave way to an application
/// checkpoint, with `give_way`).
fn history(
    path: &Path,
    rel: &str,
    ctx: &Ctx,
    stop: &AtomicBool,
    status: &Shared,
    give_way: bool,
) -> io::Result<()> {
    // Taken first: a file swapped in from now on ends the history.
    let db_id = file_id(path);
    let Begun {
        mut capture,
        store,
        name,
        rounds,
        base_bytes,
    } = begin(path, rel, ctx, stop, status, give_way)?;
    let shipper = Shipper::start(ctx, store.clone(), status.clone());
    let mut out = Out {
        rel,
        history: &name,
        next: 0,
        shipper: &shipper,
        status,
        planner: Planner::new(rel, &name, ctx.levels),
        size: Size {
            base: base_bytes,
            segments: 0,
        },
    };
    let mut pending = Pending::default();
    let mut ended = Ok(End::Clean);
    let [mut first, second] = rounds;
    let ready = second.at_ms;
    // The first round's gap is what the base is for (the WAL was read from its start).
    first.gap = false;
    for round in [first, second] {
        if !take(round, &mut pending, &mut out)? {
            ended = Ok(End::Gap);
        }
    }
    // The first segments, then the marker that makes the history restorable from `ready`.
    out.hand(&mut pending)?;
    // They hold the WAL as it was at the base (read from its start): with the base, what
    // beginning a history costs.
    out.size = Size {
        base: out.size.base + out.size.segments,
        segments: 0,
    };
    shipper.send(Shipment::Marker(layout::ready_key(rel, &name, ready)))?;
    if matches!(ended, Ok(End::Clean)) {
        ended = run_rounds(
            path,
            rel,
            ctx,
            stop,
            &mut capture,
            &mut pending,
            &mut out,
            db_id,
        );
    }
    // What was captured goes to the store before the history ends (its pins close with
    // `capture`, after): after a clean end, a last round first, and the end marker after
    // the segments.
    if matches!(ended, Ok(End::Gap)) {
        tracing::warn!(db = rel, history = %name,
            "point-in-time stream: commits may be missing (a gap); a new history begins");
    }
    let last = match ended {
        Ok(End::Clean) => capture.round(&now_ms).and_then(|r| {
            let at = r.at_ms;
            take(r, &mut pending, &mut out).map(|whole| whole.then_some(at))
        }),
        _ => Ok(None),
    };
    let handed = out.hand(&mut pending).and_then(|()| out.end());
    if let (Ok(Some(at)), Ok(())) = (&last, &handed) {
        let _ = shipper.send(Shipment::Marker(layout::end_key(rel, &name, *at)));
    }
    shipper.finish(&ctx.rt);
    drop(capture);
    ended.map(|_| ()).and(handed).and(last.map(|_| ()))
}

/// Takes a round's commits into `pending` (handing over those of the previous WAL
/// generation first); false when the round found a gap.
fn take(round: Round, pending: &mut Pending, out: &mut Out<'_>) -> io::Result<bool> {
    if round.gap {
        return Ok(false);
    }
    if round.new_generation {
        out.hand(pending)?;
    }
    if pending.push(round.segment, round.at_ms, round.commits) {
        lock(out.status).pending_since_ms = Some(pending.first_ms);
    }
    Ok(true)
}

/// The rounds of a history until it ends.
#[allow(clippy::too_many_arguments)] // the loop's state, passed down from `history`
fn run_rounds(
    path: &Path,
    rel: &str,
    ctx: &Ctx,
    stop: &AtomicBool,
    capture: &mut Capture,
    pending: &mut Pending,
    out: &mut Out<'_>,
    db_id: Option<(u64, u64)>,
) -> io::Result<End> {
    let started = Instant::now();
    let mut last_round = Instant::now();
    let mut last_wal = wal_stamp(path);
    let mut failures = 0u32;
    let page_size = u64::from(capture.page_size()?);
    let mut last_checkpoint = Instant::now();
    let mut quiet = Quiet::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(End::Clean);
        }
        std::thread::sleep(pace(capture, &quiet));
        if file_id(path) != db_id {
            // Another file under the name (the database was replaced): its WAL is not this
            // history's, and is never read into it.
            return Ok(End::Clean);
        }
        // The application's blocking checkpoints never wait on the pins (capture.rs).
        match capture.make_way(&now_ms) {
            Ok(Some(round)) => {
                failures = 0;
                last_round = Instant::now();
                if !take(round, pending, out)? {
                    return Ok(End::Gap);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(db = rel, error = %e, "the checkpoint watch failed"),
        }
        if capture.aside() {
            if pending.due() {
                out.hand(pending)?;
            }
            continue;
        }
        let stamp = wal_stamp(path);
        if stamp != last_wal {
            if quiet.settled {
                lock(out.status).quiet = false;
            }
            quiet = Quiet::new();
        }
        if checkpoint_if_large(capture, stamp, page_size, &mut last_checkpoint, rel)
            || quiet.settle(capture, rel)
        {
            last_wal = None;
        }
        let idle_round = if quiet.settled {
            QUIET_ROUND
        } else {
            IDLE_ROUND
        };
        if stamp != last_wal || last_round.elapsed() >= idle_round {
            last_wal = stamp;
            last_round = Instant::now();
            match capture.round(&now_ms) {
                Ok(round) => {
                    failures = 0;
                    let nothing = round.commits == 0 && !round.new_generation;
                    if !take(round, pending, out)? {
                        return Ok(End::Gap);
                    }
                    if quiet.after_round(capture, nothing && wal_stamp(path) == stamp) {
                        lock(out.status).quiet = true;
                    }
                }
                // The old pin is still held: nothing is lost by trying again.
                Err(e) if failures < 200 => {
                    failures += 1;
                    tracing::debug!(db = rel, error = %e, "a capture round failed");
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        if pending.due() {
            out.hand(pending)?;
        }
        if let Some(end) = history_over(out.shipper, ctx, started, out.size, rel) {
            return end.map(|()| End::Clean);
        }
    }
}

/// How long the loop sleeps before it looks again.
fn pace(capture: &Capture, quiet: &Quiet) -> Duration {
    if capture.suspects() {
        SUSPECT_TICK
    } else if capture.aside() {
        ASIDE_TICK
    } else if quiet.settled {
        QUIET_TICK
    } else {
        TICK
    }
}

/// Whether the history must end: the shipper gave up or cannot keep up (`Err`), or another
/// store, or time for a fresh base, or the history is large: `Ok`, a new history.
fn history_over(
    shipper: &Shipper,
    ctx: &Ctx,
    started: Instant,
    size: Size,
    rel: &str,
) -> Option<io::Result<()>> {
    if let Some(e) = shipper.failed() {
        return Some(Err(io::Error::other(e)));
    }
    if shipper.unshipped_bytes() > MAX_UNSHIPPED {
        return Some(Err(io::Error::other(
            "the store does not take the segments",
        )));
    }
    if ctx.max_bytes.is_some_and(|max| size.past_half(max)) {
        tracing::info!(
            db = rel,
            base = size.base,
            segments = size.segments,
            "point-in-time stream: the history takes half of --pitr-max-size-mib; a new one begins so that the older can go"
        );
        return Some(Ok(()));
    }
    let over = !Arc::ptr_eq(&(ctx.store)(), &shipper.store) || started.elapsed() >= ctx.base_every;
    over.then_some(Ok(()))
}

/// What a history's objects take in the store (its segments as shipped: packing them
/// keeps about their size).
#[derive(Debug, Clone, Copy)]
struct Size {
    /// The base image and the first segments (the WAL as it was then): what beginning the
    /// history cost.
    base: u64,
    /// The segments since.
    segments: u64,
}

impl Size {
    /// Whether the history takes half of `max`, and a new one is worth beginning: its
    /// segments take at least as much as its beginning (a database larger than a quarter
    /// of `max` then keeps histories of twice its size, past the bound).
    fn past_half(self, max: u64) -> bool {
        self.base + self.segments >= max / 2 && self.segments >= self.base
    }
}

/// A WAL past SQLite's autocheckpoint size under a writer that never pauses: the capture
/// copies it (up to what is captured), at most once every [`CHECKPOINT_EVERY`], so that it
/// can restart. True when it ran.
fn checkpoint_if_large(
    capture: &Capture,
    stamp: Option<(u64, i128, u64)>,
    page_size: u64,
    last: &mut Instant,
    rel: &str,
) -> bool {
    let large = stamp.is_some_and(|s| s.0 > 32 + CHECKPOINT_FRAMES * (24 + page_size));
    if !large || last.elapsed() < CHECKPOINT_EVERY {
        return false;
    }
    *last = Instant::now();
    own_checkpoint(capture, rel);
    true
}

/// The stream's own PASSIVE checkpoint ([`Capture::checkpoint`]); a failure only logged (it
/// never waits, and the next one tries again).
fn own_checkpoint(capture: &Capture, rel: &str) {
    if let Err(e) = capture.checkpoint() {
        tracing::debug!(db = rel, error = %e, "the stream's checkpoint failed");
    }
}

/// Whether the database is quiet (see [`QUIET_AFTER`]).
struct Quiet {
    /// Since when the WAL has not changed.
    since: Instant,
    /// The stream's checkpoint ran for this quiet, and the next round's pin is to land on
    /// slot 0.
    copied: bool,
    /// The pin is on slot 0, with nothing written since: the slow pace.
    settled: bool,
}

impl Quiet {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            copied: false,
            settled: false,
        }
    }

    /// Once the WAL has not changed for [`QUIET_AFTER`]: the stream's checkpoint, which
    /// copies every frame (all captured: nothing was written since the last round) unless
    /// a reader of the application holds some back. True when it ran (a round is due).
    fn settle(&mut self, capture: &Capture, rel: &str) -> bool {
        if self.copied || self.since.elapsed() < QUIET_AFTER {
            return false;
        }
        self.copied = true;
        own_checkpoint(capture, rel);
        true
    }

    /// After a round: settled when the stream's checkpoint ran, the round found nothing
    /// and the WAL did not change across it (`unchanged`), and every frame is copied: the
    /// round's pin then began on slot 0. Else, the checkpoint is tried again a quiet
    /// period later (an application reader held frames back). True when it just settled.
    fn after_round(&mut self, capture: &Capture, unchanged: bool) -> bool {
        if !self.copied || self.settled {
            return false;
        }
        if unchanged && capture.all_copied().unwrap_or(false) {
            self.settled = true;
        } else {
            *self = Self::new();
        }
        self.settled
    }
}

impl Pending {
    /// Time to hand the commits over: the oldest waited [`SHIP_AFTER`], or they are many.
    fn due(&self) -> bool {
        self.commits > 0
            && (now_ms() - self.first_ms >= SHIP_AFTER.as_millis() as i64
                || self.bytes >= SHIP_BYTES)
    }

    /// Adds a round's segment; true when it is the first waiting.
    fn push(&mut self, segment: Option<Vec<u8>>, at_ms: i64, commits: usize) -> bool {
        let Some(segment) = segment else {
            return false;
        };
        let first = self.parts.is_empty();
        if first {
            self.first_ms = at_ms;
        }
        self.last_ms = at_ms;
        self.commits += commits;
        self.bytes += segment.len();
        self.parts.push(segment);
        first
    }
}

/// Where a history's segments go.
struct Out<'a> {
    rel: &'a str,
    history: &'a str,
    /// The next segment's number.
    next: u64,
    shipper: &'a Shipper,
    status: &'a Shared,
    /// When the segments are packed into fewer objects.
    planner: Planner,
    /// What the history takes so far.
    size: Size,
}

impl Out<'_> {
    /// Joins the pending parts into one segment and hands it to the shipper, with the packs
    /// that are due.
    fn hand(&mut self, pending: &mut Pending) -> io::Result<()> {
        if pending.parts.is_empty() {
            return Ok(());
        }
        let p = std::mem::take(pending);
        let bytes =
            segment::join(&p.parts).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let bytes = Bytes::from(segment::seal(&bytes));
        let n = self.next;
        self.next += 1;
        self.size.segments += bytes.len() as u64;
        lock(self.status).pending_since_ms = None;
        let piece = Piece {
            key: layout::segment_key(self.rel, self.history, (n, n), p.first_ms, p.last_ms),
            size: bytes.len() as u64,
            n: (n, n),
            first_ms: p.first_ms,
            last_ms: p.last_ms,
        };
        self.shipper.send(Shipment::Segment {
            piece: piece.clone(),
            bytes: bytes.clone(),
            commits: p.commits as u64,
        })?;
        for job in self.planner.shipped(piece, bytes, now_ms()) {
            self.shipper.send(Shipment::Compaction(job))?;
        }
        Ok(())
    }

    /// At the history's end: the last minute's pack.
    fn end(&mut self) -> io::Result<()> {
        match self.planner.end() {
            Some(job) => self.shipper.send(Shipment::Compaction(job)),
            None => Ok(()),
        }
    }
}

/// The base image, read through the capture's held pin and uploaded as it is read (its
/// size answered). With
/// `give_way`, a blocking checkpoint of the application that waits (for the pin, which the
/// read must keep) ends the read ([`GaveWay`]; the upload leaves nothing), also while the
/// upload cannot take more, and the history begins again after it.
fn ship_base(
    capture: &Capture,
    store: &Arc<dyn BackupStore>,
    key: &str,
    ctx: &Ctx,
    stop: &AtomicBool,
    give_way: bool,
) -> io::Result<u64> {
    let (tx, body) = crate::storage::channel_body(2);
    let mut size = 0u64;
    let put = ctx.rt.spawn({
        let (store, key, opts) = (store.clone(), key.to_string(), ctx.put.clone());
        async move { store.put(&key, body, opts).await }
    });
    // A stop (a restore, the setting off) does not wait for a whole base, nor does an
    // application checkpoint (with `give_way`).
    let halted = || -> io::Result<()> {
        if stop.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
        }
        if give_way && capture.checkpoint_waiting() {
            return Err(GaveWay::error());
        }
        Ok(())
    };
    let read = capture.read_base(|_, reader| {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            halted()?;
            let n = read_full(reader, &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            size += n as u64;
            // Handed over as soon as the upload takes it; meanwhile the stop and the
            // application's checkpoints are watched (a slow store must not hold them up).
            let mut chunk = Ok(Bytes::copy_from_slice(&buf[..n]));
            loop {
                match tx.try_send(chunk) {
                    Ok(()) => break,
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                    Err(tokio::sync::mpsc::error::TrySendError::Full(back)) => chunk = back,
                }
                halted()?;
                std::thread::sleep(TICK);
            }
        }
    });
    if read.is_err() {
        // The upload is dropped, which leaves nothing (`BackupStore::put`), at once: the
        // body's end must not complete it, and a full body must not be waited on.
        put.abort();
    }
    drop(tx);
    let stored = ctx.rt.block_on(put);
    read?;
    stored
        .map_err(io::Error::other)?
        .map(|_| size)
        .map_err(io::Error::other)
}

fn read_full(r: &mut dyn io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The database file's device and inode.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The WAL's size, modification time and inode: a change means a round is due.
fn wal_stamp(db: &Path) -> Option<(u64, i128, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(Sidecar::Wal.of(db)).ok()?;
    Some((
        m.len(),
        i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        m.ino(),
    ))
}

#[cfg(test)]
mod tests {
    use super::Size;

    #[test]
    fn a_history_ends_for_its_size_at_half_the_bound_once_it_is_worth_its_beginning() {
        let size = |base, segments| Size { base, segments };
        // Half of 100 reached, the segments past the beginning: a new history.
        assert!(size(10, 40).past_half(100));
        assert!(!size(10, 39).past_half(100));
        // A beginning larger than half the bound: only once the segments take as much.
        assert!(!size(60, 50).past_half(100));
        assert!(size(60, 60).past_half(100));
    }
}
