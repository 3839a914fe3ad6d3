//! Started multipart uploads recorded in the gateway's state directory until completed or
//! aborted, so that the ones a crash (or an unreachable store) left behind are aborted at
//! the next start.

use super::S3Store;
use super::multipart::abort;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A started multipart upload, as recorded in the pending directory.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PendingUpload {
    key: String,
    upload_id: String,
    /// The store's bucket (several stores may record here over time, as settings change);
    /// empty in records of older versions.
    #[serde(default)]
    bucket: String,
}

impl S3Store {
    /// Records started multipart uploads in `dir` and aborts the ones a crash left there.
    pub async fn with_pending_dir(mut self, dir: PathBuf) -> Self {
        if let Ok(mut rd) = tokio::fs::read_dir(&dir).await {
            while let Ok(Some(entry)) = rd.next_entry().await {
                let path = entry.path();
                let Ok(bytes) = tokio::fs::read(&path).await else {
                    continue;
                };
                if let Ok(p) = serde_json::from_slice::<PendingUpload>(&bytes) {
                    if !p.bucket.is_empty() && p.bucket != self.bucket {
                        continue; // Another store's: aborted when that store is opened.
                    }
                    tracing::warn!(key = %p.key, "aborting a multipart upload left by a crash");
                    if abort(self.client.clone(), self.bucket.clone(), p.key, p.upload_id).await {
                        let _ = tokio::fs::remove_file(&path).await;
                    }
                } else {
                    let _ = tokio::fs::remove_file(&path).await;
                }
            }
        }
        self.pending_dir = Some(dir);
        self
    }

    pub(super) fn record_pending(&self, key: &str, upload_id: &str) -> Option<PathBuf> {
        let dir = self.pending_dir.as_ref()?;
        let path = dir.join(format!("{}.json", crate::util::fsutil::random_string(16)));
        let rec = PendingUpload {
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            bucket: self.bucket.clone(),
        };
        let bytes = serde_json::to_vec(&rec).unwrap_or_default();
        match crate::util::fsutil::write_atomic(&path, &bytes, 0o600) {
            Ok(()) => Some(path),
            Err(e) => {
                tracing::warn!(error = %e, "cannot record a pending multipart upload");
                None
            }
        }
    }
}
