//! Retention of the point-in-time history (`--pitr-retention-days`): whole histories are
//! deleted once their last moment is older than the retention, the newest of each database
//! always kept. A stream begins a new history (a fresh base) every `--pitr-base-hours`, so
//! histories end and the old ones can go; a segment is never deleted from a history that
//! is kept, since every moment of it rests on the ones before.

use super::layout::History;
use std::collections::BTreeMap;

/// How long a history that cannot be restored (its base or `ready` marker missing) may be in
/// the making before it counts as abandoned (a base upload that a crash cut short).
const ABANDONED_AFTER_MS: i64 = 24 * 3600 * 1000;

/// The keys of the histories to delete at `now_ms`, keeping `keep_ms` of history: a history
/// goes once the next restorable one began before the cutoff (every moment it covers is
/// older than the retention; an idle database's history covers the time up to the next
/// one, commits or not).
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
        for (i, h) in older.iter().enumerate() {
            let next_ready = hs[i + 1..]
                .iter()
                .filter(|n| n.usable())
                .find_map(|n| n.ready_ms);
            let expired = h.usable() && next_ready.is_some_and(|r| r < cutoff);
            let abandoned = !h.usable() && h.start_ms < now_ms - ABANDONED_AFTER_MS;
            if expired || abandoned {
                out.extend(h.keys().cloned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::layout::{self, base_key, ready_key, segment_key};
    use super::*;

    const DAY: i64 = 24 * 3600 * 1000;

    fn h(start: i64) -> String {
        format!("{start:013}-abcdef")
    }

    /// A restorable history begun at `start`, with one segment from `start` to `last`.
    fn restorable(db: &str, start: i64, last: i64) -> Vec<(String, u64)> {
        let name = h(start);
        vec![
            (base_key(db, &name, 4096), 1),
            (ready_key(db, &name, start), 0),
            (segment_key(db, &name, (0, 0), start, last), 1),
        ]
    }

    #[test]
    fn a_history_goes_once_the_next_began_before_the_cutoff_and_the_newest_stays() {
        let now = 100 * DAY;
        let mut listing = Vec::new();
        // Idle for days: no commit after its first, but it covers the time to the next.
        listing.extend(restorable("data.db", now - 20 * DAY, now - 20 * DAY));
        listing.extend(restorable("data.db", now - 9 * DAY, now - 9 * DAY));
        listing.extend(restorable("data.db", now - 6 * DAY, now - 5 * DAY));
        // The only history of another database, long ended: kept (the newest).
        listing.extend(restorable("aux.db", now - 30 * DAY, now - 30 * DAY));
        listing.sort();
        let mut gone = expired(&layout::parse(&listing), now, 7 * DAY);
        gone.sort();
        // The first goes (the second began 9 days ago); the second stays: it covers the
        // moments from 9 to 6 days ago, inside the retention.
        let mut want: Vec<String> = restorable("data.db", now - 20 * DAY, now - 20 * DAY)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        want.sort();
        assert_eq!(gone, want);
    }

    #[test]
    fn a_history_that_never_became_restorable_goes_after_a_day() {
        let now = 100 * DAY;
        // A base stored, but no `ready` marker: the gateway died before it was written.
        let cut = h(now - 2 * DAY);
        let mut want = vec![
            base_key("data.db", &cut, 4096),
            segment_key("data.db", &cut, (0, 0), now - 2 * DAY, now - 2 * DAY),
        ];
        let mut listing: Vec<(String, u64)> = want.iter().map(|k| (k.clone(), 1)).collect();
        listing.extend(restorable("data.db", now - DAY / 2, now - DAY / 2));
        listing.sort();
        let mut gone = expired(&layout::parse(&listing), now, 7 * DAY);
        gone.sort();
        want.sort();
        assert_eq!(gone, want);
    }
}
