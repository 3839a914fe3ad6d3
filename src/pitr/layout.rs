//! Where the point-in-time history lives in the store: its keys are built and parsed only
//! here.
//!
//! `.pitr/v1/<db>/<history>/base-<page size>.db`, `.../ready-<ms>`, `.../end-<ms>` and
//! `.pitr/v1/<db>/<history>/<n>-<m>-<first>-<last>.seg`, where
//! - `<db>` is the database's path in the data directory, percent-encoded (`/` too);
//! - `<history>` is `<start ms, 13 digits>-<6 random letters>`: one continuous history of
//!   the database, from its base image on. A new one begins when continuity is lost (the
//!   gateway started, a restore, a WAL restart it did not see, another store);
//! - `<n>` numbers the history's segments from 0 (10 digits); an object holds the segments
//!   `<n>` to `<m>`: one as the stream ships it (`n = m`), a minute's packed into one, or
//!   an hour of those packed again ([`super::compact`]); `<first>`/`<last>` are the times of
//!   its first and last commits (Unix ms, 13 digits);
//! - `ready-<ms>` (empty) is written once the base is stored and every commit up to `<ms>`
//!   captured: the history can be restored from that moment on (a history without it
//!   cannot be restored at all);
//! - `end-<ms>` (empty) is written when the stream ended the history cleanly (a stop, a
//!   restore, a new base): nothing was committed between its last segment and `<ms>`. A
//!   history without it (the gateway was killed) is known only up to its last commit.
//!
//! Times live in the keys, so one listing plans a restore with no further requests. The
//! keys hold `/` and start with `.`: `GET /api/backups` never lists them (nor pages
//! through them: the listing stops at `/`), and the API cannot address them
//! ([`crate::keys::check_key`]). Their names end in `.db` and `.seg`, never `.zip`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// The namespace of the history in the store.
pub const NAMESPACE: &str = ".pitr/v1/";

/// Characters kept as they are in a database's name.
const NAME: &AsciiSet = &NON_ALPHANUMERIC.remove(b'.').remove(b'-').remove(b'_');

/// The prefix of every object of the database at `rel` (its path in the data directory).
pub fn db_prefix(rel: &str) -> String {
    format!("{NAMESPACE}{}/", utf8_percent_encode(rel, NAME))
}

/// A new history's name, begun at `start_ms`.
pub fn history(start_ms: i64) -> String {
    format!("{start_ms:013}-{}", crate::util::fsutil::random_lower(6))
}

pub fn ready_key(rel: &str, history: &str, at_ms: i64) -> String {
    format!("{}{history}/ready-{at_ms:013}", db_prefix(rel))
}

pub fn end_key(rel: &str, history: &str, at_ms: i64) -> String {
    format!("{}{history}/end-{at_ms:013}", db_prefix(rel))
}

pub fn base_key(rel: &str, history: &str, page_size: u32) -> String {
    format!("{}{history}/base-{page_size}.db", db_prefix(rel))
}

/// The key of the object holding the segments `n..=m` of a history.
pub fn segment_key(rel: &str, history: &str, n: (u64, u64), first_ms: i64, last_ms: i64) -> String {
    format!(
        "{}{history}/{:010}-{:010}-{first_ms:013}-{last_ms:013}.seg",
        db_prefix(rel),
        n.0,
        n.1
    )
}

/// One stored object of segments, from its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRef {
    pub key: String,
    /// The first and last segment numbers it holds.
    pub n: u64,
    pub m: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub size: u64,
}

/// One history of a database, from the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub name: String,
    pub start_ms: i64,
    /// The base image's key, page size and size (none: its upload never finished).
    pub base: Option<(String, u32, u64)>,
    /// From when it can be restored (none: never; its `ready` marker is missing).
    pub ready_ms: Option<i64>,
    /// When the stream ended it cleanly, if it did.
    pub end_marker_ms: Option<i64>,
    /// The markers' keys (for retention).
    pub markers: Vec<String>,
    /// In order of `n`.
    pub segments: Vec<SegmentRef>,
}

impl History {
    /// The last moment this history is known up to: its end marker, else its last
    /// commit, else its start.
    pub fn end_ms(&self) -> i64 {
        let last_commit = self
            .segments
            .iter()
            .map(|s| s.last_ms)
            .max()
            .unwrap_or(self.start_ms);
        self.end_marker_ms
            .map_or(last_commit, |e| e.max(last_commit))
    }

    /// Whether it can be restored: its base and its `ready` marker are stored.
    pub fn usable(&self) -> bool {
        self.base.is_some() && self.ready_ms.is_some()
    }

    /// The bytes its base and its segment objects take in the store.
    pub fn stored_bytes(&self) -> u64 {
        self.base.as_ref().map_or(0, |b| b.2) + self.segments.iter().map(|s| s.size).sum::<u64>()
    }

    /// Every key it holds.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.base
            .iter()
            .map(|b| &b.0)
            .chain(self.segments.iter().map(|s| &s.key))
            .chain(self.markers.iter())
    }

    /// The fewest objects that hold the segments 0, 1, 2, ... with none missing, up to the
    /// first that is: at each step the object that starts where the last ended and reaches
    /// furthest (a compacted one over the segments it replaced, which a crash between the
    /// compaction's write and its deletes leaves behind).
    pub fn chain(&self) -> Vec<SegmentRef> {
        let mut out: Vec<SegmentRef> = Vec::new();
        let mut next = 0u64;
        loop {
            let best = self
                .segments
                .iter()
                .filter(|s| s.n == next && s.m >= s.n)
                .max_by_key(|s| s.m);
            let Some(best) = best else {
                return out;
            };
            next = best.m + 1;
            out.push(best.clone());
        }
    }
}

/// Every database's histories, oldest first, from a listing of [`NAMESPACE`]; keys that do
/// not parse are left out.
pub fn parse(listing: &[(String, u64)]) -> std::collections::BTreeMap<String, Vec<History>> {
    let mut out: std::collections::BTreeMap<String, std::collections::BTreeMap<String, History>> =
        std::collections::BTreeMap::new();
    for (key, size) in listing {
        let Some(rest) = key.strip_prefix(NAMESPACE) else {
            continue;
        };
        let mut parts = rest.splitn(3, '/');
        let (Some(db), Some(name), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(db) = percent_decode_str(db).decode_utf8() else {
            continue;
        };
        let Some(start_ms) = name.split_once('-').and_then(|(t, _)| t.parse().ok()) else {
            continue;
        };
        let history = out
            .entry(db.into_owned())
            .or_default()
            .entry(name.to_string())
            .or_insert_with(|| History {
                name: name.to_string(),
                start_ms,
                base: None,
                ready_ms: None,
                end_marker_ms: None,
                markers: Vec::new(),
                segments: Vec::new(),
            });
        let marker = |prefix: &str| -> Option<i64> { file.strip_prefix(prefix)?.parse().ok() };
        if let Some(t) = marker("ready-") {
            history.ready_ms = Some(t);
            history.markers.push(key.clone());
            continue;
        }
        if let Some(t) = marker("end-") {
            history.end_marker_ms = Some(t);
            history.markers.push(key.clone());
            continue;
        }
        if let Some(page_size) = file
            .strip_prefix("base-")
            .and_then(|f| f.strip_suffix(".db"))
            .and_then(|p| p.parse().ok())
        {
            history.base = Some((key.clone(), page_size, *size));
        } else if let Some(seg) = parse_segment(key, file, *size) {
            history.segments.push(seg);
        }
    }
    out.into_iter()
        .map(|(db, histories)| {
            let mut histories: Vec<History> = histories.into_values().collect();
            for h in &mut histories {
                h.segments.sort_by_key(|s| (s.n, s.m));
            }
            histories.sort_by(|a, b| (a.start_ms, &a.name).cmp(&(b.start_ms, &b.name)));
            (db, histories)
        })
        .collect()
}

fn parse_segment(key: &str, file: &str, size: u64) -> Option<SegmentRef> {
    let stem = file.strip_suffix(".seg")?;
    let mut f = stem.splitn(4, '-');
    Some(SegmentRef {
        key: key.to_string(),
        n: f.next()?.parse().ok()?,
        m: f.next()?.parse().ok()?,
        first_ms: f.next()?.parse().ok()?,
        last_ms: f.next()?.parse().ok()?,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_into_histories_in_order() {
        let h1 = "0001700000000000-aaaaaa";
        let h2 = "0001700000009000-bbbbbb";
        let listing = vec![
            (
                segment_key("sub/x.db", h1, (1, 1), 1_700_000_002_000, 1_700_000_003_000),
                10,
            ),
            (
                segment_key("sub/x.db", h1, (0, 0), 1_700_000_000_000, 1_700_000_001_000),
                11,
            ),
            (base_key("sub/x.db", h1, 4096), 4096),
            (base_key("sub/x.db", h2, 4096), 8192),
            (format!("{NAMESPACE}garbage"), 1),
            ("pb_backup.zip".to_string(), 1),
        ];
        assert!(listing[0].0.starts_with(".pitr/v1/sub%2Fx.db/"));
        let parsed = parse(&listing);
        let histories = &parsed["sub/x.db"];
        assert_eq!(histories.len(), 2);
        assert_eq!(histories[0].name, h1);
        assert_eq!(histories[0].start_ms, 1_700_000_000_000);
        assert_eq!(histories[0].base.as_ref().unwrap().1, 4096);
        assert_eq!(histories[0].segments[0].n, 0);
        assert_eq!(histories[0].chain().len(), 2);
        assert_eq!(histories[0].end_ms(), 1_700_000_003_000);
        assert_eq!(histories[1].end_ms(), histories[1].start_ms);
        // Its base and its segments; the other keys are not its.
        assert_eq!(histories[0].stored_bytes(), 4096 + 10 + 11);
        assert_eq!(histories[1].stored_bytes(), 8192);
    }

    #[test]
    fn a_missing_segment_ends_the_chain_and_a_compacted_object_replaces_its_parts() {
        let h = "0001700000000000-aaaaaa";
        let listing = vec![
            (segment_key("data.db", h, (0, 0), 1, 2), 1),
            (segment_key("data.db", h, (2, 2), 5, 6), 1),
        ];
        let parsed = parse(&listing);
        assert_eq!(parsed["data.db"][0].chain().len(), 1);
        // The compaction wrote 0..=3 and had not yet deleted its parts.
        let listing = vec![
            (segment_key("data.db", h, (0, 0), 1, 2), 1),
            (segment_key("data.db", h, (0, 3), 1, 8), 1),
            (segment_key("data.db", h, (1, 1), 3, 4), 1),
            (segment_key("data.db", h, (4, 4), 9, 9), 1),
        ];
        let chain: Vec<(u64, u64)> = parse(&listing)["data.db"][0]
            .chain()
            .iter()
            .map(|s| (s.n, s.m))
            .collect();
        assert_eq!(chain, vec![(0, 3), (4, 4)]);
    }
}
