//! Streaming zip writer for a data directory.
//!
//! Runs on a blocking thread and writes to any `Write` (in production a channel that feeds
//! the store's multipart upload): no temporary file, and memory bounded by one read buffer
//! plus the compressor's state. Each file is read once; the first 64 KiB are probed and a
//! file that does not compress (media, archives) is Stored instead of Deflated.
//!
//! Layout, as Go's `archive/zip` writes it: local header with the data-descriptor flag and
//! zero sizes, the data, a data descriptor (64-bit sizes when the entry needs Zip64), then a
//! central directory with Zip64 extra fields for sizes or offsets that do not fit 32 bits and
//! a Zip64 end record when needed (over 65,535 entries or 4 GiB). Unix modes go in the
//! external attributes and the modification time in an extended-timestamp field.

use super::spec::*;
use super::sqlite::Snapshots;
use super::tree::Exclude;
use flate2::Compression;
use flate2::write::DeflateEncoder;
use std::io::{self, Read, Write};
use std::path::Path;

const READ_CHUNK: usize = 256 * 1024;
const PROBE_LEN: usize = 64 * 1024;

/// Options of [`write_dir`].
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Deflate level 0-9 (0 stores everything).
    pub level: u32,
    /// Paths left out (with everything below them).
    pub exclude: Exclude,
    /// Where the bytes and entries written are counted, if anywhere.
    pub progress: Option<std::sync::Arc<crate::progress::Progress>>,
}

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

/// Zips the tree under `root` into `out` and returns what it wrote. Files are compressed
/// on all cores ([`super::parallel`]); the archive is the same as a sequential writer's
/// but for the Deflate block boundaries.
///
/// SQLite databases are archived from their snapshots in `databases` (one consistent
/// image each, see [`super::sqlite`]), without their `-wal`, `-shm` and `-journal` files.
/// Symbolic links, sockets and other special files are skipped (a restore would refuse
/// them); a file that disappears while the archive is made is skipped too (applications
/// delete their temporary files at any time). Any other read error fails the whole archive.
///
/// # Errors
/// Unreadable files or directories, and write errors of `out`.
pub fn write_dir<W: Write>(
    root: &Path,
    opts: &WriteOptions,
    databases: &mut Snapshots,
    out: W,
) -> io::Result<WriteStats> {
    super::parallel::write_tree(root, opts, databases, ZipWriter::new(out, opts.level))
}

/// One central directory record, kept until the end.
struct CdEntry {
    name: Vec<u8>,
    flags: u16,
    method: u16,
    dos_time: u16,
    dos_date: u16,
    mtime: i64,
    crc: u32,
    compressed: u64,
    uncompressed: u64,
    offset: u64,
    external: u32,
}

/// A file entry between [`ZipWriter::start_file`] and [`ZipWriter::finish_file`].
#[derive(Debug)]
pub struct OpenEntry {
    name: Vec<u8>,
    flags: u16,
    method: u16,
    mtime: i64,
    mode: u32,
    offset: u64,
    data_start: u64,
}

/// Counts what passes through.
struct Counting<W> {
    inner: W,
    count: u64,
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

/// Low-level writer: entries in, a zip out.
pub struct ZipWriter<W: Write> {
    out: Counting<W>,
    level: u32,
    entries: Vec<CdEntry>,
    stats: WriteStats,
}

impl<W: Write> ZipWriter<W> {
    pub fn new(out: W, level: u32) -> Self {
        Self {
            out: Counting {
                inner: out,
                count: 0,
            },
            level: level.min(9),
            entries: Vec::new(),
            stats: WriteStats::default(),
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
        put_u16(&mut h, 9);
        h.extend_from_slice(name);
        timestamp_extra(&mut h, mtime);
        self.out.write_all(&h)
    }

    /// Adds a directory entry (`name` without the trailing `/`).
    ///
    /// # Errors
    /// Write errors, or a name over 65,535 bytes.
    pub fn add_dir(&mut self, name: &[u8], mode: u32, mtime: i64) -> io::Result<()> {
        let mut name = name.to_vec();
        name.push(b'/');
        let offset = self.out.count;
        let flags = Self::flags_for(&name);
        self.local_header(&name, flags, METHOD_STORED, mtime)?;
        let (dos_time, dos_date) = dos_datetime(mtime);
        self.entries.push(CdEntry {
            name,
            flags,
            method: METHOD_STORED,
            dos_time,
            dos_date,
            mtime,
            crc: 0,
            compressed: 0,
            uncompressed: 0,
            offset,
            external: ((S_IFDIR | (mode & 0o7777)) << 16) | DOS_DIR,
        });
        self.stats.dirs += 1;
        Ok(())
    }

    /// Adds a file entry with the contents of `data`, read to the end, compressed on this
    /// thread (the data directory pipeline compresses in parallel instead, see
    /// [`super::parallel`]).
    ///
    /// # Errors
    /// Read errors of `data`, write errors, or a name over 65,535 bytes.
    pub fn add_file(
        &mut self,
        name: &[u8],
        mode: u32,
        mtime: i64,
        data: &mut impl Read,
        scratch: &mut Vec<u8>,
    ) -> io::Result<()> {
        if scratch.len() < READ_CHUNK {
            scratch.resize(READ_CHUNK, 0);
        }
        let probe_len = read_full(data, &mut scratch[..PROBE_LEN])?;
        let method = if self.level > 0 && compresses(&scratch[..probe_len]) {
            METHOD_DEFLATE
        } else {
            METHOD_STORED
        };
        let entry = self.start_file(name, mode, mtime, method)?;
        let mut crc = crc32fast::Hasher::new();
        let mut uncompressed = probe_len as u64;
        crc.update(&scratch[..probe_len]);
        match method {
            METHOD_DEFLATE => {
                let mut enc = DeflateEncoder::new(&mut self.out, Compression::new(self.level));
                enc.write_all(&scratch[..probe_len])?;
                loop {
                    let n = read_some(data, scratch)?;
                    if n == 0 {
                        break;
                    }
                    crc.update(&scratch[..n]);
                    uncompressed += n as u64;
                    enc.write_all(&scratch[..n])?;
                }
                enc.finish()?;
            }
            _ => {
                self.out.write_all(&scratch[..probe_len])?;
                loop {
                    let n = read_some(data, scratch)?;
                    if n == 0 {
                        break;
                    }
                    crc.update(&scratch[..n]);
                    uncompressed += n as u64;
                    self.out.write_all(&scratch[..n])?;
                }
            }
        }
        self.finish_file(entry, crc.finalize(), uncompressed)
    }

    /// Writes a file's local header; the data follows with [`Self::write_data`] and the
    /// entry ends with [`Self::finish_file`].
    ///
    /// # Errors
    /// Write errors, or a name over 65,535 bytes.
    pub fn start_file(
        &mut self,
        name: &[u8],
        mode: u32,
        mtime: i64,
        method: u16,
    ) -> io::Result<OpenEntry> {
        let offset = self.out.count;
        let flags = Self::flags_for(name) | FLAG_DATA_DESCRIPTOR;
        self.local_header(name, flags, method, mtime)?;
        Ok(OpenEntry {
            name: name.to_vec(),
            flags,
            method,
            mtime,
            mode,
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
        let (dos_time, dos_date) = dos_datetime(e.mtime);
        self.entries.push(CdEntry {
            name: e.name,
            flags: e.flags,
            method: e.method,
            dos_time,
            dos_date,
            mtime: e.mtime,
            crc,
            compressed,
            uncompressed,
            offset: e.offset,
            external: (S_IFREG | (e.mode & 0o7777)) << 16,
        });
        self.stats.files += 1;
        self.stats.bytes_in += uncompressed;
        Ok(())
    }

    /// The Deflate level (0 stores everything).
    pub fn level(&self) -> u32 {
        self.level
    }

    /// Writes the central directory and the end records.
    ///
    /// # Errors
    /// Write errors.
    pub fn finish(mut self) -> io::Result<(W, WriteStats)> {
        let cd_start = self.out.count;
        let mut buf = Vec::with_capacity(64 * 1024);
        for e in &self.entries {
            let mut zip64 = Vec::new();
            let usize32 = if e.uncompressed >= U32_MAX {
                put_u64(&mut zip64, e.uncompressed);
                U32_MAX as u32
            } else {
                e.uncompressed as u32
            };
            let csize32 = if e.compressed >= U32_MAX {
                put_u64(&mut zip64, e.compressed);
                U32_MAX as u32
            } else {
                e.compressed as u32
            };
            let offset32 = if e.offset >= U32_MAX {
                put_u64(&mut zip64, e.offset);
                U32_MAX as u32
            } else {
                e.offset as u32
            };
            let extra_len = 9 + if zip64.is_empty() { 0 } else { 4 + zip64.len() };
            put_u32(&mut buf, CENTRAL_HEADER_SIG);
            put_u16(&mut buf, VERSION_MADE_BY);
            put_u16(
                &mut buf,
                if zip64.is_empty() {
                    VERSION_NEEDED_DEFAULT
                } else {
                    VERSION_NEEDED_ZIP64
                },
            );
            put_u16(&mut buf, e.flags);
            put_u16(&mut buf, e.method);
            put_u16(&mut buf, e.dos_time);
            put_u16(&mut buf, e.dos_date);
            put_u32(&mut buf, e.crc);
            put_u32(&mut buf, csize32);
            put_u32(&mut buf, usize32);
            put_u16(&mut buf, e.name.len() as u16);
            put_u16(&mut buf, extra_len as u16);
            put_u16(&mut buf, 0); // comment length
            put_u16(&mut buf, 0); // disk number
            put_u16(&mut buf, 0); // internal attributes
            put_u32(&mut buf, e.external);
            put_u32(&mut buf, offset32);
            buf.extend_from_slice(&e.name);
            if !zip64.is_empty() {
                put_u16(&mut buf, ZIP64_EXTRA_ID);
                put_u16(&mut buf, zip64.len() as u16);
                buf.extend_from_slice(&zip64);
            }
            timestamp_extra(&mut buf, e.mtime);
            if buf.len() >= 60 * 1024 {
                self.out.write_all(&buf)?;
                buf.clear();
            }
        }
        self.out.write_all(&buf)?;
        buf.clear();
        let cd_end = self.out.count;
        let cd_size = cd_end - cd_start;
        let count = self.entries.len() as u64;
        let needs_zip64 = count >= U16_MAX || cd_size >= U32_MAX || cd_start >= U32_MAX;
        if needs_zip64 {
            put_u32(&mut buf, ZIP64_EOCD_SIG);
            put_u64(&mut buf, (ZIP64_EOCD_LEN - 12) as u64);
            put_u16(&mut buf, VERSION_MADE_BY);
            put_u16(&mut buf, VERSION_NEEDED_ZIP64);
            put_u32(&mut buf, 0); // this disk
            put_u32(&mut buf, 0); // disk with the central directory
            put_u64(&mut buf, count);
            put_u64(&mut buf, count);
            put_u64(&mut buf, cd_size);
            put_u64(&mut buf, cd_start);
            put_u32(&mut buf, ZIP64_LOCATOR_SIG);
            put_u32(&mut buf, 0);
            put_u64(&mut buf, cd_end);
            put_u32(&mut buf, 1);
        }
        put_u32(&mut buf, EOCD_SIG);
        put_u16(&mut buf, 0);
        put_u16(&mut buf, 0);
        let count16 = if needs_zip64 {
            U16_MAX as u16
        } else {
            count as u16
        };
        put_u16(&mut buf, count16);
        put_u16(&mut buf, count16);
        put_u32(
            &mut buf,
            if needs_zip64 {
                U32_MAX as u32
            } else {
                cd_size as u32
            },
        );
        put_u32(
            &mut buf,
            if needs_zip64 {
                U32_MAX as u32
            } else {
                cd_start as u32
            },
        );
        put_u16(&mut buf, 0); // comment length
        self.out.write_all(&buf)?;
        self.out.flush()?;
        self.stats.bytes_out = self.out.count;
        Ok((self.out.inner, self.stats))
    }
}

/// True if a Deflate at level 1 of `probe` saves at least 5%: media and archives do not
/// compress, and storing them is several times faster.
pub(crate) fn compresses(probe: &[u8]) -> bool {
    if probe.len() < 512 {
        return true;
    }
    if looks_random(probe) {
        return false;
    }
    let mut enc = DeflateEncoder::new(
        Counting {
            inner: io::sink(),
            count: 0,
        },
        Compression::fast(),
    );
    if enc.write_all(probe).is_err() {
        return true;
    }
    match enc.finish() {
        Ok(c) => c.count < (probe.len() as u64) * 95 / 100,
        Err(_) => true,
    }
}

/// Bytes per byte value above which data is taken for already compressed (JPEG, MP4, zip,
/// encrypted): near 8 bits of Shannon entropy per byte. Text and databases are far below
/// (4-6 bits); the estimate of random data from a 2 KiB sample is above 7.85.
const RANDOM_ENTROPY_BITS: f64 = 7.8;

/// True when `data`'s byte histogram has the entropy of compressed data, so that Deflate
/// would not shrink it. Costs a pass over a sample, a fraction of what trying Deflate
/// costs; used to skip that attempt. The sample is 16 KiB in four slices spread over the
/// first 64 KiB (a file that starts with a compressed header and goes on as text is still
/// seen as text); counting every byte of it was about a tenth of the CPU of zipping
/// 100,000 small files.
pub(crate) fn looks_random(data: &[u8]) -> bool {
    const SLICE: usize = 4 * 1024;
    let region = &data[..data.len().min(64 * 1024)];
    if region.len() < 1024 {
        return false;
    }
    let mut counts = [0u32; 256];
    let mut n = 0usize;
    let mut count = |slice: &[u8]| {
        for &b in slice {
            counts[usize::from(b)] += 1;
        }
        n += slice.len();
    };
    if region.len() <= 4 * SLICE {
        count(region);
    } else {
        let step = (region.len() - SLICE) / 3;
        for i in 0..4 {
            count(&region[i * step..i * step + SLICE]);
        }
    }
    let n = n as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    entropy > RANDOM_ENTROPY_BITS
}

pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn read_some(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

fn name_too_long() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "file name too long for zip")
}

/// MS-DOS time and date of a Unix time (UTC; clamped to 1980-2107).
fn dos_datetime(unix: i64) -> (u16, u16) {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    if t.year() < 1980 {
        return (0, (1 << 5) | 1);
    }
    if t.year() > 2107 {
        return ((23 << 11) | (59 << 5) | 29, (127 << 9) | (12 << 5) | 31);
    }
    let time = ((t.hour() as u16) << 11) | ((t.minute() as u16) << 5) | (t.second() as u16 / 2);
    let date = (((t.year() - 1980) as u16) << 9) | ((t.month() as u16) << 5) | t.day() as u16;
    (time, date)
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

fn put_u16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_bytes(len: usize) -> Vec<u8> {
        crate::archive::test_data::noise(len, 1)
    }

    #[test]
    fn random_bytes_look_random_and_text_or_small_data_does_not() {
        let random = random_bytes(70_000);
        assert!(looks_random(&random));
        assert!(looks_random(&random[..2048]));
        assert!(!compresses(&random[..64 * 1024]));
        let text = b"{\"id\":\"abc123\",\"title\":\"the quick brown fox\"}\n".repeat(2000);
        assert!(!looks_random(&text));
        assert!(compresses(&text[..64 * 1024]));
        assert!(!looks_random(&random[..512]), "too small to judge");
    }

    #[test]
    fn dos_times_are_encoded_and_clamped() {
        // 2024-01-02 03:04:06 UTC
        let (t, d) = dos_datetime(1_704_164_646);
        assert_eq!(t, (3 << 11) | (4 << 5) | 3);
        assert_eq!(d, (44 << 9) | (1 << 5) | 2);
        assert_eq!(dos_datetime(0), (0, (1 << 5) | 1));
    }

    #[test]
    fn random_bytes_are_stored_and_text_is_deflated() {
        let text = b"hello world ".repeat(1000);
        assert!(compresses(&text));
        assert!(!compresses(&random_bytes(65536)));
    }
}
