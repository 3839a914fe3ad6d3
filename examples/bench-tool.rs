//! The ceilings `bench/run.py` measures the gateway against, each one stage of the create
//! pipeline alone, with the gateway's own code and settings:
//!
//! ```text
//! bench-tool read DIR                 read every file of DIR (no zip)
//! bench-tool compress DIR [LEVEL] [progress]
//!                                     zip DIR into a byte counter (no upload); with
//!                                     `progress`, counting into a live progress as a
//!                                     create does
//! bench-tool extract ZIP DEST [progress]
//!                                     the restore's extract of ZIP (read into memory
//!                                     first) into DEST, which must not exist
//! bench-tool upload FILE KEY          upload FILE's bytes to S3 (no zip, no disk reads
//!                                     beyond FILE) with the gateway's multipart code
//! bench-tool get KEY                  a direct GetObject of KEY into a byte counter
//! bench-tool probe gateway URL TOKEN  GET URL/api/backups every 20 ms until stdin closes
//! bench-tool probe store              ListObjectsV2 of the bucket, the same way
//! bench-tool rebuild DIR [COMMITS]    a point-in-time restore's rebuild of COMMITS
//!                                     (default 360,000: an hour at 100 commits/s)
//! ```
//!
//! `rebuild` writes `bench/writer.py`'s transactions into a database in DIR (which must not
//! exist), takes each minute's worth (6,000) from the WAL as the stream's segment, then
//! restarts the WAL (a new generation, as the stream sees after a checkpoint), and applies
//! every segment twice, each into an image of its own, timing only the applying: with the
//! gateway's `segment::Rebuild` (each page's last version in a segment) and, as the
//! baseline, every commit's pages in turn (what the rebuild did before). Each segment is
//! compressed as the stream ships it, and the time to read it back (inflate, check, index)
//! is timed apart. It checks that both images are the same bytes and that the database
//! passes `integrity_check`, and prints `{"commits", "segments", "raw_bytes",
//! "sealed_bytes", "read_secs", "page_writes", "baseline_page_writes", "rebuild_secs",
//! "baseline_secs"}`.
//!
//! The probes print `{"n", "errors", "p50_ms", "p99_ms", "max_ms"}`: latencies measured by a
//! native client on a keep-alive connection (a Python thread would add GIL waits).
//!
//! S3 settings come from the gateway's own variables: `GATEWAY_S3_ENDPOINT`,
//! `GATEWAY_S3_BUCKET`, `GATEWAY_PART_SIZE_MIB`, `GATEWAY_PARTS_IN_FLIGHT` and
//! `GATEWAY_S3_PAYLOAD_SIGNING` (the gateway's defaults), and
//! the credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`. Each command prints
//! one JSON line: `{"bytes": N, "bytes_out": N, "secs": F}`; `upload` also logs the store's
//! `multipart upload completed` line (with `complete_ms`) to stderr.

use backup_gateway::archive::{Exclude, Snapshots, WriteOptions, write_dir};
use backup_gateway::config::{
    DEFAULT_PART_SIZE_MIB, DEFAULT_PARTS_IN_FLIGHT, PayloadSigning, S3Config,
};
use backup_gateway::storage::s3::S3Store;
use backup_gateway::storage::{BackupStore, ByteStream, PutOptions};
use clap::ValueEnum;
use futures::TryStreamExt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Instant;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn usage() -> ! {
    eprintln!(
        "usage: bench-tool read DIR | compress DIR [LEVEL] [progress] | extract ZIP DEST \
         [progress] | upload FILE KEY | get KEY | probe gateway URL TOKEN | probe store | \
         rebuild DIR [COMMITS]"
    );
    std::process::exit(2)
}

/// A `Write` that only counts.
#[derive(Default)]
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn read_tree(dir: &Path, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let ft = entry.file_type()?;
        if ft.is_dir() {
            total += read_tree(&entry.path(), buf)?;
        } else if ft.is_file() {
            let mut f = std::fs::File::open(entry.path())?;
            loop {
                let n = f.read(buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
    }
    Ok(total)
}

async fn store() -> S3Store {
    let creds = (
        std::env::var("AWS_ACCESS_KEY_ID").ok(),
        std::env::var("AWS_SECRET_ACCESS_KEY").ok(),
    );
    S3Store::new(&S3Config {
        bucket: env("GATEWAY_S3_BUCKET", "ceiling"),
        endpoint: std::env::var("GATEWAY_S3_ENDPOINT").ok(),
        region: None,
        prefix: String::new(),
        force_path_style: true,
        payload_signing: PayloadSigning::from_str(&env("GATEWAY_S3_PAYLOAD_SIGNING", "auto"), true)
            .expect("GATEWAY_S3_PAYLOAD_SIGNING is auto, always or never"),
        credentials: match creds {
            (Some(k), Some(s)) => Some((k, s)),
            _ => None,
        },
        read_timeout: std::time::Duration::from_secs(
            backup_gateway::config::DEFAULT_S3_READ_TIMEOUT_SECS,
        ),
    })
    .await
}

/// A progress as the busy lock gives a create or restore, with its log ticker running.
fn live_progress(key: &str) -> std::sync::Arc<backup_gateway::ops::progress::Progress> {
    use backup_gateway::ops::progress::{Kind, Progress, Trigger};
    let p = Progress::new(Kind::Create, Trigger::Api, key);
    std::mem::forget(p.report_every(std::time::Duration::from_secs(10)));
    p
}

/// Indexes, checks and extracts `zip` as a restore does; the bytes of file data.
fn extract(
    zip: &[u8],
    dest: &Path,
    progress: Option<std::sync::Arc<backup_gateway::ops::progress::Progress>>,
) -> anyhow::Result<u64> {
    use backup_gateway::archive::{Limits, check, extract, zip::reader};
    let (dir, entries) = reader::index(zip)?;
    let plan = check::check_entries(entries, dir.offset, &Limits::default(), &[])?;
    extract::extract(
        &plan,
        &mut &zip[..],
        0,
        dest,
        progress.as_deref(),
        &mut |_| Ok(()),
    )?;
    Ok(plan.total_size)
}

fn report(bytes: u64, bytes_out: u64, started: Instant) {
    println!(
        "{{\"bytes\": {bytes}, \"bytes_out\": {bytes_out}, \"secs\": {:.4}}}",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The store's own log lines (the multipart completion time) go to stderr.
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "backup_gateway=info".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match (arg(0), arg(1)) {
        (Some("read"), Some(dir)) => {
            let started = Instant::now();
            let mut buf = vec![0u8; 256 * 1024];
            let n = read_tree(Path::new(dir), &mut buf)?;
            report(n, 0, started);
        }
        (Some("compress"), Some(dir)) => {
            let level = arg(2).map_or(Ok(1), str::parse)?;
            compress(dir, level, arg(3) == Some("progress")).await?;
        }
        (Some("extract"), Some(zip)) => {
            let dest = Path::new(arg(2).unwrap_or_else(|| usage())).to_path_buf();
            let progress = (arg(3) == Some("progress")).then(|| live_progress("extract"));
            let bytes = std::fs::read(zip)?;
            std::fs::create_dir(&dest)?;
            let started = Instant::now();
            let total =
                tokio::task::spawn_blocking(move || extract(&bytes, &dest, progress)).await??;
            report(total, 0, started);
        }
        (Some("upload"), Some(file)) => {
            upload(file, arg(2).unwrap_or_else(|| usage())).await?;
        }
        (Some("get"), Some(key)) => {
            let store = store().await;
            let started = Instant::now();
            let mut stream = store.get(key, None).await?;
            let mut n = 0u64;
            while let Some(chunk) = stream.try_next().await? {
                n += chunk.len() as u64;
            }
            report(n, n, started);
        }
        (Some("probe"), Some(kind)) => {
            let gateway = match kind {
                "gateway" => Some((
                    format!("{}/api/backups", arg(2).unwrap_or_else(|| usage())),
                    arg(3).unwrap_or_else(|| usage()).to_string(),
                )),
                "store" => None,
                _ => usage(),
            };
            probe(gateway).await?;
        }
        (Some("rebuild"), Some(dir)) => {
            let commits = arg(2).map_or(Ok(360_000), str::parse)?;
            let dir = Path::new(dir).to_path_buf();
            tokio::task::spawn_blocking(move || rebuild(&dir, commits)).await??;
        }
        _ => usage(),
    }
    Ok(())
}

/// `bench-tool rebuild` (module docs).
fn rebuild(dir: &Path, commits: i64) -> anyhow::Result<()> {
    use backup_gateway::pitr::segment::{Rebuild, Segment, unseal};
    std::fs::create_dir(dir)?;
    let (conn, page_size, base) = rebuild_bench::ledger(dir)?;
    let image = |name: &str| -> io::Result<std::fs::File> {
        let path = dir.join(name);
        std::fs::write(&path, &base)?;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
    };
    let mut rebuild: Option<Rebuild<std::fs::File>> = None;
    let mut rebuilt_image = Some(image("rebuilt.db")?);
    let mut baseline = rebuild_bench::EveryCommit::new(image("baseline.db")?, page_size);
    let mut t = rebuild_bench::Totals::default();
    while t.commits < commits {
        rebuild_bench::transfers(&conn, &mut t.commits, commits)?;
        let (sealed, raw) = rebuild_bench::minute(dir, page_size, t.commits)?;
        (t.raw_bytes, t.sealed_bytes, t.segments) = (
            t.raw_bytes + raw,
            t.sealed_bytes + sealed.len() as u64,
            t.segments + 1,
        );
        // Read back as a restore reads it: inflated, checked, indexed.
        let started = Instant::now();
        let segment = Segment::decode(unseal(sealed)?)?;
        t.read_secs += started.elapsed().as_secs_f64();

        let started = Instant::now();
        let salt = segment.header.salt;
        let r = rebuild.get_or_insert_with(|| {
            Rebuild::new(rebuilt_image.take().expect("taken once"), page_size, salt)
        });
        if r.salt() != salt {
            r.next_generation(salt)?;
        }
        anyhow::ensure!(r.apply(&segment, i64::MAX)?, "a commit past the moment");
        t.rebuild_secs += started.elapsed().as_secs_f64();
        t.page_writes += segment
            .commits
            .iter()
            .flat_map(|c| c.pages.iter().map(|p| p.0))
            .collect::<std::collections::HashSet<u32>>()
            .len() as u64;

        let started = Instant::now();
        baseline.apply(&segment)?;
        t.baseline_secs += started.elapsed().as_secs_f64();

        // The WAL restarts: the next minute is a new generation.
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        anyhow::ensure!(busy == 0, "the checkpoint could not finish");
    }
    let started = Instant::now();
    let rebuilt = rebuild.expect("one segment at least").finish()?;
    rebuilt.sync_all()?;
    t.rebuild_secs += started.elapsed().as_secs_f64();
    let started = Instant::now();
    t.baseline_page_writes = baseline.finish()?;
    t.baseline_secs += started.elapsed().as_secs_f64();
    anyhow::ensure!(
        std::fs::read(dir.join("rebuilt.db"))? == std::fs::read(dir.join("baseline.db"))?,
        "the two images differ"
    );
    let check: String = rusqlite::Connection::open(dir.join("rebuilt.db"))?.query_row(
        "PRAGMA integrity_check",
        [],
        |r| r.get(0),
    )?;
    anyhow::ensure!(check == "ok", "the rebuilt database: {check}");
    println!("{}", serde_json::to_string(&t)?);
    Ok(())
}

/// The parts of `bench-tool rebuild`.
mod rebuild_bench {
    use backup_gateway::pitr::segment::{Segment, SegmentHeader, encode, seal};
    use backup_gateway::pitr::wal::{self, Commit};
    use std::io::{self, Seek, SeekFrom, Write};
    use std::path::Path;

    const ACCOUNTS: i64 = 100;
    /// A minute at 100 commits/s.
    const PER_SEGMENT: i64 = 6_000;

    /// What the run measured (printed as JSON).
    #[derive(Default, serde::Serialize)]
    pub struct Totals {
        pub commits: i64,
        pub segments: u64,
        pub raw_bytes: u64,
        pub sealed_bytes: u64,
        pub read_secs: f64,
        pub page_writes: u64,
        pub baseline_page_writes: u64,
        pub rebuild_secs: f64,
        pub baseline_secs: f64,
    }

    /// `bench/writer.py`'s database in `dir`, in WAL mode with no autocheckpoint: the
    /// connection, the page size, and the image before any commit of the run.
    pub fn ledger(dir: &Path) -> anyhow::Result<(rusqlite::Connection, u32, Vec<u8>)> {
        let db = dir.join("data.db");
        let conn = rusqlite::Connection::open(&db)?;
        conn.pragma_update(None, "journal_mode", "wal")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.execute_batch(
            "CREATE TABLE bench_accounts (id INTEGER PRIMARY KEY, balance INTEGER);
             CREATE TABLE bench_ledger (seq INTEGER PRIMARY KEY, at REAL, note BLOB);",
        )?;
        for id in 0..ACCOUNTS {
            conn.execute("INSERT INTO bench_accounts VALUES (?1, 1000)", [id])?;
        }
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let page_size = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok((conn, page_size, std::fs::read(db)?))
    }

    /// A minute of `bench/writer.py`'s transfers (fewer if `until` comes first).
    pub fn transfers(conn: &rusqlite::Connection, n: &mut i64, until: i64) -> anyhow::Result<()> {
        for _ in 0..PER_SEGMENT.min(until - *n) {
            *n += 1;
            let (a, b) = (*n % ACCOUNTS, (*n * 7) % ACCOUNTS);
            conn.execute_batch("BEGIN IMMEDIATE")?;
            conn.execute(
                "UPDATE bench_accounts SET balance = balance - 1 WHERE id = ?1",
                [a],
            )?;
            conn.execute(
                "UPDATE bench_accounts SET balance = balance + 1 WHERE id = ?1",
                [b],
            )?;
            conn.execute(
                "INSERT INTO bench_ledger (at, note) VALUES (?1, randomblob(100))",
                [*n as f64],
            )?;
            conn.execute_batch("COMMIT")?;
        }
        Ok(())
    }

    /// The WAL's commits (the last being number `last`) as the stream's segment,
    /// compressed as it ships them; and its size before.
    pub fn minute(dir: &Path, page_size: u32, last: i64) -> anyhow::Result<(Vec<u8>, u64)> {
        let mut wal_file = std::fs::File::open(dir.join("data.db-wal"))?;
        let scanned = wal::read_committed(&mut wal_file, None)?
            .map_err(|e| anyhow::anyhow!("the WAL: {e:?}"))?;
        let first = last - i64::try_from(scanned.commits.len())?;
        let timed: Vec<(i64, &Commit)> = (first..).zip(&scanned.commits).collect();
        let header = SegmentHeader {
            page_size,
            salt: scanned.resume.header.salt,
            first_seq: 0,
            commits: u32::try_from(timed.len())?,
        };
        let raw = encode(header, &timed, &mut wal_file)?;
        Ok((seal(&raw), raw.len() as u64))
    }

    /// The baseline: every commit's pages written in turn.
    pub struct EveryCommit {
        image: std::fs::File,
        page_size: u32,
        db_pages: u32,
        writes: u64,
    }

    impl EveryCommit {
        pub fn new(image: std::fs::File, page_size: u32) -> Self {
            Self {
                image,
                page_size,
                db_pages: 0,
                writes: 0,
            }
        }

        pub fn apply(&mut self, segment: &Segment) -> io::Result<()> {
            for commit in &segment.commits {
                for &(number, offset) in &commit.pages {
                    if number == 0 {
                        continue;
                    }
                    let at = u64::from(number - 1) * u64::from(self.page_size);
                    self.image.seek(SeekFrom::Start(at))?;
                    self.image.write_all(segment.page(offset))?;
                    self.writes += 1;
                }
                self.db_pages = commit.db_pages;
            }
            Ok(())
        }

        /// Cuts the image to the last commit's size and syncs it; returns the pages written.
        pub fn finish(self) -> io::Result<u64> {
            self.image
                .set_len(u64::from(self.db_pages) * u64::from(self.page_size))?;
            self.image.sync_all()?;
            Ok(self.writes)
        }
    }
}

/// Zips `dir` into a counter: the ceiling of the create's pipeline (no store).
async fn compress(dir: &str, level: u32, progress: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let opts = WriteOptions {
        level,
        exclude: Exclude::paths(vec![".backup-gateway".into()]),
        progress: progress.then(|| live_progress("compress")),
        read_from: Default::default(),
    };
    let dir = dir.to_string();
    // The ceiling reads databases as plain files: what the snapshot adds shows in the
    // gateway's create against it.
    let stats = tokio::task::spawn_blocking(move || {
        write_dir(
            Path::new(&dir),
            &opts,
            &mut Snapshots::disabled(),
            Counter(0),
        )
    })
    .await??;
    report(stats.bytes_in, stats.bytes_out, started);
    Ok(())
}

/// Puts `file` under `key` through the store's put, in the create's chunks.
async fn upload(file: &str, key: &str) -> anyhow::Result<()> {
    let size = std::fs::metadata(file)?.len();
    let opts = PutOptions {
        part_size: backup_gateway::storage::parts::part_size_for(
            env("GATEWAY_PART_SIZE_MIB", &DEFAULT_PART_SIZE_MIB.to_string()).parse::<u64>()? << 20,
            size,
        ),
        parts_in_flight: env(
            "GATEWAY_PARTS_IN_FLIGHT",
            &DEFAULT_PARTS_IN_FLIGHT.to_string(),
        )
        .parse()?,
        budget: backup_gateway::util::bufpool::Budget::new(
            backup_gateway::config::DEFAULT_MEMORY_BUDGET_MIB << 20,
        ),
        copy: None,
    };
    let store = store().await;
    let started = Instant::now();
    // The same 256 KiB chunks the create pipeline hands to the store.
    let file = tokio::fs::File::open(file).await?;
    let body: ByteStream<'static> = Box::pin(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    let n = store.put(key, body, opts).await?;
    report(n, n, started);
    Ok(())
}

/// Lists every 20 ms until stdin closes, then prints the latency figures.
async fn probe(gateway: Option<(String, String)>) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let store = store().await;
    let client = reqwest::Client::new();
    let mut stdin_closed = Box::pin(async {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    });
    let (mut lat, mut errors) = (Vec::<f64>::new(), 0u64);
    loop {
        let started = Instant::now();
        let ok = match &gateway {
            Some((url, token)) => match client.get(url).header("Authorization", token).send().await
            {
                Ok(res) => res.status().is_success() && res.bytes().await.is_ok(),
                Err(_) => false,
            },
            None => store.list().await.is_ok(),
        };
        if ok {
            lat.push(started.elapsed().as_secs_f64() * 1000.0);
        } else {
            errors += 1;
        }
        tokio::select! {
            () = &mut stdin_closed => break,
            () = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
        }
    }
    lat.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        lat.get(((q * lat.len() as f64) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "{{\"n\": {}, \"errors\": {errors}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}}}",
        lat.len(),
        pick(0.50),
        pick(0.99),
        lat.last().copied().unwrap_or(0.0)
    );
    Ok(())
}
