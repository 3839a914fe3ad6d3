//! Zip archives of a data directory, in one-way layers (each uses only those above it in
//! this list):
//! - [`bytes`]: little-endian integers and MS-DOS times, both directions;
//! - [`meta`]: an entry's name, mode and time ([`meta::EntryMeta`]), and zip names of paths;
//! - [`zip`]: the format: its constants, the writer, the end records and central directory;
//! - [`error`]: [`ArchiveError`], why an archive is refused;
//! - [`sqlite`]: consistent snapshots of the SQLite databases of a live data directory;
//! - [`tree`]: the one walk of the data directory in archive order, the survey, exclusions;
//! - [`compress`]: which data is worth Deflating, and the Deflate of one chunk;
//! - [`create`]: a data directory into a zip, compressed on all cores;
//! - [`check`]: the limits and checks every entry passes before a restore, the [`Plan`];
//! - [`outfile`]: the restored files, written with direct I/O when large;
//! - [`extract`]: a checked plan out of a zip streamed from the store.
//!
//! Why not async_zip's writer: in 0.0.19 its streaming entry writer ignores the requested
//! Deflate level, writes 32-bit data descriptors with saturated sizes for every entry, and
//! its own streaming reader cannot read Stored entries with data descriptors. The format is
//! small, so the gateway writes it itself (the layout Go's `archive/zip`, and so PocketBase,
//! reads and writes) and the tests read every archive back with independent readers
//! (async_zip's central-directory reader, Python's `zipfile`, Info-ZIP `unzip -t`).

pub mod bytes;
pub mod check;
pub mod compress;
pub mod create;
pub mod error;
pub mod extract;
pub mod meta;
pub mod outfile;
pub mod reuse;
pub mod sqlite;
pub mod tree;
pub mod verify;
pub mod zip;

pub use check::{Limits, Plan};
pub use create::{WriteOptions, write_dir};
pub use error::ArchiveError;
pub use sqlite::{SnapshotError, SnapshotOptions, Snapshots};
pub use tree::{Exclude, Survey, survey};

#[cfg(test)]
mod tests;

/// Helpers shared by the archive modules' unit tests.
#[cfg(test)]
pub(crate) mod test_data {
    use super::meta::{EntryMeta, Identity};
    use super::zip::ZipWriter;

    /// The modification and change time of every entry of [`zip`] (2023-11-14).
    pub const TIME: i64 = 1_700_000_000_000_000_000;
    /// When the create that wrote [`zip`] began reading: a second after [`TIME`].
    pub const READ_FROM: i64 = TIME + 1_000_000_000;

    /// The identity [`zip`] records for its `i`-th entry (0-based): inode `i + 1`.
    pub fn identity(i: usize) -> Identity {
        Identity {
            ctime_ns: TIME,
            dev: 1,
            ino: i as u64 + 1,
        }
    }

    /// What a restore does with a whole archive held in memory: index, check (default
    /// limits), extract into `dest`, with progress counted in `progress`. Returns the plan.
    pub fn restore_into(
        bytes: &[u8],
        dest: &std::path::Path,
        progress: Option<&crate::ops::progress::Progress>,
    ) -> Result<super::Plan, super::ArchiveError> {
        if bytes.len() < 22 {
            return Err(super::ArchiveError::NotZip("too short".into()));
        }
        let (dir, entries) = super::zip::reader::index(bytes)?;
        let plan =
            super::check::check_entries(entries, dir.offset, &super::Limits::default(), &[])?;
        super::extract::extract(&plan, &mut &bytes[..], 0, dest, progress, &mut |_| Ok(()))?;
        Ok(plan)
    }

    /// Bytes from a [`rand::rngs::StdRng`] seeded with `seed`: incompressible,
    /// reproducible, different per seed.
    pub fn noise(len: usize, seed: u64) -> Vec<u8> {
        use rand::{RngCore, SeedableRng};
        let mut out = vec![0; len];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut out);
        out
    }

    /// A zip of `files` (name, data; a name ending in `/` is a directory), each file
    /// Deflated at level 6 when that makes it smaller, with mode 0640 (directories 0755),
    /// the times [`TIME`], the identities [`identity`] and read from [`READ_FROM`].
    pub fn zip(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = ZipWriter::new(Vec::new()).reading_from(crate::util::fsutil::FsNow {
            ns: READ_FROM,
            dev: 1,
        });
        let mut deflate = flate2::Compress::new(flate2::Compression::new(6), false);
        let meta = |i: usize, name: &str, mode| EntryMeta {
            name: name.as_bytes().to_vec(),
            mode,
            mtime_ns: TIME,
            identity: identity(i),
        };
        for (i, (name, data)) in files.iter().enumerate() {
            if let Some(dir) = name.strip_suffix('/') {
                w.add_dir(&meta(i, dir, 0o755)).unwrap();
            } else {
                let (method, stored) =
                    super::compress::smaller(&mut deflate, 6, data.to_vec()).unwrap();
                let entry = w.start_file(meta(i, name, 0o640), method).unwrap();
                w.write_data(&stored).unwrap();
                w.finish_file(entry, crc32fast::hash(data), data.len() as u64)
                    .unwrap();
            }
        }
        w.finish().unwrap().0
    }
}
