//! Settings pinned by flags or environment variables: the API cannot change them (a PATCH
//! may repeat them; changing one answers 400 naming the flag).

use super::{S3, Settings};
use serde::Serialize;
use serde_json::Value;

/// Values given explicitly by flags or environment variables: the API cannot change them.
#[derive(Debug, Clone, Default)]
pub struct Pins {
    pub app_name: Option<String>,
    pub cron: Option<String>,
    pub cron_max_keep: Option<i64>,
    /// From `--s3-bucket` and the other `--s3-*` flags (credentials from the AWS chain).
    pub s3: Option<S3>,
    pub superuser_ips: Option<Vec<String>>,
    pub trusted_proxy_headers: Option<Vec<String>>,
    pub trusted_proxy_use_leftmost_ip: Option<bool>,
    /// `--trusted-proxies`: `trustedProxy.sources`.
    pub trusted_proxy_sources: Option<Vec<String>>,
    /// `--rate-limits on|off`: `rateLimits.enabled`.
    pub rate_limits_enabled: Option<bool>,
    /// `--verify-after-create`: `backups.verifyAfterCreate`.
    pub verify_after_create: Option<String>,
    /// `--notify-url`: `backups.notifyUrl`.
    pub notify_url: Option<String>,
    /// `--pitr`: `backups.pitr`.
    pub pitr: Option<bool>,
}

/// A pinned value: where it sits in the settings' JSON, and the flag that pins it.
pub(super) struct Pin {
    pub(super) path: &'static [&'static str],
    pub(super) flag: &'static str,
    value: Value,
}

impl Pin {
    /// The value at the pin's path in `doc`, the settings as JSON.
    fn slot<'a>(&self, doc: &'a mut Value) -> Option<&'a mut Value> {
        self.path.iter().try_fold(doc, |v, key| v.get_mut(*key))
    }
}

/// The part of a value that a pin fixes: the pinned S3 section takes its credentials from
/// the AWS chain, so a PATCH that repeats the section with or without a secret is no change.
fn pinned_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(section) = v.as_object_mut() {
        section.remove("secret");
    }
    v
}

impl Pins {
    fn list(&self) -> Vec<Pin> {
        fn pin(
            path: &'static [&'static str],
            flag: &'static str,
            value: Option<Value>,
        ) -> Option<Pin> {
            value.map(|value| Pin { path, flag, value })
        }
        fn json<T: Serialize>(v: &Option<T>) -> Option<Value> {
            v.as_ref().and_then(|v| serde_json::to_value(v).ok())
        }
        [
            pin(
                &["meta", "appName"],
                "--app-name (GATEWAY_APP_NAME)",
                json(&self.app_name),
            ),
            pin(
                &["backups", "cron"],
                "--backups-cron (GATEWAY_BACKUPS_CRON)",
                json(&self.cron),
            ),
            pin(
                &["backups", "cronMaxKeep"],
                "--backups-cron-max-keep (GATEWAY_BACKUPS_CRON_MAX_KEEP)",
                json(&self.cron_max_keep),
            ),
            pin(
                &["backups", "s3"],
                "--s3-bucket (GATEWAY_S3_BUCKET)",
                json(&self.s3),
            ),
            pin(
                &["superuserIPs"],
                "--superuser-ips (GATEWAY_SUPERUSER_IPS)",
                json(&self.superuser_ips),
            ),
            pin(
                &["trustedProxy", "headers"],
                "--trusted-proxy-headers (GATEWAY_TRUSTED_PROXY_HEADERS)",
                json(&self.trusted_proxy_headers),
            ),
            pin(
                &["trustedProxy", "useLeftmostIP"],
                "--trusted-proxy-use-leftmost-ip (GATEWAY_TRUSTED_PROXY_USE_LEFTMOST_IP)",
                json(&self.trusted_proxy_use_leftmost_ip),
            ),
            pin(
                &["trustedProxy", "sources"],
                "--trusted-proxies (GATEWAY_TRUSTED_PROXIES)",
                json(&self.trusted_proxy_sources),
            ),
            pin(
                &["rateLimits", "enabled"],
                "--rate-limits (GATEWAY_RATE_LIMITS)",
                json(&self.rate_limits_enabled),
            ),
            pin(
                &["backups", "verifyAfterCreate"],
                "--verify-after-create (GATEWAY_VERIFY_AFTER_CREATE)",
                json(&self.verify_after_create),
            ),
            pin(
                &["backups", "notifyUrl"],
                "--notify-url (GATEWAY_NOTIFY_URL)",
                json(&self.notify_url),
            ),
            pin(
                &["backups", "pitr"],
                "--pitr (GATEWAY_PITR)",
                json(&self.pitr),
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// `settings` with every pinned value laid over it.
    pub(super) fn lay_over(&self, settings: Settings) -> Settings {
        let Ok(mut doc) = serde_json::to_value(&settings) else {
            return settings;
        };
        for pin in self.list() {
            if let Some(slot) = pin.slot(&mut doc) {
                *slot = pin.value;
            }
        }
        serde_json::from_value(doc).unwrap_or(settings)
    }

    /// The pins that `settings` holds another value for.
    pub(super) fn broken_by(&self, settings: &Settings) -> Vec<Pin> {
        let mut doc = serde_json::to_value(settings).unwrap_or_default();
        self.list()
            .into_iter()
            .filter(|pin| {
                pin.slot(&mut doc).map(|v| pinned_part(v)) != Some(pinned_part(&pin.value))
            })
            .collect()
    }
}
