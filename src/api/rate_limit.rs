//! PocketBase's `rateLimits`, applied as PocketBase 0.40 applies them
//! (`apis/middlewares_rate_limit.go`, `core/settings_model.go`):
//!
//! - a request is not limited when the limits are off, when it carries a valid superuser
//!   token (PocketBase skips superusers; the gateway has no other accounts, so rules for
//!   `@auth` never apply), or when its client address is in `excludedIPs`;
//! - the rule is the first match of PocketBase's `FindRateLimitRule` over the request's
//!   labels, in order, among the rules whose `audience` is empty or `@guest`: for each label,
//!   a rule with exactly that label, else (path labels) a rule ending in `/` that the label
//!   plus `/` starts with. The labels of the login route are `_superusers:authWithPassword`,
//!   `_superusers:auth`, `*:authWithPassword`, `*:auth`, then, as for every route,
//!   `METHOD /path` and `/path`;
//! - each rule counts per client address (PocketBase's `RealIP`) in fixed windows of
//!   `duration` seconds: the first request of a window opens it with `maxRequests` tokens,
//!   each request takes one, none left answers `429 Too Many Requests.`. The counters of
//!   the plain rules are shared by every path the rule matches; on the collection routes
//!   (logins) they are the route's own, as in PocketBase;
//! - every counter starts again when the settings are saved (PocketBase resets its
//!   limiters on a settings reload).
//!
//! Unlike PocketBase, the counters are bounded: at most [`MAX_CLIENTS`] (rule, address)
//! pairs are tracked, and a new one evicts the pair whose window opened longest ago, so the
//! limiter's memory does not grow with the addresses strangers come from.

use crate::settings::{RateLimitRule, RateLimits, Settings};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The most (rule, client) counters kept: about 150 bytes each, 3 MiB in all.
pub const MAX_CLIENTS: usize = 20_000;

/// PocketBase's id of `_superusers` and its route patterns, for the login routes' counters.
const SUPERUSERS_ID: &str = crate::auth::SUPERUSERS_COLLECTION_ID;

/// What a request is, for the rules: its labels and its counter's id per matched rule.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The decoded path (Go's `URL.Path`).
    pub path: &'a str,
}

/// The collection-route tags of the gateway's two auth routes (PocketBase's
/// `collectionPathRateLimit`), and the route's pattern.
fn collection_route(req: &Request<'_>) -> Option<(&'static str, &'static [&'static str])> {
    match (req.method, req.path) {
        ("POST", "/api/collections/_superusers/auth-with-password") => Some((
            "POST /api/collections/{collection}/auth-with-password",
            &["authWithPassword", "auth"],
        )),
        ("POST", "/api/collections/_superusers/auth-refresh") => Some((
            "POST /api/collections/{collection}/auth-refresh",
            &["authRefresh"],
        )),
        _ => None,
    }
}

/// The guest audiences (PocketBase's `defaultGuestAudience`).
const GUEST: [&str; 2] = ["", "@guest"];

/// PocketBase's `FindRateLimitRule`.
pub fn find_rule<'r>(
    rules: &'r [RateLimitRule],
    labels: &[String],
    audiences: &[&str],
) -> Option<&'r RateLimitRule> {
    let fits = |r: &RateLimitRule| audiences.is_empty() || audiences.contains(&r.audience.as_str());
    let mut prefix_rules = Vec::new();
    for (i, label) in labels.iter().enumerate() {
        for rule in rules {
            if *label == rule.label && fits(rule) {
                return Some(rule);
            }
            if i == 0 && rule.label.ends_with('/') {
                prefix_rules.push(rule);
            }
        }
        let with_slash = format!("{label}/");
        if let Some(rule) = prefix_rules
            .iter()
            .find(|r| with_slash.starts_with(r.label.as_str()) && fits(r))
        {
            return Some(rule);
        }
    }
    None
}

/// The rule that applies to a guest request, and the id of its counter.
pub fn rule_for<'r>(
    limits: &'r RateLimits,
    req: &Request<'_>,
) -> Option<(&'r RateLimitRule, String)> {
    let default_labels = [format!("{} {}", req.method, req.path), req.path.to_string()];
    match collection_route(req) {
        Some((pattern, tags)) => {
            let mut labels: Vec<String> = tags
                .iter()
                .map(|t| format!("{}:{t}", crate::auth::SUPERUSERS_COLLECTION_NAME))
                .collect();
            labels.extend(tags.iter().map(|t| format!("*:{t}")));
            labels.extend(default_labels);
            let rule = find_rule(&limits.rules, &labels, &GUEST)?;
            let id = format!("{SUPERUSERS_ID}{pattern}{}{}", tags.concat(), rule.audience);
            Some((rule, id))
        }
        None => {
            let rule = find_rule(&limits.rules, &default_labels, &GUEST)?;
            Some((rule, format!("{}{}", rule.label, rule.audience)))
        }
    }
}

/// The counters; see the module docs.
#[derive(Debug)]
pub struct Limiter {
    inner: Mutex<Inner>,
    max_clients: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// The settings the counters count for: other settings, new counters.
    settings: Option<Arc<Settings>>,
    /// Counter ids, interned (a few per rule).
    ids: HashMap<String, Arc<str>>,
    clients: HashMap<(Arc<str>, IpAddr), Client>,
    /// The clients by the start of their window, oldest first (for eviction).
    by_start: BTreeMap<(i64, u64), (Arc<str>, IpAddr)>,
    seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct Client {
    available: i64,
    start: i64,
    seq: u64,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new(MAX_CLIENTS)
    }
}

impl Limiter {
    pub fn new(max_clients: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_clients: max_clients.max(1),
        }
    }

    /// Whether a guest request `req` from `client` (PocketBase's `RealIP`) may go on under
    /// `settings` at `now` (Unix seconds); takes one of its rule's tokens when it may.
    pub fn allow(
        &self,
        settings: &Arc<Settings>,
        req: &Request<'_>,
        client: &str,
        now: i64,
    ) -> bool {
        let limits = &settings.rate_limits;
        if !limits.enabled {
            return true;
        }
        // PocketBase logs "Empty rate limit client key" and lets it through.
        let Ok(ip) = client.parse::<IpAddr>() else {
            return true;
        };
        if crate::api::client_ip::allowed(&limits.excluded_ips, client) {
            return true;
        }
        let Some((rule, id)) = rule_for(limits, req) else {
            return true;
        };
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !inner
            .settings
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, settings))
        {
            *inner = Inner {
                settings: Some(settings.clone()),
                ..Inner::default()
            };
        }
        inner.consume(id, ip, rule, now, self.max_clients)
    }

    /// How many (rule, client) counters are kept.
    pub fn tracked(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clients
            .len()
    }
}

impl Inner {
    /// PocketBase's `rateClient.consume`: a fixed window per client.
    fn consume(
        &mut self,
        id: String,
        ip: IpAddr,
        rule: &RateLimitRule,
        now: i64,
        max: usize,
    ) -> bool {
        let id = match self.ids.get(&id) {
            Some(id) => id.clone(),
            None => {
                let interned: Arc<str> = Arc::from(id.as_str());
                self.ids.insert(id, interned.clone());
                interned
            }
        };
        let key = (id, ip);
        let client = match self.clients.get(&key).copied() {
            Some(c) => c,
            None => {
                while self.clients.len() >= max {
                    let Some((_, oldest)) = self.by_start.pop_first() else {
                        break;
                    };
                    self.clients.remove(&oldest);
                }
                self.seq += 1;
                // A new client's window opens now (PocketBase starts it at 0, which is the
                // same: its first request resets it).
                let c = Client {
                    available: rule.max_requests,
                    start: now,
                    seq: self.seq,
                };
                self.by_start.insert((c.start, c.seq), key.clone());
                c
            }
        };
        let mut c = client;
        if now - c.start >= rule.duration {
            self.by_start.remove(&(c.start, c.seq));
            c.available = rule.max_requests;
            c.start = now;
            self.by_start.insert((c.start, c.seq), key.clone());
        }
        let allowed = c.available > 0;
        if allowed {
            c.available -= 1;
        }
        self.clients.insert(key, c);
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(label: &str, audience: &str, max: i64, duration: i64) -> RateLimitRule {
        RateLimitRule {
            label: label.into(),
            audience: audience.into(),
            max_requests: max,
            duration,
        }
    }

    fn settings(rules: Vec<RateLimitRule>) -> Arc<Settings> {
        Arc::new(Settings {
            rate_limits: RateLimits {
                rules,
                excluded_ips: vec!["10.9.0.0/16".into()],
                enabled: true,
            },
            ..Settings::default()
        })
    }

    const LOGIN: Request<'static> = Request {
        method: "POST",
        path: "/api/collections/_superusers/auth-with-password",
    };
    const LIST: Request<'static> = Request {
        method: "GET",
        path: "/api/backups",
    };

    #[test]
    fn pocketbase_default_rules_pick_auth_for_logins_and_the_api_prefix_for_the_rest() {
        let s = Settings::default();
        let limits = &s.rate_limits;
        assert!(limits.enabled, "on by default in the gateway");
        let (r, id) = rule_for(limits, &LOGIN).unwrap();
        assert_eq!(r.label, "*:auth");
        assert_eq!(
            id,
            "pbc_3142635823POST /api/collections/{collection}/auth-with-passwordauthWithPasswordauth"
        );
        let (r, id) = rule_for(limits, &LIST).unwrap();
        assert_eq!((r.label.as_str(), id.as_str()), ("/api/", "/api/"));
        assert!(
            rule_for(
                limits,
                &Request {
                    method: "GET",
                    path: "/_/"
                }
            )
            .is_none()
        );
        // `/api` itself: "/api" + "/" starts with "/api/".
        assert_eq!(
            rule_for(
                limits,
                &Request {
                    method: "GET",
                    path: "/api"
                }
            )
            .unwrap()
            .0
            .label,
            "/api/"
        );
    }

    #[test]
    fn exact_labels_method_qualified_labels_prefixes_and_audiences_match_like_pocketbase() {
        let rules = vec![
            rule("/api/", "", 300, 10),
            rule("POST /api/backups", "", 1, 10),
            rule("/api/backups", "@auth", 1, 10),
            rule("GET /api/settings/", "@guest", 1, 10),
        ];
        let find = |m, p| {
            let labels = [format!("{m} {p}"), String::from(p)];
            find_rule(&rules, &labels, &GUEST).map(|r| r.label.clone())
        };
        assert_eq!(find("POST", "/api/backups").unwrap(), "POST /api/backups");
        // `@auth` rules are not for guests: the prefix rule applies.
        assert_eq!(find("GET", "/api/backups").unwrap(), "/api/");
        // A method-qualified prefix, checked with the first label (before `/api/`).
        assert_eq!(
            find("GET", "/api/settings/test").unwrap(),
            "GET /api/settings/"
        );
        // The first label's exact match wins over an earlier prefix rule.
        assert_eq!(find("POST", "/api/backups").unwrap(), "POST /api/backups");
        assert!(find("GET", "/other").is_none());
    }

    #[test]
    fn a_fixed_window_per_client_refuses_past_max_requests_and_opens_again() {
        let limiter = Limiter::default();
        let s = settings(vec![rule("*:auth", "", 2, 3), rule("/api/", "", 3, 10)]);
        let login = |ip: &str, now| limiter.allow(&s, &LOGIN, ip, now);
        assert!(login("1.1.1.1", 100));
        assert!(login("1.1.1.1", 101));
        assert!(!login("1.1.1.1", 102));
        // Another address has its own counter; the window opens again after 3 s.
        assert!(login("1.1.1.2", 102));
        assert!(login("1.1.1.1", 103));
        // Excluded addresses are never counted.
        for _ in 0..10 {
            assert!(limiter.allow(&s, &LOGIN, "10.9.1.1", 103));
        }
        // The `/api/` counter is shared by every path under it.
        let get = |p: &'static str| {
            limiter.allow(
                &s,
                &Request {
                    method: "GET",
                    path: p,
                },
                "1.1.1.1",
                200,
            )
        };
        assert!(get("/api/backups") && get("/api/settings") && get("/api/health"));
        assert!(!get("/api/backups"));
    }

    #[test]
    fn new_settings_start_every_counter_again() {
        let limiter = Limiter::default();
        let s = settings(vec![rule("*:auth", "", 1, 60)]);
        assert!(limiter.allow(&s, &LOGIN, "1.1.1.1", 0));
        assert!(!limiter.allow(&s, &LOGIN, "1.1.1.1", 1));
        let saved = Arc::new((*s).clone());
        assert!(limiter.allow(&saved, &LOGIN, "1.1.1.1", 2));
    }

    #[test]
    fn the_counters_are_bounded_and_the_oldest_window_goes_first() {
        let limiter = Limiter::new(3);
        let s = settings(vec![rule("*:auth", "", 1, 60)]);
        assert!(limiter.allow(&s, &LOGIN, "1.1.1.1", 0));
        for (i, ip) in ["1.1.1.2", "1.1.1.3", "1.1.1.4", "1.1.1.5"]
            .iter()
            .enumerate()
        {
            assert!(limiter.allow(&s, &LOGIN, ip, 1 + i as i64));
        }
        assert_eq!(limiter.tracked(), 3);
        // 1.1.1.1 (the oldest) was evicted: it starts again; 1.1.1.5 is still counted.
        assert!(!limiter.allow(&s, &LOGIN, "1.1.1.5", 10));
        assert!(limiter.allow(&s, &LOGIN, "1.1.1.1", 10));
    }
}
