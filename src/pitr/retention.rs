//! Retention of the point-in-time history: whole histories are deleted once their last
//! moment is older than the retention (`--pitr-retention-days`), and, oldest first, while a
//! database's histories take more than the size bound (`--pitr-max-size-mib`); the newest
//! restorable history of each database (and any begun after it) always kept. A stream
//! begins a new history (a fresh base) every `--pitr-base-hours`, and when its history
//! reaches half the size bound, so histories end and the old ones can go; a segment is
//! never deleted from a history that is kept, since every moment of it rests on the ones
//! before.

use super::layout::History;
use std::collections::BTreeMap;

/// How long a history that cannot be restored (its base or `ready` marker missing) may be in
/// the making before it counts as abandoned (a base upload that a crash cut short).
const ABANDONED_AFTER_MS: i64 = 24 * 3600 * 1000;

/// What [`expired`] found.
#[derive(Debug, Default)]
pub struct Expired {
    /// The objects to delete.
    pub keys: Vec<String>,
    /// Histories past the retention (or abandoned).
    pub past_retention: usize,
    /// Histories inside the retention, deleted for the size bound.
    pub past_size: usize,
    /// A database's histories still take more than the size bound, with an older one kept
    /// only because the newest is not restorable yet (its `ready` marker is not stored yet):
    /// worth looking again soon.
    pub unsettled: bool,
}

/// The keys of the histories to delete at `now_ms`, keeping `keep_ms` of history and at
/// most `max_bytes` of each database's: a history goes once the next restorable one began
/// before the cutoff (every moment it covers is older than the retention; an idle
/// database's history covers the time up to the next one, commits or not), or once it
/// and the histories after it take more than `max_bytes` (every older one then goes too:
/// the window stays one span). `writing`: the history each stream writes now, by
/// database (one not restorable in the listing yet is one in the making).
pub fn expired(
    histories: &BTreeMap<String, Vec<History>>,
    now_ms: i64,
    keep_ms: i64,
    max_bytes: Option<u64>,
    writing: &BTreeMap<String, String>,
) -> Expired {
    let mut out = Expired::default();
    for (db, hs) in histories {
        let mut gone = by_age(hs, now_ms, keep_ms);
        out.past_retention += gone.iter().filter(|g| **g).count();
        if let Some(max) = max_bytes {
            let making = writing
                .get(db)
                .is_some_and(|w| !hs.iter().any(|h| &h.name == w && h.usable()));
            let (by_size, unsettled) = by_size(hs, &gone, max, making);
            out.unsettled |= unsettled;
            out.past_size += by_size
                .iter()
                .zip(&gone)
                .filter(|(s, a)| **s && !**a)
                .count();
            gone = by_size;
        }
        for (h, gone) in hs.iter().zip(gone) {
            if gone {
                out.keys.extend(h.keys().cloned());
            }
        }
    }
    out
}

/// Which of a database's histories (oldest first) the size bound deletes, beside those
/// `gone` already: from the newest, the histories are kept while they fit in `max` (the
/// newest restorable one and those begun after it always), and every older one goes. And
/// whether they take more than `max` while one begun after the newest restorable one is
/// not restorable yet (`making`: the stream writes one not in the listing, or not
/// restorable there): once it is, the one before can go.
fn by_size(hs: &[History], gone: &[bool], max: u64, making: bool) -> (Vec<bool>, bool) {
    let mut out = gone.to_vec();
    let mut total = 0u64;
    let mut restorable_kept = false;
    let mut in_the_making = making;
    let mut full = false;
    for (i, h) in hs.iter().enumerate().rev() {
        if out[i] {
            continue;
        }
        total = total.saturating_add(h.stored_bytes());
        if !restorable_kept {
            restorable_kept = h.usable();
            in_the_making |= !h.usable();
            continue;
        }
        full |= total > max;
        out[i] = full;
    }
    (out, in_the_making && total > max)
}

/// Which of a database's histories (oldest first) the retention deletes.
fn by_age(hs: &[History], now_ms: i64, keep_ms: i64) -> Vec<bool> {
    let cutoff = now_ms.saturating_sub(keep_ms);
    let mut out = vec![false; hs.len()];
    // The newest (last by start) is always kept.
    let Some((_, older)) = hs.split_last() else {
        return out;
    };
    for (i, h) in older.iter().enumerate() {
        let next_ready = hs[i + 1..]
            .iter()
            .filter(|n| n.usable())
            .find_map(|n| n.ready_ms);
        let expired = h.usable() && next_ready.is_some_and(|r| r < cutoff);
        let abandoned = !h.usable() && h.start_ms < now_ms - ABANDONED_AFTER_MS;
        out[i] = expired || abandoned;
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

    /// The keys [`expired`] deletes from `listing` at `now` for a 7-day retention and no
    /// size bound, sorted.
    fn by_age_only(listing: &[(String, u64)], now: i64) -> Vec<String> {
        let histories = layout::parse(listing);
        let mut gone = expired(&histories, now, 7 * DAY, None, &BTreeMap::new()).keys;
        gone.sort();
        gone
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
        let gone = by_age_only(&listing, now);
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
        let gone = by_age_only(&listing, now);
        want.sort();
        assert_eq!(gone, want);
    }

    #[test]
    fn past_the_size_bound_the_oldest_histories_go_and_the_newest_restorable_stays() {
        let now = 100 * DAY;
        // Four restorable histories of 30 bytes each (base 10, segment 20), and one begun
        // after them whose base is not stored yet: all inside the retention.
        let sized = |start: i64| -> Vec<(String, u64)> {
            let name = h(start);
            vec![
                (base_key("data.db", &name, 4096), 10),
                (ready_key("data.db", &name, start), 0),
                (segment_key("data.db", &name, (0, 0), start, start + 1), 20),
            ]
        };
        let starts = [now - 4 * DAY, now - 3 * DAY, now - 2 * DAY, now - DAY];
        let mut listing: Vec<(String, u64)> = starts.iter().flat_map(|s| sized(*s)).collect();
        let making = h(now - 1000);
        listing.push((segment_key("data.db", &making, (0, 0), now, now), 5));
        listing.sort();
        let histories = layout::parse(&listing);
        let keys_of =
            |i: usize| -> Vec<String> { sized(starts[i]).into_iter().map(|(k, _)| k).collect() };
        let gone = |max| {
            let mut g = expired(&histories, now, 7 * DAY, Some(max), &BTreeMap::new());
            g.keys.sort();
            (g.keys, g.past_size, g.past_retention)
        };
        // Over the bound until the one in the making is restorable: looked at again soon.
        let none = BTreeMap::new();
        assert!(expired(&histories, now, 7 * DAY, Some(64), &none).unsettled);
        assert!(!expired(&histories, now, 7 * DAY, Some(125), &none).unsettled);
        // A stream writing a history the listing does not hold yet: the same.
        let only_restorable: BTreeMap<_, _> = histories
            .iter()
            .map(|(db, hs)| (db.clone(), hs[..4].to_vec()))
            .collect();
        let newer = BTreeMap::from([("data.db".to_string(), h(now))]);
        assert!(!expired(&only_restorable, now, 7 * DAY, Some(64), &none).unsettled);
        assert!(expired(&only_restorable, now, 7 * DAY, Some(64), &newer).unsettled);
        // Writing the newest restorable one: settled.
        let newest = BTreeMap::from([("data.db".to_string(), h(starts[3]))]);
        assert!(!expired(&only_restorable, now, 7 * DAY, Some(64), &newest).unsettled);
        // 65 bytes: the one in the making (5) and the two newest (60) fit; the two oldest go.
        let mut want: Vec<String> = [keys_of(0), keys_of(1)].concat();
        want.sort();
        assert_eq!(gone(65), (want, 2, 0));
        // 64: only the newest restorable one stays beside the one in the making.
        let mut want: Vec<String> = [keys_of(0), keys_of(1), keys_of(2)].concat();
        want.sort();
        assert_eq!(gone(64), (want.clone(), 3, 0));
        // Smaller than the newest restorable history: it stays all the same.
        assert_eq!(gone(1), (want, 3, 0));
        // Everything fits: nothing goes; without a bound neither.
        assert_eq!(gone(125), (Vec::new(), 0, 0));
        assert!(
            expired(&histories, now, 7 * DAY, None, &none)
                .keys
                .is_empty()
        );
    }
}
