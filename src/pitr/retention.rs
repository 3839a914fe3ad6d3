//! Retention of the point-in-time history (`--pitr-retention-days`): whole histories are
//! deleted once their last moment is older than the retention, the newest of each database
//! always kept. A stream begins a new history (a fresh base) every `--pitr-base-hours`, so
//! histories end and the old ones can go; a segment is never deleted from a history that
//! is kept, since every moment of it rests on the ones before.

use super::layout::History;
use std::collections::BTreeMap;

/// How long a history without a base may be in the making before it counts as abandoned
/// (a base upload that a crash cut short).
const ABANDONED_AFTER_MS: i64 = 24 * 3600 * 1000;

/// The keys of the histories to delete at `now_ms`, keeping `keep_ms` of history.
pub fn expired(
    histories: &BTreeMap<String, Vec<History>>,
    now_ms: i64,
    keep_ms: i64,
) -> Vec<String> {
    let cutoff = now_ms.saturating_sub(keep_ms);
    let mut out = Vec::new();
    for hs in histories.values() {
        // The newest (last by start) is always kept.
        let Some((_, older)) = hs.split_last() else {
            continue;
        };
        for h in older {
            let expired = h.end_ms() < cutoff;
            let abandoned = h.base.is_none() && h.start_ms < now_ms - ABANDONED_AFTER_MS;
            if expired || abandoned {
                out.extend(h.base.iter().map(|b| b.0.clone()));
                out.extend(h.segments.iter().map(|s| s.key.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::layout::{self, base_key, segment_key};
    use super::*;

    const DAY: i64 = 24 * 3600 * 1000;

    #[test]
    fn histories_past_the_retention_go_whole_and_the_newest_always_stays() {
        let now = 100 * DAY;
        let h = |start: i64| format!("{start:013}-abcdef");
        let (old, kept, newest) = (h(now - 10 * DAY), h(now - 8 * DAY), h(now - 20 * DAY + 1));
        let mut listing = vec![
            (base_key("data.db", &old, 4096), 1),
            (
                segment_key("data.db", &old, (0, 0), now - 10 * DAY, now - 9 * DAY),
                1,
            ),
            (base_key("data.db", &kept, 4096), 1),
            // Ends inside the retention: kept, every segment of it.
            (
                segment_key("data.db", &kept, (0, 0), now - 8 * DAY, now - 6 * DAY),
                1,
            ),
            // The only history of another database, long ended: kept (the newest).
            (base_key("aux.db", &newest, 4096), 1),
        ];
        listing.sort();
        let parsed = layout::parse(&listing);
        let mut gone = expired(&parsed, now, 7 * DAY);
        gone.sort();
        let mut want = vec![
            base_key("data.db", &old, 4096),
            segment_key("data.db", &old, (0, 0), now - 10 * DAY, now - 9 * DAY),
        ];
        want.sort();
        assert_eq!(gone, want);
    }

    #[test]
    fn a_history_whose_base_never_arrived_goes_after_a_day() {
        let now = 100 * DAY;
        let h = |start: i64| format!("{start:013}-abcdef");
        let (cut, newest) = (h(now - 2 * DAY), h(now - DAY / 2));
        let listing = vec![
            (
                segment_key("data.db", &cut, (0, 0), now - 2 * DAY, now - 2 * DAY),
                1,
            ),
            (base_key("data.db", &newest, 4096), 1),
        ];
        let gone = expired(&layout::parse(&listing), now, 7 * DAY);
        assert_eq!(gone, vec![listing[0].0.clone()]);
    }
}
