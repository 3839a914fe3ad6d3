//! SIGTERM (the shutdown future of `serve`) while a create runs: within the grace period
//! the create finishes and its client gets the `204`; past it the create is cancelled, its
//! multipart upload aborted before the process would exit, and nothing is left pending.

use crate::helpers::*;
use std::time::Duration;

async fn app_with_grace(grace: Duration) -> (TestApp, std::sync::Arc<crate::s3_server::S3Server>) {
    let app = spawn_app_with(Options {
        in_process_s3: true,
        config: Config {
            shutdown_grace: grace,
            ..test_config()
        },
        ..Options::default()
    })
    .await;
    let s3 = app.s3.clone().expect("in_process_s3");
    write_file(&app.data_dir, "media/big.bin", &pseudo_random(40 << 20, 77));
    (app, s3)
}

async fn server_ends(app: &TestApp) {
    let server = app.server.lock().unwrap().take().expect("the server runs");
    tokio::time::timeout(Duration::from_secs(60), server)
        .await
        .expect("the server stops within the grace period")
        .unwrap();
}

#[tokio::test]
async fn a_create_running_at_shutdown_finishes_within_the_grace_period() {
    let (app, s3) = app_with_grace(Duration::from_secs(60)).await;
    let create = start_create(&app, "at_shutdown.zip");
    wait_until(30, || async { s3.parts_seen() > 0 }).await;
    app.shut_down();
    assert_eq!(create.await.unwrap().expect("an answer"), 204);
    server_ends(&app).await;
    let keys: Vec<String> = app
        .state
        .store()
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.key)
        .collect();
    assert_eq!(keys, ["at_shutdown.zip"]);
    assert_eq!(app.pending_uploads().await, 0);
}

#[tokio::test]
async fn past_the_grace_period_a_create_is_cancelled_and_its_upload_aborted() {
    let (app, s3) = app_with_grace(Duration::ZERO).await;
    let create = start_create(&app, "cancelled.zip");
    wait_until(30, || async { s3.parts_seen() > 0 }).await;
    assert!(s3.pending_uploads() > 0, "the multipart upload has started");
    app.shut_down();
    server_ends(&app).await;
    let err = create
        .await
        .unwrap()
        .expect_err("the client sees the connection end, not an answer");
    assert!(err.is_request() || err.is_body(), "{err:?}");
    backup_gateway::storage::s3::finish_aborts(Duration::from_secs(10)).await;
    assert_eq!(s3.pending_uploads(), 0, "the upload was aborted");
    assert!(app.state.store().list().await.unwrap().is_empty());
    assert!(!app.state.jobs.is_busy(), "the busy lock is released");
}
