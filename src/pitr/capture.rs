//! Capture: the committed transactions of one live database taken from its WAL before
//! anything can remove them, round by round, as segments ([`super::segment`]).
//!
//! Frames leave a WAL only when it restarts, and SQLite restarts it only when every frame
//! has been copied into the database and no reader holds a read mark above 0; copying stops
//! at the lowest reader's mark, and a reader on mark 0 stops it altogether. So the capture
//! always holds a **pin**, a read transaction of its own, and moves on by **handoff**
//! (docs/pitr-design.md §2): begin a read on the second pin connection, read every committed
//! frame now in the WAL, then end the old pin. A pin is released only after every frame
//! committed while it was held is captured, so a restart its release allows removes only
//! captured frames, and a restart seen by the next round (new salts) is a new generation
//! with nothing missing. (The salts cannot tell more: salt-1 is one higher after a restart,
//! but a writer connection that never restarted the WAL itself gives the next WAL random
//! salts, as PocketBase's does after its daily TRUNCATE on another connection.) A WAL read
//! from its header with no earlier round (the capture was not running) is a gap: the
//! generation needs a base image of its own.
//!
//! The application's checkpoints go on: PASSIVE ones copy up to the pin's mark, and a
//! blocking one (PocketBase's daily `wal_checkpoint(TRUNCATE)`) waits in its busy handler,
//! holding the writer's lock, until the readers are out of its way. The handoff alone is
//! not always enough: the checkpointer reads a reader slot's mark once, then waits for the
//! slot's lock; when a pin took that slot between the two (a round right after a commit
//! does) and the WAL then stays unchanged, every later pin shares the slot (its mark is the
//! newest), so the slot is never free and the checkpoint waits out its whole busy timeout
//! (10 s in PocketBase), the application's writes with it. Measured before the fix: 4 to 9
//! runs in 100 of the test below, under load. So the capture also watches the locks
//! ([`Capture::make_way`]): when a blocking checkpoint of another process waits to copy the
//! WAL, the capture takes a last round and steps aside: no pin until the checkpoint has
//! copied the WAL. The pin then comes back on slot 0, which the restart does not wait for
//! and which holds off any copy, hence any restart, of what commits next. That loses
//! nothing: every commit before was captured (the wal-index is checked unchanged across
//! that last round), and while the checkpoint holds the writer's lock nothing commits. Any
//! other change (of the WAL's state, of the locks) brings the pin back too. The first read
//! back counts the commits: the wal-index's change counter (one more at every commit,
//! across restarts) says how many there were since the step aside, and the read must find
//! them all in the WAL; fewer (the WAL restarted again before the pin came back: the
//! checkpoint copied and restarted, and the application committed, copied and restarted
//! once more, while the capture was starved of CPU) is a gap, and a new history begins.
//!
//! A checkpoint of this process (the tests' in-process writers) is not seen: POSIX reports
//! only other processes' locks.
//!
//! One concern: taking the commits from the WAL without losing any and without holding up
//! the application (its tests, with writers in this process and in another, are half the
//! file).

use super::segment::{self, SegmentHeader};
use super::wal::{self, Resume, WAL_STATE, WalIndex};
use crate::archive::sqlite::{self, Db};
use rusqlite::Connection;
use std::io;
use std::path::{Path, PathBuf};

/// The page bytes past which one read's commits are not taken into memory (a `VACUUM` or a
/// bulk import: one transaction of much of the database): [`Capture::round`] reports a gap
/// instead, and the stream begins a new history from a fresh base, read as it streams.
pub const MAX_ROUND_BYTES: u64 = 32 << 20;

/// One round's findings.
#[derive(Debug)]
pub struct Round {
    /// The segment of the commits seen this round (none when there were none).
    pub segment: Option<Vec<u8>>,
    /// The commits in it.
    pub commits: usize,
    /// A new WAL generation began since the last round.
    pub new_generation: bool,
    /// Commits may be missing before this round's: the generation needs a base image.
    pub gap: bool,
    /// The time its commits are stamped with (Unix ms): read from the clock once the WAL
    /// was read, so that no commit is stamped earlier than it was made (a restore to a
    /// moment takes the commits stamped at or before it).
    pub at_ms: i64,
}

/// Where a round reads the time from (Unix ms; the tests give their own).
pub type Clock<'a> = &'a dyn Fn() -> i64;

/// The capture of one database's WAL.
pub struct Capture {
    db: PathBuf,
    wal_path: PathBuf,
    pins: [Db; 2],
    /// The connection that runs the capture's own checkpoints ([`Capture::checkpoint`]).
    ckpt: Db,
    /// The pin that holds a read transaction now.
    held: usize,
    resume: Option<Resume>,
    /// The next commit's sequence number in its generation.
    seq: u64,
    /// No WAL was there when the capture began, and none has been read since: the first
    /// WAL read starts where the pin's snapshot left off (no gap).
    from_empty: bool,
    /// No pin is held: the capture stepped aside for a blocking checkpoint.
    aside: Option<Aside>,
    /// When the locks began to look like a blocking checkpoint that waits, the wal-index
    /// then, and at how many looks since ([`Capture::make_way`] steps aside only once it is
    /// confirmed).
    suspect: Option<(std::time::Instant, [u8; sqlite::WAL_INDEX_HEADER], u32)>,
}

/// How long the locks must look like a blocking checkpoint that waits, at every look and
/// with the wal-index unchanged (nothing committed, nothing copied), before the capture
/// steps aside: a PASSIVE checkpoint (the application's autocheckpoint) beside a write
/// transaction holds the same two locks for a moment, and stepping aside for it would let
/// a second PASSIVE copy and restart the WAL under commits not yet read (a gap). While a
/// checkpoint is suspected the caller looks every [`Capture::suspects`] tick. The blocking
/// checkpoint's busy handler tries again 1, 3 and 8 ms after it began: confirmed within
/// 1 ms of being seen, it goes through at its second or third try.
const CONFIRM_AFTER: std::time::Duration = std::time::Duration::from_millis(1);
/// ... and at this many looks at least: a gateway short of CPU, whose looks come further
/// apart, watches the locks for longer before it takes them for a blocking checkpoint
/// (each look is a chance to see the PASSIVE one end).
const CONFIRM_LOOKS: u32 = 4;

impl Capture {
    /// Opens the pins on the database at `db` (in WAL mode) and takes the first.
    ///
    /// # Errors
    /// SQLite's, as an I/O error.
    pub fn open(db: &Path) -> io::Result<Self> {
        let pin = || -> rusqlite::Result<Db> {
            // Registered as a database held open: nothing of the gateway's opens and closes
            // the file meanwhile, which would drop the pins' locks.
            let conn = sqlite::connect_database(
                db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW,
            )?;
            conn.set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                true,
            )?;
            conn.busy_timeout(std::time::Duration::from_secs(1))?;
            conn.execute_batch("PRAGMA query_only = ON")?;
            Ok(conn)
        };
        let wal_path = sqlite::Sidecar::Wal.of(db);
        let first = pin().map_err(io::Error::other)?;
        let mode: String = first
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .map_err(io::Error::other)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "the database is in {mode} mode, not WAL: backups cover it, the stream cannot"
                ),
            ));
        }
        let ckpt = sqlite::connect_database(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
                | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .and_then(|c| {
            c.set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                true,
            )?;
            Ok(c)
        })
        .map_err(io::Error::other)?;
        let capture = Self {
            db: db.to_path_buf(),
            wal_path,
            ckpt,
            pins: [first, pin().map_err(io::Error::other)?],
            held: 0,
            resume: None,
            seq: 0,
            from_empty: false,
            aside: None,
            suspect: None,
        };
        begin_read(&capture.pins[0])?;
        Ok(capture)
    }

    /// One handoff: a read begun on the free pin, every commit now in the WAL read (and
    /// their pages, into the segment), then the old pin ended. The commits are stamped
    /// with `clock`'s time after the read ([`Round::at_ms`]).
    ///
    /// # Errors
    /// SQLite's and reading the WAL; the old pin is then still held, and the next round
    /// tries again.
    pub fn round(&mut self, clock: Clock<'_>) -> io::Result<Round> {
        if let Some(aside) = self.aside {
            // Back on a pin, which keeps what commits from now on. What committed while
            // aside must all be in the WAL: the wal-index, read under the pin, says how
            // many commits there were (`expect`), and a gap is declared if the read finds
            // fewer (the WAL restarted again meanwhile).
            begin_read(&self.pins[self.held])?;
            self.aside = None;
            let expect = self.pins[self.held]
                .wal_locks(&self.db)
                .ok()
                .map(|l| Expect::from_index(WalIndex(&l.index), aside.changes));
            // Without the wal-index nothing proves the aside lost nothing: a gap.
            let expect = expect.unwrap_or(Expect::UNKNOWN);
            // On an error the pin is held: the next round hands it off as usual.
            return self.read(clock, Some(expect));
        }
        let free = 1 - self.held;
        // A capture's first read scans the WAL before the new pin begins (the held pin keeps
        // the WAL from restarting meanwhile): the base, read through that pin, then holds
        // every commit the read found, also those it leaves out of memory
        // ([`MAX_ROUND_BYTES`]). Any other read begins the pin first, so that nothing
        // committed during the read can be lost.
        let first = self.resume.is_none();
        if !first {
            begin_read(&self.pins[free])?;
        }
        let read = self.read(clock, None);
        if first && read.is_ok() {
            begin_read(&self.pins[free])?;
        }
        let ended = if read.is_ok() {
            end_read(&self.pins[self.held])
        } else {
            end_read(&self.pins[free])
        };
        let round = read?;
        ended?;
        self.held = free;
        Ok(round)
    }

    /// Reads the commits since the last read. `expect`: the first read back from aside,
    /// which must find every commit made since the step aside.
    fn read(&mut self, clock: Clock<'_>, expect: Option<Expect>) -> io::Result<Round> {
        // No WAL (or an empty one) under a held pin: everything committed is in the
        // database file, which the pin's snapshot holds, and the next WAL continues it.
        let empty = |this: &mut Self| {
            if this.resume.is_none() {
                this.from_empty = true;
            }
            let mut round = nothing(clock());
            round.gap = expect.is_some_and(|e| e.commits() != 0);
            Ok(round)
        };
        let mut file = match std::fs::File::open(&self.wal_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return empty(self),
            Err(e) => return Err(e),
        };
        let scanned = match wal::read_committed(&mut file, self.resume)? {
            Ok(s) => s,
            // Truncated and not written since: nothing new.
            Err(wal::WalError::Empty) => return empty(self),
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        };
        // Every commit found was made by now (not by a time read before the scan).
        let at_ms = clock();
        let header = scanned.resume.header;
        let new_generation = scanned.restarted || self.resume.is_none();
        let gap = match (self.resume, expect) {
            (None, _) => !self.from_empty,
            (Some(_), Some(e)) => {
                // The commits of this read up to the wal-index's state under the pin.
                let frame_len = 24 + u64::from(header.page_size);
                let found = scanned
                    .commits
                    .iter()
                    .filter(|c| (c.end - 32) / frame_len <= u64::from(e.frames))
                    .count();
                header.salt.0 != e.salt || found as u64 != u64::from(e.commits())
            }
            // A restart seen from under a held pin loses nothing: the pin kept every frame
            // not read yet (module docs). The salts say nothing here: a writer connection
            // that never restarted the WAL itself gives the next WAL random salts.
            (Some(_), None) => false,
        };
        if new_generation {
            self.seq = 0;
        }
        let frames: usize = scanned.commits.iter().map(|c| c.frames.len()).sum();
        let bytes = frames as u64 * u64::from(header.page_size);
        if bytes > MAX_ROUND_BYTES {
            // Not held in memory. The first read of a capture needs none of it: the base,
            // read through this round's pin, holds these commits, so the segments begin
            // after them. Any later read: a gap, and the next history's base holds it.
            let first = self.resume.is_none();
            self.resume = Some(scanned.resume);
            tracing::info!(
                db = %self.db.display(),
                mib = bytes >> 20,
                "a transaction too large to hold (a VACUUM?): a new history from a fresh base"
            );
            let mut round = nothing(at_ms);
            round.new_generation = new_generation;
            round.gap = if first { gap } else { true };
            return Ok(round);
        }
        let segment = if scanned.commits.is_empty() {
            None
        } else {
            let timed: Vec<_> = scanned.commits.iter().map(|c| (at_ms, c)).collect();
            let seg_header = SegmentHeader {
                page_size: header.page_size,
                salt: header.salt,
                first_seq: self.seq,
                commits: u32::try_from(timed.len()).map_err(io::Error::other)?,
            };
            Some(segment::encode(seg_header, &timed, &mut file)?)
        };
        self.seq += scanned.commits.len() as u64;
        self.resume = Some(scanned.resume);
        Ok(Round {
            segment,
            commits: scanned.commits.len(),
            new_generation,
            gap,
            at_ms,
        })
    }
}

impl Capture {
    /// Watches the application's blocking checkpoints (module docs): when one waits, a last
    /// round and a step aside; while aside, a round (back on a pin) at the first change of
    /// the WAL's state or of the locks. Returns the round it ran, if any. To be called
    /// often: every few ms, and every ms while [`Capture::aside`].
    ///
    /// # Errors
    /// Reading the locks, and the round's.
    pub fn make_way(&mut self, clock: Clock<'_>) -> io::Result<Option<Round>> {
        let locks = self.pins[self.held].wal_locks(&self.db)?;
        if let Some(Aside { state, .. }) = self.aside {
            // Aside only while the same checkpoint waits to copy: once it has copied the
            // WAL (the pin then takes slot 0, which its restart does not wait for, and
            // which holds off any copy of later commits), or at the first change of the
            // WAL's state (the restart, a commit) or of the locks, the pin comes back.
            return if checkpoint_waits(&locks)
                && !copied(&locks)
                && WalIndex(&locks.index).state() == state
            {
                Ok(None)
            } else {
                self.round(clock).map(Some)
            };
        }
        if !checkpoint_waits(&locks) {
            self.suspect = None;
            return Ok(None);
        }
        match self.suspect {
            Some((since, index, looks)) if index == locks.index => {
                if since.elapsed() < CONFIRM_AFTER || looks < CONFIRM_LOOKS {
                    self.suspect = Some((since, index, looks + 1));
                    return Ok(None);
                }
            }
            _ => {
                self.suspect = Some((std::time::Instant::now(), locks.index, 1));
                return Ok(None);
            }
        }
        self.suspect = None;
        // A round (the handoff moves the pin to the newest mark, or to slot 0 once all is
        // copied), then, while the checkpoint still waits to copy, no pin, if nothing
        // committed from before that round to after it.
        let round = self.round(clock)?;
        let after = self.pins[self.held].wal_locks(&self.db)?;
        if checkpoint_waits(&after) && !copied(&after) && after.index == locks.index {
            end_read(&self.pins[self.held])?;
            let index = WalIndex(&after.index);
            self.aside = Some(Aside {
                state: index.state(),
                changes: index.changes(),
            });
            tracing::debug!(db = %self.db.display(), "the capture steps aside for a checkpoint");
        }
        Ok(Some(round))
    }

    /// No pin is held (see [`Capture::make_way`]): rounds wait until it is back.
    pub fn aside(&self) -> bool {
        self.aside.is_some()
    }

    /// A blocking checkpoint seems to wait and is being confirmed ([`Capture::make_way`]):
    /// to be called again soon (every 0.25 ms), each look resetting it at any change.
    pub fn suspects(&self) -> bool {
        self.suspect.is_some()
    }

    /// Every frame of the WAL is copied into the database (or the WAL is empty): a pin
    /// that begins now reads the database alone (slot 0), which neither a blocking
    /// checkpoint with nothing to copy nor a WAL restart waits for.
    ///
    /// # Errors
    /// Reading the wal-index.
    pub fn all_copied(&self) -> io::Result<bool> {
        Ok(copied(&self.pins[self.held].wal_locks(&self.db)?))
    }

    /// A blocking checkpoint of another process waits, on the pins or on anything else
    /// (false when the locks cannot be read): a base read, which must keep its pin, gives
    /// way to it by ending (`stream.rs`).
    pub fn checkpoint_waiting(&self) -> bool {
        self.pins[self.held]
            .wal_locks(&self.db)
            .is_ok_and(|l| checkpoint_waits(&l))
    }

    /// A PASSIVE checkpoint of the capture's own: it copies the WAL into the database up to
    /// the held pin's mark (everything captured), so that the next round's pin can land on
    /// mark 0 and the application's next commit restart the WAL. Without it, a database
    /// that is never quiet keeps a growing WAL, and past 1,000 frames SQLite runs a
    /// checkpoint in every application commit. It writes the database file, never its
    /// content, and never waits (an application checkpoint that starts meanwhile gets
    /// `SQLITE_BUSY`). Returns SQLite's (busy, frames in the WAL, frames copied).
    ///
    /// # Errors
    /// SQLite's.
    pub fn checkpoint(&self) -> io::Result<(i64, i64, i64)> {
        self.ckpt
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(io::Error::other)
    }

    /// The database's page size.
    ///
    /// # Errors
    /// SQLite's.
    pub fn page_size(&self) -> io::Result<u32> {
        self.pins[self.held]
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .map_err(io::Error::other)
    }

    /// Runs `f` on the database's image as the held pin sees it (the page images in order,
    /// `page_size` bytes each): the base of a history that the segments of the round just
    /// run, and of every later round, roll forward. Its WAL generation's commits up to the
    /// pin's snapshot are in it already; applied again on top of it, they leave each page
    /// as it was (every page ends at its last version at or before the snapshot), so the
    /// rebuild may start at the generation's first commit. The pin stays held meanwhile, so
    /// an application's TRUNCATE waits for it, unless `f` ends the read
    /// ([`Capture::checkpoint_waiting`]).
    ///
    /// # Errors
    /// SQLite's, and `f`'s.
    pub fn read_base<T>(
        &self,
        f: impl FnOnce(u32, &mut dyn io::Read) -> io::Result<T>,
    ) -> io::Result<T> {
        let conn = &self.pins[self.held];
        let pragma = |name: &str| -> io::Result<u32> {
            conn.pragma_query_value(None, name, |r| r.get(0))
                .map_err(io::Error::other)
        };
        let (page_size, pages) = (pragma("page_size")?, pragma("page_count")?);
        sqlite::read_image(conn, &self.db, page_size.into(), pages.into(), |r| {
            f(page_size, r)
        })
    }
}

/// A blocking checkpoint of another process waits: it holds the writer's and the
/// checkpointer's locks and is not copying frames (a copy in progress has set
/// `nBackfillAttempted` past `nBackfill`; a wait leaves them equal).
fn checkpoint_waits(locks: &sqlite::WalLocks) -> bool {
    let index = WalIndex(&locks.index);
    locks.writer && locks.checkpointer && index.backfilled() == index.attempted()
}

/// Every frame of the WAL is copied into the database (`nBackfill` equals `mxFrame`).
fn copied(locks: &sqlite::WalLocks) -> bool {
    let index = WalIndex(&locks.index);
    index.backfilled() == index.frames()
}

/// A step aside: the WAL's state then (the first copy of its header in the wal-index) and
/// its change counter (`iChange`: one more at every commit, across restarts).
#[derive(Debug, Clone, Copy)]
struct Aside {
    state: [u8; WAL_STATE],
    changes: u32,
}

/// What the first read back from aside must find: the commits made since the step aside,
/// as the wal-index counted them under the new pin, in its generation and up to its frame.
#[derive(Debug, Clone, Copy)]
struct Expect {
    since: u32,
    now: u32,
    frames: u32,
    salt: u32,
}

impl Expect {
    /// Nothing known: the read is a gap.
    const UNKNOWN: Self = Self {
        since: 0,
        now: u32::MAX,
        frames: 0,
        salt: 0,
    };

    fn from_index(index: WalIndex<'_>, since: u32) -> Self {
        Self {
            since,
            now: index.changes(),
            frames: index.frames(),
            salt: index.salt1(),
        }
    }

    fn commits(self) -> u32 {
        self.now.wrapping_sub(self.since)
    }
}

fn nothing(at_ms: i64) -> Round {
    Round {
        segment: None,
        commits: 0,
        new_generation: false,
        gap: false,
        at_ms,
    }
}

/// Begins a read transaction (a `SELECT` starts it; `BEGIN` alone does not).
fn begin_read(conn: &Connection) -> io::Result<()> {
    conn.execute_batch("BEGIN; SELECT count(*) FROM sqlite_schema;")
        .map_err(io::Error::other)
}

fn end_read(conn: &Connection) -> io::Result<()> {
    conn.execute_batch("COMMIT").map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::super::segment::{Rebuild, Segment};
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// PocketBase's connection: WAL, a 10 s busy timeout, NORMAL sync.
    fn app_connection(db: &Path) -> Connection {
        let conn = Connection::open(db).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn
    }

    /// The capture's rounds, one every 0.5 ms with the lock watch as the stream runs it,
    /// until `done` and one round more (back on a pin, if it was aside).
    fn rounds_until(capture: &mut Capture, done: &AtomicBool) -> Vec<Round> {
        let mut rounds = Vec::new();
        let mut clock = 0i64;
        loop {
            let finished = done.load(Ordering::SeqCst);
            clock += 1;
            if let Some(round) = capture.make_way(&|| clock).unwrap() {
                rounds.push(round);
            }
            if !capture.aside() {
                rounds.push(capture.round(&|| clock).unwrap());
            }
            if finished && !capture.aside() {
                return rounds;
            }
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
    }

    /// `base` rolled forward through the segments of `rounds`, generation after generation,
    /// checked with `integrity_check`: the row count and the sum of `i`.
    fn rebuilt(dir: &Path, base: Vec<u8>, page_size: u32, rounds: Vec<Round>) -> (i64, i64) {
        let segments: Vec<Segment> = rounds
            .into_iter()
            .filter_map(|r| r.segment)
            .map(|s| Segment::decode(s).unwrap())
            .collect();
        let first = segments[0].header.salt;
        let mut rebuild = Rebuild::new(std::io::Cursor::new(base), page_size, first);
        for s in &segments {
            if s.header.salt != rebuild.salt() {
                rebuild.next_generation(s.header.salt).unwrap();
            }
            assert!(rebuild.apply(s, i64::MAX).unwrap());
        }
        let path = dir.join("rebuilt.db");
        std::fs::write(&path, rebuild.finish().unwrap().into_inner()).unwrap();
        let conn = Connection::open(&path).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        conn.query_row("SELECT count(*), sum(i) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
    }

    /// A commit made after the round's clock was read, while the round runs, is not
    /// stamped with that time: the clock is read once the WAL is read, so such a commit is
    /// left to the next round, and every commit's stamp is at or after its making (CI saw a
    /// restore to a moment hold a commit made 1 ms after it when the time was read first).
    #[test]
    fn a_round_stamps_its_commits_with_a_time_read_after_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data.db");
        let app = app_connection(&db);
        app.execute_batch("CREATE TABLE t (i INTEGER PRIMARY KEY, made INTEGER)")
            .unwrap();
        let mut capture = Capture::open(&db).unwrap();
        capture.round(&|| 0).unwrap();
        // The clock reads time t, then the application commits a row made at t + 1.
        let t = std::cell::Cell::new(0i64);
        let clock = || {
            t.set(t.get() + 10);
            app.execute("INSERT INTO t (made) VALUES (?1)", [t.get() + 1])
                .unwrap();
            t.get()
        };
        let rounds: Vec<Round> = (0..5).map(|_| capture.round(&clock).unwrap()).collect();
        // Each round holds the row committed while the one before read its clock, never
        // the one committed while its own did.
        assert_eq!(rounds[0].commits, 0, "round 0");
        for (k, round) in rounds.iter().enumerate().skip(1) {
            assert_eq!(round.commits, 1, "round {k}");
            let made = 10 * k as i64 + 1;
            assert!(
                round.at_ms >= made,
                "made at {made}, stamped {}",
                round.at_ms
            );
        }
    }

    #[test]
    fn a_capture_begun_on_a_written_wal_reports_a_gap_and_reads_a_base_that_it_continues() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data.db");
        let app = app_connection(&db);
        app.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        app.execute_batch("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT)")
            .unwrap();
        for i in 1..=10 {
            app.execute("INSERT INTO t (i, v) VALUES (?1, 'x')", [i])
                .unwrap();
        }
        let mut capture = Capture::open(&db).unwrap();
        let first = capture.round(&|| 1).unwrap();
        assert!(first.gap && first.new_generation, "{first:?}");
        assert_eq!(
            first.commits, 11,
            "the CREATE and 10 INSERTs, from the WAL's start"
        );
        let base = capture
            .read_base(|page_size, r| {
                assert_eq!(page_size, capture.page_size().unwrap());
                let mut out = Vec::new();
                r.read_to_end(&mut out)?;
                Ok(out)
            })
            .unwrap();
        for i in 11..=15 {
            app.execute("INSERT INTO t (i, v) VALUES (?1, 'y')", [i])
                .unwrap();
        }
        let later = capture.round(&|| 2).unwrap();
        assert!(!later.gap);
        let page_size = capture.page_size().unwrap();
        // The base already holds the first round's commits: applied again, they change
        // nothing, and the later ones bring the rest.
        let (rows, sum) = rebuilt(dir.path(), base, page_size, vec![first, later]);
        assert_eq!((rows, sum), (15, 15 * 16 / 2));
    }

    #[test]
    fn a_transaction_too_large_to_hold_is_left_to_the_base_first_and_a_gap_after() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data.db");
        let app = app_connection(&db);
        app.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        // About 40 MiB in one transaction: a row a page.
        let huge = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
                    INSERT INTO t (i, v) SELECT i, randomblob(4000) FROM n";
        app.execute_batch(&format!(
            "CREATE TABLE t (i INTEGER PRIMARY KEY, v BLOB); {huge}"
        ))
        .unwrap();
        let wal = std::fs::metadata(dir.path().join("data.db-wal"))
            .unwrap()
            .len();
        assert!(wal > MAX_ROUND_BYTES, "{wal}");
        // The first read: nothing taken, the base holds it.
        let mut capture = Capture::open(&db).unwrap();
        let first = capture.round(&|| 1).unwrap();
        assert!(first.segment.is_none() && first.new_generation, "{first:?}");
        let base = capture
            .read_base(|_, r| {
                let mut out = Vec::new();
                r.read_to_end(&mut out)?;
                Ok(out)
            })
            .unwrap();
        app.execute("INSERT INTO t (i, v) VALUES (10001, x'00')", [])
            .unwrap();
        let later = capture.round(&|| 2).unwrap();
        assert!(!later.gap && later.commits == 1, "{later:?}");
        let page_size = capture.page_size().unwrap();
        let (rows, sum) = rebuilt(dir.path(), base, page_size, vec![first, later]);
        assert_eq!((rows, sum), (10001, 10001 * 10002 / 2));
        // Later: a gap, nothing held.
        app.execute("UPDATE t SET v = randomblob(4000)", [])
            .unwrap();
        let big = capture.round(&|| 3).unwrap();
        assert!(big.gap && big.segment.is_none(), "{big:?}");
    }

    /// Which connection of the application runs its checkpoints.
    #[derive(Clone, Copy, PartialEq)]
    enum Checkpointer {
        /// One of its own, as PocketBase's pool does: the writer's connection never
        /// restarts the WAL itself, so SQLite gives each new WAL random salts.
        Own,
        /// The writer's: each new WAL's salt-1 is one higher.
        Writer,
    }

    /// The application in a process of its own (as PocketBase is) commits 1,000 times and
    /// runs a `wal_checkpoint(TRUNCATE)` every `every` commits on `checkpointer`, with a
    /// 2 s busy timeout (sleeping `pace_ms` after each commit), while the capture runs a
    /// round every 0.5 ms and watches the locks as the stream does. Returns each
    /// checkpoint's busy flag and the rounds.
    fn beside_a_writer_process(
        every: i64,
        pace_ms: u64,
        checkpointer: Checkpointer,
    ) -> (Vec<i64>, Vec<Round>, Vec<u8>, u32) {
        const WRITER: &str = r#"
import json, sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], timeout=2.0, isolation_level=None)
c.execute("PRAGMA synchronous=NORMAL")
k = sqlite3.connect(sys.argv[1], timeout=2.0, isolation_level=None) if sys.argv[5] == "own" else c
every, pace, out = int(sys.argv[3]), int(sys.argv[4]) / 1000, []
for i in range(1, int(sys.argv[2]) + 1):
    c.execute("INSERT INTO t (i, v) VALUES (?, ?)", (i, "z" * (5000 if i % 7 == 0 else 40)))
    time.sleep(pace)
    if i % every == every // 2:
        out.append(k.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
print(json.dumps(out))
"#;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data.db");
        let app = app_connection(&db);
        app.execute_batch("CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT)")
            .unwrap();
        app.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        drop(app);
        let base = std::fs::read(&db).unwrap();
        let mut capture = Capture::open(&db).unwrap();
        let page_size = capture.page_size().unwrap();
        let writer = std::process::Command::new("python3")
            .arg("-c")
            .arg(WRITER)
            .arg(&db)
            .arg(WRITER_COMMITS.to_string())
            .arg(every.to_string())
            .arg(pace_ms.to_string())
            .arg(if checkpointer == Checkpointer::Own {
                "own"
            } else {
                "writer"
            })
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let done = Arc::new(AtomicBool::new(false));
        let waiter = {
            let done = done.clone();
            std::thread::spawn(move || {
                let out = writer.wait_with_output().unwrap();
                done.store(true, Ordering::SeqCst);
                out
            })
        };
        let rounds = rounds_until(&mut capture, &done);
        let out = waiter.join().unwrap();
        assert!(out.status.success());
        let busy: Vec<i64> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(busy.len() as i64, WRITER_COMMITS / every);
        (busy, rounds, base, page_size)
    }

    const WRITER_COMMITS: i64 = 1000;

    /// A checkpoint every 25 commits, as fast as the writer goes (40 in all): none waits out
    /// its busy timeout. Without [`Capture::make_way`], 2 runs in 15 (under load) had one
    /// that did. Restarts this close together may come and go while the capture is aside
    /// and starved of CPU: a gap (module docs), which this test allows.
    #[test]
    fn no_checkpoint_of_another_process_waits_out_the_pins() {
        let (busy, rounds, _, _) = beside_a_writer_process(25, 0, Checkpointer::Own);
        assert!(
            busy.iter().all(|b| *b == 0),
            "checkpoints that waited out their busy timeout: {busy:?}"
        );
        assert!(rounds.iter().map(|r| r.commits).sum::<usize>() <= WRITER_COMMITS as usize);
    }

    /// A commit about every millisecond and a checkpoint every 50 (20 in all) on a
    /// connection of its own: none waits, and every commit is captured, across the
    /// restarts, into the database whole.
    #[test]
    fn every_commit_of_a_writer_process_is_captured_across_its_checkpoints() {
        every_commit_is_captured_across_checkpoints_on(Checkpointer::Own);
    }

    /// The same with the checkpoints on the writer's connection: the restarted WALs' salts
    /// follow on from the last ones instead of being random.
    #[test]
    fn every_commit_of_a_writer_that_truncates_its_own_wal_is_captured_across_generations() {
        every_commit_is_captured_across_checkpoints_on(Checkpointer::Writer);
    }

    fn every_commit_is_captured_across_checkpoints_on(checkpointer: Checkpointer) {
        let (busy, rounds, base, page_size) = beside_a_writer_process(50, 1, checkpointer);
        assert!(
            busy.iter().all(|b| *b == 0),
            "checkpoints that waited out their busy timeout: {busy:?}"
        );
        let generations = rounds.iter().filter(|r| r.new_generation).count();
        assert_eq!(generations, 1 + busy.len(), "a generation per restart");
        assert!(rounds.iter().all(|r| !r.gap), "a gap");
        let captured: usize = rounds.iter().map(|r| r.commits).sum();
        assert_eq!(captured, WRITER_COMMITS as usize, "every commit, once");
        let dir = tempfile::tempdir().unwrap();
        let (rows, sum) = rebuilt(dir.path(), base, page_size, rounds);
        assert_eq!(
            (rows, sum),
            (WRITER_COMMITS, WRITER_COMMITS * (WRITER_COMMITS + 1) / 2)
        );
    }
}
