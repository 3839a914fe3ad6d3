//! Incremental create: which entries of the previous archive a new one takes as they are.
//!
//! A zip entry's bytes (local header, data, data descriptor) do not depend on where the
//! entry stands in the archive, so a new archive can begin with ranges of the previous one,
//! copied by the store itself, and go on with the entries that changed. The [`Manifest`] is
//! the previous archive's central directory, usable when the gateway wrote it in its
//! current format (every entry records its file's identity and when the create began
//! reading, and the entries follow each other with no gap). [`Manifest::plan`] coalesces
//! the unchanged entries into runs, in the previous archive's order, and keeps the runs
//! long enough to be parts of their own.
//!
//! # When a file counts as unchanged
//!
//! A copied entry holds the bytes the previous create read, so the rule must never take a
//! changed file for an unchanged one: a backup that restores without error but holds old
//! bytes is the worst failure a backup can have. Size, permission bits and modification
//! time are not enough: `cp -p`, `rsync -t`, `tar x`, `unzip` and many editors rewrite a
//! file and put its old times back, or rename a new file with the old times over it. So a
//! file is unchanged only when all of these hold:
//!
//! - its size, permission bits and modification time (ns) are those of its entry;
//! - its change time (ns), device and inode are those recorded when the previous create
//!   read it ([`super::meta::Identity`]): no user-space call can set the change time (any
//!   write, `utimensat`, `chmod` or rename moves it to the current time), and a file
//!   renamed over it is another inode;
//! - **the racy rule** (git's rule for "racily clean" index entries): its modification
//!   and change times are strictly earlier than the file system's time when the previous
//!   create began reading ([`crate::util::fsutil::file_system_now`], taken before the survey).
//!   A time stamp is the file system's clock rounded down to its granularity (a tick of
//!   the kernel's coarse clock, a second on some file systems, two on FAT), so a file
//!   rewritten at the same size within one tick after it was read keeps all of the
//!   values above. Its times are then not earlier than that tick; the rule reads it
//!   again. The reference time is the file system's own stamp of a file written there,
//!   not the wall clock, so it is in the same granularity and from the same clock as the
//!   files' times (an NFS server's included): "strictly earlier" leaves out the whole
//!   tick the create began in, which is the granularity subtracted.
//!
//! The read time is recorded only with the entries of the device it was taken on (a
//! mount inside the data directory has another clock, perhaps another granularity): the
//! others are never reused. Nor is anything where the data directory's file system does
//! not keep real change times and inodes ([`crate::util::fsutil::keeps_change_times`]: FAT and
//! exFAT derive them, FUSE reports what its daemon says, NFS clients cache attributes).
//! One change escapes any stat-based rule: writes through a shared `mmap` to a page that
//! is already dirty move no time until the page is written back; an application that
//! writes its files so (SQLite does not, unless `mmap_size` is set, and its databases are
//! never reused anyway) needs `--incremental off`.
//!
//! SQLite databases and their sidecars are never reused (their snapshots change). A
//! directory is unchanged when its time and permission bits are (its time changes when an
//! entry is added, removed or renamed in it): its entry holds no data, so these are all
//! its bytes say, and the directories between unchanged files do not cut their runs.
//!
//! A restore sets the files' times back, but not their change times or inodes: the first
//! create after a restore is a full one.

use super::meta::EntryMeta;
use super::zip::Entry;
use super::zip::spec::*;
use super::zip::writer::ReusedEntry;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

/// The previous archive's file entries by name, with where their bytes are.
#[derive(Debug, Default)]
pub struct Manifest {
    /// Every entry, in offset order, with the length of its bytes.
    entries: Vec<(Entry, u64)>,
    /// Index into `entries` of each entry, by name (a directory's without its `/`).
    by_name: HashMap<Vec<u8>, usize>,
}

/// What a create takes from the previous archive.
#[derive(Debug, Default)]
pub struct Reuse {
    /// Ranges of the previous archive, in the order they are copied (each a part).
    pub copies: Vec<Range<u64>>,
    /// The entries those ranges hold, at their offsets in the new archive.
    pub entries: Vec<ReusedEntry>,
    /// Their names, which the walk leaves to the copies.
    pub names: HashSet<Vec<u8>>,
    /// Bytes copied: where the new archive's own bytes begin.
    pub bytes: u64,
    /// Their files' size.
    pub file_bytes: u64,
}

impl Manifest {
    /// The manifest of an archive with these central directory `entries`, whose directory
    /// starts at `cd_offset`. `None` when the gateway did not write it, or its layout is
    /// not the gateway's (an entry's bytes are not exactly where the next one starts).
    pub fn new(mut entries: Vec<Entry>, cd_offset: u64) -> Option<Self> {
        entries.sort_by_key(|e| e.offset);
        let mut out = Self::default();
        let mut expected = 0u64;
        for e in entries {
            if e.offset != expected || e.mtime_ns.is_none() || e.recorded.is_none() {
                return None;
            }
            let len = entry_len(&e)?;
            expected = e.offset.checked_add(len)?;
            out.by_name.insert(key(&e).to_vec(), out.entries.len());
            out.entries.push((e, len));
        }
        (expected == cd_offset).then_some(out)
    }

    /// True when the file `meta` (its current state, `size` bytes) is what its entry in the
    /// previous archive holds (the rule is in the module docs).
    pub fn unchanged(&self, meta: &EntryMeta, size: u64) -> bool {
        let Some(&i) = self.by_name.get(&meta.name) else {
            return false;
        };
        let e = &self.entries[i].0;
        let Some(recorded) = e.recorded else {
            return false;
        };
        !e.is_dir()
            && e.uncompressed == size
            && e.mtime_ns == Some(meta.mtime_ns)
            && recorded.identity == meta.identity
            && meta.mtime_ns < recorded.read_from_ns
            && meta.identity.ctime_ns < recorded.read_from_ns
            && e.unix_mode.map(|m| m & 0o7777) == Some(meta.mode & 0o7777)
            && e.flags & FLAG_DATA_DESCRIPTOR != 0
            && e.flags & FLAG_ENCRYPTED == 0
            && (e.method == METHOD_STORED || e.method == METHOD_DEFLATE)
    }

    /// True when the directory `meta` has the time and permission bits of its entry in the
    /// previous archive.
    pub fn unchanged_dir(&self, meta: &EntryMeta) -> bool {
        let Some(&i) = self.by_name.get(&meta.name) else {
            return false;
        };
        let e = &self.entries[i].0;
        e.is_dir()
            && e.raw_name.ends_with(b"/")
            && e.uncompressed == 0
            && e.mtime_ns == Some(meta.mtime_ns)
            && e.unix_mode.map(|m| m & 0o7777) == Some(meta.mode & 0o7777)
    }

    /// The runs of `unchanged` entries (names) that are worth copying: consecutive in the
    /// previous archive, `min_part` bytes at least, cut in pieces of at most `max_part`.
    /// A shorter run is left to the walk, which writes its files afresh.
    pub fn plan(&self, unchanged: &HashSet<Vec<u8>>, min_part: u64, max_part: u64) -> Reuse {
        let mut reuse = Reuse::default();
        let mut run: Vec<usize> = Vec::new();
        let flush = |run: &mut Vec<usize>, reuse: &mut Reuse| {
            let (Some(&first), Some(&last)) = (run.first(), run.last()) else {
                return;
            };
            let start = self.entries[first].0.offset;
            let end = self.entries[last].0.offset + self.entries[last].1;
            if end - start >= min_part {
                for &i in run.iter() {
                    let (e, _) = &self.entries[i];
                    reuse
                        .entries
                        .push(reused(e, reuse.bytes + (e.offset - start)));
                    reuse.names.insert(key(e).to_vec());
                    reuse.file_bytes += e.uncompressed;
                }
                reuse.copies.extend(split(start..end, max_part));
                reuse.bytes += end - start;
            }
            run.clear();
        };
        for (i, (e, _)) in self.entries.iter().enumerate() {
            if unchanged.contains(key(e)) {
                run.push(i);
            } else {
                flush(&mut run, &mut reuse);
            }
        }
        flush(&mut run, &mut reuse);
        reuse
    }
}

/// An entry's name as the walk gives it: a directory's without its `/`.
fn key(e: &Entry) -> &[u8] {
    e.raw_name.strip_suffix(b"/").unwrap_or(&e.raw_name)
}

/// The length of an entry's bytes as the gateway writes them: the local header with its
/// name and extended timestamp, the data, and (for a file) the data descriptor, 64-bit
/// when a size needs it.
fn entry_len(e: &Entry) -> Option<u64> {
    let header = LOCAL_HEADER_LEN + e.raw_name.len() as u64 + LOCAL_EXTRA_LEN;
    if e.is_dir() {
        return Some(header);
    }
    let descriptor = if e.compressed >= U32_MAX || e.uncompressed >= U32_MAX {
        24
    } else {
        16
    };
    header.checked_add(e.compressed)?.checked_add(descriptor)
}

fn reused(e: &Entry, offset: u64) -> ReusedEntry {
    ReusedEntry {
        is_dir: e.is_dir(),
        meta: EntryMeta {
            name: e.raw_name.clone(),
            mode: e.unix_mode.unwrap_or(S_IFREG | 0o644),
            mtime_ns: e.mtime_ns.unwrap_or(0),
            identity: e.recorded.map(|r| r.identity).unwrap_or_default(),
        },
        read_from_ns: e.recorded.map_or(0, |r| r.read_from_ns),
        flags: e.flags,
        method: e.method,
        crc: e.crc,
        compressed: e.compressed,
        uncompressed: e.uncompressed,
        offset,
    }
}

/// `range` in pieces of at most `max` bytes, of nearly equal sizes.
fn split(range: Range<u64>, max: u64) -> Vec<Range<u64>> {
    let len = range.end - range.start;
    let pieces = len.div_ceil(max.max(1)).max(1);
    let size = len.div_ceil(pieces);
    (0..pieces)
        .map(|i| {
            let s = range.start + i * size;
            s..(s + size).min(range.end)
        })
        .filter(|r| !r.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::test_data::zip;
    use crate::archive::zip::ZipWriter;

    fn manifest(bytes: &[u8]) -> Manifest {
        let (dir, entries) = crate::archive::zip::reader::index(bytes).unwrap();
        Manifest::new(entries, dir.offset).expect("a gateway archive")
    }

    fn names(list: &[&str]) -> HashSet<Vec<u8>> {
        list.iter().map(|n| n.as_bytes().to_vec()).collect()
    }

    #[test]
    fn runs_of_unchanged_entries_are_coalesced_and_short_ones_left_out() {
        let noise = |seed| crate::archive::test_data::noise(3000, seed);
        let (a, b, c, d) = (noise(1), noise(2), noise(3), noise(4));
        let bytes = zip(&[("a", &a), ("b", &b), ("dir/", b""), ("c", &c), ("d", &d)]);
        let m = manifest(&bytes);
        // a and b run together; c and d run together (the directory between is not a file
        // and breaks the run); with a minimum of 6,000 bytes both runs are kept.
        let r = m.plan(&names(&["a", "b", "c", "d"]), 6000, u64::MAX);
        assert_eq!(r.copies.len(), 2, "{:?}", r.copies);
        assert_eq!(r.names, names(&["a", "b", "c", "d"]));
        assert_eq!(
            r.bytes,
            r.copies.iter().map(|c| c.end - c.start).sum::<u64>()
        );
        // The copied bytes are exactly the entries' bytes, back to back.
        let mut copied = Vec::new();
        for c in &r.copies {
            copied.extend_from_slice(&bytes[c.start as usize..c.end as usize]);
        }
        for e in &r.entries {
            let at = e.offset as usize;
            assert_eq!(&copied[at..at + 4], b"PK\x03\x04", "{:?}", e.meta.name);
        }
        // An unchanged directory joins the runs on either side of it.
        let r = m.plan(&names(&["a", "b", "dir", "c", "d"]), 6000, u64::MAX);
        assert_eq!(r.copies.len(), 1, "{:?}", r.copies);
        assert!(r.names.contains(b"dir".as_slice()));
        assert!(r.entries.iter().any(|e| e.is_dir && e.meta.name == b"dir/"));
        // b changed: a alone is too short, c and d still run.
        let r = m.plan(&names(&["a", "c", "d"]), 6000, u64::MAX);
        assert_eq!(r.names, names(&["c", "d"]));
        assert_eq!(
            r.entries[0].offset, 0,
            "the first copied entry starts the archive"
        );
        // A run over the maximum is cut into pieces that cover it.
        let r = m.plan(&names(&["a", "b"]), 1, 2500);
        assert!(r.copies.len() >= 3);
        assert!(r.copies.windows(2).all(|w| w[0].end == w[1].start));
        assert!(r.copies.iter().all(|c| c.end - c.start <= 2500));
    }

    #[test]
    fn a_file_is_unchanged_only_with_the_same_size_times_mode_and_identity() {
        use crate::archive::test_data::{TIME, identity};
        let bytes = zip(&[("a", b"hello")]);
        let m = manifest(&bytes);
        let meta = EntryMeta {
            name: b"a".to_vec(),
            mode: S_IFREG | 0o640,
            mtime_ns: TIME,
            identity: identity(0),
        };
        assert!(m.unchanged(&meta, 5));
        assert!(!m.unchanged(&meta, 6), "size");
        let changed = |f: &dyn Fn(&mut EntryMeta)| {
            let mut other = meta.clone();
            f(&mut other);
            m.unchanged(&other, 5)
        };
        assert!(!changed(&|e| e.mtime_ns += 1), "one nanosecond later");
        assert!(!changed(&|e| e.mode = S_IFREG | 0o600), "mode");
        assert!(!changed(&|e| e.name = b"b".to_vec()), "not in the archive");
        // Rewritten with its old times put back: only the change time tells.
        assert!(!changed(&|e| e.identity.ctime_ns += 1), "change time");
        // Another file renamed over it, with the same times: only the inode tells.
        assert!(!changed(&|e| e.identity.ino += 1), "inode");
        assert!(!changed(&|e| e.identity.dev += 1), "device");
    }

    /// Whether a file `a` with these times, on device `dev`, counts as unchanged against an
    /// archive that recorded it so, written by a create that began reading at 1,000 ns by
    /// the clock of device 1.
    fn unchanged_with(ctime_ns: i64, mtime_ns: i64, dev: u64) -> bool {
        use crate::archive::meta::Identity;
        let mut w = ZipWriter::new(Vec::new())
            .reading_from(crate::util::fsutil::FsNow { ns: 1_000, dev: 1 });
        let meta = EntryMeta {
            name: b"a".to_vec(),
            mode: S_IFREG | 0o640,
            mtime_ns,
            identity: Identity {
                ctime_ns,
                dev,
                ino: 1,
            },
        };
        let entry = w.start_file(meta.clone(), METHOD_STORED).unwrap();
        w.write_data(b"hello").unwrap();
        w.finish_file(entry, crc32fast::hash(b"hello"), 5).unwrap();
        let bytes = w.finish().unwrap().0;
        manifest(&bytes).unchanged(&meta, 5)
    }

    #[test]
    fn a_file_changed_within_the_tick_the_previous_create_began_reading_is_read_again() {
        // The previous create recorded the file's times equal to the file system's time
        // when it began reading: the file may have been rewritten in that same tick after
        // it was read, with every value the same. Strictly earlier is required.
        assert!(unchanged_with(999, 999, 1), "both times before the tick");
        assert!(!unchanged_with(1_000, 999, 1), "changed in the tick");
        assert!(!unchanged_with(999, 1_000, 1), "modified in the tick");
        assert!(
            !unchanged_with(2_000, 999, 1),
            "changed after (a clock set back)"
        );
    }

    #[test]
    fn a_file_on_another_device_than_the_clock_is_never_reused() {
        // Its times are from another clock, in another granularity: no comparison with the
        // read time holds.
        assert!(!unchanged_with(999, 999, 2));
    }

    #[test]
    fn archives_the_gateway_did_not_write_give_no_manifest() {
        let pocketbase = include_bytes!("../../tests/fixtures/pocketbase-0.40.6.zip");
        let (dir, entries) = crate::archive::zip::reader::index(pocketbase).unwrap();
        assert!(Manifest::new(entries, dir.offset).is_none());
        // An archive of the gateway's first format (the modification time alone) is
        // restorable but never a source of copies.
        let bytes = zip(&[("a", b"hello")]);
        let (dir, mut entries) = crate::archive::zip::reader::index(&bytes).unwrap();
        assert!(Manifest::new(entries.clone(), dir.offset).is_some());
        entries[0].recorded = None;
        assert!(Manifest::new(entries, dir.offset).is_none());
        // A gateway archive with a gap before its directory is not the gateway's layout.
        let bytes = zip(&[("a", b"hello")]);
        let (dir, entries) = crate::archive::zip::reader::index(&bytes).unwrap();
        assert!(Manifest::new(entries, dir.offset + 1).is_none());
    }
}
