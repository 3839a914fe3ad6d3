//! Scheduled backups (`backups.cron`) and their retention (`backups.cronMaxKeep`), as
//! PocketBase runs them (`core/base_backup.go`, `registerAutobackupHooks`).
//!
//! A loop wakes at the start of every minute (UTC) of its [`Clock`] and reads the current
//! settings, so a changed schedule takes effect at the next minute. When the minute is due
//! ([`crate::schedule::cron`]), a run is started beside the loop:
//! 1. it takes the busy lock; when a create or restore holds it, the run is skipped (and
//!    logged, and recorded): a scheduled run never waits nor interrupts;
//! 2. it creates `@auto_pb_backup_<app name>_YYYYMMDDhhmmss.zip` through the same pipeline
//!    as `POST /api/backups` ([`crate::backup::run`]);
//! 3. it verifies the new backup ([`crate::verify`]) unless `--verify-after-create` is
//!    `off`: a failed verify fails the run (and notifies, as a failed create does);
//! 4. after every run, also a failed or skipped one (a backup that failed its verify does
//!    not count as one of the kept), only the newest `cronMaxKeep` keys
//!    that start with `@auto_pb_backup_` are kept; manual and uploaded backups are never
//!    pruned.
//!
//! Every run's outcome is logged and kept in `<dir>/.backup-gateway/` (the last one
//! survives restarts): `GET /api/gateway/schedule` and, for superusers, `GET /api/health`.

pub mod clock;
pub mod cron;

pub use clock::{Clock, ClockHandle, ManualClock};

use crate::AppState;
use crate::backup::{RunError, VerifyAfterCreateError};
use crate::ops::outcomes::{RunOutcome, RunStatus};
use crate::ops::progress::Trigger;
use crate::schedule::cron::{Schedule, minute_start};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// PocketBase's prefix of scheduled backups: the only keys retention deletes.
pub const AUTO_PREFIX: &str = "@auto_pb_backup_";

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
            () = clock.sleep_until(next) => {}
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
        let look = crate::ops::outcomes::Look { at: now, started };
        state.scheduled_runs.looked(look);
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
    let started_at = crate::util::time_fmt::now_pb();
    let key = crate::keys::scheduled_name(&state.app_name().await, at);
    let (status, size, error) = match crate::backup::run(state, &key, Trigger::Schedule).await {
        Err(RunError::Busy) => (RunStatus::Skipped, None, Some(RunError::Busy.to_string())),
        Err(e) => {
            let why = crate::error::ErrorChain(&e).to_string();
            state.notifier.send(crate::ops::notify::Event::failed(
                crate::ops::notify::What::Create,
                &key,
                &why,
            ));
            (RunStatus::Failed, None, Some(why))
        }
        Ok(created) => {
            match crate::backup::verify_after_create(state, &key, Trigger::Schedule).await {
                Ok(()) => (RunStatus::Ok, Some(created.size), None),
                Err(e) => {
                    if matches!(e, VerifyAfterCreateError::NotRun(_)) {
                        // A failed verify notified already; one that could not run, here.
                        state.notifier.send(crate::ops::notify::Event::failed(
                            crate::ops::notify::What::VerifyInconclusive,
                            &key,
                            &e.to_string(),
                        ));
                    }
                    (RunStatus::Failed, Some(created.size), Some(e.to_string()))
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
        finished_at: crate::util::time_fmt::now_pb(),
        size,
        error,
        pruned,
    };
    state.scheduled_runs.record(outcome.clone());
    outcome
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
