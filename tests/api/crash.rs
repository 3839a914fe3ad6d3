//! Crash safety: the real binary is killed with SIGKILL at several points of a restore
//! (during extraction, after the first and after the last item moved out, after the swap),
//! restarted, and the data directory must be wholly the old or wholly the new tree.

use crate::helpers::*;
use crate::process::{GatewayProcess as Gateway, Launch, add_superuser};
use crate::tree::{Node, snapshot};
use backup_gateway::restore::crash::CrashPoint;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const EXCLUDED: &[&str] = &["backups", ".backup-gateway"];

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
    add_superuser(&data_dir);
    tree_a(&data_dir);
    let a = snapshot(&data_dir, EXCLUDED);
    let gw = Gateway::start(&data_dir, Launch::default()).await;
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
        CrashPoint::Extract | CrashPoint::AppStopped => false,
        CrashPoint::SwapFirstMovedOut
        | CrashPoint::SwapMovedOut
        | CrashPoint::AfterSwap
        | CrashPoint::BeforeAppStart
        | CrashPoint::Cleanup => true,
    }
}

/// Kills the gateway at `point` of a restore from tree B to tree A, restarts it, and
/// checks the outcome ([`completes`]).
async fn crash_at(point: CrashPoint) {
    let new = completes(point);
    let (_tmp, data_dir, a, b) = prepare().await;
    let gw = Gateway::start(
        &data_dir,
        Launch {
            pause_at: Some(point),
            ..Launch::default()
        },
    )
    .await;
    let res = gw.post("/api/backups/a.zip/restore", Value::Null).await;
    assert_eq!(res.status(), 204);
    let marker = backup_gateway::util::state_dir::paused_at(&data_dir, point.name());
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

    let gw = Gateway::start(&data_dir, Launch::default()).await;
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
async fn killed_once_the_application_is_stopped_keeps_the_old_data() {
    crash_at(CrashPoint::AppStopped).await;
}

#[tokio::test]
async fn killed_after_the_swap_before_the_application_starts_keeps_the_new_data() {
    crash_at(CrashPoint::BeforeAppStart).await;
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
    // The seven tests above, one per point; this fails when a point is added to the list.
    assert_eq!(CrashPoint::ALL.len(), 7);
    assert_eq!(CrashPoint::ALL.iter().filter(|p| completes(**p)).count(), 5);
}
