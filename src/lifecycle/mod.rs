//! The application that uses the data directory, seen from the gateway: how a restore
//! stops it before the swap and starts it after (`--exec`, or `--app-stop` and
//! `--app-start`), and the one command runner ([`runner`]) that every command of the
//! operator's goes through (those two, `--exec`, `--on-restore`): a timeout, the
//! environment without the gateway's secrets, the output in the log.
//!
//! Whether an application is live at all is [`crate::restore::live`]'s question.

pub mod runner;
pub mod supervisor;

use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use supervisor::{ChildState, Supervisor};

/// `--app-timeout-secs`.
pub const DEFAULT_APP_TIMEOUT_SECS: u64 = 60;
/// `--on-restore-timeout-secs`.
pub const DEFAULT_ON_RESTORE_TIMEOUT_SECS: u64 = 300;

/// How a restore reaches the application.
#[derive(Debug, Clone)]
pub enum Lifecycle {
    /// Not configured: a restore under a live application is refused.
    None,
    /// `--exec`: the application is the gateway's child.
    Exec(Arc<Supervisor>),
    /// `--app-stop` and `--app-start`.
    Commands {
        stop: String,
        start: String,
        timeout: Duration,
    },
}

/// What one stop or start did, as the restore's outcome shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub ok: bool,
    /// How: `exec` (signals to the child, a new child) or `command`.
    pub how: String,
    /// The command's exit code, or how the child ended (`exit code 0`).
    pub exit: Option<String>,
    pub error: Option<String>,
    /// How long it took.
    pub millis: u64,
}

/// What `GET /api/health` and the page show of the application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppView {
    /// `exec`, `commands` or `none`.
    pub lifecycle: &'static str,
    /// Under `--exec`: the child's state.
    pub child: Option<ChildState>,
}

impl Lifecycle {
    /// From `--exec`, or `--app-stop` with `--app-start`, and their timeout.
    pub fn new(
        exec: Option<&str>,
        stop_start: Option<(&str, &str)>,
        timeout: std::time::Duration,
    ) -> Self {
        match (exec, stop_start) {
            (Some(cmd), _) => Self::Exec(Arc::new(Supervisor::new(cmd.to_string(), timeout))),
            (None, Some((stop, start))) => Self::Commands {
                stop: stop.to_string(),
                start: start.to_string(),
                timeout,
            },
            _ => Self::None,
        }
    }

    pub fn is_configured(&self) -> bool {
        !matches!(self, Self::None)
    }

    pub fn view(&self) -> AppView {
        match self {
            Self::None => AppView {
                lifecycle: "none",
                child: None,
            },
            Self::Exec(s) => AppView {
                lifecycle: "exec",
                child: Some(s.state()),
            },
            Self::Commands { .. } => AppView {
                lifecycle: "commands",
                child: None,
            },
        }
    }

    /// Stops the application (`None`: nothing configured). `--app-stop` gets the data
    /// directory in `GATEWAY_DATA_DIR`.
    pub async fn stop(
        &self,
        env: &[(std::ffi::OsString, std::ffi::OsString)],
        data_dir: &std::path::Path,
    ) -> Option<Step> {
        let started = Instant::now();
        match self {
            Self::None => None,
            Self::Exec(s) => Some(match s.stop(rustix::process::Signal::TERM).await {
                Ok(exit) => exec_step(started, exit, None),
                Err(e) => exec_step(started, None, Some(e)),
            }),
            Self::Commands { stop, timeout, .. } => {
                Some(operator_command("app-stop", stop, env, data_dir, *timeout).await)
            }
        }
    }

    /// Starts the application (`None`: nothing configured). `--app-start` gets the data
    /// directory in `GATEWAY_DATA_DIR`.
    pub async fn start(
        &self,
        env: &[(std::ffi::OsString, std::ffi::OsString)],
        data_dir: &std::path::Path,
    ) -> Option<Step> {
        let started = Instant::now();
        match self {
            Self::None => None,
            Self::Exec(s) => Some(match s.start(env) {
                Ok(()) => exec_step(started, None, None),
                Err(e) => exec_step(started, None, Some(format!("cannot start it: {e}"))),
            }),
            Self::Commands { start, timeout, .. } => {
                Some(operator_command("app-start", start, env, data_dir, *timeout).await)
            }
        }
    }
}

/// `--app-stop` or `--app-start`, with the data directory in `GATEWAY_DATA_DIR`.
async fn operator_command(
    name: &'static str,
    cmd: &str,
    env: &[(std::ffi::OsString, std::ffi::OsString)],
    data_dir: &std::path::Path,
    timeout: std::time::Duration,
) -> Step {
    let data_dir = [("GATEWAY_DATA_DIR", data_dir.as_os_str())];
    command_step(runner::run(name, cmd, env, &data_dir, timeout).await)
}

fn exec_step(started: Instant, exit: Option<String>, error: Option<String>) -> Step {
    Step {
        ok: error.is_none(),
        how: "exec".into(),
        exit,
        error,
        millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

fn command_step(ran: runner::Ran) -> Step {
    Step {
        ok: ran.ok(),
        how: "command".into(),
        exit: ran.exit_code.map(|c| format!("exit code {c}")),
        error: ran.error,
        millis: (ran.seconds * 1000.0) as u64,
    }
}
