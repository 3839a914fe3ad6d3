//! Point-in-time restore (issue 30; docs/pitr-design.md): the databases' committed
//! transactions streamed to the store, and a database rebuilt to any moment.
//!
//! Built so far, the data path, each part tested on real SQLite WALs:
//! - [`wal`]: the committed transactions of a live database's write-ahead log, each frame
//!   proved by the WAL's salts and running checksum, read in rounds that resume where the
//!   last stopped, a restart of the WAL told apart (a gap);
//! - [`segment`]: a run of those transactions with the times they were seen, as the stream
//!   will ship them (checked by a CRC-32), and a database rebuilt from its generation's base
//!   and segments as it was at any moment, generation after generation, a gap or a foreign
//!   generation refused;
//! - [`capture`]: the pin protocol (docs/pitr-design.md §2) and its rounds: every commit of
//!   a live database taken into segments before SQLite can remove it, across the WAL
//!   restarts of the application's own TRUNCATE checkpoints, with no gap.
//!
//! Not built: the loop that runs rounds on commit and ships segments to the store, the
//! settle and seal steps (see [`capture`]'s docs for what their absence costs), a
//! generation's base image, compaction, retention, the restore to a time through the API,
//! the page, metrics.

pub mod capture;
pub mod segment;
pub mod wal;
