//! Extracting a checked [`Plan`] for a restore, without a local copy of the zip: one
//! sequential pass over the archive's bytes (streamed from the store in ranged chunks), in
//! offset order, with sizes taken from the central directory (so Stored entries with data
//! descriptors read fine), each entry's CRC-32 verified and its output cut off at its
//! declared size (so a lying header cannot fill the disk). A second thread writes the
//! files ([`OutFile`]).
//!
//! Modes: an entry gets the archive's permission bits masked by the process's umask, and
//! never write permission for the group or others unless the file or directory it replaces
//! in the live data directory had it ([`extract_over`]): an archive whose entries say 0666
//! or 0777 cannot leave the data writable by everyone.

use crate::archive::bytes::skip;
use crate::archive::check::{Plan, Planned};
use crate::archive::error::ArchiveError;
use crate::archive::outfile::{OutFile, Stage};
use crate::archive::zip::Entry;
use crate::archive::zip::reader::local_header_len;
use crate::archive::zip::spec::*;
use crate::util::bufpool::BufPool;
use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Callback of [`extract`]: called after each entry with the count so far (the crash
/// tests stop a restore half way through with it).
pub type OnEntry<'a> = &'a mut dyn FnMut(u64) -> io::Result<()>;

/// Size of the buffers handed to the file writer thread.
const WRITE_CHUNK: usize = 256 * 1024;
/// Buffers queued for the file writer thread.
const WRITES_QUEUED: usize = 8;

/// Work for the file writer thread of [`extract`].
enum WriteOp {
    /// The next file, empty, and the size its data will have: the data follows.
    Open(std::fs::File, u64),
    Data(Vec<u8>),
    /// The file is complete: set its mode and time through the open handle, then close it.
    /// Plain values, no allocation: a heap allocation per file freed on the other thread
    /// makes the restore's RSS grow with the number of files.
    Close {
        mode: u32,
        /// Nanoseconds since the epoch.
        mtime_ns: Option<i64>,
    },
}

/// Writes files for [`extract`], so that the write system calls overlap the reading,
/// inflating and checking of the next data.
/// Large files bypass the page cache ([`OutFile`]).
fn file_writer(
    ops: Receiver<WriteOp>,
    pool: &BufPool,
    progress: Option<&crate::ops::progress::Progress>,
) -> io::Result<()> {
    let mut file: Option<OutFile> = None;
    let mut stage = Stage::new();
    for op in ops {
        match op {
            WriteOp::Open(f, size) => file = Some(OutFile::new(f, size)),
            WriteOp::Data(buf) => {
                let f = file
                    .as_mut()
                    .ok_or_else(|| io::Error::other("data for no file"))?;
                f.write(&mut stage, &buf)?;
                if let Some(p) = progress {
                    p.add_bytes(buf.len() as u64);
                }
                pool.give(buf);
            }
            WriteOp::Close { mode, mtime_ns } => {
                let f = file
                    .take()
                    .ok_or_else(|| io::Error::other("close of no file"))?
                    .finish(&mut stage)?;
                // Through the handle: no second lookup of the path, no second open.
                apply_mode_and_time(&f, mode, mtime_ns)?;
            }
        }
    }
    Ok(())
}

/// Extracts `plan` from `archive` (the archive's bytes from offset `start`, read in order)
/// into `dest`, which must exist and be empty. Directory modes are applied last so that a
/// read-only directory can still be filled. This thread reads, inflates and checks; a
/// second one writes the files.
///
/// # Errors
/// Read errors, a CRC or size mismatch, a bad local header, or write errors.
pub fn extract(
    plan: &Plan,
    archive: &mut impl Read,
    start: u64,
    dest: &Path,
    progress: Option<&crate::ops::progress::Progress>,
    on_entry: OnEntry<'_>,
) -> Result<(), ArchiveError> {
    extract_over(plan, archive, start, dest, None, progress, on_entry)
}

/// [`extract`] for a restore that will replace `replaced` (the live data directory): an
/// entry keeps group or world write permission only where the path it replaces there had
/// it (see the module docs).
///
/// # Errors
/// As [`extract`].
pub fn extract_over(
    plan: &Plan,
    archive: &mut impl Read,
    start: u64,
    dest: &Path,
    replaced: Option<&Path>,
    progress: Option<&crate::ops::progress::Progress>,
    on_entry: OnEntry<'_>,
) -> Result<(), ArchiveError> {
    let pool = BufPool::new(WRITE_CHUNK, WRITES_QUEUED + 2);
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel(WRITES_QUEUED);
        let writer = std::thread::Builder::new()
            .name("restore-write".into())
            .spawn_scoped(scope, || file_writer(rx, &pool, progress))
            .map_err(ArchiveError::Io)?;
        let mut counted = |done: u64| {
            if let Some(p) = progress {
                p.add_entry();
            }
            on_entry(done)
        };
        let modes = Modes {
            umask: process_umask(),
            replaced,
        };
        let read = extract_entries(plan, archive, start, dest, modes, &mut counted, &tx, &pool);
        drop(tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the file writer panicked")));
        match (read, written) {
            // The writer's failure is the cause when the reader only saw it stop.
            (Err(ArchiveError::Io(e)), Err(w)) if e.kind() == io::ErrorKind::BrokenPipe => {
                Err(ArchiveError::Io(w))
            }
            (Err(e), _) => Err(e),
            (Ok(()), Err(w)) => Err(ArchiveError::Io(w)),
            (Ok(()), Ok(())) => Ok(()),
        }
    })
}

fn writer_stopped() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the file writer stopped")
}

/// The reading side of [`extract`]: its buffers, and the directories made so far.
struct Extractor<'a> {
    writes: &'a SyncSender<WriteOp>,
    pool: &'a BufPool,
    decoder: Decoder,
    /// Directories known to exist under the destination: most files share their parent
    /// with the file before them, and `create_dir_all` of an existing directory costs two
    /// system calls. Safe because the staging tree is ours alone and the plan holds no
    /// links.
    made: HashSet<PathBuf>,
}

#[allow(clippy::too_many_arguments)]
fn extract_entries(
    plan: &Plan,
    archive: &mut impl Read,
    start: u64,
    dest: &Path,
    modes: Modes<'_>,
    on_entry: OnEntry<'_>,
    writes: &SyncSender<WriteOp>,
    pool: &BufPool,
) -> Result<(), ArchiveError> {
    let mut x = Extractor {
        writes,
        pool,
        decoder: Decoder::new(),
        made: HashSet::new(),
    };
    let mut pos = start;
    let mut dirs = Vec::new();
    for (i, item) in plan.items.iter().enumerate() {
        let e = &item.entry;
        if e.offset < pos {
            return Err(corrupt(e, "overlapping entries"));
        }
        skip(archive, e.offset - pos)?;
        pos = e.offset + skip_local_header(archive, e)?;
        let target = dest.join(&item.path);
        if item.is_dir {
            x.make_dir(&target)?;
            dirs.push((target, item, modes.of(e, &item.path, true)));
        } else {
            if let Some(parent) = target.parent() {
                x.make_dir(parent)?;
            }
            x.file(archive, e, &target, modes.of(e, &item.path, false))?;
            pos += e.compressed;
        }
        on_entry(i as u64 + 1)?;
    }
    for (target, item, mode) in dirs.iter().rev() {
        set_mode_and_time(target, item, *mode)?;
    }
    Ok(())
}

pub(crate) fn corrupt(e: &Entry, why: &str) -> ArchiveError {
    ArchiveError::Corrupt {
        name: e.name_lossy(),
        why: why.to_string(),
    }
}

/// Reads past the local header of `e` and returns its length.
fn skip_local_header(archive: &mut impl Read, e: &Entry) -> Result<u64, ArchiveError> {
    let mut header = [0u8; LOCAL_HEADER_LEN as usize];
    archive
        .read_exact(&mut header)
        .map_err(|_| corrupt(e, "truncated local header"))?;
    let len = local_header_len(&header).map_err(|why| corrupt(e, why))?;
    skip(archive, len - LOCAL_HEADER_LEN)?;
    Ok(len)
}

impl Extractor<'_> {
    fn make_dir(&mut self, dir: &Path) -> io::Result<()> {
        if !self.made.contains(dir) {
            std::fs::create_dir_all(dir)?;
            self.made.insert(dir.to_path_buf());
        }
        Ok(())
    }

    fn send(&self, op: WriteOp) -> io::Result<()> {
        self.writes.send(op).map_err(|_| writer_stopped())
    }

    /// The data of file entry `e` (the archive is at its first byte) into a new file at
    /// `target`, checked against the entry's sizes and CRC-32.
    fn file(
        &mut self,
        archive: &mut impl Read,
        e: &Entry,
        target: &Path,
        mode: u32,
    ) -> Result<(), ArchiveError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(target)?;
        self.send(WriteOp::Open(file, e.uncompressed))?;
        let (writes, pool) = (self.writes, self.pool);
        self.decoder.entry(archive, e, &mut |data: &[u8]| {
            let mut buf = pool.take();
            buf.extend_from_slice(data);
            writes
                .send(WriteOp::Data(buf))
                .map_err(|_| writer_stopped().into())
        })?;
        self.send(WriteOp::Close {
            mode,
            mtime_ns: mtime_ns(e),
        })?;
        Ok(())
    }
}

/// Decodes file entries: the buffers and the inflater are kept from one entry to the next
/// (a fresh inflater per file was an allocation of its state and window per file).
pub(crate) struct Decoder {
    buf: Vec<u8>,
    out_buf: Vec<u8>,
    inflater: flate2::Decompress,
}

impl Decoder {
    pub(crate) fn new() -> Self {
        Self {
            buf: vec![0u8; 256 * 1024],
            out_buf: vec![0u8; 256 * 1024],
            inflater: flate2::Decompress::new(false),
        }
    }

    /// The data of file entry `e` (the archive is at its first byte, its local header
    /// read) into `sink`, checked against the entry's sizes and CRC-32: more data than
    /// declared stops before it reaches `sink`.
    ///
    /// # Errors
    /// Read errors, data that is not what the entry declares, and `sink`'s errors.
    pub(crate) fn entry(
        &mut self,
        archive: &mut impl Read,
        e: &Entry,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError> {
        let mut limited = archive.take(e.compressed);
        let mut crc = crc32fast::Hasher::new();
        let mut written = 0u64;
        let mut checked = |data: &[u8]| -> Result<(), ArchiveError> {
            written += data.len() as u64;
            if written > e.uncompressed {
                return Err(corrupt(e, "more data than its declared size"));
            }
            crc.update(data);
            sink(data)
        };
        match e.method {
            METHOD_STORED => loop {
                let n = limited.read(&mut self.buf)?;
                if n == 0 {
                    break;
                }
                checked(&self.buf[..n])?;
            },
            _ => inflate(
                &mut self.inflater,
                &mut limited,
                &mut self.buf,
                &mut self.out_buf,
                &mut checked,
            )
            .map_err(|err| match err {
                InflateError::Archive(a) => a,
                InflateError::Data(why) => corrupt(e, why),
            })?,
        }
        if limited.limit() != 0 {
            return Err(corrupt(e, "truncated data"));
        }
        if written != e.uncompressed {
            return Err(corrupt(e, "less data than its declared size"));
        }
        if crc.finalize() != e.crc {
            return Err(corrupt(e, "CRC-32 mismatch"));
        }
        Ok(())
    }
}

enum InflateError {
    Archive(ArchiveError),
    Data(&'static str),
}

impl From<io::Error> for InflateError {
    fn from(e: io::Error) -> Self {
        Self::Archive(ArchiveError::Io(e))
    }
}

/// Raw Deflate from `input` to `sink`, checking that the stream ends where the data does.
fn inflate(
    d: &mut flate2::Decompress,
    input: &mut impl Read,
    buf: &mut [u8],
    out: &mut [u8],
    sink: &mut dyn FnMut(&[u8]) -> Result<(), ArchiveError>,
) -> Result<(), InflateError> {
    use flate2::{FlushDecompress, Status};
    d.reset(false);
    let mut filled = 0usize;
    let mut start = 0usize;
    let mut eof = false;
    loop {
        if start == filled && !eof {
            filled = input.read(buf)?;
            start = 0;
            eof = filled == 0;
        }
        let before_in = d.total_in();
        let before_out = d.total_out();
        let flush = if eof {
            FlushDecompress::Finish
        } else {
            FlushDecompress::None
        };
        let status = d
            .decompress(&buf[start..filled], out, flush)
            .map_err(|_| InflateError::Data("invalid deflate data"))?;
        start += (d.total_in() - before_in) as usize;
        let produced = (d.total_out() - before_out) as usize;
        if produced > 0 {
            sink(&out[..produced]).map_err(InflateError::Archive)?;
        }
        match status {
            Status::StreamEnd => return Ok(()),
            Status::Ok | Status::BufError => {
                if eof && produced == 0 && start == filled {
                    return Err(InflateError::Data("truncated deflate data"));
                }
            }
        }
    }
}

/// The mode an entry gets: its permission bits only (no setuid, setgid or sticky bits
/// from an archive), never less than owner read/write (and search for a directory).
fn entry_mode(e: &Entry, is_dir: bool) -> u32 {
    let default = if is_dir { 0o755 } else { 0o644 };
    let mode = e
        .unix_mode
        .map(|m| m & 0o777)
        .filter(|m| *m != 0)
        .unwrap_or(default);
    if is_dir { mode | 0o700 } else { mode | 0o600 }
}

/// An entry's modification time in nanoseconds: the gateway's own field (so that a file
/// restored from a gateway archive keeps its exact time, and a later create sees it
/// unchanged), else the zip's seconds.
fn mtime_ns(e: &Entry) -> Option<i64> {
    e.mtime_ns
        .or_else(|| e.mtime.map(|s| s.saturating_mul(1_000_000_000)))
}

/// Sets a mode (from [`entry_mode`]) and a modification time (nanoseconds) on an open file
/// or directory.
fn apply_mode_and_time(f: &std::fs::File, mode: u32, mtime_ns: Option<i64>) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    if let Some(t) = mtime_ns
        && let Ok(nanos) = u64::try_from(t)
    {
        // A time the file system cannot hold is not worth failing a restore for.
        let _ = f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos));
    }
    Ok(())
}

/// Directories get their mode last (a read-only directory must still be filled).
fn set_mode_and_time(path: &Path, dir: &Planned, mode: u32) -> io::Result<()> {
    apply_mode_and_time(&std::fs::File::open(path)?, mode, mtime_ns(&dir.entry))
}

/// How entries' modes are decided: see the module docs.
#[derive(Debug, Clone, Copy)]
struct Modes<'a> {
    umask: u32,
    replaced: Option<&'a Path>,
}

impl Modes<'_> {
    /// The mode of the entry `e` at `rel`.
    fn of(&self, e: &Entry, rel: &Path, is_dir: bool) -> u32 {
        let had = self
            .replaced
            .and_then(|root| std::fs::symlink_metadata(root.join(rel)).ok())
            .map_or(0, |m| permission_bits(&m));
        masked_mode(entry_mode(e, is_dir), self.umask, had)
    }
}

/// `mode` without the umask's bits, and without group and world write unless `had` (the
/// replaced path's mode) had them.
fn masked_mode(mode: u32, umask: u32, had: u32) -> u32 {
    let keep_write = had & 0o022;
    mode & !umask & !(0o022 & !keep_write)
}

#[cfg(unix)]
fn permission_bits(m: &std::fs::Metadata) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777
}

#[cfg(not(unix))]
fn permission_bits(_m: &std::fs::Metadata) -> u32 {
    0
}

/// The process's umask, read without changing it (`Umask:` in `/proc/self/status`, Linux
/// 4.7 and later); 022 where it cannot be read.
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

#[cfg(test)]
mod tests {
    use super::masked_mode;

    #[test]
    fn modes_lose_the_umask_and_write_for_others_unless_the_replaced_file_had_it() {
        // Nothing replaced: the umask, and never group or world write.
        assert_eq!(masked_mode(0o666, 0o022, 0), 0o644);
        assert_eq!(masked_mode(0o777, 0o002, 0), 0o755);
        assert_eq!(masked_mode(0o640, 0o077, 0), 0o600);
        // The replaced file was group-writable: the archive may keep group write.
        assert_eq!(masked_mode(0o666, 0o002, 0o664), 0o664);
        // ... but not more than the umask allows, nor world write it did not have.
        assert_eq!(masked_mode(0o666, 0o022, 0o664), 0o644);
        assert_eq!(masked_mode(0o666, 0, 0o660), 0o664);
    }
}
