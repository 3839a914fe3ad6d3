//! The settings checked with PocketBase's validation codes and messages: a map of field
//! errors in its shape, empty when valid.

use super::{Backups, Meta, RateLimitRule, RateLimits, S3, Settings, VerifyAfterCreate};
use crate::error::FieldError;
use serde_json::{Map, Value, json};

/// PocketBase's checks of the sections the gateway has, with its codes and messages.
pub fn validate(s: &Settings) -> Map<String, Value> {
    let mut errors = Map::new();
    validate_ips(&s.superuser_ips, &["superuserIPs"], &mut errors);
    validate_rate_limits(&s.rate_limits, &mut errors);
    validate_ips(
        &s.trusted_proxy.sources,
        &["trustedProxy", "sources"],
        &mut errors,
    );
    validate_meta(&s.meta, &mut errors);
    validate_backups(&s.backups, &mut errors);
    validate_s3(&s.backups.s3, &mut errors);
    errors
}

/// Each of `ips` an address or a CIDR subnet; errors at `path` and the item's index.
fn validate_ips(ips: &[String], path: &[&str], errors: &mut Map<String, Value>) {
    for (i, ip) in ips.iter().enumerate() {
        let err = if ip.is_empty() {
            FieldError::required()
        } else if parse_ip_or_subnet(ip).is_none() {
            FieldError::new(
                "validation_invlaid_ip_or_subnet",
                "Invalid IP or CIDR subnet.",
            )
        } else {
            continue;
        };
        let index = i.to_string();
        let mut at = path.to_vec();
        at.push(&index);
        insert_at_owned(errors, &at, err);
    }
}

/// `meta.appName`: 1 to 255 characters when given.
fn validate_meta(meta: &Meta, errors: &mut Map<String, Value>) {
    let Some(name) = &meta.app_name else {
        return;
    };
    let len = name.chars().count();
    if len == 0 {
        insert_at(errors, &["meta", "appName"], FieldError::required());
    } else if len > 255 {
        insert_at(
            errors,
            &["meta", "appName"],
            FieldError::new(
                "validation_length_out_of_range",
                "The length must be between 1 and 255.",
            )
            .with_params(json!({"max": 255, "min": 1})),
        );
    }
}

/// `backups`: the cron expression, `cronMaxKeep` (required with a schedule), and the
/// gateway's `verifyAfterCreate` and `notifyUrl`.
fn validate_backups(b: &Backups, errors: &mut Map<String, Value>) {
    if VerifyAfterCreate::parse(&b.verify_after_create).is_none() {
        insert_at(
            errors,
            &["backups", "verifyAfterCreate"],
            FieldError::new(
                "validation_in_invalid",
                "Must be a valid value (scheduled, all or off).",
            ),
        );
    }
    if let Some(url) = b.notify_url()
        && !reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
    {
        insert_at(
            errors,
            &["backups", "notifyUrl"],
            FieldError::new("validation_is_url", "Must be a valid url."),
        );
    }
    if !b.cron.is_empty()
        && let Err(e) = crate::schedule::cron::Schedule::parse(&b.cron)
    {
        insert_at(
            errors,
            &["backups", "cron"],
            FieldError::new("validation_invalid_cron", e.sentence()),
        );
    }
    if !b.cron.is_empty() && b.cron_max_keep == 0 {
        insert_at(errors, &["backups", "cronMaxKeep"], FieldError::required());
    } else if b.cron_max_keep < 0 {
        insert_at(
            errors,
            &["backups", "cronMaxKeep"],
            FieldError::new(
                "validation_min_greater_equal_than_required",
                "Must be no less than 1.",
            )
            .with_params(json!({"threshold": 1})),
        );
    }
}

/// `backups.s3`: a valid endpoint URL when given; every field required when enabled.
fn validate_s3(s3: &S3, errors: &mut Map<String, Value>) {
    if !s3.endpoint.is_empty() && !is_endpoint_url(&s3.endpoint) {
        insert_at(
            errors,
            &["backups", "s3", "endpoint"],
            FieldError::new("validation_is_url", "Must be a valid URL."),
        );
    }
    if s3.enabled {
        let required = [
            ("endpoint", &s3.endpoint),
            ("bucket", &s3.bucket),
            ("region", &s3.region),
            ("accessKey", &s3.access_key),
            ("secret", &s3.secret),
        ];
        for (name, value) in required {
            if value.is_empty() {
                insert_at_owned(errors, &["backups", "s3", name], FieldError::required());
            }
        }
    }
}

/// PocketBase's `RateLimitsConfig.Validate`: rules required when enabled, labels unique
/// (checked before the rules themselves, whose errors then do not show), each rule's label
/// format, `maxRequests` and `duration` at least 1, `audience` one of the three; every
/// excluded IP an address or subnet.
fn validate_rate_limits(r: &RateLimits, errors: &mut Map<String, Value>) {
    if r.enabled && r.rules.is_empty() {
        insert_at(errors, &["rateLimits", "rules"], FieldError::required());
    } else if let Some((i, label)) = conflicting_rule(&r.rules) {
        let index = i.to_string();
        insert_at_owned(
            errors,
            &["rateLimits", "rules", &index, "label"],
            FieldError::new(
                "validation_conflicting_rate_limit_rule",
                format!(
                    "Rate limit rule configuration with label {label} already exists or conflicts with another rule."
                ),
            )
            .with_params(json!({"label": label})),
        );
    } else {
        for (i, rule) in r.rules.iter().enumerate() {
            let index = i.to_string();
            for (field, err) in rule_errors(rule) {
                if let Some(err) = err {
                    insert_at_owned(errors, &["rateLimits", "rules", &index, field], err);
                }
            }
        }
    }
    validate_ips(&r.excluded_ips, &["rateLimits", "excludedIPs"], errors);
}

/// One rule's errors by field: the label's format, `maxRequests` and `duration` at least
/// 1, `audience` one of the three.
fn rule_errors(rule: &RateLimitRule) -> [(&'static str, Option<FieldError>); 4] {
    let min_one = || {
        FieldError::new(
            "validation_min_greater_equal_than_required",
            "Must be no less than 1.",
        )
        .with_params(json!({"threshold": 1}))
    };
    let at_least_one = |n: i64| match n {
        0 => Some(FieldError::required()),
        n if n < 1 => Some(min_one()),
        _ => None,
    };
    let label = if rule.label.is_empty() {
        Some(FieldError::required())
    } else if !is_rate_limit_label(&rule.label) {
        Some(FieldError::new(
            "validation_match_invalid",
            "Must be in a valid format.",
        ))
    } else {
        None
    };
    let audience = (!["", "@guest", "@auth"].contains(&rule.audience.as_str()))
        .then(|| FieldError::new("validation_in_invalid", "Must be a valid value."));
    [
        ("label", label),
        ("maxRequests", at_least_one(rule.max_requests)),
        ("duration", at_least_one(rule.duration)),
        ("audience", audience),
    ]
}

/// PocketBase's `checkUniqueRuleLabel`: the first rule whose `label@@audience` is a prefix
/// of an earlier one's or has one as its prefix.
fn conflicting_rule(rules: &[RateLimitRule]) -> Option<(usize, &str)> {
    let mut existing: Vec<String> = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let full = format!("{}@@{}", rule.label, rule.audience);
        if existing
            .iter()
            .any(|k| k.starts_with(&full) || full.starts_with(k.as_str()))
        {
            return Some((i, rule.label.as_str()));
        }
        existing.push(full);
    }
    None
}

/// PocketBase's `rateLimitRuleLabelRegex`,
/// `^(\w+\ \/[\w\/-]*|\/[\w\/-]*|^\w+\:\w+|\*\:\w+|\w+)$` (Go's `\w`: ASCII
/// letters, digits and `_`).
fn is_rate_limit_label(label: &str) -> bool {
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let path = |s: &str| {
        s.strip_prefix('/').is_some_and(|rest| {
            rest.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'/' || b == b'-')
        })
    };
    if let Some((method, rest)) = label.split_once(' ')
        && word(method)
        && path(rest)
    {
        return true;
    }
    if path(label) || word(label) {
        return true;
    }
    match label.split_once(':') {
        Some((a, b)) => (a == "*" || word(a)) && word(b),
        None => false,
    }
}

/// An S3 endpoint the client can use: `http://` or `https://` and a host, no white space.
/// (PocketBase's URL check is looser: it also takes `localhost:9000` or `ftp://x`, which no
/// S3 client can reach; the gateway refuses them when they are saved, not at the first
/// backup.)
fn is_endpoint_url(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    !host.is_empty() && !s.chars().any(char::is_whitespace) && s.len() < 2083
}

/// An IP address or a CIDR subnet, as Go's `netip.ParsePrefix` / `ParseAddr` take them.
pub fn parse_ip_or_subnet(s: &str) -> Option<ipnet::IpNet> {
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Some(net);
    }
    s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from)
}

/// Removes the errors at `path` (and the parents it leaves empty).
pub(super) fn drop_at(errors: &mut Map<String, Value>, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        errors.remove(*first);
        return;
    }
    if let Some(Value::Object(inner)) = errors.get_mut(*first) {
        drop_at(inner, rest);
        if inner.is_empty() {
            errors.remove(*first);
        }
    }
}

pub(super) fn insert_at(errors: &mut Map<String, Value>, path: &[&'static str], err: FieldError) {
    insert_at_owned(errors, path, err);
}

fn insert_at_owned(errors: &mut Map<String, Value>, path: &[&str], err: FieldError) {
    let (last, parents) = path.split_last().expect("a path");
    let mut node = errors;
    for p in parents {
        let entry = node
            .entry((*p).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        node = entry.as_object_mut().expect("an object");
    }
    node.insert((*last).to_string(), err.to_json());
}
