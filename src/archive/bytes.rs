//! The byte-level helpers of the zip format, both directions: little-endian integers and
//! MS-DOS times, and the read loops that tolerate interrupted system calls.

use std::io::{self, Read};

pub fn put_u16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

/// The little-endian `u16` at `at` (the caller has checked the bounds).
pub fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// The little-endian `u32` at `at` (the caller has checked the bounds).
pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// The little-endian `u64` at `at` (the caller has checked the bounds).
pub fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// MS-DOS time and date of a Unix time (UTC; clamped to 1980-2107).
pub fn dos_datetime(unix: i64) -> (u16, u16) {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    if t.year() < 1980 {
        return (0, (1 << 5) | 1);
    }
    if t.year() > 2107 {
        return ((23 << 11) | (59 << 5) | 29, (127 << 9) | (12 << 5) | 31);
    }
    let time = ((t.hour() as u16) << 11) | ((t.minute() as u16) << 5) | (t.second() as u16 / 2);
    let date = (((t.year() - 1980) as u16) << 9) | ((t.month() as u16) << 5) | t.day() as u16;
    (time, date)
}

/// The Unix time of an MS-DOS time and date (taken as UTC), `None` when they are invalid.
pub fn dos_to_unix(time: u16, date: u16) -> Option<i64> {
    let year = 1980 + i32::from(date >> 9);
    let month = time::Month::try_from(((date >> 5) & 0xF) as u8).ok()?;
    let day = (date & 0x1F) as u8;
    let d = time::Date::from_calendar_date(year, month, day).ok()?;
    let t = time::Time::from_hms(
        (time >> 11) as u8,
        ((time >> 5) & 0x3F) as u8,
        ((time & 0x1F) * 2) as u8,
    )
    .ok()?;
    Some(
        time::PrimitiveDateTime::new(d, t)
            .assume_utc()
            .unix_timestamp(),
    )
}

/// Skips `n` bytes of `r`.
///
/// # Errors
/// Read errors, or an end before `n` bytes.
pub fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied != n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "archive ended early",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dos_times_are_encoded_clamped_and_decoded() {
        // 2024-01-02 03:04:06 UTC
        let (t, d) = dos_datetime(1_704_164_646);
        assert_eq!(t, (3 << 11) | (4 << 5) | 3);
        assert_eq!(d, (44 << 9) | (1 << 5) | 2);
        assert_eq!(dos_to_unix(t, d), Some(1_704_164_646));
        assert_eq!(dos_datetime(0), (0, (1 << 5) | 1));
        assert_eq!(dos_to_unix(0, 0), None, "month 0 is no date");
    }

    #[test]
    fn integers_round_trip_little_endian() {
        let mut b = Vec::new();
        put_u16(&mut b, 0x0102);
        put_u32(&mut b, 0x0304_0506);
        put_u64(&mut b, 0x0708_090a_0b0c_0d0e);
        assert_eq!(&b[..2], &[2, 1]);
        assert_eq!(
            (le16(&b, 0), le32(&b, 2), le64(&b, 6)),
            (0x0102, 0x0304_0506, 0x0708_090a_0b0c_0d0e)
        );
    }
}
