//! The one way the gateway runs a command of the operator's (`--on-restore`, `--app-stop`,
//! `--app-start`, and the `--exec` application): `sh -c CMD` in a process group of its own,
//! stdin closed, with the gateway's environment minus its secrets ([`scrubbed_env`]), its
//! output logged line by line and marked with what it is, and (for commands) a timeout past
//! which the whole group is killed.
//!
//! Why a process group: a shell that runs the command as its child does not pass a signal
//! on; signalling the group reaches the command itself and whatever it started.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Variables never passed to a command: the store's and the superuser's credentials.
const SECRET_VARS: &[&str] = &[
    "GATEWAY_SUPERUSER_PASSWORD",
    "GATEWAY_SUPERUSER_PASSWORD_FILE",
    "GATEWAY_TEST_S3_ACCESS_KEY",
    "GATEWAY_TEST_S3_SECRET_KEY",
];

/// The gateway's environment without its secrets: every `AWS_*` variable (the S3
/// credentials chain: keys, session tokens, profiles, web identity), the variables of
/// [`SECRET_VARS`], and any variable whose value is one of `secrets` (the S3 secret and
/// access key of the settings, the first superuser's password), whatever its name. The
/// application's own variables (for example PocketBase's `--encryptionEnv` key) pass.
pub fn scrubbed_env(secrets: &[String]) -> Vec<(OsString, OsString)> {
    scrub(std::env::vars_os(), secrets)
}

/// [`scrubbed_env`] of `vars`.
fn scrub(
    vars: impl Iterator<Item = (OsString, OsString)>,
    secrets: &[String],
) -> Vec<(OsString, OsString)> {
    vars.filter(|(k, v)| {
        let name = k.to_string_lossy();
        !name.starts_with("AWS_")
            && !SECRET_VARS.contains(&name.as_ref())
            && !secrets
                .iter()
                .any(|s| !s.is_empty() && v.to_string_lossy() == s.as_str())
    })
    .collect()
}

/// A command ready to spawn: `sh -c cmd` in its own process group, with `env` (and only
/// it) plus `extra`, stdin closed, stdout and stderr piped.
pub fn command(
    cmd: &str,
    env: &[(OsString, OsString)],
    extra: &[(&str, &std::ffi::OsStr)],
) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .envs(extra.iter().map(|(k, v)| (k, v)))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Logs every line `out` produces, marked with `source` (`app`, `on-restore`, ...) and the
/// stream's name, until it closes.
pub fn log_lines(
    source: &'static str,
    stream: &'static str,
    out: impl AsyncRead + Unpin + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(out).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(source, stream, "[{source}] {line}");
        }
    })
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    /// Its exit code (`None`: it could not run, or a signal ended it).
    pub exit_code: Option<i32>,
    /// Why it did not succeed (`None`: it exited with 0).
    pub error: Option<String>,
    pub seconds: f64,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Runs `cmd` (see the module docs) for at most `timeout`; past it the command's whole
/// process group is killed. `source` marks its log lines.
pub async fn run(
    source: &'static str,
    cmd: &str,
    env: &[(OsString, OsString)],
    extra: &[(&str, &std::ffi::OsStr)],
    timeout: Duration,
) -> Ran {
    let started = Instant::now();
    let done = |exit_code: Option<i32>, error: Option<String>| {
        if let Some(e) = &error {
            tracing::error!(source, exit_code = ?exit_code, error = %e, "command failed");
        } else {
            tracing::info!(source, "command finished");
        }
        Ran {
            exit_code,
            error,
            seconds: started.elapsed().as_secs_f64(),
        }
    };
    let mut child = match command(cmd, env, extra).spawn() {
        Ok(c) => c,
        Err(e) => return done(None, Some(format!("cannot run the command: {e}"))),
    };
    let group = child.id().and_then(|p| i32::try_from(p).ok());
    let readers = [
        child.stdout.take().map(|o| log_lines(source, "stdout", o)),
        child.stderr.take().map(|o| log_lines(source, "stderr", o)),
    ];
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return done(None, Some(format!("waiting for the command failed: {e}"))),
        Err(_) => {
            if let Some(pid) = group.and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = child.wait().await;
            return done(
                None,
                Some(format!(
                    "timed out after {} s; killed",
                    timeout.as_secs_f64()
                )),
            );
        }
    };
    // What it printed is logged; a daemon it left running may keep the pipes open, so the
    // wait for the rest of its output is short.
    for r in readers.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(1), r).await;
    }
    let code = status.code();
    if status.success() {
        done(code, None)
    } else {
        done(code, Some(describe_exit(status)))
    }
}

/// `exit code N` or `killed by signal N`.
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "ended without an exit code".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_by_name_and_by_value() {
        let vars = [
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("GATEWAY_SUPERUSER_PASSWORD", "pw"),
            ("SOMETHING_ELSE", "the-settings-secret"),
            ("PB_ENCRYPTION", "kept"),
            ("PATH", "/usr/bin"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let kept: Vec<String> = scrub(vars.into_iter(), &["the-settings-secret".into()])
            .into_iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert_eq!(kept, ["PB_ENCRYPTION", "PATH"]);
    }

    #[tokio::test]
    async fn a_command_past_its_timeout_is_killed_with_its_children() {
        let ran = run(
            "test",
            "sleep 30 & sleep 30",
            &scrubbed_env(&[]),
            &[],
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(ran.exit_code, None);
        assert_eq!(ran.error.as_deref(), Some("timed out after 0.3 s; killed"));
        assert!(ran.seconds < 5.0, "{ran:?}");
    }

    #[tokio::test]
    async fn exit_codes_are_reported() {
        let ran = run("test", "exit 3", &[], &[], Duration::from_secs(10)).await;
        assert_eq!(
            (ran.exit_code, ran.error.as_deref()),
            (Some(3), Some("exit code 3"))
        );
        assert!(
            run("test", "true", &[], &[], Duration::from_secs(10))
                .await
                .ok()
        );
    }
}
