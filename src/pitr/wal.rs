//! SQLite's write-ahead log, read as point-in-time restore needs it: only committed
//! transactions, each frame proved by the WAL's own salts and running checksum (a database
//! is rolled forward through them by [`super::segment::Rebuild`]).
//!
//! The format (SQLite's `wal.c`, the 3.54 bundled by `libsqlite3-sys`):
//! - a 32-byte header: magic (`0x377f0682`: checksums over little-endian words, `0x377f0683`:
//!   big-endian), format version 3007000, page size, checkpoint sequence, salt-1, salt-2, and
//!   a checksum of bytes 0..24;
//! - frames of a 24-byte header (page number; the database size in pages on a **commit
//!   frame**, 0 otherwise; the two salts; the running checksum) and the page.
//!
//! A frame is valid when its salts are the header's and its checksum is the running checksum:
//! the header's bytes 0..24, then, for every frame up to this one, its first 8 bytes and its
//! page. A valid commit frame commits everything since the previous one. Frames after the
//! last valid commit frame are a transaction still being written (or left by a crash, or
//! from before the last restart, whose salts differ): [`read_committed`] never returns them.
//! A reader that resumes ([`Resume`]) carries the running checksum over, so the chain is
//! proved from the header on, however many rounds it takes.
//!
//! The commits' times are not in the WAL: the stream stamps each when it sees it.
//!
//! [`WalIndex`] reads the header of the wal-index, the WAL's shared state at the start of
//! the `-shm` (SQLite keeps it; the capture only reads it, through
//! [`crate::archive::sqlite::Db::wal_locks`]).

use std::io::{self, Read, Seek, SeekFrom};

/// The WAL header's length.
pub const HEADER_LEN: u64 = 32;
/// A frame header's length.
pub const FRAME_HEADER_LEN: u64 = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;
const VERSION: u32 = 3_007_000;

/// The wal-index header as SQLite keeps it (sqlite3.c, "the complete 136-byte header of
/// the wal-index"; words in the machine's order): two 48-byte copies of the WAL's state,
/// then the checkpoint's part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalIndex<'a>(pub &'a [u8; crate::archive::sqlite::WAL_INDEX_HEADER]);

/// The length of the WAL's state in the wal-index: the first copy of its header (frames,
/// salts, change counter, checksum), which every commit and every restart rewrites.
pub const WAL_STATE: usize = 48;

impl WalIndex<'_> {
    /// The WAL's state ([`WAL_STATE`] bytes).
    pub fn state(&self) -> [u8; WAL_STATE] {
        let mut out = [0u8; WAL_STATE];
        out.copy_from_slice(&self.0[..WAL_STATE]);
        out
    }

    /// `iChange`: one more at every commit, across restarts.
    pub fn changes(&self) -> u32 {
        self.word(8)
    }

    /// `mxFrame`: the frames of the WAL's last commit.
    pub fn frames(&self) -> u32 {
        self.word(16)
    }

    /// The WAL's salt-1 (copied from its header as it is there: big-endian).
    pub fn salt1(&self) -> u32 {
        u32::from_be_bytes(self.0[32..36].try_into().expect("4 bytes"))
    }

    /// `nBackfill`: the frames copied into the database.
    pub fn backfilled(&self) -> u32 {
        self.word(96)
    }

    /// `nBackfillAttempted`: the frames a copy began on (past [`WalIndex::backfilled`]
    /// while a copy runs).
    pub fn attempted(&self) -> u32 {
        self.word(128)
    }

    fn word(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.0[at..at + 4].try_into().expect("4 bytes"))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WalError {
    /// No header yet (an empty WAL: nothing was written since the last restart).
    #[error("the WAL has no header")]
    Empty,
    #[error("not a WAL header: {0}")]
    BadHeader(&'static str),
}

/// The WAL header: what every frame of this generation of the WAL must agree with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Checksums over big-endian words (magic `0x377f0683`).
    pub big_endian: bool,
    pub page_size: u32,
    pub checkpoint_seq: u32,
    pub salt: (u32, u32),
    /// The header's checksum: the start of the frames' running checksum.
    pub checksum: (u32, u32),
}

impl Header {
    /// Parses and checks (magic, version, page size, checksum) a header.
    ///
    /// # Errors
    /// [`WalError::BadHeader`] naming what is wrong.
    pub fn parse(b: &[u8; HEADER_LEN as usize]) -> Result<Self, WalError> {
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let big_endian = match word(0) {
            MAGIC_LE => false,
            MAGIC_BE => true,
            _ => return Err(WalError::BadHeader("magic")),
        };
        if word(4) != VERSION {
            return Err(WalError::BadHeader("version"));
        }
        let page_size = word(8);
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(WalError::BadHeader("page size"));
        }
        let checksum = checksum(big_endian, (0, 0), &b[..24]);
        if checksum != (word(24), word(28)) {
            return Err(WalError::BadHeader("checksum"));
        }
        Ok(Self {
            big_endian,
            page_size,
            checkpoint_seq: word(12),
            salt: (word(16), word(20)),
            checksum,
        })
    }

    /// One frame's length.
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN + u64::from(self.page_size)
    }
}

/// SQLite's `walChecksumBytes`: Fletcher-like sums over pairs of 32-bit words, carried on
/// from `start`. `data` is a multiple of 8 bytes.
pub fn checksum(big_endian: bool, start: (u32, u32), data: &[u8]) -> (u32, u32) {
    let (mut s1, mut s2) = start;
    let word = |c: &[u8]| {
        let a = [c[0], c[1], c[2], c[3]];
        if big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    };
    for pair in data.chunks_exact(8) {
        s1 = s1.wrapping_add(word(&pair[..4])).wrapping_add(s2);
        s2 = s2.wrapping_add(word(&pair[4..])).wrapping_add(s1);
    }
    (s1, s2)
}

/// One committed frame: which page it holds and where its page lies in the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub page: u32,
    /// The page's offset in the WAL file.
    pub offset: u64,
}

/// One committed transaction: its frames, in order, and the database's size after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub frames: Vec<Frame>,
    /// The database's size in pages after this commit.
    pub db_pages: u32,
    /// The WAL offset just past this commit's last frame.
    pub end: u64,
}

/// Where a reader stopped: the next read resumes here, in the same WAL generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub header: Header,
    /// The offset just past the last committed frame read.
    pub offset: u64,
    /// The running checksum at `offset`.
    pub checksum: (u32, u32),
}

/// What one read of a WAL found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// The commits since the resume point (or since the header), oldest first.
    pub commits: Vec<Commit>,
    /// Where the next read resumes.
    pub resume: Resume,
    /// The WAL was restarted (or replaced) since `resume`: its header is no longer the one
    /// the resume point belongs to. The commits are then those of the new generation, read
    /// from its header; whatever the old one held past the resume point is lost to the
    /// stream (a gap).
    pub restarted: bool,
}

/// Reads the committed transactions of the WAL in `wal`, after `resume` when it is still
/// the same WAL (same header), else from its header.
///
/// # Errors
/// The outer error: reading failed. The inner one: [`WalError::Empty`] when the file holds
/// no complete header yet, or a header that is not a WAL's.
pub fn read_committed<R: Read + Seek>(
    wal: &mut R,
    resume: Option<Resume>,
) -> io::Result<Result<Scanned, WalError>> {
    let mut raw = [0u8; HEADER_LEN as usize];
    wal.seek(SeekFrom::Start(0))?;
    if let Err(e) = wal.read_exact(&mut raw) {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => Ok(Err(WalError::Empty)),
            _ => Err(e),
        };
    }
    let header = match Header::parse(&raw) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    let (start, restarted) = match resume {
        Some(r) if r.header == header => (r, false),
        Some(_) => (from_header(header), true),
        None => (from_header(header), false),
    };
    let commits = scan(wal, &start)?;
    let resume = commits.last().map_or(start, |(c, checksum)| Resume {
        header,
        offset: c.end,
        checksum: *checksum,
    });
    Ok(Ok(Scanned {
        commits: commits.into_iter().map(|(c, _)| c).collect(),
        resume,
        restarted,
    }))
}

fn from_header(header: Header) -> Resume {
    Resume {
        header,
        offset: HEADER_LEN,
        checksum: header.checksum,
    }
}

/// The valid frames from `start` on, grouped into commits; frames after the last valid
/// commit frame are left out. Each commit comes with the running checksum at its end.
fn scan<R: Read + Seek>(wal: &mut R, start: &Resume) -> io::Result<Vec<(Commit, (u32, u32))>> {
    let header = start.header;
    let frame_len = usize::try_from(header.frame_len()).expect("a page fits in memory");
    wal.seek(SeekFrom::Start(start.offset))?;
    let mut reader = io::BufReader::with_capacity(frame_len.max(64 << 10), wal);
    let mut frame = vec![0u8; frame_len];
    let mut running = start.checksum;
    let mut offset = start.offset;
    let mut pending = Vec::new();
    let mut commits = Vec::new();
    loop {
        match reader.read_exact(&mut frame) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let word =
            |i: usize| u32::from_be_bytes([frame[i], frame[i + 1], frame[i + 2], frame[i + 3]]);
        // A frame of another WAL generation, or page 0 (which `wal.c` refuses too).
        if (word(8), word(12)) != header.salt || word(0) == 0 {
            break;
        }
        let sum = checksum(header.big_endian, running, &frame[..8]);
        let sum = checksum(header.big_endian, sum, &frame[FRAME_HEADER_LEN as usize..]);
        if sum != (word(16), word(20)) {
            break;
        }
        running = sum;
        pending.push(Frame {
            page: word(0),
            offset: offset + FRAME_HEADER_LEN,
        });
        offset += header.frame_len();
        let db_pages = word(4);
        if db_pages != 0 {
            commits.push((
                Commit {
                    frames: std::mem::take(&mut pending),
                    db_pages,
                    end: offset,
                },
                running,
            ));
        }
    }
    Ok(commits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;
    use std::path::Path;

    /// A database in WAL mode that never checkpoints, and its image before any frame.
    fn wal_db(dir: &Path) -> (Connection, Vec<u8>) {
        let path = dir.join("data.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        let base = std::fs::read(&path).unwrap();
        (conn, base)
    }

    fn insert(conn: &Connection, i: i64) {
        // A big value now and then, so that a commit spans pages (and overflow pages).
        let payload = "x".repeat(if i % 3 == 0 { 9000 } else { 20 });
        conn.execute("INSERT INTO t (i, v) VALUES (?1, ?2)", (i, payload))
            .unwrap();
    }

    fn read(dir: &Path, resume: Option<Resume>) -> Scanned {
        let mut wal = std::fs::File::open(dir.join("data.db-wal")).unwrap();
        read_committed(&mut wal, resume).unwrap().unwrap()
    }

    /// The segment of `timed`, the commits of the WAL of `header` read from `wal`, checked.
    fn segment_of(
        header: Header,
        timed: &[(i64, &Commit)],
        wal: &mut std::fs::File,
    ) -> super::super::segment::Segment {
        use super::super::segment::{Segment, SegmentHeader, encode};
        let segment = SegmentHeader {
            page_size: header.page_size,
            salt: header.salt,
            first_seq: 0,
            commits: u32::try_from(timed.len()).unwrap(),
        };
        Segment::decode(encode(segment, timed, wal).unwrap()).unwrap()
    }

    /// `base` rolled forward through `commits`, opened: its row count and integrity.
    fn rolled(dir: &Path, base: &[u8], commits: &[Commit], name: &str) -> (i64, String) {
        // Through the segment and its rebuild: the one way the stream rolls forward.
        use super::super::segment::Rebuild;
        let mut wal = std::fs::File::open(dir.join("data.db-wal")).unwrap();
        let header = read(dir, None).resume.header;
        let timed: Vec<(i64, &Commit)> = commits.iter().map(|c| (0, c)).collect();
        let segment = segment_of(header, &timed, &mut wal);
        let base = io::Cursor::new(base.to_vec());
        let mut rebuild = Rebuild::new(base, header.page_size, header.salt);
        assert!(rebuild.apply(&segment, 0).unwrap());
        let path = dir.join(name);
        std::fs::write(&path, rebuild.finish().unwrap().into_inner()).unwrap();
        let conn = Connection::open(&path).unwrap();
        let rows = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        let check = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        (rows, check)
    }

    #[test]
    fn every_commit_of_a_real_wal_rolls_a_base_image_to_that_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, base) = wal_db(dir.path());
        conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT)", [])
            .unwrap();
        for i in 1..=12 {
            insert(&conn, i);
        }
        let scanned = read(dir.path(), None);
        assert!(!scanned.restarted);
        assert_eq!(scanned.commits.len(), 13, "the CREATE and 12 INSERTs");
        assert!(scanned.commits.iter().any(|c| c.frames.len() > 2));
        for k in [1, 2, 5, 13] {
            let (rows, check) = rolled(
                dir.path(),
                &base,
                &scanned.commits[..k],
                &format!("at{k}.db"),
            );
            assert_eq!(
                (rows, check.as_str()),
                (k as i64 - 1, "ok"),
                "after commit {k}"
            );
        }
    }

    #[test]
    fn a_resumed_read_returns_only_the_new_commits_and_both_together_roll_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, base) = wal_db(dir.path());
        conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT)", [])
            .unwrap();
        insert(&conn, 1);
        let first = read(dir.path(), None);
        assert_eq!(first.commits.len(), 2);
        for i in 2..=4 {
            insert(&conn, i);
        }
        let second = read(dir.path(), Some(first.resume));
        assert!(!second.restarted);
        assert_eq!(second.commits.len(), 3);
        assert!(second.commits[0].frames[0].offset > first.resume.offset);
        let all: Vec<Commit> = first.commits.into_iter().chain(second.commits).collect();
        assert_eq!(rolled(dir.path(), &base, &all, "end.db"), (4, "ok".into()));
        // Nothing new: nothing returned, the resume point stays.
        let third = read(dir.path(), Some(second.resume));
        assert!(third.commits.is_empty());
        assert_eq!(third.resume, second.resume);
    }

    /// The table's content, as one string (the oracle of the test below).
    fn content(conn: &Connection) -> String {
        conn.query_row(
            "SELECT count(*) || ':' || coalesce(group_concat(i || '=' || length(v) || substr(v, 1, 6), ','), '')
             FROM (SELECT * FROM t ORDER BY i)",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// One segment of many commits that write the same pages again and again, shrink the
    /// database (auto_vacuum cuts the file at commit) and grow it back: rebuilt up to each
    /// commit in turn (each page's last version only, [`super::super::segment::Rebuild`]),
    /// the database holds exactly what SQLite held after that commit.
    #[test]
    fn a_segment_rebuilt_up_to_each_of_its_commits_holds_what_sqlite_held_then() {
        use super::super::segment::Rebuild;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "auto_vacuum", "FULL").unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT)", [])
            .unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let base = std::fs::read(&path).unwrap();
        let mut seen = Vec::new();
        let mut commit = |sql: &str| {
            conn.execute_batch(sql).unwrap();
            seen.push(content(&conn));
        };
        for i in 1..=20 {
            commit(&format!(
                "INSERT INTO t (i, v) VALUES ({i}, printf('%.*c', {}, char(64 + {i})))",
                if i % 2 == 0 { 6000 } else { 30 }
            ));
        }
        for n in 1..=15 {
            commit(&format!("UPDATE t SET v = '{n}' || v WHERE i IN (1, 2, 3)"));
        }
        commit("DELETE FROM t WHERE i > 4");
        for i in 5..=12 {
            commit(&format!(
                "INSERT INTO t (i, v) VALUES ({i}, printf('%.*c', 3000, char(80 + {i})))"
            ));
        }
        commit("DELETE FROM t WHERE i % 2 = 0");

        let scanned = read(dir.path(), None);
        assert_eq!(scanned.commits.len(), seen.len());
        let sizes: Vec<u32> = scanned.commits.iter().map(|c| c.db_pages).collect();
        assert!(
            sizes.windows(2).any(|w| w[1] < w[0])
                && sizes.windows(3).any(|w| w[2] > w[1] && w[1] < w[0]),
            "the database shrinks and grows back: {sizes:?}"
        );
        let header = scanned.resume.header;
        let timed: Vec<(i64, &Commit)> = scanned
            .commits
            .iter()
            .enumerate()
            .map(|(k, c)| (k as i64, c))
            .collect();
        let mut wal = std::fs::File::open(dir.path().join("data.db-wal")).unwrap();
        let segment = segment_of(header, &timed, &mut wal);
        for (k, expected) in seen.iter().enumerate() {
            let mut rebuild =
                Rebuild::new(io::Cursor::new(base.clone()), header.page_size, header.salt);
            let whole = rebuild.apply(&segment, k as i64).unwrap();
            assert_eq!(whole, k + 1 == seen.len());
            let image = rebuild.finish().unwrap().into_inner();
            assert_eq!(
                image.len() as u64,
                u64::from(sizes[k]) * u64::from(header.page_size),
                "the size after commit {k}"
            );
            let at = dir.path().join(format!("at{k}.db"));
            std::fs::write(&at, image).unwrap();
            let rebuilt = Connection::open(&at).unwrap();
            let check: String = rebuilt
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(check, "ok", "after commit {k}");
            assert_eq!(&content(&rebuilt), expected, "after commit {k}");
        }
    }

    #[test]
    fn a_torn_or_damaged_frame_ends_the_committed_frames_before_its_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, _base) = wal_db(dir.path());
        conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT)", [])
            .unwrap();
        for i in 1..=5 {
            insert(&conn, i);
        }
        let wal = std::fs::read(dir.path().join("data.db-wal")).unwrap();
        let whole = read(dir.path(), None);
        let last = whole.commits.last().unwrap().clone();
        // Cut inside the last transaction's last frame: that transaction is not committed.
        let torn = &wal[..usize::try_from(last.end).unwrap() - 100];
        let s = read_committed(&mut io::Cursor::new(torn.to_vec()), None)
            .unwrap()
            .unwrap();
        assert_eq!(s.commits.len(), whole.commits.len() - 1);
        // One flipped byte in the page of the third commit's first frame: the chain breaks
        // there, and no later commit is believed either.
        let mut damaged = wal.clone();
        let at = usize::try_from(whole.commits[2].frames[0].offset).unwrap() + 10;
        damaged[at] ^= 0x40;
        let s = read_committed(&mut io::Cursor::new(damaged), None)
            .unwrap()
            .unwrap();
        assert_eq!(s.commits, whole.commits[..2]);
    }

    #[test]
    fn a_restarted_wal_is_read_from_its_new_header_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, _base) = wal_db(dir.path());
        conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT)", [])
            .unwrap();
        insert(&conn, 1);
        let before = read(dir.path(), None);
        // PocketBase's daily checkpoint, then a write: the WAL restarts with new salts.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        insert(&conn, 2);
        let after = read(dir.path(), Some(before.resume));
        assert!(after.restarted);
        assert_ne!(after.resume.header.salt, before.resume.header.salt);
        assert_eq!(after.commits.len(), 1);
        assert_eq!(
            after.commits[0].frames[0].offset,
            HEADER_LEN + FRAME_HEADER_LEN
        );
    }

    #[test]
    fn headers_are_checked_and_an_empty_wal_is_told_apart() {
        let empty = read_committed(&mut io::Cursor::new(Vec::new()), None).unwrap();
        assert_eq!(empty, Err(WalError::Empty));
        let mut h = [0u8; HEADER_LEN as usize];
        h[..4].copy_from_slice(&MAGIC_LE.to_be_bytes());
        h[4..8].copy_from_slice(&VERSION.to_be_bytes());
        h[8..12].copy_from_slice(&4096u32.to_be_bytes());
        let sum = checksum(false, (0, 0), &h[..24]);
        h[24..28].copy_from_slice(&sum.0.to_be_bytes());
        h[28..32].copy_from_slice(&sum.1.to_be_bytes());
        assert_eq!(Header::parse(&h).unwrap().page_size, 4096);
        let mut bad = h;
        bad[31] ^= 1;
        assert_eq!(Header::parse(&bad), Err(WalError::BadHeader("checksum")));
        let mut bad = h;
        bad[3] = 0x99;
        assert_eq!(Header::parse(&bad), Err(WalError::BadHeader("magic")));
        let mut bad = h;
        bad[8..12].copy_from_slice(&1000u32.to_be_bytes());
        assert_eq!(Header::parse(&bad), Err(WalError::BadHeader("page size")));
    }
}
