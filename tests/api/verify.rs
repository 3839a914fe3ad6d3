//! Verify: backups read back from the store and checked without restoring them. Good
//! archives (the gateway's full and incremental ones, PocketBase's own) pass; damage in the
//! store (a flipped byte, a truncated object, a central directory that lies, a database
//! with a broken b-tree page) is reported with the entry named, on both backends. A
//! scheduled create is verified, and a failing verify notifies, once.

use crate::helpers::*;
use reqwest::Method;
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};

const MIB: usize = 1 << 20;

async fn verify(app: &TestApp, key: &str) -> Value {
    let path = format!("/api/gateway/backups/{key}/verify");
    let res = app.request(Method::POST, &path).send().await.unwrap();
    assert_eq!(res.status(), 200, "POST {path}");
    res.json().await.unwrap()
}

/// A data directory with a database, an incompressible file first in archive order, and
/// a few small ones.
fn fill(root: &Path) {
    write_file(root, "a.bin", &pseudo_random(MIB, 1));
    for i in 0..8 {
        write_file(
            root,
            &format!("storage/n{i}.txt"),
            format!("note {i}").repeat(100).as_bytes(),
        );
    }
    let db = rusqlite::Connection::open(root.join("data.db")).unwrap();
    db.execute_batch(
        "CREATE TABLE t(x TEXT); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < 500) INSERT INTO t SELECT printf('%0100d', i) FROM c;",
    )
    .unwrap();
}

/// Where the data of the entry `name` begins in `bytes` (after its local header).
fn data_offset(bytes: &[u8], name: &str) -> usize {
    let (_, entries) = backup_gateway::archive::zip::reader::index(bytes).unwrap();
    let e = entries
        .iter()
        .find(|e| e.raw_name == name.as_bytes())
        .unwrap_or_else(|| panic!("{name} in the archive"));
    let at = e.offset as usize;
    let header: [u8; 30] = bytes[at..at + 30].try_into().unwrap();
    at + backup_gateway::archive::zip::reader::local_header_len(&header).unwrap() as usize
}

#[tokio::test]
async fn good_archives_verify_on_s3_full_incremental_and_pocketbases_own() {
    let (app, s3) = spawn_app_with_faults().await;
    fill(&app.data_dir);
    for i in 0..12u64 {
        write_file(
            &app.data_dir,
            &format!("storage/big/{i:02}.bin"),
            &pseudo_random(MIB, 100 + i),
        );
    }
    settle(&app.data_dir);
    assert_eq!(app.create(Some("full.zip")).await.status(), 204);
    write_file(&app.data_dir, "storage/n3.txt", b"changed");
    assert_eq!(app.create(Some("incr.zip")).await.status(), 204);
    assert!(s3.copies().0 >= 1, "incr.zip is incremental");
    let pocketbase = include_bytes!("../fixtures/pocketbase-0.40.6.zip").to_vec();
    assert_eq!(app.upload("pb.zip", pocketbase).await.status(), 204);

    for key in ["full.zip", "incr.zip"] {
        let v = verify(&app, key).await;
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["key"], key);
        assert!(v["entries"].as_u64().unwrap() >= 23, "{v}");
        assert!(v["bytes"].as_u64().unwrap() >= 13 * MIB as u64, "{v}");
        assert_eq!(v["databases"], serde_json::json!(["data.db"]), "{v}");
        assert!(v["error"].is_null() && v["entry"].is_null(), "{v}");
    }
    let v = verify(&app, "pb.zip").await;
    assert_eq!(v["ok"], true, "{v}");
    assert!(
        v["databases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "data.db"),
        "PocketBase's databases are checked: {v}"
    );
    // The results are kept, by key, and the list keeps PocketBase's shape.
    let all = app.get_json("/api/gateway/verify").await;
    assert_eq!(all.as_object().unwrap().len(), 3, "{all}");
    let last = app.get_json("/api/gateway/backups/incr.zip/verify").await;
    assert_eq!(last["ok"], true);
    let list = app.get_json("/api/backups").await;
    assert_eq!(
        list[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["key", "modified", "size"]
    );
    assert_eq!(app.pending_uploads().await, 0);
}

/// The damaged archives of the test, by key, with the entry each must be blamed on.
async fn upload_damaged(app: &TestApp) -> Vec<(&'static str, &'static str)> {
    assert_eq!(app.create(Some("good.zip")).await.status(), 204);
    let good = app.download_bytes("good.zip").await;

    // A byte flipped inside a.bin's data.
    let mut flipped = good.clone();
    flipped[data_offset(&good, "a.bin") + 1000] ^= 0x40;
    assert_eq!(app.upload("flipped.zip", flipped).await.status(), 204);

    // The object cut short: the central directory is gone with its end.
    let truncated = good[..good.len() / 2].to_vec();
    assert_eq!(app.upload("truncated.zip", truncated).await.status(), 204);

    // The central directory lies about a.bin's CRC-32 (the data is intact).
    let mut lying = good.clone();
    let (dir, entries) = backup_gateway::archive::zip::reader::index(&good).unwrap();
    let index = entries.iter().position(|e| e.raw_name == b"a.bin").unwrap();
    let mut p = dir.offset as usize;
    for _ in 0..index {
        let (n, x, c) = (
            u16::from_le_bytes([lying[p + 28], lying[p + 29]]) as usize,
            u16::from_le_bytes([lying[p + 30], lying[p + 31]]) as usize,
            u16::from_le_bytes([lying[p + 32], lying[p + 33]]) as usize,
        );
        p += 46 + n + x + c;
    }
    assert_eq!(&lying[p + 46..p + 46 + 5], b"a.bin");
    lying[p + 16] ^= 0xff;
    assert_eq!(app.upload("lying.zip", lying).await.status(), 204);

    // A database whose b-tree page says it holds 65,535 cells.
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("data.db");
    std::fs::copy(app.data_dir.join("data.db"), &db_path).unwrap();
    let mut db = std::fs::read(&db_path).unwrap();
    let page = u16::from_be_bytes([db[16], db[17]]) as usize;
    let leaf = 2 * page; // page 3, a leaf of t
    assert_eq!(db[leaf], 0x0d, "page 3 is a table leaf");
    db[leaf + 3] = 0xff;
    db[leaf + 4] = 0xff;
    let zip = zip_of(&[("data.db", &db), ("notes.txt", b"fine")]).await;
    assert_eq!(app.upload("damaged_db.zip", zip).await.status(), 204);

    vec![
        ("flipped.zip", "a.bin"),
        ("lying.zip", "a.bin"),
        ("damaged_db.zip", "data.db"),
    ]
}

async fn damage_is_reported_with_the_entry_named(app: TestApp) {
    fill(&app.data_dir);
    let blamed = upload_damaged(&app).await;
    let good = verify(&app, "good.zip").await;
    assert_eq!(good["ok"], true, "{good}");

    for (key, entry) in blamed {
        let v = verify(&app, key).await;
        assert_eq!(v["ok"], false, "{key}: {v}");
        assert_eq!(v["entry"], entry, "{key}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let v = verify(&app, "damaged_db.zip").await;
    assert!(
        v["error"].as_str().unwrap().contains("integrity_check"),
        "{v}"
    );
    let v = verify(&app, "truncated.zip").await;
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not a zip"), "{v}");
    // Nothing was left behind: no scratch database, no pending upload.
    let scratch = app.data_dir.join(".backup-gateway/verify");
    assert!(
        !scratch.exists() || std::fs::read_dir(&scratch).unwrap().next().is_none(),
        "the scratch directory is empty"
    );
    assert_eq!(app.pending_uploads().await, 0);
    // The failures are kept beside the successes.
    let all = app.get_json("/api/gateway/verify").await;
    assert_eq!(all["flipped.zip"]["ok"], false, "{all}");
    assert_eq!(all["good.zip"]["ok"], true, "{all}");
}

#[tokio::test]
async fn damage_in_the_store_is_reported_with_the_entry_named_on_s3() {
    damage_is_reported_with_the_entry_named(spawn_app().await).await;
}

#[tokio::test]
async fn damage_in_the_store_is_reported_with_the_entry_named_on_seaweedfs() {
    damage_is_reported_with_the_entry_named(spawn_app_on(Backend::SeaweedFs).await).await;
}

#[tokio::test]
async fn damage_in_the_store_is_reported_with_the_entry_named_on_local_storage() {
    damage_is_reported_with_the_entry_named(spawn_local_app().await).await;
}

#[tokio::test]
async fn a_verify_refuses_unknown_keys_a_second_verify_and_a_delete_while_it_runs() {
    let (app, s3) = spawn_app_with_faults().await;
    fill(&app.data_dir);
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);
    let res = app
        .request(Method::POST, "/api/gateway/backups/missing.zip/verify")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = app
        .request(Method::GET, "/api/gateway/backups/a.zip/verify")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "no result before the first verify");
    let res = reqwest::Client::new()
        .post(app.url("/api/gateway/backups/a.zip/verify"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "superusers only");

    // The store answers slowly: the first verify is still reading when the others come.
    s3.delay_gets_ms(300);
    let gets = s3.gets_seen();
    let first = tokio::spawn({
        let req = app.request(Method::POST, "/api/gateway/backups/a.zip/verify");
        async move { req.send().await.unwrap() }
    });
    wait_until(30, || async { s3.gets_seen() > gets }).await;
    let second = app
        .request(Method::POST, "/api/gateway/backups/a.zip/verify")
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 400);
    let body: Value = second.json().await.unwrap();
    assert_eq!(
        body["message"],
        "Try again later - another verify is already running."
    );
    let delete = app.delete("a.zip").await;
    assert_eq!(delete.status(), 400, "the backup being verified is in use");
    // A create of another key goes on beside it.
    assert_eq!(app.create(Some("b.zip")).await.status(), 204);
    let first = first.await.unwrap();
    assert_eq!(first.status(), 200);
    s3.delay_gets_ms(0);
    // Deleted, its result goes too.
    assert_eq!(app.delete("a.zip").await.status(), 204);
    let all = app.get_json("/api/gateway/verify").await;
    assert!(all.get("a.zip").is_none(), "{all}");
}

/// A local HTTP receiver of notifications: answers `500` to the first `failures` posts.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Value>>>,
    posts: Arc<std::sync::atomic::AtomicUsize>,
}

async fn receiver(failures: usize) -> Receiver {
    use axum::routing::post;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let got = Arc::new(Mutex::new(Vec::new()));
    let posts = Arc::new(AtomicUsize::new(0));
    let (g, p) = (got.clone(), posts.clone());
    let app = axum::Router::new().route(
        "/hook",
        post(move |axum::Json(v): axum::Json<Value>| {
            let (g, p) = (g.clone(), p.clone());
            async move {
                if p.fetch_add(1, Ordering::SeqCst) < failures {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                g.lock().unwrap().push(v);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, got, posts }
}

#[tokio::test]
async fn a_scheduled_create_is_verified_and_a_failing_verify_fails_the_run_and_notifies_once() {
    use backup_gateway::schedule::ClockHandle;
    use time::macros::datetime;
    let hook = receiver(1).await;
    let (handle, clock) = ClockHandle::manual(datetime!(2026-12-01 10:00:30 UTC));
    let app = spawn_app_with(Options {
        backend: Backend::Local,
        config: Config {
            clock: handle,
            pins: backup_gateway::settings::Pins {
                notify_url: Some(hook.url.clone()),
                ..Default::default()
            },
            ..test_config()
        },
        ..Options::default()
    })
    .await;
    fill(&app.data_dir);
    let res = app
        .request(Method::PATCH, "/api/settings")
        .json(&serde_json::json!({"backups": {"cron": "* * * * *", "cronMaxKeep": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Moves the clock to `t` and returns the run recorded for it.
    let run_at = |t: time::OffsetDateTime| {
        let stamp = backup_gateway::util::time_fmt::compact(t);
        clock.set(t);
        let app = &app;
        async move {
            wait_until(60, || async {
                let last = app.state.scheduled_runs.last();
                last.is_some_and(|r| r.key.contains(&stamp))
            })
            .await;
            app.state.scheduled_runs.last().unwrap()
        }
    };

    // A sound data directory: the run is verified and ok.
    let run = run_at(datetime!(2026-12-01 10:01:00 UTC)).await;
    assert_eq!(
        run.status,
        backup_gateway::ops::outcomes::RunStatus::Ok,
        "{run:?}"
    );
    let v = app
        .get_json(&format!("/api/gateway/backups/{}/verify", run.key))
        .await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["trigger"], "schedule", "{v}");

    // The database's b-tree breaks: the next scheduled backup holds it as it is, its verify
    // fails, and the run with it.
    let path = app.data_dir.join("data.db");
    let mut db = std::fs::read(&path).unwrap();
    let page = u16::from_be_bytes([db[16], db[17]]) as usize;
    db[2 * page + 3] = 0xff;
    db[2 * page + 4] = 0xff;
    std::fs::write(&path, db).unwrap();
    let run = run_at(datetime!(2026-12-01 10:02:00 UTC)).await;
    assert_eq!(
        run.status,
        backup_gateway::ops::outcomes::RunStatus::Failed,
        "{run:?}"
    );
    let error = run.error.clone().unwrap();
    assert!(
        error.contains("data.db") && error.contains("integrity_check"),
        "{error}"
    );

    // With cronMaxKeep 1, the damaged backup does not push out the last good one.
    let good = app.state.verifications.all();
    assert_eq!(app.keys().await.len(), 2, "{good:?}");

    // A restore that fails after it started notifies too: once it has arrived, every
    // notification before it has.
    let mut flipped = app.download_bytes(&run.key).await;
    let at = data_offset(&flipped, "a.bin") + 1000;
    flipped[at] ^= 0x40;
    assert_eq!(app.upload("flipped.zip", flipped).await.status(), 204);
    assert_eq!(app.restore("flipped.zip").await.status(), 204);
    wait_until(60, || async { hook.got.lock().unwrap().len() >= 2 }).await;

    // The verify's notification came once, on its second attempt (the first got a 500).
    let got = hook.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["event"], "verify_failed");
    assert_eq!(got[0]["key"], run.key.as_str());
    assert!(
        got[0]["reason"].as_str().unwrap().contains("data.db"),
        "{got:?}"
    );
    assert!(got[0]["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(got[1]["event"], "restore_failed");
    assert_eq!(got[1]["key"], "flipped.zip");
    assert_eq!(hook.posts.load(std::sync::atomic::Ordering::SeqCst), 3);
    // The metrics count both verifies.
    let text = app.state.metrics.render(Default::default());
    assert!(
        text.contains("backup_gateway_operations_total{operation=\"verify\",outcome=\"ok\",trigger=\"schedule\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("backup_gateway_operations_total{operation=\"verify\",outcome=\"failed\",trigger=\"schedule\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn verify_after_create_and_the_notify_url_are_settings_and_the_url_is_never_answered() {
    let hook = receiver(0).await;
    let app = spawn_local_app().await;
    fill(&app.data_dir);
    let patch = |body: Value| {
        app.request(Method::PATCH, "/api/settings")
            .json(&body)
            .send()
    };

    let res = patch(serde_json::json!({"backups": {"verifyAfterCreate": "sometimes", "notifyUrl": "ftp://example.com/x"}}))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["data"]["backups"]["verifyAfterCreate"]["code"], "validation_in_invalid",
        "{body}"
    );
    assert_eq!(
        body["data"]["backups"]["notifyUrl"]["code"], "validation_is_url",
        "{body}"
    );
    let before = app.get_json("/api/settings").await;
    assert!(
        before["backups"].get("verifyAfterCreate").is_none(),
        "{before}"
    );

    let res =
        patch(serde_json::json!({"backups": {"verifyAfterCreate": "all", "notifyUrl": hook.url}}))
            .await
            .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(
        !text.contains(&hook.url),
        "the URL is never answered: {text}"
    );
    let settings = app.get_json("/api/settings").await;
    assert_eq!(
        settings["backups"]["verifyAfterCreate"], "all",
        "{settings}"
    );
    assert_eq!(settings["backups"]["notifyUrlSet"], true, "{settings}");
    assert!(!settings.to_string().contains(&hook.url));

    // With `all`, an API create is verified once stored.
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);
    wait_until(60, || async {
        app.request(Method::GET, "/api/gateway/backups/a.zip/verify")
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    let v = app.get_json("/api/gateway/backups/a.zip/verify").await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["trigger"], "api", "{v}");

    // A failing verify notifies the URL the settings hold.
    let mut flipped = app.download_bytes("a.zip").await;
    let at = data_offset(&flipped, "a.bin") + 1000;
    flipped[at] ^= 0x40;
    assert_eq!(app.upload("flipped.zip", flipped).await.status(), 204);
    assert_eq!(verify(&app, "flipped.zip").await["ok"], false);
    wait_until(30, || async { !hook.got.lock().unwrap().is_empty() }).await;
    assert_eq!(hook.got.lock().unwrap()[0]["event"], "verify_failed");
}

#[tokio::test]
async fn the_verify_settings_given_by_flags_cannot_be_changed_over_the_api() {
    let app = spawn_app_with(Options {
        backend: Backend::Local,
        config: Config {
            pins: backup_gateway::settings::Pins {
                verify_after_create: Some("off".into()),
                ..Default::default()
            },
            ..test_config()
        },
        ..Options::default()
    })
    .await;
    fill(&app.data_dir);
    let res = app
        .request(Method::PATCH, "/api/settings")
        .json(&serde_json::json!({"backups": {"verifyAfterCreate": "all"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["data"]["backups"]["verifyAfterCreate"]["code"], "validation_pinned_by_flag",
        "{body}"
    );
    assert_eq!(
        app.state.settings.current().backups.verify_after_create(),
        backup_gateway::settings::VerifyAfterCreate::Off
    );
}
