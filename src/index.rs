//! The index of a stored archive: its end records and central directory, read with ranged
//! reads (the last 256 KiB first, which usually hold both), for a restore's checks and for
//! an incremental create's manifest.

use crate::archive::ArchiveError;
use crate::archive::zip::{DirLookup, Directory, Entry, reader};
use crate::storage::{BackupStore, ByteRange, StorageError, read_range};

/// How much of the archive's end is read first (end records and, usually, the directory).
const TAIL_LEN: u64 = 256 * 1024;

/// Why an index could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Storage(StorageError),
}

/// The directory and its entries of `key` (`size` bytes), refusing a central directory
/// over `max_index_bytes`.
///
/// # Errors
/// [`IndexError::Archive`] for what is not a zip, [`IndexError::Storage`] for the store's
/// failures.
pub async fn read_index(
    store: &dyn BackupStore,
    key: &str,
    size: u64,
    max_index_bytes: u64,
) -> Result<(Directory, Vec<Entry>), IndexError> {
    if size < 22 {
        return Err(ArchiveError::NotZip("too short".into()).into());
    }
    let tail_len = size.min(TAIL_LEN);
    let tail_start = size - tail_len;
    let tail = get(store, key, tail_start, size).await?;
    let dir = match reader::find_directory(&tail, size)? {
        DirLookup::Found(d) => d,
        DirLookup::Zip64At(off, end) => {
            let rec = if off >= tail_start {
                tail[(off - tail_start) as usize..].to_vec()
            } else {
                get(store, key, off, (off + 56).min(size)).await?
            };
            reader::parse_zip64_end(&rec, end)?
        }
    };
    if dir.size > max_index_bytes {
        return Err(ArchiveError::Limit(format!(
            "central directory of {} bytes, at most {max_index_bytes} allowed",
            dir.size
        ))
        .into());
    }
    let cd = if dir.offset >= tail_start {
        let from = (dir.offset - tail_start) as usize;
        tail[from..from + dir.size as usize].to_vec()
    } else {
        get(store, key, dir.offset, dir.offset + dir.size).await?
    };
    drop(tail);
    // The raw directory is freed once parsed, before the callers' checks (about 100 bytes
    // per entry).
    let entries = reader::parse_directory(&cd, dir.entries)?;
    Ok((dir, entries))
}

/// Bytes `from..to` of `key` (empty when `from == to`).
async fn get(
    store: &dyn BackupStore,
    key: &str,
    from: u64,
    to: u64,
) -> Result<Vec<u8>, IndexError> {
    if from >= to {
        return Ok(Vec::new());
    }
    read_range(
        store,
        key,
        ByteRange {
            start: from,
            end: to - 1,
        },
    )
    .await
    .map_err(IndexError::Storage)
}
