//! Point-in-time restore (issue 30; docs/pitr-design.md): the databases' committed
//! transactions streamed to the store, and a database rebuilt to any moment.
//!
//! - [`wal`]: the committed transactions of a live database's write-ahead log, each frame
//!   proved by the WAL's salts and running checksum, read in rounds that resume where the
//!   last stopped, a restart of the WAL told apart (a gap);
//! - [`segment`]: a run of those transactions with the times they were seen, as the stream
//!   ships them (checked by a CRC-32), and a database rebuilt from its base and segments as
//!   it was at any moment, generation after generation, a gap or a foreign generation
//!   refused;
//! - [`capture`]: the pin protocol (docs/pitr-design.md §2) and its rounds: every commit of
//!   a live database taken into segments before SQLite can remove it, across the WAL
//!   restarts of the application's own TRUNCATE checkpoints, and the base image;
//! - [`stream`]: one database's stream, history after history, to the store: segments
//!   shipped about once a second, its own checkpoint when the WAL grows past SQLite's
//!   autocheckpoint size;
//! - `ship`: a history's shipper, the task that writes its objects in order, retrying;
//! - [`compact`]: a history's objects packed into fewer: a minute of segments, then an hour
//!   of those, so that a restore of a day reads a few dozen;
//! - [`layout`]: the keys of the history in the store;
//! - [`rebuild`]: the restore's side: the plan from one listing, a database rebuilt into a
//!   file and checked;
//! - [`retention`]: whole histories deleted past `--pitr-retention-days`, or past
//!   `--pitr-max-size-mib`, oldest first;
//! - this module: [`Pitr`], the streams of every WAL database in the data directory, found
//!   every few seconds, stopped for a restore's swap and started again after it, watched
//!   for stalls (health, metrics, `--notify-url`), and the retention run hourly.
//!
//! The streams run while the setting `backups.pitr` is on ([`Pitr::set_enabled`]).
//!

pub mod capture;
pub mod compact;
pub mod layout;
pub mod rebuild;
pub mod retention;
pub mod segment;
mod ship;
pub mod stream;
pub mod wal;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the data directory is searched for new databases.
const SCAN_EVERY: Duration = Duration::from_secs(2);
/// How often old history is looked for and deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How deep the search goes.
const MAX_DEPTH: usize = 8;
/// `--pitr-max-size-mib`'s default: at most 1 GiB of history per database. A PocketBase
/// creating 40 records a second keeps 40 to 80 minutes in it, one creating a record a
/// second 1.5 to 3 days, one every 5 s or fewer the whole retention (about 4 KB a create:
/// docs/pitr.md).
pub const DEFAULT_MAX_MIB: u64 = 1024;
/// `--pitr-exclude`'s default: PocketBase's request logs, a quarter of the history of a
/// busy PocketBase and of little use at a moment (docs/pitr.md).
pub const DEFAULT_EXCLUDE: &[&str] = &["auxiliary.db"];
/// With a size bound, old history is also looked for once the streams have shipped this
/// fraction of it since the last look (and never while they are idle).
const PRUNE_AFTER_SHARE: u64 = 8;

/// How much history is kept, and of which databases.
#[derive(Debug, Clone)]
pub struct Keep {
    /// `--pitr-retention-days`.
    pub retention: Duration,
    /// `--pitr-max-size-mib`: the most each database's history may take in the store.
    pub max_bytes: Option<u64>,
    /// `--pitr-exclude`: databases never streamed (paths in the data directory).
    pub exclude: Vec<String>,
}

impl Keep {
    /// Whether the database at `rel` is streamed (not excluded).
    pub fn streams(&self, rel: &str) -> bool {
        !self.exclude.iter().any(|e| e == rel)
    }
}

/// Told when a stream stalls: the database and why.
pub type OnStall = Box<dyn Fn(&str, &str) + Send + Sync>;

/// The streams of a data directory's WAL databases.
pub struct Pitr {
    data_dir: PathBuf,
    excluded: Vec<PathBuf>,
    ctx: stream::Ctx,
    streams: Mutex<BTreeMap<String, Running>>,
    /// The setting `backups.pitr`: no stream runs while it is off.
    enabled: AtomicBool,
    /// Streams stopped for a restore: none start until it is over.
    suspended: AtomicBool,
    /// Databases named once in the log as covered only by backups.
    named: Mutex<BTreeSet<String>>,
    /// Told once when a stream stalls (database, reason): the gateway notifies.
    on_stall: OnStall,
    /// The streams stalled at the last scan.
    stalled: Mutex<BTreeSet<String>>,
    /// How much history is kept, of which databases.
    keep: Keep,
    /// When old history was last looked for, and the bytes the streams had shipped and the
    /// histories they had begun then.
    pruned: Mutex<Option<(std::time::Instant, u64, u64)>>,
    /// The last look left a database over the size bound until its newest history is
    /// restorable: the next scan looks again.
    unsettled: AtomicBool,
    /// The databases streamed when [`Pitr::suspend`] stopped them: [`Pitr::resume`] starts
    /// them again at once, WAL or not yet (the restored state is a history's base).
    suspended_streams: Mutex<BTreeSet<String>>,
}

struct Running {
    status: stream::Shared,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Pitr {
    /// The streams of `data_dir` (`excluded`: the paths no backup holds, relative to it);
    /// none runs until
    /// [`Pitr::start`].
    pub fn new(
        data_dir: &Path,
        excluded: Vec<PathBuf>,
        ctx: stream::Ctx,
        keep: Keep,
        on_stall: OnStall,
    ) -> Arc<Self> {
        Arc::new(Self {
            data_dir: data_dir.to_path_buf(),
            excluded,
            ctx,
            streams: Mutex::new(BTreeMap::new()),
            enabled: AtomicBool::new(false),
            suspended: AtomicBool::new(false),
            named: Mutex::new(BTreeSet::new()),
            suspended_streams: Mutex::new(BTreeSet::new()),
            on_stall,
            stalled: Mutex::new(BTreeSet::new()),
            keep,
            pruned: Mutex::new(None),
            unsettled: AtomicBool::new(false),
        })
    }

    /// Starts the search for databases, on a thread of its own, for the life of the
    /// process.
    pub fn start(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("pitr-scan".into())
            .spawn(move || {
                while let Some(this) = this.upgrade() {
                    this.scan();
                    this.watch();
                    this.prune_if_due();
                    drop(this);
                    std::thread::sleep(SCAN_EVERY);
                }
            })
            .expect("a thread");
    }

    /// Starts a stream for every WAL database found that has none, and ends the streams
    /// of databases that are gone.
    pub fn scan(&self) {
        if !self.is_enabled() || self.suspended.load(Ordering::SeqCst) {
            return;
        }
        let (wal, other) = self.find();
        let mut streams = self.lock();
        // Again under the lock: a stop (the setting off, a restore) that ran meanwhile has
        // taken the streams, and none may start after it.
        if !self.is_enabled() || self.suspended.load(Ordering::SeqCst) {
            return;
        }
        // A stream that ended by itself (a database not in WAL mode) is tried again when
        // a WAL appears beside it.
        streams.retain(|_, r| !r.thread.is_finished());
        let gone: Vec<String> = streams
            .keys()
            .filter(|rel| !wal.contains(*rel) && !self.data_dir.join(rel).exists())
            .cloned()
            .collect();
        for rel in gone {
            if let Some(r) = streams.remove(&rel) {
                r.stop.store(true, Ordering::SeqCst);
            }
        }
        let (wal, skipped): (BTreeSet<String>, BTreeSet<String>) =
            wal.into_iter().partition(|rel| self.keep.streams(rel));
        for rel in wal {
            if streams.contains_key(&rel) {
                continue;
            }
            tracing::info!(db = %rel, "point-in-time stream starts");
            streams.insert(rel.clone(), self.spawn(rel));
        }
        drop(streams);
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        for rel in other {
            if named.insert(rel.clone()) {
                tracing::info!(db = %rel, "not in WAL mode (no -wal beside it): covered by backups only, not by the point-in-time stream");
            }
        }
        for rel in skipped {
            if named.insert(rel.clone()) {
                tracing::info!(db = %rel, "excluded (--pitr-exclude): covered by backups only, not by the point-in-time stream");
            }
        }
    }

    fn spawn(&self, rel: String) -> Running {
        let status = stream::Shared::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (status, stop, ctx) = (status.clone(), stop.clone(), self.ctx.clone());
            let path = self.data_dir.join(&rel);
            std::thread::Builder::new()
                .name("pitr-stream".into())
                .spawn(move || stream::run(&path, &rel, &ctx, &stop, &status))
                .expect("a thread")
        };
        Running {
            status,
            stop,
            thread,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Pitr {
    /// The streams end with the gateway's state (each ships what it captured first).
    fn drop(&mut self) {
        for r in self.lock().values() {
            r.stop.store(true, Ordering::SeqCst);
        }
    }
}

impl Pitr {
    /// How much history is kept, of which databases.
    pub fn keep(&self) -> &Keep {
        &self.keep
    }

    /// Whether the streams run (the setting `backups.pitr`).
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// Turns the streams on (they start at once) or off (each ships what it captured and
    /// ends). Blocking when turning off.
    pub fn set_enabled(&self, on: bool) {
        if self.enabled.swap(on, Ordering::SeqCst) == on {
            return;
        }
        if on {
            tracing::info!("point-in-time stream on");
            self.scan();
        } else {
            tracing::info!("point-in-time stream off");
            self.stop_all();
        }
    }

    /// At the gateway's shutdown: every stream ships what it captured and ends its history
    /// cleanly. Blocking.
    pub fn shut_down(&self) {
        self.suspended.store(true, Ordering::SeqCst);
        self.stop_all();
    }

    /// Stops every stream and waits for each to ship what it captured.
    fn stop_all(&self) -> BTreeSet<String> {
        let streams = std::mem::take(&mut *self.lock());
        for r in streams.values() {
            r.stop.store(true, Ordering::SeqCst);
        }
        let names = streams.keys().cloned().collect();
        for (_, r) in streams {
            let _ = r.thread.join();
        }
        names
    }

    /// Stops every stream, each after shipping what it captured, and starts none until
    /// [`Pitr::resume`]: a restore's swap replaces the databases under them. Blocking.
    pub fn suspend(&self) {
        self.suspended.store(true, Ordering::SeqCst);
        let names = self.stop_all();
        self.suspended_streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(names);
    }

    /// Starts the streams again (each with a new history: the restored databases and
    /// what is written after them).
    pub fn resume(&self) {
        self.suspended.store(false, Ordering::SeqCst);
        let before = std::mem::take(
            &mut *self
                .suspended_streams
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        if !self.is_enabled() {
            return;
        }
        let mut streams = self.lock();
        for rel in before {
            if !streams.contains_key(&rel)
                && self.keep.streams(&rel)
                && self.data_dir.join(&rel).is_file()
            {
                streams.insert(rel.clone(), self.spawn(rel));
            }
        }
        drop(streams);
        self.scan();
    }

    /// The stored history of the databases that are streamed (`--pitr-exclude` leaves the
    /// others out: a restore to a moment takes them from a backup, whatever history of
    /// them an earlier run stored), from one listing.
    ///
    /// # Errors
    /// The store's.
    pub async fn histories(
        &self,
        store: &dyn crate::storage::BackupStore,
    ) -> crate::storage::Result<BTreeMap<String, Vec<layout::History>>> {
        let mut histories = rebuild::histories(store).await?;
        histories.retain(|rel, _| self.keep.streams(rel));
        Ok(histories)
    }

    /// Deletes the history past the retention or the size bound: every [`PRUNE_EVERY`]
    /// (the first time at start) and, with a size bound, whenever the streams have shipped
    /// an eighth of it, or begun a history, since the last look, or the last look found a
    /// database over it until its newest history is restorable.
    fn prune_if_due(&self) {
        if !self.is_enabled() {
            return;
        }
        let statuses = self.statuses();
        let shipped: u64 = statuses.values().map(|s| s.bytes_shipped).sum();
        let started: u64 = statuses.values().map(|s| s.histories_started).sum();
        {
            let mut pruned = self.pruned.lock().unwrap_or_else(|e| e.into_inner());
            // With a size bound: the streams shipped an eighth of it, or began a history
            // (one that ended for size can go once the next is restorable), or the last
            // look was unsettled. Their counts begin again when they do (a restore).
            let grown = |(since, before): (u64, u64)| {
                self.keep.max_bytes.is_some_and(|max| {
                    shipped < since
                        || shipped - since >= max / PRUNE_AFTER_SHARE
                        || started != before
                        || self.unsettled.load(Ordering::SeqCst)
                })
            };
            if pruned.is_some_and(|(t, since, before)| {
                t.elapsed() < PRUNE_EVERY && !grown((since, before))
            }) {
                return;
            }
            *pruned = Some((std::time::Instant::now(), shipped, started));
        }
        let store = (self.ctx.store)();
        let keep = i64::try_from(self.keep.retention.as_millis()).unwrap_or(i64::MAX);
        let writing: BTreeMap<String, String> = statuses
            .into_iter()
            .filter_map(|(db, s)| s.history.map(|h| (db, h)))
            .collect();
        let done: crate::storage::Result<retention::Expired> = self.ctx.rt.block_on(async {
            // Excluded databases' old histories are pruned as well (by the same rules).
            let histories = rebuild::histories(store.as_ref()).await?;
            let gone = retention::expired(
                &histories,
                stream::now_ms(),
                keep,
                self.keep.max_bytes,
                &writing,
            );
            store.delete_objects(&gone.keys).await?;
            Ok(gone)
        });
        self.unsettled.store(
            done.as_ref().is_ok_and(|gone| gone.unsettled),
            Ordering::SeqCst,
        );
        match done {
            Ok(gone) if gone.keys.is_empty() => {}
            Ok(gone) => tracing::info!(
                objects = gone.keys.len(),
                histories_past_retention = gone.past_retention,
                histories_past_size = gone.past_size,
                "point-in-time history deleted (past the retention or the size bound)"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "deleting old point-in-time history failed")
            }
        }
    }

    /// Tells `on_stall` of every stream that stalled since the last look (once per stall).
    fn watch(&self) {
        let stalled = self.stalled_streams();
        let mut before = self.stalled.lock().unwrap_or_else(|e| e.into_inner());
        for (db, why) in &stalled {
            if !before.contains(db) {
                tracing::warn!(db = %db, reason = %why, "point-in-time stream stalled");
                (self.on_stall)(db, why);
            }
        }
        *before = stalled.into_keys().collect();
    }

    /// The streams stalled now, with why.
    pub fn stalled_streams(&self) -> BTreeMap<String, String> {
        let now = stream::now_ms();
        self.statuses()
            .into_iter()
            .filter_map(|(db, s)| s.stalled(now).map(|why| (db, why)))
            .collect()
    }

    /// Every stream's state, by database.
    pub fn statuses(&self) -> BTreeMap<String, stream::Status> {
        self.lock()
            .iter()
            .map(|(rel, r)| {
                let s = r.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
                (rel.clone(), s)
            })
            .collect()
    }

    /// The data directory's databases: those with a `-wal` beside them, and (to be named
    /// in the log) the other files that look like databases by their name. Only names are
    /// read, no file is opened: a plain descriptor closed on a database would drop the
    /// locks the gateway's own connections hold on it.
    fn find(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut wal = BTreeSet::new();
        let mut other = BTreeSet::new();
        self.walk(&self.data_dir, 0, &mut wal, &mut other);
        other.retain(|o| !wal.contains(o));
        (wal, other)
    }

    fn walk(
        &self,
        dir: &Path,
        depth: usize,
        wal: &mut BTreeSet<String>,
        other: &mut BTreeSet<String>,
    ) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // The excluded paths are relative to the data directory.
            let relative = path.strip_prefix(&self.data_dir).unwrap_or(&path);
            if self.excluded.iter().any(|e| relative.starts_with(e)) {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() && depth < MAX_DEPTH {
                self.walk(&path, depth + 1, wal, other);
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let Some(rel) = path
                .strip_prefix(&self.data_dir)
                .ok()
                .and_then(|r| r.to_str())
            else {
                continue;
            };
            if let Some(db) = rel.strip_suffix(crate::archive::sqlite::Sidecar::Wal.suffix()) {
                if std::fs::symlink_metadata(self.data_dir.join(db)).is_ok_and(|m| m.is_file()) {
                    wal.insert(db.to_string());
                }
            } else if [".db", ".sqlite", ".sqlite3", ".db3"]
                .iter()
                .any(|ext| rel.ends_with(ext))
            {
                other.insert(rel.to_string());
            }
        }
    }
}
