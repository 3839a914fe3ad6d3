//! The files a restore writes: large ones bypass the page cache.
//!
//! A restore writes every byte once and never reads it back, so for large files the page
//! cache only costs: the kernel copies each byte into a page it first has to find (on a VM
//! whose free memory goes back to the host, every such page is a fault on the host), and
//! the final `syncfs` then writes them all. Measured on the 2-core benchmark VM, 2 GiB in
//! 4 MiB writes: 6.8–7.3 s of system CPU plus 1.1–1.3 s of sync buffered, 0.2 s of CPU and
//! no sync with `O_DIRECT` (docs/design.md, "Restore"). For files of a few KiB direct I/O
//! costs more than it saves (each write waits for the device), so only files of at least
//! [`DIRECT_MIN`] go direct.
//!
//! Direct I/O wants the buffer, the file offset and the length aligned to the device's
//! block size. [`OutFile`] stages data in an aligned buffer of [`STAGE`] bytes and writes
//! whole blocks directly; the last partial block is written through the page cache
//! (`O_DIRECT` is switched off on the handle for it). Where the file system refuses direct
//! I/O (`EINVAL` when switching it on, e.g. some FUSE or older tmpfs), or a write is
//! refused for its alignment, the file continues through the page cache: same bytes, same
//! result, only slower. Durability is unchanged: the restore still calls `syncfs` before
//! the swap (direct writes reach the device, but file sizes and the device's own cache
//! need the sync).

use std::fs::File;
use std::io::{self, Write};

/// Files at least this large are written with direct I/O.
pub const DIRECT_MIN: u64 = 1 << 20;
/// Size of each direct write (and of the staging buffer).
const STAGE: usize = 1 << 20;
/// Alignment of buffer, offsets and lengths for direct I/O: 4 KiB covers 512-byte and
/// 4 KiB logical blocks, i.e. every common device.
const ALIGN: usize = 4096;

/// A staging buffer whose usable part starts on an [`ALIGN`] boundary (no `unsafe`: the
/// allocation is [`ALIGN`] bytes larger and the aligned window is used).
pub struct Stage {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl Stage {
    pub fn new() -> Self {
        let raw = vec![0u8; STAGE + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        Self { raw, start, len: 0 }
    }

    fn filled(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

impl Default for Stage {
    fn default() -> Self {
        Self::new()
    }
}

/// A file being written by a restore, direct or through the page cache (see the module
/// docs). Bytes go in with [`OutFile::write`]; [`OutFile::finish`] writes what is staged
/// and hands the file back.
pub struct OutFile {
    file: File,
    direct: bool,
}

impl OutFile {
    /// Wraps a freshly created, empty file that will receive `size` bytes.
    pub fn new(file: File, size: u64) -> Self {
        let direct = size >= DIRECT_MIN && set_direct(&file, true).is_ok();
        Self { file, direct }
    }

    /// Whether the file is (still) written with direct I/O.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Appends `data`, staged in `stage` while direct.
    ///
    /// # Errors
    /// The write's error.
    pub fn write(&mut self, stage: &mut Stage, mut data: &[u8]) -> io::Result<()> {
        while self.direct && !data.is_empty() {
            let n = data.len().min(STAGE - stage.len);
            let at = stage.start + stage.len;
            stage.raw[at..at + n].copy_from_slice(&data[..n]);
            stage.len += n;
            data = &data[n..];
            if stage.len == STAGE {
                // Empties the stage, direct or (after a refusal) through the page cache.
                self.flush(stage, STAGE)?;
            }
        }
        if self.direct {
            Ok(())
        } else {
            self.file.write_all(data)
        }
    }

    /// Writes what is staged and returns the file.
    ///
    /// # Errors
    /// The write's error.
    pub fn finish(mut self, stage: &mut Stage) -> io::Result<File> {
        let whole = stage.len - stage.len % ALIGN;
        if whole > 0 {
            self.flush(stage, whole)?;
        }
        if stage.len > 0 {
            // The last partial block goes through the page cache.
            self.buffered()?;
            self.file.write_all(stage.filled())?;
            stage.len = 0;
        }
        Ok(self.file)
    }

    /// Writes the first `n` staged bytes (a multiple of [`ALIGN`]) and moves the rest to
    /// the front of the stage.
    fn flush(&mut self, stage: &mut Stage, n: usize) -> io::Result<()> {
        let mut done = 0;
        while done < n && self.direct {
            let from = stage.start + done;
            match self.file.write(&stage.raw[from..stage.start + n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Refused (alignment, or a file system that accepted the flag but not the
                // write): nothing was written, so the same bytes go through the page cache.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    self.buffered()?;
                }
                Err(e) => return Err(e),
            }
        }
        if done < n {
            let from = stage.start + done;
            self.file.write_all(&stage.raw[from..stage.start + n])?;
        }
        stage
            .raw
            .copy_within(stage.start + n..stage.start + stage.len, stage.start);
        stage.len -= n;
        Ok(())
    }

    fn buffered(&mut self) -> io::Result<()> {
        if self.direct {
            set_direct(&self.file, false)?;
            self.direct = false;
        }
        Ok(())
    }
}

/// Switches `O_DIRECT` on or off on an open file.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
        let flags = fcntl_getfl(file)?;
        let flags = if on {
            flags | OFlags::DIRECT
        } else {
            flags - OFlags::DIRECT
        };
        fcntl_setfl(file, flags)?;
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, on);
        Err(io::ErrorKind::Unsupported.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::test_data::noise;

    fn write_in_pieces(path: &std::path::Path, data: &[u8], piece: usize) -> bool {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .unwrap();
        let mut out = OutFile::new(file, data.len() as u64);
        let direct = out.is_direct();
        let mut stage = Stage::new();
        for chunk in data.chunks(piece) {
            out.write(&mut stage, chunk).unwrap();
        }
        let file = out.finish(&mut stage).unwrap();
        assert_eq!(stage.len, 0);
        assert_eq!(file.metadata().unwrap().len(), data.len() as u64);
        direct
    }

    #[test]
    fn every_size_round_trips_in_any_piece_size() {
        let dir = tempfile::tempdir().unwrap();
        // Around the thresholds: the direct minimum, a stage, an alignment block.
        let sizes = [
            0,
            1,
            4095,
            DIRECT_MIN as usize - 1,
            DIRECT_MIN as usize,
            DIRECT_MIN as usize + 1,
            STAGE + ALIGN,
            3 * STAGE + 12_345,
        ];
        for (i, &size) in sizes.iter().enumerate() {
            let data = noise(size, i as u64);
            for piece in [1000, 256 * 1024, STAGE + 1] {
                let path = dir.path().join(format!("f-{size}-{piece}"));
                let direct = write_in_pieces(&path, &data, piece);
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    data,
                    "size {size}, piece {piece}"
                );
                if (size as u64) < DIRECT_MIN {
                    assert!(!direct, "size {size} must go through the page cache");
                }
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_refused_direct_write_continues_through_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        // The precondition is a file system that takes direct writes but refuses unaligned
        // ones (ext4 and XFS; tmpfs takes both): elsewhere the test fails, naming it.
        let fs_type = rustix::fs::fstatfs(&file).unwrap().f_type as i64;
        assert!(
            [0xEF53, 0x5846_5342].contains(&fs_type),
            "needs TMPDIR on ext4 or XFS, not file system type {fs_type:#x}"
        );
        let mut out = OutFile::new(file, 3 * STAGE as u64);
        assert!(out.is_direct(), "ext4 and XFS take O_DIRECT");
        // An unaligned offset: the kernel refuses every direct write from there.
        std::io::Seek::seek(&mut out.file, std::io::SeekFrom::Start(1)).unwrap();
        let data = noise(3 * STAGE - 1, 7);
        let mut stage = Stage::new();
        out.write(&mut stage, &data).unwrap();
        assert!(
            !out.is_direct(),
            "the refused write went through the page cache"
        );
        out.finish(&mut stage).unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back[0], 0);
        assert_eq!(&back[1..], &data[..]);
    }
}
