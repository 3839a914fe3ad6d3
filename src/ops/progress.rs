//! Progress of the long operation that runs under the busy lock (a create or a restore):
//! what it is, which phase it is in, how many bytes and entries it has done out of how
//! many, and from that a throughput and an ETA.
//!
//! The counters are relaxed atomics, bumped once per chunk or entry by the threads that
//! do the work (the zip pipeline's writer, the restore's extractor): nothing waits on
//! them. Readers (`GET /api/gateway/progress`, the health check, the log ticker) take a
//! [`View`]. This module depends on nothing else in the crate, so the archive layers can
//! report into it.

use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Create,
    Restore,
}

/// Who asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A request to the API.
    Api,
    /// The backups schedule (`backups.cron`).
    Schedule,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Schedule => "schedule",
        }
    }
}

/// Where an operation is. A create goes `snapshot` (survey and database snapshots),
/// `archive` (zipping and uploading), `complete` (the store assembles the archive); a
/// restore goes `plan` (end records and entry checks), `extract` (into staging),
/// `app-stop` (the application stops, with `--exec` or `--app-stop`), `swap` (the atomic
/// exchange and fsyncs), `app-start`, `hook` (`--on-restore`), `cleanup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Phase {
    Snapshot,
    Archive,
    Complete,
    Plan,
    Extract,
    Swap,
    Hook,
    Cleanup,
    #[serde(rename = "app-stop")]
    AppStop,
    #[serde(rename = "app-start")]
    AppStart,
}

impl Phase {
    const ALL: [Phase; 10] = [
        Self::Snapshot,
        Self::Archive,
        Self::Complete,
        Self::Plan,
        Self::Extract,
        Self::Swap,
        Self::Hook,
        Self::Cleanup,
        Self::AppStop,
        Self::AppStart,
    ];
}

/// The live counters of one operation; shared by the workers and the readers.
#[derive(Debug)]
pub struct Progress {
    kind: Kind,
    trigger: Trigger,
    key: String,
    started_at: String,
    started: Instant,
    phase: AtomicU8,
    bytes_done: AtomicU64,
    entries_done: AtomicU64,
    bytes_total: AtomicU64,
    entries_total: AtomicU64,
}

/// A snapshot of a [`Progress`], as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct View {
    pub kind: Kind,
    pub key: String,
    pub trigger: Trigger,
    /// PocketBase's timestamp format.
    pub started_at: String,
    pub phase: Phase,
    /// Bytes of file data done: read into the archive (create) or written out (restore).
    pub bytes_done: u64,
    pub entries_done: u64,
    /// A create's total is the survey's estimate of the tree (files may grow or shrink
    /// while it runs); a restore's is exact, from the central directory. 0 until known.
    pub bytes_total: u64,
    pub entries_total: u64,
    pub elapsed_seconds: f64,
    /// Mean since the start of the data phase's work.
    pub bytes_per_second: f64,
    /// Remaining bytes at the mean rate; `null` while nothing is done or no total is known.
    pub eta_seconds: Option<f64>,
}

impl Progress {
    pub fn new(kind: Kind, trigger: Trigger, key: &str) -> Arc<Self> {
        Arc::new(Self {
            kind,
            trigger,
            key: key.to_string(),
            started_at: crate::util::time_fmt::now_pb(),
            started: Instant::now(),
            phase: AtomicU8::new(match kind {
                Kind::Create => Phase::Snapshot,
                Kind::Restore => Phase::Plan,
            } as u8),
            bytes_done: AtomicU64::new(0),
            entries_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            entries_total: AtomicU64::new(0),
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn trigger(&self) -> Trigger {
        self.trigger
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn started_at(&self) -> &str {
        &self.started_at
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    pub fn set_totals(&self, bytes: u64, entries: u64) {
        self.bytes_total.store(bytes, Ordering::Relaxed);
        self.entries_total.store(entries, Ordering::Relaxed);
    }

    /// Back to nothing done (a create that starts over).
    pub fn restart(&self) {
        self.bytes_done.store(0, Ordering::Relaxed);
        self.entries_done.store(0, Ordering::Relaxed);
    }

    /// `bytes` more of file data done.
    pub fn add_bytes(&self, bytes: u64) {
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One more entry (file or directory) done.
    pub fn add_entry(&self) {
        self.add_entries(1);
    }

    /// `n` more entries done.
    pub fn add_entries(&self, n: u64) {
        self.entries_done.fetch_add(n, Ordering::Relaxed);
    }

    pub fn view(&self) -> View {
        let elapsed = self.started.elapsed().as_secs_f64();
        let bytes_done = self.bytes_done.load(Ordering::Relaxed);
        let bytes_total = self.bytes_total.load(Ordering::Relaxed);
        let rate = if elapsed > 0.0 {
            bytes_done as f64 / elapsed
        } else {
            0.0
        };
        let eta = (rate > 0.0 && bytes_total > 0)
            .then(|| bytes_total.saturating_sub(bytes_done) as f64 / rate);
        let phase = self.phase.load(Ordering::Relaxed);
        View {
            kind: self.kind,
            key: self.key.clone(),
            trigger: self.trigger,
            started_at: self.started_at.clone(),
            phase: Phase::ALL
                .into_iter()
                .find(|p| *p as u8 == phase)
                .unwrap_or(Phase::Snapshot),
            bytes_done,
            entries_done: self.entries_done.load(Ordering::Relaxed),
            bytes_total,
            entries_total: self.entries_total.load(Ordering::Relaxed),
            elapsed_seconds: round3(elapsed),
            bytes_per_second: rate.round(),
            eta_seconds: eta.map(round3),
        }
    }

    /// Logs a progress line every `interval` until the returned guard is dropped.
    pub fn report_every(self: &Arc<Self>, interval: Duration) -> Option<Reporter> {
        if interval.is_zero() {
            return None;
        }
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let progress = Arc::clone(self);
        let task = handle.spawn(async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                tick.tick().await;
                let v = progress.view();
                tracing::info!(
                    kind = ?v.kind,
                    key = %v.key,
                    trigger = v.trigger.as_str(),
                    phase = ?v.phase,
                    bytes_done = v.bytes_done,
                    bytes_total = v.bytes_total,
                    entries_done = v.entries_done,
                    entries_total = v.entries_total,
                    mib_per_second = format!("{:.1}", v.bytes_per_second / 1048576.0),
                    eta_seconds = v.eta_seconds.map(|s| s.round() as u64),
                    "progress"
                );
            }
        });
        Some(Reporter(task.abort_handle()))
    }
}

/// Stops the progress log of [`Progress::report_every`] when dropped.
#[derive(Debug)]
pub struct Reporter(tokio::task::AbortHandle);

impl Drop for Reporter {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_derives_rate_and_eta_from_the_counters() {
        let p = Progress::new(Kind::Restore, Trigger::Api, "a.zip");
        let v = p.view();
        assert_eq!(v.phase, Phase::Plan);
        assert_eq!(v.eta_seconds, None, "no total, no ETA");
        p.set_totals(1000, 4);
        p.set_phase(Phase::Extract);
        std::thread::sleep(Duration::from_millis(20));
        p.add_bytes(250);
        p.add_entry();
        let v = p.view();
        assert_eq!((v.bytes_done, v.entries_done), (250, 1));
        assert_eq!((v.bytes_total, v.entries_total), (1000, 4));
        assert_eq!(v.phase, Phase::Extract);
        assert!(v.bytes_per_second > 0.0);
        let eta = v.eta_seconds.expect("an ETA once bytes are done");
        // 750 bytes left at the mean rate: three times the elapsed time, give or take
        // the rounding and the time between the two reads.
        assert!(
            eta > 2.0 * v.elapsed_seconds && eta < 4.0 * v.elapsed_seconds + 0.01,
            "{v:?}"
        );
    }

    #[test]
    fn every_phase_reads_back_as_itself() {
        let p = Progress::new(Kind::Create, Trigger::Schedule, "k.zip");
        for phase in Phase::ALL {
            p.set_phase(phase);
            assert_eq!(p.view().phase, phase);
        }
    }
}
