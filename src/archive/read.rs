//! Reading archives for restore, without a local copy of the zip.
//!
//! 1. [`read_index`]: the end records and the central directory, fetched with ranged reads
//!    from the store (a few KiB for a typical backup).
//! 2. [`check_entries`]: every entry is checked before anything is written: no absolute
//!    paths, no `..`, no backslashes or drive letters, no links or special files, no
//!    duplicates, no encryption, only Stored and Deflate, limits on entry count, total size
//!    and compression ratio, entries that do not overlap.
//! 3. [`extract`]: one sequential pass over the archive's bytes (streamed from the store in
//!    ranged chunks), in offset order, with sizes taken from the central directory (so
//!    Stored entries with data descriptors read fine), each entry's CRC-32 verified and its
//!    output cut off at its declared size (so a lying header cannot fill the disk).

use super::outfile::{OutFile, Stage};
use super::spec::*;
use crate::bufpool::BufPool;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Why an archive is refused. The text is safe to show to the API client (it names
/// entries, never server paths).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a zip archive: {0}")]
    NotZip(String),
    #[error("unsafe entry {name:?}: {why}")]
    UnsafeEntry { name: String, why: &'static str },
    #[error("unsupported entry {name:?}: {why}")]
    Unsupported { name: String, why: &'static str },
    #[error("the archive exceeds a restore limit: {0}")]
    Limit(String),
    #[error("corrupt entry {name:?}: {why}")]
    Corrupt { name: String, why: String },
    /// Restoring it would empty the data directory.
    #[error("the archive holds nothing to restore ({0})")]
    Empty(&'static str),
    #[error("reading the archive failed")]
    Io(#[from] io::Error),
}

/// Default of [`Limits::max_depth`] (and of `--restore-max-depth`).
pub const DEFAULT_MAX_DEPTH: usize = 64;
/// Default of [`Limits::max_component_bytes`] (and of `--restore-max-name-bytes`).
pub const DEFAULT_MAX_COMPONENT_BYTES: usize = 255;
/// Default of [`Limits::max_path_bytes`] (and of `--restore-max-path-bytes`).
pub const DEFAULT_MAX_PATH_BYTES: usize = 1024;

/// Restore limits (zip-bomb and sanity guards).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entries: u64,
    /// Total uncompressed size.
    pub max_total_size: u64,
    /// Largest uncompressed/compressed ratio of one entry (for entries over 1 MiB).
    pub max_ratio: u64,
    /// Largest central directory read into memory.
    pub max_index_bytes: u64,
    /// Most path components of one entry.
    pub max_depth: usize,
    /// Longest path component, in bytes (what most file systems allow).
    pub max_component_bytes: usize,
    /// Longest entry path, in bytes.
    pub max_path_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 1_000_000,
            max_total_size: 1 << 40,
            max_ratio: 200,
            max_index_bytes: 256 << 20,
            max_depth: DEFAULT_MAX_DEPTH,
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            max_path_bytes: DEFAULT_MAX_PATH_BYTES,
        }
    }
}

/// One entry of the central directory.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name as stored.
    pub raw_name: Vec<u8>,
    pub method: u16,
    pub flags: u16,
    pub crc: u32,
    pub compressed: u64,
    pub uncompressed: u64,
    /// Offset of the local header.
    pub offset: u64,
    /// Unix mode (type and permission bits) when the archive was made on Unix.
    pub unix_mode: Option<u32>,
    pub dos_dir: bool,
    pub mtime: Option<i64>,
}

impl Entry {
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.raw_name).into_owned()
    }

    pub fn is_dir(&self) -> bool {
        self.raw_name.ends_with(b"/")
            || self.dos_dir
            || self.unix_mode.is_some_and(|m| m & S_IFMT == S_IFDIR)
    }
}

/// Where the central directory is, from the end records.
#[derive(Debug, Clone, Copy)]
pub struct Directory {
    pub entries: u64,
    pub offset: u64,
    pub size: u64,
}

/// Finds the central directory from the last bytes of an archive of `total` bytes.
/// `tail` holds the bytes `total - tail.len() .. total`. Returns the directory, or the
/// offset of a Zip64 end record that has to be read first.
///
/// # Errors
/// When no end record is found or its fields are out of bounds.
pub fn find_directory(tail: &[u8], total: u64) -> Result<DirLookup, ArchiveError> {
    let tail_start = total - tail.len() as u64;
    let eocd = (0..=tail.len().saturating_sub(EOCD_LEN))
        .rev()
        .find(|&i| {
            le32(tail, i) == EOCD_SIG
                && i + EOCD_LEN + usize::from(le16(tail, i + 20)) == tail.len()
        })
        .ok_or_else(|| ArchiveError::NotZip("no end of central directory record".into()))?;
    let entries = u64::from(le16(tail, eocd + 10));
    let size = u64::from(le32(tail, eocd + 12));
    let offset = u64::from(le32(tail, eocd + 16));
    let eocd_abs = tail_start + eocd as u64;
    let saturated = entries == U16_MAX || size == U32_MAX || offset == U32_MAX;
    if eocd >= ZIP64_LOCATOR_LEN && le32(tail, eocd - ZIP64_LOCATOR_LEN) == ZIP64_LOCATOR_SIG {
        let loc = eocd - ZIP64_LOCATOR_LEN;
        let z64 = le64(tail, loc + 8);
        if z64 + ZIP64_EOCD_LEN as u64 > eocd_abs {
            return Err(ArchiveError::NotZip("bad zip64 locator".into()));
        }
        return Ok(DirLookup::Zip64At(z64, eocd_abs));
    }
    if saturated {
        return Err(ArchiveError::NotZip(
            "zip64 archive without a zip64 locator".into(),
        ));
    }
    check_directory(
        Directory {
            entries,
            offset,
            size,
        },
        eocd_abs,
    )
    .map(DirLookup::Found)
}

/// See [`find_directory`].
#[derive(Debug, Clone, Copy)]
pub enum DirLookup {
    Found(Directory),
    /// (offset of the Zip64 end record, offset of the classic end record)
    Zip64At(u64, u64),
}

/// Parses a Zip64 end record read from its offset (56 bytes at least).
///
/// # Errors
/// When the record is malformed or out of bounds.
pub fn parse_zip64_end(rec: &[u8], end_of_records: u64) -> Result<Directory, ArchiveError> {
    if rec.len() < ZIP64_EOCD_LEN || le32(rec, 0) != ZIP64_EOCD_SIG {
        return Err(ArchiveError::NotZip("bad zip64 end record".into()));
    }
    check_directory(
        Directory {
            entries: le64(rec, 32),
            size: le64(rec, 40),
            offset: le64(rec, 48),
        },
        end_of_records,
    )
}

fn check_directory(d: Directory, end: u64) -> Result<Directory, ArchiveError> {
    if d.offset.checked_add(d.size).is_none_or(|e| e > end) {
        return Err(ArchiveError::NotZip(
            "central directory out of bounds (truncated archive?)".into(),
        ));
    }
    // Each central header is at least 46 bytes.
    if d.entries.saturating_mul(CENTRAL_HEADER_LEN as u64) > d.size {
        return Err(ArchiveError::NotZip("central directory too small".into()));
    }
    Ok(d)
}

/// Parses the central directory bytes.
///
/// # Errors
/// When a header is malformed.
pub fn parse_directory(cd: &[u8], expected: u64) -> Result<Vec<Entry>, ArchiveError> {
    let mut out = Vec::with_capacity(usize::try_from(expected.min(1 << 20)).unwrap_or(0));
    let mut p = 0usize;
    while out.len() as u64 != expected {
        if p + CENTRAL_HEADER_LEN > cd.len() || le32(cd, p) != CENTRAL_HEADER_SIG {
            return Err(ArchiveError::NotZip("bad central directory header".into()));
        }
        let made_by = le16(cd, p + 4);
        let flags = le16(cd, p + 8);
        let method = le16(cd, p + 10);
        let dos_time = le16(cd, p + 12);
        let dos_date = le16(cd, p + 14);
        let crc = le32(cd, p + 16);
        let mut compressed = u64::from(le32(cd, p + 20));
        let mut uncompressed = u64::from(le32(cd, p + 24));
        let name_len = usize::from(le16(cd, p + 28));
        let extra_len = usize::from(le16(cd, p + 30));
        let comment_len = usize::from(le16(cd, p + 32));
        let external = le32(cd, p + 38);
        let mut offset = u64::from(le32(cd, p + 42));
        let name_start = p + CENTRAL_HEADER_LEN;
        let extra_start = name_start + name_len;
        let next = extra_start + extra_len + comment_len;
        if next > cd.len() {
            return Err(ArchiveError::NotZip(
                "central directory header overruns".into(),
            ));
        }
        let raw_name = cd[name_start..extra_start].to_vec();
        let extra = &cd[extra_start..extra_start + extra_len];
        let mut mtime = None;
        let mut e = 0;
        while e + 4 <= extra.len() {
            let id = le16(extra, e);
            let len = usize::from(le16(extra, e + 2));
            let Some(body) = extra.get(e + 4..e + 4 + len) else {
                break;
            };
            if id == ZIP64_EXTRA_ID {
                let mut q = 0;
                let mut take = |v: &mut u64| {
                    if *v == U32_MAX && q + 8 <= body.len() {
                        *v = le64(body, q);
                        q += 8;
                    }
                };
                take(&mut uncompressed);
                take(&mut compressed);
                take(&mut offset);
            } else if id == EXTENDED_TIMESTAMP_ID && len >= 5 && body[0] & 1 == 1 {
                mtime = Some(i64::from(le32(body, 1) as i32));
            }
            e += 4 + len;
        }
        let unix_mode = (made_by >> 8 == 3 && external >> 16 != 0).then_some(external >> 16);
        out.push(Entry {
            raw_name,
            method,
            flags,
            crc,
            compressed,
            uncompressed,
            offset,
            unix_mode,
            dos_dir: external & DOS_DIR != 0 && made_by >> 8 == 0,
            mtime: mtime.or_else(|| dos_to_unix(dos_time, dos_date)),
        });
        p = next;
    }
    Ok(out)
}

/// An entry that passed the checks, with where it goes.
#[derive(Debug, Clone)]
pub struct Planned {
    pub entry: Entry,
    /// Relative path (normal components only).
    pub path: PathBuf,
    pub is_dir: bool,
}

/// The restore plan: checked entries in archive order, and what they add up to.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub items: Vec<Planned>,
    pub total_size: u64,
    /// Entries left out because they fall under excluded paths.
    pub skipped: u64,
}

/// Checks every entry (see the module docs) and returns the plan, in offset order.
///
/// # Errors
/// The first entry that is unsafe, unsupported, over a limit, or overlapping another.
pub fn check_entries(
    entries: Vec<Entry>,
    cd_offset: u64,
    limits: &Limits,
    exclude: &[PathBuf],
) -> Result<Plan, ArchiveError> {
    if entries.is_empty() {
        return Err(ArchiveError::Empty("no entries"));
    }
    if entries.len() as u64 > limits.max_entries {
        return Err(ArchiveError::Limit(format!(
            "{} entries, at most {} allowed",
            entries.len(),
            limits.max_entries
        )));
    }
    let mut plan = Plan::default();
    let mut files = std::collections::HashSet::<PathBuf>::new();
    let mut dirs = std::collections::HashSet::<PathBuf>::new();
    for entry in entries {
        let name = entry.name_lossy();
        let unsafe_entry = |why| ArchiveError::UnsafeEntry {
            name: name.clone(),
            why,
        };
        if entry.flags & FLAG_ENCRYPTED != 0 {
            return Err(ArchiveError::Unsupported {
                name,
                why: "encrypted",
            });
        }
        if let Some(mode) = entry.unix_mode {
            match mode & S_IFMT {
                0 | S_IFREG | S_IFDIR => {}
                S_IFLNK => return Err(unsafe_entry("symbolic link")),
                _ => return Err(unsafe_entry("special file")),
            }
        }
        let is_dir = entry.is_dir();
        if !is_dir && entry.method != METHOD_STORED && entry.method != METHOD_DEFLATE {
            return Err(ArchiveError::Unsupported {
                name,
                why: "compression method (only Stored and Deflate)",
            });
        }
        let path = safe_path(&entry.raw_name).map_err(unsafe_entry)?;
        check_path_limits(&name, &path, entry.raw_name.len(), limits)?;
        if exclude.iter().any(|x| path.starts_with(x)) {
            plan.skipped += 1;
            continue;
        }
        if is_dir && entry.uncompressed != 0 {
            return Err(unsafe_entry("directory with contents"));
        }
        // A file path may appear once, and never also as a directory or below a file.
        for parent in path.ancestors().skip(1) {
            if parent.as_os_str().is_empty() {
                break;
            }
            if files.contains(parent) {
                return Err(unsafe_entry("entry below a file"));
            }
            if dirs.contains(parent) {
                // Its ancestors were checked and recorded with it (`dirs` and `files`
                // never share a path): no allocation per ancestor per entry.
                break;
            }
            dirs.insert(parent.to_path_buf());
        }
        if files.contains(&path) || (!is_dir && dirs.contains(&path)) {
            return Err(unsafe_entry("duplicate entry"));
        }
        if is_dir {
            dirs.insert(path.clone());
        } else {
            files.insert(path.clone());
        }
        if !is_dir {
            if entry.uncompressed > (1 << 20)
                && entry.uncompressed / entry.compressed.max(1) > limits.max_ratio
            {
                return Err(ArchiveError::Limit(format!(
                    "entry {name:?} expands {}x, at most {}x allowed",
                    entry.uncompressed / entry.compressed.max(1),
                    limits.max_ratio
                )));
            }
            if entry.method == METHOD_STORED && entry.compressed != entry.uncompressed {
                return Err(ArchiveError::Corrupt {
                    name,
                    why: "stored entry with different sizes".into(),
                });
            }
            plan.total_size = plan.total_size.saturating_add(entry.uncompressed);
            if plan.total_size > limits.max_total_size {
                return Err(ArchiveError::Limit(format!(
                    "more than {} bytes uncompressed",
                    limits.max_total_size
                )));
            }
        }
        plan.items.push(Planned {
            entry,
            path,
            is_dir,
        });
    }
    if plan.items.is_empty() {
        return Err(ArchiveError::Empty(
            "every entry is in a path that a restore leaves alone",
        ));
    }
    plan.items.sort_by_key(|p| p.entry.offset);
    // Entries may not overlap each other or the central directory.
    for pair in plan.items.windows(2) {
        let (a, b) = (&pair[0].entry, &pair[1].entry);
        if a.offset + LOCAL_HEADER_LEN + a.compressed > b.offset {
            return Err(ArchiveError::UnsafeEntry {
                name: b.name_lossy(),
                why: "overlaps another entry",
            });
        }
    }
    if let Some(last) = plan.items.last()
        && last.entry.offset + LOCAL_HEADER_LEN + last.entry.compressed > cd_offset
    {
        return Err(ArchiveError::UnsafeEntry {
            name: last.entry.name_lossy(),
            why: "overlaps the central directory",
        });
    }
    Ok(plan)
}

/// Depth and length limits of one entry's path (`name_len`: the stored name's bytes).
fn check_path_limits(
    name: &str,
    path: &Path,
    name_len: usize,
    limits: &Limits,
) -> Result<(), ArchiveError> {
    let depth = path.components().count();
    if depth > limits.max_depth {
        return Err(ArchiveError::Limit(format!(
            "entry {:?}: {depth} path components, at most {} allowed",
            truncated(name),
            limits.max_depth
        )));
    }
    if let Some(long) = path
        .components()
        .map(|c| c.as_os_str().len())
        .find(|&n| n > limits.max_component_bytes)
    {
        return Err(ArchiveError::Limit(format!(
            "entry {:?}: a path component of {long} bytes, at most {} allowed",
            truncated(name),
            limits.max_component_bytes
        )));
    }
    if name_len > limits.max_path_bytes {
        return Err(ArchiveError::Limit(format!(
            "entry {:?}: a path of {name_len} bytes, at most {} allowed",
            truncated(name),
            limits.max_path_bytes
        )));
    }
    Ok(())
}

/// The start of a long name, for messages.
fn truncated(name: &str) -> String {
    match name.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &name[..i]),
        None => name.to_string(),
    }
}

/// The relative path of an entry name, or why it is unsafe.
fn safe_path(raw: &[u8]) -> Result<PathBuf, &'static str> {
    if raw.is_empty() {
        return Err("empty name");
    }
    if raw.contains(&0) {
        return Err("NUL in name");
    }
    // Terminal escapes, line breaks and the like: no file name needs them, and they would
    // reach logs and listings as they are.
    if raw.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err("control character in name");
    }
    if raw.contains(&b'\\') {
        return Err("backslash in name");
    }
    if raw[0] == b'/' {
        return Err("absolute path");
    }
    if raw.len() >= 2 && raw[1] == b':' && raw[0].is_ascii_alphabetic() {
        return Err("drive letter");
    }
    let trimmed = raw.strip_suffix(b"/").unwrap_or(raw);
    let mut path = PathBuf::new();
    for part in trimmed.split(|&b| b == b'/') {
        match part {
            b"" => return Err("empty path component"),
            b"." | b".." => return Err("relative path component"),
            _ => path.push(os_str(part)?),
        }
    }
    // Belt and braces: the platform's own view of the path must agree.
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err("not a plain relative path");
    }
    Ok(path)
}

#[cfg(unix)]
fn os_str(b: &[u8]) -> Result<&std::ffi::OsStr, &'static str> {
    Ok(std::os::unix::ffi::OsStrExt::from_bytes(b))
}

#[cfg(not(unix))]
fn os_str(b: &[u8]) -> Result<&std::ffi::OsStr, &'static str> {
    std::str::from_utf8(b)
        .map(std::ffi::OsStr::new)
        .map_err(|_| "name is not UTF-8")
}

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
    /// made the restore's RSS grow with the number of files.
    Close {
        mode: u32,
        mtime: Option<i64>,
    },
}

/// Writes files for [`extract`], so that the write system calls (a third of a restore's
/// CPU time) overlap the reading, inflating and checking of the next data.
/// Large files bypass the page cache ([`OutFile`]).
fn file_writer(
    ops: Receiver<WriteOp>,
    pool: &BufPool,
    progress: Option<&crate::progress::Progress>,
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
            WriteOp::Close { mode, mtime } => {
                let f = file
                    .take()
                    .ok_or_else(|| io::Error::other("close of no file"))?
                    .finish(&mut stage)?;
                // Through the handle: no second lookup of the path, no second open (for
                // 100,000 small files this was a sixth of a restore's system calls).
                apply_mode_and_time(&f, mode, mtime)?;
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
    progress: Option<&crate::progress::Progress>,
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
        let read = extract_entries(plan, archive, start, dest, &mut counted, &tx, &pool);
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

fn extract_entries(
    plan: &Plan,
    archive: &mut impl Read,
    start: u64,
    dest: &Path,
    on_entry: OnEntry<'_>,
    writes: &SyncSender<WriteOp>,
    pool: &BufPool,
) -> Result<(), ArchiveError> {
    let send = |op: WriteOp| writes.send(op).map_err(|_| writer_stopped());
    let mut pos = start;
    let mut buf = vec![0u8; 256 * 1024];
    let mut out_buf = vec![0u8; 256 * 1024];
    // One inflater for every entry (reset per entry): a fresh one per file was an
    // allocation of its state and window per file.
    let mut inflater = flate2::Decompress::new(false);
    let mut dirs = Vec::new();
    // Directories known to exist under `dest`: most files share their parent with the file
    // before them, and `create_dir_all` of an existing directory costs two system calls.
    // Safe because the staging tree is ours alone and the plan holds no links.
    let mut made: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    for (i, item) in plan.items.iter().enumerate() {
        let e = &item.entry;
        let name = || e.name_lossy();
        let corrupt = |why: &str| ArchiveError::Corrupt {
            name: name(),
            why: why.to_string(),
        };
        if e.offset < pos {
            return Err(corrupt("overlapping entries"));
        }
        skip(archive, e.offset - pos)?;
        let mut header = [0u8; LOCAL_HEADER_LEN as usize];
        read_exact(archive, &mut header).map_err(|_| corrupt("truncated local header"))?;
        if le32(&header, 0) != LOCAL_HEADER_SIG {
            return Err(corrupt("bad local header"));
        }
        let name_len = u64::from(le16(&header, 26));
        let extra_len = u64::from(le16(&header, 28));
        skip(archive, name_len + extra_len)?;
        pos = e.offset + LOCAL_HEADER_LEN + name_len + extra_len;
        let target = dest.join(&item.path);
        if item.is_dir {
            if !made.contains(&target) {
                std::fs::create_dir_all(&target)?;
                made.insert(target.clone());
            }
            dirs.push((target, item));
        } else {
            if let Some(parent) = target.parent()
                && !made.contains(parent)
            {
                std::fs::create_dir_all(parent)?;
                made.insert(parent.to_path_buf());
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)?;
            send(WriteOp::Open(file, e.uncompressed))?;
            let mut limited = archive.take(e.compressed);
            let mut crc = crc32fast::Hasher::new();
            let mut written = 0u64;
            let mut sink = |data: &[u8]| -> Result<(), ArchiveError> {
                written += data.len() as u64;
                if written > e.uncompressed {
                    return Err(corrupt("more data than its declared size"));
                }
                crc.update(data);
                let mut buf = pool.take();
                buf.extend_from_slice(data);
                send(WriteOp::Data(buf))?;
                Ok(())
            };
            match e.method {
                METHOD_STORED => loop {
                    let n = limited.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    sink(&buf[..n])?;
                },
                _ => inflate(
                    &mut inflater,
                    &mut limited,
                    &mut buf,
                    &mut out_buf,
                    &mut sink,
                )
                .map_err(|err| match err {
                    InflateError::Archive(a) => a,
                    InflateError::Data(why) => corrupt(why),
                })?,
            }
            let consumed = e.compressed - limited.limit();
            if consumed != e.compressed {
                return Err(corrupt("truncated data"));
            }
            if written != e.uncompressed {
                return Err(corrupt("less data than its declared size"));
            }
            if crc.finalize() != e.crc {
                return Err(corrupt("CRC-32 mismatch"));
            }
            send(WriteOp::Close {
                mode: entry_mode(e, false),
                mtime: e.mtime,
            })?;
            pos += e.compressed;
        }
        on_entry(i as u64 + 1)?;
    }
    for (target, item) in dirs.iter().rev() {
        set_mode_and_time(target, &item.entry, true)?;
    }
    Ok(())
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

/// Sets a mode (from [`entry_mode`]) and a modification time on an open file or directory.
fn apply_mode_and_time(f: &std::fs::File, mode: u32, mtime: Option<i64>) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    if let Some(t) = mtime
        && let Ok(secs) = u64::try_from(t)
    {
        // A time the file system cannot hold is not worth failing a restore for.
        let _ = f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    }
    Ok(())
}

/// Directories get their mode last (a read-only directory must still be filled).
fn set_mode_and_time(path: &Path, e: &Entry, is_dir: bool) -> io::Result<()> {
    apply_mode_and_time(&std::fs::File::open(path)?, entry_mode(e, is_dir), e.mtime)
}

fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied != n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "archive ended early",
        ));
    }
    Ok(())
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> io::Result<()> {
    r.read_exact(buf)
}

fn dos_to_unix(time: u16, date: u16) -> Option<i64> {
    let year = 1980 + i32::from(date >> 9);
    let month = time::Month::try_from(((date >> 5) & 0xF) as u8).ok()?;
    let day = (date & 0x1F) as u8;
    let d = time::Date::from_calendar_date(year, month, day).ok()?;
    let t = time::Time::from_hms(
        (time >> 11) as u8,
        ((time >> 5) & 0x3F) as u8,
        ((time & 0x1F) * 2) as u8,
    )
    .ok()?;
    Some(
        time::PrimitiveDateTime::new(d, t)
            .assume_utc()
            .unix_timestamp(),
    )
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::write::ZipWriter;

    fn zip(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = ZipWriter::new(Vec::new(), 6);
        let mut scratch = Vec::new();
        for (name, data) in files {
            if let Some(dir) = name.strip_suffix('/') {
                w.add_dir(dir.as_bytes(), 0o755, 1_700_000_000).unwrap();
            } else {
                w.add_file(
                    name.as_bytes(),
                    0o640,
                    1_700_000_000,
                    &mut &data[..],
                    &mut scratch,
                )
                .unwrap();
            }
        }
        w.finish().unwrap().0
    }

    fn index(bytes: &[u8]) -> (Directory, Vec<Entry>) {
        let tail_len = bytes.len().min(70_000);
        let tail = &bytes[bytes.len() - tail_len..];
        let dir = match find_directory(tail, bytes.len() as u64).unwrap() {
            DirLookup::Found(d) => d,
            DirLookup::Zip64At(off, end) => parse_zip64_end(&bytes[off as usize..], end).unwrap(),
        };
        let cd = &bytes[dir.offset as usize..(dir.offset + dir.size) as usize];
        (dir, parse_directory(cd, dir.entries).unwrap())
    }

    #[test]
    fn round_trip_through_writer_index_and_extract() {
        let big = "abc".repeat(100_000);
        let bytes = zip(&[
            ("a.txt", b"hello"),
            ("dir/", b""),
            ("dir/b.bin", big.as_bytes()),
            ("ünï/c", b""),
        ]);
        let (dir, entries) = index(&bytes);
        assert_eq!(entries.len(), 4);
        let plan = check_entries(entries, dir.offset, &Limits::default(), &[]).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let progress = crate::progress::Progress::new(
            crate::progress::Kind::Restore,
            crate::progress::Trigger::Api,
            "t.zip",
        );
        extract(
            &plan,
            &mut &bytes[..],
            0,
            dest.path(),
            Some(&progress),
            &mut |_| Ok(()),
        )
        .unwrap();
        let counted = progress.view();
        assert_eq!((counted.entries_done, counted.bytes_done), (4, 5 + 300_000));
        assert_eq!(std::fs::read(dest.path().join("a.txt")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read(dest.path().join("dir/b.bin")).unwrap(),
            big.as_bytes()
        );
        assert_eq!(std::fs::read(dest.path().join("ünï/c")).unwrap(), b"");
    }

    #[test]
    fn every_entry_gets_its_data_mode_and_time_with_one_inflater_for_all() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // Several Deflated entries in a row, of different sizes: the inflater is reset
        // between them, so a leftover state would corrupt the second one.
        let texts: Vec<String> = (0..5)
            .map(|i| format!("entry {i} ").repeat(5_000 * (i + 1)))
            .collect();
        let mut files: Vec<(String, &[u8])> = vec![("d/".into(), b"")];
        for (i, t) in texts.iter().enumerate() {
            files.push((format!("d/t{i}.txt"), t.as_bytes()));
        }
        let named: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        let bytes = zip(&named);
        let (dir, entries) = index(&bytes);
        assert!(entries.iter().filter(|e| e.method != METHOD_STORED).count() >= 5);
        let plan = check_entries(entries, dir.offset, &Limits::default(), &[]).unwrap();
        let dest = tempfile::tempdir().unwrap();
        extract(
            &plan,
            &mut &bytes[..],
            0,
            dest.path(),
            None,
            &mut |_| Ok(()),
        )
        .unwrap();
        for (i, t) in texts.iter().enumerate() {
            let path = dest.path().join(format!("d/t{i}.txt"));
            assert_eq!(std::fs::read(&path).unwrap(), t.as_bytes(), "entry {i}");
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(meta.permissions().mode() & 0o7777, 0o640, "entry {i}");
            assert_eq!(meta.mtime(), 1_700_000_000, "entry {i}");
        }
        let meta = std::fs::metadata(dest.path().join("d")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
        assert_eq!(meta.mtime(), 1_700_000_000);
    }

    #[test]
    fn unsafe_names_are_refused() {
        for bad in [
            &b"../x"[..],
            b"/etc/passwd",
            b"a/../../x",
            b"a\\..\\x",
            b"C:/x",
            b"a//b",
            b"./a",
            b"",
            b"a\0b",
        ] {
            assert!(
                safe_path(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(safe_path(b"a/b/c").unwrap(), PathBuf::from("a/b/c"));
        assert_eq!(safe_path(b"a/b/").unwrap(), PathBuf::from("a/b"));
    }

    #[test]
    fn excluded_paths_are_skipped_and_duplicates_refused() {
        let bytes = zip(&[("backups/x.zip", b"1"), ("data.db", b"2")]);
        let (dir, entries) = index(&bytes);
        let plan = check_entries(
            entries,
            dir.offset,
            &Limits::default(),
            &[PathBuf::from("backups")],
        )
        .unwrap();
        assert_eq!(plan.skipped, 1);
        assert_eq!(plan.items.len(), 1);

        for conflicting in [
            &[("a", &b"1"[..]), ("a", b"2")][..],
            &[("a", b"1"), ("a/", b"")],
            &[("a/b", b"1"), ("a", b"2")],
            &[("a", b"1"), ("a/b", b"2")],
        ] {
            let bytes = zip(conflicting);
            let (dir, entries) = index(&bytes);
            assert!(
                check_entries(entries, dir.offset, &Limits::default(), &[]).is_err(),
                "{conflicting:?}"
            );
        }
        let bytes = zip(&[("a/", b""), ("a/", b""), ("a/b", b"1")]);
        let (dir, entries) = index(&bytes);
        assert!(check_entries(entries, dir.offset, &Limits::default(), &[]).is_ok());
    }

    #[test]
    fn crc_mismatch_and_truncation_are_detected() {
        let mut bytes = zip(&[("a.txt", b"hello hello hello hello")]);
        let (dir, entries) = index(&bytes);
        let plan = check_entries(entries, dir.offset, &Limits::default(), &[]).unwrap();
        // Flip a bit in the compressed data (just after the 30+5+9 byte header).
        bytes[30 + 5 + 9 + 2] ^= 0x10;
        let dest = tempfile::tempdir().unwrap();
        assert!(
            extract(
                &plan,
                &mut &bytes[..],
                0,
                dest.path(),
                None,
                &mut |_| Ok(())
            )
            .is_err()
        );
        let dest = tempfile::tempdir().unwrap();
        assert!(
            extract(&plan, &mut &bytes[..40], 0, dest.path(), None, &mut |_| Ok(
                ()
            ))
            .is_err()
        );
    }

    #[test]
    fn not_a_zip_is_refused() {
        assert!(find_directory(b"hello world, not a zip at all", 29).is_err());
    }

    /// Property tests: archives made by the gateway's writer, by PocketBase, and generated in
    /// every Zip64 form (any mix of escaped sizes and offsets, Zip64 end records or not),
    /// restored whole, then mutated at random (bytes overwritten, mostly in the headers and the central directory; cut
    /// short), go through everything a restore does with them: find the directory, parse
    /// it, check every entry, extract into a scratch directory. None may panic; a refusal
    /// is an error with a message; nothing is written outside the scratch directory.
    mod props {
        use super::*;
        use proptest::prelude::*;
        use proptest::sample::Index;

        fn gateway_archive() -> Vec<u8> {
            let noise = crate::archive::test_data::noise;
            let log = b"GET /api 200\n".repeat(400);
            let (db, media) = (noise(3000, 1), noise(700, 2));
            zip(&[
                ("data.db", &db),
                ("logs/", b""),
                ("logs/app.log", &log),
                ("empty", b""),
                ("storage/a/b.txt", b"deep"),
                ("storage/ünï.bin", &media),
            ])
        }

        fn pocketbase_archive() -> Vec<u8> {
            include_bytes!("../../tests/fixtures/pocketbase-0.40.6.zip").to_vec()
        }

        /// What a restore does with an archive, all of it in memory.
        fn restore_all(bytes: &[u8], dest: &Path) -> Result<usize, ArchiveError> {
            let total = bytes.len() as u64;
            if total < 22 {
                return Err(ArchiveError::NotZip("too short".into()));
            }
            let dir = match find_directory(bytes, total)? {
                DirLookup::Found(d) => d,
                DirLookup::Zip64At(off, end) => parse_zip64_end(&bytes[off as usize..], end)?,
            };
            let cd = &bytes[dir.offset as usize..(dir.offset + dir.size) as usize];
            let entries = parse_directory(cd, dir.entries)?;
            let plan = check_entries(entries, dir.offset, &Limits::default(), &[])?;
            extract(&plan, &mut &bytes[..], 0, dest, None, &mut |_| Ok(()))?;
            Ok(plan.items.len())
        }

        /// (where, new byte): `tail` picks a place in the last 4 KiB, where the directory
        /// and the end records are, else anywhere.
        fn mutations() -> impl Strategy<Value = Vec<(bool, Index, u8)>> {
            proptest::collection::vec((any::<bool>(), any::<Index>(), any::<u8>()), 1..6)
        }

        fn check(
            base: &[u8],
            edits: &[(bool, Index, u8)],
            cut: Option<Index>,
        ) -> Result<(), TestCaseError> {
            let mut bytes = base.to_vec();
            for (tail, at, byte) in edits {
                let i = if *tail {
                    let from = bytes.len().saturating_sub(4096);
                    from + at.index(bytes.len() - from)
                } else {
                    at.index(bytes.len())
                };
                bytes[i] = *byte;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            let scratch = tempfile::tempdir().unwrap();
            let dest = scratch.path().join("dest");
            std::fs::create_dir(&dest).unwrap();
            let outcome = std::panic::catch_unwind(|| restore_all(&bytes, &dest));
            prop_assert!(outcome.is_ok(), "panicked");
            if let Ok(Err(e)) = &outcome {
                prop_assert!(!e.to_string().is_empty());
            }
            let beside: Vec<_> = std::fs::read_dir(scratch.path()).unwrap().collect();
            prop_assert_eq!(beside.len(), 1, "written outside the destination");
            Ok(())
        }

        /// A Stored archive in Zip64 form, as other writers make them (Python's
        /// `force_zip64`, 7-Zip, Java): for each entry, `escape` says which of its
        /// uncompressed size, compressed size and offset are `0xFFFFFFFF` in the central
        /// directory and moved into the Zip64 extra field (the local header then carries
        /// both sizes there); with `zip64_end`, the end records are Zip64's too.
        fn zip64_archive(
            entries: &[(String, Vec<u8>)],
            escape: &[[bool; 3]],
            zip64_end: bool,
        ) -> Vec<u8> {
            const FF: u32 = 0xFFFF_FFFF;
            let (mut out, mut central) = (Vec::new(), Vec::new());
            for ((name, data), esc) in entries.iter().zip(escape) {
                let (offset, size, crc) =
                    (out.len() as u64, data.len() as u64, crc32fast::hash(data));
                let sizes_escaped = esc[0] || esc[1];
                let mut local_extra = Vec::new();
                if sizes_escaped {
                    local_extra.extend_from_slice(&1u16.to_le_bytes());
                    local_extra.extend_from_slice(&16u16.to_le_bytes());
                    local_extra.extend_from_slice(&size.to_le_bytes());
                    local_extra.extend_from_slice(&size.to_le_bytes());
                }
                let size32 = |escaped: bool| if escaped { FF } else { size as u32 };
                out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
                out.extend_from_slice(&45u16.to_le_bytes());
                out.extend_from_slice(&0x0800u16.to_le_bytes());
                out.extend_from_slice(&0u16.to_le_bytes());
                out.extend_from_slice(&0u16.to_le_bytes());
                out.extend_from_slice(&0x0021u16.to_le_bytes());
                out.extend_from_slice(&crc.to_le_bytes());
                out.extend_from_slice(&size32(sizes_escaped).to_le_bytes());
                out.extend_from_slice(&size32(sizes_escaped).to_le_bytes());
                out.extend_from_slice(&(name.len() as u16).to_le_bytes());
                out.extend_from_slice(&(local_extra.len() as u16).to_le_bytes());
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(&local_extra);
                out.extend_from_slice(data);
                let mut fields = Vec::new();
                for (escaped, value) in [(esc[0], size), (esc[1], size), (esc[2], offset)] {
                    if escaped {
                        fields.extend_from_slice(&value.to_le_bytes());
                    }
                }
                let mut extra = Vec::new();
                if !fields.is_empty() {
                    extra.extend_from_slice(&1u16.to_le_bytes());
                    extra.extend_from_slice(&(fields.len() as u16).to_le_bytes());
                    extra.extend_from_slice(&fields);
                }
                central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
                central.extend_from_slice(&((3u16 << 8) | 45).to_le_bytes());
                central.extend_from_slice(&45u16.to_le_bytes());
                central.extend_from_slice(&0x0800u16.to_le_bytes());
                central.extend_from_slice(&0u16.to_le_bytes());
                central.extend_from_slice(&0u16.to_le_bytes());
                central.extend_from_slice(&0x0021u16.to_le_bytes());
                central.extend_from_slice(&crc.to_le_bytes());
                central.extend_from_slice(&size32(esc[1]).to_le_bytes());
                central.extend_from_slice(&size32(esc[0]).to_le_bytes());
                central.extend_from_slice(&(name.len() as u16).to_le_bytes());
                central.extend_from_slice(&(extra.len() as u16).to_le_bytes());
                // Comment length, disk number, internal attributes.
                central.extend_from_slice(&[0; 6]);
                central.extend_from_slice(&(0o100_644u32 << 16).to_le_bytes());
                let offset32 = if esc[2] { FF } else { offset as u32 };
                central.extend_from_slice(&offset32.to_le_bytes());
                central.extend_from_slice(name.as_bytes());
                central.extend_from_slice(&extra);
            }
            let (cd_offset, cd_size, n) =
                (out.len() as u64, central.len() as u64, entries.len() as u64);
            out.extend_from_slice(&central);
            if zip64_end {
                let record_at = out.len() as u64;
                out.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
                out.extend_from_slice(&44u64.to_le_bytes());
                out.extend_from_slice(&((3u16 << 8) | 45).to_le_bytes());
                out.extend_from_slice(&45u16.to_le_bytes());
                out.extend_from_slice(&[0; 8]);
                for v in [n, n, cd_size, cd_offset] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
                out.extend_from_slice(&0u32.to_le_bytes());
                out.extend_from_slice(&record_at.to_le_bytes());
                out.extend_from_slice(&1u32.to_le_bytes());
            }
            let (n16, size32, offset32) = if zip64_end {
                (0xFFFF, FF, FF)
            } else {
                (n as u16, cd_size as u32, cd_offset as u32)
            };
            out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&n16.to_le_bytes());
            out.extend_from_slice(&n16.to_le_bytes());
            out.extend_from_slice(&size32.to_le_bytes());
            out.extend_from_slice(&offset32.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out
        }

        /// Entries (name, data), which fields each escapes, Zip64 end records or not.
        type Zip64Layout = (Vec<(String, Vec<u8>)>, Vec<[bool; 3]>, bool);

        /// 1 to 5 files (names that cannot clash, in up to two directories, up to 3,000
        /// bytes each), which fields each escapes, and whether the end records are Zip64.
        fn zip64_layouts() -> impl Strategy<Value = Zip64Layout> {
            (1usize..6).prop_flat_map(|n| {
                (
                    proptest::collection::vec(
                        (0usize..4, proptest::collection::vec(any::<u8>(), 0..3000)),
                        n,
                    ),
                    proptest::collection::vec(any::<[bool; 3]>(), n),
                    any::<bool>(),
                )
                    .prop_map(|(files, escape, end)| {
                        let entries = files
                            .into_iter()
                            .enumerate()
                            .map(|(i, (dir, data))| {
                                (format!("{}f{i}.bin", ["", "a/", "a/b/", "c/"][dir]), data)
                            })
                            .collect();
                        (entries, escape, end)
                    })
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

            #[test]
            fn generated_zip64_archives_restore_whole((entries, escape, end) in zip64_layouts()) {
                let bytes = zip64_archive(&entries, &escape, end);
                let dest = tempfile::tempdir().unwrap();
                let restored = restore_all(&bytes, dest.path());
                prop_assert!(restored.is_ok(), "{:?}", restored.err().map(|e| e.to_string()));
                for (name, data) in &entries {
                    prop_assert_eq!(&std::fs::read(dest.path().join(name)).unwrap(), data, "{}", name);
                }
            }

            #[test]
            fn mutated_zip64_archives_never_panic(
                (entries, escape, end) in zip64_layouts(),
                edits in mutations(),
                cut in proptest::option::weighted(0.2, any::<Index>()),
            ) {
                check(&zip64_archive(&entries, &escape, end), &edits, cut)?;
            }

            #[test]
            fn mutated_gateway_archives_never_panic(
                edits in mutations(),
                cut in proptest::option::weighted(0.2, any::<Index>()),
            ) {
                check(&gateway_archive(), &edits, cut)?;
            }

            #[test]
            fn mutated_pocketbase_archives_never_panic(
                edits in mutations(),
                cut in proptest::option::weighted(0.2, any::<Index>()),
            ) {
                check(&pocketbase_archive(), &edits, cut)?;
            }
        }

        #[test]
        fn the_unmutated_archives_restore_whole() {
            for base in [gateway_archive(), pocketbase_archive()] {
                let dest = tempfile::tempdir().unwrap();
                let n = restore_all(&base, dest.path()).unwrap();
                assert!(n >= 3, "{n} entries");
            }
        }
    }
}
