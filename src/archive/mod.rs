//! Zip archives of a data directory: [`tree`] walks and surveys the directory, [`sqlite`]
//! gives each SQLite database's consistent image, [`write`] and [`parallel`] make the archive
//! (streaming, Deflate or Stored per entry, data descriptors, Zip64), [`read`] checks and
//! extracts it for a restore, [`outfile`] writes the restored files, and [`spec`] holds the
//! format constants that writer and reader share.
//!
//! Why not async_zip's writer: in 0.0.19 its streaming entry writer ignores the requested
//! Deflate level, writes 32-bit data descriptors with saturated sizes for every entry, and
//! its own streaming reader cannot read Stored entries with data descriptors. The format is
//! small, so the gateway writes it itself (the layout Go's `archive/zip`, and so PocketBase,
//! reads and writes) and the tests read every archive back with independent readers
//! (async_zip's central-directory reader, Python's `zipfile`, Info-ZIP `unzip -t`).

pub mod outfile;
pub mod parallel;
pub mod read;
pub mod spec;
pub mod sqlite;
pub mod tree;
pub mod write;

pub use sqlite::{SnapshotError, SnapshotOptions, Snapshots};
pub use tree::{Exclude, Survey, survey};
pub use write::{WriteOptions, write_dir};

/// Helpers shared by the archive modules' unit tests.
#[cfg(test)]
pub(crate) mod test_data {
    /// Xorshift bytes: incompressible, reproducible, different per seed.
    pub fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }
}
