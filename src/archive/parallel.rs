//! Compressing a tree on all cores while keeping the archive sequential.
//!
//! Three kinds of threads, all bounded:
//! - one reader walks the tree and cuts files into 1 MiB chunks (task queue of
//!   2 x workers);
//! - workers compress chunks independently (pigz's method: every chunk but a file's last
//!   ends with a Deflate sync flush, so the concatenation is one valid Deflate stream) and
//!   compute each chunk's CRC-32;
//! - the calling thread writes the results in order into the [`ZipWriter`], combining CRCs.
//!
//! At most [`MAX_CHUNKS_IN_FLIGHT`] chunks exist between reading and writing (a token is
//! taken per chunk and returned once written), so memory stays near
//! 2 x `MAX_CHUNKS_IN_FLIGHT` x 1 MiB whatever the data. A file that fits in one chunk is
//! compressed by a worker which keeps the smaller of Deflate and Stored; a larger file is
//! Stored when its first 64 KiB do not compress. If the writer fails (the upload stopped),
//! the channels close and every thread stops.

use super::spec::{METHOD_DEFLATE, METHOD_STORED};
use super::write::{Found, WriteOptions, WriteStats, ZipWriter, compresses, looks_random, walk};
use crate::bufpool::BufPool;
use flate2::{Compress, Compression, FlushCompress, Status};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

const CHUNK: usize = 1 << 20;
/// Chunk buffers hold a chunk or its Deflate output (at level 1 on random data, a few
/// bytes per 16 KiB more than the input).
const BUF_LEN: usize = CHUNK + 64 * 1024;
const PROBE_LEN: usize = 64 * 1024;
/// Chunks read but not yet written.
pub const MAX_CHUNKS_IN_FLIGHT: usize = 8;

/// Work for a compression worker.
struct Task {
    seq: u64,
    data: Vec<u8>,
    kind: TaskKind,
}

enum TaskKind {
    /// A whole file in one chunk: the worker picks the method.
    Whole {
        name: Vec<u8>,
        mode: u32,
        mtime: i64,
    },
    /// A chunk of a larger file, with its file's method.
    Chunk { method: u16, last: bool },
}

/// What the writer receives, by sequence number.
enum Item {
    Dir {
        name: Vec<u8>,
        mode: u32,
        mtime: i64,
    },
    Whole {
        name: Vec<u8>,
        mode: u32,
        mtime: i64,
        method: u16,
        data: Vec<u8>,
        crc: u32,
        len: u64,
    },
    FileStart {
        name: Vec<u8>,
        mode: u32,
        mtime: i64,
        method: u16,
    },
    Chunk {
        data: Vec<u8>,
        crc: u32,
        len: u64,
        last: bool,
    },
    Failed(io::Error),
}

/// Zips the tree into `zip` (see the module docs).
///
/// # Errors
/// Read errors of the tree, write errors of the zip.
pub fn write_tree<W: Write>(
    root: &Path,
    opts: &WriteOptions,
    mut zip: ZipWriter<W>,
) -> io::Result<WriteStats> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let level = zip.level();
    let (task_tx, task_rx) = sync_channel::<Task>(workers * 2);
    let task_rx = Arc::new(Mutex::new(task_rx));
    let (item_tx, item_rx) = sync_channel::<(u64, Item)>(64);
    let (token_tx, token_rx) = sync_channel::<()>(MAX_CHUNKS_IN_FLIGHT);
    // Chunks in flight, the two the reader holds, and one being compressed per worker.
    let pool = BufPool::new(BUF_LEN, MAX_CHUNKS_IN_FLIGHT + 2 + workers);

    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (rx, tx, pool) = (task_rx.clone(), item_tx.clone(), pool.clone());
            scope.spawn(move || {
                background_priority();
                compress_worker(&rx, &tx, level, &pool);
            });
        }
        drop(task_rx);
        let reader_items = item_tx.clone();
        drop(item_tx);
        let reader_pool = pool.clone();
        scope.spawn(move || {
            let mut reader = Reader {
                seq: 0,
                tasks: task_tx,
                items: reader_items,
                tokens: token_tx,
                level,
                pool: reader_pool,
            };
            let result = walk(root, &opts.exclude, &mut |found| reader.found(found));
            if let Err(e) = result {
                let seq = reader.seq;
                let _ = reader.items.send((seq, Item::Failed(e)));
            }
        });
        // The receivers move in, so that a writer error closes the channels and every
        // other thread stops before the scope joins them.
        write_in_order(&mut zip, item_rx, token_rx, &pool)
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

struct Reader {
    seq: u64,
    tasks: SyncSender<Task>,
    items: SyncSender<(u64, Item)>,
    tokens: SyncSender<()>,
    level: u32,
    pool: std::sync::Arc<BufPool>,
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the archive writer stopped")
}

impl Reader {
    /// Up to one chunk of `file`, in a pooled buffer (read without zeroing it first).
    fn read_chunk(&self, file: &mut std::fs::File) -> io::Result<Vec<u8>> {
        let mut buf = self.pool.take();
        file.take(CHUNK as u64).read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq - 1
    }

    fn item(&mut self, item: Item) -> io::Result<()> {
        let seq = self.next_seq();
        self.items.send((seq, item)).map_err(|_| stopped())
    }

    fn task(&mut self, data: Vec<u8>, kind: TaskKind) -> io::Result<()> {
        self.tokens.send(()).map_err(|_| stopped())?;
        let seq = self.next_seq();
        self.tasks
            .send(Task { seq, data, kind })
            .map_err(|_| stopped())
    }

    fn found(&mut self, found: Found) -> io::Result<()> {
        match found {
            Found::Dir { name, mode, mtime } => self.item(Item::Dir { name, mode, mtime }),
            Found::File {
                name,
                mode,
                mtime,
                mut file,
            } => {
                let mut chunk = self.read_chunk(&mut file)?;
                if chunk.len() < CHUNK {
                    return self.task(chunk, TaskKind::Whole { name, mode, mtime });
                }
                let method = if self.level > 0 && compresses(&chunk[..PROBE_LEN]) {
                    METHOD_DEFLATE
                } else {
                    METHOD_STORED
                };
                self.item(Item::FileStart {
                    name,
                    mode,
                    mtime,
                    method,
                })?;
                // Hold one chunk back to know which one is the last.
                loop {
                    let next = self.read_chunk(&mut file)?;
                    let last = next.is_empty();
                    self.task(chunk, TaskKind::Chunk { method, last })?;
                    if last {
                        self.pool.give(next);
                        return Ok(());
                    }
                    chunk = next;
                }
            }
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
        let Ok(Task { seq, data, kind }) = task else {
            return;
        };
        let crc = crc32fast::hash(&data);
        let len = data.len() as u64;
        let item = match kind {
            TaskKind::Whole { name, mode, mtime } => {
                let packed = (level > 0 && !looks_random(&data))
                    .then(|| deflate_chunk(&mut deflate, &data, true, pool.take()))
                    .transpose();
                match packed {
                    Err(e) => Item::Failed(e),
                    Ok(Some(packed)) if packed.len() < data.len() => {
                        pool.give(data);
                        Item::Whole {
                            name,
                            mode,
                            mtime,
                            method: METHOD_DEFLATE,
                            data: packed,
                            crc,
                            len,
                        }
                    }
                    Ok(packed) => {
                        if let Some(packed) = packed {
                            pool.give(packed);
                        }
                        Item::Whole {
                            name,
                            mode,
                            mtime,
                            method: METHOD_STORED,
                            data,
                            crc,
                            len,
                        }
                    }
                }
            }
            TaskKind::Chunk { method, last } => {
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

/// Raw Deflate of one chunk: ends with a sync flush (byte-aligned, not final) unless it is
/// the last chunk of its file, which finishes the stream. The output goes into `out`.
fn deflate_chunk(
    c: &mut Compress,
    data: &[u8],
    last: bool,
    mut out: Vec<u8>,
) -> io::Result<Vec<u8>> {
    c.reset();
    out.clear();
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    out.reserve(data.len() / 2 + 1024);
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let consumed = usize::try_from(c.total_in()).unwrap_or(usize::MAX);
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == data.len();
        match status {
            Status::StreamEnd => return Ok(out),
            // A sync flush is complete when all input is in and the call left room in the
            // output (zlib fills the output while it has anything pending).
            Status::Ok | Status::BufError if !last && all_in && out.len() < out.capacity() => {
                return Ok(out);
            }
            Status::Ok | Status::BufError => {}
        }
    }
}

/// Writes items in sequence order, returning a token per chunk written.
fn write_in_order<W: Write>(
    zip: &mut ZipWriter<W>,
    items: Receiver<(u64, Item)>,
    tokens: Receiver<()>,
    pool: &BufPool,
) -> io::Result<()> {
    let mut waiting = BTreeMap::new();
    let mut next = 0u64;
    let mut open: Option<(super::write::OpenEntry, crc32fast::Hasher, u64)> = None;
    while let Ok((seq, item)) = items.recv() {
        waiting.insert(seq, item);
        while let Some(item) = waiting.remove(&next) {
            next += 1;
            match item {
                Item::Failed(e) => return Err(e),
                Item::Dir { name, mode, mtime } => zip.add_dir(&name, mode, mtime)?,
                Item::Whole {
                    name,
                    mode,
                    mtime,
                    method,
                    data,
                    crc,
                    len,
                } => {
                    let _ = tokens.recv();
                    let entry = zip.start_file(&name, mode, mtime, method)?;
                    zip.write_data(&data)?;
                    pool.give(data);
                    zip.finish_file(entry, crc, len)?;
                }
                Item::FileStart {
                    name,
                    mode,
                    mtime,
                    method,
                } => {
                    let entry = zip.start_file(&name, mode, mtime, method)?;
                    open = Some((entry, crc32fast::Hasher::new(), 0));
                }
                Item::Chunk {
                    data,
                    crc,
                    len,
                    last,
                } => {
                    let _ = tokens.recv();
                    let Some((_, hasher, total)) = open.as_mut() else {
                        return Err(io::Error::other("chunk without a file"));
                    };
                    zip.write_data(&data)?;
                    pool.give(data);
                    hasher.combine(&crc32fast::Hasher::new_with_initial_len(crc, len));
                    *total += len;
                    if last {
                        let (entry, hasher, total) = open.take().expect("an open entry");
                        zip.finish_file(entry, hasher.finalize(), total)?;
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
    use std::io::Read;

    #[test]
    fn chunks_concatenate_into_one_valid_deflate_stream() {
        let text: Vec<u8> = (0..3_000_000u32)
            .map(|i| b"abcdefghij"[(i % 7 + i / 1000 % 3) as usize])
            .collect();
        let mut c = Compress::new(Compression::new(1), false);
        let mut stream = Vec::new();
        let chunks: Vec<&[u8]> = text.chunks(CHUNK).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            stream.extend(deflate_chunk(&mut c, chunk, i + 1 == chunks.len(), Vec::new()).unwrap());
        }
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(&stream[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out == text);
        assert!(stream.len() < text.len() / 4);
    }

    #[test]
    fn an_empty_last_chunk_finishes_the_stream() {
        let mut c = Compress::new(Compression::new(6), false);
        let mut stream = deflate_chunk(&mut c, b"hello", false, Vec::new()).unwrap();
        stream.extend(deflate_chunk(&mut c, b"", true, Vec::new()).unwrap());
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(&stream[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"hello");
    }
}
