//! `--exec`: the application runs as the gateway's child (Litestream's `-exec`), so that a
//! restore can stop it before the swap and start it again after. [`crate::api::serve`] starts
//! it once the gateway is ready and stops it when the gateway stops; a signal the gateway
//! gets is passed on to it; when it exits on its own, the gateway exits too, with its exit
//! code ([`Supervisor::exited_on_its_own`]).
//!
//! The command runs through [`super::runner`] (`sh -c`, its own process group, the
//! environment without the gateway's secrets, its output in the gateway's log marked
//! `[app]`); signals go to the whole group.

use super::runner;
use serde::Serialize;
use std::ffi::OsString;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the page and `GET /api/health` show of the child.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildState {
    pub running: bool,
    pub pid: Option<u32>,
    /// When it was last started (PocketBase's date format).
    pub started_at: Option<String>,
    /// How often it was started (1 at the gateway's start, one more per restore).
    pub starts: u32,
    /// How its last run ended, e.g. `exit code 0`.
    pub last_exit: Option<String>,
}

#[derive(Debug)]
pub struct Supervisor {
    command: String,
    /// SIGTERM, then SIGKILL after this.
    grace: Duration,
    state: watch::Sender<ChildState>,
    /// Set while the gateway stops it (a restore, a shutdown): its exit is then expected.
    stopping: AtomicBool,
    /// Set once the gateway shuts down: a restore still running does not start it again.
    closed: AtomicBool,
    /// Cancelled when it exits while nobody stopped it.
    own_exit: CancellationToken,
    /// Its last exit code (128 + the signal when a signal ended it).
    exit_code: Mutex<Option<i32>>,
}

impl Supervisor {
    pub fn new(command: String, grace: Duration) -> Self {
        Self {
            command,
            grace,
            state: watch::Sender::new(ChildState::default()),
            stopping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            own_exit: CancellationToken::new(),
            exit_code: Mutex::new(None),
        }
    }

    pub fn state(&self) -> ChildState {
        self.state.borrow().clone()
    }

    /// Completes when the child exited without the gateway stopping it.
    pub fn exited_on_its_own(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.own_exit.cancelled()
    }

    /// The exit code of its last run, once it has exited.
    pub fn exit_code(&self) -> Option<i32> {
        *self.exit_code.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the child with `env` (already scrubbed). Does nothing when it runs.
    ///
    /// # Errors
    /// When the shell cannot be spawned.
    pub fn start(self: &std::sync::Arc<Self>, env: &[(OsString, OsString)]) -> std::io::Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the gateway is shutting down"));
        }
        if self.state.borrow().running {
            return Ok(());
        }
        let mut child = runner::command(&self.command, env, &[]).spawn()?;
        let pid = child.id();
        let readers = [
            child
                .stdout
                .take()
                .map(|o| runner::log_lines("app", "stdout", o)),
            child
                .stderr
                .take()
                .map(|o| runner::log_lines("app", "stderr", o)),
        ];
        self.stopping.store(false, Ordering::SeqCst);
        self.state.send_modify(|s| {
            s.running = true;
            s.pid = pid;
            s.started_at = Some(crate::util::time_fmt::now_pb());
            s.starts += 1;
        });
        tracing::info!(pid = ?pid, command = %self.command, "application started (--exec)");
        let me = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            let status = child.wait().await;
            let (code, how) = match &status {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    let code = s.code().or_else(|| s.signal().map(|n| 128 + n));
                    (code, runner::describe_exit(*s))
                }
                Err(e) => (None, format!("waiting for it failed: {e}")),
            };
            // Whatever it left in its group goes with it.
            if let Some(p) = pid
                .and_then(|p| i32::try_from(p).ok())
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
            }
            // Its last lines reach the log before its exit counts (the gateway may exit
            // right after).
            for r in readers.into_iter().flatten() {
                let _ = tokio::time::timeout(Duration::from_secs(1), r).await;
            }
            *me.exit_code.lock().unwrap_or_else(|e| e.into_inner()) = code;
            let expected = me.stopping.load(Ordering::SeqCst);
            if expected {
                tracing::info!(exit = %how, "application stopped");
            } else {
                tracing::warn!(exit = %how, "application exited on its own; the gateway stops too");
            }
            me.state.send_modify(|s| {
                s.running = false;
                s.pid = None;
                s.last_exit = Some(how.clone());
            });
            if !expected {
                me.own_exit.cancel();
            }
        });
        Ok(())
    }

    /// The gateway shuts down: the child is not started again from now on.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Sends `signal` to the child's group, its exit then expected (a shutdown).
    pub fn signal(&self, signal: rustix::process::Signal) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(pid) = self.group() {
            let _ = rustix::process::kill_process_group(pid, signal);
        }
    }

    fn group(&self) -> Option<rustix::process::Pid> {
        let s = self.state.borrow();
        s.pid
            .filter(|_| s.running)
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
    }

    /// Stops the child: `first` (SIGTERM) unless a signal was passed on already, then
    /// SIGKILL once the grace period is over. Returns how it ended (`None`: it was not running).
    ///
    /// # Errors
    /// When it is still running 10 s after SIGKILL.
    pub async fn stop(&self, first: rustix::process::Signal) -> Result<Option<String>, String> {
        if !self.state.borrow().running {
            return Ok(None);
        }
        // A signal already passed on (the gateway's own SIGTERM) is not sent twice: a second
        // one ends some programs at once, in the middle of their shutdown.
        if !self.stopping.swap(true, Ordering::SeqCst) {
            self.signal(first);
        }
        let mut rx = self.state.subscribe();
        if tokio::time::timeout(self.grace, rx.wait_for(|s| !s.running))
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.grace, "the application did not stop in time; SIGKILL");
            self.signal(rustix::process::Signal::KILL);
            if tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| !s.running))
                .await
                .is_err()
            {
                return Err("the application still runs 10 s after SIGKILL".into());
            }
        }
        Ok(self.state.borrow().last_exit.clone())
    }
}
