//! The checks a restore passes before it answers: the archive's end records and central
//! directory, read with ranged reads (a few KiB for a typical backup), every entry through
//! [`check::check_entries`], the files this data directory requires, and room on the disk
//! for the uncompressed data. What passes is the [`Plan`] the extraction follows.

use super::StartError;
use crate::archive::{Limits, Plan, check};
use crate::index::IndexError;
use crate::storage::{BackupStore, StorageError};
use std::path::{Path, PathBuf};

/// Free space kept on top of the uncompressed size.
const DISK_MARGIN: u64 = 64 << 20;

/// A checked archive: the plan, and where its central directory starts (where the
/// extraction stops reading).
pub(super) struct Checked {
    pub plan: Plan,
    pub cd_offset: u64,
}

/// Everything [`prepare`] checks against.
pub(super) struct Rules<'a> {
    pub limits: &'a Limits,
    /// Paths a restore leaves alone.
    pub excluded: &'a [PathBuf],
    /// Files the archive must hold ([`required_entries`]).
    pub required: &'a [PathBuf],
    pub data_dir: &'a Path,
}

/// Reads and checks `key` (`size` bytes) for a restore.
///
/// # Errors
/// [`StartError::Invalid`] with the reason, [`StartError::Missing`] when the archive is
/// gone, [`StartError::Storage`] for other store failures.
pub(super) async fn prepare(
    store: &dyn BackupStore,
    key: &str,
    size: u64,
    rules: &Rules<'_>,
) -> Result<Checked, StartError> {
    let (plan, cd_offset) = read_plan(store, key, size, rules.limits, rules.excluded)
        .await
        .map_err(|e| match e {
            IndexError::Archive(a) => StartError::Invalid(a.to_string()),
            IndexError::Storage(StorageError::NotFound) => StartError::Missing,
            IndexError::Storage(s) => StartError::Storage(s),
        })?;
    if let Some(why) = missing_required(&plan, rules.required) {
        return Err(StartError::Invalid(why));
    }
    let available = free_space(rules.data_dir).unwrap_or(u64::MAX);
    if plan.total_size.saturating_add(DISK_MARGIN) > available {
        return Err(StartError::Invalid(format!(
            "not enough free disk space: the backup needs {} bytes, {} are available",
            plan.total_size, available
        )));
    }
    Ok(Checked { plan, cd_offset })
}

/// Why `plan` cannot restore this data directory: a file of `required` it lacks.
pub(crate) fn missing_required(plan: &Plan, required: &[PathBuf]) -> Option<String> {
    let missing = required
        .iter()
        .find(|req| !plan.items.iter().any(|i| !i.is_dir && &i.path == *req))?;
    Some(format!(
        "the archive has no {}, which a restore of this data directory requires \
         (--restore-require)",
        missing.display()
    ))
}

/// The files a restore's archive must hold: `--restore-require`, or PocketBase's `data.db`
/// when the data directory holds one (PocketBase refuses such archives too, but only after
/// answering `204`).
pub(crate) fn required_entries(restore_require: &[PathBuf], data_dir: &Path) -> Vec<PathBuf> {
    if !restore_require.is_empty() {
        return restore_require.to_vec();
    }
    if data_dir.join("data.db").is_file() {
        return vec![PathBuf::from("data.db")];
    }
    Vec::new()
}

fn free_space(dir: &Path) -> Option<u64> {
    rustix::fs::statvfs(dir)
        .ok()
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
}

/// Reads the archive's index ([`crate::index`]) and checks every entry. Returns the plan
/// and the central directory's offset.
async fn read_plan(
    store: &dyn BackupStore,
    key: &str,
    size: u64,
    limits: &Limits,
    exclude: &[PathBuf],
) -> Result<(Plan, u64), IndexError> {
    let (dir, entries) = crate::index::read_index(store, key, size, limits.max_index_bytes).await?;
    let plan = check::check_entries(entries, dir.offset, limits, exclude)?;
    Ok((plan, dir.offset))
}
