//! How operations ended: one summary line in the log and the metrics for every finished
//! create, upload, restore and download ([`finished`]), and the last outcome of the API's
//! creates and of uploads, kept across restarts (the last restore's and the last scheduled
//! run's are kept by [`crate::restore::Restores`] and [`crate::schedule::Runs`]).

use crate::fsutil::Kept;
use crate::metrics::{Metrics, Operation};
use crate::progress::Trigger;
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
            create: Kept::open(crate::state_dir::last_create(data_dir)),
            upload: Kept::open(crate::state_dir::last_upload(data_dir)),
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
    /// A create (API or scheduled) that ran under `job`'s progress: `created` when it
    /// stored the archive, else `error`.
    pub fn create(
        progress: &'a crate::progress::Progress,
        created: Option<crate::backup::Created>,
        error: Option<&'a str>,
    ) -> Self {
        Self {
            operation: Operation::Create,
            trigger: progress.trigger(),
            key: progress.key(),
            started: progress.started(),
            size: created.map(|c| c.size),
            entries: created.map(|c| c.entries),
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
            finished_at: crate::time_fmt::now_pb(),
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
