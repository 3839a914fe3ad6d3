//! An entry over 4 GiB, zipped by the create's pipeline: the writer's Zip64 sizes (data
//! descriptor and central directory) read back with Python's zipfile and with the
//! gateway's own reader.

use backup_gateway::archive::check::{Limits, check_entries};
use backup_gateway::archive::zip::reader::{self, DirLookup};
use backup_gateway::archive::{Exclude, Snapshots, WriteOptions, write_dir};

#[test]
fn an_entry_over_4_gib_is_written_with_zip64_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("data");
    std::fs::create_dir(&src).unwrap();
    let big: u64 = (4 << 30) + 12_345;
    // Sparse: 4 GiB of zeros that take no disk.
    std::fs::File::create(src.join("zeros.bin"))
        .unwrap()
        .set_len(big)
        .unwrap();
    std::fs::write(src.join("after.txt"), b"after").unwrap();
    let path = dir.path().join("big.zip");
    {
        let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let opts = WriteOptions {
            level: 1,
            exclude: Exclude::default(),
            progress: None,
            read_from: Default::default(),
        };
        write_dir(&src, &opts, &mut Snapshots::disabled(), file).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();

    // The gateway's reader, from the last 64 KiB as a restore reads them: sizes come from
    // the Zip64 extra field.
    let tail = &bytes[bytes.len().saturating_sub(65_536)..];
    let d = match reader::find_directory(tail, bytes.len() as u64).unwrap() {
        DirLookup::Found(d) => d,
        DirLookup::Zip64At(off, end) => {
            reader::parse_zip64_end(&bytes[off as usize..], end).unwrap()
        }
    };
    let cd = &bytes[d.offset as usize..(d.offset + d.size) as usize];
    let entries = reader::parse_directory(cd, d.entries).unwrap();
    let size_of = |name: &[u8]| {
        entries
            .iter()
            .find(|e| e.raw_name == name)
            .map(|e| e.uncompressed)
    };
    assert_eq!(size_of(b"zeros.bin"), Some(big));
    assert_eq!(size_of(b"after.txt"), Some(5));
    let limits = Limits {
        max_ratio: u64::MAX,
        ..Limits::default()
    };
    let plan = check_entries(entries, d.offset, &limits, &[]).unwrap();
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
