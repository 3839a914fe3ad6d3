//! S3's rules for multipart uploads, which every store backend and the create follow: every
//! part but the last between 5 MiB and 5 GiB, part numbers from 1 without gaps, at most
//! 10,000 parts.

/// The smallest size of every part but the last.
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// The largest size of a part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;
/// The most parts of one upload.
pub const MAX_PARTS: u64 = 10_000;
const MIB: u64 = 1024 * 1024;

/// The part size for an archive of at most `expected_size` bytes: the configured minimum,
/// grown (in whole MiB) so that 10,000 parts hold the archive with room to spare. Every part
/// but the last has this size (Cloudflare R2 requires equal parts).
pub fn part_size_for(min_part_size: u64, expected_size: u64) -> u64 {
    // 10% headroom for zip overhead on incompressible data, and for files that grow while
    // the archive is being made.
    let needed = (expected_size + expected_size / 10).div_ceil(MAX_PARTS);
    let needed = needed.div_ceil(MIB) * MIB;
    needed.max(min_part_size).max(MIN_PART_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_so_ten_thousand_parts_suffice() {
        assert_eq!(part_size_for(16 * MIB, 0), 16 * MIB);
        assert_eq!(part_size_for(5 * MIB, 1024 * MIB), 5 * MIB);
        let tib = 1024 * 1024 * MIB;
        let p = part_size_for(16 * MIB, tib);
        assert!(p * MAX_PARTS >= tib + tib / 10);
        assert_eq!(p % MIB, 0);
    }
}
