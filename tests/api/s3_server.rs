//! An in-process S3 server for tests and benchmarks: `s3s` + `s3s-fs` over a directory, on
//! 127.0.0.1 with an OS-chosen port, SigV4-checked with fixed test credentials.
//!
//! A thin wrapper in front of it injects faults: fail every UploadPart after the first N, or
//! go "down" (drop every connection) until brought back, answer a share of requests
//! `503 SlowDown` or drop their connection, and more (see [`Faults`]). Shared with
//! `examples/s3-server.rs`.

#![allow(dead_code)]

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const ACCESS_KEY: &str = "gateway-test-access";
pub const SECRET_KEY: &str = "gateway-test-secret-key";

/// Knobs the tests turn.
#[derive(Debug, Default)]
pub struct Faults {
    /// Fail every UploadPart after this many have succeeded (negative: never).
    pub fail_parts_after: AtomicI64,
    /// Fail every GetObject after this many have been answered (negative: never).
    pub fail_gets_after: AtomicI64,
    pub parts_seen: AtomicU64,
    /// Bytes of the bodies of UploadPart requests (what a create uploads).
    pub part_bytes: AtomicU64,
    /// UploadPartCopy requests, and the bytes their ranges name.
    pub copies_seen: AtomicU64,
    pub copied_bytes: AtomicU64,
    /// While set, every UploadPartCopy answers `412 PreconditionFailed` (the source
    /// changed since it was read).
    pub fail_copies: AtomicBool,
    pub gets_seen: AtomicU64,
    /// Drop every connection while set.
    pub down: AtomicBool,
    /// Accept requests and never answer them while set.
    pub hang: AtomicBool,
    /// While set, CompleteMultipartUpload number N (from 0, in arrival order) waits until
    /// `completes_released` is above N: the test lets completions through one at a time.
    pub hold_completes: AtomicBool,
    pub completes_seen: AtomicU64,
    pub completes_released: AtomicU64,
    /// When set, the next PutObject or CompleteMultipartUpload that succeeds (its object is
    /// in place) holds its answer while [`Self::write_held`] is set: the test writes over
    /// the key meanwhile, as a racing writer does on a store whose `If-None-Match` is not
    /// atomic (SeaweedFS).
    pub hold_next_write: AtomicBool,
    pub write_held: AtomicBool,
    /// Delay every GetObject by this many milliseconds.
    pub delay_gets_ms: AtomicU64,
    /// Delay every UploadPart by this many milliseconds.
    pub delay_parts_ms: AtomicU64,
    /// Cut the body of this many coming GetObject answers after [`Self::cut_after_bytes`]
    /// bytes (the connection closes with the `200` and its full `Content-Length` sent).
    pub cut_gets: AtomicI64,
    pub cut_after_bytes: AtomicU64,
    /// PUT requests (PutObject, UploadPart) whose body is covered by the signature, and
    /// those sent as `UNSIGNED-PAYLOAD`.
    pub signed_puts: AtomicU64,
    pub unsigned_puts: AtomicU64,
    /// This share of requests, in thousandths, answers `503 SlowDown` (S3's throttling).
    pub slow_down_per_mille: AtomicU64,
    /// This share of requests, in thousandths, loses its connection: before the store sees
    /// it, or for a GetObject that succeeds, after part of its body.
    pub drop_per_mille: AtomicU64,
    /// Faults injected by the two shares above.
    pub shared_faults: AtomicU64,
    /// The generator that picks the requests hit (seeded: a run is reproducible in the
    /// share it hits, if not in which request).
    dice: Dice,
}

/// A seeded [`StdRng`] for the faults that hit a share of the requests.
#[derive(Debug)]
struct Dice(std::sync::Mutex<StdRng>);

impl Default for Dice {
    fn default() -> Self {
        Self(std::sync::Mutex::new(StdRng::seed_from_u64(0x5EED)))
    }
}

impl Faults {
    fn new() -> Self {
        let f = Self::default();
        f.fail_parts_after.store(-1, Ordering::SeqCst);
        f.fail_gets_after.store(-1, Ordering::SeqCst);
        f
    }

    /// A number in 0..1000.
    fn roll(&self) -> u64 {
        let mut rng = self.dice.0.lock().unwrap_or_else(|e| e.into_inner());
        rng.random_range(0..1000)
    }
}

pub struct S3Server {
    pub addr: SocketAddr,
    pub root: PathBuf,
    faults: Arc<Faults>,
    accept: JoinHandle<()>,
}

impl S3Server {
    // Fault knobs and counters: every test reaches the faults through these.

    /// Fail every UploadPart after `n` more have succeeded (negative: never).
    pub fn fail_parts_after(&self, n: i64) {
        self.faults.fail_parts_after.store(n, Ordering::SeqCst);
    }

    /// Fail every GetObject after `n` have been answered in all (negative: never).
    pub fn fail_gets_after(&self, n: i64) {
        self.faults.fail_gets_after.store(n, Ordering::SeqCst);
    }

    /// Drop every connection while `on`.
    pub fn set_down(&self, on: bool) {
        self.faults.down.store(on, Ordering::SeqCst);
    }

    /// Accept requests and never answer them while `on`.
    pub fn set_hang(&self, on: bool) {
        self.faults.hang.store(on, Ordering::SeqCst);
    }

    /// Hold CompleteMultipartUpload number N until [`Self::release_completes`] passes N.
    pub fn hold_completes(&self, on: bool) {
        self.faults.hold_completes.store(on, Ordering::SeqCst);
    }

    /// Hold the answer of the next successful PutObject or CompleteMultipartUpload until
    /// [`Self::release_held_write`] (see [`Faults::hold_next_write`]).
    pub fn hold_next_write(&self) {
        self.faults.hold_next_write.store(true, Ordering::SeqCst);
    }

    /// Whether a write's answer is being held (its object already stored).
    pub fn write_held(&self) -> bool {
        self.faults.write_held.load(Ordering::SeqCst)
    }

    /// Lets the held answer go.
    pub fn release_held_write(&self) {
        self.faults.write_held.store(false, Ordering::SeqCst);
    }

    /// Let the held completions numbered below `n` through.
    pub fn release_completes(&self, n: u64) {
        self.faults.completes_released.store(n, Ordering::SeqCst);
    }

    /// Delay every GetObject by `ms` milliseconds.
    pub fn delay_gets_ms(&self, ms: u64) {
        self.faults.delay_gets_ms.store(ms, Ordering::SeqCst);
    }

    /// Delay every UploadPart by `ms` milliseconds.
    pub fn delay_parts_ms(&self, ms: u64) {
        self.faults.delay_parts_ms.store(ms, Ordering::SeqCst);
    }

    /// Cut the body of the next `n` GetObject answers (see [`Self::cut_after_bytes`]).
    pub fn cut_gets(&self, n: i64) {
        self.faults.cut_gets.store(n, Ordering::SeqCst);
    }

    /// Answer every UploadPartCopy with `412 PreconditionFailed` while `on`.
    pub fn fail_copies(&self, on: bool) {
        self.faults.fail_copies.store(on, Ordering::SeqCst);
    }

    /// UploadPartCopy requests so far, and the bytes their ranges named.
    pub fn copies(&self) -> (u64, u64) {
        (
            self.faults.copies_seen.load(Ordering::SeqCst),
            self.faults.copied_bytes.load(Ordering::SeqCst),
        )
    }

    /// Bytes uploaded in UploadPart bodies so far.
    pub fn part_bytes(&self) -> u64 {
        self.faults.part_bytes.load(Ordering::SeqCst)
    }

    /// Where a cut GetObject body stops.
    pub fn cut_after_bytes(&self, n: u64) {
        self.faults.cut_after_bytes.store(n, Ordering::SeqCst);
    }

    /// Answer this share of requests, in thousandths, with `503 SlowDown`.
    pub fn slow_down_per_mille(&self, n: u64) {
        self.faults.slow_down_per_mille.store(n, Ordering::SeqCst);
    }

    /// Lose the connection of this share of requests, in thousandths.
    pub fn drop_per_mille(&self, n: u64) {
        self.faults.drop_per_mille.store(n, Ordering::SeqCst);
    }

    /// GetObject requests answered so far.
    pub fn gets_seen(&self) -> u64 {
        self.faults.gets_seen.load(Ordering::SeqCst)
    }

    /// UploadPart requests seen so far.
    pub fn parts_seen(&self) -> u64 {
        self.faults.parts_seen.load(Ordering::SeqCst)
    }

    /// GetObject answers still to be cut.
    pub fn cut_gets_left(&self) -> i64 {
        self.faults.cut_gets.load(Ordering::SeqCst)
    }

    /// CompleteMultipartUpload requests seen so far.
    pub fn completes_seen(&self) -> u64 {
        self.faults.completes_seen.load(Ordering::SeqCst)
    }

    /// PUTs whose body the signature covers.
    pub fn signed_puts(&self) -> u64 {
        self.faults.signed_puts.load(Ordering::SeqCst)
    }

    /// PUTs sent as `UNSIGNED-PAYLOAD`.
    pub fn unsigned_puts(&self) -> u64 {
        self.faults.unsigned_puts.load(Ordering::SeqCst)
    }

    /// Faults injected by the two shares so far.
    pub fn shared_faults(&self) -> u64 {
        self.faults.shared_faults.load(Ordering::SeqCst)
    }

    /// Starts a server storing its buckets under `root`.
    ///
    /// # Panics
    /// When the port cannot be bound or `root` cannot be used.
    pub async fn start(root: &Path, addr: &str) -> Self {
        std::fs::create_dir_all(root).expect("create s3 root");
        let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs root");
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = TcpListener::bind(addr).await.expect("bind s3 server");
        let addr = listener.local_addr().expect("local addr");
        let faults = Arc::new(Faults::new());
        let f = faults.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if f.down.load(Ordering::SeqCst) {
                    drop(stream);
                    continue;
                }
                let service = service.clone();
                let f = f.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<Incoming>| {
                        let service = service.clone();
                        let f = f.clone();
                        async move { handle(&service, &f, req).await }
                    });
                    let _ = Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            root: root.to_path_buf(),
            faults,
            accept,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `PATCH /api/settings` body that sends a server's backups to `bucket` here.
    pub fn settings_patch(&self, bucket: &str) -> serde_json::Value {
        serde_json::json!({"backups": {"s3": {
            "enabled": true, "bucket": bucket, "region": "us-east-1", "endpoint": self.endpoint(),
            "accessKey": ACCESS_KEY, "secret": SECRET_KEY, "forcePathStyle": true,
        }}})
    }

    /// Multipart uploads started but neither completed nor aborted.
    pub fn pending_uploads(&self) -> usize {
        std::fs::read_dir(&self.root)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.starts_with(".upload-") && n.ends_with(".json")
                    })
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

type Resp = hyper::Response<s3s::Body>;

/// An `Err` makes hyper drop the connection without an answer.
async fn handle(
    service: &s3s::service::S3Service,
    faults: &Faults,
    req: hyper::Request<Incoming>,
) -> Result<Resp, std::io::Error> {
    let query = req.uri().query().unwrap_or("");
    let is_copy_part = req.method() == hyper::Method::PUT
        && query.contains("partNumber=")
        && req.headers().contains_key("x-amz-copy-source");
    let is_upload_part =
        req.method() == hyper::Method::PUT && query.contains("partNumber=") && !is_copy_part;
    let is_get = req.method() == hyper::Method::GET
        && !query.contains("list-type")
        && req.uri().path().matches('/').count() >= 2;
    if faults.down.load(Ordering::SeqCst) {
        return Ok(error_response(503, "ServiceUnavailable"));
    }
    if faults.hang.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let slow_down = faults.slow_down_per_mille.load(Ordering::SeqCst);
    let dropped = faults.drop_per_mille.load(Ordering::SeqCst);
    let mut cut_share = false;
    if slow_down + dropped > 0 {
        let roll = faults.roll();
        if roll < slow_down {
            faults.shared_faults.fetch_add(1, Ordering::SeqCst);
            return Ok(error_response(503, "SlowDown"));
        }
        if roll < slow_down + dropped {
            faults.shared_faults.fetch_add(1, Ordering::SeqCst);
            if !is_get {
                return Err(std::io::Error::other("injected: connection dropped"));
            }
            cut_share = true;
        }
    }
    let is_complete = req.method() == hyper::Method::POST
        && query.contains("uploadId=")
        && !query.contains("partNumber=");
    if is_complete && faults.hold_completes.load(Ordering::SeqCst) {
        let ticket = faults.completes_seen.fetch_add(1, Ordering::SeqCst);
        while faults.hold_completes.load(Ordering::SeqCst)
            && faults.completes_released.load(Ordering::SeqCst) <= ticket
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    if req.method() == hyper::Method::PUT {
        let unsigned = req
            .headers()
            .get("x-amz-content-sha256")
            .is_some_and(|v| v == "UNSIGNED-PAYLOAD");
        let counter = if unsigned {
            &faults.unsigned_puts
        } else {
            &faults.signed_puts
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
    if is_copy_part {
        faults.copies_seen.fetch_add(1, Ordering::SeqCst);
        let range = req
            .headers()
            .get("x-amz-copy-source-range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes="))
            .and_then(|v| v.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
        if let Some((a, b)) = range {
            faults.copied_bytes.fetch_add(b + 1 - a, Ordering::SeqCst);
        }
        if faults.fail_copies.load(Ordering::SeqCst) {
            return Ok(error_response(412, "PreconditionFailed"));
        }
    }
    if is_upload_part {
        let length = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        faults.part_bytes.fetch_add(length, Ordering::SeqCst);
        let delay = faults.delay_parts_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        let n = faults.parts_seen.fetch_add(1, Ordering::SeqCst) as i64;
        let limit = faults.fail_parts_after.load(Ordering::SeqCst);
        if limit >= 0 && n >= limit {
            return Ok(error_response(500, "InternalError"));
        }
    }
    if is_get {
        let delay = faults.delay_gets_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        let n = faults.gets_seen.fetch_add(1, Ordering::SeqCst) as i64;
        let limit = faults.fail_gets_after.load(Ordering::SeqCst);
        if limit >= 0 && n >= limit {
            return Ok(error_response(500, "InternalError"));
        }
    }
    let cut_count = is_get && faults.cut_gets.fetch_sub(1, Ordering::SeqCst) > 0;
    let cut = cut_count || cut_share;
    let is_put_object = req.method() == hyper::Method::PUT
        && !query.contains("partNumber=")
        && !req.headers().contains_key("x-amz-copy-source")
        && req.uri().path().trim_start_matches('/').contains('/');
    let hold = (is_complete || is_put_object)
        && faults
            .hold_next_write
            .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
    let req = req.map(s3s::Body::from);
    let resp = match service.call(req).await {
        Ok(resp) => resp,
        Err(_) => return Ok(error_response(500, "InternalError")),
    };
    if hold && resp.status().is_success() {
        faults.write_held.store(true, Ordering::SeqCst);
        while faults.write_held.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    if !cut || !resp.status().is_success() {
        return Ok(resp);
    }
    // The headers (with the whole length) and the first bytes only: hyper then closes the
    // connection, and the client sees the body end early.
    let (parts, body) = resp.into_parts();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let keep = if cut_count {
        faults.cut_after_bytes.load(Ordering::SeqCst) as usize
    } else {
        // A dropped connection: somewhere in the body.
        (faults.roll() as usize * bytes.len()) / 1000
    }
    .min(bytes.len());
    let kept = futures::stream::once(async move {
        Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes.slice(..keep)))
    });
    // The error comes after a pause, so that hyper has flushed the head and the kept bytes.
    let cut = futures::stream::once(async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        Err(std::io::Error::other("injected: body cut short"))
    });
    let cut_body = http_body_util::StreamBody::new(futures::StreamExt::chain(kept, cut));
    Ok(hyper::Response::from_parts(
        parts,
        s3s::Body::http_body_unsync(cut_body),
    ))
}

fn error_response(status: u16, code: &str) -> Resp {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected fault</Message></Error>"
    );
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(s3s::Body::from(body))
        .expect("valid response")
}
