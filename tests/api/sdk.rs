//! The official PocketBase JS SDK drives the gateway (`tests/js/sdk.mjs`), on both backends.

use crate::helpers::*;
use std::path::Path;

async fn run_sdk_script(backend: Backend) {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules/pocketbase").exists(),
        "the JS SDK is not installed: run `npm ci --prefix tests/js` (see README)"
    );
    let app = spawn_app_on(backend).await;
    let out = tokio::process::Command::new("node")
        .arg(js.join("sdk.mjs"))
        .arg(&app.base)
        .arg(EMAIL)
        .arg(PASSWORD)
        .output()
        .await
        .expect("node runs");
    assert!(
        out.status.success(),
        "sdk.mjs failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_official_js_sdk_works_against_the_s3_backend() {
    run_sdk_script(Backend::S3).await;
}

#[tokio::test]
async fn the_official_js_sdk_works_against_the_local_backend() {
    run_sdk_script(Backend::Local).await;
}
