//! Point-in-time restore (`--pitr`): a bank application in its own process commits
//! transfers and a gapless ledger (each row with the application's time) while the gateway
//! streams its WAL to the store; restores to recorded moments must give the ledger exactly
//! as the stream saw it then: every commit at least a second older than the moment, none
//! made after it, the invariant kept, `integrity_check` ok. Then the restored state is the
//! new "latest", and every earlier moment stays restorable.

use crate::helpers::*;
use crate::process::{GatewayProcess, Launch, add_superuser};
use crate::snapshot::{Journal, Writer, bank_ledger as ledger, make_bank};
use backup_gateway::pitr::compact::Levels;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

crate::on_both_backends!(
    a_database_is_restored_to_recorded_moments_and_latest,
    an_hour_packed_again_restores_every_moment_from_a_few_objects,
);

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn pb_time(ms: i64) -> String {
    backup_gateway::util::time_fmt::format_ms(ms)
}

/// The entry of `data.db` in an answer of `GET /api/gateway/pitr` (null when none).
fn data_db(state: &Value) -> Value {
    state["databases"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "data.db"))
        .cloned()
        .unwrap_or(Value::Null)
}

async fn pitr_state(app: &TestApp) -> Value {
    app.get_json("/api/gateway/pitr").await
}

/// The stream of `data.db`, once it streams and its history is restorable (its `ready`
/// marker is stored a moment after the stream starts).
async fn stream_of(app: &TestApp) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = pitr_state(app).await;
        let found = data_db(&s);
        if found["stream"]["streaming"] == true && found["earliest"].is_string() {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no stream of data.db: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until everything the stream captured is stored: rounds run every 50 ms at most,
/// so 1.5 s after the writer stopped its last commit is captured, and then nothing waits.
async fn wait_shipped(app: &TestApp) {
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    wait_until(60, || async {
        stream_of(app).await["stream"]["lagMs"] == 0
    })
    .await;
}

async fn restore_to(app: &TestApp, body: Value) -> Value {
    let res = app
        .request(reqwest::Method::POST, "/api/gateway/restore")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "{}", res.text().await.unwrap());
    let status = app.wait_restore_done().await;
    assert_eq!(status["status"], "ok", "{status}");
    status
}

/// Restores the moment `t` and checks the ledger against `all` (the latest's): every commit
/// older than a second is there, none after `t`, in order. Returns its rows.
async fn restore_moment(app: &TestApp, db: &Path, all: &[(i64, i64)], t: i64) -> usize {
    restore_to(app, json!({"time": pb_time(t)})).await;
    let rows = ledger(db);
    let newest = rows.last().map_or(0, |r| r.1);
    assert!(newest <= t, "a commit of {newest} restored at {t}");
    let settled = all.iter().filter(|r| r.1 <= t - 1_000).count();
    assert!(
        rows.len() >= settled,
        "at {t}: {} rows, {settled} were committed a second before",
        rows.len()
    );
    assert_eq!(&all[..rows.len()], &rows[..], "the ledger as it was");
    rows.len()
}

/// Every object of the point-in-time history in the store (key, size).
async fn history_listing(app: &TestApp) -> Vec<(String, u64)> {
    app.state
        .store()
        .list_under(backup_gateway::pitr::layout::NAMESPACE)
        .await
        .unwrap()
}

/// A gateway on `backend` with the stream on (pinned by the flag), its history packed at
/// `levels`.
async fn pitr_app(backend: Backend, levels: Levels) -> TestApp {
    let mut config = test_config();
    config.pins.pitr = Some(true);
    config.pitr_levels = levels;
    spawn_app_with(Options {
        backend,
        config,
        ..Options::default()
    })
    .await
}

/// A gateway on `backend` with the stream on, a bank database in its data directory, its
/// writer committing (sleeping `pause_ms` after each) and streamed, and `files.zip`, the
/// backup the other files of a restore come from.
async fn streamed_bank(backend: Backend, pause_ms: u64) -> (TestApp, PathBuf, Writer) {
    streamed_bank_with(backend, pause_ms, Levels::default(), 1).await
}

/// [`streamed_bank`] with the history packed at `levels` and `pad_mib` of padding.
async fn streamed_bank_with(
    backend: Backend,
    pause_ms: u64,
    levels: Levels,
    pad_mib: usize,
) -> (TestApp, PathBuf, Writer) {
    let app = pitr_app(backend, levels).await;
    let db = app.data_dir.join("data.db");
    make_bank(&db, Journal::Wal, pad_mib);
    let mut writer = Writer::paced(&db, Journal::Wal, pause_ms);
    writer.wait_for(10).await;
    let first = stream_of(&app).await;
    assert!(first["earliest"].is_string(), "{first}");
    assert_eq!(app.create(Some("files.zip")).await.status(), 204);
    (app, db, writer)
}

async fn a_database_is_restored_to_recorded_moments_and_latest(backend: Backend) {
    // The other files' backup is older than every moment below.
    let (app, db, writer) = streamed_bank(backend, 5).await;
    let history = stream_of(&app).await["stream"]["history"].clone();
    // PocketBase's daily checkpoint, as PocketBase runs it: `wal_checkpoint(TRUNCATE)` on a
    // connection of its own (here in a process of its own), with a 10 s
    // busy timeout; every 0.2 s while the moments are recorded.
    let truncates = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             k = sqlite3.connect(sys.argv[1], timeout=10.0, isolation_level=None)\n\
             for _ in range(14):\n    time.sleep(0.2)\n    \
             print(*k.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone())\n",
        )
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut moments = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        moments.push(now_ms());
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let last = writer.stop();
    let out = truncates.wait_with_output().unwrap();
    assert!(out.status.success());
    // Each one went through, or met another checkpoint in progress (the writer's
    // autocheckpoint, the stream's own), which SQLite answers at once with `1 -1 -1`; none
    // waited out its busy timeout on the stream's pins (`1` with the WAL's frame counts).
    let results = String::from_utf8(out.stdout).unwrap();
    assert_eq!(results.lines().count(), 14);
    assert!(
        results.lines().all(|r| r == "0 0 0" || r == "1 -1 -1"),
        "a TRUNCATE gave up busy: {results}"
    );
    // Most go through; under load more of them meet the writer's own checkpoint loop (one
    // run of 13 tests beside a benchmark had fewer than 7 through).
    let through = results.lines().filter(|r| *r == "0 0 0").count();
    assert!(
        through >= 4,
        "{through} of 14 TRUNCATEs went through: {results}"
    );
    wait_shipped(&app).await;
    let state = stream_of(&app).await;
    assert!(
        state["stream"]["segmentsShipped"].as_i64().unwrap() >= 3,
        "{state}"
    );
    assert_eq!(
        state["stream"]["history"], history,
        "the TRUNCATEs began a new history (a gap): {state}"
    );

    // Latest: every commit.
    let status = restore_to(&app, json!({"latest": true})).await;
    assert_eq!(status["key"], "files.zip");
    assert_eq!(status["pointInTime"]["filesFrom"], "files.zip");
    let all = ledger(&db);
    assert_eq!(all.len() as i64, last, "latest holds every commit");

    // Each moment: every commit older than a second, none after.
    let mut counts = Vec::new();
    for &t in &moments {
        counts.push(restore_moment(&app, &db, &all, t).await);
    }
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "{counts:?}");

    // The restored state (the last moment's) is the new latest ...
    wait_until(60, || async {
        let s = stream_of(&app).await;
        s["histories"].as_array().map_or(0, Vec::len) >= 2 + moments.len()
    })
    .await;
    restore_to(&app, json!({"latest": true})).await;
    assert_eq!(ledger(&db).len(), counts[2]);
    // ... and the first moment is still there.
    restore_to(&app, json!({"time": pb_time(moments[0])})).await;
    assert_eq!(ledger(&db).len(), counts[0]);
    // Backups never list the history.
    let keys = app.keys().await;
    assert_eq!(keys, vec!["files.zip".to_string()]);
}

/// The history's objects packed by the minute and again by the hour, both shortened (a
/// "minute" of 1 s, an "hour" of 5 s): each moment restores exactly, reading the hour's packs
/// part by part, and every object a pack replaced is gone from the store.
async fn an_hour_packed_again_restores_every_moment_from_a_few_objects(backend: Backend) {
    let levels = Levels {
        minute: Duration::from_secs(1),
        hour: Duration::from_secs(5),
    };
    let (app, db, writer) = streamed_bank_with(backend, 5, levels, 1).await;
    let mut moments = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        moments.push(now_ms());
    }
    wait_until(60, || async {
        stream_of(&app).await["stream"]["hourPacks"].as_u64() >= Some(2)
    })
    .await;
    let last = writer.stop();
    wait_shipped(&app).await;
    let stream = stream_of(&app).await["stream"].clone();
    let shipped = stream["segmentsShipped"].as_u64().unwrap();
    assert!(stream["minutePacks"].as_u64() >= Some(4), "{stream}");

    // In the store: each history is one chain of objects, none left that a pack replaced
    // (the hour's own, the one in progress, may still be on its way). A gateway starved of
    // CPU under load can see a gap and begin a new history (docs/pitr.md, "Not yet"; seen in
    // CI on SeaweedFS): each history is then checked alike, and at least one held an hour.
    let listing = history_listing(&app).await;
    let histories = backup_gateway::pitr::layout::parse(&listing);
    let histories = &histories["data.db"];
    if histories.len() > 1 {
        eprintln!(
            "{} histories (a gap under load): {listing:#?}",
            histories.len()
        );
    }
    for history in histories {
        let chain = history.chain();
        assert_eq!(
            chain.last().map(|s| s.m),
            history.segments.iter().map(|s| s.m).max(),
            "the chain reaches the last segment: {listing:#?}"
        );
        let leftovers = history.segments.len() - chain.len();
        assert!(
            leftovers <= 3,
            "{leftovers} objects replaced and not deleted: {listing:#?}"
        );
    }
    assert!(
        histories
            .iter()
            .filter_map(|h| h.chain().first().map(|first| first.m - first.n + 1))
            .any(|segments| segments >= 4),
        "a history's first object is an hour of several minutes: {listing:#?}"
    );

    // Latest and each moment, exactly; few objects read.
    let status = restore_to(&app, json!({"latest": true})).await;
    let all = ledger(&db);
    assert_eq!(all.len() as i64, last, "latest holds every commit");
    let read = status["pointInTime"]["databases"][0]["segmentsRead"]
        .as_u64()
        .unwrap();
    assert!(
        read * 3 <= shipped,
        "{read} objects read for {shipped} segments shipped"
    );
    for &t in &moments {
        restore_moment(&app, &db, &all, t).await;
    }
}

#[tokio::test]
async fn a_checkpoint_during_a_base_read_goes_through_and_the_base_is_read_after_it() {
    a_checkpoint_during_a_base_read_goes_through(false).await;
}

#[tokio::test]
async fn a_checkpoint_during_a_slow_base_upload_goes_through_and_the_base_is_read_after_it() {
    a_checkpoint_during_a_base_read_goes_through(true).await;
}

/// A `VACUUM` of a 48 MiB database while the application writes: one transaction of the
/// whole database, too large to hold in memory, so the history ends (a gap) and a new one
/// begins from a fresh base; "latest" has every commit, before and after it.
#[tokio::test]
async fn a_vacuum_too_large_to_hold_begins_a_new_history_and_latest_has_every_commit() {
    let (app, db, writer) = streamed_bank_with(Backend::Local, 5, Levels::default(), 48).await;
    let before = stream_of(&app).await["stream"]["history"].clone();
    let vacuum = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             k = sqlite3.connect(sys.argv[1], timeout=10.0, isolation_level=None)\n\
             k.execute('DELETE FROM pad WHERE id % 2 = 0')\n\
             k.execute('VACUUM')\n",
        )
        .arg(&db)
        .status()
        .expect("python3");
    assert!(vacuum.success());
    wait_until(60, || async {
        let s = stream_of(&app).await;
        s["stream"]["history"] != before && s["stream"]["historiesStarted"] == 2
    })
    .await;
    let last = writer.stop();
    wait_shipped(&app).await;
    restore_to(&app, json!({"latest": true})).await;
    assert_eq!(ledger(&db).len() as i64, last, "latest holds every commit");
}

/// PocketBase's TRUNCATE while a history's base is read (here at the stream's start, of a
/// 128 MiB database): the read gives way and begins again after it, so no checkpoint waits
/// out its busy timeout, and the history begins once they pause. `slow_store`: the store
/// takes 1.5 s per part meanwhile, so the read also waits for the upload to take more.
async fn a_checkpoint_during_a_base_read_goes_through(slow_store: bool) {
    let mut config = test_config();
    config.pins.pitr = Some(true);
    let (app, s3) = spawn_app_with_faults_and(Options {
        config,
        ..Options::default()
    })
    .await;
    if slow_store {
        s3.delay_parts_ms(1_500);
    }
    let built = app.data_dir.parent().unwrap().join("big.db");
    make_bank(&built, Journal::Wal, 128);
    let db = app.data_dir.join("data.db");
    std::fs::rename(&built, &db).unwrap();
    // A commit and a TRUNCATE (1 s busy timeout) every 50 ms for 5 s, from another process:
    // the stream finds the database within 2 s and reads its base meanwhile.
    let truncates = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             k = sqlite3.connect(sys.argv[1], timeout=1.0, isolation_level=None)\n\
             end = time.time() + 5\n\
             while time.time() < end:\n    \
             k.execute('INSERT INTO pad(v) VALUES (randomblob(100))')\n    \
             print(*k.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone(), flush=True)\n    \
             time.sleep(0.05)\n",
        )
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let out = tokio::task::spawn_blocking(move || truncates.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success());
    s3.delay_parts_ms(0);
    let results = String::from_utf8(out.stdout).unwrap();
    assert!(results.lines().count() >= 20, "{results}");
    assert!(
        results.lines().all(|r| r == "0 0 0" || r == "1 -1 -1"),
        "a TRUNCATE gave up busy: {results}"
    );
    let state = stream_of(&app).await;
    let stream = &state["stream"];
    assert!(stream["basesGivenWay"].as_u64() >= Some(1), "{state}");
    assert_eq!(stream["historiesStarted"], 1, "{state}");
    assert!(stream["error"].is_null(), "{state}");
}

#[tokio::test]
async fn a_moment_outside_the_window_or_a_bad_body_is_refused_with_a_reason() {
    let app = pitr_app(Backend::Local, Levels::default()).await;
    let post = |body: Value| {
        app.request(reqwest::Method::POST, "/api/gateway/restore")
            .json(&body)
            .send()
    };
    // No history yet.
    let res = post(json!({"latest": true})).await.unwrap();
    let body = assert_error(res, 400, "Failed to restore to the point in time.").await;
    assert!(
        body["data"]["time"]["message"]
            .as_str()
            .unwrap()
            .contains("no point-in-time history"),
        "{body}"
    );
    let db = app.data_dir.join("data.db");
    make_bank(&db, Journal::Wal, 1);
    let mut writer = Writer::paced(&db, Journal::Wal, 5);
    writer.wait_for(5).await;
    stream_of(&app).await;
    writer.stop();
    // Before the window.
    let res = post(json!({"time": "2001-01-01 00:00:00.000Z"}))
        .await
        .unwrap();
    let body = assert_error(res, 400, "Failed to restore to the point in time.").await;
    let reason = body["data"]["time"]["message"].as_str().unwrap();
    assert!(reason.contains("data.db can be restored from"), "{reason}");
    // In the window, but no backup for the other files.
    let res = post(json!({"latest": true})).await.unwrap();
    let body = assert_error(res, 400, "Failed to restore to the point in time.").await;
    let reason = body["data"]["time"]["message"].as_str().unwrap();
    assert!(reason.contains("no backup at or before"), "{reason}");
    // Neither a time nor latest; a time that does not parse.
    for bad in [
        json!({}),
        json!({"time": "yesterday"}),
        json!({"time": "x", "latest": true}),
    ] {
        let res = post(bad.clone()).await.unwrap();
        assert_eq!(res.status(), 400, "{bad}");
    }
    // Nothing was started: the busy lock is free.
    assert_eq!(app.restore_status().await["status"], "none");
}

/// `data.db` in a gateway process's `GET /api/gateway/pitr`, once `ready` holds for it.
async fn process_stream(gw: &GatewayProcess, ready: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        let state = gw.get_json("/api/gateway/pitr").await;
        last = data_db(&state);
        if last["stream"]["streaming"] == true && ready(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the stream never got there: {last}");
}

/// Waits until the gateway process's restore ended, its clean-up too (the busy lock free).
async fn restore_done(gw: &GatewayProcess) {
    wait_until(120, || async {
        gw.restore_status().await["status"] != "running"
            && gw.get_json("/api/gateway/progress").await["running"].is_null()
    })
    .await;
}

#[tokio::test]
async fn a_gateway_killed_mid_stream_begins_a_new_history_and_keeps_every_moment_it_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("pb_data");
    std::fs::create_dir_all(&data_dir).unwrap();
    add_superuser(&data_dir);
    let db = data_dir.join("data.db");
    make_bank(&db, Journal::Wal, 1);
    let mut writer = Writer::paced(&db, Journal::Wal, 5);
    writer.wait_for(10).await;
    let launch = || Launch {
        env: vec![("GATEWAY_PITR".into(), "true".into())],
        ..Launch::default()
    };
    let gw = GatewayProcess::start(&data_dir, launch()).await;
    process_stream(&gw, |s| s["stream"]["segmentsShipped"].as_i64() >= Some(1)).await;
    let res = gw.post("/api/backups", json!({"name": "files.zip"})).await;
    assert_eq!(res.status(), 204);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let before_kill = now_ms();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // SIGKILL while the writer commits: a segment is being captured or shipped.
    gw.kill().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let gw = GatewayProcess::start(&data_dir, launch()).await;
    process_stream(&gw, |s| s["histories"].as_array().map_or(0, Vec::len) >= 2).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let last = writer.stop();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let state = process_stream(&gw, |s| s["stream"]["lagMs"] == 0).await;
    let spans = state["histories"].as_array().unwrap();
    assert_eq!(
        spans.len(),
        2,
        "one history per start of the gateway: {state}"
    );

    // The latest moment: every commit (the writer stopped, everything was stored).
    let res = gw
        .post("/api/gateway/restore", json!({"latest": true}))
        .await;
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    restore_done(&gw).await;
    assert_eq!(gw.restore_status().await["status"], "ok");
    let all = ledger(&db);
    assert_eq!(all.len() as i64, last);

    // A moment of the history the kill ended: as it was, nothing torn.
    let res = gw
        .post(
            "/api/gateway/restore",
            json!({"time": pb_time(before_kill)}),
        )
        .await;
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    restore_done(&gw).await;
    let status = gw.restore_status().await;
    assert_eq!(status["status"], "ok", "{status}");
    let rows = ledger(&db);
    assert!(rows.last().unwrap().1 <= before_kill);
    let settled = all.iter().filter(|r| r.1 <= before_kill - 1_000).count();
    assert!(
        rows.len() >= settled,
        "{} rows, {settled} settled",
        rows.len()
    );
    assert_eq!(&all[..rows.len()], &rows[..]);
    gw.terminate(60).await;
}

#[tokio::test]
async fn a_person_restores_to_a_point_in_time_in_a_real_browser() {
    let (app, db, writer) = streamed_bank(Backend::Local, 5).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let moment = now_ms();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    writer.stop();
    wait_shipped(&app).await;
    let input = pb_time(moment)
        .replace(' ', "T")
        .trim_end_matches('Z')
        .to_string();
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pitr-screenshots");
    let _ = std::fs::remove_dir_all(&shots);

    run_node_script_with("pitr.mjs", &app, &[shots.to_str().unwrap(), &input]).await;

    // The last restore was the latest: the ledger as it was when the writer stopped.
    let status = app.restore_status().await;
    assert_eq!(status["pointInTime"]["time"], "latest", "{status}");
    let rows = ledger(&db);
    assert!(!rows.is_empty());
    for step in [
        "pitr-window",
        "pitr-confirm",
        "pitr-restored",
        "pitr-latest",
    ] {
        assert!(
            std::fs::read_dir(&shots).unwrap().flatten().any(|e| e
                .file_name()
                .to_string_lossy()
                .ends_with(&format!("-{step}.png"))),
            "no screenshot of {step}"
        );
    }
}

#[tokio::test]
async fn a_database_replaced_under_the_stream_begins_a_new_history_of_the_new_file() {
    let (app, db, writer) = streamed_bank(Backend::Local, 5).await;
    writer.stop();
    wait_shipped(&app).await;
    // Another database moved in under the name, as a tool's restore does it: the old
    // file's WAL and index go first (SQLite would read them as the new file's).
    let other = app.data_dir.join("other.tmp");
    make_bank(&other, Journal::Wal, 1);
    for side in ["data.db-wal", "data.db-shm"] {
        let _ = std::fs::remove_file(app.data_dir.join(side));
    }
    std::fs::rename(&other, &db).unwrap();
    let mut writer = Writer::paced(&db, Journal::Wal, 5);
    writer.wait_for(30).await;
    let last = writer.stop();
    wait_until(60, || async {
        stream_of(&app).await["histories"]
            .as_array()
            .map_or(0, Vec::len)
            >= 2
    })
    .await;
    wait_shipped(&app).await;

    restore_to(&app, json!({"latest": true})).await;

    // The new file's ledger, every commit of it: not the old file's.
    assert_eq!(ledger(&db).len() as i64, last);
}

#[tokio::test]
async fn a_writer_killed_mid_transaction_loses_no_acknowledged_commit_in_the_latest_restore() {
    let (app, db, mut writer) = streamed_bank(Backend::Local, 2).await;
    writer.wait_for(300).await;
    // SIGKILL: a transaction may be half-written in the WAL, never committed.
    let acknowledged = writer.kill();
    wait_shipped(&app).await;

    restore_to(&app, json!({"latest": true})).await;

    // Every commit the application saw acknowledged (it may have committed one more that
    // it had no time to report); the half-written one is not there (no gap, the invariant).
    let rows = ledger(&db).len() as i64;
    assert!(
        rows == acknowledged || rows == acknowledged + 1,
        "{rows} rows, {acknowledged} acknowledged"
    );
}

#[tokio::test]
async fn the_setting_turns_the_stream_on_and_off_and_the_flag_pins_it() {
    // Nothing given: the stream is on (the default), and says what bounds it.
    let app = spawn_local_app().await;
    let db = app.data_dir.join("data.db");
    make_bank(&db, Journal::Wal, 1);
    let mut writer = Writer::paced(&db, Journal::Wal, 5);
    writer.wait_for(5).await;
    assert_eq!(app.get_json("/api/settings").await["backups"]["pitr"], true);
    stream_of(&app).await;
    let on = pitr_state(&app).await;
    assert_eq!(on["enabled"], true, "{on}");
    assert_eq!(on["maxStoredBytes"], 1u64 << 30, "{on}");
    assert_eq!(on["retentionDays"], 7, "{on}");
    assert_eq!(on["excluded"], json!(["auxiliary.db"]), "{on}");
    let patch = |on: bool| {
        app.request(reqwest::Method::PATCH, "/api/settings")
            .json(&json!({"backups": {"pitr": on}}))
            .send()
    };
    // The health answer names stalled streams while the stream is on (none here).
    let health = app.get_json("/api/health").await;
    assert_eq!(health["data"]["pitr"]["stalled"], json!([]), "{health}");

    let res = patch(false).await.unwrap();

    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["backups"]["pitr"], false);
    let state = pitr_state(&app).await;
    assert_eq!(state["enabled"], false, "{state}");
    // The history stays in the store, restorable; no stream runs.
    let db_state = &state["databases"][0];
    assert_eq!(db_state["name"], "data.db", "{state}");
    assert!(db_state["stream"].is_null(), "{state}");
    assert!(db_state["earliest"].is_string(), "{state}");
    // What it takes in the store: every object of its histories, the empty markers aside.
    let held: u64 = history_listing(&app)
        .await
        .iter()
        .filter(|(k, _)| k.starts_with(".pitr/v1/data.db/"))
        .map(|(_, size)| size)
        .sum();
    assert!(held > 0);
    assert_eq!(db_state["storedBytes"], held, "{state}");
    // On again over the API, and off.
    let res = patch(true).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(pitr_state(&app).await["enabled"], true);
    assert_eq!(patch(false).await.unwrap().status(), 200);
    // Off, the health answer is as it was before the stream existed.
    assert!(
        app.get_json("/api/health").await["data"]
            .get("pitr")
            .is_none()
    );
    writer.stop();

    // Given by the flag, the setting cannot change over the API.
    let mut config = test_config();
    config.pins.pitr = Some(false);
    let pinned = spawn_app_with(Options {
        backend: Backend::Local,
        config,
        ..Options::default()
    })
    .await;
    let res = pinned
        .request(reqwest::Method::PATCH, "/api/settings")
        .json(&json!({"backups": {"pitr": true}}))
        .send()
        .await
        .unwrap();
    let body = assert_error(res, 400, "An error occurred while saving the new settings.").await;
    assert_eq!(
        body["data"]["backups"]["pitr"]["code"], "validation_pinned_by_flag",
        "{body}"
    );
    assert_eq!(pitr_state(&pinned).await["enabled"], false);
}

/// The application of [`a_quiet_database_is_watched_slowly_and_loses_nothing_when_written_again`],
/// in a process of its own, one step per line of its input: `commit N` (N commits of a
/// row each), `truncate` (PocketBase's checkpoint on a connection of its own, 1 s busy
/// timeout), `commit-truncate` (one commit, then at once the checkpoint). It answers each
/// with a line: the rows so far, or the checkpoint's busy flag.
const QUIET_APP: &str = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=1.0, isolation_level=None)
c.execute("PRAGMA journal_mode=wal")
c.execute("CREATE TABLE IF NOT EXISTS q (i INTEGER PRIMARY KEY, v TEXT)")
k = sqlite3.connect(sys.argv[1], timeout=1.0, isolation_level=None)
n = 0
def commit():
    global n
    n += 1
    c.execute("INSERT INTO q (i, v) VALUES (?, ?)", (n, "x" * 300))
for line in sys.stdin:
    step = line.split()
    if step[0] == "commit":
        for _ in range(int(step[1])):
            commit()
        print(n, flush=True)
    elif step[0] == "truncate":
        print(k.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0], flush=True)
    elif step[0] == "commit-truncate":
        commit()
        print(k.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0], flush=True)
"#;

/// A database with nothing written for a while is quiet: the stream copies what it
/// captured, holds its pin on the database alone and looks at it slowly. A checkpoint
/// then goes through, a commit followed at once by a checkpoint (which, with the pin on
/// the database alone, must wait for the stream to see it) goes through too, the history
/// goes on without a gap, and "latest" has every row.
#[tokio::test]
async fn a_quiet_database_is_watched_slowly_and_loses_nothing_when_written_again() {
    use std::io::{BufRead, Write};
    let app = pitr_app(Backend::Local, Levels::default()).await;
    let db = app.data_dir.join("data.db");
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(QUIET_APP)
        .arg(&db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut input = child.stdin.take().unwrap();
    let mut output = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut step = |s: &str| -> i64 {
        writeln!(input, "{s}").unwrap();
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        line.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{s}: {line:?}"))
    };
    step("commit 20");
    let history = stream_of(&app).await["stream"]["history"].clone();
    assert_eq!(app.create(Some("files.zip")).await.status(), 204);
    let quiet = || async {
        wait_until(30, || async {
            stream_of(&app).await["stream"]["quiet"] == true
        })
        .await;
    };
    for round in 0..3 {
        quiet().await;
        assert_eq!(
            step("truncate"),
            0,
            "round {round}: a checkpoint of the quiet database"
        );
        step("commit 5");
        wait_until(10, || async {
            stream_of(&app).await["stream"]["quiet"] == false
        })
        .await;
        quiet().await;
        assert_eq!(
            step("commit-truncate"),
            0,
            "round {round}: a checkpoint right after a commit to the quiet database"
        );
        step("commit 3");
    }
    let rows = step("commit 1");
    assert_eq!(rows, 20 + 3 * 9 + 1);
    drop(input);
    assert!(child.wait().unwrap().success());
    wait_shipped(&app).await;
    let state = stream_of(&app).await;
    assert_eq!(
        state["stream"]["history"], history,
        "the quiet periods began a new history (a gap): {state}"
    );
    assert!(
        state["stream"]["commitsShipped"].as_i64().unwrap() >= rows,
        "{state}"
    );

    restore_to(&app, json!({"latest": true})).await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (count, max): (i64, i64) = conn
        .query_row("SELECT count(*), max(i) FROM q", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((count, max), (rows, rows), "latest has every row");
}

/// The history's size bound (`--pitr-max-size-mib`, here 512 KiB) and the excluded
/// databases (`--pitr-exclude`, PocketBase's `auxiliary.db` by default): under a steady
/// writer (about 160 KB of history a second) the history of `data.db` ends at half the bound and begins again, the oldest
/// histories are deleted so that the store never holds much more than the bound, the
/// window moves with them (a moment before it is refused, one in it restores exactly), and
/// `auxiliary.db`, a WAL database beside it, is never streamed: a restore to a moment
/// takes it from the backup.
#[tokio::test]
async fn the_history_stays_within_its_size_bound_and_excluded_databases_come_from_the_backup() {
    const MAX: u64 = 512 << 10;
    let mut config = test_config();
    config.pitr_max_bytes = Some(MAX);
    let app = spawn_app_with(Options {
        backend: Backend::Local,
        config,
        ..Options::default()
    })
    .await;
    let aux_path = app.data_dir.join("auxiliary.db");
    let aux = rusqlite::Connection::open(&aux_path).unwrap();
    aux.execute_batch(
        "PRAGMA journal_mode=wal; CREATE TABLE logs(v TEXT); INSERT INTO logs VALUES ('before');",
    )
    .unwrap();
    let db = app.data_dir.join("data.db");
    make_bank(&db, Journal::Wal, 0);
    let mut writer = Writer::paced(&db, Journal::Wal, 10);
    writer.wait_for(10).await;
    stream_of(&app).await;
    assert_eq!(app.create(Some("files.zip")).await.status(), 204);
    aux.execute("INSERT INTO logs VALUES ('after')", [])
        .unwrap();

    // Until seven histories have begun for size and old ones were deleted: the store's
    // history of data.db, looked at all along, never far past the bound.
    let held = || async {
        let listing = history_listing(&app).await;
        assert!(
            !listing.iter().any(|(k, _)| k.contains("/auxiliary.db/")),
            "an excluded database was streamed: {listing:?}"
        );
        listing.iter().map(|(_, size)| size).sum::<u64>()
    };
    let mut most = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let state = loop {
        most = most.max(held().await);
        let s = pitr_state(&app).await;
        let data = data_db(&s);
        let started = data["stream"]["historiesStarted"].as_u64().unwrap_or(0);
        let kept = data["histories"].as_array().map_or(0, Vec::len) as u64;
        if started >= 8 && kept < started {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("history held at most {most} bytes, bound {MAX}, {state}");
    // Past the bound for a moment only (printed, not asserted: how far depends on how busy
    // the machine is): what is shipped between two looks for old history (every 2 s, here
    // about two histories' worth), the last minute's pack of a history that ends (written
    // before the segments it replaces are deleted: here the whole history), and a newest
    // history past half the bound (it ends once its segments take as much as its
    // beginning, the base and the WAL as it was, which here can be half the bound too).
    // Measured: 2.0 to 3.2 times the bound; kept whole, the histories would take over 4
    // times by now. The rule itself is checked once the stream is idle, below.
    assert!(
        state["databases"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["name"] != "auxiliary.db"),
        "{state}"
    );
    assert_eq!(state["excluded"], json!(["auxiliary.db"]), "{state}");
    let moment = now_ms();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last = writer.stop();
    wait_shipped(&app).await;
    // Once the streams are idle, the rule holds: within the bound (and what was shipped
    // since the last look, less than an eighth of it), or only the newest restorable
    // history kept.
    wait_until(30, || async {
        let held = held().await;
        let kept = stream_of(&app).await["histories"]
            .as_array()
            .map_or(0, Vec::len);
        held <= MAX + MAX / 8 || kept == 1
    })
    .await;
    let data = stream_of(&app).await;
    let earliest = backup_gateway::util::time_fmt::parse_pb(data["earliest"].as_str().unwrap())
        .map(backup_gateway::util::time_fmt::unix_ms)
        .expect("a time");
    drop(aux);

    // Before the window (deleted for size): refused, naming the first restorable moment.
    let res = app
        .request(reqwest::Method::POST, "/api/gateway/restore")
        .json(&json!({"time": pb_time(earliest - 2_000)}))
        .send()
        .await
        .unwrap();
    let body = assert_error(res, 400, "Failed to restore to the point in time.").await;
    let reason = body["data"]["time"]["message"].as_str().unwrap_or_default();
    assert!(reason.contains("can be restored from"), "{body}");

    // In the window: exactly the ledger as it was; auxiliary.db as the backup holds it.
    restore_to(&app, json!({"latest": true})).await;
    let all = ledger(&db);
    assert_eq!(all.len() as i64, last);
    restore_moment(&app, &db, &all, moment).await;
    let logs: Vec<String> = rusqlite::Connection::open(&aux_path)
        .unwrap()
        .prepare("SELECT v FROM logs")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(logs, ["before"]);
}
