//! The zip reader's format side: the end records, the central directory and its entries,
//! parsed from bytes the caller fetched (a restore reads them with ranged reads from the
//! store, a few KiB for a typical backup). It reads no entry data: see
//! [`crate::archive::extract`].

use super::spec::*;
use crate::archive::bytes::{dos_to_unix, le16, le32, le64};
use crate::archive::error::ArchiveError;

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
    /// The modification time in nanoseconds, from the gateway's own extra field (only
    /// archives the gateway wrote have it).
    pub mtime_ns: Option<i64>,
    /// What the gateway recorded of the file when it read it (archives of its current
    /// format only).
    pub recorded: Option<Recorded>,
}

/// The file's identity, and the file system's time when the create that read it began
/// reading, from the gateway's own extra field ([`GATEWAY_EXTRA_ID`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub identity: crate::archive::meta::Identity,
    pub read_from_ns: i64,
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
        let extras = parse_extras(extra, &mut uncompressed, &mut compressed, &mut offset);
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
            mtime: extras.mtime.or_else(|| dos_to_unix(dos_time, dos_date)),
            mtime_ns: extras.mtime_ns,
            recorded: extras.recorded,
        });
        p = next;
    }
    Ok(out)
}

/// What an entry's extra fields say besides the sizes and offset (which the ZIP64 field
/// replaces in place).
#[derive(Default)]
struct Extras {
    mtime: Option<i64>,
    mtime_ns: Option<i64>,
    recorded: Option<Recorded>,
}

/// Reads the extra fields the gateway knows: ZIP64 (the sizes and offset saturated at
/// `u32::MAX`), the extended timestamp, and the gateway's own (v1 and v2).
fn parse_extras(
    extra: &[u8],
    uncompressed: &mut u64,
    compressed: &mut u64,
    offset: &mut u64,
) -> Extras {
    let mut out = Extras::default();
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
            take(uncompressed);
            take(compressed);
            take(offset);
        } else if id == EXTENDED_TIMESTAMP_ID && len >= 5 && body[0] & 1 == 1 {
            out.mtime = Some(i64::from(le32(body, 1) as i32));
        } else if id == GATEWAY_EXTRA_ID && len == GATEWAY_EXTRA_V1_BODY {
            out.mtime_ns = Some(le64(body, 0) as i64);
        } else if id == GATEWAY_EXTRA_ID && len == GATEWAY_EXTRA_LEN - 4 {
            out.mtime_ns = Some(le64(body, 0) as i64);
            out.recorded = Some(Recorded {
                identity: crate::archive::meta::Identity {
                    ctime_ns: le64(body, 8) as i64,
                    dev: le64(body, 16),
                    ino: le64(body, 24),
                },
                read_from_ns: le64(body, 32) as i64,
            });
        }
        e += 4 + len;
    }
    out
}

/// The directory and entries of a whole archive held in memory.
///
/// # Errors
/// As [`find_directory`], [`parse_zip64_end`] and [`parse_directory`].
pub fn index(bytes: &[u8]) -> Result<(Directory, Vec<Entry>), ArchiveError> {
    let total = bytes.len() as u64;
    let dir = match find_directory(bytes, total)? {
        DirLookup::Found(d) => d,
        DirLookup::Zip64At(off, end) => parse_zip64_end(&bytes[off as usize..], end)?,
    };
    let cd = &bytes[dir.offset as usize..(dir.offset + dir.size) as usize];
    Ok((dir, parse_directory(cd, dir.entries)?))
}

/// Length of a local header with its name and extra field, from its first 30 bytes.
///
/// # Errors
/// A header without the local header signature.
pub fn local_header_len(header: &[u8; LOCAL_HEADER_LEN as usize]) -> Result<u64, &'static str> {
    if le32(header, 0) != LOCAL_HEADER_SIG {
        return Err("bad local header");
    }
    Ok(LOCAL_HEADER_LEN + u64::from(le16(header, 26)) + u64::from(le16(header, 28)))
}
