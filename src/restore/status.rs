//! The last restore's status: what `GET /api/gateway/restore` serves, kept in memory and
//! on disk so that it survives restarts.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Where a restore is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Running,
    Ok,
    Failed,
}

/// What the last restore did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    pub key: String,
    pub status: Outcome,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// The `--on-restore` command's exit code (`null`: not configured or killed).
    pub hook_exit_code: Option<i32>,
    /// Why `--on-restore` failed (an exit code, a timeout); `null` when it succeeded or
    /// is not configured.
    #[serde(default)]
    pub hook_error: Option<String>,
    /// How the application was stopped before the swap (`null`: nothing is configured
    /// to stop it, or the restore failed before).
    #[serde(default)]
    pub app_stop: Option<crate::lifecycle::Step>,
    /// How it was started again: after the swap, or on the old data when the swap did not
    /// happen.
    #[serde(default)]
    pub app_start: Option<crate::lifecycle::Step>,
    /// A point-in-time restore's moment, and what each database reached (`key` is then the
    /// backup the other files came from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<PointInTime>,
}

/// What a point-in-time restore brought back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PointInTime {
    /// The moment asked for (PocketBase's format), or `latest`.
    pub time: String,
    /// The backup the files other than the streamed databases came from, and its time:
    /// how old those files are.
    pub files_from: String,
    pub files_time: String,
    pub databases: Vec<PitrDatabase>,
}

/// One database of a point-in-time restore.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PitrDatabase {
    pub name: String,
    pub history: String,
    /// When the last commit restored was seen (`null`: the history's base, before any).
    pub last_commit: Option<String>,
    pub segments_read: usize,
}

impl RestoreStatus {
    /// A restore of `key` that starts now.
    pub fn running(key: &str) -> Self {
        Self {
            key: key.to_string(),
            status: Outcome::Running,
            started_at: crate::util::time_fmt::now_pb(),
            finished_at: None,
            error: None,
            hook_exit_code: None,
            hook_error: None,
            app_stop: None,
            app_start: None,
            point_in_time: None,
        }
    }

    /// Ends it now, with `error` when it failed.
    pub fn finish(&mut self, error: Option<String>) {
        self.status = if error.is_some() {
            Outcome::Failed
        } else {
            Outcome::Ok
        };
        self.finished_at = Some(crate::util::time_fmt::now_pb());
        self.error = error;
    }
}

/// The last restore's status, in memory and on disk.
#[derive(Debug)]
pub struct Restores(crate::util::fsutil::Kept<RestoreStatus>);

impl Restores {
    pub fn open(data_dir: &Path) -> Self {
        Self(crate::util::fsutil::Kept::open(
            crate::util::state_dir::last_restore(data_dir),
        ))
    }

    pub fn last(&self) -> Option<RestoreStatus> {
        self.0.last()
    }

    /// Records `status`, and logs it.
    pub fn set(&self, status: RestoreStatus) {
        match status.status {
            Outcome::Failed => {
                tracing::error!(key = %status.key, error = ?status.error, "restore failed");
            }
            Outcome::Ok => {
                tracing::info!(key = %status.key, hook_exit_code = ?status.hook_exit_code, "restore finished");
            }
            Outcome::Running => tracing::info!(key = %status.key, "restore started"),
        }
        self.0.set(status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_served_as_lowercase_strings() {
        let mut s = RestoreStatus::running("a.zip");
        assert_eq!(serde_json::to_value(&s).unwrap()["status"], "running");
        s.finish(Some("no".into()));
        assert_eq!(serde_json::to_value(&s).unwrap()["status"], "failed");
        s.finish(None);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            (v["status"].as_str(), v["error"].is_null()),
            (Some("ok"), true)
        );
    }
}
