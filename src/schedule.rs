//! Scheduled backups (`backups.cron`) and their retention (`backups.cronMaxKeep`), as
//! PocketBase runs them (`core/base_backup.go`, `registerAutobackupHooks`).
//!
//! A loop wakes at the start of every minute (UTC) of its [`Clock`] and reads the current
//! settings, so a changed schedule takes effect at the next minute. When the minute is due
//! ([`crate::cron`]), a run is started beside the loop:
//! 1. it takes the busy lock; when a create or restore holds it, the run is skipped (and
//!    logged, and recorded): a scheduled run never waits nor interrupts;
//! 2. it creates `@auto_pb_backup_<app name>_YYYYMMDDhhmmss.zip` through the same pipeline
//!    as `POST /api/backups` ([`crate::backup::create`]);
//! 3. it verifies the new backup ([`crate::verify`]) unless `--verify-after-create` is
//!    `off`: a failed verify fails the run (and notifies, as a failed create does);
//! 4. after every run, also a failed or skipped one (a backup that failed its verify does
//!    not count as one of the kept), only the newest `cronMaxKeep` keys
//!    that start with `@auto_pb_backup_` are kept; manual and uploaded backups are never
//!    pruned.
//!
//! Every run's outcome is logged and kept in `<dir>/.backup-gateway/` (the last one
//! survives restarts): `GET /api/gateway/schedule` and, for superusers, `GET /api/health`.

use crate::AppState;
use crate::cron::{Schedule, minute_start};
use crate::jobs::JobKind;
use crate::outcomes::Finished;
use crate::progress::Trigger;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// PocketBase's prefix of scheduled backups: the only keys retention deletes.
pub const AUTO_PREFIX: &str = "@auto_pb_backup_";

/// Where the schedule gets the time from: the system clock, or one a test moves.
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
    /// Resolves once [`Clock::now`] has reached `t`.
    fn sleep_until(&self, t: OffsetDateTime) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// A shared [`Clock`].
#[derive(Clone)]
pub struct ClockHandle(Arc<dyn Clock>);

impl std::fmt::Debug for ClockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClockHandle")
    }
}

impl ClockHandle {
    pub fn system() -> Self {
        Self(Arc::new(SystemClock))
    }

    /// A clock that stands at `start` until [`ManualClock::set`] moves it.
    pub fn manual(start: OffsetDateTime) -> (Self, ManualClock) {
        let clock = ManualClock(Arc::new(tokio::sync::watch::Sender::new(start)));
        (Self(Arc::new(clock.clone())), clock)
    }

    pub fn now(&self) -> OffsetDateTime {
        self.0.now()
    }
}

struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn sleep_until(&self, t: OffsetDateTime) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            // Re-check after each sleep: the wall clock may have been set back meanwhile.
            loop {
                let left = t - OffsetDateTime::now_utc();
                if left <= time::Duration::ZERO {
                    return;
                }
                let left = std::time::Duration::try_from(left).unwrap_or_default();
                tokio::time::sleep(left.min(std::time::Duration::from_secs(60))).await;
            }
        })
    }
}

/// A clock for tests: time moves only when [`ManualClock::set`] is called.
#[derive(Clone)]
pub struct ManualClock(Arc<tokio::sync::watch::Sender<OffsetDateTime>>);

impl ManualClock {
    pub fn set(&self, t: OffsetDateTime) {
        self.0.send_replace(t);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.borrow()
    }

    fn sleep_until(&self, t: OffsetDateTime) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mut rx = self.0.subscribe();
        Box::pin(async move {
            let _ = rx.wait_for(|now| *now >= t).await;
        })
    }
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

/// The last scheduled run, in memory and on disk, and the loop's last look at the schedule.
#[derive(Debug)]
pub struct Runs {
    last: crate::fsutil::Kept<RunOutcome>,
    looked: tokio::sync::watch::Sender<Option<Look>>,
}

/// One look of the schedule's loop at the settings: the time it looked at, and the runs it
/// has started so far (one started at this look included). Tests wait on it
/// ([`Runs::looks`]): it proves that the loop had its chance to start a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    pub at: OffsetDateTime,
    pub started: u64,
}

impl Runs {
    pub fn open(data_dir: &Path) -> Self {
        Self {
            last: crate::fsutil::Kept::open(crate::state_dir::last_scheduled_backup(data_dir)),
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

    fn record(&self, outcome: RunOutcome) {
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

/// The next `n` due minutes of `cron` after `now` (none for an empty or invalid one).
pub fn next_runs(cron: &str, now: OffsetDateTime, n: usize) -> Vec<OffsetDateTime> {
    let Ok(schedule) = Schedule::parse(cron) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(n);
    let mut t = now;
    while out.len() < n {
        match schedule.next_after(t) {
            Some(next) => {
                out.push(next);
                t = next;
            }
            None => break,
        }
    }
    out
}

/// The schedule's loop; returns when `shutdown` is cancelled, after letting a running
/// backup finish for up to the shutdown grace period (then it is cancelled, and its
/// multipart upload aborted).
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let clock = state.config.clock.clone();
    let mut running = tokio::task::JoinSet::new();
    let mut started = 0;
    loop {
        let next = minute_start(clock.now()) + time::Duration::MINUTE;
        tokio::select! {
            () = clock.0.sleep_until(next) => {}
            () = shutdown.cancelled() => break,
        }
        while running.try_join_next().is_some() {}
        let now = clock.now();
        let cron = state.settings.current().backups.cron.clone();
        match Schedule::parse(&cron) {
            _ if cron.is_empty() => {}
            Ok(schedule) if schedule.is_due(now) => {
                let state = state.clone();
                running.spawn(async move { run_once(&state, now).await });
                started += 1;
            }
            Ok(_) => {}
            Err(e) => tracing::error!(cron = %cron, error = %e, "invalid backups.cron"),
        }
        let look = Look { at: now, started };
        state.scheduled_runs.looked.send_replace(Some(look));
    }
    let grace = state.config.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("cancelling the scheduled backup still running");
        running.shutdown().await;
    }
}

/// One scheduled run at `at`: create, then retention; see the module docs.
pub async fn run_once(state: &AppState, at: OffsetDateTime) -> RunOutcome {
    let started_at = crate::time_fmt::now_pb();
    let key = crate::keys::scheduled_name(&state.app_name().await, at);
    let (status, size, error) = match state
        .jobs
        .try_start(JobKind::Create, Trigger::Schedule, &key)
    {
        None => (
            RunStatus::Skipped,
            None,
            Some("another backup or restore was running".to_string()),
        ),
        Some(job) => {
            let result = match state.jobs.reserve_key(&key) {
                None => Err("a backup with this name is being written".to_string()),
                Some(_reserved) => {
                    crate::backup::create(state, state.store().as_ref(), &key, job.progress())
                        .await
                        .map_err(|e| crate::error::ErrorChain(&e).to_string())
                }
            };
            let finished = Finished::create(
                job.progress(),
                result.as_ref().ok().copied(),
                result.as_ref().err().map(String::as_str),
            );
            crate::outcomes::finished(&state.metrics, &finished);
            drop(job);
            match result {
                Ok(created) => match verified(state, &key).await {
                    Ok(()) => (RunStatus::Ok, Some(created.size), None),
                    Err(e) => (RunStatus::Failed, Some(created.size), Some(e)),
                },
                Err(e) => {
                    state.notifier.send(crate::notify::Event::failed(
                        crate::notify::What::Create,
                        &key,
                        &e,
                    ));
                    (RunStatus::Failed, None, Some(e))
                }
            }
        }
    };
    let keep = state.settings.current().backups.cron_max_keep;
    let pruned = prune(state, keep).await;
    let outcome = RunOutcome {
        key,
        status,
        started_at,
        finished_at: crate::time_fmt::now_pb(),
        size,
        error,
        pruned,
    };
    state.scheduled_runs.record(outcome.clone());
    outcome
}

/// Verifies the run's new backup when `--verify-after-create` covers scheduled creates;
/// its failure (which [`crate::verify`] notifies) fails the run.
async fn verified(state: &AppState, key: &str) -> Result<(), String> {
    let wanted = state.settings.current().backups.verify_after_create();
    if !wanted.covers(Trigger::Schedule) {
        return Ok(());
    }
    match crate::verify::verify(state, key, Trigger::Schedule, true).await {
        // Inconclusive (the store or the disk failed the check, not the backup): the run
        // stands, and the notification says so.
        Ok(v) if v.ok || v.inconclusive => Ok(()),
        Ok(v) => Err(format!(
            "the backup failed its verify: {}",
            crate::verify::failure_text(&v)
        )),
        Err(e) => {
            let why = format!("the backup could not be verified: {e}");
            state.notifier.send(crate::notify::Event::failed(
                crate::notify::What::VerifyInconclusive,
                key,
                &why,
            ));
            Err(why)
        }
    }
}

/// Deletes all but the newest `keep` scheduled backups (none when `keep` is 0, as in
/// PocketBase: no limit); returns the deleted keys. Failures are logged, not returned:
/// retention never fails a run.
pub async fn prune(state: &AppState, keep: i64) -> Vec<String> {
    let Ok(keep) = usize::try_from(keep) else {
        return Vec::new();
    };
    if keep == 0 {
        return Vec::new();
    }
    let store = state.store();
    let mut auto: Vec<_> = match store.list().await {
        Ok(items) => items
            .into_iter()
            .filter(|b| b.key.starts_with(AUTO_PREFIX) && !state.jobs.in_use(&b.key))
            .collect(),
        Err(e) => {
            tracing::error!(error = %crate::error::ErrorChain(&e), "retention: cannot list the backups");
            return Vec::new();
        }
    };
    auto.sort_by(|a, b| b.modified.cmp(&a.modified).then_with(|| b.key.cmp(&a.key)));
    // A backup that failed its verify does not count as one of the `keep`: a run of
    // damaged backups must not push out the last good one. It stays until `keep` good
    // ones are newer than it.
    let mut kept = 0;
    let mut old = Vec::new();
    for b in auto {
        if kept >= keep {
            old.push(b);
        } else if !state.verifications.known_bad(&b.key) {
            kept += 1;
        }
    }
    let mut deleted = Vec::new();
    for old in old {
        match store.delete(&old.key).await {
            Ok(()) => {
                state.verifications.forget(&old.key);
                deleted.push(old.key);
            }
            Err(e) => tracing::error!(
                key = %old.key, error = %crate::error::ErrorChain(&e),
                "retention: cannot delete an old scheduled backup"
            ),
        }
    }
    deleted
}
