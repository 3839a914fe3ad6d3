//! Backups made: the one create job that `POST /api/backups` and the schedule both run
//! ([`run`]), and the create itself ([`create()`]: the data directory zipped straight into
//! the store, full or incremental).
//!
//! A run takes the busy lock and reserves the key, creates, then logs, counts and keeps how
//! it ended ([`crate::ops::outcomes`]). What differs between its callers stays with them:
//! the API answers PocketBase's errors and verifies in the background after its answer; the
//! schedule records the run, notifies a failure and waits for the verify
//! ([`verify_after_create`]), whose failure fails the run.

mod create;

pub use create::{CreateError, Created, create};

use crate::AppState;
use crate::ops::jobs::JobKind;
use crate::ops::outcomes::{self, Finished};
use crate::ops::progress::Trigger;

/// Why a [`run`] stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Another create or a restore holds the busy lock.
    #[error("another backup or restore was running")]
    Busy,
    /// Another write (an upload) holds the key.
    #[error("a backup with this name is being written")]
    KeyInUse,
    /// The store already holds the key.
    #[error("a backup with this name already exists")]
    Exists,
    /// The create itself failed; nothing is stored.
    #[error(transparent)]
    Create(CreateError),
}

/// Why [`verify_after_create`] did not find the new backup good.
#[derive(Debug, thiserror::Error)]
pub enum VerifyAfterCreateError {
    #[error("the backup failed its verify: {0}")]
    Failed(String),
    #[error("the backup could not be verified: {0}")]
    NotRun(String),
}

/// The create job of `key`, asked for by `trigger`: the busy lock, the key reserved, the
/// create, and its outcome logged, counted and (for the API's) kept. Runs that found the
/// lock or the key taken created nothing and record nothing; their callers say why.
///
/// # Errors
/// [`RunError`]; the store then holds nothing new.
pub async fn run(state: &AppState, key: &str, trigger: Trigger) -> Result<Created, RunError> {
    let job = state
        .jobs
        .try_start(JobKind::Create, trigger, key)
        .ok_or(RunError::Busy)?;
    let _reserved = state.jobs.reserve_key(key).ok_or(RunError::KeyInUse)?;
    let store = state.store();
    let result = match store.stat(key).await {
        Ok(Some(_)) => return Err(RunError::Exists),
        Ok(None) => create(state, store.as_ref(), key, job.progress()).await,
        Err(e) => Err(CreateError::Storage(e)),
    };
    let error = result
        .as_ref()
        .err()
        .map(|e| crate::error::ErrorChain(e).to_string());
    let created = result.as_ref().ok();
    let finished = Finished::create(
        job.progress(),
        created.map(|c| c.size),
        created.map(|c| c.entries),
        error.as_deref(),
    );
    outcomes::finished(&state.metrics, &finished);
    if trigger == Trigger::Api {
        let outcome = finished.outcome(job.progress().started_at());
        state.outcomes.create.set(outcome);
    }
    result.map_err(RunError::Create)
}

/// Verifies `key`, just created by `trigger`, when the settings' `verifyAfterCreate`
/// covers that trigger ([`crate::verify`] records the result and notifies a failure).
///
/// # Errors
/// Why the backup failed its verify (which [`crate::verify`] notified), or why the verify
/// could not run (not notified: the caller decides). An inconclusive verify (the store or
/// the disk failed the check, not the backup) is not an error.
pub async fn verify_after_create(
    state: &AppState,
    key: &str,
    trigger: Trigger,
) -> Result<(), VerifyAfterCreateError> {
    let wanted = state.settings.current().backups.verify_after_create();
    if !wanted.covers(trigger) {
        return Ok(());
    }
    match crate::verify::verify(state, key, trigger, true).await {
        Ok(v) if v.ok || v.inconclusive => Ok(()),
        Ok(v) => Err(VerifyAfterCreateError::Failed(crate::verify::failure_text(
            &v,
        ))),
        Err(e) => Err(VerifyAfterCreateError::NotRun(e.to_string())),
    }
}
