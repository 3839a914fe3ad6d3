//! Restore: a backup from the store replaces the data directory's content, atomically.
//!
//! 1. Before answering: the key exists, the archive's central directory parses (ranged
//!    reads), every entry passes [`archive::check::check_entries`], and the disk has room for
//!    the uncompressed data. Otherwise the request fails and nothing happens.
//! 2. In the background, holding the busy lock: the archive is streamed from the store in
//!    ranged chunks (no local copy of the zip) and extracted into a staging directory under
//!    `<dir>/.backup-gateway/restore/<id>/new`, on the same filesystem, every CRC checked.
//!    Files of 1 MiB or more are written with direct I/O ([`crate::archive::outfile`]).
//! 3. The swap, driven by a journal (`<dir>/.backup-gateway/restore/journal.json`): the
//!    current content moves to `<id>/old`, the staged content moves in, and only then is
//!    the old content deleted (step 4). Excluded paths (the gateway's state, a local backups
//!    directory inside the data directory) are never moved. If the process dies at any
//!    moment, [`recover`] at the next start rolls the swap forward from the journal; a
//!    crash before the journal exists leaves the old data untouched and the staging
//!    directory is deleted. The data directory is always wholly old or wholly new.
//! 4. Once the new data is in place the restore reports `ok` and `--on-restore` runs; only
//!    then is the old content deleted (journal phase `cleanup`, still under the busy lock),
//!    so the application does not wait for it. The outcome of every restore (key, times,
//!    result, hook status) is logged and kept in `<dir>/.backup-gateway/last-restore.json`,
//!    served at `GET /api/gateway/restore`.

use crate::AppState;
use crate::archive::zip::{DirLookup, reader};
use crate::archive::{ArchiveError, Limits, Plan, check, extract};
use crate::jobs::{JobGuard, JobKind};
use crate::progress::{Phase, Progress, Trigger};
use crate::storage::{BackupStore, ByteRange, StorageError, parallel_reads, read_range};
use crate::users::STATE_DIR;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const RESTORE_DIR: &str = "restore";
const JOURNAL: &str = "journal.json";
const STATUS_FILE: &str = "last-restore.json";
/// How much of the archive's end is read first (end records and, usually, the directory).
const TAIL_LEN: u64 = 256 * 1024;
/// Free space kept on top of the uncompressed size.
const DISK_MARGIN: u64 = 64 << 20;

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

/// What the last restore did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    pub key: String,
    /// `running`, `ok` or `failed`.
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// The `--on-restore` command's exit code (`null`: not configured or killed).
    pub hook_exit_code: Option<i32>,
}

/// The last restore's status, in memory and on disk.
#[derive(Debug)]
pub struct Restores(crate::fsutil::Kept<RestoreStatus>);

impl Restores {
    pub fn open(data_dir: &Path) -> Self {
        Self(crate::fsutil::Kept::open(
            data_dir.join(STATE_DIR).join(STATUS_FILE),
        ))
    }

    pub fn last(&self) -> Option<RestoreStatus> {
        self.0.last()
    }

    fn set(&self, status: RestoreStatus) {
        match status.status.as_str() {
            "failed" => tracing::error!(key = %status.key, error = ?status.error, "restore failed"),
            "ok" => {
                tracing::info!(key = %status.key, hook_exit_code = ?status.hook_exit_code, "restore finished")
            }
            _ => tracing::info!(key = %status.key, "restore started"),
        }
        self.0.set(status);
    }
}

/// Checks `key` and starts its restore in the background.
///
/// # Errors
/// [`StartError`]: busy, missing, an archive that fails a check (with the reason), or a
/// store failure.
#[tracing::instrument(skip(state), fields(key = %key))]
pub async fn start(state: &AppState, key: &str) -> Result<(), StartError> {
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
    let (plan, cd_offset) = read_plan(
        store.as_ref(),
        key,
        info.size,
        &state.config.restore_limits,
        &state.excluded_paths(),
    )
    .await
    .map_err(|e| match e {
        PlanError::Archive(a) => StartError::Invalid(a.to_string()),
        PlanError::Storage(StorageError::NotFound) => StartError::Missing,
        PlanError::Storage(s) => StartError::Storage(s),
    })?;
    if let Some(missing) = required_entries(&state.config)
        .into_iter()
        .find(|req| !plan.items.iter().any(|i| !i.is_dir && &i.path == req))
    {
        return Err(StartError::Invalid(format!(
            "the archive has no {}, which a restore of this data directory requires \
             (--restore-require)",
            missing.display()
        )));
    }
    let available = free_space(&state.config.data_dir).unwrap_or(u64::MAX);
    if plan.total_size.saturating_add(DISK_MARGIN) > available {
        return Err(StartError::Invalid(format!(
            "not enough free disk space: the backup needs {} bytes, {} are available",
            plan.total_size, available
        )));
    }
    let status = RestoreStatus {
        key: key.to_string(),
        status: "running".into(),
        started_at: crate::time_fmt::now_pb(),
        finished_at: None,
        error: None,
        hook_exit_code: None,
    };
    state.restores.set(status.clone());
    job.progress()
        .set_totals(plan.total_size, plan.items.len() as u64);
    let state = state.clone();
    let size = info.size;
    tokio::spawn(async move {
        run(state, store, job, status, plan, cd_offset, size).await;
    });
    Ok(())
}

/// The files a restore's archive must hold: `--restore-require`, or PocketBase's `data.db`
/// when the data directory holds one (PocketBase refuses such archives too, but only after
/// answering `204`).
fn required_entries(config: &crate::Config) -> Vec<PathBuf> {
    if !config.restore_require.is_empty() {
        return config.restore_require.clone();
    }
    if config.data_dir.join("data.db").is_file() {
        return vec![PathBuf::from("data.db")];
    }
    Vec::new()
}

async fn run(
    state: AppState,
    store: Arc<dyn BackupStore>,
    job: JobGuard,
    mut status: RestoreStatus,
    plan: Plan,
    cd_offset: u64,
    size: u64,
) {
    let entries = plan.items.len() as u64;
    let progress = Arc::clone(job.progress());
    let result = extract_and_swap(&state, store, &status.key, plan, cd_offset, &progress).await;
    status.finished_at = Some(crate::time_fmt::now_pb());
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
    match result {
        Ok(journal) => {
            // The new data is in place: success is reported and the application restarted
            // before the previous data is deleted.
            status.status = "ok".into();
            state.restores.set(status.clone());
            // The busy lock covers the hook and the clean-up too: the application restarts
            // before the next create can read its data.
            if let Some(cmd) = &state.config.on_restore {
                progress.set_phase(Phase::Hook);
                status.hook_exit_code = run_hook(cmd, &status.key, &state.config.data_dir).await;
                state.restores.set(status);
            }
            progress.set_phase(Phase::Cleanup);
            let data_dir = state.config.data_dir.clone();
            let cleaned = tokio::task::spawn_blocking(move || clean_up(&data_dir, &journal)).await;
            if let Ok(Err(e)) = cleaned {
                // The journal stays at `cleanup`: the next restore, or the next start,
                // finishes it.
                tracing::warn!(error = %e, "deleting the data from before the restore failed");
            }
        }
        Err(e) => {
            status.status = "failed".into();
            status.error = Some(e);
            state.restores.set(status);
        }
    }
    drop(job);
}

async fn extract_and_swap(
    state: &AppState,
    store: Arc<dyn BackupStore>,
    key: &str,
    plan: Plan,
    cd_offset: u64,
    progress: &Arc<Progress>,
) -> Result<Journal, String> {
    progress.set_phase(Phase::Extract);
    let progress = Arc::clone(progress);
    let data_dir = state.config.data_dir.clone();
    let work = data_dir
        .join(STATE_DIR)
        .join(RESTORE_DIR)
        .join(crate::users::random_string(12));
    let staging = work.join("new");
    let dir = data_dir.clone();
    // Free the space of the data a previous restore replaced, before writing new data.
    let _ = tokio::task::spawn_blocking(move || finish_pending_cleanup(&dir)).await;
    std::fs::create_dir_all(&staging)
        .map_err(|e| format!("cannot create the staging directory: {e}"))?;
    let start = plan.items.first().map_or(cd_offset, |p| p.entry.offset);
    let body = parallel_reads(
        store,
        key.to_string(),
        start..cd_offset,
        state.budget.clone(),
    );
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body));
    let excluded = state.excluded_paths();
    let key_owned = key.to_string();
    let data_dir_hook = data_dir.clone();
    let work_task = work.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        let half = (plan.items.len() as u64 / 2).max(1);
        let mut on_entry = |done: u64| {
            if done == half {
                crash_point(&data_dir_hook, "extract");
            }
            Ok(())
        };
        let started = std::time::Instant::now();
        extract::extract(
            &plan,
            &mut reader,
            start,
            &staging,
            Some(&progress),
            &mut on_entry,
        )
        .map_err(|e| describe_extract_error(&e))?;
        progress.set_phase(Phase::Swap);
        let extracted = started.elapsed();
        sync_filesystem(&staging);
        let synced = started.elapsed();
        let journal = swap(&data_dir, &work_task, &excluded, &key_owned).map_err(|e| {
            format!("swap failed, to be finished at the next start of the gateway: {e}")
        })?;
        tracing::info!(
            extract_ms = extracted.as_millis(),
            sync_ms = (synced - extracted).as_millis(),
            swap_ms = (started.elapsed() - synced).as_millis(),
            "restore phases"
        );
        Ok(journal)
    })
    .await
    .unwrap_or_else(|e| Err(format!("restore task failed: {e}")));
    let journal = restore_root(&state.config.data_dir).join(JOURNAL);
    if result.is_err() && !journal.exists() {
        // Failed before the swap: the data directory was not touched; drop the staging.
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(work)).await;
    }
    result
}

fn describe_extract_error(e: &ArchiveError) -> String {
    match e {
        ArchiveError::Io(io) => format!("reading or writing the archive failed: {io}"),
        other => other.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
enum PlanError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Storage(StorageError),
}

/// Reads the end records and the central directory with ranged reads and checks every
/// entry. Returns the plan and the central directory's offset.
async fn read_plan(
    store: &dyn BackupStore,
    key: &str,
    size: u64,
    limits: &Limits,
    exclude: &[PathBuf],
) -> Result<(Plan, u64), PlanError> {
    if size < 22 {
        return Err(ArchiveError::NotZip("too short".into()).into());
    }
    let tail_len = size.min(TAIL_LEN);
    let tail_start = size - tail_len;
    let tail = get(store, key, tail_start, size).await?;
    let dir = match reader::find_directory(&tail, size)? {
        DirLookup::Found(d) => d,
        DirLookup::Zip64At(off, end) => {
            let rec = if off >= tail_start {
                tail[(off - tail_start) as usize..].to_vec()
            } else {
                get(store, key, off, (off + 56).min(size)).await?
            };
            reader::parse_zip64_end(&rec, end)?
        }
    };
    if dir.size > limits.max_index_bytes {
        return Err(ArchiveError::Limit(format!(
            "central directory of {} bytes, at most {} allowed",
            dir.size, limits.max_index_bytes
        ))
        .into());
    }
    let cd = if dir.offset >= tail_start {
        let from = (dir.offset - tail_start) as usize;
        tail[from..from + dir.size as usize].to_vec()
    } else {
        get(store, key, dir.offset, dir.offset + dir.size).await?
    };
    drop(tail);
    let entries = reader::parse_directory(&cd, dir.entries)?;
    // The raw directory is not needed past parsing; freeing it before the checks lets
    // them reuse the memory (10 MB for 100,000 entries).
    drop(cd);
    let plan = check::check_entries(entries, dir.offset, limits, exclude)?;
    Ok((plan, dir.offset))
}

/// Bytes `from..to` of `key` (empty when `from == to`).
async fn get(store: &dyn BackupStore, key: &str, from: u64, to: u64) -> Result<Vec<u8>, PlanError> {
    if from >= to {
        return Ok(Vec::new());
    }
    read_range(
        store,
        key,
        ByteRange {
            start: from,
            end: to - 1,
        },
    )
    .await
    .map_err(PlanError::Storage)
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    /// The work directory's name under `restore/`.
    id: String,
    key: String,
    /// `moving-out`, `moving-in`, `cleanup`.
    phase: String,
}

fn restore_root(data_dir: &Path) -> PathBuf {
    data_dir.join(STATE_DIR).join(RESTORE_DIR)
}

/// The swap (see the module docs) up to the new data being in place. Runs on a blocking
/// thread. Returns the journal, for [`clean_up`].
fn swap(data_dir: &Path, work: &Path, excluded: &[PathBuf], key: &str) -> io::Result<Journal> {
    let id = work
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut journal = Journal {
        id,
        key: key.to_string(),
        phase: "moving-out".into(),
    };
    write_journal(data_dir, &journal)?;
    move_data(data_dir, &mut journal, excluded)?;
    Ok(journal)
}

/// Carries a journal through its remaining phases. Every phase is idempotent, so a crash
/// inside one is mended by running it again.
fn run_journal(data_dir: &Path, journal: &mut Journal, excluded: &[PathBuf]) -> io::Result<()> {
    move_data(data_dir, journal, excluded)?;
    clean_up(data_dir, journal)
}

/// The phases that put the new data in place; the journal is left at `cleanup`.
fn move_data(data_dir: &Path, journal: &mut Journal, excluded: &[PathBuf]) -> io::Result<()> {
    let work = restore_root(data_dir).join(&journal.id);
    let (new, old) = (work.join("new"), work.join("old"));
    if journal.phase == "moving-out" {
        std::fs::create_dir_all(&old)?;
        move_out(data_dir, &old, Path::new(""), excluded)?;
        crate::fsutil::sync_dir(data_dir)?;
        crate::fsutil::sync_dir(&old)?;
        crash_point(data_dir, "swap-moved-out");
        journal.phase = "moving-in".into();
        write_journal(data_dir, journal)?;
    }
    if journal.phase == "moving-in" {
        if new.exists() {
            move_in(&new, data_dir, &old, Path::new(""))?;
        }
        crate::fsutil::sync_dir(data_dir)?;
        crash_point(data_dir, "after-swap");
        journal.phase = "cleanup".into();
        write_journal(data_dir, journal)?;
    }
    Ok(())
}

/// The last phase: the old data is deleted, only now that the new data is in place, then
/// the journal. A live restore runs it after reporting success and running the hook (the
/// application need not wait for the deletion of its previous data).
fn clean_up(data_dir: &Path, journal: &Journal) -> io::Result<()> {
    crash_point(data_dir, "cleanup");
    let work = restore_root(data_dir).join(&journal.id);
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::remove_file(restore_root(data_dir).join(JOURNAL))?;
    crate::fsutil::sync_dir(&restore_root(data_dir))?;
    Ok(())
}

/// Deletes the replaced data of an earlier restore whose clean-up failed (its journal is
/// still at `cleanup`), so that a new restore does not overwrite that journal and leave the
/// old data on disk until the next start. A failure is only logged: the next start's sweep
/// deletes what no journal refers to.
fn finish_pending_cleanup(data_dir: &Path) {
    // Other phases only exist after a crash, and `recover` finishes them at startup.
    if let Ok(Some(journal)) = read_journal(data_dir)
        && journal.phase == "cleanup"
        && let Err(e) = clean_up(data_dir, &journal)
    {
        tracing::warn!(error = %e, "deleting the data from before an earlier restore failed again");
    }
}

/// The journal, if there is one.
fn read_journal(data_dir: &Path) -> io::Result<Option<Journal>> {
    match std::fs::read(restore_root(data_dir).join(JOURNAL)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Moves everything under `data/rel` to `old/rel`, except excluded paths: a directory that
/// contains an excluded path is recreated in `old` and descended into instead.
fn move_out(data: &Path, old: &Path, rel: &Path, excluded: &[PathBuf]) -> io::Result<()> {
    for entry in std::fs::read_dir(data.join(rel))? {
        let entry = entry?;
        let child = rel.join(entry.file_name());
        if excluded.contains(&child) {
            continue;
        }
        if excluded.iter().any(|x| x.starts_with(&child)) {
            std::fs::create_dir_all(old.join(&child))?;
            move_out(data, old, &child, excluded)?;
            continue;
        }
        std::fs::rename(data.join(&child), old.join(&child))?;
        if rel.as_os_str().is_empty() {
            crash_point(data, "swap-first-moved-out");
        }
    }
    Ok(())
}

/// Moves everything under `new/rel` to `data/rel`. Where the destination exists (a
/// directory kept for an excluded path, or something created meanwhile), directories are
/// merged and anything else is moved aside to `old` first.
fn move_in(new: &Path, data: &Path, old: &Path, rel: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(new.join(rel))? {
        let entry = entry?;
        let child = rel.join(entry.file_name());
        let (src, dst) = (new.join(&child), data.join(&child));
        match std::fs::symlink_metadata(&dst) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::rename(&src, &dst)?,
            Err(e) => return Err(e),
            Ok(meta) if meta.is_dir() && entry.file_type()?.is_dir() => {
                move_in(new, data, old, &child)?;
            }
            Ok(_) => {
                let aside = old.join(format!(
                    "{}.conflict-{}",
                    child.display().to_string().replace('/', "_"),
                    crate::users::random_string(6)
                ));
                std::fs::create_dir_all(old)?;
                std::fs::rename(&dst, aside)?;
                std::fs::rename(&src, &dst)?;
            }
        }
    }
    Ok(())
}

fn write_journal(data_dir: &Path, journal: &Journal) -> io::Result<()> {
    let bytes = serde_json::to_vec(journal).map_err(io::Error::other)?;
    crate::fsutil::write_atomic(&restore_root(data_dir).join(JOURNAL), &bytes, 0o644)
}

/// Finishes or cleans up a restore that a crash interrupted. Called once at startup,
/// before the server accepts requests.
///
/// # Errors
/// When the journal cannot be carried out (the data directory is then left for the
/// operator, and the gateway refuses to start rather than serve a half-swapped state).
pub fn recover(data_dir: &Path, excluded: &[PathBuf], restores: &Restores) -> io::Result<()> {
    let root = restore_root(data_dir);
    match read_journal(data_dir)? {
        Some(mut journal) => {
            tracing::warn!(key = %journal.key, phase = %journal.phase, "finishing a restore interrupted by a crash");
            run_journal(data_dir, &mut journal, excluded)?;
            let mut status = restores.last().unwrap_or(RestoreStatus {
                key: journal.key.clone(),
                status: String::new(),
                started_at: String::new(),
                finished_at: None,
                error: None,
                hook_exit_code: None,
            });
            if status.status != "ok" {
                status.status = "ok".into();
                status.finished_at = Some(crate::time_fmt::now_pb());
                status.error = None;
                restores.set(status);
            }
        }
        None => {
            if let Some(mut status) = restores.last().filter(|s| s.status == "running") {
                status.status = "failed".into();
                status.finished_at = Some(crate::time_fmt::now_pb());
                status.error = Some(
                    "interrupted before the swap (the gateway stopped); the data directory was not changed"
                        .into(),
                );
                restores.set(status);
            }
        }
    }
    // Staging directories of restores that never reached the swap, and temporary files of
    // interrupted journal writes.
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(e.path())?;
            } else {
                std::fs::remove_file(e.path())?;
            }
        }
    }
    Ok(())
}

async fn run_hook(cmd: &str, key: &str, data_dir: &Path) -> Option<i32> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("GATEWAY_RESTORED_KEY", key)
        .env("GATEWAY_DATA_DIR", data_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    match out {
        Ok(out) => {
            let clip = |b: &[u8]| {
                let s = String::from_utf8_lossy(b);
                s.chars().take(4096).collect::<String>()
            };
            let code = out.status.code();
            if out.status.success() {
                tracing::info!(exit_code = ?code, stdout = %clip(&out.stdout), stderr = %clip(&out.stderr), "on-restore command finished");
            } else {
                tracing::error!(exit_code = ?code, stdout = %clip(&out.stdout), stderr = %clip(&out.stderr), "on-restore command failed");
            }
            code
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot run the on-restore command");
            None
        }
    }
}

fn free_space(dir: &Path) -> Option<u64> {
    rustix::fs::statvfs(dir)
        .ok()
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
}

/// Flushes what was written to the data directory's filesystem before the journal says the
/// new data is complete.
fn sync_filesystem(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = rustix::fs::syncfs(&f);
    }
}

/// Test hook for crash tests: with `GATEWAY_TEST_PAUSE_AT=<point>`, the restore writes
/// `<dir>/.backup-gateway/paused-at-<point>` and stops there for good, so a test can kill
/// the process at a known moment. Does nothing otherwise.
fn crash_point(data_dir: &Path, point: &str) {
    let Ok(want) = std::env::var("GATEWAY_TEST_PAUSE_AT") else {
        return;
    };
    if want != point {
        return;
    }
    let _ = std::fs::write(
        data_dir.join(STATE_DIR).join(format!("paused-at-{point}")),
        b"",
    );
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_at(data_dir: &Path, phase: &str) -> PathBuf {
        let work = restore_root(data_dir).join("earlier");
        std::fs::create_dir_all(work.join("old/pb_data")).unwrap();
        std::fs::write(work.join("old/pb_data/data.db"), b"replaced data").unwrap();
        let journal = Journal {
            id: "earlier".into(),
            key: "a.zip".into(),
            phase: phase.into(),
        };
        write_journal(data_dir, &journal).unwrap();
        work
    }

    #[test]
    fn a_clean_up_left_pending_is_finished_before_the_next_restore() {
        let dir = tempfile::tempdir().unwrap();
        let work = journal_at(dir.path(), "cleanup");
        finish_pending_cleanup(dir.path());
        assert!(!work.exists(), "the replaced data is deleted");
        assert!(!restore_root(dir.path()).join(JOURNAL).exists());
    }

    #[test]
    fn a_journal_in_an_earlier_phase_is_left_for_recover() {
        let dir = tempfile::tempdir().unwrap();
        let work = journal_at(dir.path(), "moving-in");
        finish_pending_cleanup(dir.path());
        assert!(work.join("old/pb_data/data.db").exists());
        assert!(restore_root(dir.path()).join(JOURNAL).exists());
    }
}
