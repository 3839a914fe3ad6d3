//! Restore: round trips, hostile archives (each leaves the data directory byte-identical),
//! store failures, the busy lock, PocketBase-made archives.

use crate::helpers::*;
use crate::on_both_backends;
use crate::rawzip::{RawEntry, raw_zip};
use crate::tree::snapshot;
use std::os::unix::fs::PermissionsExt;

const EXCLUDED: &[&str] = &["backups", ".backup-gateway"];
const MSG_INVALID: &str = "Missing or invalid backup file.";

fn fill_tree(root: &std::path::Path) {
    write_file(root, "data.db", &pseudo_random(200_000, 1));
    write_file(root, "logs/app.log", "log line\n".repeat(3000).as_bytes());
    write_file(root, "storage/ünï cödé/фото.jpg", &pseudo_random(50_000, 2));
    write_file(root, "storage/a/b/c/d.txt", b"deep");
    write_file(root, "zero", b"");
    std::fs::create_dir_all(root.join("empty/nested")).unwrap();
    write_file(root, "run.sh", b"#!/bin/sh\n");
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::set_permissions(root.join("logs"), std::fs::Permissions::from_mode(0o700)).unwrap();
}

fn mutate_tree(root: &std::path::Path) {
    write_file(root, "data.db", b"changed");
    std::fs::remove_dir_all(root.join("storage/a")).unwrap();
    write_file(root, "new/file.txt", b"added after the backup");
    std::fs::remove_file(root.join("zero")).unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o644)).unwrap();
}

on_both_backends!(
    restore_brings_back_the_exact_tree,
    hostile_archives_are_refused_and_leave_the_data_untouched,
    a_crc_mismatch_fails_in_the_background_and_leaves_the_data_untouched,
    a_pocketbase_made_archive_restores,
);

async fn restore_brings_back_the_exact_tree(backend: Backend) {
    let app = spawn_app_on(backend).await;
    fill_tree(&app.data_dir);
    let before = snapshot(&app.data_dir, EXCLUDED);
    assert_eq!(app.create(Some("snap.zip")).await.status(), 204);
    mutate_tree(&app.data_dir);
    assert_ne!(snapshot(&app.data_dir, EXCLUDED), before);

    assert_eq!(app.restore("snap.zip").await.status(), 204);
    let status = app.wait_restore_done().await;
    assert_eq!(status["status"], "ok", "{status}");
    assert_eq!(status["key"], "snap.zip");
    assert_eq!(snapshot(&app.data_dir, EXCLUDED), before);
    // The backups and the gateway's state survive, the scratch space is clean.
    assert_eq!(app.keys().await, vec!["snap.zip"]);
    assert!(app.list().await.status() == 200, "still logged in");
    // The data from before the restore is deleted after success is reported.
    let scratch = app.data_dir.join(".backup-gateway/restore");
    wait_until(30, || {
        let n = std::fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(0);
        async move { n == 0 }
    })
    .await;
}

/// (what, archive, a word the refusal must give as the reason)
fn hostile_archives() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut symlink = RawEntry::file("link", b"/etc/passwd");
    symlink.unix_mode = 0o120_777;
    symlink.method = 0;
    let mut huge = RawEntry::file("huge.bin", &[0u8; 1000]);
    huge.declared_uncompressed = Some(1 << 45);
    let bomb = RawEntry::file("bomb.bin", &vec![0u8; 64 << 20]);
    let good = raw_zip(&[RawEntry::file("data.db", &pseudo_random(100_000, 3))]);
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 30);
    let mut garbage = b"PK\x03\x04".to_vec();
    garbage.extend(pseudo_random(5000, 4));
    vec![
        (
            "zip-slip",
            raw_zip(&[RawEntry::file("../escape.txt", b"x")]),
            "relative path",
        ),
        (
            "nested zip-slip",
            raw_zip(&[RawEntry::file("a/../../escape.txt", b"x")]),
            "relative path",
        ),
        (
            "absolute path",
            raw_zip(&[RawEntry::file("/tmp/escape.txt", b"x")]),
            "absolute",
        ),
        (
            "backslash",
            raw_zip(&[RawEntry::file("..\\escape.txt", b"x")]),
            "backslash",
        ),
        (
            "drive letter",
            raw_zip(&[RawEntry::file("C:/escape.txt", b"x")]),
            "drive letter",
        ),
        (
            "symlink",
            raw_zip(&[RawEntry::file("ok.txt", b"fine"), symlink]),
            "symbolic link",
        ),
        ("huge declared size", raw_zip(&[huge]), "limit"),
        ("high-ratio bomb", raw_zip(&[bomb]), "expands"),
        ("truncated", truncated, "not a zip"),
        ("not a zip", garbage, "not a zip"),
        // Restoring these would empty the data directory.
        ("no entries", raw_zip(&[]), "nothing to restore"),
        (
            "only paths a restore leaves alone",
            raw_zip(&[RawEntry::file(".backup-gateway/users.json", b"{}")]),
            "nothing to restore",
        ),
        (
            "SOH in a name",
            raw_zip(&[RawEntry::file("a\x01b.txt", b"x")]),
            "control character",
        ),
        (
            "terminal escape in a name",
            raw_zip(&[RawEntry::file("\x1b[31mred.txt", b"x")]),
            "control character",
        ),
        (
            "line feed in a name",
            raw_zip(&[RawEntry::file("a\nb.txt", b"x")]),
            "control character",
        ),
        (
            "carriage return in a name",
            raw_zip(&[RawEntry::file("dir\r/b.txt", b"x")]),
            "control character",
        ),
        (
            "DEL in a name",
            raw_zip(&[RawEntry::file("a\x7f.txt", b"x")]),
            "control character",
        ),
        (
            "200 nested directories",
            raw_zip(&[RawEntry::file(&format!("{}f.txt", "d/".repeat(200)), b"x")]),
            "201 path components, at most 64",
        ),
        (
            "a 300-byte name",
            raw_zip(&[RawEntry::file(&"n".repeat(300), b"x")]),
            "component of 300 bytes, at most 255",
        ),
        (
            "a 1,209-byte path",
            raw_zip(&[RawEntry::file(&vec!["p".repeat(120); 10].join("/"), b"x")]),
            "path of 1209 bytes, at most 1024",
        ),
        (
            "no data.db for a PocketBase data directory",
            raw_zip(&[RawEntry::file("notes.txt", b"x")]),
            "has no data.db",
        ),
    ]
}

async fn hostile_archives_are_refused_and_leave_the_data_untouched(backend: Backend) {
    let app = spawn_app_on(backend).await;
    fill_tree(&app.data_dir);
    let before = snapshot(&app.data_dir, EXCLUDED);
    for (what, bytes, reason) in hostile_archives() {
        let key = format!("{}.zip", what.replace(' ', "-"));
        app.put_raw(&key, bytes).await;
        let res = app.restore(&key).await;
        let body = assert_error(res, 400, MSG_INVALID).await;
        assert_eq!(
            body["data"]["backup"]["code"], "validation_invalid_backup",
            "{what}: {body}"
        );
        let why = body["data"]["backup"]["message"].as_str().unwrap();
        assert!(why.contains(reason), "{what}: {why}");
        assert!(!app.state.jobs.is_busy(), "{what}: lock released");
        assert!(
            snapshot(&app.data_dir, EXCLUDED) == before,
            "{what}: data changed"
        );
    }
    assert!(!app.data_dir.parent().unwrap().join("escape.txt").exists());
    // Unknown and invalid keys.
    for key in ["missing.zip", "..%2Fx.zip", ".hidden", "a%2Fb.zip"] {
        let res = app
            .request(
                reqwest::Method::POST,
                &format!("/api/backups/{key}/restore"),
            )
            .send()
            .await
            .unwrap();
        assert_error(res, 400, MSG_INVALID).await;
    }
}

async fn a_crc_mismatch_fails_in_the_background_and_leaves_the_data_untouched(backend: Backend) {
    let app = spawn_app_on(backend).await;
    fill_tree(&app.data_dir);
    let before = snapshot(&app.data_dir, EXCLUDED);
    let mut e = RawEntry::file("data.db", &pseudo_random(10_000, 5));
    e.crc_override = Some(0xDEAD_BEEF);
    app.put_raw("crc.zip", raw_zip(&[RawEntry::file("a.txt", b"a"), e]))
        .await;
    let res = app.restore("crc.zip").await;
    assert_eq!(res.status(), 204, "{}", res.text().await.unwrap());
    let status = app.wait_restore_done().await;
    assert_eq!(status["status"], "failed");
    assert!(
        status["error"].as_str().unwrap().contains("CRC"),
        "{status}"
    );
    assert!(snapshot(&app.data_dir, EXCLUDED) == before);
    // The next restore can start.
    assert_eq!(app.create(Some("good.zip")).await.status(), 204);
    assert_eq!(app.restore("good.zip").await.status(), 204);
    assert_eq!(app.wait_restore_done().await["status"], "ok");
}

async fn a_pocketbase_made_archive_restores(backend: Backend) {
    let app = spawn_app_on(backend).await;
    fill_tree(&app.data_dir);
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pocketbase-0.40.6.zip"
    ))
    .unwrap();
    assert_eq!(app.upload("pb.zip", fixture.clone()).await.status(), 204);
    assert_eq!(app.restore("pb.zip").await.status(), 204);
    assert_eq!(app.wait_restore_done().await["status"], "ok");
    let after = snapshot(&app.data_dir, EXCLUDED);
    let expected = crate::tree::read_zip(&fixture).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (name, (_, _, data)) in &expected {
        match &after[name] {
            crate::tree::Node::File { data: d, .. } => assert!(d == data, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn s3_failing_mid_restore_leaves_the_data_untouched_and_reports_the_error() {
    let (app, s3) = spawn_app_with_faults().await;
    fill_tree(&app.data_dir);
    write_file(&app.data_dir, "media/big.mp4", &pseudo_random(40 << 20, 6));
    let before = snapshot(&app.data_dir, EXCLUDED);
    assert_eq!(app.create(Some("big.zip")).await.status(), 204);
    // The index reads succeed; the body fails after a couple of ranged reads.
    let seen = s3.gets_seen() as i64;
    s3.fail_gets_after(seen + 4);
    assert_eq!(app.restore("big.zip").await.status(), 204);
    let status = app.wait_restore_done().await;
    assert_eq!(status["status"], "failed", "{status}");
    assert!(status["finishedAt"].is_string());
    assert!(snapshot(&app.data_dir, EXCLUDED) == before);
    s3.fail_gets_after(-1);
    assert_eq!(
        app.create(Some("next.zip")).await.status(),
        204,
        "lock released"
    );
}

#[tokio::test]
async fn a_restore_whose_reads_are_cut_short_resumes_them_and_succeeds() {
    let (app, s3) = spawn_app_with_faults().await;
    fill_tree(&app.data_dir);
    write_file(&app.data_dir, "media/big.mp4", &pseudo_random(30 << 20, 16));
    let before = snapshot(&app.data_dir, EXCLUDED);
    assert_eq!(app.create(Some("cut.zip")).await.status(), 204);
    write_file(&app.data_dir, "media/big.mp4", b"changed after the backup");
    s3.cut_after_bytes(64 << 10);
    s3.cut_gets(4);
    assert_eq!(app.restore("cut.zip").await.status(), 204);
    let status = app.wait_restore_done().await;
    assert_eq!(status["status"], "ok", "{status}");
    assert!(s3.cut_gets_left() <= 0, "cut 4 times");
    assert!(snapshot(&app.data_dir, EXCLUDED) == before);
}

#[tokio::test]
async fn the_busy_lock_holds_while_a_restore_runs() {
    let (app, s3) = spawn_app_with_faults().await;
    write_file(&app.data_dir, "media/big.mp4", &pseudo_random(30 << 20, 7));
    assert_eq!(app.create(Some("r.zip")).await.status(), 204);
    s3.delay_gets_ms(300);
    assert_eq!(app.restore("r.zip").await.status(), 204);
    let busy = "Try again later - another backup/restore process has already been started.";
    assert_error(app.create(Some("x.zip")).await, 400, busy).await;
    assert_error(app.restore("r.zip").await, 400, busy).await;
    assert_error(
        app.delete("r.zip").await,
        400,
        "The backup is currently being used and cannot be deleted.",
    )
    .await;
    let health = app.get_json("/api/health").await;
    assert_eq!(health["data"]["canBackup"], false);
    assert_eq!(health["data"]["lastRestore"]["status"], "running");
    s3.delay_gets_ms(0);
    assert_eq!(app.wait_restore_done().await["status"], "ok");
    assert_eq!(app.create(Some("x.zip")).await.status(), 204);
}

#[tokio::test]
async fn restore_require_refuses_archives_without_the_named_files() {
    let app = spawn_app_with(Options {
        backend: Backend::Local,
        config: Config {
            restore_require: vec!["db/main.db".into(), "config.json".into()],
            ..test_config()
        },
        ..Options::default()
    })
    .await;
    write_file(&app.data_dir, "db/main.db", b"current");
    let before = snapshot(&app.data_dir, EXCLUDED);
    // A directory of that name is not the file.
    let partial = raw_zip(&[
        RawEntry::file("config.json", b"{}"),
        RawEntry::file("db/main.db/x", b"x"),
    ]);
    app.put_raw("partial.zip", partial).await;
    let whole = raw_zip(&[
        RawEntry::file("config.json", b"{}"),
        RawEntry::file("db/main.db", b"restored"),
    ]);
    app.put_raw("whole.zip", whole).await;

    let refused = app.restore("partial.zip").await;

    let body = assert_error(refused, 400, MSG_INVALID).await;
    let why = body["data"]["backup"]["message"].as_str().unwrap();
    assert!(why.contains("has no db/main.db"), "{why}");
    assert!(snapshot(&app.data_dir, EXCLUDED) == before);
    assert_eq!(app.restore("whole.zip").await.status(), 204);
    assert_eq!(app.wait_restore_done().await["status"], "ok");
    assert_eq!(
        std::fs::read(app.data_dir.join("db/main.db")).unwrap(),
        b"restored"
    );
}
