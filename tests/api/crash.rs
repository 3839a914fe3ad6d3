//! Crash safety: the real binary is killed with SIGKILL at several points of a restore
//! (during extraction, after the first and after the last item moved out, after the swap),
//! restarted, and the data directory must be wholly the old or wholly the new tree.

use crate::helpers::*;
use crate::tree::{Node, snapshot};
use backup_gateway::restore::crash::CrashPoint;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const EXCLUDED: &[&str] = &["backups", ".backup-gateway"];

struct Gateway {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Gateway {
    async fn start(data_dir: &Path, pause_at: Option<CrashPoint>) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backup-gateway"));
        cmd.args(["serve", "--http", "127.0.0.1:0", "--dir"])
            .arg(data_dir)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("GATEWAY_S3_BUCKET")
            .env_remove("GATEWAY_TEST_PAUSE_AT")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(p) = pause_at {
            cmd.env("GATEWAY_TEST_PAUSE_AT", p.name());
        }
        let mut child = cmd.spawn().expect("start the gateway binary");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.split("address=").nth(1) {
                    return rest.split_whitespace().next().unwrap().to_string();
                }
            }
            panic!("the gateway exited before listening");
        })
        .await
        .expect("the gateway listens within 30 s");
        // Keep draining the output so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
        }
    }

    async fn token(&self) -> String {
        login(&self.client, &self.base).await
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        let token = self.token().await;
        self.client
            .post(format!("{}{path}", self.base))
            .header("Authorization", token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn restore_status(&self) -> Value {
        let token = self.token().await;
        self.client
            .get(format!("{}/api/gateway/restore", self.base))
            .header("Authorization", token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL");
    }
}

fn tree_a(root: &Path) {
    write_file(root, "data.db", &pseudo_random(300_000, 11));
    write_file(root, "auxiliary.db", &pseudo_random(50_000, 12));
    for i in 0..20 {
        write_file(
            root,
            &format!("storage/col/{i:02}.bin"),
            &pseudo_random(20_000, i),
        );
    }
    write_file(root, "storage/ünï/ok.txt", b"unicode");
    std::fs::create_dir_all(root.join("empty")).unwrap();
}

fn tree_b(root: &Path) {
    write_file(root, "data.db", b"newer database");
    std::fs::remove_dir_all(root.join("storage/col")).unwrap();
    write_file(root, "logs/new.log", b"created after the backup");
}

fn scratch_is_clean(data_dir: &Path) -> bool {
    let root = data_dir.join(".backup-gateway/restore");
    std::fs::read_dir(root)
        .map(|d| d.count() == 0)
        .unwrap_or(true)
}

async fn prepare() -> (
    tempfile::TempDir,
    PathBuf,
    BTreeMap<String, Node>,
    BTreeMap<String, Node>,
) {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("pb_data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_backup-gateway"))
        .args(["superuser", "upsert", EMAIL, PASSWORD, "--dir"])
        .arg(&data_dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    tree_a(&data_dir);
    let a = snapshot(&data_dir, EXCLUDED);
    let gw = Gateway::start(&data_dir, None).await;
    let res = gw
        .post("/api/backups", serde_json::json!({"name": "a.zip"}))
        .await;
    assert_eq!(res.status(), 204);
    gw.kill().await;
    tree_b(&data_dir);
    let b = snapshot(&data_dir, EXCLUDED);
    assert_ne!(a, b);
    (tmp, data_dir, a, b)
}

/// Whether a restore killed at `point` must be complete after the restart (exhaustive: a
/// new crash point needs its expectation here, and its test below).
fn completes(point: CrashPoint) -> bool {
    match point {
        CrashPoint::Extract => false,
        CrashPoint::SwapFirstMovedOut
        | CrashPoint::SwapMovedOut
        | CrashPoint::AfterSwap
        | CrashPoint::Cleanup => true,
    }
}

/// Kills the gateway at `point` of a restore from tree B to tree A, restarts it, and
/// checks the outcome ([`completes`]).
async fn crash_at(point: CrashPoint) {
    let new = completes(point);
    let (_tmp, data_dir, a, b) = prepare().await;
    let gw = Gateway::start(&data_dir, Some(point)).await;
    let res = gw.post("/api/backups/a.zip/restore", Value::Null).await;
    assert_eq!(res.status(), 204);
    let marker = backup_gateway::state_dir::paused_at(&data_dir, point.name());
    wait_until(60, || {
        let m = marker.clone();
        async move { m.exists() }
    })
    .await;
    gw.kill().await;
    std::fs::remove_file(&marker).unwrap();
    if point == CrashPoint::Extract {
        assert!(
            snapshot(&data_dir, EXCLUDED) == b,
            "killed during extraction: old data intact"
        );
    }

    let gw = Gateway::start(&data_dir, None).await;
    let after = snapshot(&data_dir, EXCLUDED);
    let status = gw.restore_status().await;
    if new {
        assert!(after == a, "{point:?}: the restore was finished at restart");
        assert_eq!(status["status"], "ok", "{point:?}: {status}");
    } else {
        assert!(after == b, "{point:?}: the old data was kept");
        assert_eq!(status["status"], "failed", "{point:?}: {status}");
    }
    assert!(
        scratch_is_clean(&data_dir),
        "{point:?}: scratch space cleaned"
    );
    // The gateway works normally afterwards: a new restore completes.
    let res = gw.post("/api/backups/a.zip/restore", Value::Null).await;
    assert_eq!(res.status(), 204);
    wait_until(60, || async { gw.restore_status().await["status"] == "ok" }).await;
    assert!(snapshot(&data_dir, EXCLUDED) == a);
    gw.kill().await;
}

#[tokio::test]
async fn killed_during_extraction_keeps_the_old_data() {
    crash_at(CrashPoint::Extract).await;
}

#[tokio::test]
async fn killed_after_the_first_item_moved_out_finishes_the_restore_at_restart() {
    crash_at(CrashPoint::SwapFirstMovedOut).await;
}

#[tokio::test]
async fn killed_between_the_two_moves_finishes_the_restore_at_restart() {
    crash_at(CrashPoint::SwapMovedOut).await;
}

#[tokio::test]
async fn killed_after_the_swap_keeps_the_new_data_and_cleans_up() {
    crash_at(CrashPoint::AfterSwap).await;
}

#[tokio::test]
async fn killed_while_deleting_the_previous_data_cleans_up_at_restart() {
    crash_at(CrashPoint::Cleanup).await;
}

#[test]
fn every_crash_point_has_a_test_above() {
    // The five tests above, one per point; this fails when a point is added to the list.
    assert_eq!(CrashPoint::ALL.len(), 5);
    assert_eq!(CrashPoint::ALL.iter().filter(|p| completes(**p)).count(), 4);
}
