//! Round trips through every layer of an archive (writer, reader, checks, extraction), and
//! property tests of what a restore does with hostile archives.

use crate::archive::check::{Limits, check_entries};
use crate::archive::error::ArchiveError;
use crate::archive::extract::extract;
use crate::archive::test_data::{restore_into, zip};
use crate::archive::zip::reader::find_directory;
use crate::archive::zip::spec::METHOD_STORED;
use std::path::{Path, PathBuf};

fn index(
    bytes: &[u8],
) -> (
    crate::archive::zip::Directory,
    Vec<crate::archive::zip::Entry>,
) {
    crate::archive::zip::reader::index(bytes).unwrap()
}

#[test]
fn round_trip_through_writer_index_and_extract() {
    let big = "abc".repeat(100_000);
    let bytes = zip(&[
        ("a.txt", b"hello"),
        ("dir/", b""),
        ("dir/b.bin", big.as_bytes()),
        ("ünï/c", b""),
    ]);
    let (_, entries) = index(&bytes);
    assert_eq!(entries.len(), 4);
    let dest = tempfile::tempdir().unwrap();
    let progress = crate::ops::progress::Progress::new(
        crate::ops::progress::Kind::Restore,
        crate::ops::progress::Trigger::Api,
        "t.zip",
    );
    restore_into(&bytes, dest.path(), Some(&progress)).unwrap();
    let counted = progress.view();
    assert_eq!((counted.entries_done, counted.bytes_done), (4, 5 + 300_000));
    assert_eq!(std::fs::read(dest.path().join("a.txt")).unwrap(), b"hello");
    assert_eq!(
        std::fs::read(dest.path().join("dir/b.bin")).unwrap(),
        big.as_bytes()
    );
    assert_eq!(std::fs::read(dest.path().join("ünï/c")).unwrap(), b"");
}

#[test]
fn every_entry_gets_its_data_mode_and_time_with_one_inflater_for_all() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // Several Deflated entries in a row, of different sizes: the inflater is reset
    // between them, so a leftover state would corrupt the second one.
    let texts: Vec<String> = (0..5)
        .map(|i| format!("entry {i} ").repeat(5_000 * (i + 1)))
        .collect();
    let mut files: Vec<(String, &[u8])> = vec![("d/".into(), b"")];
    for (i, t) in texts.iter().enumerate() {
        files.push((format!("d/t{i}.txt"), t.as_bytes()));
    }
    let named: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    let bytes = zip(&named);
    let (_, entries) = index(&bytes);
    assert!(entries.iter().filter(|e| e.method != METHOD_STORED).count() >= 5);
    let dest = tempfile::tempdir().unwrap();
    restore_into(&bytes, dest.path(), None).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let path = dest.path().join(format!("d/t{i}.txt"));
        assert_eq!(std::fs::read(&path).unwrap(), t.as_bytes(), "entry {i}");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640, "entry {i}");
        assert_eq!(meta.mtime(), 1_700_000_000, "entry {i}");
    }
    let meta = std::fs::metadata(dest.path().join("d")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!(meta.mtime(), 1_700_000_000);
}

#[test]
fn excluded_paths_are_skipped_and_duplicates_refused() {
    let bytes = zip(&[("backups/x.zip", b"1"), ("data.db", b"2")]);
    let (dir, entries) = index(&bytes);
    let plan = check_entries(
        entries,
        dir.offset,
        &Limits::default(),
        &[PathBuf::from("backups")],
    )
    .unwrap();
    assert_eq!(plan.skipped, 1);
    assert_eq!(plan.items.len(), 1);

    for (conflicting, name, reason) in [
        (&[("a", &b"1"[..]), ("a", b"2")][..], "a", "duplicate entry"),
        (&[("a", b"1"), ("a/", b"")], "a/", "duplicate entry"),
        (&[("a/b", b"1"), ("a", b"2")], "a", "duplicate entry"),
        (&[("a", b"1"), ("a/b", b"2")], "a/b", "entry below a file"),
    ] {
        let bytes = zip(conflicting);
        let (dir, entries) = index(&bytes);
        let err = check_entries(entries, dir.offset, &Limits::default(), &[]).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::UnsafeEntry { name: n, why } if n == name && *why == reason),
            "{conflicting:?}: {err}"
        );
    }
    let bytes = zip(&[("a/", b""), ("a/", b""), ("a/b", b"1")]);
    let (dir, entries) = index(&bytes);
    assert!(check_entries(entries, dir.offset, &Limits::default(), &[]).is_ok());
}

#[test]
fn crc_mismatch_and_truncation_are_detected() {
    let mut bytes = zip(&[("a.txt", b"hello hello hello hello")]);
    let (dir, entries) = index(&bytes);
    let plan = check_entries(entries, dir.offset, &Limits::default(), &[]).unwrap();
    // Flip a bit in the compressed data (just after the 30+5+9 byte header).
    bytes[30 + 5 + 9 + 2] ^= 0x10;
    let dest = tempfile::tempdir().unwrap();
    let err = extract(
        &plan,
        &mut &bytes[..],
        0,
        dest.path(),
        None,
        &mut |_| Ok(()),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ArchiveError::Corrupt { name, .. } if name == "a.txt"),
        "{err}"
    );
    // Cut inside the local header's name and extra field.
    let dest = tempfile::tempdir().unwrap();
    let err = extract(&plan, &mut &bytes[..40], 0, dest.path(), None, &mut |_| {
        Ok(())
    })
    .unwrap_err();
    assert!(
        matches!(&err, ArchiveError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
        "{err}"
    );
}

#[test]
fn not_a_zip_is_refused() {
    let err = find_directory(b"hello world, not a zip at all", 29).unwrap_err();
    assert!(matches!(err, ArchiveError::NotZip(_)), "{err}");
}

/// Property tests: archives made by the gateway's writer, by PocketBase, and generated in
/// every Zip64 form (any mix of escaped sizes and offsets, Zip64 end records or not),
/// restored whole, then mutated at random (bytes overwritten, mostly in the headers and the central directory; cut
/// short), go through everything a restore does with them: find the directory, parse
/// it, check every entry, extract into a scratch directory. None may panic; a refusal
/// is an error with a message; nothing is written outside the scratch directory.
mod props {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    fn gateway_archive() -> Vec<u8> {
        let noise = crate::archive::test_data::noise;
        let log = b"GET /api 200\n".repeat(400);
        let (db, media) = (noise(3000, 1), noise(700, 2));
        zip(&[
            ("data.db", &db),
            ("logs/", b""),
            ("logs/app.log", &log),
            ("empty", b""),
            ("storage/a/b.txt", b"deep"),
            ("storage/ünï.bin", &media),
        ])
    }

    fn pocketbase_archive() -> Vec<u8> {
        include_bytes!("../../tests/fixtures/pocketbase-0.40.6.zip").to_vec()
    }

    /// What a restore does with an archive, all of it in memory.
    fn restore_all(bytes: &[u8], dest: &Path) -> Result<usize, ArchiveError> {
        let plan = restore_into(bytes, dest, None)?;
        Ok(plan.items.len())
    }

    /// (where, new byte): `tail` picks a place in the last 4 KiB, where the directory
    /// and the end records are, else anywhere.
    fn mutations() -> impl Strategy<Value = Vec<(bool, Index, u8)>> {
        proptest::collection::vec((any::<bool>(), any::<Index>(), any::<u8>()), 1..6)
    }

    fn check(
        base: &[u8],
        edits: &[(bool, Index, u8)],
        cut: Option<Index>,
    ) -> Result<(), TestCaseError> {
        let mut bytes = base.to_vec();
        for (tail, at, byte) in edits {
            let i = if *tail {
                let from = bytes.len().saturating_sub(4096);
                from + at.index(bytes.len() - from)
            } else {
                at.index(bytes.len())
            };
            bytes[i] = *byte;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        let scratch = tempfile::tempdir().unwrap();
        let dest = scratch.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let outcome = std::panic::catch_unwind(|| restore_all(&bytes, &dest));
        prop_assert!(outcome.is_ok(), "panicked");
        if let Ok(Err(e)) = &outcome {
            prop_assert!(!e.to_string().is_empty());
        }
        let beside: Vec<_> = std::fs::read_dir(scratch.path()).unwrap().collect();
        prop_assert_eq!(beside.len(), 1, "written outside the destination");
        Ok(())
    }

    /// A Stored archive in Zip64 form, as other writers make them (Python's
    /// `force_zip64`, 7-Zip, Java): for each entry, `escape` says which of its
    /// uncompressed size, compressed size and offset are `0xFFFFFFFF` in the central
    /// directory and moved into the Zip64 extra field (the local header then carries
    /// both sizes there); with `zip64_end`, the end records are Zip64's too.
    // One archive's bytes, record by record in the order of the format: a list, not logic.
    #[allow(clippy::too_many_lines)]
    fn zip64_archive(
        entries: &[(String, Vec<u8>)],
        escape: &[[bool; 3]],
        zip64_end: bool,
    ) -> Vec<u8> {
        const FF: u32 = 0xFFFF_FFFF;
        let (mut out, mut central) = (Vec::new(), Vec::new());
        for ((name, data), esc) in entries.iter().zip(escape) {
            let (offset, size, crc) = (out.len() as u64, data.len() as u64, crc32fast::hash(data));
            let sizes_escaped = esc[0] || esc[1];
            let mut local_extra = Vec::new();
            if sizes_escaped {
                local_extra.extend_from_slice(&1u16.to_le_bytes());
                local_extra.extend_from_slice(&16u16.to_le_bytes());
                local_extra.extend_from_slice(&size.to_le_bytes());
                local_extra.extend_from_slice(&size.to_le_bytes());
            }
            let size32 = |escaped: bool| if escaped { FF } else { size as u32 };
            out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
            out.extend_from_slice(&45u16.to_le_bytes());
            out.extend_from_slice(&0x0800u16.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&0x0021u16.to_le_bytes());
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&size32(sizes_escaped).to_le_bytes());
            out.extend_from_slice(&size32(sizes_escaped).to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&(local_extra.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&local_extra);
            out.extend_from_slice(data);
            let mut fields = Vec::new();
            for (escaped, value) in [(esc[0], size), (esc[1], size), (esc[2], offset)] {
                if escaped {
                    fields.extend_from_slice(&value.to_le_bytes());
                }
            }
            let mut extra = Vec::new();
            if !fields.is_empty() {
                extra.extend_from_slice(&1u16.to_le_bytes());
                extra.extend_from_slice(&(fields.len() as u16).to_le_bytes());
                extra.extend_from_slice(&fields);
            }
            central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            central.extend_from_slice(&((3u16 << 8) | 45).to_le_bytes());
            central.extend_from_slice(&45u16.to_le_bytes());
            central.extend_from_slice(&0x0800u16.to_le_bytes());
            central.extend_from_slice(&0u16.to_le_bytes());
            central.extend_from_slice(&0u16.to_le_bytes());
            central.extend_from_slice(&0x0021u16.to_le_bytes());
            central.extend_from_slice(&crc.to_le_bytes());
            central.extend_from_slice(&size32(esc[1]).to_le_bytes());
            central.extend_from_slice(&size32(esc[0]).to_le_bytes());
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            // Comment length, disk number, internal attributes.
            central.extend_from_slice(&[0; 6]);
            central.extend_from_slice(&(0o100_644u32 << 16).to_le_bytes());
            let offset32 = if esc[2] { FF } else { offset as u32 };
            central.extend_from_slice(&offset32.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
            central.extend_from_slice(&extra);
        }
        let (cd_offset, cd_size, n) =
            (out.len() as u64, central.len() as u64, entries.len() as u64);
        out.extend_from_slice(&central);
        if zip64_end {
            let record_at = out.len() as u64;
            out.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
            out.extend_from_slice(&44u64.to_le_bytes());
            out.extend_from_slice(&((3u16 << 8) | 45).to_le_bytes());
            out.extend_from_slice(&45u16.to_le_bytes());
            out.extend_from_slice(&[0; 8]);
            for v in [n, n, cd_size, cd_offset] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&record_at.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
        }
        let (n16, size32, offset32) = if zip64_end {
            (0xFFFF, FF, FF)
        } else {
            (n as u16, cd_size as u32, cd_offset as u32)
        };
        out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&n16.to_le_bytes());
        out.extend_from_slice(&n16.to_le_bytes());
        out.extend_from_slice(&size32.to_le_bytes());
        out.extend_from_slice(&offset32.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    /// Entries (name, data), which fields each escapes, Zip64 end records or not.
    type Zip64Layout = (Vec<(String, Vec<u8>)>, Vec<[bool; 3]>, bool);

    /// 1 to 5 files (names that cannot clash, in up to two directories, up to 3,000
    /// bytes each), which fields each escapes, and whether the end records are Zip64.
    fn zip64_layouts() -> impl Strategy<Value = Zip64Layout> {
        (1usize..6).prop_flat_map(|n| {
            (
                proptest::collection::vec(
                    (0usize..4, proptest::collection::vec(any::<u8>(), 0..3000)),
                    n,
                ),
                proptest::collection::vec(any::<[bool; 3]>(), n),
                any::<bool>(),
            )
                .prop_map(|(files, escape, end)| {
                    let entries = files
                        .into_iter()
                        .enumerate()
                        .map(|(i, (dir, data))| {
                            (format!("{}f{i}.bin", ["", "a/", "a/b/", "c/"][dir]), data)
                        })
                        .collect();
                    (entries, escape, end)
                })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        #[test]
        fn generated_zip64_archives_restore_whole((entries, escape, end) in zip64_layouts()) {
            let bytes = zip64_archive(&entries, &escape, end);
            let dest = tempfile::tempdir().unwrap();
            let restored = restore_all(&bytes, dest.path());
            prop_assert!(restored.is_ok(), "{:?}", restored.err().map(|e| e.to_string()));
            for (name, data) in &entries {
                prop_assert_eq!(&std::fs::read(dest.path().join(name)).unwrap(), data, "{}", name);
            }
        }

        #[test]
        fn mutated_zip64_archives_never_panic(
            (entries, escape, end) in zip64_layouts(),
            edits in mutations(),
            cut in proptest::option::weighted(0.2, any::<Index>()),
        ) {
            check(&zip64_archive(&entries, &escape, end), &edits, cut)?;
        }

        #[test]
        fn mutated_gateway_archives_never_panic(
            edits in mutations(),
            cut in proptest::option::weighted(0.2, any::<Index>()),
        ) {
            check(&gateway_archive(), &edits, cut)?;
        }

        #[test]
        fn mutated_pocketbase_archives_never_panic(
            edits in mutations(),
            cut in proptest::option::weighted(0.2, any::<Index>()),
        ) {
            check(&pocketbase_archive(), &edits, cut)?;
        }
    }

    #[test]
    fn the_unmutated_archives_restore_whole() {
        for base in [gateway_archive(), pocketbase_archive()] {
            let dest = tempfile::tempdir().unwrap();
            let n = restore_all(&base, dest.path()).unwrap();
            assert!(n >= 3, "{n} entries");
        }
    }
}
