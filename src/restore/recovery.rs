//! Recovery at startup: a restore that a crash interrupted is finished from its journal, or
//! its staging is deleted and its status says it failed. The data directory is always
//! wholly old or wholly new.

use super::journal::{read_journal, run_journal};
use super::status::{Outcome, RestoreStatus, Restores};
use crate::util::state_dir;
use std::io;
use std::path::{Path, PathBuf};

/// Finishes or cleans up a restore that a crash interrupted. Called once at startup,
/// before the server accepts requests.
///
/// # Errors
/// When the journal cannot be carried out (the data directory is then left for the
/// operator, and the gateway refuses to start rather than serve a half-swapped state).
pub fn recover(data_dir: &Path, excluded: &[PathBuf], restores: &Restores) -> io::Result<()> {
    let root = state_dir::restore_root(data_dir);
    match read_journal(data_dir)? {
        Some(mut journal) => {
            tracing::warn!(key = %journal.key, phase = ?journal.phase, "finishing a restore interrupted by a crash");
            run_journal(data_dir, &mut journal, excluded)?;
            let mut status = restores
                .last()
                .unwrap_or_else(|| RestoreStatus::running(&journal.key));
            if status.status != Outcome::Ok {
                status.finish(None);
                restores.set(status);
            }
        }
        None => {
            if let Some(mut status) = restores.last().filter(|s| s.status == Outcome::Running) {
                status.finish(Some(
                    "interrupted before the swap (the gateway stopped); the data directory was not changed"
                        .into(),
                ));
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
