//! A segment: a run of committed transactions of one database, as the stream ships them to
//! the store, each with the time the stream saw it commit. Segments of one WAL generation
//! applied in order to the generation's base image rebuild the database as it was at any
//! of their commits ([`Rebuild`]).
//!
//! One concern: the formats of the stream's objects (segments, their compression and
//! packs) and the rebuild that applies them, with their tests.
//!
//! The format (all integers little-endian), written and read only here:
//! - a header: magic `BGWS`, version 1, page size (u32), the WAL's salts (2 x u32), the
//!   sequence number of the segment's first commit in its generation (u64), the number of
//!   commits (u32);
//! - each commit: its time (Unix milliseconds, i64), the database's size in pages after it
//!   (u32), its number of pages (u32), then each page: its number (u32) and its bytes;
//! - a trailer: the CRC-32 of everything before it.
//!
//! In the store a segment is [`seal`]ed (Deflate; `BGWD`), a minute of them is [`pack`]ed
//! into one object (`BGWP`), and an hour of those packed again ([`Packer`]); [`unpack`]
//! reads any of them, [`unpack_read`] one part at a time.
//!
//! Pages are kept as the WAL holds them, one per frame (a page written twice in one
//! transaction is kept twice; the later wins): a segment is the transactions, not a digest
//! of them, so that every commit inside it stays a point to restore to.

use super::wal::Commit;
use std::io::{self, Read, Seek, SeekFrom, Write};

const MAGIC: &[u8; 4] = b"BGWS";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 4 + 8 + 8 + 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SegmentError {
    #[error("not a segment: {0}")]
    Format(&'static str),
    #[error("the segment is damaged (its CRC-32 does not match)")]
    Crc,
}

/// A segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub page_size: u32,
    /// The WAL generation's salts: segments of one generation apply to its base.
    pub salt: (u32, u32),
    /// The sequence number of the first commit in its generation (0: the first).
    pub first_seq: u64,
    pub commits: u32,
}

/// One transaction of a segment, its pages in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCommit {
    /// When the stream saw it commit (Unix milliseconds).
    pub time_ms: i64,
    pub db_pages: u32,
    /// (page number, offset of the page's bytes in the segment), in frame order.
    pub pages: Vec<(u32, usize)>,
}

/// Writes the segment of `commits` (with their times), reading their pages from `wal`.
///
/// # Errors
/// Reading the WAL failed (a live WAL that restarted meanwhile is caught by the caller's
/// next read of it, not here: the pages read are trusted as the frames said).
pub fn encode<R: Read + Seek>(
    header: SegmentHeader,
    commits: &[(i64, &Commit)],
    wal: &mut R,
) -> io::Result<Vec<u8>> {
    let page_size = header.page_size as usize;
    let frames: usize = commits.iter().map(|(_, c)| c.frames.len()).sum();
    let mut out =
        Vec::with_capacity(HEADER_LEN + commits.len() * 16 + frames * (4 + page_size) + 4);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&header.page_size.to_le_bytes());
    out.extend_from_slice(&header.salt.0.to_le_bytes());
    out.extend_from_slice(&header.salt.1.to_le_bytes());
    out.extend_from_slice(&header.first_seq.to_le_bytes());
    let count = u32::try_from(commits.len()).map_err(io::Error::other)?;
    out.extend_from_slice(&count.to_le_bytes());
    let mut page = vec![0u8; page_size];
    for (time_ms, commit) in commits {
        out.extend_from_slice(&time_ms.to_le_bytes());
        out.extend_from_slice(&commit.db_pages.to_le_bytes());
        let n = u32::try_from(commit.frames.len()).map_err(io::Error::other)?;
        out.extend_from_slice(&n.to_le_bytes());
        for f in &commit.frames {
            wal.seek(SeekFrom::Start(f.offset))?;
            wal.read_exact(&mut page)?;
            out.extend_from_slice(&f.page.to_le_bytes());
            out.extend_from_slice(&page);
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// The header of an encoded segment (made here: its CRC-32 is not checked again).
fn header_of(bytes: &[u8]) -> Result<SegmentHeader, SegmentError> {
    if bytes.len() < HEADER_LEN + 4 || &bytes[..4] != MAGIC {
        return Err(SegmentError::Format("not a segment"));
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    Ok(SegmentHeader {
        page_size: u32_at(5),
        salt: (u32_at(9), u32_at(13)),
        first_seq: u64::from_le_bytes(bytes[17..25].try_into().expect("8 bytes")),
        commits: u32_at(25),
    })
}

/// One segment of the consecutive segments `parts` (encoded, of one WAL generation and page
/// size, each continuing the last): the stream joins a second's rounds into one object.
///
/// # Errors
/// A part that does not decode, or does not continue the one before it.
pub fn join(parts: &[Vec<u8>]) -> Result<Vec<u8>, SegmentError> {
    let first = parts
        .first()
        .ok_or(SegmentError::Format("nothing to join"))?;
    let header = header_of(first)?;
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    out.extend_from_slice(&first[..HEADER_LEN]);
    let mut next = header.first_seq;
    let mut commits = 0u32;
    for part in parts {
        let h = header_of(part)?;
        if h.salt != header.salt || h.page_size != header.page_size || h.first_seq != next {
            return Err(SegmentError::Format(
                "parts that do not continue each other",
            ));
        }
        next += u64::from(h.commits);
        commits = commits
            .checked_add(h.commits)
            .ok_or(SegmentError::Format("too many commits"))?;
        out.extend_from_slice(&part[HEADER_LEN..part.len() - 4]);
    }
    out[25..29].copy_from_slice(&commits.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

const PACK_MAGIC: &[u8; 4] = b"BGWP";
const SEALED_MAGIC: &[u8; 4] = b"BGWD";
/// The largest object [`unseal`] inflates.
const MAX_OBJECT: u64 = 1 << 30;

/// `bytes` compressed for the store (WAL frames repeat the same pages commit after commit,
/// and Deflate's window finds the last version): magic `BGWD`, the length before (u64),
/// raw Deflate at level 1.
pub fn seal(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 16),
        flate2::Compression::fast(),
    );
    let mut out = Vec::new();
    out.extend_from_slice(SEALED_MAGIC);
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    enc.write_all(bytes).expect("writing to a Vec");
    out.extend_from_slice(&enc.finish().expect("writing to a Vec"));
    out
}

/// What [`seal`] compressed; other bytes as they are.
///
/// # Errors
/// Damaged compressed data, or a length that does not match.
pub fn unseal(bytes: Vec<u8>) -> Result<Vec<u8>, SegmentError> {
    if !bytes.starts_with(SEALED_MAGIC) {
        return Ok(bytes);
    }
    let len = bytes
        .get(4..12)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .filter(|&l| l <= MAX_OBJECT)
        .ok_or(SegmentError::Format("a compressed object's length"))?;
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    let read = flate2::read::DeflateDecoder::new(&bytes[12..])
        .take(len + 1)
        .read_to_end(&mut out);
    if read.is_err() || out.len() as u64 != len {
        return Err(SegmentError::Format("damaged compressed data"));
    }
    Ok(out)
}

/// The compaction's object: the objects `parts` (segments, [`seal`]ed or not, or packs of
/// them, in order, of any WAL generations) one after the other: magic `BGWP`, version 1,
/// their count (u32), each as its length (u64) and bytes, then the CRC-32 of everything
/// before. A minute's pack holds segments; an hour's holds minute packs (and segments), no
/// deeper ([`unpack_each`]).
pub fn pack(parts: &[&[u8]]) -> Vec<u8> {
    let mut packer = Packer::default();
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum::<usize>() + 13);
    out.extend_from_slice(&packer.head(u32::try_from(parts.len()).unwrap_or(u32::MAX)));
    for p in parts {
        out.extend_from_slice(&packer.part_len(p.len() as u64));
        packer.bytes(p);
        out.extend_from_slice(p);
    }
    out.extend_from_slice(&packer.trailer());
    out
}

/// A [`pack`] written piece by piece, for a pack too large to hold (the hour's, streamed
/// from its parts in the store to the store): [`Packer::head`], then for each part
/// [`Packer::part_len`] and its bytes through [`Packer::bytes`], then [`Packer::trailer`].
#[derive(Default)]
pub struct Packer {
    crc: crc32fast::Hasher,
}

impl Packer {
    /// The pack's first bytes, for `count` parts.
    pub fn head(&mut self, count: u32) -> Vec<u8> {
        let mut out = PACK_MAGIC.to_vec();
        out.push(VERSION);
        out.extend_from_slice(&count.to_le_bytes());
        self.crc.update(&out);
        out
    }

    /// The bytes before a part of `len` bytes.
    pub fn part_len(&mut self, len: u64) -> [u8; 8] {
        let out = len.to_le_bytes();
        self.crc.update(&out);
        out
    }

    /// A part's bytes, as they pass.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.crc.update(bytes);
    }

    /// The pack's last bytes.
    pub fn trailer(self) -> [u8; 4] {
        self.crc.finalize().to_le_bytes()
    }
}

/// The segments of a stored object: one segment, or a [`pack`] of them.
///
/// # Errors
/// [`SegmentError`] naming what does not hold.
pub fn unpack(bytes: Vec<u8>) -> Result<Vec<Segment>, SegmentError> {
    let mut out = Vec::new();
    unpack_each(bytes, |s| {
        out.push(s);
        true
    })?;
    Ok(out)
}

/// [`unpack`] one segment at a time (a restore holds one decoded segment, not a whole
/// pack's): `f` gets each in order, and returns false to stop. A pack's CRC-32 is checked
/// before its first part; a pack inside a pack is read the same way, one level deep.
///
/// # Errors
/// [`SegmentError`] naming what does not hold.
pub fn unpack_each(bytes: Vec<u8>, mut f: impl FnMut(Segment) -> bool) -> Result<(), SegmentError> {
    each(bytes, 0, &mut f).map(|_| ())
}

/// [`unpack_each`] of an object at nesting `depth`; false when `f` stopped.
fn each(
    bytes: Vec<u8>,
    depth: usize,
    f: &mut dyn FnMut(Segment) -> bool,
) -> Result<bool, SegmentError> {
    let bytes = unseal(bytes)?;
    if !bytes.starts_with(PACK_MAGIC) {
        return Ok(f(Segment::decode(bytes)?));
    }
    if depth > 1 {
        return Err(SegmentError::Format("a pack nested too deep"));
    }
    if bytes.len() < 13 {
        return Err(SegmentError::Format("too short"));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != trailer {
        return Err(SegmentError::Crc);
    }
    if body[4] != VERSION {
        return Err(SegmentError::Format("version"));
    }
    let count = u32::from_le_bytes(body[5..9].try_into().expect("4 bytes"));
    let mut at = 9;
    for _ in 0..count {
        let len = body
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .and_then(|l| usize::try_from(l).ok())
            .ok_or(SegmentError::Format("truncated pack"))?;
        let part = body
            .get(at + 8..at + 8 + len)
            .ok_or(SegmentError::Format("truncated pack"))?;
        at += 8 + len;
        if !each(part.to_vec(), depth + 1, f)? {
            return Ok(false);
        }
    }
    if at != body.len() {
        return Err(SegmentError::Format("bytes after the last segment"));
    }
    Ok(true)
}

/// [`unpack_each`] of an object read from `r`, a pack one part at a time: a restore holds
/// one part of an hour's pack (a minute's pack, itself checked whole before its first
/// segment), never the whole hour. Each part is checked before it is used; the whole pack's
/// CRC-32 once it is read to its end (an object whose reading stops early, at the moment
/// restored to, is not read further). So a minute's pack read here gives its first segments
/// before its own CRC-32 is checked: each segment has its own, and the rebuild refuses a
/// segment that does not continue the one before.
///
/// # Errors
/// Reading failed, or the object is damaged ([`io::ErrorKind::InvalidData`]).
pub fn unpack_read(r: &mut dyn Read, mut f: impl FnMut(Segment) -> bool) -> io::Result<()> {
    let bad = |e: SegmentError| io::Error::new(io::ErrorKind::InvalidData, e);
    let mut head = [0u8; 9];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..])? {
            0 => break,
            n => got += n,
        }
    }
    if got < head.len() || &head[..4] != PACK_MAGIC {
        // One segment, sealed or not: small, read whole.
        let mut bytes = head[..got].to_vec();
        r.take(MAX_OBJECT).read_to_end(&mut bytes)?;
        return unpack_each(bytes, f).map_err(bad);
    }
    if head[4] != VERSION {
        return Err(bad(SegmentError::Format("version")));
    }
    let truncated = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => bad(SegmentError::Format("truncated pack")),
        _ => e,
    };
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    let count = u32::from_le_bytes(head[5..9].try_into().expect("4 bytes"));
    for _ in 0..count {
        let mut len = [0u8; 8];
        r.read_exact(&mut len).map_err(truncated)?;
        crc.update(&len);
        let len = u64::from_le_bytes(len);
        if len > MAX_OBJECT {
            return Err(bad(SegmentError::Format("a part too large")));
        }
        let mut part = Vec::with_capacity(usize::try_from(len.min(64 << 20)).unwrap_or(0));
        r.take(len).read_to_end(&mut part)?;
        if part.len() as u64 != len {
            return Err(bad(SegmentError::Format("truncated pack")));
        }
        crc.update(&part);
        if !each(part, 1, &mut f).map_err(bad)? {
            return Ok(());
        }
    }
    let mut trailer = [0u8; 4];
    r.read_exact(&mut trailer).map_err(truncated)?;
    if crc.finalize().to_le_bytes() != trailer {
        return Err(bad(SegmentError::Crc));
    }
    if r.read(&mut [0u8; 1])? != 0 {
        return Err(bad(SegmentError::Format("bytes after the last segment")));
    }
    Ok(())
}

/// A segment read back and checked (magic, version, CRC-32, every length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub header: SegmentHeader,
    pub commits: Vec<SegmentCommit>,
    bytes: Vec<u8>,
}

impl Segment {
    /// Checks and indexes `bytes`.
    ///
    /// # Errors
    /// [`SegmentError`] naming what does not hold.
    pub fn decode(bytes: Vec<u8>) -> Result<Self, SegmentError> {
        if bytes.len() < HEADER_LEN + 4 {
            return Err(SegmentError::Format("too short"));
        }
        let (body, trailer) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != trailer {
            return Err(SegmentError::Crc);
        }
        if &body[..4] != MAGIC {
            return Err(SegmentError::Format("magic"));
        }
        if body[4] != VERSION {
            return Err(SegmentError::Format("version"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(body[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
        let header = header_of(&bytes)?;
        let page_size = header.page_size as usize;
        let mut at = HEADER_LEN;
        let mut commits = Vec::new();
        for _ in 0..header.commits {
            if at + 16 > body.len() {
                return Err(SegmentError::Format("truncated commit"));
            }
            let time_ms = u64_at(at) as i64;
            let db_pages = u32_at(at + 8);
            let n = u32_at(at + 12) as usize;
            at += 16;
            let mut pages = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                if at + 4 + page_size > body.len() {
                    return Err(SegmentError::Format("truncated page"));
                }
                pages.push((u32_at(at), at + 4));
                at += 4 + page_size;
            }
            commits.push(SegmentCommit {
                time_ms,
                db_pages,
                pages,
            });
        }
        if at != body.len() {
            return Err(SegmentError::Format("bytes after the last commit"));
        }
        Ok(Self {
            header,
            commits,
            bytes,
        })
    }

    /// The bytes of the page at `offset` (from [`SegmentCommit::pages`]).
    pub fn page(&self, offset: usize) -> &[u8] {
        &self.bytes[offset..offset + self.header.page_size as usize]
    }
}

/// A database image rebuilt from its generation's base and segments, commit by commit, up
/// to a moment.
pub struct Rebuild<W> {
    image: W,
    page_size: u32,
    salt: (u32, u32),
    /// The next commit's sequence number in the generation.
    next_seq: u64,
    /// The database's size after the last commit applied (none: the base as it is).
    db_pages: Option<u32>,
    /// The last commit applied's time.
    pub last_time_ms: Option<i64>,
}

impl<W: Write + Seek + SetLen> Rebuild<W> {
    /// Starts from `base`, the generation's image before its first commit.
    pub fn new(base: W, page_size: u32, salt: (u32, u32)) -> Self {
        Self {
            image: base,
            page_size,
            salt,
            next_seq: 0,
            db_pages: None,
            last_time_ms: None,
        }
    }

    /// Applies the commits of `segment` made at or before `until_ms`; returns whether the
    /// segment was applied whole (else a later commit is past the moment, and the rebuild
    /// is done).
    ///
    /// # Errors
    /// A segment of another generation or page size, or one that does not continue the
    /// last (a gap in the commits): [`io::ErrorKind::InvalidData`]. Write errors.
    pub fn apply(&mut self, segment: &Segment, until_ms: i64) -> io::Result<bool> {
        let h = segment.header;
        if h.salt != self.salt || h.page_size != self.page_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a segment of another WAL generation",
            ));
        }
        if h.first_seq != self.next_seq {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "commits {} to {} are missing",
                    self.next_seq,
                    h.first_seq.saturating_sub(1)
                ),
            ));
        }
        // The commits up to the moment. Of each page only its last version among them is
        // written, in page order: a busy page changes in most commits (an hour at 100
        // commits/s is 360,000 of them), and the image needs only where it ends. The same
        // as writing every commit in turn: the image is cut to the last commit's size only
        // at the end ([`Rebuild::finish`]), and a page that a commit cuts off and a later
        // one brings back is written by the later one (SQLite writes every page it adds).
        let taken = segment
            .commits
            .iter()
            .take_while(|c| c.time_ms <= until_ms)
            .count();
        let mut last = std::collections::BTreeMap::new();
        for commit in &segment.commits[..taken] {
            for &(number, offset) in &commit.pages {
                if number != 0 {
                    last.insert(number, offset);
                }
            }
        }
        for (number, offset) in last {
            let at = u64::from(number - 1) * u64::from(self.page_size);
            self.image.seek(SeekFrom::Start(at))?;
            self.image.write_all(segment.page(offset))?;
        }
        if let Some(commit) = segment.commits[..taken].last() {
            self.db_pages = Some(commit.db_pages);
            self.last_time_ms = Some(commit.time_ms);
        }
        self.next_seq += taken as u64;
        Ok(taken == segment.commits.len())
    }

    /// The WAL generation's salts the rebuild is in.
    pub fn salt(&self) -> (u32, u32) {
        self.salt
    }

    /// Moves on to the next WAL generation (salts `salt`), which SQLite starts when it
    /// restarts the WAL: the database as the last generation left it is the new one's base.
    ///
    /// The salts do not show whether a generation is missing (a writer connection that
    /// never restarted the WAL itself gives the next one random salts): the capture ends a
    /// history at any gap, the segments' numbers show a missing object, and the new
    /// generation's first segment must start at its first commit ([`Rebuild::apply`]).
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidData`] when the salts are the current generation's.
    pub fn next_generation(&mut self, salt: (u32, u32)) -> io::Result<()> {
        if salt == self.salt {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a new WAL generation",
            ));
        }
        self.salt = salt;
        self.next_seq = 0;
        Ok(())
    }

    /// The image, cut to the size of the last commit applied.
    ///
    /// # Errors
    /// Write errors.
    pub fn finish(mut self) -> io::Result<W> {
        if let Some(pages) = self.db_pages {
            self.image.flush()?;
            self.image
                .set_len(u64::from(pages) * u64::from(self.page_size))?;
        }
        Ok(self.image)
    }
}

/// A file-like image that can be cut to a length (a [`std::fs::File`]; a cursor in tests).
pub trait SetLen {
    /// Sets the image's length.
    ///
    /// # Errors
    /// As the underlying file's.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

impl SetLen for std::fs::File {
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        std::fs::File::set_len(self, len)
    }
}

impl SetLen for io::Cursor<Vec<u8>> {
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        self.get_mut().resize(len, 0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::wal::{Resume, read_committed};
    use super::*;
    use rusqlite::Connection;

    fn scanned(path: &std::path::Path, resume: Option<Resume>) -> super::super::wal::Scanned {
        let mut wal = std::fs::File::open(path).unwrap();
        read_committed(&mut wal, resume).unwrap().unwrap()
    }

    /// Segments of a live database written in two rounds, each commit at a time of its own
    /// (commit k at 1000 x k ms).
    fn two_rounds(dir: &std::path::Path) -> (Vec<u8>, Vec<Segment>) {
        let db = dir.join("data.db");
        let conn = Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        let base = std::fs::read(&db).unwrap();
        conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT)", [])
            .unwrap();
        let wal_path = dir.join("data.db-wal");
        let mut segments = Vec::new();
        let mut resume = None;
        let mut seq = 0u64;
        for round in 0..2 {
            for i in 0..4 {
                let n = round * 4 + i + 1;
                conn.execute(
                    "INSERT INTO t (i, v) VALUES (?1, ?2)",
                    (n, "y".repeat(if n % 2 == 0 { 6000 } else { 10 })),
                )
                .unwrap();
            }
            let s = scanned(&wal_path, resume);
            let header = SegmentHeader {
                page_size: s.resume.header.page_size,
                salt: s.resume.header.salt,
                first_seq: seq,
                commits: u32::try_from(s.commits.len()).unwrap(),
            };
            let timed: Vec<(i64, &Commit)> = s
                .commits
                .iter()
                .enumerate()
                .map(|(k, c)| ((seq + k as u64 + 1) as i64 * 1000, c))
                .collect();
            let mut wal = std::fs::File::open(&wal_path).unwrap();
            let bytes = encode(header, &timed, &mut wal).unwrap();
            segments.push(Segment::decode(bytes).unwrap());
            seq += s.commits.len() as u64;
            resume = Some(s.resume);
        }
        (base, segments)
    }

    fn rows_at(dir: &std::path::Path, base: &[u8], segments: &[Segment], until_ms: i64) -> i64 {
        let h = segments[0].header;
        let mut rebuild = Rebuild::new(io::Cursor::new(base.to_vec()), h.page_size, h.salt);
        for s in segments {
            if !rebuild.apply(s, until_ms).unwrap() {
                break;
            }
        }
        let image = rebuild.finish().unwrap().into_inner();
        let path = dir.join(format!("at-{until_ms}.db"));
        std::fs::write(&path, image).unwrap();
        let conn = Connection::open(&path).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_database_is_rebuilt_as_it_was_at_any_moment_of_its_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (base, segments) = two_rounds(dir.path());
        assert_eq!(segments.len(), 2);
        assert_eq!(segments[0].header.commits, 5, "the CREATE and 4 INSERTs");
        assert_eq!(segments[1].header.first_seq, 5);
        // Commit k (1-based) was seen at k seconds: the CREATE at 1 s, row n at n + 1 s.
        for (until_ms, rows) in [
            (1_000, 0),
            (1_999, 0),
            (3_000, 2),
            (5_000, 4),
            (7_500, 6),
            (60_000, 8),
        ] {
            assert_eq!(
                rows_at(dir.path(), &base, &segments, until_ms),
                rows,
                "at {until_ms} ms"
            );
        }
    }

    #[test]
    fn joined_segments_are_one_with_every_moment_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (base, segments) = two_rounds(dir.path());
        let parts: Vec<Vec<u8>> = segments.iter().map(|s| s.bytes.clone()).collect();
        let joined = Segment::decode(join(&parts).unwrap()).unwrap();
        assert_eq!(joined.header.commits, 9);
        assert_eq!(joined.header.first_seq, 0);
        for (until_ms, rows) in [(1_000, 0), (3_000, 2), (7_500, 6), (60_000, 8)] {
            let one = std::slice::from_ref(&joined);
            assert_eq!(rows_at(dir.path(), &base, one, until_ms), rows);
        }
        // Out of order, or with one missing: refused.
        let reversed = [parts[1].clone(), parts[0].clone()];
        assert!(join(&reversed).is_err());
        assert!(join(&[]).is_err());
    }

    #[test]
    fn a_pack_holds_its_segments_whole_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (base, segments) = two_rounds(dir.path());
        let parts: Vec<&[u8]> = segments.iter().map(|s| s.bytes.as_slice()).collect();
        let packed = pack(&parts);
        let back = unpack(packed.clone()).unwrap();
        assert_eq!(back, segments);
        assert_eq!(rows_at(dir.path(), &base, &back, 60_000), 8);
        assert_eq!(
            unpack(segments[0].bytes.clone()).unwrap(),
            vec![segments[0].clone()]
        );
        let mut bad = packed;
        bad[20] ^= 1;
        assert_eq!(unpack(bad), Err(SegmentError::Crc));
        // Sealed parts, in a pack or alone.
        let sealed: Vec<Vec<u8>> = parts.iter().map(|p| seal(p)).collect();
        assert!(sealed[1].len() < parts[1].len() / 2, "WAL frames compress");
        let refs: Vec<&[u8]> = sealed.iter().map(Vec::as_slice).collect();
        assert_eq!(unpack(pack(&refs)).unwrap(), segments);
        assert_eq!(
            unpack(sealed[0].clone()).unwrap(),
            vec![segments[0].clone()]
        );
        let mut cut = sealed[0].clone();
        cut.truncate(cut.len() - 3);
        assert!(unpack(cut).is_err());
    }

    #[test]
    fn an_hours_pack_of_packs_reads_back_whole_from_memory_or_a_reader_and_no_deeper() {
        let dir = tempfile::tempdir().unwrap();
        let (base, segments) = two_rounds(dir.path());
        let sealed: Vec<Vec<u8>> = segments.iter().map(|s| seal(&s.bytes)).collect();
        // A minute's pack of both, and one segment alone (a minute of one), packed again
        // piece by piece as the hour's compaction streams it.
        let minute = pack(&[&sealed[0], &sealed[1]]);
        let parts: [&[u8]; 2] = [&minute, &sealed[1]];
        let mut packer = Packer::default();
        let mut hour = packer.head(2);
        for p in parts {
            hour.extend_from_slice(&packer.part_len(p.len() as u64));
            packer.bytes(p);
            hour.extend_from_slice(p);
        }
        hour.extend_from_slice(&packer.trailer());
        assert_eq!(hour, pack(&parts), "the streamed pack is the packed one");
        let want = vec![
            segments[0].clone(),
            segments[1].clone(),
            segments[1].clone(),
        ];
        assert_eq!(unpack(hour.clone()).unwrap(), want);
        let read = |bytes: &[u8]| {
            let mut out = Vec::new();
            unpack_read(&mut io::Cursor::new(bytes), |s| {
                out.push(s);
                true
            })
            .map(|()| out)
        };
        assert_eq!(read(&hour).unwrap(), want);
        assert_eq!(rows_at(dir.path(), &base, &want[..2], 60_000), 8);
        // A single object through the reader, and a stop after the first segment.
        assert_eq!(read(&sealed[0]).unwrap(), vec![segments[0].clone()]);
        let mut seen = 0;
        unpack_read(&mut io::Cursor::new(&hour), |_| {
            seen += 1;
            false
        })
        .unwrap();
        assert_eq!(seen, 1);
        // Damage in the second part, in the trailer, a cut, and bytes after it.
        let mut bad = hour.clone();
        let second = 9 + 8 + minute.len() + 8 + 20;
        bad[second] ^= 1;
        assert!(read(&bad).is_err());
        assert!(unpack(bad).is_err());
        let mut bad = hour.clone();
        *bad.last_mut().unwrap() ^= 1;
        let err = read(&bad).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(read(&hour[..hour.len() - 10]).is_err());
        let mut longer = hour.clone();
        longer.push(0);
        assert!(read(&longer).is_err());
        // A pack three deep is no object of the stream's.
        let deep = pack(&[&hour]);
        assert_eq!(
            unpack(deep.clone()),
            Err(SegmentError::Format("a pack nested too deep"))
        );
        assert!(read(&deep).is_err());
    }

    #[test]
    fn a_damaged_a_foreign_or_a_missing_segment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (base, segments) = two_rounds(dir.path());
        let mut bytes = segments[1].bytes.clone();
        bytes[HEADER_LEN + 20] ^= 1;
        assert_eq!(Segment::decode(bytes), Err(SegmentError::Crc));
        assert_eq!(
            Segment::decode(b"BGWS".to_vec()),
            Err(SegmentError::Format("too short"))
        );
        let h = segments[0].header;
        // The second segment without the first: a gap.
        let mut rebuild = Rebuild::new(io::Cursor::new(base.clone()), h.page_size, h.salt);
        let err = rebuild.apply(&segments[1], i64::MAX).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        // Another generation's base.
        let mut rebuild = Rebuild::new(
            io::Cursor::new(base.clone()),
            h.page_size,
            (h.salt.0 + 1, h.salt.1),
        );
        assert!(rebuild.apply(&segments[0], i64::MAX).is_err());
        // A moment before the first commit: the base, untouched.
        let mut rebuild = Rebuild::new(io::Cursor::new(base.clone()), h.page_size, h.salt);
        assert!(!rebuild.apply(&segments[0], 999).unwrap());
        assert_eq!(rebuild.last_time_ms, None);
        assert_eq!(rebuild.finish().unwrap().into_inner(), base);
    }
}
