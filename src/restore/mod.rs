//! Restore: a backup from the store replaces the data directory's content, atomically.
//!
//! 1. Before answering ([`plan`]): the key exists, the archive's central directory parses
//!    (ranged reads), every entry passes [`crate::archive::check::check_entries`], and the
//!    disk has room for the uncompressed data. When no way to stop the application is
//!    configured, no other process may have the data directory open ([`live`]; a point in
//!    time restore asks the same). Otherwise the request fails and nothing happens.
//! 2. In the background, holding the busy lock: the archive is streamed from the store in
//!    ranged chunks (no local copy of the zip) and extracted into a staging directory under
//!    `<dir>/.backup-gateway/restore/<id>/new`, on the same filesystem, every CRC checked,
//!    while the application still runs. Files of 1 MiB or more are written with direct I/O
//!    ([`crate::archive::outfile`]).
//! 3. The application stops ([`crate::lifecycle`]: `--exec` or `--app-stop`), and the
//!    restore waits until no process has the data open; if it does not stop, the restore
//!    fails, the staging is deleted and the application is started again on the old data.
//! 4. The swap ([`journal`], in `<dir>/.backup-gateway/restore/journal.json`): the current
//!    content moves to `<id>/old`, the staged content moves in, and only then is the old
//!    content deleted (step 5). Excluded paths (the gateway's state, a local backups
//!    directory inside the data directory) are never moved. If the process dies at any
//!    moment, [`recover`] at the next start rolls the swap forward from the journal; a
//!    crash before the journal exists leaves the old data untouched and the staging
//!    directory is deleted. The data directory is always wholly old or wholly new, and the
//!    application (stopped) is started by the next start of the gateway under `--exec`.
//! 5. Once the new data is in place the application starts on it; then the restore reports
//!    `ok` and `--on-restore` runs ([`hook`]); only then is the old content deleted
//!    (journal phase `cleanup`, still under the busy lock), so the application does not
//!    wait for it. The outcome of every restore (key, times, result, the application's stop
//!    and start, hook status) is logged and kept ([`status`]), served at
//!    `GET /api/gateway/restore`.
//!
//! [`crash`] lists the points where the crash tests stop a restore.

pub mod crash;
mod hook;
mod journal;
pub mod live;
pub(crate) mod plan;
mod recovery;
pub mod status;

pub use recovery::recover;
pub use status::{Outcome, PitrDatabase, PointInTime, RestoreStatus, Restores};

use crate::AppState;
use crate::archive::{ArchiveError, Plan, extract};
use crate::ops::jobs::{JobGuard, JobKind};
use crate::ops::progress::{Phase, Progress, Trigger};
use crate::storage::{BackupStore, StorageError, parallel_reads};
use crate::util::state_dir;
use crash::{CrashPoint, pause_at};
use std::io;
use std::sync::Arc;

/// Why a restore did not start (the API answers with it).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("a backup or restore is already running")]
    Busy,
    #[error("no such backup")]
    Missing,
    #[error("{0}")]
    Invalid(String),
    #[error("reading the backup failed")]
    Storage(#[source] StorageError),
    /// Another process has the data directory's files open and nothing is configured to
    /// stop and start it: the reason names the processes.
    #[error("the application is running: {0}")]
    AppRunning(String),
}

/// Why a started restore failed (its status says it).
#[derive(Debug, thiserror::Error)]
enum RestoreError {
    #[error("cannot create the staging directory: {0}")]
    Staging(io::Error),
    #[error("reading or writing the archive failed: {0}")]
    Io(io::Error),
    /// The archive's data contradicts its checked directory (a CRC, a size, a header).
    #[error("{0}")]
    Archive(ArchiveError),
    #[error("swap failed, to be finished at the next start of the gateway: {0}")]
    Swap(io::Error),
    /// The application could not be stopped, or still had the data open; it was started
    /// again on the old data.
    #[error("{0}; the data directory was not changed")]
    AppStop(String),
    #[error("restore task failed: {0}")]
    Task(tokio::task::JoinError),
}

impl From<ArchiveError> for RestoreError {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::Io(io) => Self::Io(io),
            other => Self::Archive(other),
        }
    }
}

/// Checks `key` and starts its restore in the background.
///
/// # Errors
/// [`StartError`]: busy, missing, an archive that fails a check (with the reason), or a
/// store failure.
#[tracing::instrument(skip(state), fields(key = %key))]
pub async fn start(state: &AppState, key: &crate::keys::BackupKey) -> Result<(), StartError> {
    let job = state
        .jobs
        .try_start(JobKind::Restore, Trigger::Api, key)
        .ok_or(StartError::Busy)?;
    // One store for the whole restore, whatever the settings become meanwhile.
    let (store, info) = state
        .stored_backup(key)
        .await
        .map_err(StartError::Storage)?
        .ok_or(StartError::Missing)?;
    refuse_under_live_app(state).await?;
    let checked = check_archive(state, store.as_ref(), key, info.size).await?;
    let status = RestoreStatus::running(key);
    state.restores.set(status.clone());
    job.progress()
        .set_totals(checked.plan.total_size, checked.plan.items.len() as u64);
    let state = state.clone();
    let size = info.size;
    tokio::spawn(async move {
        run(state, store, job, status, checked, size, None).await;
    });
    Ok(())
}

/// The archive `key` checked against the restore's rules (step 1 of the module docs).
async fn check_archive(
    state: &AppState,
    store: &dyn BackupStore,
    key: &str,
    size: u64,
) -> Result<plan::Checked, StartError> {
    let rules = plan::Rules {
        limits: &state.config.restore_limits,
        excluded: &state.excluded_paths(),
        required: &plan::required_entries(&state.config.restore_require, &state.config.data_dir),
        data_dir: &state.config.data_dir,
    };
    plan::prepare(store, key, size, &rules).await
}

/// Starts a point-in-time restore (`POST /api/gateway/restore`): every streamed database
/// rebuilt to `until` (`None`: the latest moment stored), the other files from the newest
/// backup at or before it; then the same stop, swap, start and outcome as a key's restore.
///
/// # Errors
/// [`StartError`]: busy, a moment outside the history or with no backup for the files, a
/// store failure.
#[tracing::instrument(skip(state))]
pub async fn start_pitr(
    state: &AppState,
    until: Option<time::OffsetDateTime>,
) -> Result<(), StartError> {
    use crate::util::time_fmt;
    let label = until.map_or_else(|| "latest".to_string(), time_fmt::pb);
    let job = state
        .jobs
        .try_start(
            JobKind::Restore,
            Trigger::Api,
            &format!("point in time {label}"),
        )
        .ok_or(StartError::Busy)?;
    let store = state.store();
    let histories = state
        .pitr
        .histories(store.as_ref())
        .await
        .map_err(StartError::Storage)?;
    // Checked now, for the answer; planned again once the application is stopped and the
    // streams have shipped its last commits (the plan is made from what is stored then).
    let until_ms = until.map(time_fmt::unix_ms);
    crate::pitr::rebuild::plan(&histories, until_ms, crate::pitr::stream::now_ms())
        .map_err(StartError::Invalid)?;
    let info = store
        .list()
        .await
        .map_err(StartError::Storage)?
        .into_iter()
        .filter(|b| !state.jobs.is_being_written(&b.key))
        .filter(|b| until.is_none_or(|t| b.modified <= t))
        .max_by_key(|b| b.modified)
        .ok_or_else(|| {
            StartError::Invalid(format!(
                "no backup at or before {label} holds the data directory's other files: \
                 create one first"
            ))
        })?;
    refuse_under_live_app(state).await?;
    let checked = check_archive(state, store.as_ref(), &info.key, info.size).await?;
    let mut status = RestoreStatus::running(&info.key);
    status.point_in_time = Some(PointInTime {
        time: label,
        files_from: info.key.clone(),
        files_time: time_fmt::pb(info.modified),
        databases: Vec::new(),
    });
    state.restores.set(status.clone());
    job.progress()
        .set_totals(checked.plan.total_size, checked.plan.items.len() as u64);
    let state = state.clone();
    tokio::spawn(async move {
        run(
            state,
            store,
            job,
            status,
            checked,
            info.size,
            Some(until_ms),
        )
        .await;
    });
    Ok(())
}

async fn run(
    state: AppState,
    store: Arc<dyn BackupStore>,
    job: JobGuard,
    mut status: RestoreStatus,
    checked: plan::Checked,
    size: u64,
    pitr_until: Option<Option<i64>>,
) {
    let entries = checked.plan.items.len() as u64;
    let progress = Arc::clone(job.progress());
    let result = restore_data(&state, store, &mut status, checked, &progress, pitr_until).await;
    let error = match &result {
        Ok((_, started)) => started.clone(),
        Err(e) => Some(e.clone()),
    };
    crate::ops::outcomes::finished(
        &state.metrics,
        &crate::ops::outcomes::Finished {
            operation: crate::ops::metrics::Operation::Restore,
            trigger: Trigger::Api,
            key: &status.key,
            started: progress.started(),
            size: Some(size),
            entries: Some(entries),
            error: error.as_deref(),
        },
    );
    if let Some(e) = &error {
        // Failed, or restored with an application that did not start again.
        state.notifier.send(crate::ops::notify::Event::failed(
            crate::ops::notify::What::Restore,
            &status.key,
            e,
        ));
    }
    let journal = match result {
        Ok((journal, _)) => journal,
        Err(e) => {
            status.finish(Some(e));
            state.restores.set(status);
            return;
        }
    };
    // The new data is in place (and the application started on it): success is reported
    // and `--on-restore` run before the previous data is deleted. The busy lock (`job`)
    // covers the hook and the clean-up too.
    status.finish(error);
    state.restores.set(status.clone());
    if let Some(cmd) = state.config.on_restore.as_deref()
        && status.status == Outcome::Ok
    {
        progress.set_phase(Phase::Hook);
        let ran = hook::run_hook(&state, cmd, &status.key).await;
        status.hook_exit_code = ran.exit_code;
        status.hook_error = ran.error;
        state.restores.set(status);
    }
    progress.set_phase(Phase::Cleanup);
    let data_dir = state.config.data_dir.clone();
    let cleaned = tokio::task::spawn_blocking(move || journal::clean_up(&data_dir, &journal)).await;
    if let Ok(Err(e)) = cleaned {
        // The journal stays at `cleanup`: the next restore, or the next start, finishes it.
        tracing::warn!(error = %e, "deleting the data from before the restore failed");
    }
    drop(job);
}

/// Refuses a restore when another process has the data directory's files open and
/// nothing is configured to stop it ([`live`]), unless `--restore-while-running`.
async fn refuse_under_live_app(state: &AppState) -> Result<(), StartError> {
    if state.app.is_configured() || state.config.restore_while_running {
        return Ok(());
    }
    let (dir, excluded) = (state.config.data_dir.clone(), state.excluded_paths());
    let found = tokio::task::spawn_blocking(move || live::holders(&dir, &excluded))
        .await
        .map_err(|e| StartError::Invalid(format!("cannot look for the application: {e}")))?
        .map_err(|e| StartError::Invalid(format!("cannot look for the application: {e}")))?;
    if found.is_empty() {
        return Ok(());
    }
    Err(StartError::AppRunning(live::describe(&found)))
}

/// The restore after its answer: extraction into staging, the application's stop, the
/// swap, its start. Returns the journal (for the clean-up) and, when the data was restored
/// but the application did not start again, why.
async fn restore_data(
    state: &AppState,
    store: Arc<dyn BackupStore>,
    status: &mut RestoreStatus,
    checked: plan::Checked,
    progress: &Arc<Progress>,
    pitr_until: Option<Option<i64>>,
) -> Result<(journal::Journal, Option<String>), String> {
    let staged = stage(state, store.clone(), &status.key, checked, progress)
        .await
        .map_err(|e| e.to_string())?;
    let env = state.command_env();
    if let Err(why) = stop_app(state, status, progress, &env).await {
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(staged.work)).await;
        start_app(state, status, progress, &env).await;
        return Err(RestoreError::AppStop(why).to_string());
    }
    // The point-in-time streams ship what they captured (the application's last commits
    // included) and let go of the databases; they begin new histories on the swapped-in
    // ones.
    let pitr = state.pitr.clone();
    let _ = tokio::task::spawn_blocking(move || pitr.suspend()).await;
    if let Some(until) = pitr_until {
        let work = staged.work.clone();
        let rebuilt = rebuild_staged(
            &state.pitr,
            store,
            state.budget.clone(),
            &work.join("new"),
            until,
        )
        .await;
        match rebuilt {
            Ok(databases) => {
                if let Some(p) = &mut status.point_in_time {
                    p.databases = databases;
                }
                state.restores.set(status.clone());
            }
            Err(e) => {
                let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(work)).await;
                let pitr = state.pitr.clone();
                let _ = tokio::task::spawn_blocking(move || pitr.resume()).await;
                start_app(state, status, progress, &env).await;
                return Err(format!("rebuilding the databases failed: {e}"));
            }
        }
    }
    progress.set_phase(Phase::Swap);
    let data_dir = state.config.data_dir.clone();
    let excluded = state.excluded_paths();
    let key = status.key.clone();
    let id = staged.id.clone();
    let pitr = state.pitr.clone();
    let swapped = tokio::task::spawn_blocking(move || {
        pause_at(&data_dir, CrashPoint::AppStopped);
        journal::sync_filesystem(&data_dir);
        let journal = journal::swap(&data_dir, &id, &excluded, &key);
        pitr.resume();
        let journal = journal?;
        pause_at(&data_dir, CrashPoint::BeforeAppStart);
        Ok(journal)
    })
    .await
    .unwrap_or_else(|e| Err(io::Error::other(e)));
    match swapped {
        Ok(journal) => {
            let started = start_app(state, status, progress, &env).await;
            let failed = started.filter(|s| !s.ok).map(|s| {
                format!(
                    "the backup was restored, but the application did not start: {}",
                    s.error.unwrap_or_default()
                )
            });
            Ok((journal, failed))
        }
        Err(e) if !state_dir::restore_journal(&state.config.data_dir).exists() => {
            // Failed before the swap began: the data is the old one, the application
            // comes back on it.
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(staged.work)).await;
            start_app(state, status, progress, &env).await;
            Err(RestoreError::Swap(e).to_string())
        }
        Err(e) => Err(format!(
            "{}; the application was not started again on a half-swapped data directory: \
             restart the gateway, which finishes the swap and then starts it",
            RestoreError::Swap(e)
        )),
    }
}

/// Replaces the streamed databases in `staging` by their rebuilds to `until` (`None`: the
/// latest), planned from what the store holds now (of the databases `pitr` streams).
async fn rebuild_staged(
    pitr: &crate::pitr::Pitr,
    store: Arc<dyn BackupStore>,
    budget: Arc<crate::util::bufpool::Budget>,
    staging: &std::path::Path,
    until: Option<i64>,
) -> io::Result<Vec<PitrDatabase>> {
    let histories = pitr
        .histories(store.as_ref())
        .await
        .map_err(io::Error::other)?;
    let plans = crate::pitr::rebuild::plan(&histories, until, crate::pitr::stream::now_ms())
        .map_err(io::Error::other)?;
    let staging = staging.to_path_buf();
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for plan in &plans {
            let path = staging.join(&plan.rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            crate::archive::sqlite::remove_with_sidecars(&path)?;
            let rebuilt = crate::pitr::rebuild::rebuild(&rt, &store, &budget, plan, &path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", plan.rel)))?;
            out.push(PitrDatabase {
                name: plan.rel.clone(),
                history: plan.history.clone(),
                last_commit: rebuilt.last_commit_ms.map(crate::util::time_fmt::format_ms),
                segments_read: rebuilt.segments_read,
            });
        }
        Ok(out)
    })
    .await
    .map_err(io::Error::other)?
}

/// Stops the application when a way is configured, then waits until no process has the
/// data directory's files open (for `--app-timeout-secs`; at once when nothing is
/// configured: an application started during the extraction is not swapped under).
///
/// # Errors
/// Why the swap must not happen.
async fn stop_app(
    state: &AppState,
    status: &mut RestoreStatus,
    progress: &Progress,
    env: &[(std::ffi::OsString, std::ffi::OsString)],
) -> Result<(), String> {
    if state.app.is_configured() {
        progress.set_phase(Phase::AppStop);
    }
    let stopped = state.app.stop(env, &state.config.data_dir).await;
    status.app_stop.clone_from(&stopped);
    state.restores.set(status.clone());
    if let Some(step) = stopped.filter(|s| !s.ok) {
        return Err(format!(
            "stopping the application failed: {}",
            step.error.unwrap_or_default()
        ));
    }
    if state.config.restore_while_running {
        return Ok(());
    }
    let wait = if state.app.is_configured() {
        state.config.app_timeout
    } else {
        std::time::Duration::ZERO
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (dir, excluded) = (state.config.data_dir.clone(), state.excluded_paths());
        let found = tokio::task::spawn_blocking(move || live::holders(&dir, &excluded))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot look for the application: {e}"))?;
        if found.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the application still has the data open: {}",
                live::describe(&found)
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Starts the application when a way is configured; records how.
async fn start_app(
    state: &AppState,
    status: &mut RestoreStatus,
    progress: &Progress,
    env: &[(std::ffi::OsString, std::ffi::OsString)],
) -> Option<crate::lifecycle::Step> {
    if !state.app.is_configured() {
        return None;
    }
    progress.set_phase(Phase::AppStart);
    let started = state.app.start(env, &state.config.data_dir).await;
    status.app_start.clone_from(&started);
    state.restores.set(status.clone());
    started
}

/// Extracted data waiting in `<work>/new` for the swap.
struct Staged {
    id: String,
    work: std::path::PathBuf,
}

/// Step 2 of the module docs: extraction into a fresh work directory. A failure deletes
/// the work directory and leaves the data alone.
async fn stage(
    state: &AppState,
    store: Arc<dyn BackupStore>,
    key: &str,
    checked: plan::Checked,
    progress: &Arc<Progress>,
) -> Result<Staged, RestoreError> {
    progress.set_phase(Phase::Extract);
    let progress = Arc::clone(progress);
    let data_dir = state.config.data_dir.clone();
    let id = crate::util::fsutil::random_string(12);
    let work = state_dir::restore_work(&data_dir, &id);
    let staging = work.join("new");
    let dir = data_dir.clone();
    // Free the space of the data a previous restore replaced, before writing new data.
    let _ = tokio::task::spawn_blocking(move || journal::finish_pending_cleanup(&dir)).await;
    std::fs::create_dir_all(&staging).map_err(RestoreError::Staging)?;
    let plan::Checked { plan, cd_offset } = checked;
    let start = plan.items.first().map_or(cd_offset, |p| p.entry.offset);
    let body = parallel_reads(
        store,
        key.to_string(),
        start..cd_offset,
        state.budget.clone(),
    );
    let mut reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body));
    let result = tokio::task::spawn_blocking(move || {
        extract_plan(&plan, &mut reader, start, &staging, &data_dir, &progress)
    })
    .await
    .unwrap_or_else(|e| Err(RestoreError::Task(e)));
    match result {
        Ok(()) => Ok(Staged { id, work }),
        Err(e) => {
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(work)).await;
            Err(e)
        }
    }
}

/// The plan's entries out of `archive` into `staging`, counted in `progress`.
fn extract_plan(
    plan: &Plan,
    archive: &mut impl io::Read,
    start: u64,
    staging: &std::path::Path,
    data_dir: &std::path::Path,
    progress: &Progress,
) -> Result<(), RestoreError> {
    let half = (plan.items.len() as u64 / 2).max(1);
    let mut on_entry = |done: u64| {
        if done == half {
            pause_at(data_dir, CrashPoint::Extract);
        }
        Ok(())
    };
    // Modes never more open than the umask and the replaced data allow.
    extract::extract_over(
        plan,
        archive,
        start,
        staging,
        Some(data_dir),
        Some(progress),
        &mut on_entry,
    )?;
    Ok(())
}
