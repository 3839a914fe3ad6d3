//! The gateway's own state: every path under `<dir>/.backup-gateway/`. The directory is
//! excluded from every backup and never replaced by a restore; nothing else in the crate
//! names a path inside it.

use std::path::{Path, PathBuf};

/// The state directory's name inside the data directory.
pub const NAME: &str = ".backup-gateway";

/// Makes the state private: the directory 0700 (created so if missing), and the files the
/// gateway keeps there (state, settings, outcomes, the journal, pending-upload records)
/// 0600, whatever an older version or the umask left. The restores' work directories are
/// left as they are: they hold data trees, with the data's own modes, behind the 0700.
///
/// # Errors
/// When the directory cannot be created or a mode cannot be changed.
pub fn make_private(data_dir: &Path) -> std::io::Result<()> {
    let root = root(data_dir);
    crate::util::fsutil::create_private_dir_all(&root)?;
    crate::util::fsutil::make_private_dir(&root)?;
    let dirs = [
        root.clone(),
        pending_uploads(data_dir),
        restore_root(data_dir),
    ];
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_file() {
                crate::util::fsutil::set_mode(&entry.path(), 0o600)?;
            } else if kind.is_dir() && dir == root {
                crate::util::fsutil::make_private_dir(&entry.path())?;
            }
        }
    }
    Ok(())
}

/// `<dir>/.backup-gateway`.
pub fn root(data_dir: &Path) -> PathBuf {
    data_dir.join(NAME)
}

/// Superusers, token keys and the signing secrets ([`crate::auth::users`]).
pub fn users(data_dir: &Path) -> PathBuf {
    root(data_dir).join("state.json")
}

/// The settings saved over the API ([`crate::settings`]).
pub fn settings(data_dir: &Path) -> PathBuf {
    root(data_dir).join("settings.json")
}

/// The last API create's outcome ([`crate::ops::outcomes`]).
pub fn last_create(data_dir: &Path) -> PathBuf {
    root(data_dir).join("last-create.json")
}

/// The last upload's outcome ([`crate::ops::outcomes`]).
pub fn last_upload(data_dir: &Path) -> PathBuf {
    root(data_dir).join("last-upload.json")
}

/// The last scheduled backup's outcome ([`crate::schedule`]).
pub fn last_scheduled_backup(data_dir: &Path) -> PathBuf {
    root(data_dir).join("last-scheduled-backup.json")
}

/// The last restore's status ([`crate::restore`]).
pub fn last_restore(data_dir: &Path) -> PathBuf {
    root(data_dir).join("last-restore.json")
}

/// Records of multipart uploads not yet completed or aborted ([`crate::storage::s3`]).
pub fn pending_uploads(data_dir: &Path) -> PathBuf {
    root(data_dir).join("uploads")
}

/// The restores' scratch space: one work directory per restore, and the journal.
pub fn restore_root(data_dir: &Path) -> PathBuf {
    root(data_dir).join("restore")
}

/// The swap's journal ([`crate::restore`]).
pub fn restore_journal(data_dir: &Path) -> PathBuf {
    restore_root(data_dir).join("journal.json")
}

/// The work directory of the restore `id` (its `new` and `old` trees).
pub fn restore_work(data_dir: &Path, id: &str) -> PathBuf {
    restore_root(data_dir).join(id)
}

/// The last verify result of every key ([`crate::verify`]).
pub fn verified(data_dir: &Path) -> PathBuf {
    root(data_dir).join("verified.json")
}

/// Where a verify writes the database image it checks, one at a time.
pub fn verify_scratch(data_dir: &Path) -> PathBuf {
    root(data_dir).join("verify")
}

/// The marker a crash test waits for: the restore stopped at `point`.
pub fn paused_at(data_dir: &Path, point: &str) -> PathBuf {
    root(data_dir).join(format!("paused-at-{point}"))
}
