//! Create: the data directory zipped into any `Write` (in production the channel that
//! feeds the store's multipart upload), compressed on all cores while the archive stays
//! sequential. No temporary file; memory bounded by [`memory_bound`], whatever the data.
//!
//! Three kinds of threads, all bounded:
//! - one reader (`zip-read`) walks the tree ([`tree::walk`]), takes each SQLite database
//!   from its snapshot ([`Snapshots`]), cuts files of 1 MiB or more into 1 MiB chunks and
//!   gathers smaller ones into batches (task queue of 2 x workers);
//! - workers (`zip-compress`, at background priority) compress chunks independently
//!   (pigz's method: every chunk but a file's last ends with a Deflate sync flush, so the
//!   concatenation is one valid Deflate stream) and batches file by file, computing the
//!   CRC-32s;
//! - the calling thread writes the results in order into the [`ZipWriter`], combining CRCs.
//!
//! At most [`MAX_BYTES_IN_FLIGHT`] bytes of file data exist between reading and writing
//! (charged when sent to a worker, refunded once written; every file or chunk counts at
//! least 4 KiB). The window is counted in bytes, not items, so that many small files keep
//! every worker busy. A file under one chunk is read into a buffer of its own size and
//! stored as the smaller of Deflate and Stored; a larger file is Stored when its first
//! 64 KiB do not compress. If the writer fails (the upload stopped), the channels and the
//! budget close and every thread stops.
//!
//! Symbolic links, sockets and other special files are skipped (a restore would refuse
//! them); a file that disappears while the archive is made is skipped too (applications
//! delete their temporary files at any time). Any other read error fails the archive.
//!
//! One concern: the parallel, bounded zip pipeline (its tests are a fifth of the file).

use super::compress::{PROBE_LEN, compresses, deflate_chunk, smaller};
use super::meta::EntryMeta;
use super::reuse::Reuse;
use super::sqlite::{self, Snapshot, Snapshots};
use super::tree::{self, Exclude, Found, walk};
use super::zip::spec::{METHOD_DEFLATE, METHOD_STORED};
use super::zip::{WriteStats, ZipWriter};
use crate::util::bufpool::BufPool;
use flate2::{Compress, Compression};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};

const CHUNK: usize = 1 << 20;
/// Chunk buffers hold a chunk or its Deflate output (at level 1 on random data, a few
/// bytes per 16 KiB more than the input).
const BUF_LEN: usize = CHUNK + 64 * 1024;
/// Bytes of file data read but not yet written.
pub const MAX_BYTES_IN_FLIGHT: usize = 8 * CHUNK;
/// What an item counts against the budget at the least (bounds the number of empty files
/// in flight).
const MIN_CHARGE: usize = 4096;
/// 1 MiB chunks in flight at the most.
const MAX_CHUNKS_IN_FLIGHT: usize = MAX_BYTES_IN_FLIGHT / CHUNK;

/// The bytes read but not yet written: the window between the reader and the in-order
/// writer (not the process memory budget, [`crate::util::bufpool::Budget`]).
struct ReadWindow {
    /// Bytes charged, and whether the writer has stopped.
    state: Mutex<(usize, bool)>,
    freed: Condvar,
    /// Waits begun in [`ReadWindow::charge`]: tests wait on it instead of sleeping.
    #[cfg(test)]
    waits: std::sync::atomic::AtomicUsize,
}

impl ReadWindow {
    fn new() -> Self {
        Self {
            state: Mutex::new((0, false)),
            freed: Condvar::new(),
            #[cfg(test)]
            waits: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Waits until `n` more bytes fit (an item larger than the budget goes alone).
    fn charge(&self, n: usize) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !st.1 && st.0 > 0 && st.0 + n > MAX_BYTES_IN_FLIGHT {
            #[cfg(test)]
            self.waits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            st = self.freed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.1 {
            return Err(stopped());
        }
        st.0 += n;
        Ok(())
    }

    fn refund(&self, n: usize) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 = st.0.saturating_sub(n);
        self.freed.notify_all();
    }

    /// The writer stopped: wake and fail the reader.
    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.freed.notify_all();
    }
}

/// A file under one chunk, read whole into a buffer of its own size.
struct Small {
    meta: EntryMeta,
    data: Vec<u8>,
}

/// A small file as the writer gets it: its bytes as stored (compressed or not).
struct Packed {
    meta: EntryMeta,
    method: u16,
    data: Vec<u8>,
    crc: u32,
    len: u64,
}

/// Work for a compression worker.
struct Task {
    seq: u64,
    /// What it counts against the budget.
    charge: usize,
    kind: TaskKind,
}

enum TaskKind {
    /// Small files: the worker picks each one's method. Batched (up to [`BATCH_BYTES`] or
    /// [`BATCH_FILES`]) because a hand-off between threads (futex wake-ups and context
    /// switches) costs more than compressing a small file.
    Batch(Vec<Small>),
    /// A chunk of a larger file, with its file's method.
    Chunk {
        data: Vec<u8>,
        method: u16,
        last: bool,
    },
}

/// What the writer receives, by sequence number.
enum Item {
    Dir(EntryMeta),
    Batch {
        files: Vec<Packed>,
        charge: usize,
    },
    FileStart {
        meta: EntryMeta,
        method: u16,
    },
    Chunk {
        data: Vec<u8>,
        crc: u32,
        len: u64,
        last: bool,
        charge: usize,
    },
    Failed(io::Error),
}

/// A batch of small files is sent once it holds this many bytes...
const BATCH_BYTES: usize = CHUNK;
/// ... or this many files.
const BATCH_FILES: usize = 256;

/// Compression workers: one per core, up to 8.
fn workers() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8)
}

/// The most memory [`write_dir`] holds at once, whatever the data: the pool of chunk
/// buffers, the small files of the window (their data and its compressed form), and the
/// batch being gathered (under twice its threshold).
pub fn memory_bound() -> u64 {
    ((MAX_CHUNKS_IN_FLIGHT + 2 + workers()) * BUF_LEN + 2 * MAX_BYTES_IN_FLIGHT + 2 * BATCH_BYTES)
        as u64
}

/// Options of [`write_dir`].
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Deflate level 0-9 (0 stores everything).
    pub level: u32,
    /// Paths left out (with everything below them).
    pub exclude: Exclude,
    /// Where the bytes and entries written are counted, if anywhere.
    pub progress: Option<Arc<crate::ops::progress::Progress>>,
    /// The file system's time before the first file was looked at, and its device
    /// ([`crate::util::fsutil::file_system_now`]), recorded with every entry of that device so
    /// that a later create can tell a file that may have changed while it was read
    /// ([`super::reuse`]); the default makes no entry reusable.
    pub read_from: crate::util::fsutil::FsNow,
}

/// Zips the tree under `root` into `out` (see the module docs) and returns what it wrote.
/// SQLite databases are archived from their snapshots in `databases` (one consistent
/// image each, see [`super::sqlite`]), without their `-wal`, `-shm` and `-journal` files.
///
/// # Errors
/// Unreadable files or directories, and write errors of `out`.
pub fn write_dir<W: Write>(
    root: &Path,
    opts: &WriteOptions,
    databases: &mut Snapshots,
    out: W,
) -> io::Result<WriteStats> {
    write_dir_reusing(root, opts, databases, &Reuse::default(), out)
}

/// [`write_dir`] for an incremental create: the archive's first `reuse.bytes` bytes are
/// the entries `reuse` takes from the previous archive (the store copies them), so `out`
/// gets what follows them, and the walk leaves those files out.
///
/// # Errors
/// As [`write_dir`].
pub fn write_dir_reusing<W: Write>(
    root: &Path,
    opts: &WriteOptions,
    databases: &mut Snapshots,
    reuse: &Reuse,
    out: W,
) -> io::Result<WriteStats> {
    let mut zip =
        ZipWriter::continuing(out, reuse.bytes, reuse.entries.clone()).reading_from(opts.read_from);
    if let Some(p) = &opts.progress {
        p.add_bytes(reuse.file_bytes);
        p.add_entries(reuse.entries.len() as u64);
    }
    let workers = workers();
    let level = opts.level.min(9);
    let (task_tx, task_rx) = sync_channel::<Task>(workers * 2);
    let task_rx = Arc::new(Mutex::new(task_rx));
    let (item_tx, item_rx) = sync_channel::<(u64, Item)>(64);
    let budget = ReadWindow::new();
    // Chunks in flight, the two the reader holds, and one being compressed per worker.
    let pool = BufPool::new(BUF_LEN, MAX_CHUNKS_IN_FLIGHT + 2 + workers);

    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (rx, tx, pool) = (task_rx.clone(), item_tx.clone(), pool.clone());
            std::thread::Builder::new()
                .name("zip-compress".into())
                .spawn_scoped(scope, move || {
                    background_priority();
                    compress_worker(&rx, &tx, level, &pool);
                })?;
        }
        drop(task_rx);
        let reader_items = item_tx.clone();
        drop(item_tx);
        let reader_pool = pool.clone();
        let budget = &budget;
        let reader = std::thread::Builder::new().name("zip-read".into());
        reader.spawn_scoped(scope, move || {
            let mut reader = Reader {
                seq: 0,
                tasks: task_tx,
                items: reader_items,
                budget,
                level,
                pool: reader_pool,
                batch: Vec::new(),
                batch_charge: 0,
                databases,
                reused: &reuse.names,
            };
            let result = walk(root, &opts.exclude, &mut |found| reader.found(found))
                .and_then(|()| reader.flush_batch());
            if let Err(e) = result {
                let seq = reader.seq;
                let _ = reader.items.send((seq, Item::Failed(e)));
            }
        })?;
        // The receiver moves in, so that a writer error closes the channels, and closing
        // the budget wakes a waiting reader: every other thread stops before the scope
        // joins them.
        let written = write_in_order(&mut zip, item_rx, budget, &pool, opts.progress.as_deref());
        budget.close();
        written
    })?;
    zip.finish().map(|(_, stats)| stats)
}

/// Compression is background work: the workers run at nice 19, so that the API (and the
/// application beside the gateway) get the CPU first when they need it. They still take
/// every idle cycle. The reader keeps the normal priority: it is mostly waiting on system
/// calls, and a starved reader would leave the workers idle.
fn background_priority() {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
}

struct Reader<'b> {
    seq: u64,
    tasks: SyncSender<Task>,
    items: SyncSender<(u64, Item)>,
    budget: &'b ReadWindow,
    level: u32,
    pool: std::sync::Arc<BufPool>,
    /// Small files read but not yet sent, and what they will be charged.
    batch: Vec<Small>,
    batch_charge: usize,
    /// SQLite databases: archived from their snapshots, their sidecars left out.
    databases: &'b mut Snapshots,
    /// Files whose entries the previous archive provides.
    reused: &'b std::collections::HashSet<Vec<u8>>,
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the archive writer stopped")
}

impl Reader<'_> {
    /// Up to one chunk of `src`, in a pooled buffer (read without zeroing it first).
    fn read_chunk(&self, src: &mut dyn Read) -> io::Result<Vec<u8>> {
        let mut buf = self.pool.take();
        (&mut *src).take(CHUNK as u64).read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq - 1
    }

    /// Sends an item that needs no worker; the pending batch goes first, to keep the order.
    fn item(&mut self, item: Item) -> io::Result<()> {
        self.flush_batch()?;
        let seq = self.next_seq();
        self.items.send((seq, item)).map_err(|_| stopped())
    }

    fn task(&mut self, charge: usize, kind: TaskKind) -> io::Result<()> {
        self.budget.charge(charge)?;
        let seq = self.next_seq();
        self.tasks
            .send(Task { seq, charge, kind })
            .map_err(|_| stopped())
    }

    /// Sends the pending small files, if any.
    fn flush_batch(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let files = std::mem::take(&mut self.batch);
        let charge = std::mem::take(&mut self.batch_charge);
        self.task(charge, TaskKind::Batch(files))
    }

    fn found(&mut self, found: Found) -> io::Result<()> {
        let (meta, path) = match found {
            Found::Dir(meta) if self.reused.contains(&meta.name) => return Ok(()),
            Found::Dir(meta) => return self.item(Item::Dir(meta)),
            Found::File { meta, path } => (meta, path),
        };
        if self.reused.contains(&meta.name) {
            return Ok(());
        }
        // Databases and their sidecars are decided by name before anything is opened (see
        // `tree::walk`).
        if self.databases.is_sidecar(&meta.name) {
            return Ok(());
        }
        if let Some(snapshot) = self.databases.take(&meta.name) {
            return self.database(meta, snapshot);
        }
        let Some(mut file) = tree::open_file(&path, &meta.name)? else {
            return Ok(());
        };
        let first = self.read_chunk(&mut file)?;
        if first.len() as u64 >= sqlite::MIN_FILE_LEN
            && sqlite::starts_with_header(&first)
            && self.databases.enabled()
        {
            // A database created after the create started: its descriptor closes before
            // its snapshot opens.
            drop(file);
            self.pool.give(first);
            let snapshot = self.databases.late(&meta.name)?;
            return self.database(meta, snapshot);
        }
        self.file(meta, first, &mut file)
    }

    /// A database, from its snapshot's page images.
    fn database(&mut self, meta: EntryMeta, snapshot: Snapshot) -> io::Result<()> {
        snapshot.read(|pages| {
            let first = self.read_chunk(pages)?;
            self.file(meta, first, pages)
        })
    }

    /// A file whose first chunk has been read from `src`: a small one joins the batch, a
    /// larger one goes in chunks.
    fn file(&mut self, meta: EntryMeta, mut chunk: Vec<u8>, src: &mut dyn Read) -> io::Result<()> {
        if chunk.len() < CHUNK {
            // A buffer of its own size, so that the window can hold many.
            let data = chunk.as_slice().to_vec();
            self.pool.give(chunk);
            self.batch_charge += data.len().max(MIN_CHARGE);
            self.batch.push(Small { meta, data });
            if self.batch_charge >= BATCH_BYTES || self.batch.len() >= BATCH_FILES {
                self.flush_batch()?;
            }
            return Ok(());
        }
        let method = if self.level > 0 && compresses(&chunk[..PROBE_LEN]) {
            METHOD_DEFLATE
        } else {
            METHOD_STORED
        };
        self.item(Item::FileStart { meta, method })?;
        // Hold one chunk back to know which one is the last.
        loop {
            let next = self.read_chunk(src)?;
            let last = next.is_empty();
            let charge = chunk.len().max(MIN_CHARGE);
            let kind = TaskKind::Chunk {
                data: chunk,
                method,
                last,
            };
            self.task(charge, kind)?;
            if last {
                self.pool.give(next);
                return Ok(());
            }
            chunk = next;
        }
    }
}

fn compress_worker(
    tasks: &Mutex<Receiver<Task>>,
    items: &SyncSender<(u64, Item)>,
    level: u32,
    pool: &BufPool,
) {
    let mut deflate = Compress::new(Compression::new(level), false);
    loop {
        let task = {
            let rx = tasks.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv()
        };
        let Ok(Task { seq, charge, kind }) = task else {
            return;
        };
        let item = match kind {
            TaskKind::Batch(files) => files
                .into_iter()
                .map(|Small { meta, data }| {
                    let crc = crc32fast::hash(&data);
                    let len = data.len() as u64;
                    let (method, data) = smaller(&mut deflate, level, data)?;
                    Ok(Packed {
                        meta,
                        method,
                        data,
                        crc,
                        len,
                    })
                })
                .collect::<io::Result<Vec<_>>>()
                .map_or_else(Item::Failed, |files| Item::Batch { files, charge }),
            TaskKind::Chunk { data, method, last } => {
                let crc = crc32fast::hash(&data);
                let len = data.len() as u64;
                let out = if method == METHOD_DEFLATE {
                    let out = deflate_chunk(&mut deflate, &data, last, pool.take());
                    pool.give(data);
                    out
                } else {
                    Ok(data)
                };
                match out {
                    Ok(data) => Item::Chunk {
                        data,
                        crc,
                        len,
                        last,
                        charge,
                    },
                    Err(e) => Item::Failed(e),
                }
            }
        };
        if items.send((seq, item)).is_err() {
            return;
        }
    }
}

/// Writes items in sequence order, refunding each one's charge once written.
fn write_in_order<W: Write>(
    zip: &mut ZipWriter<W>,
    items: Receiver<(u64, Item)>,
    budget: &ReadWindow,
    pool: &BufPool,
    progress: Option<&crate::ops::progress::Progress>,
) -> io::Result<()> {
    let entry_done = |bytes: u64| {
        if let Some(p) = progress {
            p.add_bytes(bytes);
            p.add_entry();
        }
    };
    let mut waiting = BTreeMap::new();
    let mut next = 0u64;
    let mut open: Option<(super::zip::writer::OpenEntry, crc32fast::Hasher, u64)> = None;
    while let Ok((seq, item)) = items.recv() {
        waiting.insert(seq, item);
        while let Some(item) = waiting.remove(&next) {
            next += 1;
            match item {
                Item::Failed(e) => return Err(e),
                Item::Dir(meta) => {
                    zip.add_dir(&meta)?;
                    entry_done(0);
                }
                Item::Batch { files, charge } => {
                    for f in files {
                        let entry = zip.start_file(f.meta, f.method)?;
                        zip.write_data(&f.data)?;
                        zip.finish_file(entry, f.crc, f.len)?;
                        entry_done(f.len);
                    }
                    budget.refund(charge);
                }
                Item::FileStart { meta, method } => {
                    let entry = zip.start_file(meta, method)?;
                    open = Some((entry, crc32fast::Hasher::new(), 0));
                }
                Item::Chunk {
                    data,
                    crc,
                    len,
                    last,
                    charge,
                } => {
                    let Some((_, hasher, total)) = open.as_mut() else {
                        return Err(io::Error::other("chunk without a file"));
                    };
                    zip.write_data(&data)?;
                    pool.give(data);
                    budget.refund(charge);
                    hasher.combine(&crc32fast::Hasher::new_with_initial_len(crc, len));
                    *total += len;
                    if last {
                        let (entry, hasher, total) = open.take().expect("an open entry");
                        zip.finish_file(entry, hasher.finalize(), total)?;
                        entry_done(len);
                    } else if let Some(p) = progress {
                        p.add_bytes(len);
                    }
                }
            }
        }
    }
    if !waiting.is_empty() || open.is_some() {
        return Err(io::Error::other("the archive reader stopped early"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::test_data::{noise, restore_into};
    use crate::archive::zip::{self, Entry};
    use crate::ops::progress::{Kind, Progress, Trigger};

    /// Zips `root` with the parallel writer, then reads the archive back with the restore
    /// code: relative path -> contents, and the archive's entries in order.
    fn round_trip(root: &Path) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
        let mut bytes = Vec::new();
        let progress = Progress::new(Kind::Create, Trigger::Api, "t.zip");
        let opts = WriteOptions {
            level: 1,
            exclude: Exclude::default(),
            progress: Some(progress.clone()),
            read_from: Default::default(),
        };
        write_dir(root, &opts, &mut Snapshots::disabled(), &mut bytes).unwrap();
        let (_, entries) = zip::reader::index(&bytes).unwrap();
        let names = entries.iter().map(Entry::name_lossy).collect();
        let dest = tempfile::tempdir().unwrap();
        let plan = restore_into(&bytes, dest.path(), None).unwrap();
        let mut out = BTreeMap::new();
        for item in plan.items.iter().filter(|i| !i.is_dir) {
            let data = std::fs::read(dest.path().join(&item.path)).unwrap();
            out.insert(item.path.to_string_lossy().into_owned(), data);
        }
        let counted = progress.view();
        assert_eq!(
            counted.entries_done,
            plan.items.len() as u64,
            "entries counted"
        );
        let bytes_in: u64 = out.values().map(|d| d.len() as u64).sum();
        assert_eq!(counted.bytes_done, bytes_in, "file bytes counted");
        (out, names)
    }

    #[test]
    fn small_files_in_batches_and_large_files_in_chunks_round_trip_in_walk_order() {
        let src = tempfile::tempdir().unwrap();
        let mut want = BTreeMap::new();
        let mut put = |rel: String, data: Vec<u8>| {
            let path = src.path().join(&rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &data).unwrap();
            want.insert(rel, data);
        };
        // 700 small files in 7 directories: more than one batch by count (256) and by
        // bytes (1 MiB), text and noise mixed, some empty, directories between batches.
        for i in 0..700u64 {
            let data = match i % 4 {
                0 => Vec::new(),
                1 => noise(1 + (i as usize * 37) % 20_000, i),
                _ => format!("row {i} of a table; ")
                    .repeat(1 + (i as usize % 300))
                    .into_bytes(),
            };
            put(format!("d{}/f{i:04}", i % 7), data);
        }
        // Chunked files: text (Deflated, several chunks) and noise (Stored).
        put(
            "big/text.log".into(),
            "a log line that repeats\n".repeat(200_000).into_bytes(),
        );
        put("big/media.mp4".into(), noise(3 * CHUNK + 12_345, 99));
        put("big/exact.bin".into(), noise(CHUNK, 7));
        std::fs::create_dir_all(src.path().join("empty/dir")).unwrap();

        let (got, names) = round_trip(src.path());

        assert_eq!(got, want);
        // The archive keeps the walk's order, whatever order the workers finish in.
        let mut walked = Vec::new();
        walk(src.path(), &Exclude::default(), &mut |found| {
            // The zip names a directory with a trailing slash.
            walked.push(match found {
                Found::Dir(meta) => format!("{}/", meta.name_lossy()),
                Found::File { meta, .. } => meta.name_lossy(),
            });
            Ok(())
        })
        .unwrap();
        assert_eq!(names, walked);
        assert!(names.contains(&"empty/dir/".to_string()));
    }

    /// `charge` on a thread of its own, and its result when it comes.
    fn charge_on_thread(budget: &Arc<ReadWindow>, n: usize) -> Receiver<io::Result<()>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let budget = budget.clone();
        std::thread::spawn(move || tx.send(budget.charge(n)));
        rx
    }

    fn waits(budget: &ReadWindow) -> usize {
        budget.waits.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `budget` has begun more than `before` waits; fails after 10 s.
    fn until_waits_past(budget: &ReadWindow, before: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while waits(budget) <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "the charge never waited for the budget"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    const ANSWER: std::time::Duration = std::time::Duration::from_secs(10);

    #[test]
    fn the_budget_holds_the_reader_until_the_writer_refunds() {
        let budget = Arc::new(ReadWindow::new());
        budget.charge(MAX_BYTES_IN_FLIGHT - 10).unwrap();
        let before = waits(&budget);
        let waiter = charge_on_thread(&budget, 100);
        until_waits_past(&budget, before);
        assert!(waiter.try_recv().is_err(), "over the budget: must wait");
        budget.refund(MAX_BYTES_IN_FLIGHT - 10);
        waiter
            .recv_timeout(ANSWER)
            .expect("the refund wakes the waiting charge")
            .unwrap();
        // An item larger than the whole budget still goes, alone.
        budget.refund(100);
        budget.charge(3 * MAX_BYTES_IN_FLIGHT).unwrap();
        // A closed budget wakes and fails a waiting reader.
        let before = waits(&budget);
        let waiter = charge_on_thread(&budget, 1);
        until_waits_past(&budget, before);
        budget.close();
        let err = waiter
            .recv_timeout(ANSWER)
            .expect("closing wakes the waiting charge")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    /// A `Write` that fails after `left` bytes, as an upload that stops does.
    struct FailAfter {
        left: usize,
    }

    impl Write for FailAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left < buf.len() {
                return Err(io::Error::other("the store went away"));
            }
            self.left -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_output_stops_every_thread_with_its_error() {
        let src = tempfile::tempdir().unwrap();
        for i in 0..2_000u64 {
            std::fs::write(src.path().join(format!("f{i:05}")), noise(10_000, i)).unwrap();
        }
        let opts = WriteOptions {
            level: 1,
            exclude: Exclude::default(),
            progress: None,
            read_from: Default::default(),
        };
        let err = write_dir(
            src.path(),
            &opts,
            &mut Snapshots::disabled(),
            FailAfter { left: 2 << 20 },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "the store went away");
    }
}
