//! The backups page (`/_/`): its files and headers, and the page driven in headless
//! Chromium by `tests/js/ui.mjs` through every action, with a screenshot of each step in
//! `target/tmp/ui-screenshots/` for a person to look at.

use crate::helpers::*;
use crate::rawzip::{RawEntry, raw_zip};
use crate::s3_server;
use std::path::Path;

#[tokio::test]
async fn the_page_and_its_files_are_served_with_a_strict_policy_and_revalidated() {
    let app = spawn_local_app().await;
    for (path, kind) in [
        ("/_/", "text/html; charset=utf-8"),
        ("/", "text/html; charset=utf-8"),
        ("/_/app.js", "text/javascript; charset=utf-8"),
        ("/_/app.css", "text/css; charset=utf-8"),
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers().clone();
        assert_eq!(h["content-type"], kind, "{path}");
        assert_eq!(h["cache-control"], "no-cache", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        for rule in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(rule), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        // Revalidation: the same ETag gets 304 and no body.
        let etag = h["etag"].to_str().unwrap().to_string();
        let again = app
            .client
            .get(app.url(path))
            .header("If-None-Match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.bytes().await.unwrap().is_empty());
    }
    let page = app
        .client
        .get(app.url("/_/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"<script src="/_/app.js" defer></script>"#));
}

#[tokio::test]
async fn a_person_manages_backups_and_settings_in_a_real_browser() {
    let app = spawn_local_app().await;
    write_file(
        &app.data_dir,
        "data.db",
        b"not really a database, but a file",
    );
    write_file(&app.data_dir, "storage/a/b.txt", &pseudo_random(200_000, 3));
    let s3_dir = tempfile::tempdir().unwrap();
    let (server, bucket) = crate::settings::s3_bucket(s3_dir.path()).await;
    let files = tempfile::tempdir().unwrap();
    let upload = files.path().join("uploaded.zip");
    std::fs::write(
        &upload,
        zip_of(&[("data.db", b"uploaded"), ("x/y.txt", b"y")]).await,
    )
    .unwrap();
    let bad = files.path().join("bad.zip");
    std::fs::write(&bad, raw_zip(&[RawEntry::file("../evil.txt", b"x")])).unwrap();
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let tree_before = crate::tree::snapshot(&app.data_dir, &["backups", ".backup-gateway"]);

    run_node_script_with(
        "ui.mjs",
        &app,
        &[
            shots.to_str().unwrap(),
            upload.to_str().unwrap(),
            bad.to_str().unwrap(),
            &server.endpoint(),
            &bucket,
            s3_server::ACCESS_KEY,
            s3_server::SECRET_KEY,
        ],
    )
    .await;

    // The browser's download is the stored archive, byte for byte.
    let downloaded = std::fs::read(shots.join("downloads/ui_first.zip")).unwrap();
    let stored = std::fs::read(app.data_dir.join("backups/ui_first.zip")).unwrap();
    assert!(downloaded == stored, "the download is the backup");
    // The restore put back the tree the backup was made of.
    assert!(crate::tree::snapshot(&app.data_dir, &["backups", ".backup-gateway"]) == tree_before);
    // The settings the page saved are the API's.
    let settings = app.get_json("/api/settings").await;
    assert_eq!(settings["backups"]["cron"], "0 3 * * *");
    assert_eq!(settings["backups"]["s3"]["enabled"], true);
    assert_eq!(settings["backups"]["s3"]["bucket"], bucket.as_str());
    // Every step left its screenshot.
    let names: Vec<String> = std::fs::read_dir(&shots)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for step in [
        "login",
        "wrong-password",
        "expired-session",
        "not-a-superuser",
        "logged-in",
        "created",
        "uploaded",
        "deleted",
        "restored",
        "restore-refused",
        "cron-invalid",
        "cron-saved",
        "s3-connection-ok",
        "phone",
    ] {
        assert!(
            names.iter().any(|n| n.ends_with(&format!("-{step}.png"))),
            "no screenshot of {step}: {names:?}"
        );
    }
}
