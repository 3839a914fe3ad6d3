//! The official PocketBase JS SDK drives the gateway (`tests/js/sdk.mjs`), on both backends.

use crate::helpers::*;

async fn run_sdk_script(backend: Backend) {
    let app = spawn_app_on(backend).await;
    run_node_script("sdk.mjs", &app).await;
}

#[tokio::test]
async fn the_official_js_sdk_works_against_the_s3_backend() {
    run_sdk_script(Backend::S3).await;
}

#[tokio::test]
async fn the_official_js_sdk_works_against_the_local_backend() {
    run_sdk_script(Backend::Local).await;
}
