//! SQLite databases of the data directory, archived as consistent point-in-time images read
//! through SQLite itself, never by copying their files.
//!
//! A live application writes its databases while the gateway archives them: bytes copied
//! from the file at the moments each block happens to be read form a torn image ("Rowid out
//! of order", lost rows), and the `-wal` beside it holds pages of yet other moments. So a
//! database, recognised by its 16-byte header whatever its name, is read inside a read
//! transaction through the `sqlite_dbpage` virtual table: `SELECT data FROM sqlite_dbpage`
//! returns the page images of exactly that transaction's snapshot, pages still only in the
//! WAL included, in page order, one page at a time. The archive entry is those pages under
//! the database's own name; its `-wal`, `-shm` and `-journal` are not archived. Restored, the
//! image is a complete database on its own.
//!
//! Why this and not the alternatives (docs/design.md has the whole argument): the online
//! backup API and `VACUUM INTO` both need a destination database, that is a temporary file
//! (PocketBase's way) or the whole database in memory; `sqlite_dbpage` streams, so memory
//! stays at one page plus the connection's small page cache.
//!
//! Locks: in WAL mode a reader never blocks a writer, so every WAL database of a create is
//! opened and its read transaction started before anything is streamed ([`Snapshots::open`],
//! one moment for all of them as far as SQLite allows) and held until it has been streamed.
//! Meanwhile checkpoints cannot move past the snapshot, so the WAL grows by what the
//! application writes during the create. In rollback-journal mode a reader's SHARED lock
//! holds off every commit, so such a database is only checked at the start and its read
//! transaction runs just while it is streamed.
//!
//! POSIX locks belong to the process and die with any descriptor of the file that closes:
//! the gateway opens a database or its sidecars as a plain file only through
//! [`has_header`], while none of its connections ([`connect`]) is open on it.
//!
//! The connection changes nothing: it is opened without `CREATE`, `query_only`, and with
//! the checkpoint on close turned off, so that even as the last connection it leaves the
//! application's files as they were.
//!
//! One concern: the consistent image of a live database (its tests are half the file).

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The first 16 bytes of every SQLite database file.
pub const HEADER: &[u8; 16] = b"SQLite format 3\0";
/// A database file holds at least one page of at least 512 bytes.
pub const MIN_FILE_LEN: u64 = 512;
/// A file that belongs to the database beside it (named after it) and is never archived:
/// the image already holds what it adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sidecar {
    /// The write-ahead log.
    Wal,
    /// The WAL's index, and its locks.
    Shm,
    /// The rollback journal.
    Journal,
}

impl Sidecar {
    pub const ALL: [Self; 3] = [Self::Wal, Self::Shm, Self::Journal];

    pub const fn suffix(self) -> &'static str {
        match self {
            Self::Wal => "-wal",
            Self::Shm => "-shm",
            Self::Journal => "-journal",
        }
    }

    /// Its path beside the database at `db`.
    pub fn of(self, db: &Path) -> PathBuf {
        let mut path = db.as_os_str().to_owned();
        path.push(self.suffix());
        path.into()
    }
}

/// Removes the database file at `db` and its sidecars, those that are there (each one
/// tried, whatever became of the others).
///
/// # Errors
/// The first removal that failed for another reason than the file not being there.
pub fn remove_with_sidecars(db: &Path) -> io::Result<()> {
    let paths = std::iter::once(db.to_path_buf()).chain(Sidecar::ALL.map(|s| s.of(db)));
    let mut first = Ok(());
    for path in paths {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound && first.is_ok() => first = Err(e),
            _ => {}
        }
    }
    first
}
/// WAL databases whose read transaction is held from the start; past this many (an
/// application with a database per tenant), each further one is opened when it is reached,
/// so that a create never needs thousands of descriptors.
pub const MAX_HELD: usize = 64;
/// Page cache of a snapshot connection, in KiB: pages are read once, in order.
const CACHE_KIB: i64 = 1024;
/// The same, in bytes: what the database being streamed holds beside its pages in flight.
pub const CACHE_BYTES: u64 = CACHE_KIB as u64 * 1024;

/// Default wait, in milliseconds, for a lock held by the application (a rollback-journal
/// commit, a WAL recovery) before the create fails (and of `--sqlite-busy-timeout-ms`).
pub const DEFAULT_BUSY_TIMEOUT_MS: u64 = 5000;

/// True when `data` starts with SQLite's header.
pub fn starts_with_header(data: &[u8]) -> bool {
    data.starts_with(HEADER)
}

/// True when the file at `path` starts with SQLite's header (an unreadable file is not
/// taken for a database here; reading it fails later, with its own error).
///
/// Its plain descriptor is opened and closed while no connection of this process is open
/// on the same file ([`connect`]): closing it would drop that connection's POSIX locks. A
/// file that keeps a connection open past [`LOCK_WAIT`] is taken for the database it is.
pub fn has_header(path: &Path, meta: &std::fs::Metadata) -> bool {
    let id = file_id(meta);
    if KNOWN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(&id)
    {
        // A database the point-in-time stream holds open for good: waiting for its
        // connections to close would wait for ever, and reading it would drop their locks.
        return true;
    }
    let open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    let (_open, wait) = CLOSED
        .wait_timeout_while(open, LOCK_WAIT, |open| {
            let held = open.contains_key(&id);
            #[cfg(test)]
            if held {
                WAITED_ON.lock().unwrap().push(id);
            }
            held
        })
        .unwrap_or_else(|e| e.into_inner());
    if wait.timed_out() {
        return true;
    }
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == HEADER)
}

/// How long [`has_header`] waits for the gateway's own connections on a file to close.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A file by identity (device and inode): SQLite's locks belong to the inode.
type FileId = (u64, u64);

fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// The files on which this process has connections open, with their count.
static OPEN: std::sync::Mutex<std::collections::BTreeMap<FileId, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());
/// The files on which this process holds long-lived connections ([`connect_database`]),
/// with their count: databases by construction.
static KNOWN: std::sync::Mutex<std::collections::BTreeMap<FileId, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());
/// Signalled whenever a connection closes.
static CLOSED: std::sync::Condvar = std::sync::Condvar::new();
/// The files [`has_header`] began to wait on, once per wait: tests wait on it instead of
/// sleeping.
#[cfg(test)]
static WAITED_ON: std::sync::Mutex<Vec<FileId>> = std::sync::Mutex::new(Vec::new());

/// A connection of the gateway's, known to [`has_header`] while it is open.
pub struct Db {
    conn: Option<Connection>,
    id: Option<FileId>,
    /// Registered in [`KNOWN`] too.
    known: bool,
}

/// Opens a connection to the database at `path`: the only way the gateway opens one, so
/// that no plain descriptor of the file closes while it is open (see [`has_header`]).
///
/// # Errors
/// SQLite's.
pub fn connect(path: &Path, flags: OpenFlags) -> rusqlite::Result<Db> {
    let id = std::fs::symlink_metadata(path).ok().map(|m| file_id(&m));
    if let Some(id) = id {
        *OPEN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default() += 1;
    }
    // Registered first: a failed open unregisters in the drop.
    let mut db = Db {
        conn: None,
        id,
        known: false,
    };
    db.conn = Some(Connection::open_with_flags(path, flags)?);
    Ok(db)
}

/// [`connect`] for a connection held open for good (the point-in-time stream's pins): the
/// file is known to be a database, so [`has_header`] answers at once instead of waiting
/// for it to close.
///
/// # Errors
/// SQLite's, and a file that is not a database.
pub fn connect_database(path: &Path, flags: OpenFlags) -> rusqlite::Result<Db> {
    let mut db = connect(path, flags)?;
    // A read of the schema proves the file is a database before it is vouched for.
    db.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })?;
    if let Some(id) = db.id {
        *KNOWN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default() += 1;
        db.known = true;
    }
    Ok(db)
}

impl std::ops::Deref for Db {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("an open connection")
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // Closed first (SQLite releases its locks), then unregistered.
        drop(self.conn.take());
        if let Some(id) = self.id {
            if self.known {
                let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(n) = known.get_mut(&id) {
                    *n -= 1;
                    if *n == 0 {
                        known.remove(&id);
                    }
                }
            }
            let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = open.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&id);
                    // No connection of the gateway's is left on the file, so none holds a
                    // lock that closing the `-shm` descriptors could drop.
                    SHM.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                }
            }
            drop(open);
            CLOSED.notify_all();
        }
    }
}

/// The `-shm` descriptors opened by [`Db::wal_locks`], by database: closed once
/// the last of the gateway's connections to the database closes, never before (closing a
/// descriptor drops every POSIX lock this process holds on the file).
static SHM: std::sync::Mutex<std::collections::BTreeMap<FileId, Vec<(FileId, std::fs::File)>>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// SQLite's WAL locks, as bytes of the `-shm` file (os_unix.c: `UNIX_SHM_BASE` is 120, then
/// the writer's lock, the checkpointer's, the recovery's and the readers').
const SHM_WRITER_LOCK: u64 = 120;
const SHM_CHECKPOINTER_LOCK: u64 = 121;

/// The length of the wal-index header at the start of the `-shm`: two copies of the WAL's
/// state (its frame count, salts, checksums), then the checkpoint's (frames copied into the
/// database, the readers' marks).
pub const WAL_INDEX_HEADER: usize = 136;

/// What other processes do with a WAL database, seen from outside: the exclusive locks they
/// hold, and the wal-index header as it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalLocks {
    /// Another process holds the writer's lock: a write transaction, or a FULL, RESTART or
    /// TRUNCATE checkpoint (which holds it while it runs, so that nothing commits meanwhile).
    pub writer: bool,
    /// Another process holds the checkpointer's lock: a checkpoint runs.
    pub checkpointer: bool,
    /// The first [`WAL_INDEX_HEADER`] bytes of the `-shm` (what they mean is read where
    /// the WAL's format is: `pitr::wal::WalIndex`).
    pub index: [u8; WAL_INDEX_HEADER],
}

impl Db {
    /// The WAL locks that other processes hold on the database at `path` (this
    /// connection's), read with `fcntl(F_GETLK)` on its `-shm`, which takes no lock and
    /// changes nothing, and the wal-index header. Locks of this process are not seen (POSIX
    /// reports only other processes' locks). The descriptor stays open until the last of the
    /// gateway's connections to the database closes.
    ///
    /// # Errors
    /// Opening the `-shm` (none: the database is not in WAL mode, or no connection has it
    /// open), reading it, and `fcntl`'s.
    pub fn wal_locks(&self, path: &Path) -> io::Result<WalLocks> {
        use std::os::unix::fs::FileExt;
        let Some(id) = self.id else {
            return Err(io::Error::other(
                "the database's file could not be identified",
            ));
        };
        let shm = Sidecar::Shm.of(path);
        let current = file_id(&std::fs::metadata(&shm)?);
        let mut all = SHM.lock().unwrap_or_else(|e| e.into_inner());
        let files = all.entry(id).or_default();
        let file = match files.iter().position(|(f, _)| *f == current) {
            Some(i) => &files[i].1,
            None => {
                // A new `-shm` (the application deleted and recreated it): the old
                // descriptor stays too, since a connection may still hold locks on it.
                files.push((current, std::fs::File::open(&shm)?));
                &files[files.len() - 1].1
            }
        };
        let held = |byte: u64| -> io::Result<bool> {
            let mut probe = rustix::process::Flock::from(rustix::process::FlockType::WriteLock);
            probe.start = byte;
            probe.length = 1;
            Ok(rustix::process::fcntl_getlk(file, &probe)?.is_some())
        };
        let mut index = [0u8; WAL_INDEX_HEADER];
        file.read_exact_at(&mut index, 0)?;
        Ok(WalLocks {
            writer: held(SHM_WRITER_LOCK)?,
            checkpointer: held(SHM_CHECKPOINTER_LOCK)?,
            index,
        })
    }
}

/// True for `<db>-wal`, `<db>-shm` and `<db>-journal` of a database among `databases` (zip
/// names).
pub(crate) fn is_sidecar(name: &[u8], databases: &HashSet<Vec<u8>>) -> bool {
    Sidecar::ALL.iter().any(|s| {
        name.strip_suffix(s.suffix().as_bytes())
            .is_some_and(|db| databases.contains(db))
    })
}

/// Checks that this build's SQLite can take snapshots (has the `sqlite_dbpage` table).
///
/// # Errors
/// A message saying what is missing and how to build it in.
pub fn check_support() -> Result<(), String> {
    let probe = Connection::open_in_memory().and_then(|c| {
        c.query_row("SELECT count(*) FROM sqlite_dbpage", [], |r| {
            r.get::<_, i64>(0)
        })
    });
    probe.map(|_| ()).map_err(|e| {
        format!(
            "this build's SQLite {} has no sqlite_dbpage table ({e}), which consistent \
             backups of live databases read; build with \
             LIBSQLITE3_FLAGS=SQLITE_ENABLE_DBPAGE_VTAB (.cargo/config.toml sets it for \
             cargo build, cargo install --path . and the Dockerfile)",
            rusqlite::version()
        )
    })
}

/// A database that cannot be read consistently: its path relative to the data directory
/// and SQLite's reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot read the SQLite database {path} consistently: {reason}")]
pub struct SnapshotError {
    pub path: String,
    pub reason: String,
}

impl SnapshotError {
    fn new(rel: &Path, e: &rusqlite::Error) -> Self {
        Self {
            path: rel.display().to_string(),
            reason: describe(e),
        }
    }

    /// A failure of the image itself, not reported by SQLite.
    fn because(rel: &Path, reason: String) -> Self {
        Self {
            path: rel.display().to_string(),
            reason,
        }
    }

    /// The snapshot error inside `e`, if that is what it is.
    pub fn find(e: &io::Error) -> Option<&SnapshotError> {
        e.get_ref().and_then(|inner| inner.downcast_ref())
    }
}

/// What the archive writer passes on; [`SnapshotError::find`] finds it again.
impl From<SnapshotError> for io::Error {
    fn from(e: SnapshotError) -> Self {
        io::Error::other(e)
    }
}

/// How often a snapshot tries again for a lock the application holds.
const LOCK_POLL: Duration = Duration::from_millis(1);

/// Runs `f` until it is not refused for a lock the application holds, or `deadline`
/// passes. Tries every [`LOCK_POLL`]: a rollback-journal application that commits
/// back to back leaves its database unlocked only between two commits, and SQLite's own
/// busy handler, whose waits grow to 100 ms, tries about 60 times in 5 s and can miss
/// every one of those gaps; polling every millisecond tries thousands of times.
fn until_unlocked<T>(
    deadline: std::time::Instant,
    mut f: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    use rusqlite::ffi::ErrorCode;
    loop {
        match f() {
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(LOCK_POLL);
            }
            other => return other,
        }
    }
}

/// SQLite's message, with what it means for a backup where it is not obvious.
fn describe(e: &rusqlite::Error) -> String {
    use rusqlite::ffi::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "database is locked (another connection holds it exclusively)".into()
        }
        _ => e.to_string(),
    }
}

/// How snapshots are taken.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotOptions {
    /// How long to wait for the application's locks.
    pub busy_timeout: Duration,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_millis(DEFAULT_BUSY_TIMEOUT_MS),
        }
    }
}

/// One database's snapshot: an open read transaction, or (rollback-journal databases and
/// those past [`MAX_HELD`]) a checked database whose transaction starts when it is read.
pub struct Snapshot {
    rel: PathBuf,
    path: PathBuf,
    opts: SnapshotOptions,
    /// The connection, inside its read transaction.
    open: Option<Open>,
}

struct Open {
    conn: Db,
    /// Pages in the snapshot and their size.
    pages: u64,
    page_size: u64,
    wal: bool,
}

impl Snapshot {
    /// Opens the database `root/rel` and starts its read transaction, checking that it is
    /// a readable SQLite database. A rollback-journal database is released again at once
    /// (see the module docs); so is any database when `hold` is false.
    ///
    /// # Errors
    /// The database is locked past the busy timeout, damaged, or not SQLite.
    pub fn open(
        root: &Path,
        rel: &Path,
        opts: SnapshotOptions,
        hold: bool,
    ) -> Result<Self, SnapshotError> {
        let mut snap = Self {
            rel: rel.to_path_buf(),
            path: root.join(rel),
            opts,
            open: None,
        };
        let open = snap.begin()?;
        if hold && open.wal {
            snap.open = Some(open);
        }
        Ok(snap)
    }

    /// True while its read transaction is open.
    pub fn is_held(&self) -> bool {
        self.open.is_some()
    }

    fn begin(&self) -> Result<Open, SnapshotError> {
        let err = |e: rusqlite::Error| SnapshotError::new(&self.rel, &e);
        let conn = connect(
            &self.path,
            // NOFOLLOW: the walk never follows links, and neither does a file swapped for
            // one since.
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(err)?;
        // Locks are waited for by `until_unlocked`, not by SQLite's busy handler.
        conn.busy_timeout(Duration::ZERO).map_err(err)?;
        let deadline = std::time::Instant::now() + self.opts.busy_timeout;
        // Pragmas that read the schema take the lock for a moment.
        let mode: String = until_unlocked(deadline, || {
            conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
            conn.pragma_update(None, "query_only", true)?;
            conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
            conn.pragma_query_value(None, "journal_mode", |r| r.get(0))
        })
        .map_err(err)?;
        conn.execute_batch("BEGIN").map_err(err)?;
        // Reading the schema starts the read transaction (the snapshot is fixed here) and
        // checks that the file really is a database.
        until_unlocked(deadline, || {
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map_err(err)?;
        let pages: i64 = conn
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .map_err(err)?;
        let page_size: i64 = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .map_err(err)?;
        Ok(Open {
            conn,
            pages: u64::try_from(pages).unwrap_or(0),
            page_size: u64::try_from(page_size).unwrap_or(0),
            wal: mode.eq_ignore_ascii_case("wal"),
        })
    }

    /// Runs `f` on a reader of the snapshot's page images (the database file as of the
    /// snapshot), then ends the read transaction. A database not held yet has its
    /// transaction started here.
    ///
    /// # Errors
    /// SQLite's errors while reading ([`SnapshotError`] inside the `io::Error`, with the
    /// path), and `f`'s.
    pub fn read<T>(mut self, f: impl FnOnce(&mut dyn Read) -> io::Result<T>) -> io::Result<T> {
        let open = match self.open.take() {
            Some(open) => open,
            None => self.begin()?,
        };
        let out = read_image(&open.conn, &self.rel, open.page_size, open.pages, f)?;
        // Ends the read transaction (and with it a rollback-journal database's lock).
        drop(open);
        Ok(out)
    }
}

/// Runs `f` on a reader of the page images of the database `conn` has open, in its read
/// transaction (`sqlite_dbpage`, in page order): the database file as of its snapshot.
/// Every page must have `page_size` bytes, and `pages` of them must be read (`f` reads to
/// the end).
///
/// # Errors
/// SQLite's errors while reading ([`SnapshotError`] inside the `io::Error`, with `rel`), a
/// page of another size or count, and `f`'s.
pub fn read_image<T>(
    conn: &Connection,
    rel: &Path,
    page_size: u64,
    pages: u64,
    f: impl FnOnce(&mut dyn Read) -> io::Result<T>,
) -> io::Result<T> {
    let err = |e: rusqlite::Error| io::Error::from(SnapshotError::new(rel, &e));
    let mut stmt = conn
        .prepare("SELECT data FROM sqlite_dbpage ORDER BY pgno")
        .map_err(err)?;
    let mut reader = PageReader {
        rows: stmt.query([]).map_err(err)?,
        page: Vec::new(),
        pos: 0,
        read: 0,
        page_size,
        rel,
    };
    let out = f(&mut reader)?;
    if reader.read != pages {
        let reason = format!("{} pages read of {pages}", reader.read);
        return Err(SnapshotError::because(rel, reason).into());
    }
    Ok(out)
}

/// The page images of a read transaction as one byte stream.
struct PageReader<'s> {
    rows: rusqlite::Rows<'s>,
    /// The current page when the caller's buffer could not take it whole.
    page: Vec<u8>,
    pos: usize,
    read: u64,
    /// Every page has this size: anything else is not an image of the database.
    page_size: u64,
    rel: &'s Path,
}

impl Read for PageReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.page.len() {
            let err = |e: rusqlite::Error| io::Error::from(SnapshotError::new(self.rel, &e));
            let Some(row) = self.rows.next().map_err(err)? else {
                return Ok(0);
            };
            let data = row
                .get_ref(0)
                .and_then(|v| v.as_blob().map_err(rusqlite::Error::from))
                .map_err(err)?;
            if data.len() as u64 != self.page_size {
                let reason = format!(
                    "page {} has {} bytes, not {}",
                    self.read + 1,
                    data.len(),
                    self.page_size
                );
                return Err(SnapshotError::because(self.rel, reason).into());
            }
            self.read += 1;
            if buf.len() >= data.len() {
                buf[..data.len()].copy_from_slice(data);
                return Ok(data.len());
            }
            self.page.clear();
            self.page.extend_from_slice(data);
            self.pos = 0;
        }
        let n = buf.len().min(self.page.len() - self.pos);
        buf[..n].copy_from_slice(&self.page[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The snapshots of one create, by zip name, and which names are sidecars to leave out.
pub struct Snapshots {
    root: PathBuf,
    /// `None`: databases are archived as plain files (the benchmark's ceilings only).
    opts: Option<SnapshotOptions>,
    pending: HashMap<Vec<u8>, Snapshot>,
    /// Zip names of every database met so far.
    databases: HashSet<Vec<u8>>,
}

impl Snapshots {
    /// Databases are read as plain files: for measuring the rest of the pipeline alone,
    /// never for a backup.
    pub fn disabled() -> Self {
        Self {
            root: PathBuf::new(),
            opts: None,
            pending: HashMap::new(),
            databases: HashSet::new(),
        }
    }

    /// Opens every database of `databases` (relative to `root`), WAL databases first held
    /// in their read transactions (up to [`MAX_HELD`]), before anything is streamed.
    ///
    /// # Errors
    /// The first database that cannot be read consistently; every transaction opened so
    /// far is released.
    pub fn open(
        root: &Path,
        databases: &[PathBuf],
        opts: SnapshotOptions,
    ) -> Result<Self, SnapshotError> {
        // NOFOLLOW refuses a path with a link anywhere in it: resolve the data directory's
        // own path (which may well lie behind one, `/data -> /mnt/volume`) once, so that only
        // links inside it, which the walk never follows either, are refused.
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let root = root.as_path();
        let mut out = Self {
            root: root.to_path_buf(),
            opts: Some(opts),
            pending: HashMap::new(),
            databases: HashSet::new(),
        };
        let mut held = 0;
        for rel in databases {
            let snap = Snapshot::open(root, rel, opts, held < MAX_HELD)?;
            held += usize::from(snap.is_held());
            let name = super::meta::zip_name(rel);
            out.databases.insert(name.clone());
            out.pending.insert(name, snap);
        }
        Ok(out)
    }

    /// Snapshots held in a read transaction right now.
    pub fn held(&self) -> usize {
        self.pending.values().filter(|s| s.is_held()).count()
    }

    /// The snapshot of the database archived as `name`, if it is one known from the start.
    pub(crate) fn take(&mut self, name: &[u8]) -> Option<Snapshot> {
        self.pending.remove(name)
    }

    /// False when databases are read as plain files ([`Snapshots::disabled`]).
    pub(crate) fn enabled(&self) -> bool {
        self.opts.is_some()
    }

    /// For a file that was not a database when the create started but starts with SQLite's
    /// header now: its snapshot, taken now (only when [`Snapshots::enabled`]).
    ///
    /// # Errors
    /// As [`Snapshot::open`], or snapshots are disabled.
    pub(crate) fn late(&mut self, name: &[u8]) -> Result<Snapshot, SnapshotError> {
        let rel = super::meta::rel_path(name);
        let Some(opts) = self.opts else {
            return Err(SnapshotError::because(
                &rel,
                "snapshots are disabled".into(),
            ));
        };
        self.databases.insert(name.to_vec());
        Snapshot::open(&self.root, &rel, opts, true)
    }

    /// True for `<db>-wal`, `<db>-shm` and `<db>-journal` of a database met so far (the
    /// walk reaches a database before its sidecars: they sort after its name).
    pub(crate) fn is_sidecar(&self, name: &[u8]) -> bool {
        is_sidecar(name, &self.databases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_db(path: &Path) -> Connection {
        let c = Connection::open(path).unwrap();
        c.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get::<_, String>(0))
            .unwrap();
        c.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
             INSERT INTO t(v) SELECT randomblob(300) FROM n;",
        )
        .unwrap();
        c
    }

    fn image(snap: Snapshot) -> Vec<u8> {
        snap.read(|r| {
            let mut out = Vec::new();
            // Small reads, so that pages are cut across calls too.
            let mut buf = [0u8; 1000];
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    return Ok(out);
                }
                out.extend_from_slice(&buf[..n]);
            }
        })
        .unwrap()
    }

    fn count_rows(path: &Path) -> i64 {
        let c = Connection::open(path).unwrap();
        let ok: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn the_header_of_a_database_is_read_only_once_the_gateways_connections_to_it_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (db, other) = (dir.path().join("a.db"), dir.path().join("b.db"));
        drop(wal_db(&db));
        drop(wal_db(&other));
        let conn = connect(&db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let meta = |p: &Path| std::fs::symlink_metadata(p).unwrap();
        // Another file is not held up.
        assert!(has_header(&other, &meta(&other)));
        let reader = {
            let (db, m) = (db.clone(), meta(&db));
            std::thread::spawn(move || has_header(&db, &m))
        };
        let id = file_id(&meta(&db));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !WAITED_ON.lock().unwrap().contains(&id) {
            assert!(
                std::time::Instant::now() < deadline,
                "the reader never waited for the open connection"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!reader.is_finished(), "read while a connection was open");
        drop(conn);
        assert!(reader.join().unwrap());
        assert!(!OPEN.lock().unwrap().contains_key(&file_id(&meta(&db))));
    }

    #[test]
    fn a_database_held_open_for_good_is_vouched_for_without_a_wait_or_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("held.db");
        drop(wal_db(&db));
        let meta = std::fs::symlink_metadata(&db).unwrap();
        let held = connect_database(&db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let started = std::time::Instant::now();
        assert!(has_header(&db, &meta));
        assert!(!WAITED_ON.lock().unwrap().contains(&file_id(&meta)));
        assert!(started.elapsed() < LOCK_WAIT);
        drop(held);
        assert!(!KNOWN.lock().unwrap().contains_key(&file_id(&meta)));
        // A file that is not a database is never vouched for.
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, b"not a database, but long enough to have a header").unwrap();
        assert!(connect_database(&text, OpenFlags::SQLITE_OPEN_READ_ONLY).is_err());
        let meta = std::fs::symlink_metadata(&text).unwrap();
        assert!(!KNOWN.lock().unwrap().contains_key(&file_id(&meta)));
    }

    #[test]
    fn this_build_has_the_dbpage_table() {
        check_support().unwrap();
    }

    #[test]
    fn a_held_snapshot_ignores_later_commits_and_includes_pages_only_in_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let app = wal_db(&dir.path().join("app.db"));
        // Rows committed to the WAL but not checkpointed are part of the snapshot...
        app.execute("INSERT INTO t(v) VALUES (x'01')", []).unwrap();
        let snap = Snapshot::open(
            dir.path(),
            Path::new("app.db"),
            SnapshotOptions::default(),
            true,
        )
        .unwrap();
        assert!(snap.is_held());
        // ...rows committed after it began are not, checkpoint or not.
        app.execute("DELETE FROM t WHERE id <= 1000", []).unwrap();
        app.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .unwrap();

        let bytes = image(snap);

        let out = dir.path().join("restored.db");
        std::fs::write(&out, &bytes).unwrap();
        assert_eq!(count_rows(&out), 2001);
        assert_eq!(bytes.len() % 4096, 0);
    }

    #[test]
    fn a_rollback_journal_database_is_checked_then_released_until_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let app = Connection::open(dir.path().join("j.db")).unwrap();
        app.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
            .unwrap();
        let snap = Snapshot::open(
            dir.path(),
            Path::new("j.db"),
            SnapshotOptions::default(),
            true,
        )
        .unwrap();
        assert!(!snap.is_held());
        // Not locked: the application commits at once.
        app.execute("INSERT INTO t VALUES (2)", []).unwrap();

        let bytes = image(snap);

        let out = dir.path().join("restored.db");
        std::fs::write(&out, &bytes).unwrap();
        assert_eq!(count_rows(&out), 2);
    }

    #[test]
    fn a_file_with_the_header_but_no_database_behind_it_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = HEADER.to_vec();
        bytes.extend(std::iter::repeat_n(0xA5u8, 8192));
        std::fs::write(dir.path().join("fake.db"), bytes).unwrap();

        let err = Snapshot::open(
            dir.path(),
            Path::new("fake.db"),
            SnapshotOptions::default(),
            true,
        )
        .err()
        .unwrap();

        assert_eq!(err.path, "fake.db");
        assert!(
            err.reason.contains("not a database") || err.reason.contains("malformed"),
            "{err}"
        );
    }

    #[test]
    fn an_exclusively_locked_database_fails_after_the_busy_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let app = wal_db(&dir.path().join("x.db"));
        app.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .unwrap();
        app.execute("INSERT INTO t(v) VALUES (x'02')", []).unwrap();
        let opts = SnapshotOptions {
            busy_timeout: Duration::from_millis(100),
        };

        let err = Snapshot::open(dir.path(), Path::new("x.db"), opts, true)
            .err()
            .unwrap();

        assert_eq!(err.path, "x.db");
        assert!(err.reason.contains("locked"), "{err}");
    }

    #[test]
    fn past_max_held_databases_wait_unopened_and_every_one_still_reads_whole() {
        let dir = tempfile::tempdir().unwrap();
        let rels: Vec<PathBuf> = (0..MAX_HELD + 3)
            .map(|i| PathBuf::from(format!("t{i:03}.db")))
            .collect();
        for rel in &rels {
            let c = Connection::open(dir.path().join(rel)).unwrap();
            c.pragma_update(None, "journal_mode", "wal").unwrap();
            c.execute_batch("CREATE TABLE t(v); INSERT INTO t VALUES (1);")
                .unwrap();
        }

        let mut snaps = Snapshots::open(dir.path(), &rels, SnapshotOptions::default()).unwrap();

        assert_eq!(snaps.held(), MAX_HELD);
        for rel in &rels {
            let snap = snaps.take(rel.to_str().unwrap().as_bytes()).unwrap();
            let bytes = image(snap);
            assert!(starts_with_header(&bytes) && bytes.len() >= 4096, "{rel:?}");
        }
        assert_eq!(snaps.held(), 0);
    }

    #[test]
    fn a_data_directory_behind_a_link_works_and_a_linked_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        drop(wal_db(&real.join("a.db")));
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(real.join("a.db"), real.join("b.db")).unwrap();
        let opts = SnapshotOptions::default();

        let via_link = Snapshots::open(&dir.path().join("link"), &[PathBuf::from("a.db")], opts);
        let linked_db = Snapshots::open(&real, &[PathBuf::from("b.db")], opts);

        assert_eq!(via_link.unwrap().held(), 1);
        let err = linked_db.err().unwrap();
        assert_eq!(err.path, "b.db");
    }

    #[test]
    fn sidecars_of_known_databases_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        drop(wal_db(&dir.path().join("sub/a.db")));
        let snaps = Snapshots::open(
            dir.path(),
            &[PathBuf::from("sub/a.db")],
            SnapshotOptions::default(),
        )
        .unwrap();
        for name in ["sub/a.db-wal", "sub/a.db-shm", "sub/a.db-journal"] {
            assert!(snaps.is_sidecar(name.as_bytes()), "{name}");
        }
        for name in ["sub/a.db", "a.db-wal", "sub/b.db-wal", "sub/a.db-walx"] {
            assert!(!snaps.is_sidecar(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn a_database_goes_with_its_sidecars_each_tried_whatever_the_others_do() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data.db");
        for path in [db.clone(), Sidecar::Wal.of(&db), Sidecar::Journal.of(&db)] {
            std::fs::write(path, b"x").unwrap();
        }
        // The `-shm` cannot be removed as a file: an error, and the rest still go.
        std::fs::create_dir(Sidecar::Shm.of(&db)).unwrap();
        assert!(remove_with_sidecars(&db).is_err());
        for path in [db.clone(), Sidecar::Wal.of(&db), Sidecar::Journal.of(&db)] {
            assert!(!path.exists(), "{}", path.display());
        }
        std::fs::remove_dir(Sidecar::Shm.of(&db)).unwrap();
        // Nothing there is no error.
        remove_with_sidecars(&db).unwrap();
        assert_eq!(
            Sidecar::ALL.map(|s| s.of(&db).file_name().unwrap().to_owned()),
            ["data.db-wal", "data.db-shm", "data.db-journal"].map(std::ffi::OsString::from)
        );
    }
}
