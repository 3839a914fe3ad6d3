//! Scheduled backups on a clock the test moves (no test waits a real minute): runs fire at
//! the due minutes, go through the create pipeline, are pruned to `cronMaxKeep` without
//! touching manual or uploaded backups, are skipped while the busy lock is held, and their
//! outcome is visible over HTTP and survives a restart.

use crate::helpers::*;
use backup_gateway::ops::outcomes::RunStatus;
use backup_gateway::schedule::{ClockHandle, ManualClock};
use reqwest::Method;
use serde_json::{Value, json};
use time::macros::datetime;

/// The gateway (local backups) on a clock that stands at `start` until the test moves it,
/// with a file in its data directory (a backup of nothing fails its verify: a restore
/// refuses to empty the data directory).
async fn app_on_clock(start: time::OffsetDateTime) -> (TestApp, ManualClock) {
    let (handle, clock) = ClockHandle::manual(start);
    let app = spawn_app_with(Options {
        backend: Backend::Local,
        config: Config {
            clock: handle,
            ..test_config()
        },
        ..Options::default()
    })
    .await;
    write_file(&app.data_dir, "notes.txt", b"scheduled");
    (app, clock)
}

/// Moves the clock to `t` and waits until the schedule's loop has looked at the settings at
/// `t`: the runs it has started so far. Fails when the loop never looks.
async fn look_at(app: &TestApp, clock: &ManualClock, t: time::OffsetDateTime) -> u64 {
    let mut looks = app.state.scheduled_runs.looks();
    clock.set(t);
    let look = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        looks.wait_for(|look| look.is_some_and(|look| look.at >= t)),
    )
    .await
    .unwrap_or_else(|_| panic!("the schedule's loop did not look at the settings at {t}"))
    .expect("the schedule's loop is running");
    look.expect("a look").started
}

/// Moves the clock to `t` and waits for the run that this starts to be recorded.
async fn run_at(app: &TestApp, clock: &ManualClock, t: time::OffsetDateTime) -> Value {
    let stamp = backup_gateway::util::time_fmt::compact(t);
    clock.set(t);
    let mut last = Value::Null;
    wait_until(60, || {
        let got = app.state.scheduled_runs.last();
        let done = got.as_ref().is_some_and(|o| o.key.contains(&stamp));
        last = serde_json::to_value(got).unwrap();
        async move { done }
    })
    .await;
    last
}

#[tokio::test]
async fn scheduled_runs_fire_prune_only_their_own_and_skip_while_busy() {
    let (app, clock) = app_on_clock(datetime!(2026-12-01 10:00:30 UTC)).await;
    write_file(&app.data_dir, "notes.txt", b"scheduled");
    assert_eq!(app.create(Some("manual.zip")).await.status(), 204);
    let zip = zip_of(&[("data.txt", b"x")]).await;
    assert_eq!(app.upload("uploaded.zip", zip).await.status(), 204);
    let res = app
        .request(Method::PATCH, "/api/settings")
        .json(&json!({"backups": {"cron": "*/2 * * * *", "cronMaxKeep": 2}, "meta": {"appName": "Night Shift"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // 10:01 is not due (every 2 minutes): the loop looks, and starts nothing.
    let started = look_at(&app, &clock, datetime!(2026-12-01 10:01:05 UTC)).await;
    assert_eq!(started, 0, "a run started at 10:01");
    assert!(app.state.scheduled_runs.last().is_none());

    for minute in [2u8, 4, 6] {
        let t = datetime!(2026-12-01 10:00:05 UTC)
            .replace_minute(minute)
            .unwrap();
        let outcome = run_at(&app, &clock, t).await;
        assert_eq!(outcome["status"], "ok", "{outcome}");
        assert_eq!(
            outcome["key"],
            format!("@auto_pb_backup_night_shift_2026120110{minute:02}05.zip")
        );
    }
    // The third run pruned the first; manual and uploaded backups stay.
    let last = app.state.scheduled_runs.last().unwrap();
    assert_eq!(
        last.pruned,
        ["@auto_pb_backup_night_shift_20261201100205.zip"]
    );
    assert_eq!(
        app.keys().await,
        [
            "@auto_pb_backup_night_shift_20261201100405.zip",
            "@auto_pb_backup_night_shift_20261201100605.zip",
            "manual.zip",
            "uploaded.zip",
        ]
    );
    // A scheduled archive restores like any other: it holds the data directory.
    let bytes = app
        .download_bytes("@auto_pb_backup_night_shift_20261201100605.zip")
        .await;
    assert!(bytes.starts_with(b"PK\x03\x04"));

    // While a restore (or a create) holds the busy lock, the run is skipped, and recorded.
    let busy = app
        .state
        .jobs
        .try_start(
            backup_gateway::ops::jobs::JobKind::Restore,
            backup_gateway::ops::progress::Trigger::Api,
            "manual.zip",
        )
        .unwrap();
    let outcome = run_at(&app, &clock, datetime!(2026-12-01 10:08:05 UTC)).await;
    assert_eq!(outcome["status"], "skipped", "{outcome}");
    drop(busy);
    assert_eq!(app.keys().await.len(), 4);

    // The outcome and the next runs over HTTP.
    let status: Value = app.get_json("/api/gateway/schedule").await;
    assert_eq!(status["cron"], "*/2 * * * *");
    assert_eq!(
        status["next"],
        json!([
            "2026-12-01 10:10:00.000Z",
            "2026-12-01 10:12:00.000Z",
            "2026-12-01 10:14:00.000Z"
        ])
    );
    assert_eq!(status["last"]["status"], "skipped");
    let health: Value = app.get_json("/api/health").await;
    assert_eq!(health["data"]["lastScheduledBackup"]["status"], "skipped");

    // The last outcome survives a restart.
    let restarted = backup_gateway::AppState::new((*app.state.config).clone())
        .await
        .unwrap();
    assert_eq!(
        restarted.scheduled_runs.last().map(|o| o.status),
        Some(RunStatus::Skipped)
    );
}

#[tokio::test]
async fn an_emptied_schedule_stops_firing() {
    let (app, clock) = app_on_clock(datetime!(2026-12-01 23:59:30 UTC)).await;
    let set = |cron: &str| {
        app.request(Method::PATCH, "/api/settings")
            .json(&json!({"backups": {"cron": cron}}))
            .send()
    };
    assert_eq!(set("@daily").await.unwrap().status(), 200);
    let outcome = run_at(&app, &clock, datetime!(2026-12-02 00:00:01 UTC)).await;
    assert_eq!(outcome["status"], "ok");
    assert_eq!(set("").await.unwrap().status(), 200);
    // The next midnight: the loop looks at the emptied schedule and starts nothing.
    let started = look_at(&app, &clock, datetime!(2026-12-03 00:00:01 UTC)).await;
    assert_eq!(started, 1, "a run started after the schedule was emptied");
    assert_eq!(app.keys().await.len(), 1);
}

#[tokio::test]
async fn a_failed_run_is_recorded_with_its_reason_and_never_silent() {
    let (app, clock) = app_on_clock(datetime!(2026-12-01 03:59:50 UTC)).await;
    // A bucket on a port where nothing listens: the store refuses every connection.
    let closed = free_port();
    let res = app
        .request(Method::PATCH, "/api/settings")
        .json(&json!({"backups": {"cron": "0 4 * * *", "s3": {
            "enabled": true, "bucket": "b", "region": "us-east-1",
            "endpoint": format!("http://127.0.0.1:{closed}"),
            "accessKey": "k", "secret": "s3-secret-value", "forcePathStyle": true,
        }}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let outcome = run_at(&app, &clock, datetime!(2026-12-01 04:00:00 UTC)).await;
    assert_eq!(outcome["status"], "failed", "{outcome}");
    assert_eq!(outcome["key"], "@auto_pb_backup_acme_20261201040000.zip");
    let reason = outcome["error"].as_str().unwrap();
    assert!(reason.starts_with("storing the backup failed"), "{reason}");
    assert!(!reason.contains("s3-secret-value"));
    // The lock is free again: a manual create runs (and fails on the same store), it is
    // not told to try again later.
    assert_error(
        app.create(Some("after.zip")).await,
        400,
        "Failed to create backup.",
    )
    .await;
}
