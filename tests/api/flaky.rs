//! A flaky store: a share of requests throttled (`503 SlowDown`) or losing their connection
//! (before the store sees them, or mid-body for reads). At 8% and 3% every create, upload,
//! download and restore succeeds (retries and resumed reads); at 30% and 5% an operation may
//! fail, but only cleanly: nothing partial listed, no pending multipart upload, the lock
//! released, and a download either whole or an error the client sees.

use crate::helpers::*;

/// A data directory worth a multipart create (two 5 MiB parts) and a few small files.
fn fill(app: &TestApp) -> Vec<(String, Vec<u8>)> {
    let files: Vec<(String, Vec<u8>)> = vec![
        ("big.bin".into(), pseudo_random(7 << 20, 11)),
        ("notes/a.txt".into(), b"alpha".to_vec()),
        ("notes/b.txt".into(), pseudo_random(300_000, 12)),
    ];
    for (rel, data) in &files {
        write_file(&app.data_dir, rel, data);
    }
    files
}

#[tokio::test]
async fn at_eight_percent_throttled_and_three_percent_dropped_everything_succeeds() {
    let (app, s3) = spawn_app_with_faults().await;
    let files = fill(&app);
    let zip = zip_of(&[("up.bin", &pseudo_random(6 << 20, 13))]).await;
    s3.slow_down_per_mille(80);
    s3.drop_per_mille(30);

    for name in ["f1.zip", "f2.zip", "f3.zip"] {
        assert_eq!(app.create(Some(name)).await.status(), 204, "{name}");
    }
    assert_eq!(app.upload("up.zip", zip.clone()).await.status(), 204);
    let mut downloads = Vec::new();
    for key in ["f1.zip", "f2.zip", "f3.zip", "up.zip"] {
        let res = app.download(key).await;
        assert_eq!(res.status(), 200, "{key}");
        downloads.push((key, res.bytes().await.expect("a whole body").to_vec()));
    }
    assert_eq!(app.restore("f2.zip").await.status(), 204);
    assert_eq!(app.wait_restore_done().await["status"], "ok");
    assert_eq!(app.keys().await.len(), 4);
    let injected = s3.shared_faults();

    // Without faults: every download was byte-exact, the restore put the data back.
    s3.slow_down_per_mille(0);
    s3.drop_per_mille(0);
    assert!(injected >= 3, "the store injected {injected} faults");
    for (key, bytes) in downloads {
        assert_eq!(bytes, app.download_bytes(key).await, "{key}");
    }
    assert_eq!(app.download_bytes("up.zip").await, zip);
    for (rel, data) in files {
        assert_eq!(
            std::fs::read(app.data_dir.join(&rel)).unwrap(),
            data,
            "{rel}"
        );
    }
    assert_eq!(s3.pending_uploads(), 0);
}

#[tokio::test]
async fn at_thirty_percent_throttled_and_five_percent_dropped_failures_are_clean() {
    let (app, s3) = spawn_app_with_faults().await;
    let files = fill(&app);
    assert_eq!(app.create(Some("good.zip")).await.status(), 204);
    let good = app.download_bytes("good.zip").await;
    s3.slow_down_per_mille(300);
    s3.drop_per_mille(50);

    let mut created = vec!["good.zip".to_string()];
    for name in ["c1.zip", "c2.zip", "c3.zip"] {
        let status = app.create(Some(name)).await.status().as_u16();
        assert!(status == 204 || status == 400, "{name}: {status}");
        if status == 204 {
            created.push(name.to_string());
        }
    }
    // Every download is the whole archive or an error the client sees.
    let (mut whole, mut failed) = (0, 0);
    for _ in 0..4 {
        let res = app.download("good.zip").await;
        match res.status().as_u16() {
            200 => match res.bytes().await {
                Ok(bytes) => {
                    assert_eq!(bytes.as_ref(), good.as_slice(), "a 200 body is whole");
                    whole += 1;
                }
                Err(_) => failed += 1,
            },
            _ => failed += 1,
        }
    }
    println!("downloads: {whole} whole, {failed} failed; creates stored: {created:?}");
    wait_until(30, || async { !app.state.jobs.is_busy() }).await;
    s3.slow_down_per_mille(0);
    s3.drop_per_mille(0);
    // Only whole backups are listed, and each one restores.
    created.sort();
    assert_eq!(app.keys().await, created);
    assert_eq!(s3.pending_uploads(), 0);
    for key in &created {
        assert_eq!(app.restore(key).await.status(), 204, "{key}");
        assert_eq!(app.wait_restore_done().await["status"], "ok", "{key}");
    }
    for (rel, data) in files {
        assert_eq!(
            std::fs::read(app.data_dir.join(&rel)).unwrap(),
            data,
            "{rel}"
        );
    }
}
