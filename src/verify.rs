//! Verify: a stored backup proven restorable without restoring it.
//!
//! The archive is read from the store the way a restore reads it: its central directory
//! with ranged reads, every entry through the restore's checks
//! ([`crate::archive::check::check_entries`]: paths, limits, bombs), then one streamed pass
//! over the data ([`crate::archive::verify`]: local headers, sizes, CRC-32, and
//! `integrity_check` of every SQLite database image in a scratch file under
//! `<dir>/.backup-gateway/verify/`, deleted after). Nothing else is written.
//!
//! One verify runs at a time, beside creates and restores (it only reads, and the store
//! reads take their share of the memory budget); the key being verified cannot be deleted
//! meanwhile. It runs as a task of its own, so a client that goes away does not cut it
//! short. The last result of each key is kept across restarts
//! (`<dir>/.backup-gateway/verified.json`) and dropped when the backup is deleted; a
//! failure notifies ([`crate::ops::notify`]). A check that could not finish for reasons that
//! are not the backup's (the store failed, no disk room for a database image) is
//! `inconclusive`: not ok, but not known to be damaged either.

use crate::AppState;
use crate::archive::{ArchiveError, check, verify::Tally};
use crate::index::IndexError;
use crate::ops::metrics::Operation;
use crate::ops::progress::Trigger;
use crate::storage::{BackupStore, StorageError, parallel_reads};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// The result of one verify, as `POST` and `GET /api/gateway/backups/{key}/verify` answer
/// it and the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub key: String,
    pub ok: bool,
    pub trigger: Trigger,
    /// When it finished, in PocketBase's format.
    pub verified_at: String,
    pub duration_seconds: f64,
    /// The archive's size.
    pub size: u64,
    /// Entries (files and directories) whose data was checked.
    pub entries: u64,
    /// Uncompressed bytes checked.
    pub bytes: u64,
    /// The database images that passed `integrity_check`.
    pub databases: Vec<String>,
    /// The check could not be completed (the store failed, or the disk had no room for a
    /// database image): `ok` is false, but nothing is known to be wrong with the backup.
    pub inconclusive: bool,
    /// The entry that failed, when the failure is one entry's.
    pub entry: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Why a verify did not run.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("another verify is running")]
    Busy,
    #[error("no such backup")]
    Missing,
    #[error("reading the backup failed")]
    Storage(#[source] StorageError),
}

/// The last result of every key, in memory and in a file beside the gateway's state.
#[derive(Debug)]
pub struct Verifications {
    kept: crate::util::fsutil::Kept<BTreeMap<String, Verified>>,
}

impl Verifications {
    pub fn open(data_dir: &std::path::Path) -> Self {
        Self {
            kept: crate::util::fsutil::Kept::open(crate::util::state_dir::verified(data_dir)),
        }
    }

    /// Every key's last result.
    pub fn all(&self) -> BTreeMap<String, Verified> {
        self.kept.last().unwrap_or_default()
    }

    /// The last result of `key`.
    pub fn get(&self, key: &str) -> Option<Verified> {
        self.all().remove(key)
    }

    /// The last successful verify's time among the kept results.
    pub fn last_success(&self) -> Option<String> {
        self.all()
            .into_values()
            .filter(|v| v.ok)
            .map(|v| v.verified_at)
            .max()
    }

    fn record(&self, v: Verified) {
        self.kept.update(|all| {
            all.insert(v.key.clone(), v);
        });
    }

    /// True when `key`'s last verify found it damaged (not merely inconclusive).
    pub fn known_bad(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| !v.ok && !v.inconclusive)
    }

    /// Forgets `key` (its backup is gone).
    pub fn forget(&self, key: &str) {
        if self.get(key).is_some() {
            self.kept.update(|all| {
                all.remove(key);
            });
        }
    }
}

/// Verifies `key` (see the module docs), records and returns the result. A failed
/// verify is a result (`ok: false`), not an error. With `wait`, a verify already running
/// is waited for (a create's own verify); else it is refused.
///
/// # Errors
/// [`StartError`]: another verify runs (without `wait`), the key is missing (or still
/// being written), or the store cannot say whether it exists.
#[tracing::instrument(skip(state), fields(key = %key))]
pub async fn verify(
    state: &AppState,
    key: &str,
    trigger: Trigger,
    wait: bool,
) -> Result<Verified, StartError> {
    let guard = if wait {
        state.jobs.verify_slot(key).await
    } else {
        state.jobs.try_verify(key).ok_or(StartError::Busy)?
    };
    let (store, info) = state
        .stored_backup(key)
        .await
        .map_err(StartError::Storage)?
        .ok_or(StartError::Missing)?;
    let (state, key) = (state.clone(), key.to_string());
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let checked = check_archive(&state, store.clone(), &key, info.size).await;
        let v = result(&key, trigger, info.size, started, checked);
        if !v.ok && matches!(store.stat(&key).await, Ok(None)) {
            // Deleted while it was read (retention, or a delete that came first): there is
            // nothing left to keep a result of.
            tracing::info!(key = %key, "the backup was deleted during its verify");
            return v;
        }
        drop(guard);
        crate::ops::outcomes::finished(
            &state.metrics,
            &crate::ops::outcomes::Finished {
                operation: Operation::Verify,
                trigger,
                key: &key,
                started,
                size: Some(info.size),
                entries: Some(v.entries),
                error: v.error.as_deref(),
            },
        );
        state.verifications.record(v.clone());
        if !v.ok {
            let what = if v.inconclusive {
                crate::ops::notify::What::VerifyInconclusive
            } else {
                crate::ops::notify::What::Verify
            };
            state.notifier.send(crate::ops::notify::Event::failed(
                what,
                &key,
                &failure_text(&v),
            ));
        }
        v
    });
    task.await.map_err(|e| {
        StartError::Storage(StorageError::Backend(
            format!("the verify task failed: {e}"),
            None,
        ))
    })
}

/// The reason of a failed result, with its entry.
pub fn failure_text(v: &Verified) -> String {
    match (&v.entry, &v.error) {
        (Some(entry), Some(e)) => format!("{entry}: {e}"),
        (None, Some(e)) => e.clone(),
        _ => String::new(),
    }
}

/// Why a verify failed: the entry, when one entry is to blame, the reason, and whether
/// the backup or the circumstances are to blame.
struct Failure {
    entry: Option<String>,
    why: String,
    inconclusive: bool,
}

impl Failure {
    fn inconclusive(why: String) -> Self {
        Self {
            entry: None,
            why,
            inconclusive: true,
        }
    }
}

impl From<ArchiveError> for Failure {
    fn from(e: ArchiveError) -> Self {
        let blame = |entry: Option<String>, why: String| Self {
            entry,
            why,
            inconclusive: false,
        };
        match e {
            ArchiveError::Corrupt { name, why } => blame(Some(name), why),
            ArchiveError::UnsafeEntry { name, why } | ArchiveError::Unsupported { name, why } => {
                blame(Some(name), why.to_string())
            }
            ArchiveError::Io(io) => Self::inconclusive(format!("the check could not finish: {io}")),
            other @ (ArchiveError::NotZip(_) | ArchiveError::Limit(_) | ArchiveError::Empty(_)) => {
                blame(None, other.to_string())
            }
        }
    }
}

/// What the checks found: the tally, or the failure with what was checked until then.
type Checked = Result<Tally, (Failure, Tally)>;

/// Reads and checks `key` (`size` bytes).
async fn check_archive(
    state: &AppState,
    store: Arc<dyn BackupStore>,
    key: &str,
    size: u64,
) -> Checked {
    let limits = state.config.restore_limits;
    let (dir, entries) =
        match crate::index::read_index(store.as_ref(), key, size, limits.max_index_bytes).await {
            Ok(index) => index,
            Err(IndexError::Archive(a)) => return Err((a.into(), Tally::default())),
            Err(IndexError::Storage(s)) => {
                return Err((
                    Failure::inconclusive(format!(
                        "reading the backup failed: {}",
                        crate::error::ErrorChain(&s)
                    )),
                    Tally::default(),
                ));
            }
        };
    // Every entry, those a restore would leave alone included: all of it must be sound.
    let plan = match check::check_entries(entries, dir.offset, &limits, &[]) {
        Ok(plan) => plan,
        Err(e) => return Err((e.into(), Tally::default())),
    };
    let required = crate::restore::plan::required_entries(
        &state.config.restore_require,
        &state.config.data_dir,
    );
    if let Some(why) = crate::restore::plan::missing_required(&plan, &required) {
        let failure = Failure {
            entry: None,
            why,
            inconclusive: false,
        };
        return Err((failure, Tally::default()));
    }
    let start = plan.items.first().map_or(dir.offset, |p| p.entry.offset);
    let body = parallel_reads(
        store,
        key.to_string(),
        start..dir.offset,
        state.budget.clone(),
    );
    let mut reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body));
    let scratch = crate::util::state_dir::verify_scratch(&state.config.data_dir);
    tokio::task::spawn_blocking(move || {
        let mut checked_bytes = 0;
        let result =
            crate::archive::verify::verify(&plan, &mut reader, start, &scratch, &mut |n| {
                checked_bytes += n;
            });
        result.map_err(|e| {
            let done = Tally {
                bytes: checked_bytes,
                ..Tally::default()
            };
            (e.into(), done)
        })
    })
    .await
    .unwrap_or_else(|e| {
        Err((
            Failure::inconclusive(format!("the verify task failed: {e}")),
            Tally::default(),
        ))
    })
}

fn result(key: &str, trigger: Trigger, size: u64, started: Instant, checked: Checked) -> Verified {
    let (ok, tally, failure) = match checked {
        Ok(tally) => (true, tally, None),
        Err((failure, tally)) => (false, tally, Some(failure)),
    };
    Verified {
        key: key.to_string(),
        ok,
        trigger,
        verified_at: crate::util::time_fmt::now_pb(),
        duration_seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        size,
        entries: tally.entries,
        bytes: tally.bytes,
        databases: tally.databases,
        inconclusive: failure.as_ref().is_some_and(|f| f.inconclusive),
        entry: failure.as_ref().and_then(|f| f.entry.clone()),
        error: failure.map(|f| f.why),
    }
}
