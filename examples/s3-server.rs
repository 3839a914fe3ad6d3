//! A standalone S3 server for manual runs, conformance checks and benchmarks: the same
//! in-process server the tests use (`s3s` + `s3s-fs` over a directory), SigV4-checked.
//!
//! ```text
//! cargo run --example s3-server -- [ROOT_DIR] [ADDR] [BUCKET...]
//! ```
//! Defaults: `./s3-data`, `127.0.0.1:9000`. Each BUCKET is created if missing. Credentials
//! are printed at start (fixed test values).
// The test server's request handler (tests/api/s3_server.rs) is one fault switch, long.
#![allow(clippy::too_many_lines)]

#[path = "../tests/api/s3_server.rs"]
mod s3_server;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let root = args.next().unwrap_or_else(|| "./s3-data".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9000".into());
    let buckets: Vec<String> = args.collect();
    for b in &buckets {
        std::fs::create_dir_all(std::path::Path::new(&root).join(b)).expect("create bucket dir");
    }
    let server = s3_server::S3Server::start(std::path::Path::new(&root), &addr).await;
    println!(
        "S3 server at {} (root {root}); access key {} secret key {}; buckets: {}",
        server.endpoint(),
        s3_server::ACCESS_KEY,
        s3_server::SECRET_KEY,
        if buckets.is_empty() {
            "none created".to_string()
        } else {
            buckets.join(", ")
        }
    );
    let _ = tokio::signal::ctrl_c().await;
}
