//! PocketBase's JSON of the settings (`GET /api/settings`: every section PocketBase 0.40.6
//! answers, the gateway's additions, secrets never), and a PATCH merged into it the way
//! PocketBase binds one.

use super::PatchError;
use super::{Backups, Settings, TrustedProxy};
use serde_json::{Map, Value, json};

/// `settings` as PocketBase answers it: every section, PocketBase's defaults for those the
/// gateway does not have, secrets left out. `app_name` is the effective `meta.appName`.
pub fn render(settings: &Settings, app_name: &str) -> Value {
    let s3 = &settings.backups.s3;
    let mut out = json!({
        "superuserIPs": settings.superuser_ips,
        "smtp": {"enabled": false, "port": 587, "host": "smtp.example.com", "username": "", "authMethod": "", "tls": false, "localName": ""},
        "backups": {
            "cron": settings.backups.cron,
            "cronMaxKeep": settings.backups.cron_max_keep,
            "s3": {
                "enabled": s3.enabled,
                "bucket": s3.bucket,
                "region": s3.region,
                "endpoint": s3.endpoint,
                "accessKey": s3.access_key,
                "forcePathStyle": s3.force_path_style,
            },
        },
        "s3": {"enabled": false, "bucket": "", "region": "", "endpoint": "", "accessKey": "", "forcePathStyle": false},
        "meta": {
            "accentColor": "#1055c9",
            "appName": app_name,
            "appURL": "http://localhost:8090",
            "senderName": "Support",
            "senderAddress": "support@example.com",
            "hideControls": false,
        },
        "rateLimits": {
            "rules": settings.rate_limits.rules,
            "excludedIPs": settings.rate_limits.excluded_ips,
            "enabled": settings.rate_limits.enabled,
        },
        "trustedProxy": trusted_proxy(&settings.trusted_proxy),
        "batch": {"enabled": false, "maxRequests": 50, "timeout": 3, "maxBodySize": 0},
        "logs": {"maxDataSize": 0, "maxDays": 5, "minLevel": 0, "logIP": true, "logAuthId": false},
    });
    backups_additions(&settings.backups, &mut out["backups"]);
    out
}

/// The gateway's additions to `backups`: `pitr` (on by default, so always answered), and
/// those answered only when set (so that the answer stays PocketBase's where they are not
/// used): `verifyAfterCreate`, and `notifyUrlSet` for a notification URL, which is never
/// answered itself.
fn backups_additions(b: &Backups, out: &mut Value) {
    if !b.verify_after_create.is_empty() {
        out["verifyAfterCreate"] = json!(b.verify_after_create);
    }
    if b.notify_url().is_some() {
        out["notifyUrlSet"] = json!(true);
    }
    out["pitr"] = json!(b.pitr);
}

/// `trustedProxy` as PocketBase answers it, plus `sources` when there are any (so that the
/// answer stays PocketBase's where the gateway's addition is not used).
fn trusted_proxy(p: &TrustedProxy) -> Value {
    let mut v = json!({"headers": p.headers, "useLeftmostIP": p.use_leftmost_ip});
    if !p.sources.is_empty() {
        v["sources"] = json!(p.sources);
    }
    v
}

/// PocketBase's binding of a JSON body into the current settings: objects merge key by key
/// (a key matches without regard to ASCII case; two keys of the body that match the same
/// setting are refused, as PocketBase refuses them), `null` sets the zero value (an empty
/// string, 0, false, an empty list, or all of an object's values), anything else replaces.
pub(super) fn merge(target: &mut Value, patch: &Map<String, Value>) -> Result<(), PatchError> {
    let Value::Object(target) = target else {
        return Ok(());
    };
    let mut seen = std::collections::HashSet::new();
    for (key, value) in patch {
        let Some(k) = target.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned() else {
            // Not a setting the gateway has: ignored (see the module docs).
            continue;
        };
        if !seen.insert(k.clone()) {
            return Err(PatchError::Load);
        }
        let slot = target.get_mut(&k).expect("found above");
        match value {
            Value::Null => zero(slot),
            Value::Object(inner) if slot.is_object() => merge(slot, inner)?,
            v => *slot = v.clone(),
        }
    }
    Ok(())
}

/// Go's zero value of what `v` holds (`null`, an unsaved `meta.appName`, becomes "").
fn zero(v: &mut Value) {
    match v {
        Value::Null | Value::String(_) => *v = Value::String(String::new()),
        Value::Bool(b) => *b = false,
        Value::Number(_) => *v = Value::from(0),
        Value::Array(a) => a.clear(),
        Value::Object(o) => o.values_mut().for_each(zero),
    }
}
