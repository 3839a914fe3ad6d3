//! The zip writer: entries in, a zip out, written as it goes to any `Write`.
//!
//! Layout, as Go's `archive/zip` writes it: local header with the data-descriptor flag and
//! zero sizes, the data, a data descriptor (64-bit sizes when the entry needs Zip64), then a
//! central directory with Zip64 extra fields for sizes or offsets that do not fit 32 bits and
//! a Zip64 end record when needed (over 65,535 entries or 4 GiB). Unix modes go in the
//! external attributes and the modification time in an extended-timestamp field.
//!
//! It compresses nothing itself: file data arrives already in the entry's method
//! ([`crate::archive::create`] compresses on all cores).

use super::spec::*;
use crate::archive::bytes::{dos_datetime, put_u16, put_u32, put_u64};
use crate::archive::meta::{EntryMeta, Identity};
use std::io::{self, Write};

/// What went into an archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub files: u64,
    pub dirs: u64,
    /// Sum of the files' sizes.
    pub bytes_in: u64,
    /// Size of the archive.
    pub bytes_out: u64,
}

/// One central directory record, kept until the end.
struct CdEntry {
    name: Vec<u8>,
    flags: u16,
    method: u16,
    mtime_ns: i64,
    identity: Identity,
    read_from_ns: i64,
    crc: u32,
    compressed: u64,
    uncompressed: u64,
    offset: u64,
    external: u32,
}

/// A file entry of an earlier archive whose bytes (local header, data, data descriptor)
/// stand at `offset` of the new one, copied there by the store; the writer only records it
/// in the central directory.
#[derive(Debug, Clone)]
pub struct ReusedEntry {
    /// Its name as stored (a directory's with its `/`).
    pub meta: EntryMeta,
    pub is_dir: bool,
    pub flags: u16,
    pub method: u16,
    pub crc: u32,
    pub compressed: u64,
    pub uncompressed: u64,
    /// Where its local header is in the new archive.
    pub offset: u64,
    /// When the create that read its file began reading (carried from the earlier
    /// archive: its bytes are the ones read then).
    pub read_from_ns: i64,
}

/// A file entry between [`ZipWriter::start_file`] and [`ZipWriter::finish_file`].
#[derive(Debug)]
pub struct OpenEntry {
    meta: EntryMeta,
    flags: u16,
    method: u16,
    offset: u64,
    data_start: u64,
}

/// Counts what passes through.
pub(crate) struct Counting<W> {
    pub(crate) inner: W,
    pub(crate) count: u64,
}

impl<W> Counting<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self { inner, count: 0 }
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Entries in, a zip out (see the module docs).
pub struct ZipWriter<W: Write> {
    out: Counting<W>,
    entries: Vec<CdEntry>,
    stats: WriteStats,
    /// Recorded with every entry this writer writes of its device: the file system's time
    /// when the create began reading ([`Self::reading_from`]).
    read_from: crate::util::fsutil::FsNow,
}

impl<W: Write> ZipWriter<W> {
    pub fn new(out: W) -> Self {
        Self::continuing(out, 0, Vec::new())
    }

    /// A writer whose output starts at offset `start` of the archive, after `start` bytes
    /// that hold the `reused` entries (an incremental create's copied ranges).
    pub fn continuing(out: W, start: u64, reused: Vec<ReusedEntry>) -> Self {
        let mut stats = WriteStats::default();
        let entries = reused
            .into_iter()
            .map(|r| {
                let external = if r.is_dir {
                    stats.dirs += 1;
                    ((S_IFDIR | (r.meta.mode & 0o7777)) << 16) | DOS_DIR
                } else {
                    stats.files += 1;
                    stats.bytes_in += r.uncompressed;
                    (S_IFREG | (r.meta.mode & 0o7777)) << 16
                };
                CdEntry {
                    external,
                    name: r.meta.name,
                    flags: r.flags,
                    method: r.method,
                    mtime_ns: r.meta.mtime_ns,
                    identity: r.meta.identity,
                    read_from_ns: r.read_from_ns,
                    crc: r.crc,
                    compressed: r.compressed,
                    uncompressed: r.uncompressed,
                    offset: r.offset,
                }
            })
            .collect();
        Self {
            out: Counting {
                inner: out,
                count: start,
            },
            entries,
            stats,
            read_from: crate::util::fsutil::FsNow::default(),
        }
    }

    /// Records `now` as the file system's time when the create began reading, with the
    /// entries of its device (see [`crate::archive::reuse`]); the others, and every entry
    /// without it, get 0, which makes them never reusable: a time stamp of another file
    /// system is from another clock, in another granularity.
    #[must_use]
    pub fn reading_from(mut self, now: crate::util::fsutil::FsNow) -> Self {
        self.read_from = now;
        self
    }

    /// The read time recorded with an entry of `identity`.
    fn read_from_for(&self, identity: &Identity) -> i64 {
        if identity.dev == self.read_from.dev {
            self.read_from.ns
        } else {
            0
        }
    }

    fn flags_for(name: &[u8]) -> u16 {
        if std::str::from_utf8(name).is_ok_and(|s| !s.is_ascii()) {
            FLAG_UTF8
        } else {
            0
        }
    }

    fn local_header(&mut self, name: &[u8], flags: u16, method: u16, mtime: i64) -> io::Result<()> {
        let (dos_time, dos_date) = dos_datetime(mtime);
        let mut h = Vec::with_capacity(30 + name.len() + 9);
        put_u32(&mut h, LOCAL_HEADER_SIG);
        put_u16(&mut h, VERSION_NEEDED_DEFAULT);
        put_u16(&mut h, flags);
        put_u16(&mut h, method);
        put_u16(&mut h, dos_time);
        put_u16(&mut h, dos_date);
        put_u32(&mut h, 0); // crc, in the data descriptor
        put_u32(&mut h, 0); // compressed size
        put_u32(&mut h, 0); // uncompressed size
        put_u16(
            &mut h,
            u16::try_from(name.len()).map_err(|_| name_too_long())?,
        );
        put_u16(&mut h, LOCAL_EXTRA_LEN as u16);
        h.extend_from_slice(name);
        timestamp_extra(&mut h, mtime);
        self.out.write_all(&h)
    }

    /// Adds a directory entry (its name gets the trailing `/` here).
    ///
    /// # Errors
    /// Write errors, or a name over 65,535 bytes.
    pub fn add_dir(&mut self, meta: &EntryMeta) -> io::Result<()> {
        let mut name = meta.name.clone();
        name.push(b'/');
        let offset = self.out.count;
        let flags = Self::flags_for(&name);
        self.local_header(&name, flags, METHOD_STORED, meta.mtime())?;
        self.entries.push(CdEntry {
            name,
            flags,
            method: METHOD_STORED,
            mtime_ns: meta.mtime_ns,
            identity: meta.identity,
            read_from_ns: self.read_from_for(&meta.identity),
            crc: 0,
            compressed: 0,
            uncompressed: 0,
            offset,
            external: ((S_IFDIR | (meta.mode & 0o7777)) << 16) | DOS_DIR,
        });
        self.stats.dirs += 1;
        Ok(())
    }

    /// Writes a file's local header; the data follows with [`Self::write_data`] and the
    /// entry ends with [`Self::finish_file`].
    ///
    /// # Errors
    /// Write errors, or a name over 65,535 bytes.
    pub fn start_file(&mut self, meta: EntryMeta, method: u16) -> io::Result<OpenEntry> {
        let offset = self.out.count;
        let flags = Self::flags_for(&meta.name) | FLAG_DATA_DESCRIPTOR;
        self.local_header(&meta.name, flags, method, meta.mtime())?;
        Ok(OpenEntry {
            meta,
            flags,
            method,
            offset,
            data_start: self.out.count,
        })
    }

    /// Writes entry data, already compressed with the entry's method.
    ///
    /// # Errors
    /// Write errors.
    pub fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)
    }

    /// Ends a file entry: the data descriptor, and its central directory record.
    ///
    /// # Errors
    /// Write errors.
    pub fn finish_file(&mut self, e: OpenEntry, crc: u32, uncompressed: u64) -> io::Result<()> {
        let compressed = self.out.count - e.data_start;
        let mut dd = Vec::with_capacity(24);
        put_u32(&mut dd, DATA_DESCRIPTOR_SIG);
        put_u32(&mut dd, crc);
        if compressed >= U32_MAX || uncompressed >= U32_MAX {
            put_u64(&mut dd, compressed);
            put_u64(&mut dd, uncompressed);
        } else {
            put_u32(&mut dd, compressed as u32);
            put_u32(&mut dd, uncompressed as u32);
        }
        self.out.write_all(&dd)?;
        self.entries.push(CdEntry {
            external: (S_IFREG | (e.meta.mode & 0o7777)) << 16,
            name: e.meta.name,
            flags: e.flags,
            method: e.method,
            mtime_ns: e.meta.mtime_ns,
            identity: e.meta.identity,
            read_from_ns: self.read_from_for(&e.meta.identity),
            crc,
            compressed,
            uncompressed,
            offset: e.offset,
        });
        self.stats.files += 1;
        self.stats.bytes_in += uncompressed;
        Ok(())
    }

    /// Writes the central directory and the end records.
    ///
    /// # Errors
    /// Write errors.
    pub fn finish(mut self) -> io::Result<(W, WriteStats)> {
        let cd_start = self.out.count;
        let mut buf = Vec::with_capacity(64 * 1024);
        for e in &self.entries {
            central_record(e, &mut buf);
            if buf.len() >= 60 * 1024 {
                self.out.write_all(&buf)?;
                buf.clear();
            }
        }
        self.out.write_all(&buf)?;
        buf.clear();
        end_records(
            self.entries.len() as u64,
            cd_start,
            self.out.count,
            &mut buf,
        );
        self.out.write_all(&buf)?;
        self.out.flush()?;
        self.stats.bytes_out = self.out.count;
        Ok((self.out.inner, self.stats))
    }
}

/// The 32-bit field of a size or offset: the value itself, or saturated with the value
/// appended to the Zip64 extra field.
fn field32(v: u64, zip64: &mut Vec<u8>) -> u32 {
    if v >= U32_MAX {
        put_u64(zip64, v);
        U32_MAX as u32
    } else {
        v as u32
    }
}

/// Appends the central directory record of `e` to `buf`.
fn central_record(e: &CdEntry, buf: &mut Vec<u8>) {
    // The Zip64 extra field holds them in this order: uncompressed, compressed, offset.
    let mut zip64 = Vec::new();
    let usize32 = field32(e.uncompressed, &mut zip64);
    let csize32 = field32(e.compressed, &mut zip64);
    let offset32 = field32(e.offset, &mut zip64);
    let extra_len = LOCAL_EXTRA_LEN as usize
        + GATEWAY_EXTRA_LEN
        + if zip64.is_empty() { 0 } else { 4 + zip64.len() };
    let mtime = e.mtime_ns.div_euclid(1_000_000_000);
    let (dos_time, dos_date) = dos_datetime(mtime);
    put_u32(buf, CENTRAL_HEADER_SIG);
    put_u16(buf, VERSION_MADE_BY);
    put_u16(
        buf,
        if zip64.is_empty() {
            VERSION_NEEDED_DEFAULT
        } else {
            VERSION_NEEDED_ZIP64
        },
    );
    put_u16(buf, e.flags);
    put_u16(buf, e.method);
    put_u16(buf, dos_time);
    put_u16(buf, dos_date);
    put_u32(buf, e.crc);
    put_u32(buf, csize32);
    put_u32(buf, usize32);
    put_u16(buf, e.name.len() as u16);
    put_u16(buf, extra_len as u16);
    put_u16(buf, 0); // comment length
    put_u16(buf, 0); // disk number
    put_u16(buf, 0); // internal attributes
    put_u32(buf, e.external);
    put_u32(buf, offset32);
    buf.extend_from_slice(&e.name);
    if !zip64.is_empty() {
        put_u16(buf, ZIP64_EXTRA_ID);
        put_u16(buf, zip64.len() as u16);
        buf.extend_from_slice(&zip64);
    }
    timestamp_extra(buf, mtime);
    put_u16(buf, GATEWAY_EXTRA_ID);
    put_u16(buf, (GATEWAY_EXTRA_LEN - 4) as u16);
    put_u64(buf, e.mtime_ns as u64);
    put_u64(buf, e.identity.ctime_ns as u64);
    put_u64(buf, e.identity.dev);
    put_u64(buf, e.identity.ino);
    put_u64(buf, e.read_from_ns as u64);
}

/// Appends the end records of a central directory of `count` entries at
/// `cd_start..cd_end`: the Zip64 end record and locator when any field needs them, then the
/// classic end record (saturated where Zip64 holds the value).
fn end_records(count: u64, cd_start: u64, cd_end: u64, buf: &mut Vec<u8>) {
    let cd_size = cd_end - cd_start;
    let needs_zip64 = count >= U16_MAX || cd_size >= U32_MAX || cd_start >= U32_MAX;
    if needs_zip64 {
        put_u32(buf, ZIP64_EOCD_SIG);
        put_u64(buf, (ZIP64_EOCD_LEN - 12) as u64);
        put_u16(buf, VERSION_MADE_BY);
        put_u16(buf, VERSION_NEEDED_ZIP64);
        put_u32(buf, 0); // this disk
        put_u32(buf, 0); // disk with the central directory
        put_u64(buf, count);
        put_u64(buf, count);
        put_u64(buf, cd_size);
        put_u64(buf, cd_start);
        put_u32(buf, ZIP64_LOCATOR_SIG);
        put_u32(buf, 0);
        put_u64(buf, cd_end);
        put_u32(buf, 1);
    }
    let (count16, size32, start32) = if needs_zip64 {
        (U16_MAX as u16, U32_MAX as u32, U32_MAX as u32)
    } else {
        (count as u16, cd_size as u32, cd_start as u32)
    };
    put_u32(buf, EOCD_SIG);
    put_u16(buf, 0);
    put_u16(buf, 0);
    put_u16(buf, count16);
    put_u16(buf, count16);
    put_u32(buf, size32);
    put_u32(buf, start32);
    put_u16(buf, 0); // comment length
}

fn name_too_long() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "file name too long for zip")
}

/// Extended timestamp extra field with the modification time only.
fn timestamp_extra(buf: &mut Vec<u8>, mtime: i64) {
    put_u16(buf, EXTENDED_TIMESTAMP_ID);
    put_u16(buf, 5);
    buf.push(1);
    put_u32(
        buf,
        u32::try_from(mtime.clamp(0, i64::from(i32::MAX))).unwrap_or(0),
    );
}
