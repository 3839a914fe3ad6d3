//! Compression choices and chunk Deflate: whether data is worth Deflating ([`compresses`],
//! [`looks_random`]), and the raw Deflate of one chunk of a file ([`deflate_chunk`]), the
//! unit the create's workers compress independently.

use crate::archive::zip::spec::{METHOD_DEFLATE, METHOD_STORED};
use crate::archive::zip::writer::Counting;
use flate2::write::DeflateEncoder;
use flate2::{Compress, Compression, FlushCompress, Status};
use std::io::{self, Write};

/// Bytes of a large file probed to choose its method.
pub const PROBE_LEN: usize = 64 * 1024;

/// True if a Deflate at level 1 of `probe` saves at least 5%: media and archives do not
/// compress, and storing them is several times faster.
pub fn compresses(probe: &[u8]) -> bool {
    if probe.len() < 512 {
        return true;
    }
    if looks_random(probe) {
        return false;
    }
    let mut enc = DeflateEncoder::new(Counting::new(io::sink()), Compression::fast());
    if enc.write_all(probe).is_err() {
        return true;
    }
    match enc.finish() {
        Ok(c) => c.count < (probe.len() as u64) * 95 / 100,
        Err(_) => true,
    }
}

/// Bytes per byte value above which data is taken for already compressed (JPEG, MP4, zip,
/// encrypted): near 8 bits of Shannon entropy per byte. Text and databases are far below
/// (4-6 bits); the estimate of random data from a 2 KiB sample is above 7.85.
const RANDOM_ENTROPY_BITS: f64 = 7.8;

/// True when `data`'s byte histogram has the entropy of compressed data, so that Deflate
/// would not shrink it. Costs a pass over a sample, a fraction of what trying Deflate
/// costs; used to skip that attempt. The sample is 16 KiB in four slices spread over the
/// first 64 KiB (a file that starts with a compressed header and goes on as text is still
/// seen as text), so that the test costs little beside the Deflate it saves.
pub fn looks_random(data: &[u8]) -> bool {
    const SLICE: usize = 4 * 1024;
    let region = &data[..data.len().min(64 * 1024)];
    if region.len() < 1024 {
        return false;
    }
    let mut counts = [0u32; 256];
    let mut n = 0usize;
    let mut count = |slice: &[u8]| {
        for &b in slice {
            counts[usize::from(b)] += 1;
        }
        n += slice.len();
    };
    if region.len() <= 4 * SLICE {
        count(region);
    } else {
        let step = (region.len() - SLICE) / 3;
        for i in 0..4 {
            count(&region[i * step..i * step + SLICE]);
        }
    }
    let n = n as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    entropy > RANDOM_ENTROPY_BITS
}

/// A whole small file as it is stored: Deflated when that makes it smaller, else as it is.
/// Returns the method and the stored bytes.
///
/// # Errors
/// A failure of the compressor.
pub fn smaller(deflate: &mut Compress, level: u32, data: Vec<u8>) -> io::Result<(u16, Vec<u8>)> {
    let packed = if level > 0 && !looks_random(&data) {
        Some(deflate_chunk(deflate, &data, true, Vec::new())?)
    } else {
        None
    };
    Ok(match packed {
        Some(packed) if packed.len() < data.len() => (METHOD_DEFLATE, packed),
        _ => (METHOD_STORED, data),
    })
}

/// Raw Deflate of one chunk: ends with a sync flush (byte-aligned, not final) unless it is
/// the last chunk of its file, which finishes the stream. The output goes into `out`.
pub fn deflate_chunk(
    c: &mut Compress,
    data: &[u8],
    last: bool,
    mut out: Vec<u8>,
) -> io::Result<Vec<u8>> {
    c.reset();
    out.clear();
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    out.reserve(data.len() / 2 + 1024);
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let consumed = usize::try_from(c.total_in()).unwrap_or(usize::MAX);
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == data.len();
        match status {
            Status::StreamEnd => return Ok(out),
            // A sync flush is complete when all input is in and the call left room in the
            // output (zlib fills the output while it has anything pending).
            Status::Ok | Status::BufError if !last && all_in && out.len() < out.capacity() => {
                return Ok(out);
            }
            Status::Ok | Status::BufError => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn random_bytes(len: usize) -> Vec<u8> {
        crate::archive::test_data::noise(len, 1)
    }

    #[test]
    fn random_bytes_look_random_and_text_or_small_data_does_not() {
        let random = random_bytes(70_000);
        assert!(looks_random(&random));
        assert!(looks_random(&random[..2048]));
        assert!(!compresses(&random[..64 * 1024]));
        let text = b"{\"id\":\"abc123\",\"title\":\"the quick brown fox\"}\n".repeat(2000);
        assert!(!looks_random(&text));
        assert!(compresses(&text[..64 * 1024]));
        assert!(!looks_random(&random[..512]), "too small to judge");
    }

    #[test]
    fn random_bytes_are_stored_and_text_is_deflated() {
        let text = b"hello world ".repeat(1000);
        assert!(compresses(&text));
        assert!(!compresses(&random_bytes(65536)));
        let mut c = Compress::new(Compression::new(6), false);
        assert_eq!(smaller(&mut c, 6, text.clone()).unwrap().0, METHOD_DEFLATE);
        assert_eq!(smaller(&mut c, 0, text).unwrap().0, METHOD_STORED);
        assert_eq!(
            smaller(&mut c, 6, random_bytes(5000)).unwrap().0,
            METHOD_STORED
        );
    }

    #[test]
    fn chunks_concatenate_into_one_valid_deflate_stream() {
        let text: Vec<u8> = (0..3_000_000u32)
            .map(|i| b"abcdefghij"[(i % 7 + i / 1000 % 3) as usize])
            .collect();
        let mut c = Compress::new(Compression::new(1), false);
        let mut stream = Vec::new();
        let chunks: Vec<&[u8]> = text.chunks(1 << 20).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            stream.extend(deflate_chunk(&mut c, chunk, i + 1 == chunks.len(), Vec::new()).unwrap());
        }
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(&stream[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out == text);
        assert!(stream.len() < text.len() / 4);
    }

    #[test]
    fn an_empty_last_chunk_finishes_the_stream() {
        let mut c = Compress::new(Compression::new(6), false);
        let mut stream = deflate_chunk(&mut c, b"hello", false, Vec::new()).unwrap();
        stream.extend(deflate_chunk(&mut c, b"", true, Vec::new()).unwrap());
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(&stream[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"hello");
    }
}
