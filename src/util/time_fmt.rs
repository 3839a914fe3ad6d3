//! Timestamps in PocketBase's format, `YYYY-MM-DD hh:mm:ss.sssZ` (UTC, milliseconds).

use time::OffsetDateTime;
use time::macros::format_description;

/// Formats `t` as PocketBase does: `2023-05-19 16:25:57.542Z`.
pub fn pb(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .expect("formatting a valid date cannot fail")
}

/// Parses PocketBase's format back; `None` for anything else.
pub fn parse_pb(s: &str) -> Option<OffsetDateTime> {
    let t = time::PrimitiveDateTime::parse(
        s,
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]Z"),
    )
    .ok()?;
    Some(t.assume_utc())
}

/// Unix milliseconds in PocketBase's format (clamped to the years 1970..9999).
pub fn format_ms(ms: i64) -> String {
    let ms = ms.clamp(0, 253_402_300_799_999);
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    pb(t)
}

/// A time given by a client: PocketBase's format, or RFC 3339 (`2026-12-06T23:00:00Z`).
pub fn parse_client(s: &str) -> Option<OffsetDateTime> {
    parse_pb(s).or_else(|| {
        OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339).ok()
    })
}

/// Unix milliseconds of `t`.
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Now, in PocketBase's format.
pub fn now_pb() -> String {
    pb(OffsetDateTime::now_utc())
}

/// `YYYYMMDDhhmmss` (UTC), as in PocketBase's default backup names.
pub fn compact(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(format_description!(
        "[year][month][day][hour][minute][second]"
    ))
    .expect("formatting a valid date cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_like_pocketbase() {
        let t = datetime!(2023-05-19 16:25:57.542_9 UTC);
        assert_eq!(pb(t), "2023-05-19 16:25:57.542Z");
        assert_eq!(compact(t), "20230519162557");
        assert_eq!(
            parse_pb(&pb(t)),
            Some(datetime!(2023-05-19 16:25:57.542 UTC))
        );
        assert_eq!(parse_pb("2023-05-19"), None);
    }
}
