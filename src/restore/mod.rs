//! Restore: a backup from the store replaces the data directory's content, atomically.
//!
//! 1. Before answering ([`plan`]): the key exists, the archive's central directory parses
//!    (ranged reads), every entry passes [`crate::archive::check::check_entries`], and the
//!    disk has room for the uncompressed data. Otherwise the request fails and nothing
//!    happens.
//! 2. In the background, holding the busy lock: the archive is streamed from the store in
//!    ranged chunks (no local copy of the zip) and extracted into a staging directory under
//!    `<dir>/.backup-gateway/restore/<id>/new`, on the same filesystem, every CRC checked.
//!    Files of 1 MiB or more are written with direct I/O ([`crate::archive::outfile`]).
//! 3. The swap ([`journal`], in `<dir>/.backup-gateway/restore/journal.json`): the current
//!    content moves to `<id>/old`, the staged content moves in, and only then is the old
//!    content deleted (step 4). Excluded paths (the gateway's state, a local backups
//!    directory inside the data directory) are never moved. If the process dies at any
//!    moment, [`recover`] at the next start rolls the swap forward from the journal; a
//!    crash before the journal exists leaves the old data untouched and the staging
//!    directory is deleted. The data directory is always wholly old or wholly new.
//! 4. Once the new data is in place the restore reports `ok` and `--on-restore` runs
//!    ([`hook`]); only
//!    then is the old content deleted (journal phase `cleanup`, still under the busy lock),
//!    so the application does not wait for it. The outcome of every restore (key, times,
//!    result, hook status) is logged and kept ([`status`]), served at
//!    `GET /api/gateway/restore`.
//!
//! [`crash`] lists the points where the crash tests stop a restore.

pub mod crash;
mod hook;
mod journal;
mod plan;
mod recovery;
pub mod status;

pub use recovery::recover;
pub use status::{Outcome, RestoreStatus, Restores};

use crate::AppState;
use crate::archive::{ArchiveError, Plan, extract};
use crate::jobs::{JobGuard, JobKind};
use crate::progress::{Phase, Progress, Trigger};
use crate::state_dir;
use crate::storage::{BackupStore, StorageError, parallel_reads};
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
    if state.jobs.is_being_written(key) {
        return Err(StartError::Missing);
    }
    // One store for the whole restore, whatever the settings become meanwhile.
    let store = state.store();
    let info = store
        .stat(key)
        .await
        .map_err(StartError::Storage)?
        .ok_or(StartError::Missing)?;
    let rules = plan::Rules {
        limits: &state.config.restore_limits,
        excluded: &state.excluded_paths(),
        required: &plan::required_entries(&state.config),
        data_dir: &state.config.data_dir,
    };
    let checked = plan::prepare(store.as_ref(), key, info.size, &rules).await?;
    let status = RestoreStatus::running(key);
    state.restores.set(status.clone());
    job.progress()
        .set_totals(checked.plan.total_size, checked.plan.items.len() as u64);
    let state = state.clone();
    let size = info.size;
    tokio::spawn(async move {
        run(state, store, job, status, checked, size).await;
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
) {
    let entries = checked.plan.items.len() as u64;
    let progress = Arc::clone(job.progress());
    let result = extract_and_swap(&state, store, &status.key, checked, &progress)
        .await
        .map_err(|e| e.to_string());
    crate::outcomes::finished(
        &state.metrics,
        &crate::outcomes::Finished {
            operation: crate::metrics::Operation::Restore,
            trigger: Trigger::Api,
            key: &status.key,
            started: progress.started(),
            size: Some(size),
            entries: Some(entries),
            error: result.as_ref().err().map(String::as_str),
        },
    );
    let journal = match result {
        Ok(journal) => journal,
        Err(e) => {
            status.finish(Some(e));
            state.restores.set(status);
            return;
        }
    };
    // The new data is in place: success is reported and the application restarted before
    // the previous data is deleted. The busy lock (`job`) covers the hook and the clean-up
    // too: the application restarts before the next create can read its data.
    status.finish(None);
    state.restores.set(status.clone());
    if let Some(cmd) = &state.config.on_restore {
        progress.set_phase(Phase::Hook);
        status.hook_exit_code = hook::run_hook(cmd, &status.key, &state.config.data_dir).await;
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

/// Steps 2 and 3 of the module docs: extraction into a fresh work directory, then the swap.
/// A failure before the swap deletes the work directory and leaves the data alone.
async fn extract_and_swap(
    state: &AppState,
    store: Arc<dyn BackupStore>,
    key: &str,
    checked: plan::Checked,
    progress: &Arc<Progress>,
) -> Result<journal::Journal, RestoreError> {
    progress.set_phase(Phase::Extract);
    let progress = Arc::clone(progress);
    let data_dir = state.config.data_dir.clone();
    let id = crate::fsutil::random_string(12);
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
    let excluded = state.excluded_paths();
    let key = key.to_string();
    let result = tokio::task::spawn_blocking(move || {
        extract_plan(&plan, &mut reader, start, &staging, &data_dir, &progress)?;
        progress.set_phase(Phase::Swap);
        journal::sync_filesystem(&staging);
        journal::swap(&data_dir, &id, &excluded, &key).map_err(RestoreError::Swap)
    })
    .await
    .unwrap_or_else(|e| Err(RestoreError::Task(e)));
    if result.is_err() && !state_dir::restore_journal(&state.config.data_dir).exists() {
        // Failed before the swap: the data directory was not touched; drop the staging.
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(work)).await;
    }
    result
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
