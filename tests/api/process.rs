//! The gateway binary as its own process (local storage), for tests that kill it, restart
//! it, or run it as a user without root's powers.

use crate::helpers::*;
use backup_gateway::restore::crash::CrashPoint;
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The uid and gid of `nobody`, which an unprivileged gateway runs as when the tests run
/// as root.
const NOBODY: u32 = 65_534;

/// How to start a [`GatewayProcess`].
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// More command line arguments (`--exec CMD`, ...).
    pub args: Vec<String>,
    /// More environment variables.
    pub env: Vec<(String, String)>,
    /// Where the restore stops for good (`GATEWAY_TEST_PAUSE_AT`).
    pub pause_at: Option<CrashPoint>,
    /// Run as a user that file permissions apply to: as `nobody` (through `setpriv`) when
    /// the tests run as root, as the tests' own user otherwise.
    pub unprivileged: bool,
    /// Start it with SIGINT ignored, as a background job of a script (or `nohup`) does.
    pub sigint_ignored: bool,
}

pub struct GatewayProcess {
    child: Child,
    pub base: String,
    pub client: reqwest::Client,
    /// Every line the gateway logged so far.
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The superuser token, logged in once (logins are rate limited).
    token: tokio::sync::OnceCell<String>,
    /// What the gateway printed on stdout before it listened.
    pub startup: Vec<String>,
}

/// True when this process runs as root (permissions do not apply to it).
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Adds the test superuser to `data_dir` with the binary's own command.
pub fn add_superuser(data_dir: &Path) {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_backup-gateway"))
        .args(["superuser", "upsert", EMAIL, PASSWORD, "--dir"])
        .arg(data_dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
}

/// Gives `root` and everything below it to `nobody`, for an unprivileged gateway.
pub fn give_to_nobody(root: &Path) {
    std::os::unix::fs::chown(root, Some(NOBODY), Some(NOBODY)).unwrap();
    if root.is_dir() && !root.is_symlink() {
        for entry in std::fs::read_dir(root).unwrap() {
            give_to_nobody(&entry.unwrap().path());
        }
    }
}

impl GatewayProcess {
    pub async fn start(data_dir: &Path, launch: Launch) -> Self {
        let bin = env!("CARGO_BIN_EXE_backup-gateway");
        let mut cmd = if launch.unprivileged && running_as_root() {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={NOBODY}"))
                .arg(format!("--regid={NOBODY}"))
                .arg("--clear-groups")
                .arg(bin);
            c
        } else if launch.sigint_ignored {
            let mut c = Command::new("sh");
            c.arg("-c").arg("trap '' INT; exec \"$0\" \"$@\"").arg(bin);
            c
        } else {
            Command::new(bin)
        };
        cmd.args(["serve", "--http", "127.0.0.1:0", "--dir"])
            .arg(data_dir)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("GATEWAY_S3_BUCKET")
            .env_remove("GATEWAY_TEST_PAUSE_AT")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(p) = launch.pause_at {
            cmd.env("GATEWAY_TEST_PAUSE_AT", p.name());
        }
        cmd.args(&launch.args).envs(launch.env.iter().cloned());
        Self::spawn(cmd).await
    }

    /// `backup-gateway serve` configured only by `env` (no flags, nothing inherited but
    /// `PATH`), as a container or a service manager runs it.
    pub async fn start_with_env(env: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backup-gateway"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        Self::spawn(cmd).await
    }

    /// Starts `cmd` and waits for its `listening` line.
    async fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("start the gateway binary");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut startup = Vec::new();
        let logged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                logged.lock().unwrap().push(line.clone());
                if let Some(rest) = line.split("address=").nth(1) {
                    return rest.split_whitespace().next().unwrap().to_string();
                }
                startup.push(line);
            }
            panic!("the gateway exited before listening");
        })
        .await
        .expect("the gateway listens within 30 s");
        // Keep draining the output so the child never blocks on a full pipe.
        let keep = logged.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            lines: logged,
            token: tokio::sync::OnceCell::new(),
            startup,
        }
    }

    /// The process id (for `/proc/PID/status`).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the gateway is running")
    }

    /// An authorised request (the superuser token of the first call).
    pub async fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let token = self
            .token
            .get_or_init(|| login(&self.client, &self.base))
            .await
            .clone();
        self.client
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", token)
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, path)
            .await
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        json_200(self.request(reqwest::Method::GET, path).await, path).await
    }

    pub async fn restore_status(&self) -> Value {
        self.get_json("/api/gateway/restore").await
    }

    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL");
    }

    /// Sends SIGTERM and waits (at most `secs`) for the gateway to exit; its status.
    pub async fn terminate(self, secs: u64) -> std::process::ExitStatus {
        self.send(rustix::process::Signal::TERM, secs).await
    }

    /// Sends `signal` and waits (at most `secs`) for the gateway to exit; its status.
    pub async fn send(
        mut self,
        signal: rustix::process::Signal,
        secs: u64,
    ) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_raw(self.child.id().unwrap() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
        tokio::time::timeout(Duration::from_secs(secs), self.child.wait())
            .await
            .expect("the gateway exits after SIGTERM")
            .unwrap()
    }

    /// Waits (at most `secs`) for the gateway to exit on its own; its status.
    pub async fn exited(mut self, secs: u64) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(secs), self.child.wait())
            .await
            .expect("the gateway exits")
            .unwrap()
    }

    /// The logged lines that contain `needle`.
    pub fn logged(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}

/// The binary the tests run is the one users build (`cargo run --release`, `cargo install
/// --path .`, the image): jemalloc, a default feature, is its allocator.
#[test]
fn the_binary_is_built_with_jemalloc_as_users_build_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backup-gateway"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("backup-gateway ") && text.contains("(allocator: jemalloc)"),
        "{text}"
    );
}
