//! The busy lock: at most one create or restore at a time (as in PocketBase), with the
//! [`Progress`] of the one running, plus the keys being written right now (a create's or an
//! upload's), which cannot be deleted, restored or written twice, and the key being
//! verified (one verify at a time, beside creates and restores: it only reads), which
//! cannot be deleted.
//!
//! Guards release on drop, so every exit path (success, error, panic, a cancelled request)
//! frees the lock.

pub use crate::ops::progress::Kind as JobKind;
use crate::ops::progress::{Progress, Reporter, Trigger};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a running job logs its progress, unless configured.
pub const DEFAULT_PROGRESS_LOG_SECS: u64 = 10;

#[derive(Debug, Default)]
struct Inner {
    active: Option<Arc<Progress>>,
    writing: HashSet<String>,
    verifying: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Jobs {
    inner: Arc<Mutex<Inner>>,
    /// Signalled when the verify slot is freed.
    verify_freed: Arc<tokio::sync::Notify>,
    /// Zero: no progress lines in the log.
    log_every: Duration,
}

impl Default for Jobs {
    fn default() -> Self {
        Self::new(Duration::from_secs(DEFAULT_PROGRESS_LOG_SECS))
    }
}

/// Holds the busy lock until dropped; carries the job's progress.
#[derive(Debug)]
pub struct JobGuard {
    jobs: Jobs,
    progress: Arc<Progress>,
    _reporter: Option<Reporter>,
}

impl JobGuard {
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }
}

/// Holds the verify slot on a key until dropped.
#[derive(Debug)]
pub struct VerifyGuard {
    jobs: Jobs,
}

/// Reserves a key being written until dropped.
#[derive(Debug)]
pub struct KeyGuard {
    jobs: Jobs,
    key: String,
}

impl Jobs {
    /// Jobs that log their progress every `log_every` (zero: never).
    pub fn new(log_every: Duration) -> Self {
        Self {
            inner: Arc::default(),
            verify_freed: Arc::default(),
            log_every,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the busy lock for `kind` on `key`, or `None` if a create or restore runs.
    pub fn try_start(&self, kind: JobKind, trigger: Trigger, key: &str) -> Option<JobGuard> {
        let mut inner = self.lock();
        if inner.active.is_some() {
            return None;
        }
        let progress = Progress::new(kind, trigger, key);
        inner.active = Some(Arc::clone(&progress));
        drop(inner);
        Some(JobGuard {
            jobs: self.clone(),
            _reporter: progress.report_every(self.log_every),
            progress,
        })
    }

    /// True while a create or restore runs.
    pub fn is_busy(&self) -> bool {
        self.lock().active.is_some()
    }

    /// The running job's progress, if one runs.
    pub fn running(&self) -> Option<crate::ops::progress::View> {
        self.lock().active.as_ref().map(|p| p.view())
    }

    /// Kinds of jobs running now (0 or 1 of each), for the metrics.
    pub fn in_flight(&self, kind: JobKind) -> usize {
        usize::from(
            self.lock()
                .active
                .as_ref()
                .is_some_and(|p| p.kind() == kind),
        )
    }

    /// Reserves `key` for writing, or `None` if it is being written already.
    pub fn reserve_key(&self, key: &str) -> Option<KeyGuard> {
        let mut inner = self.lock();
        if !inner.writing.insert(key.to_string()) {
            return None;
        }
        Some(KeyGuard {
            jobs: self.clone(),
            key: key.to_string(),
        })
    }

    /// Takes the verify slot for `key`, or `None` if a verify runs.
    pub fn try_verify(&self, key: &str) -> Option<VerifyGuard> {
        let mut inner = self.lock();
        if inner.verifying.is_some() {
            return None;
        }
        inner.verifying = Some(key.to_string());
        Some(VerifyGuard { jobs: self.clone() })
    }

    /// Takes the verify slot for `key`, waiting for the verify running to end.
    pub async fn verify_slot(&self, key: &str) -> VerifyGuard {
        loop {
            let freed = self.verify_freed.notified();
            tokio::pin!(freed);
            // Registered before the check: a slot freed in between still wakes us.
            freed.as_mut().enable();
            if let Some(guard) = self.try_verify(key) {
                return guard;
            }
            freed.await;
        }
    }

    /// True if `key` is being written by a create or an upload right now.
    pub fn is_being_written(&self, key: &str) -> bool {
        self.lock().writing.contains(key)
    }

    /// True if `key` is being written or verified, or is the key of the running create or
    /// restore.
    pub fn in_use(&self, key: &str) -> bool {
        let inner = self.lock();
        inner.writing.contains(key)
            || inner.verifying.as_deref() == Some(key)
            || inner.active.as_ref().is_some_and(|p| p.key() == key)
    }
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        self.jobs.lock().active = None;
    }
}

impl Drop for VerifyGuard {
    fn drop(&mut self) {
        self.jobs.lock().verifying = None;
        self.jobs.verify_freed.notify_waiters();
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.jobs.lock().writing.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_job_at_a_time_and_release_on_drop() {
        let jobs = Jobs::default();
        let g = jobs
            .try_start(JobKind::Create, Trigger::Api, "a.zip")
            .unwrap();
        assert!(
            jobs.try_start(JobKind::Restore, Trigger::Api, "b.zip")
                .is_none()
        );
        assert!(jobs.in_use("a.zip"));
        assert!(!jobs.in_use("b.zip"));
        drop(g);
        assert!(!jobs.is_busy());
        assert!(
            jobs.try_start(JobKind::Restore, Trigger::Api, "b.zip")
                .is_some()
        );
    }

    #[test]
    fn one_verify_at_a_time_beside_a_create_and_its_key_is_in_use() {
        let jobs = Jobs::default();
        let _create = jobs
            .try_start(JobKind::Create, Trigger::Api, "a.zip")
            .unwrap();
        let v = jobs.try_verify("b.zip").expect("a verify beside a create");
        assert!(jobs.try_verify("c.zip").is_none());
        assert!(jobs.in_use("b.zip"));
        drop(v);
        assert!(!jobs.in_use("b.zip"));
        assert!(jobs.try_verify("c.zip").is_some());
    }

    #[test]
    fn keys_are_reserved_once() {
        let jobs = Jobs::default();
        let k = jobs.reserve_key("a.zip").unwrap();
        assert!(jobs.reserve_key("a.zip").is_none());
        assert!(jobs.in_use("a.zip"));
        drop(k);
        assert!(jobs.reserve_key("a.zip").is_some());
    }
}
