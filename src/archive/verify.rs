//! Verifying an archive without restoring it: the pass a restore makes over a checked
//! [`Plan`] (every entry's local header, data, sizes and CRC-32, through the same
//! [`Decoder`]), with the data thrown away instead of written, except for SQLite database
//! images: each goes to a scratch file and is opened with `PRAGMA integrity_check`, so that
//! a database that would restore byte for byte but could not be read is found too.
//!
//! It owns no store access and no bookkeeping ([`crate::verify`] reads the archive and
//! keeps the results). The scratch file is the only thing it writes, one at a time, after a
//! free-space check, and it is removed whatever happens.

use crate::archive::check::Plan;
use crate::archive::error::ArchiveError;
use crate::archive::extract::{Decoder, corrupt};
use crate::archive::sqlite;
use crate::archive::zip::Entry;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Free space kept on top of a database image written to the scratch directory.
const DISK_MARGIN: u64 = 64 << 20;
/// Most lines of `integrity_check`'s answer kept in the error.
const INTEGRITY_LINES: u32 = 5;

/// What a verify went through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Entries checked (files and directories).
    pub entries: u64,
    /// Uncompressed bytes checked.
    pub bytes: u64,
    /// The database images opened with `integrity_check`, by entry name.
    pub databases: Vec<String>,
}

/// Checks the data of every entry of `plan` in `archive` (its bytes from offset `start`,
/// in order), database images with `integrity_check` in scratch files under `scratch`.
/// `on_bytes` is told of the bytes checked as they go (for the progress).
///
/// # Errors
/// The first entry whose data is not what the central directory says (named), a database
/// image that fails `integrity_check` (named, with SQLite's first lines), read errors, or
/// too little free space in `scratch` for a database image.
pub fn verify(
    plan: &Plan,
    archive: &mut impl Read,
    start: u64,
    scratch: &Path,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<Tally, ArchiveError> {
    let mut checks = Checks::default();
    let streamed = stream(plan, archive, start, scratch, on_bytes, &mut checks);
    // A database whose check fails comes before any entry the stream failed on after it:
    // its damage is the answer, not a later read error (which would make it inconclusive).
    checks.wait()?;
    streamed
}

/// [`verify`]'s pass over the entries, the checks of the database images left running in
/// `checks`.
fn stream(
    plan: &Plan,
    archive: &mut impl Read,
    start: u64,
    scratch: &Path,
    on_bytes: &mut dyn FnMut(u64),
    checks: &mut Checks,
) -> Result<Tally, ArchiveError> {
    let mut decoder = Decoder::new();
    let mut tally = Tally::default();
    let mut pos = start;
    for item in &plan.items {
        let e = &item.entry;
        if e.offset < pos {
            return Err(corrupt(e, "overlapping entries"));
        }
        crate::archive::bytes::skip(archive, e.offset - pos)?;
        pos = e.offset + local_header(archive, e)?;
        if !item.is_dir {
            let mut image = Image::new(scratch, e, checks);
            decoder.entry(archive, e, &mut |data| {
                on_bytes(data.len() as u64);
                image.write(data)
            })?;
            if image.finish()? {
                tally.databases.push(e.name_lossy());
            }
            pos += e.compressed;
            tally.bytes += e.uncompressed;
        }
        tally.entries += 1;
    }
    Ok(tally)
}

/// The `integrity_check` of the last database image, on a thread of its own while the
/// stream goes on: checking a large image takes about as long as reading the whole archive
/// (8 s for 800 MiB here), so it runs beside the rest of the archive instead of after it.
/// One at a time: the next image is written only once the previous one's check is done
/// and its scratch file removed, so the free-space check of each image stands.
#[derive(Default)]
struct Checks {
    running: Option<std::thread::JoinHandle<Result<(), ArchiveError>>>,
}

impl Checks {
    /// Checks `image` (removed afterwards) in the background.
    fn start(&mut self, image: Scratch, entry: &Entry) -> Result<(), ArchiveError> {
        self.wait()?;
        let entry = entry.clone();
        let thread = std::thread::Builder::new()
            .name("verify-db".into())
            .spawn(move || {
                // SQLite's own error (a page it cannot even parse) is a failed check too.
                let problems =
                    integrity_problems(&image.path).unwrap_or_else(|e| Some(e.to_string()));
                drop(image);
                match problems {
                    None => Ok(()),
                    Some(lines) => Err(corrupt(
                        &entry,
                        &format!("the database image fails integrity_check: {lines}"),
                    )),
                }
            })?;
        self.running = Some(thread);
        Ok(())
    }

    /// Waits for the running check: its failure, if it failed.
    fn wait(&mut self) -> Result<(), ArchiveError> {
        match self.running.take() {
            None => Ok(()),
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(ArchiveError::Io(io::Error::other("the check panicked")))),
        }
    }
}

impl Drop for Checks {
    /// A verify that stops early still waits for its check, so that no scratch file
    /// outlives it.
    fn drop(&mut self) {
        let _ = self.wait();
    }
}

/// Reads the local header of `e` and returns its length. Besides what a restore checks
/// (the signature and the lengths), its name and method must be those of the central
/// directory: a restore trusts the directory, but a header that disagrees is damage.
fn local_header(archive: &mut impl Read, e: &Entry) -> Result<u64, ArchiveError> {
    use crate::archive::zip::spec::LOCAL_HEADER_LEN;
    let mut header = [0u8; LOCAL_HEADER_LEN as usize];
    archive
        .read_exact(&mut header)
        .map_err(|_| corrupt(e, "truncated local header"))?;
    let len =
        crate::archive::zip::reader::local_header_len(&header).map_err(|why| corrupt(e, why))?;
    let method = u16::from_le_bytes([header[8], header[9]]);
    let name_len = usize::from(u16::from_le_bytes([header[26], header[27]]));
    let mut name = vec![0u8; name_len];
    archive
        .read_exact(&mut name)
        .map_err(|_| corrupt(e, "truncated local header"))?;
    if name != e.raw_name {
        return Err(corrupt(e, "the local header names another entry"));
    }
    if method != e.method {
        return Err(corrupt(
            e,
            "the local header's method is not the directory's",
        ));
    }
    crate::archive::bytes::skip(archive, len - LOCAL_HEADER_LEN - name_len as u64)?;
    Ok(len)
}

/// An entry's data on its way through: a SQLite database image goes to a scratch file
/// (known by its first 16 bytes), anything else nowhere.
struct Image<'a> {
    scratch: &'a Path,
    entry: &'a Entry,
    checks: &'a mut Checks,
    /// The first bytes, until there are enough to tell.
    head: Vec<u8>,
    state: State,
}

enum State {
    Undecided,
    Plain,
    Database(Scratch),
}

impl<'a> Image<'a> {
    fn new(scratch: &'a Path, entry: &'a Entry, checks: &'a mut Checks) -> Self {
        Self {
            scratch,
            entry,
            checks,
            head: Vec::new(),
            state: State::Undecided,
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<(), ArchiveError> {
        match &mut self.state {
            State::Plain => Ok(()),
            State::Database(file) => Ok(file.file.write_all(data)?),
            State::Undecided => {
                let taken = (sqlite::HEADER.len() - self.head.len()).min(data.len());
                self.head.extend_from_slice(&data[..taken]);
                if self.head.len() < sqlite::HEADER.len() {
                    return Ok(());
                }
                if !sqlite::starts_with_header(&self.head)
                    || self.entry.uncompressed < sqlite::MIN_FILE_LEN
                {
                    self.state = State::Plain;
                    return Ok(());
                }
                // One image on disk at a time (see [`Checks`]).
                self.checks.wait()?;
                // The header may have come in pieces: all of it goes first.
                let mut file = Scratch::create(self.scratch, self.entry)?;
                file.file.write_all(&self.head)?;
                file.file.write_all(&data[taken..])?;
                self.state = State::Database(file);
                Ok(())
            }
        }
    }

    /// Starts the `integrity_check` of a database image ([`Checks`]). True when the entry
    /// was one.
    fn finish(self) -> Result<bool, ArchiveError> {
        let State::Database(scratch) = self.state else {
            return Ok(false);
        };
        // No fsync: SQLite reads the image back through the page cache, and the file is
        // removed after the check (syncing 800 MiB cost seconds for nothing).
        self.checks.start(scratch, self.entry)?;
        Ok(true)
    }
}

/// A database image in the scratch directory, removed (with any `-wal`, `-shm` or
/// `-journal` SQLite made beside it) when dropped.
struct Scratch {
    path: PathBuf,
    file: std::fs::File,
}

impl Scratch {
    fn create(dir: &Path, e: &Entry) -> Result<Self, ArchiveError> {
        crate::util::fsutil::create_private_dir_all(dir)?;
        let available = rustix::fs::statvfs(dir)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
            .map_err(io::Error::from)?;
        if e.uncompressed.saturating_add(DISK_MARGIN) > available {
            // The machine's limit, not the archive's fault: an I/O error (inconclusive).
            return Err(ArchiveError::Io(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "not enough free disk space to check the database {:?}: it needs {} \
                     bytes, {available} are available",
                    e.name_lossy(),
                    e.uncompressed
                ),
            )));
        }
        let path = dir.join(format!("{}.db", crate::util::fsutil::random_string(12)));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(&path)?;
        Ok(Self { path, file })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = super::sqlite::remove_with_sidecars(&self.path);
    }
}

/// `None` when `PRAGMA integrity_check` answers `ok`, else its first lines. The image is
/// untrusted: its schema's functions are not run with side effects (`trusted_schema`).
fn integrity_problems(path: &Path) -> rusqlite::Result<Option<String>> {
    let db = sqlite::connect(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    db.execute_batch("PRAGMA trusted_schema = OFF")?;
    let lines = {
        let mut stmt = db.prepare(&format!("PRAGMA integrity_check({INTEGRITY_LINES})"))?;
        stmt.query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?
    };
    Ok((lines != ["ok"]).then(|| lines.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small database image, and its entry in an archive.
    fn database() -> (Vec<u8>, Entry) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.db");
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")
            .unwrap();
        drop(db);
        let bytes = std::fs::read(&path).unwrap();
        let zip = crate::archive::test_data::zip(&[("data.db", &bytes)]);
        let (_, mut entries) = crate::archive::zip::reader::index(&zip).unwrap();
        (bytes, entries.remove(0))
    }

    /// Reads `inner` until `left` bytes are read, then fails as a store read would.
    struct FailAfter<R> {
        inner: R,
        left: usize,
    }

    impl<R: Read> Read for FailAfter<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::other("the store went away"));
            }
            let n = buf.len().min(self.left);
            let n = self.inner.read(&mut buf[..n])?;
            self.left -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_damaged_database_is_the_answer_even_when_a_later_entry_cannot_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.db");
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(
            "CREATE TABLE t(x TEXT); CREATE INDEX t_x ON t(x);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
             INSERT INTO t SELECT printf('row %d', i) FROM n;",
        )
        .unwrap();
        drop(db);
        let mut bytes = std::fs::read(&path).unwrap();
        // Damage the last pages (the index's), keeping the header: a valid-looking image
        // that integrity_check refuses.
        let len = bytes.len();
        for b in &mut bytes[len - 3 * 4096..len - 4096] {
            *b ^= 0x5a;
        }
        let tail = crate::archive::test_data::noise(256 << 10, 7);
        let zip = crate::archive::test_data::zip(&[("data.db", &bytes), ("z.bin", &tail)]);
        let (dir_rec, entries) = crate::archive::zip::reader::index(&zip).unwrap();
        let plan = crate::archive::check::check_entries(
            entries,
            dir_rec.offset,
            &crate::archive::check::Limits::default(),
            &[],
        )
        .unwrap();
        let z_offset = plan.items[1].entry.offset;
        // The store fails in the middle of the entry after the database.
        let mut archive = FailAfter {
            inner: &zip[..],
            left: usize::try_from(z_offset).unwrap() + 1000,
        };
        let scratch = tempfile::tempdir().unwrap();
        let err = verify(&plan, &mut archive, 0, scratch.path(), &mut |_| {}).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("data.db") && text.contains("integrity_check"),
            "{text}"
        );
        assert!(!matches!(err, ArchiveError::Io(_)), "{err:?}");
        assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_database_whose_header_arrives_in_pieces_is_checked_whole() {
        let (bytes, entry) = database();
        let scratch = tempfile::tempdir().unwrap();
        for piece in [1, 7, 15, 16, 17, 4096] {
            let mut checks = Checks::default();
            let mut image = Image::new(scratch.path(), &entry, &mut checks);
            for chunk in bytes.chunks(piece) {
                image.write(chunk).unwrap();
            }
            assert!(image.finish().unwrap(), "pieces of {piece} bytes");
            checks.wait().unwrap();
        }
        assert_eq!(
            std::fs::read_dir(scratch.path()).unwrap().count(),
            0,
            "every scratch file is removed"
        );
    }
}
