//! Observability: the progress of a running create and restore, the last outcomes across a
//! restart, the Prometheus metrics moving with successes and store faults, and JSON logs
//! that never hold a token, a file token, a password or the S3 secret.

use crate::helpers::*;
use crate::s3_server::{self, S3Server};
use reqwest::Method;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

async fn progress(app: &TestApp) -> Value {
    app.get_json("/api/gateway/progress").await
}

/// Samples `running` every 20 ms until `done` finishes (for at most 5 minutes): the
/// samples of `kind`, and what `done` gave. Every other sample is read from the health
/// check, which must agree. Fails with fewer than 3 samples: the test slows the job down
/// enough for many more.
async fn sample_while<T>(
    app: &TestApp,
    kind: &str,
    mut done: tokio::task::JoinHandle<T>,
) -> (Vec<Value>, T) {
    let mut samples = Vec::new();
    let mut seen_in_health = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the {kind} did not end within 5 minutes"
        );
        let in_health = samples.len() % 2 == 1;
        let running = if in_health {
            app.get_json("/api/health").await["data"]["running"].clone()
        } else {
            progress(app).await["running"].clone()
        };
        if running["kind"] == kind {
            seen_in_health += usize::from(in_health);
            samples.push(running);
        }
        tokio::select! {
            out = &mut done => {
                assert!(
                    samples.len() >= 3,
                    "the {kind} was seen running {} times: too few to check",
                    samples.len()
                );
                assert!(seen_in_health > 0, "the health check never showed the job");
                return (samples, out.unwrap());
            }
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// The byte counts only grow, take several values on the way, and stay within the total.
fn assert_moves_forward(samples: &[Value]) {
    let done: Vec<u64> = samples
        .iter()
        .map(|s| s["bytesDone"].as_u64().unwrap())
        .collect();
    assert!(
        done.windows(2).all(|w| w[0] <= w[1]),
        "bytesDone went back: {done:?}"
    );
    for s in samples {
        let total = s["bytesTotal"].as_u64().unwrap();
        assert!(
            s["bytesDone"].as_u64().unwrap() <= total,
            "past the total: {s}"
        );
    }
    let mut distinct = done.clone();
    distinct.dedup();
    assert!(distinct.len() >= 3, "progress did not move: {done:?}");
    assert!(
        samples
            .iter()
            .any(|s| s["etaSeconds"].as_f64().is_some_and(|e| e > 0.0)),
        "no ETA while running: {samples:?}"
    );
}

#[tokio::test]
async fn a_create_shows_its_progress_and_its_outcome_survives_a_restart() {
    let (app, s3) = spawn_app_with_faults().await;
    // Well past what the pipeline buffers ahead of the store (about 16 MiB), so that the
    // counts move with every part the slowed store takes.
    let size = 64usize << 20;
    write_file(&app.data_dir, "big.bin", &pseudo_random(size, 3));
    for i in 0..20 {
        write_file(&app.data_dir, &format!("small/{i}.txt"), b"x");
    }
    s3.delay_parts_ms(200);
    let create = start_create(&app, "slow.zip");
    let (samples, status) = sample_while(&app, "create", create).await;
    assert_eq!(status.unwrap(), 204);
    assert!(!samples.is_empty(), "the create was never seen running");
    assert_moves_forward(&samples);
    let first = &samples[0];
    assert_eq!(first["key"], "slow.zip");
    assert_eq!(first["trigger"], "api");
    // The survey's estimate: every file's size; the root's children and the files.
    let total = samples.last().unwrap()["bytesTotal"].as_u64().unwrap();
    assert_eq!(total, size as u64 + 20);
    assert_eq!(
        samples.last().unwrap()["entriesTotal"],
        22,
        "big.bin, small/ and its 20 files"
    );
    assert!(
        samples.iter().any(|s| s["phase"] == "archive"),
        "{samples:?}"
    );
    assert!(
        samples.iter().any(|s| s["bytesDone"] == total),
        "the total was never reached: {:?}",
        samples.last()
    );
    // Nothing runs now, and the health check says so to superusers.
    let health = app.get_json("/api/health").await;
    assert!(health["data"]["running"].is_null(), "{health}");

    let last = progress(&app).await["last"]["create"].clone();
    assert_eq!(last["key"], "slow.zip");
    assert_eq!(last["status"], "ok");
    assert_eq!(last["entries"], 22);
    let stored = app.state.store().stat("slow.zip").await.unwrap().unwrap();
    assert_eq!(last["size"], stored.size);

    // A failed create is kept with its reason, and both survive a restart.
    s3.delay_parts_ms(0);
    s3.fail_parts_after(0);
    assert_eq!(app.create(Some("fails.zip")).await.status(), 400);
    s3.fail_parts_after(-1);
    let failed = progress(&app).await["last"]["create"].clone();
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("storing the backup failed"),
        "{failed}"
    );
    let restarted = backup_gateway::AppState::new((*app.state.config).clone())
        .await
        .unwrap();
    let kept = backup_gateway::api::progress::report(&restarted);
    assert_eq!(kept["last"]["create"], failed);
    assert!(kept["running"].is_null());
}

#[tokio::test]
async fn a_restore_shows_its_progress_up_to_the_exact_total() {
    // A hook that takes its time: the finished extract's counts can be read in its phase.
    let app = spawn_app_with(Options {
        in_process_s3: true,
        config: Config {
            on_restore: Some("sleep 0.5".into()),
            ..test_config()
        },
        ..Options::default()
    })
    .await;
    let s3 = app.s3.clone().unwrap();
    let size = 40usize << 20;
    write_file(&app.data_dir, "data.db.bin", &pseudo_random(size, 5));
    write_file(&app.data_dir, "notes.txt", b"hello");
    assert_eq!(app.create(Some("r.zip")).await.status(), 204);
    s3.delay_gets_ms(250);
    assert_eq!(app.restore("r.zip").await.status(), 204);
    let done = tokio::spawn({
        let state = app.state.clone();
        async move {
            wait_until(120, || {
                let busy = state.jobs.is_busy();
                async move { !busy }
            })
            .await;
        }
    });
    let (samples, ()) = sample_while(&app, "restore", done).await;
    s3.delay_gets_ms(0);
    assert!(!samples.is_empty(), "the restore was never seen running");
    assert_moves_forward(&samples);
    for s in &samples {
        // Exact, from the central directory: both files' sizes, two entries.
        assert_eq!(s["bytesTotal"], size as u64 + 5, "{s}");
        assert_eq!(s["entriesTotal"], 2, "{s}");
        assert_eq!(s["key"], "r.zip");
    }
    assert!(
        samples.iter().any(|s| s["phase"] == "extract"),
        "{samples:?}"
    );
    let in_hook: Vec<&Value> = samples.iter().filter(|s| s["phase"] == "hook").collect();
    assert!(!in_hook.is_empty(), "the hook's phase was never seen");
    for s in in_hook {
        assert_eq!(s["bytesDone"], s["bytesTotal"], "{s}");
        assert_eq!(s["entriesDone"], 2, "{s}");
    }
    let status = app.wait_restore_done().await;
    assert_eq!(status["status"], "ok", "{status}");
    let last = progress(&app).await["last"]["restore"].clone();
    assert_eq!(last, status);
}

/// `name{labels} value` of every sample, labels sorted.
fn scrape(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    assert!(!scrape.samples.is_empty());
    let mut out = HashMap::new();
    for s in scrape.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(format!("{}{{{}}}", s.metric, labels.join(",")), value);
    }
    out
}

async fn metrics(base: &str) -> HashMap<String, f64> {
    let res = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    scrape(&res.text().await.unwrap())
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

fn sum_of(m: &HashMap<String, f64>, family: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(&format!("{family}{{")))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test]
async fn metrics_move_with_successes_failures_and_store_faults() {
    let (app, s3) = spawn_app_with_faults().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(backup_gateway::serve_metrics(
        listener,
        app.state.clone(),
        std::future::pending(),
    ));
    let before = metrics(&base).await;
    assert_eq!(
        get(&before, "backup_gateway_memory_budget_bytes{state=limit}"),
        app.state.config.memory_budget as f64
    );
    assert_eq!(sum_of(&before, "backup_gateway_operations_total"), 0.0);

    write_file(&app.data_dir, "a.bin", &pseudo_random(6 << 20, 1));
    assert_eq!(app.create(Some("ok.zip")).await.status(), 204);
    let bytes = app.download_bytes("ok.zip").await;
    let after_ok = metrics(&base).await;
    let ok = "backup_gateway_operations_total{operation=create,outcome=ok,trigger=api}";
    assert_eq!(get(&after_ok, ok), 1.0);
    let dl = "backup_gateway_operations_total{operation=download,outcome=ok,trigger=api}";
    assert_eq!(get(&after_ok, dl), 1.0, "{after_ok:?}");
    assert_eq!(
        get(
            &after_ok,
            "backup_gateway_archive_bytes_count{operation=download}"
        ),
        1.0
    );
    assert!(bytes.len() > 6 << 20);
    let last = get(
        &after_ok,
        "backup_gateway_last_success_timestamp_seconds{operation=create}",
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    assert!((now - last).abs() < 60.0, "last success {last}, now {now}");
    assert!(
        get(
            &after_ok,
            "backup_gateway_store_requests_total{operation=UploadPart}"
        ) >= 1.0
    );
    assert!(
        get(
            &after_ok,
            "backup_gateway_store_requests_total{operation=CompleteMultipartUpload}"
        ) >= 1.0
    );

    // Every request throttled: the create fails after its retries, which are counted.
    s3.slow_down_per_mille(1000);
    assert_eq!(app.create(Some("throttled.zip")).await.status(), 400);
    s3.slow_down_per_mille(0);
    let after_fault = metrics(&base).await;
    let failed = "backup_gateway_operations_total{operation=create,outcome=failed,trigger=api}";
    assert_eq!(get(&after_fault, failed), 1.0);
    let errors = sum_of(&after_fault, "backup_gateway_store_errors_total");
    let retries = sum_of(&after_fault, "backup_gateway_store_retries_total");
    assert!(errors >= 5.0, "errors {errors}: {after_fault:?}");
    assert!(retries >= 4.0, "retries {retries}");
    assert_eq!(sum_of(&after_ok, "backup_gateway_store_errors_total"), 0.0);
    // Still the first create's time: a failure does not move it.
    assert_eq!(
        get(
            &after_fault,
            "backup_gateway_last_success_timestamp_seconds{operation=create}"
        ),
        last
    );
}

/// A line of the binary's JSON log.
fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .inspect(|v| assert!(v.is_object(), "{v}"))
        .collect()
}

#[tokio::test]
async fn json_logs_hold_one_object_per_line_and_no_secret_at_any_level() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&tmp.path().join("s3"), "127.0.0.1:0").await;
    std::fs::create_dir_all(tmp.path().join("s3/logs-bucket")).unwrap();
    let dir = tmp.path().join("pb_data");
    write_file(&dir, "data.db.bin", &pseudo_random(1 << 20, 9));
    let (port, metrics_port) = (free_port(), free_port());
    let password = "a-password-of-the-superuser";
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_backup-gateway"))
        .args(["serve", "--log-format", "json", "--dir"])
        .arg(&dir)
        .args(["--http", &format!("127.0.0.1:{port}")])
        .args(["--metrics-http", &format!("127.0.0.1:{metrics_port}")])
        .args(["--progress-log-secs", "1"])
        .env("RUST_LOG", "trace")
        .env("GATEWAY_SUPERUSER_EMAIL", "ops@example.com")
        .env("GATEWAY_SUPERUSER_PASSWORD", password)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Read as it comes: a full pipe would stop the gateway at its next log line.
    let drain = |mut pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        tokio::spawn(async move {
            let mut out = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut out)
                .await
                .unwrap();
            out
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_until(30, || {
        let url = format!("{base}/api/health");
        let client = client.clone();
        async move { client.get(url).send().await.is_ok() }
    })
    .await;

    // A full run: login, create, file token and download, upload, restore, S3 settings
    // with their secret, the store test, a create in the bucket, delete.
    let auth: Value = client
        .post(format!(
            "{base}/api/collections/_superusers/auth-with-password"
        ))
        .json(&serde_json::json!({"identity": "ops@example.com", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = auth["token"].as_str().unwrap().to_string();
    let call = |method: Method, path: &str| {
        client
            .request(method, format!("{base}{path}"))
            .header("Authorization", &token)
    };
    let ok = |res: reqwest::Response| async move {
        let status = res.status();
        assert!(
            status.is_success(),
            "{status}: {}",
            res.text().await.unwrap()
        );
    };
    ok(call(Method::POST, "/api/backups")
        .json(&serde_json::json!({"name": "one.zip"}))
        .send()
        .await
        .unwrap())
    .await;
    let file_token: Value = call(Method::POST, "/api/files/token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file_token = file_token["token"].as_str().unwrap().to_string();
    let zip = client
        .get(format!("{base}/api/backups/one.zip?token={file_token}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(zip.len() > 1 << 20);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(zip.to_vec()).file_name("two.zip"),
    );
    ok(call(Method::POST, "/api/backups/upload")
        .multipart(form)
        .send()
        .await
        .unwrap())
    .await;
    ok(call(Method::POST, "/api/backups/two.zip/restore")
        .send()
        .await
        .unwrap())
    .await;
    wait_until(30, || {
        let req = call(Method::GET, "/api/gateway/progress");
        async move {
            let v: Value = req.send().await.unwrap().json().await.unwrap();
            v["running"].is_null() && v["last"]["restore"]["status"] == "ok"
        }
    })
    .await;
    ok(call(Method::PATCH, "/api/settings")
        .json(&s3.settings_patch("logs-bucket"))
        .send()
        .await
        .unwrap())
    .await;
    ok(call(Method::POST, "/api/settings/test/s3")
        .json(&serde_json::json!({"filesystem": "backups"}))
        .send()
        .await
        .unwrap())
    .await;
    // A create slow enough for progress lines (every second): two parts, 2.5 s each.
    write_file(&dir, "more.bin", &pseudo_random(12 << 20, 10));
    s3.delay_parts_ms(2500);
    ok(call(Method::POST, "/api/backups")
        .json(&serde_json::json!({"name": "three.zip"}))
        .send()
        .await
        .unwrap())
    .await;
    s3.delay_parts_ms(0);
    ok(call(Method::DELETE, "/api/backups/three.zip")
        .send()
        .await
        .unwrap())
    .await;
    let scraped = client
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = scrape(&scraped);
    assert_eq!(
        get(
            &m,
            "backup_gateway_operations_total{operation=restore,outcome=ok,trigger=api}"
        ),
        1.0
    );

    let pid = child.id().unwrap() as i32;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let stdout = String::from_utf8(stdout.await.unwrap()).unwrap();
    let stderr = String::from_utf8(stderr.await.unwrap()).unwrap();
    assert_eq!(stderr, "", "the log goes to stdout");
    let lines = json_lines(&stdout);
    assert!(lines.len() > 50, "{} lines", lines.len());
    for secret in [
        token.as_str(),
        file_token.as_str(),
        s3_server::SECRET_KEY,
        password,
    ] {
        assert!(!stdout.contains(secret), "a secret in the log: {secret}");
    }
    // The JWTs' signatures alone (a log that cut a token would still leak it).
    for jwt in [&token, &file_token] {
        let signature = jwt.rsplit('.').next().unwrap();
        assert!(!stdout.contains(signature));
    }
    // One summary line per finished operation, with its figures.
    let summary = |op: &str| {
        lines
            .iter()
            .filter(|l| l["operation"] == op && l["outcome"] == "ok")
            .count()
    };
    assert_eq!(summary("create"), 2, "{stdout}");
    assert_eq!(summary("upload"), 1);
    assert_eq!(summary("restore"), 1);
    assert_eq!(summary("download"), 1);
    let created = lines
        .iter()
        .find(|l| l["operation"] == "create" && l["key"] == "one.zip")
        .unwrap();
    let ticks: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "progress" && l["key"] == "three.zip")
        .collect();
    assert!(!ticks.is_empty(), "no progress line during the slow create");
    for field in [
        "phase",
        "bytes_done",
        "bytes_total",
        "entries_done",
        "entries_total",
    ] {
        assert!(!ticks[0][field].is_null(), "{field} in {}", ticks[0]);
    }
    for field in ["size", "entries", "duration_seconds", "mib_per_second"] {
        assert!(!created[field].is_null(), "{field} in {created}");
    }
}
