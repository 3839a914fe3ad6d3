//! Incremental creates: a create after a backup copies the unchanged files' entries from it
//! inside the store (UploadPartCopy, on the in-process S3 server and on SeaweedFS) and
//! uploads only the rest, and the archive is still a whole zip: Python's zipfile, `unzip
//! -t`, the gateway's own restore and the real PocketBase read it, also once the backup it
//! copied from is deleted.

use crate::helpers::*;
use crate::on_both_s3_stores;
use crate::tree::{Node, assert_zip_matches_tree, read_zip, snapshot};
use backup_gateway::config::Incremental;
use std::collections::BTreeMap;
use std::path::Path;

const EXCLUDED: &[&str] = &["backups", ".backup-gateway"];
const MIB: usize = 1 << 20;

/// 24 files of 1 MiB that do not compress (so entries of 1 MiB), small text files, a
/// directory, and a SQLite database.
fn fill(root: &Path) {
    for i in 0..24u64 {
        write_file(
            root,
            &format!("storage/col/{i:02}.bin"),
            &pseudo_random(MIB, i),
        );
    }
    for i in 0..20 {
        write_file(
            root,
            &format!("storage/notes/{i:02}.txt"),
            format!("note {i} ").repeat(50).as_bytes(),
        );
    }
    std::fs::create_dir_all(root.join("empty")).unwrap();
    let db = rusqlite::Connection::open(root.join("data.db")).unwrap();
    db.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    settle(root);
}

/// What changes between two backups: one large file rewritten, one deleted, one added, a
/// note rewritten, a row in the database.
fn change(root: &Path) {
    write_file(root, "storage/col/10.bin", &pseudo_random(MIB, 1010));
    std::fs::remove_file(root.join("storage/col/20.bin")).unwrap();
    write_file(root, "storage/col/new.bin", &pseudo_random(MIB / 2, 99));
    write_file(root, "storage/notes/03.txt", b"rewritten");
    let db = rusqlite::Connection::open(root.join("data.db")).unwrap();
    db.execute_batch("INSERT INTO t VALUES (2);").unwrap();
}

fn rows(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

on_both_s3_stores!(
    an_incremental_create_copies_unchanged_files_and_restores_like_a_full_one,
    the_first_create_after_a_restore_is_a_full_one_and_the_next_copies_again,
    files_changed_with_their_size_mode_and_times_kept_are_archived_with_their_new_bytes,
    a_file_timed_at_or_after_the_moment_the_previous_create_began_is_read_again,
    with_incremental_off_every_create_uploads_everything,
);

/// UploadPartCopy requests the gateway sent: its own store metrics, the same on every store
/// (the in-process server also counts what it received, and the bytes).
fn copies_sent(app: &TestApp) -> u64 {
    app.state
        .metrics
        .store
        .requests
        .with_label_values(&["UploadPartCopy"])
        .get()
}

async fn an_incremental_create_copies_unchanged_files_and_restores_like_a_full_one(
    backend: Backend,
) {
    let app = spawn_app_on(backend).await;
    fill(&app.data_dir);
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);
    assert_eq!(copies_sent(&app), 0, "nothing to copy from yet");
    let full = app.download_bytes("a.zip").await;

    change(&app.data_dir);
    let tree: BTreeMap<String, Node> = snapshot(&app.data_dir, EXCLUDED);
    let uploaded_before = app.s3.as_ref().map(|s3| s3.part_bytes());
    assert_eq!(app.create(Some("b.zip")).await.status(), 204);

    // Files 00-09 and 11-19 run unchanged (10 and 9 MiB); 21-23 (3 MiB) are too short to be
    // a part of their own and are uploaded again.
    assert_eq!(copies_sent(&app), 2, "two ranges copied");
    let bytes = app.download_bytes("b.zip").await;
    if let (Some(s3), Some(before)) = (&app.s3, uploaded_before) {
        // The in-process server counts the bytes each way.
        let uploaded = s3.part_bytes() - before;
        let (copies, copied) = s3.copies();
        assert_eq!(copies, 2, "{copied} bytes copied");
        assert!(copied >= 19 * MIB as u64, "{copied} bytes copied");
        assert_eq!(
            copied + uploaded,
            bytes.len() as u64,
            "copied and uploaded make the archive"
        );
        assert!(uploaded < 6 * MIB as u64, "{uploaded} bytes uploaded");
    }
    assert!(
        bytes.len() > 23 * MIB && full.len() > 24 * MIB,
        "whole archives, not deltas"
    );

    check_with_external_tools(&bytes);
    assert_zip_matches_tree(&read_zip(&bytes).await, &tree);

    // An incremental archive is a manifest too: the next create copies from it.
    let copies_before = copies_sent(&app);
    assert_eq!(app.create(Some("c.zip")).await.status(), 204);
    assert!(copies_sent(&app) > copies_before, "c.zip copies from b.zip");
    assert_zip_matches_tree(&read_zip(&app.download_bytes("c.zip").await).await, &tree);

    // The copy is a copy: with the backups it came from deleted, it still reads whole, and
    // a restore puts back exactly the tree.
    assert_eq!(app.delete("a.zip").await.status(), 204);
    assert_eq!(app.delete("c.zip").await.status(), 204);
    assert_eq!(app.download_bytes("b.zip").await, bytes);
    write_file(
        &app.data_dir,
        "storage/col/00.bin",
        b"changed after the backup",
    );
    assert_eq!(app.restore("b.zip").await.status(), 204);
    app.wait_restored().await;
    assert!(
        snapshot(&app.data_dir, EXCLUDED) == tree,
        "the restored tree"
    );
    assert_eq!(rows(&app.data_dir.join("data.db")), 2);
    assert_eq!(app.pending_uploads().await, 0);
}

async fn the_first_create_after_a_restore_is_a_full_one_and_the_next_copies_again(
    backend: Backend,
) {
    let app = spawn_app_on(backend).await;
    fill(&app.data_dir);
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);
    change(&app.data_dir);
    assert_eq!(app.restore("a.zip").await.status(), 204);
    app.wait_restored().await;
    settle(&app.data_dir);
    // Every file of a.zip is back with its nanosecond time, but as a new inode with a new
    // change time: nothing can be taken from a.zip.
    assert_eq!(app.create(Some("b.zip")).await.status(), 204);
    assert_eq!(copies_sent(&app), 0, "nothing copied after a restore");
    let tree = snapshot(&app.data_dir, EXCLUDED);
    assert_zip_matches_tree(&read_zip(&app.download_bytes("b.zip").await).await, &tree);
    // b.zip recorded the restored files: the next create copies all 24 MiB again.
    assert_eq!(app.create(Some("c.zip")).await.status(), 204);
    assert!(copies_sent(&app) >= 1, "c.zip copies from b.zip");
    if let Some(s3) = &app.s3 {
        let (copies, copied) = s3.copies();
        assert!(
            copies >= 1 && copied >= 24 * MIB as u64,
            "{copies} copies, {copied} bytes"
        );
    }
    assert_zip_matches_tree(&read_zip(&app.download_bytes("c.zip").await).await, &tree);
}

/// The bytes of the file `rel` in the archive `bytes`, read by an independent zip reader.
async fn entry_of(bytes: &[u8], rel: &str) -> Vec<u8> {
    match read_zip(bytes).await.remove(rel) {
        Some((false, _, data)) => data,
        other => panic!(
            "{rel} is not a file in the archive: {:?}",
            other.map(|e| e.0)
        ),
    }
}

/// Rewrites `data` into `path` at `at` in place (no truncation, same inode), then puts
/// back its modification and access times, as `cp -p`, `rsync -t --inplace` or an editor
/// that keeps times would leave it.
fn overwrite_keeping_times(path: &Path, at: u64, data: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let before = std::fs::metadata(path).unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(data).unwrap();
    put_times_back(f, &before, path);
}

/// Makes a new file with `data` and the times and mode of `path`, and renames it over
/// `path` (a new inode), as `rsync -t` and `tar x` do.
fn replace_keeping_times(path: &Path, data: &[u8]) {
    let before = std::fs::metadata(path).unwrap();
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, data).unwrap();
    std::fs::set_permissions(&tmp, before.permissions()).unwrap();
    put_times_back(
        std::fs::File::options().write(true).open(&tmp).unwrap(),
        &before,
        &tmp,
    );
    std::fs::rename(&tmp, path).unwrap();
}

/// Gives the open file `f` (at `path`) the times of `before`, and checks that it has
/// `before`'s size and modification time.
fn put_times_back(f: std::fs::File, before: &std::fs::Metadata, path: &Path) {
    f.set_times(
        std::fs::FileTimes::new()
            .set_modified(before.modified().unwrap())
            .set_accessed(before.accessed().unwrap()),
    )
    .unwrap();
    drop(f);
    let after = std::fs::metadata(path).unwrap();
    assert_eq!(after.modified().unwrap(), before.modified().unwrap());
    assert_eq!(after.len(), before.len());
}

async fn files_changed_with_their_size_mode_and_times_kept_are_archived_with_their_new_bytes(
    backend: Backend,
) {
    let app = spawn_app_on(backend).await;
    fill(&app.data_dir);
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);
    let col = app.data_dir.join("storage/col");
    // Rewritten whole in place, a new file renamed over, one 4 KiB block overwritten: each
    // keeps its size, mode and modification time.
    overwrite_keeping_times(&col.join("03.bin"), 0, &pseudo_random(MIB, 303));
    replace_keeping_times(&col.join("07.bin"), &pseudo_random(MIB, 707));
    overwrite_keeping_times(&col.join("15.bin"), 8192, &[0x5a; 4096]);
    let tree = snapshot(&app.data_dir, EXCLUDED);

    assert_eq!(app.create(Some("b.zip")).await.status(), 204);

    assert!(copies_sent(&app) >= 1, "b.zip copies the files left alone");
    let bytes = app.download_bytes("b.zip").await;
    for rel in ["03.bin", "07.bin", "15.bin"] {
        let now = std::fs::read(col.join(rel)).unwrap();
        assert!(
            entry_of(&bytes, &format!("storage/col/{rel}")).await == now,
            "{rel}: the archive holds its current bytes"
        );
    }
    assert_zip_matches_tree(&read_zip(&bytes).await, &tree);
}

async fn a_file_timed_at_or_after_the_moment_the_previous_create_began_is_read_again(
    backend: Backend,
) {
    let app = spawn_app_on(backend).await;
    fill(&app.data_dir);
    // A time the previous create cannot have read the file before: a file changed in the
    // tick the create began reading in, or one whose clock runs ahead.
    let path = app.data_dir.join("storage/col/11.bin");
    let ahead = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(ahead)
        .unwrap();
    settle(&app.data_dir);
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);
    let a = app.download_bytes("a.zip").await;
    let (_, entries) = backup_gateway::archive::zip::reader::index(&a).unwrap();
    let read_from = entries
        .iter()
        .find(|e| e.raw_name == b"storage/col/11.bin")
        .and_then(|e| e.recorded)
        .expect("the gateway's record of the file")
        .read_from_ns;
    assert!(
        read_from > 0
            && read_from
                < entries
                    .iter()
                    .find(|e| e.raw_name == b"storage/col/11.bin")
                    .unwrap()
                    .mtime_ns
                    .unwrap(),
        "the file's time is not before the create began"
    );
    // Rewritten in place with that time kept.
    overwrite_keeping_times(&path, 0, &pseudo_random(MIB, 1111));

    assert_eq!(app.create(Some("b.zip")).await.status(), 204);

    assert!(copies_sent(&app) >= 1, "b.zip copies the files left alone");
    let bytes = app.download_bytes("b.zip").await;
    assert!(
        entry_of(&bytes, "storage/col/11.bin").await == std::fs::read(&path).unwrap(),
        "the archive holds the current bytes"
    );
}

#[tokio::test]
async fn a_previous_backup_that_changed_makes_the_create_a_full_one_and_leaves_nothing_behind() {
    let (app, s3) = spawn_app_with_faults().await;
    fill(&app.data_dir);
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);
    change(&app.data_dir);
    let tree = snapshot(&app.data_dir, EXCLUDED);
    // The store refuses every copy as if a.zip had been replaced since it was read.
    s3.fail_copies(true);
    let uploaded_before = s3.part_bytes();
    assert_eq!(app.create(Some("b.zip")).await.status(), 204);
    s3.fail_copies(false);
    let (copies, _) = s3.copies();
    assert!(copies >= 1, "a copy was tried");
    let bytes = app.download_bytes("b.zip").await;
    // The full create uploaded the whole archive (beside what the first attempt had sent of
    // its own part before the copy failed).
    let uploaded = s3.part_bytes() - uploaded_before;
    assert!(
        uploaded >= bytes.len() as u64,
        "the full create uploaded everything: {uploaded} of {}",
        bytes.len()
    );
    check_with_external_tools(&bytes);
    assert_zip_matches_tree(&read_zip(&bytes).await, &tree);
    assert_eq!(app.keys().await, vec!["a.zip", "b.zip"]);
    assert_eq!(
        app.pending_uploads().await,
        0,
        "the first attempt was aborted"
    );
    let progress = app.get_json("/api/gateway/progress").await;
    assert_eq!(progress["last"]["create"]["status"], "ok", "{progress}");
}

async fn with_incremental_off_every_create_uploads_everything(backend: Backend) {
    let app = spawn_app_with(Options {
        backend,
        config: Config {
            incremental: Incremental::Off,
            ..test_config()
        },
        ..Options::default()
    })
    .await;
    fill(&app.data_dir);
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);
    assert_eq!(app.create(Some("b.zip")).await.status(), 204);
    assert_eq!(copies_sent(&app), 0);
    if let Some(s3) = &app.s3 {
        assert_eq!(s3.copies(), (0, 0));
    }
}

#[tokio::test]
async fn the_real_pocketbase_restores_an_incremental_archive() {
    let (app, s3) = spawn_app_with_faults().await;
    // A PocketBase data directory: PocketBase makes its databases, then stops.
    {
        let (mut pb, _) = start_pocketbase(&app.data_dir).await;
        pb.kill().await.unwrap();
    }
    fill_storage_only(&app.data_dir);
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);
    write_file(
        &app.data_dir,
        "storage/col/05.bin",
        &pseudo_random(MIB, 505),
    );
    assert_eq!(app.create(Some("b.zip")).await.status(), 204);
    assert!(s3.copies().0 >= 1, "b.zip is incremental");
    let bytes = app.download_bytes("b.zip").await;
    let tree = snapshot(&app.data_dir.join("storage"), &[]);

    let fresh = tempfile::tempdir().unwrap();
    let (_pb, _base, dir) = restore_with_pocketbase(fresh.path(), bytes, "b.zip", |dir| {
        dir.join("storage/col/23.bin").exists()
    })
    .await;
    assert!(
        snapshot(&dir.join("storage"), &[]) == tree,
        "PocketBase restored every file"
    );
}

/// The large files of [`fill`], beside PocketBase's own databases.
fn fill_storage_only(root: &Path) {
    for i in 0..24u64 {
        write_file(
            root,
            &format!("storage/col/{i:02}.bin"),
            &pseudo_random(MIB, i),
        );
    }
    settle(root);
}

#[tokio::test]
async fn an_uploaded_archive_is_never_copied_from_even_with_the_gateways_layout() {
    let (app, s3) = spawn_app_with_faults().await;
    fill(&app.data_dir);
    assert_eq!(app.create(Some("a.zip")).await.status(), 204);
    let bytes = app.download_bytes("a.zip").await;
    // The same bytes come back as an upload, and the backup the gateway made is deleted.
    assert_eq!(app.upload("up.zip", bytes).await.status(), 204);
    assert_eq!(app.delete("a.zip").await.status(), 204);
    assert_eq!(app.create(Some("b.zip")).await.status(), 204);
    assert_eq!(s3.copies(), (0, 0), "nothing copied from an upload");
    let tree = snapshot(&app.data_dir, EXCLUDED);
    assert_zip_matches_tree(&read_zip(&app.download_bytes("b.zip").await).await, &tree);
}
