//! Consistent snapshots of live SQLite databases: a writer commits transfers between
//! accounts (a constant total) and a gapless ledger while the gateway creates backups; every
//! archived image must open on its own, pass `integrity_check`, keep the invariant, have no
//! gap, and be no older than the create request. Also: databases that cannot be read
//! consistently, `--exclude`, and restores that leave no stale sidecar.

use crate::helpers::*;
use crate::on_both_backends;
use crate::tree::read_zip;
use rusqlite::Connection;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

pub(crate) const ACCOUNTS: i64 = 500;
pub(crate) const START_BALANCE: i64 = 1_000;

on_both_backends!(
    a_wal_database_written_during_the_create_is_archived_consistently,
    a_rollback_journal_database_written_during_the_create_is_archived_consistently,
    a_damaged_database_fails_the_create_naming_it_and_stores_nothing,
    an_exclusively_locked_database_fails_the_create_and_leaves_no_lock,
);

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Journal {
    Wal,
    Rollback,
}

/// A bank: accounts whose balances always sum to the same total, a ledger with one row per
/// transfer numbered 1, 2, 3, ..., and `pad_mib` MiB of filler so that streaming it takes a
/// while.
pub(crate) fn make_bank(path: &Path, journal: Journal, pad_mib: usize) {
    let c = Connection::open(path).unwrap();
    let mode = if journal == Journal::Wal {
        "wal"
    } else {
        "delete"
    };
    c.pragma_update_and_check(None, "journal_mode", mode, |r| r.get::<_, String>(0))
        .unwrap();
    c.execute_batch(&format!(
        "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
         CREATE TABLE ledger(seq INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, note BLOB);
         CREATE TABLE pad(id INTEGER PRIMARY KEY, v BLOB);
         CREATE INDEX ledger_at ON ledger(at_ms);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ACCOUNTS})
         INSERT INTO accounts SELECT i, {START_BALANCE} FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO pad(v) SELECT randomblob(512) || zeroblob(512) FROM n;",
        rows = pad_mib * 1024
    ))
    .unwrap();
}

/// The application, in a process of its own as a real one is (`tests/fixtures/bank_writer.py`:
/// SQLite's locks belong to a process, and a writer inside the gateway's process would not
/// see a lock the gateway loses): it commits transfers and, for WAL, runs passive
/// checkpoints in a loop, beside SQLite's autocheckpoint. Its stdout says after each commit
/// how far it is and how long the commit took.
pub(crate) struct Writer {
    child: std::process::Child,
    /// The ledger's last committed sequence number.
    committed: Arc<AtomicI64>,
    /// The slowest commit so far, in microseconds.
    worst_us: Arc<AtomicU64>,
    lines: std::thread::JoinHandle<()>,
}

impl Writer {
    pub(crate) fn start(path: &Path, journal: Journal) -> Self {
        Self::paced(path, journal, 0)
    }

    /// A writer that sleeps `pause_ms` after each commit.
    pub(crate) fn paced(path: &Path, journal: Journal, pause_ms: u64) -> Self {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bank_writer.py");
        let mode = if journal == Journal::Wal {
            "wal"
        } else {
            "delete"
        };
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .arg(path)
            .arg(mode)
            .arg(pause_ms.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the writer");
        let committed = Arc::new(AtomicI64::new(0));
        let worst_us = Arc::new(AtomicU64::new(0));
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let lines = {
            let (committed, worst_us) = (committed.clone(), worst_us.clone());
            std::thread::spawn(move || {
                for line in stdout.lines() {
                    let line = line.unwrap();
                    let (seq, us) = line.split_once(' ').expect("SEQ MICROSECONDS");
                    worst_us.fetch_max(us.parse().unwrap(), Ordering::Relaxed);
                    committed.store(seq.parse().unwrap(), Ordering::SeqCst);
                }
            })
        };
        Self {
            child,
            committed,
            worst_us,
            lines,
        }
    }

    pub(crate) fn committed(&self) -> i64 {
        self.committed.load(Ordering::SeqCst)
    }

    fn reset_worst(&self) {
        self.worst_us.store(0, Ordering::Relaxed);
    }

    fn worst(&self) -> Duration {
        Duration::from_micros(self.worst_us.load(Ordering::Relaxed))
    }

    /// Waits until the writer has committed `n` transfers; fails at once if it died.
    pub(crate) async fn wait_for(&mut self, n: i64) {
        wait_until(30, || {
            let alive = self.child.try_wait().unwrap().is_none();
            let done = self.committed() >= n;
            async move {
                assert!(alive || done, "the writer ended before {n} commits");
                done
            }
        })
        .await;
    }

    /// Stops the writer (its stdin closes) and checks that every commit succeeded.
    /// Kills the writer with SIGKILL, mid-transaction or not, as a crash would; returns the
    /// last sequence number it reported committed.
    pub(crate) fn kill(mut self) -> i64 {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.lines.join().unwrap();
        self.committed.load(Ordering::SeqCst)
    }

    /// Returns the last committed sequence number.
    pub(crate) fn stop(mut self) -> i64 {
        drop(self.child.stdin.take());
        let out = self.child.wait_with_output().unwrap();
        self.lines.join().unwrap();
        assert!(
            out.status.success(),
            "the writer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.committed.load(Ordering::SeqCst)
    }
}

/// Checks an archived bank image: it opens on its own, passes `integrity_check`, the total
/// is unchanged, the ledger has no gap, and it holds at least `min_seq` transfers.
fn check_bank(image: &[u8], min_seq: i64) -> i64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("restored.db");
    std::fs::write(&path, image).unwrap();
    let max = bank_ledger(&path).len() as i64;
    assert!(
        max >= min_seq,
        "the image ({max} transfers) is older than the create request ({min_seq})"
    );
    max
}

/// The ledger of the bank at `db`, `(seq, at_ms)` in order, after checking it: it opens,
/// passes `integrity_check`, keeps the total, has no gap.
pub fn bank_ledger(db: &Path) -> Vec<(i64, i64)> {
    let c = Connection::open(db).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let total: i64 = c
        .query_row("SELECT sum(balance) FROM accounts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(total, ACCOUNTS * START_BALANCE, "the invariant holds");
    let mut stmt = c
        .prepare("SELECT seq, at_ms FROM ledger ORDER BY seq")
        .unwrap();
    let rows: Vec<(i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (i, (seq, _)) in rows.iter().enumerate() {
        assert_eq!(*seq, i as i64 + 1, "the ledger has no gap");
    }
    rows
}

async fn live_database_is_archived_consistently(backend: Backend, journal: Journal) {
    let app = spawn_app_on(backend).await;
    let db = app.data_dir.join("data.db");
    make_bank(&db, journal, 24);
    write_file(&app.data_dir, "storage/a.txt", b"beside the database");
    let mut writer = Writer::start(&db, journal);
    writer.wait_for(20).await;

    let mut worst = Vec::new();
    for trial in 0..3 {
        let key = format!("live-{trial}.zip");
        let before = writer.committed();
        writer.reset_worst();

        let res = app.create(Some(&key)).await;

        assert_eq!(res.status(), 204, "{:?}", res.text().await);
        worst.push(writer.worst());
        let during = writer.committed() - before;
        let entries = read_zip(&app.download_bytes(&key).await).await;
        let names: Vec<&String> = entries.keys().collect();
        assert!(
            !names
                .iter()
                .any(|n| n.ends_with("-wal") || n.ends_with("-shm") || n.ends_with("-journal")),
            "no sidecar is archived: {names:?}"
        );
        assert_eq!(entries["storage/a.txt"].2, b"beside the database");
        let seq = check_bank(&entries["data.db"].2, before);
        if journal == Journal::Wal {
            // The writer was never held up, so it committed during the create.
            assert!(during > 0, "trial {trial}: no commit during the create");
        }
        eprintln!(
            "trial {trial}: image at transfer {seq}, {before} before the request, \
             {during} committed during the create, worst commit {:?}",
            worst[trial]
        );
    }
    writer.stop();
}

async fn a_wal_database_written_during_the_create_is_archived_consistently(backend: Backend) {
    live_database_is_archived_consistently(backend, Journal::Wal).await;
}

async fn a_rollback_journal_database_written_during_the_create_is_archived_consistently(
    backend: Backend,
) {
    live_database_is_archived_consistently(backend, Journal::Rollback).await;
}

/// Asserts the create answer for a database that cannot be read, naming it.
async fn assert_unreadable(res: reqwest::Response, file: &str, reason: &str) {
    let body = assert_error(res, 400, "Failed to create backup.").await;
    let field = &body["data"]["database"];
    assert_eq!(field["code"], "validation_database_unreadable", "{body}");
    let message = field["message"].as_str().unwrap();
    assert!(message.contains(file), "{message}");
    assert!(message.contains(reason), "{message}");
}

async fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(app.keys().await, Vec::<String>::new());
    if app.backend.is_s3() {
        assert_eq!(app.pending_uploads().await, 0);
    }
}

async fn a_damaged_database_fails_the_create_naming_it_and_stores_nothing(backend: Backend) {
    let app = spawn_app_on(backend).await;
    write_file(&app.data_dir, "a-first.txt", &pseudo_random(3 << 20, 1));
    // SQLite's header, then no database.
    let mut fake = b"SQLite format 3\0".to_vec();
    fake.extend(pseudo_random(64 * 1024, 2));
    write_file(&app.data_dir, "sub/broken.db", &fake);

    let res = app.create(Some("damaged.zip")).await;

    assert_unreadable(res, "sub/broken.db", "not a database").await;
    assert_nothing_stored(&app).await;
    // The busy lock is free again: once the file is gone, a create works.
    std::fs::remove_file(app.data_dir.join("sub/broken.db")).unwrap();
    assert_eq!(app.create(Some("after.zip")).await.status(), 204);
}

async fn an_exclusively_locked_database_fails_the_create_and_leaves_no_lock(backend: Backend) {
    let app = spawn_app_with(Options {
        backend,
        config: Config {
            snapshot: backup_gateway::archive::SnapshotOptions {
                busy_timeout: Duration::from_millis(300),
            },
            ..test_config()
        },
        ..Options::default()
    })
    .await;
    let db = app.data_dir.join("data.db");
    make_bank(&db, Journal::Wal, 1);
    let holder = Connection::open(&db).unwrap();
    holder
        .pragma_update(None, "locking_mode", "EXCLUSIVE")
        .unwrap();
    holder
        .execute("UPDATE accounts SET balance = balance WHERE id = 1", [])
        .unwrap();

    let res = app.create(Some("locked.zip")).await;

    assert_unreadable(res, "data.db", "locked").await;
    assert_nothing_stored(&app).await;
    // The gateway holds nothing: the application keeps writing, and once it lets go of its
    // exclusive lock, a create works.
    holder
        .execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1", [])
        .unwrap();
    holder
        .execute("UPDATE accounts SET balance = balance - 1 WHERE id = 1", [])
        .unwrap();
    drop(holder);
    assert_eq!(app.create(Some("unlocked.zip")).await.status(), 204);
    let entries = read_zip(&app.download_bytes("unlocked.zip").await).await;
    check_bank(&entries["data.db"].2, 0);
}

#[tokio::test]
async fn databases_are_found_by_their_header_and_excluded_paths_are_left_out() {
    let app = spawn_app_with(Options {
        backend: Backend::Local,
        config: Config {
            exclude: vec!["logs/*.log".into(), "**/*.tmp".into(), "cache".into()],
            ..test_config()
        },
        ..Options::default()
    })
    .await;
    // A database under a name that says nothing.
    std::fs::create_dir_all(app.data_dir.join("storage")).unwrap();
    make_bank(&app.data_dir.join("storage/blob.bin"), Journal::Wal, 1);
    let mut writer = Writer::start(&app.data_dir.join("storage/blob.bin"), Journal::Wal);
    writer.wait_for(5).await;
    write_file(&app.data_dir, "logs/app.log", b"left out");
    write_file(&app.data_dir, "logs/keep.txt", b"kept");
    write_file(&app.data_dir, "storage/x/part.tmp", b"left out");
    write_file(&app.data_dir, "cache/a/b", b"left out");
    write_file(
        &app.data_dir,
        ".pb_temp_to_delete/pb_backup_x",
        b"PocketBase's scratch",
    );

    assert_eq!(app.create(Some("ex.zip")).await.status(), 204);
    let before = writer.committed();
    writer.stop();

    let entries = read_zip(&app.download_bytes("ex.zip").await).await;
    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "logs",
            "logs/keep.txt",
            "storage",
            "storage/blob.bin",
            "storage/x"
        ]
    );
    check_bank(&entries["storage/blob.bin"].2, before.min(5));
}

#[tokio::test]
async fn a_restore_leaves_no_stale_sidecar_beside_the_restored_database() {
    let app = spawn_local_app().await;
    let db = app.data_dir.join("data.db");
    make_bank(&db, Journal::Wal, 1);
    let mut writer = Writer::start(&db, Journal::Wal);
    writer.wait_for(50).await;
    assert_eq!(app.create(Some("then.zip")).await.status(), 204);
    writer.stop();
    let entries = read_zip(&app.download_bytes("then.zip").await).await;
    let then = check_bank(&entries["data.db"].2, 50);
    // Later writes stay in the WAL (no checkpoint, none on close), as after a crash of the
    // application: an old `-wal` that SQLite would replay into the restored image.
    {
        let c = Connection::open(&db).unwrap();
        c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        c.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .unwrap();
        c.execute_batch(
            "DELETE FROM ledger WHERE seq > 10; UPDATE accounts SET balance = 0 WHERE id = 1;",
        )
        .unwrap();
    }
    assert!(app.data_dir.join("data.db-wal").metadata().unwrap().len() > 0);

    assert_eq!(app.restore("then.zip").await.status(), 204);
    let status = app.wait_restore_done().await;

    assert_eq!(status["status"], "ok", "{status}");
    assert!(!app.data_dir.join("data.db-wal").exists());
    assert!(!app.data_dir.join("data.db-shm").exists());
    let restored = std::fs::read(&db).unwrap();
    assert_eq!(check_bank(&restored, then), then);
}

/// Creates `n` records in PocketBase's `notes` collection through its API, one request each.
async fn create_notes(client: &reqwest::Client, base: &str, token: &str, from: usize, n: usize) {
    for i in from..from + n {
        let res = client
            .post(format!("{base}/api/collections/notes/records"))
            .header("Authorization", token)
            .json(&serde_json::json!({"title": format!("note {i}"), "n": i}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{:?}", res.text().await);
    }
}

fn pocketbase_records(dir: &Path) -> (String, i64, i64) {
    let c = Connection::open(dir.join("data.db")).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    let (count, max): (i64, i64) = c
        .query_row("SELECT count(*), coalesce(max(n), 0) FROM notes", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    (check, count, max)
}

#[tokio::test]
async fn a_live_pocketbase_directory_backs_up_to_an_archive_that_a_fresh_pocketbase_serves() {
    // PocketBase runs on the gateway's data directory, and records are created through its
    // API while the gateway backs that directory up.
    let app = spawn_app().await;
    let (_pb, pb) = start_pocketbase(&app.data_dir).await;
    let client = reqwest::Client::new();
    let token = login(&client, &pb).await;
    let res = client
        .post(format!("{pb}/api/collections"))
        .header("Authorization", &token)
        .json(&serde_json::json!({
            "name": "notes", "type": "base",
            "fields": [{"name": "title", "type": "text"}, {"name": "n", "type": "number"}],
            "listRule": "", "viewRule": ""
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    create_notes(&client, &pb, &token, 1, 50).await;
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicI64::new(50));
    let writer = {
        let (client, pb, token, stop, created) = (
            client.clone(),
            pb.clone(),
            token.clone(),
            stop.clone(),
            created.clone(),
        );
        tokio::spawn(async move {
            let mut i = 51;
            while !stop.load(Ordering::Relaxed) {
                create_notes(&client, &pb, &token, i, 1).await;
                created.store(i as i64, Ordering::SeqCst);
                i += 1;
            }
        })
    };
    let before = created.load(Ordering::SeqCst);

    let res = app.create(Some("live-pb.zip")).await;

    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let bytes = app.download_bytes("live-pb.zip").await;
    let entries = read_zip(&bytes).await;
    assert!(entries.contains_key("data.db") && entries.contains_key("auxiliary.db"));
    assert!(
        !entries
            .keys()
            .any(|k| k.ends_with("-wal") || k.ends_with("-shm"))
    );
    // The image itself: whole, and every record up to the newest without a gap.
    let image = tempfile::tempdir().unwrap();
    std::fs::write(image.path().join("data.db"), &entries["data.db"].2).unwrap();
    let (check, count, max) = pocketbase_records(image.path());
    assert_eq!(check, "ok");
    assert_eq!(count, max, "records 1..{max} without a gap");
    assert!(max >= before, "{max} records, {before} before the create");
    // Restored by a fresh PocketBase through its own API: it answers with the records
    // (`notes` exists only in the restored data).
    let fresh = tempfile::tempdir().unwrap();
    let (_pb2, pb2, fresh_dir) =
        restore_with_pocketbase(fresh.path(), bytes, "live-pb.zip", |_| true).await;
    let url = format!("{pb2}/api/collections/notes/records?perPage=1");
    wait_until(120, || {
        let (c, u) = (client.clone(), url.clone());
        async move { c.get(u).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    let list: serde_json::Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["totalItems"], count, "{list}");
    let (check, restored, _) = pocketbase_records(&fresh_dir);
    assert_eq!((check.as_str(), restored), ("ok", count));
}
