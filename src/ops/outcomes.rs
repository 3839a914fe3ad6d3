//! How operations ended: one summary line in the log and the metrics for every finished
//! create, upload, restore and download ([`finished`]), and the last outcome of the API's
//! creates, of uploads and of scheduled runs ([`Runs`]), kept across restarts (the last
//! restore's is kept by [`crate::restore::Restores`]).

use crate::ops::metrics::{Metrics, Operation};
use crate::ops::progress::Trigger;
use crate::util::fsutil::Kept;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
}

/// The last create or upload, as `GET /api/gateway/progress` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub key: String,
    pub trigger: Trigger,
    pub status: Status,
    pub started_at: String,
    pub finished_at: String,
    pub duration_seconds: f64,
    /// The archive's size, when it was stored.
    pub size: Option<u64>,
    /// Entries written (creates).
    pub entries: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// The last API create and the last upload, in memory and on disk.
#[derive(Debug)]
pub struct Outcomes {
    pub create: Kept<Outcome>,
    pub upload: Kept<Outcome>,
}

impl Outcomes {
    pub fn open(data_dir: &Path) -> Self {
        Self {
            create: Kept::open(crate::util::state_dir::last_create(data_dir)),
            upload: Kept::open(crate::util::state_dir::last_upload(data_dir)),
        }
    }
}

/// One finished operation, for [`finished`].
#[derive(Debug)]
pub struct Finished<'a> {
    pub operation: Operation,
    pub trigger: Trigger,
    pub key: &'a str,
    pub started: Instant,
    /// The archive's size (bytes sent, for a download), when known.
    pub size: Option<u64>,
    pub entries: Option<u64>,
    /// `None`: success.
    pub error: Option<&'a str>,
}

impl<'a> Finished<'a> {
    /// A create (API or scheduled) that ran under `job`'s progress: the archive's `size`
    /// and `entries` when it stored one, else `error`.
    pub fn create(
        progress: &'a crate::ops::progress::Progress,
        size: Option<u64>,
        entries: Option<u64>,
        error: Option<&'a str>,
    ) -> Self {
        Self {
            operation: Operation::Create,
            trigger: progress.trigger(),
            key: progress.key(),
            started: progress.started(),
            size,
            entries,
            error,
        }
    }
}

impl Finished<'_> {
    /// The outcome to keep, started at `started_at` (PocketBase's format).
    pub fn outcome(&self, started_at: &str) -> Outcome {
        Outcome {
            key: self.key.to_string(),
            trigger: self.trigger,
            status: if self.error.is_none() {
                Status::Ok
            } else {
                Status::Failed
            },
            started_at: started_at.to_string(),
            finished_at: crate::util::time_fmt::now_pb(),
            duration_seconds: (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            size: self.size,
            entries: self.entries,
            error: self.error.map(str::to_string),
        }
    }
}

/// Logs `f`'s summary line and counts it in `metrics`.
pub fn finished(metrics: &Metrics, f: &Finished<'_>) {
    let elapsed = f.started.elapsed();
    let secs = elapsed.as_secs_f64();
    let mib_per_second = match f.size {
        Some(size) if secs > 0.0 => format!("{:.1}", size as f64 / 1048576.0 / secs),
        _ => String::new(),
    };
    let (operation, trigger) = (f.operation.as_str(), f.trigger.as_str());
    let duration_seconds = format!("{secs:.3}");
    match f.error {
        None => tracing::info!(
            operation,
            trigger,
            key = %f.key,
            size = f.size,
            entries = f.entries,
            duration_seconds,
            mib_per_second,
            outcome = "ok",
            "{operation} finished"
        ),
        Some(error) => tracing::warn!(
            operation,
            trigger,
            key = %f.key,
            size = f.size,
            entries = f.entries,
            duration_seconds,
            outcome = "failed",
            error,
            "{operation} failed"
        ),
    }
    metrics.finished(f.operation, f.trigger, f.error.is_none(), f.size, elapsed);
}

/// How a scheduled run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Ok,
    Failed,
    /// The busy lock was taken (a create or restore was running).
    Skipped,
}

/// One scheduled run, as `GET /api/gateway/schedule` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOutcome {
    pub key: String,
    pub status: RunStatus,
    pub started_at: String,
    pub finished_at: String,
    /// The archive's size, when it was created.
    pub size: Option<u64>,
    pub error: Option<String>,
    /// Scheduled backups deleted by retention after this run.
    pub pruned: Vec<String>,
}

/// The last scheduled run, in memory and on disk, and the schedule loop's last look at the
/// settings.
#[derive(Debug)]
pub struct Runs {
    last: crate::util::fsutil::Kept<RunOutcome>,
    looked: tokio::sync::watch::Sender<Option<Look>>,
}

/// One look of the schedule's loop at the settings: the time it looked at, and the runs it
/// has started so far (one started at this look included). Tests wait on it
/// ([`Runs::looks`]): it proves that the loop had its chance to start a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    pub at: time::OffsetDateTime,
    pub started: u64,
}

impl Runs {
    pub fn open(data_dir: &Path) -> Self {
        Self {
            last: Kept::open(crate::util::state_dir::last_scheduled_backup(data_dir)),
            looked: tokio::sync::watch::Sender::new(None),
        }
    }

    pub fn last(&self) -> Option<RunOutcome> {
        self.last.last()
    }

    /// The loop's latest look at the schedule (none before its first), as it changes.
    pub fn looks(&self) -> tokio::sync::watch::Receiver<Option<Look>> {
        self.looked.subscribe()
    }

    /// Publishes the loop's look at the schedule ([`crate::schedule::run`]).
    pub fn looked(&self, look: Look) {
        self.looked.send_replace(Some(look));
    }

    pub fn record(&self, outcome: RunOutcome) {
        match outcome.status {
            RunStatus::Ok => tracing::info!(
                key = %outcome.key, size = ?outcome.size, pruned = ?outcome.pruned,
                "scheduled backup created"
            ),
            RunStatus::Failed => tracing::error!(
                key = %outcome.key, error = ?outcome.error, pruned = ?outcome.pruned,
                "scheduled backup failed"
            ),
            RunStatus::Skipped => tracing::warn!(
                key = %outcome.key, reason = ?outcome.error,
                "scheduled backup skipped"
            ),
        }
        self.last.set(outcome);
    }
}
