//! Point-in-time restore (issue 30; docs/pitr-design.md): the databases' committed
//! transactions streamed to the store, and a database rebuilt to any moment.
//!
//! Built so far: the WAL itself ([`wal`]): the committed transactions of a live database's
//! write-ahead log, each frame proved by the WAL's salts and running checksum, read in
//! rounds that resume where the last stopped, a restart of the WAL told apart (a gap), and a
//! database image rolled forward to any commit. The stream that ships them (the pin protocol,
//! segments in the store, compaction), the restore to a time and their API are not built.

pub mod wal;
