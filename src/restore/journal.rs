//! The swap, driven by a journal (`.backup-gateway/restore/journal.json`): the current
//! content moves to the work directory's `old`, the staged content moves in from `new`,
//! and only then is the old content deleted. Excluded paths (the gateway's state, a local
//! backups directory inside the data directory) are never moved. Every phase is
//! idempotent, so a crash inside one is mended by running it again ([`run_journal`]).

use super::crash::{CrashPoint, pause_at};
use crate::util::fsutil::random_string;
use crate::util::state_dir;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// The swap's phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Phase {
    /// The current content moves to the work directory's `old`.
    MovingOut,
    /// The staged content moves in from `new`.
    MovingIn,
    /// The new data is in place; the old is deleted.
    Cleanup,
}

/// The swap's journal: which restore, and how far it got.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Journal {
    /// The work directory's name under `restore/`.
    id: String,
    pub(super) key: String,
    pub(super) phase: Phase,
}

/// The swap of the restore `id` (see the module docs) up to the new data being in place.
/// Runs on a blocking thread. Returns the journal, for [`clean_up`].
pub(super) fn swap(
    data_dir: &Path,
    id: &str,
    excluded: &[PathBuf],
    key: &str,
) -> io::Result<Journal> {
    let mut journal = Journal {
        id: id.to_string(),
        key: key.to_string(),
        phase: Phase::MovingOut,
    };
    write_journal(data_dir, &journal)?;
    move_data(data_dir, &mut journal, excluded)?;
    Ok(journal)
}

/// Carries a journal through its remaining phases. Every phase is idempotent, so a crash
/// inside one is mended by running it again.
pub(super) fn run_journal(
    data_dir: &Path,
    journal: &mut Journal,
    excluded: &[PathBuf],
) -> io::Result<()> {
    move_data(data_dir, journal, excluded)?;
    clean_up(data_dir, journal)
}

/// The phases that put the new data in place; the journal is left at `cleanup`.
fn move_data(data_dir: &Path, journal: &mut Journal, excluded: &[PathBuf]) -> io::Result<()> {
    let work = state_dir::restore_work(data_dir, &journal.id);
    let (new, old) = (work.join("new"), work.join("old"));
    if journal.phase == Phase::MovingOut {
        std::fs::create_dir_all(&old)?;
        move_out(data_dir, &old, Path::new(""), excluded)?;
        crate::util::fsutil::sync_dir(data_dir)?;
        crate::util::fsutil::sync_dir(&old)?;
        pause_at(data_dir, CrashPoint::SwapMovedOut);
        journal.phase = Phase::MovingIn;
        write_journal(data_dir, journal)?;
    }
    if journal.phase == Phase::MovingIn {
        if new.exists() {
            move_in(&new, data_dir, &old, Path::new(""))?;
        }
        crate::util::fsutil::sync_dir(data_dir)?;
        pause_at(data_dir, CrashPoint::AfterSwap);
        journal.phase = Phase::Cleanup;
        write_journal(data_dir, journal)?;
    }
    Ok(())
}

/// The last phase: the old data is deleted, only now that the new data is in place, then
/// the journal. A live restore runs it after reporting success and running the hook (the
/// application need not wait for the deletion of its previous data).
pub(super) fn clean_up(data_dir: &Path, journal: &Journal) -> io::Result<()> {
    pause_at(data_dir, CrashPoint::Cleanup);
    let work = state_dir::restore_work(data_dir, &journal.id);
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::remove_file(state_dir::restore_journal(data_dir))?;
    crate::util::fsutil::sync_dir(&state_dir::restore_root(data_dir))?;
    Ok(())
}

/// Deletes the replaced data of an earlier restore whose clean-up failed (its journal is
/// still at `cleanup`), so that a new restore does not overwrite that journal and leave the
/// old data on disk until the next start. A failure is only logged: the next start's sweep
/// deletes what no journal refers to.
pub(super) fn finish_pending_cleanup(data_dir: &Path) {
    // Other phases only exist after a crash, and `recover` finishes them at startup.
    if let Ok(Some(journal)) = read_journal(data_dir)
        && journal.phase == Phase::Cleanup
        && let Err(e) = clean_up(data_dir, &journal)
    {
        tracing::warn!(error = %e, "deleting the data from before an earlier restore failed again");
    }
}

/// The journal, if there is one.
pub(super) fn read_journal(data_dir: &Path) -> io::Result<Option<Journal>> {
    match std::fs::read(state_dir::restore_journal(data_dir)) {
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
            pause_at(data, CrashPoint::SwapFirstMovedOut);
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
                    random_string(6)
                ));
                std::fs::create_dir_all(old)?;
                std::fs::rename(&dst, aside)?;
                std::fs::rename(&src, &dst)?;
            }
        }
    }
    Ok(())
}

pub(super) fn write_journal(data_dir: &Path, journal: &Journal) -> io::Result<()> {
    let bytes = serde_json::to_vec(journal).map_err(io::Error::other)?;
    crate::util::fsutil::write_atomic(&state_dir::restore_journal(data_dir), &bytes, 0o600)
}

/// Flushes what was written to the data directory's filesystem before the journal says the
/// new data is complete.
pub(super) fn sync_filesystem(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = rustix::fs::syncfs(&f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_at(data_dir: &Path, phase: Phase) -> PathBuf {
        let work = state_dir::restore_work(data_dir, "earlier");
        std::fs::create_dir_all(work.join("old/pb_data")).unwrap();
        std::fs::write(work.join("old/pb_data/data.db"), b"replaced data").unwrap();
        let journal = Journal {
            id: "earlier".into(),
            key: "a.zip".into(),
            phase,
        };
        write_journal(data_dir, &journal).unwrap();
        work
    }

    #[test]
    fn a_clean_up_left_pending_is_finished_before_the_next_restore() {
        let dir = tempfile::tempdir().unwrap();
        let work = journal_at(dir.path(), Phase::Cleanup);
        finish_pending_cleanup(dir.path());
        assert!(!work.exists(), "the replaced data is deleted");
        assert!(!state_dir::restore_journal(dir.path()).exists());
    }

    #[test]
    fn a_journal_in_an_earlier_phase_is_left_for_recover() {
        let dir = tempfile::tempdir().unwrap();
        let work = journal_at(dir.path(), Phase::MovingIn);
        finish_pending_cleanup(dir.path());
        assert!(work.join("old/pb_data/data.db").exists());
        assert!(state_dir::restore_journal(dir.path()).exists());
    }

    #[test]
    fn phases_are_journaled_as_today() {
        let j = Journal {
            id: "x".into(),
            key: "a.zip".into(),
            phase: Phase::MovingOut,
        };
        let v = serde_json::to_value(&j).unwrap();
        assert_eq!(v["phase"], "moving-out");
        let back: Journal =
            serde_json::from_str(r#"{"id":"x","key":"a.zip","phase":"moving-in"}"#).unwrap();
        assert_eq!(back.phase, Phase::MovingIn);
    }
}
