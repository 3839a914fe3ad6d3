//! An entry over 4 GiB: the writer's Zip64 sizes (data descriptor and central directory)
//! read back with Python's zipfile and with the gateway's own reader.

use backup_gateway::archive::read::{self, DirLookup, Limits};
use backup_gateway::archive::write::ZipWriter;
use std::io::Read;

#[test]
fn an_entry_over_4_gib_is_written_with_zip64_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.zip");
    let big: u64 = (4 << 30) + 12_345;
    {
        let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut w = ZipWriter::new(file, 1);
        let mut scratch = Vec::new();
        w.add_file(
            b"zeros.bin",
            0o644,
            1_700_000_000,
            &mut std::io::repeat(0).take(big),
            &mut scratch,
        )
        .unwrap();
        w.add_file(
            b"after.txt",
            0o644,
            1_700_000_000,
            &mut &b"after"[..],
            &mut scratch,
        )
        .unwrap();
        w.finish().unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();

    // The gateway's reader: sizes come from the Zip64 extra field.
    let tail = &bytes[bytes.len().saturating_sub(65_536)..];
    let d = match read::find_directory(tail, bytes.len() as u64).unwrap() {
        DirLookup::Found(d) => d,
        DirLookup::Zip64At(off, end) => read::parse_zip64_end(&bytes[off as usize..], end).unwrap(),
    };
    let cd = &bytes[d.offset as usize..(d.offset + d.size) as usize];
    let entries = read::parse_directory(cd, d.entries).unwrap();
    assert_eq!(entries[0].uncompressed, big);
    assert_eq!(entries[1].uncompressed, 5);
    let limits = Limits {
        max_ratio: u64::MAX,
        ..Limits::default()
    };
    let plan = read::check_entries(entries, d.offset, &limits, &[]).unwrap();
    assert_eq!(plan.total_size, big + 5);

    // Python's zipfile checks every CRC (and so every size) of the archive.
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\ni = z.getinfo('zeros.bin')\nassert i.file_size == int(sys.argv[2]), i.file_size\nassert z.read('after.txt') == b'after'",
        ])
        .arg(&path)
        .arg(big.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
