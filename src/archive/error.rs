//! Why an archive is refused: the one error type of reading, checking and extracting.

use std::io;

/// Why an archive is refused. The text is safe to show to the API client (it names
/// entries, never server paths).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a zip archive: {0}")]
    NotZip(String),
    #[error("unsafe entry {name:?}: {why}")]
    UnsafeEntry { name: String, why: &'static str },
    #[error("unsupported entry {name:?}: {why}")]
    Unsupported { name: String, why: &'static str },
    #[error("the archive exceeds a restore limit: {0}")]
    Limit(String),
    #[error("corrupt entry {name:?}: {why}")]
    Corrupt { name: String, why: String },
    /// Restoring it would empty the data directory.
    #[error("the archive holds nothing to restore ({0})")]
    Empty(&'static str),
    #[error("reading the archive failed")]
    Io(#[from] io::Error),
}
