//! Point-in-time restore (issue 30; docs/pitr-design.md): the databases' committed
//! transactions streamed to the store, and a database rebuilt to any moment.
//!
//! Built so far, the data path, each part tested on real SQLite WALs:
//! - [`wal`]: the committed transactions of a live database's write-ahead log, each frame
//!   proved by the WAL's salts and running checksum, read in rounds that resume where the
//!   last stopped, a restart of the WAL told apart (a gap);
//! - [`segment`]: a run of those transactions with the times they were seen, as the stream
//!   will ship them (checked by a CRC-32), and a database rebuilt from its generation's base
//!   and segments as it was at any moment, a gap or a foreign generation refused.
//!
//! Not built: the stream itself (the pin protocol that keeps the application's checkpoints
//! from losing frames, capture on commit, shipping to the store, compaction, retention),
//! the restore to a time through the API, the page, metrics. docs/pitr-design.md has the
//! design.

pub mod segment;
pub mod wal;
