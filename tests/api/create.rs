//! Streaming create: archive fidelity, large data in several parts, failures that must leave
//! nothing behind, the busy lock.

use crate::helpers::*;
use crate::tree::{assert_zip_matches_tree, read_zip, snapshot};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn fill_varied_tree(root: &std::path::Path) {
    write_file(root, "data.db", &pseudo_random(300_000, 7));
    write_file(
        root,
        "logs/app.log",
        "line of text\n".repeat(5000).as_bytes(),
    );
    // Several 1 MiB chunks, compressed in parallel and joined into one Deflate stream.
    let big_log: String = (0..120_000)
        .map(|i| format!("{i} GET /api/items/{} 200\n", i * 7919 % 10007))
        .collect();
    write_file(root, "logs/big.log", big_log.as_bytes());
    write_file(
        root,
        "storage/ünïcödé/фото 1.jpg",
        &pseudo_random(70_000, 9),
    );
    write_file(root, "storage/deep/a/b/c/d/e.txt", b"deep");
    write_file(root, "empty-file", b"");
    std::fs::create_dir_all(root.join("empty/dir")).unwrap();
    write_file(root, "script.sh", b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(
        root.join("script.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    write_file(root, "secret.txt", b"private");
    std::fs::set_permissions(
        root.join("secret.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

#[tokio::test]
async fn archive_holds_the_tree_byte_for_byte_and_excludes_gateway_state_and_backups() {
    let app = spawn_local_app().await;
    fill_varied_tree(&app.data_dir);
    assert_eq!(app.create(Some("tree.zip")).await.status(), 204);
    let bytes = app.download_bytes("tree.zip").await;
    let tree = snapshot(&app.data_dir, &["backups", ".backup-gateway"]);
    assert!(tree.contains_key("empty/dir"));
    let entries = read_zip(&bytes).await;
    assert_zip_matches_tree(&entries, &tree);
    assert!(!entries.keys().any(|k| k.starts_with("backups")));
    assert!(!entries.keys().any(|k| k.starts_with(".backup-gateway")));
}

#[tokio::test]
async fn archives_open_with_python_zipfile_and_unzip() {
    let app = spawn_local_app().await;
    fill_varied_tree(&app.data_dir);
    assert_eq!(app.create(Some("t.zip")).await.status(), 204);
    check_with_external_tools(&app.download_bytes("t.zip").await);
}

#[tokio::test]
async fn data_over_64_mib_streams_in_several_parts_and_downloads_byte_identical() {
    let app = spawn_app().await;
    // 72 MiB that barely compresses, in a few large files and many 1 MiB ones.
    write_file(
        &app.data_dir,
        "media/big-1.mp4",
        &pseudo_random(20 << 20, 1),
    );
    write_file(
        &app.data_dir,
        "media/big-2.mp4",
        &pseudo_random(20 << 20, 2),
    );
    for i in 0..32 {
        write_file(
            &app.data_dir,
            &format!("media/small/{i:03}.jpg"),
            &pseudo_random(1 << 20, 100 + i),
        );
    }
    write_file(&app.data_dir, "data.db", &b"row,".repeat(1 << 18));
    assert_eq!(app.create(Some("big.zip")).await.status(), 204);

    // A multipart object's ETag ends in its part count (AWS, MinIO and s3s-fs alike).
    let head = app
        .s3_client
        .as_ref()
        .expect("an S3 app")
        .head_object()
        .bucket(&app.bucket)
        .key("backups/big.zip")
        .send()
        .await
        .unwrap();
    let etag = head
        .e_tag()
        .unwrap_or_default()
        .trim_matches('"')
        .to_string();
    let parts: u32 = etag
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("not a multipart ETag: {etag}"));
    assert!(parts >= 3, "uploaded in {parts} parts");
    let bytes = app.download_bytes("big.zip").await;
    assert!(bytes.len() > 64 << 20);
    let tree = snapshot(&app.data_dir, &["backups", ".backup-gateway"]);
    assert_zip_matches_tree(&read_zip(&bytes).await, &tree);
    assert_eq!(app.pending_uploads().await, 0);
}

/// Writes `mib` files of 1 MiB that do not compress (tests use 5 MiB parts: 16 MiB make
/// four parts).
fn fill_media(root: &std::path::Path, mib: u64) {
    for i in 0..mib {
        write_file(
            root,
            &format!("media/{i:03}.jpg"),
            &pseudo_random(1 << 20, 500 + i),
        );
    }
}

#[tokio::test]
async fn part_bodies_are_signed_over_plain_http_by_default() {
    let (app, s3) = spawn_app_with_faults().await;
    fill_media(&app.data_dir, 16);
    assert_eq!(app.create(Some("signed.zip")).await.status(), 204);
    assert!(s3.signed_puts() >= 4);
    assert_eq!(s3.unsigned_puts(), 0);
}

#[tokio::test]
async fn unsigned_part_bodies_as_over_https_store_a_whole_backup() {
    let app = spawn_app_with(Options {
        payload_signing: backup_gateway::config::PayloadSigning::Never,
        in_process_s3: true,
        ..Options::default()
    })
    .await;
    let s3 = app.s3.clone().expect("in_process_s3");
    fill_media(&app.data_dir, 16);
    write_file(&app.data_dir, "data.db", &b"row,".repeat(1 << 18));
    assert_eq!(app.create(Some("unsigned.zip")).await.status(), 204);
    assert!(s3.unsigned_puts() >= 4);
    // The bucket's creation is the only signed PUT.
    assert!(s3.signed_puts() <= 1);
    let bytes = app.download_bytes("unsigned.zip").await;
    let tree = snapshot(&app.data_dir, &["backups", ".backup-gateway"]);
    assert_zip_matches_tree(&read_zip(&bytes).await, &tree);
    assert_eq!(app.pending_uploads().await, 0);
}

#[tokio::test]
async fn s3_failing_mid_upload_leaves_nothing_and_releases_the_lock() {
    let (app, s3) = spawn_app_with_faults().await;
    write_file(&app.data_dir, "a.bin", &pseudo_random(16 << 20, 3));
    s3.fail_parts_after(1);
    let res = app.create(Some("broken.zip")).await;
    let body = assert_error(res, 400, "Failed to create backup.").await;
    assert!(!body.to_string().contains("InternalError"), "{body}");
    assert!(app.keys().await.is_empty());
    assert_eq!(app.pending_uploads().await, 0);

    s3.fail_parts_after(-1);
    assert_eq!(app.create(Some("broken.zip")).await.status(), 204);
    assert_eq!(app.keys().await, vec!["broken.zip"]);
}

#[tokio::test]
async fn s3_going_down_mid_upload_fails_cleanly_and_the_next_create_succeeds() {
    let (app, s3) = spawn_app_with_faults().await;
    write_file(&app.data_dir, "a.bin", &pseudo_random(24 << 20, 4));
    let watcher = {
        let s3 = s3.clone();
        tokio::spawn(async move {
            while s3.parts_seen() < 1 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            s3.set_down(true);
        })
    };
    let res = app.create(Some("down.zip")).await;
    assert_error(res, 400, "Failed to create backup.").await;
    watcher.await.unwrap();
    s3.set_down(false);
    assert!(app.keys().await.is_empty());
    // The abort could not reach the store; the upload is recorded and aborted at the next
    // start of the gateway.
    assert_eq!(app.pending_uploads().await, 1);
    let restarted = backup_gateway::AppState::new((*app.state.config).clone())
        .await
        .unwrap();
    drop(restarted);
    assert_eq!(app.pending_uploads().await, 0);
    assert!(!app.state.jobs.is_busy());
    assert_eq!(app.create(Some("after.zip")).await.status(), 204);
    assert_eq!(app.keys().await, vec!["after.zip"]);
}

/// Runs the gateway binary as a user that permissions apply to (`nobody` when the tests
/// run as root), so that the directory below is unreadable to it whoever runs the tests.
#[tokio::test]
async fn an_unreadable_directory_fails_the_create_and_stores_nothing() {
    use crate::process::{GatewayProcess, Launch, add_superuser, give_to_nobody, running_as_root};
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("pb_data");
    std::fs::create_dir_all(&data_dir).unwrap();
    add_superuser(&data_dir);
    write_file(&data_dir, "ok.txt", b"fine");
    write_file(&data_dir, "locked/inner.txt", b"x");
    if running_as_root() {
        give_to_nobody(tmp.path());
    }
    std::fs::set_permissions(
        data_dir.join("locked"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let gw = GatewayProcess::start(
        &data_dir,
        Launch {
            unprivileged: true,
            ..Launch::default()
        },
    )
    .await;
    let res = gw
        .post("/api/backups", serde_json::json!({"name": "u.zip"}))
        .await;
    assert_error(res, 400, "Failed to create backup.").await;
    let listed = gw.get_json("/api/backups").await;
    assert_eq!(listed, serde_json::json!([]), "nothing stored");
    // No temporary file left beside the backups either.
    let left: Vec<_> = std::fs::read_dir(data_dir.join("backups"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // The lock is free: once the directory is readable, the create succeeds.
    std::fs::set_permissions(
        data_dir.join("locked"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let res = gw
        .post("/api/backups", serde_json::json!({"name": "u.zip"}))
        .await;
    assert_eq!(res.status(), 204);
    gw.kill().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_create_leaves_nothing_and_frees_the_lock() {
    let (app, s3) = spawn_app_with_faults().await;
    write_file(&app.data_dir, "a.bin", &pseudo_random(40 << 20, 5));
    let client = reqwest::Client::new();
    let req = client
        .post(app.url("/api/backups"))
        .header("Authorization", app.superuser_token())
        .json(&serde_json::json!({"name": "gone.zip"}))
        .send();
    let handle = tokio::spawn(req);
    wait_until(30, || async { s3.parts_seen() >= 1 }).await;
    handle.abort();
    drop(client);
    wait_until(30, || async { !app.state.jobs.is_busy() }).await;
    wait_until(30, || async { app.pending_uploads().await == 0 }).await;
    assert!(app.keys().await.is_empty());
}

#[tokio::test]
async fn a_second_create_while_one_runs_is_busy_and_the_running_backup_cannot_be_deleted() {
    let app = spawn_app().await;
    write_file(&app.data_dir, "a.bin", &pseudo_random(30 << 20, 6));
    let first = {
        let client = app.client.clone();
        let url = app.url("/api/backups");
        let token = app.superuser_token().to_string();
        tokio::spawn(async move {
            client
                .post(url)
                .header("Authorization", token)
                .json(&serde_json::json!({"name": "slow.zip"}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    wait_until(30, || async { app.state.jobs.is_busy() }).await;
    assert_error(
        app.create(Some("other.zip")).await,
        400,
        "Try again later - another backup/restore process has already been started.",
    )
    .await;
    assert_error(
        app.delete("slow.zip").await,
        400,
        "The backup is currently being used and cannot be deleted.",
    )
    .await;
    assert_eq!(first.await.unwrap(), 204);
    assert_eq!(app.keys().await, vec!["slow.zip"]);
}

#[tokio::test]
async fn more_than_65535_entries_use_zip64_and_read_back() {
    let app = spawn_local_app().await;
    for d in 0..70 {
        let dir = app.data_dir.join(format!("d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..1000 {
            std::fs::write(dir.join(format!("{f:04}")), format!("{d}-{f}")).unwrap();
        }
    }
    assert_eq!(app.create(Some("many.zip")).await.status(), 204);
    let bytes = app.download_bytes("many.zip").await;
    let entries = read_zip(&bytes).await;
    assert_eq!(entries.len(), 70 * 1000 + 70);
    assert_eq!(entries["d69/0999"].2, b"69-999");
    check_with_external_tools(&bytes);
}

/// Two gateways on one bucket and prefix (a second instance for availability) create the
/// same key at once: both see it absent, both upload, and `If-None-Match: *` on the
/// completion lets exactly one land. The other is refused like a taken name, its upload is
/// aborted, and the stored archive is whole: the winner's.
#[tokio::test]
async fn two_gateways_on_one_bucket_never_overwrite_each_others_backup() {
    let (first, s3) = spawn_app_with_faults().await;
    let second = spawn_app_with(Options {
        share_bucket_of: Some((s3.clone(), first.bucket.clone())),
        ..Options::default()
    })
    .await;
    for (app, seed) in [(&first, 1), (&second, 2)] {
        write_file(
            &app.data_dir,
            "media/big.bin",
            &pseudo_random(8 << 20, 300 + seed),
        );
    }
    // Both completions are held until both have arrived (so both creates saw the key
    // absent), then let through one at a time: s3s-fs does not check If-None-Match
    // atomically with a completion running at the same moment (S3 and MinIO do).
    s3.hold_completes(true);
    let create = |app: &TestApp| {
        let req = app
            .request(reqwest::Method::POST, "/api/backups")
            .json(&serde_json::json!({"name": "same.zip"}));
        tokio::spawn(async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        })
    };
    let (a, b) = (create(&first), create(&second));
    wait_until(60, || async { s3.completes_seen() == 2 }).await;
    s3.release_completes(1);
    wait_until(60, || async {
        first
            .state
            .store()
            .stat("same.zip")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    s3.release_completes(2);
    let ((sa, ta), (sb, tb)) = (a.await.unwrap(), b.await.unwrap());
    let (winner, loser_text) = match (sa, sb) {
        (204, 400) => (&first, tb),
        (400, 204) => (&second, ta),
        other => panic!("one create must win and one be refused: {other:?}"),
    };
    // The loser got PocketBase's "name exists" from the store's 412.
    let body: serde_json::Value = serde_json::from_str(&loser_text).unwrap();
    assert_eq!(body["message"], backup_gateway::error::MSG_VALIDATION);
    assert_eq!(
        body["data"]["name"]["code"],
        "validation_backup_name_exists"
    );
    let bytes = first.download_bytes("same.zip").await;
    let tree = snapshot(&winner.data_dir, &["backups", ".backup-gateway"]);
    assert_zip_matches_tree(&read_zip(&bytes).await, &tree);
    wait_until(30, || async { first.pending_uploads().await == 0 }).await;
}

/// A store that accepts connections and never answers: every call times out, the create
/// fails with PocketBase's message instead of holding the busy lock, and once the store
/// answers again the next create succeeds.
#[tokio::test]
async fn a_store_that_never_answers_cannot_hold_the_busy_lock() {
    let app = spawn_app_with(Options {
        in_process_s3: true,
        s3_read_timeout: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    let s3 = app.s3.clone().expect("in_process_s3");
    write_file(&app.data_dir, "a.txt", b"some data");
    s3.set_hang(true);
    let started = std::time::Instant::now();
    assert_error(
        app.create(Some("hung.zip")).await,
        400,
        "Failed to create backup.",
    )
    .await;
    assert!(!app.state.jobs.is_busy(), "the busy lock is released");
    assert_error(
        app.download("hung.zip").await,
        400,
        "Failed to download the backup.",
    )
    .await;
    s3.set_hang(false);
    assert_eq!(app.create(Some("after.zip")).await.status(), 204);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}
