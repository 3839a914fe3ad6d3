//! The settings that govern backups and superusers, in PocketBase's shape
//! (`GET/PATCH /api/settings`): `meta.appName`, `backups` (`cron`, `cronMaxKeep`, `s3`),
//! `superuserIPs`, `trustedProxy` and `rateLimits`.
//!
//! Where a value comes from, first match wins:
//! 1. a flag or environment variable given explicitly at start ([`Pins`]): the API cannot
//!    change it (a PATCH may repeat it; changing it answers 400 naming the flag);
//! 2. the value saved over the API, in `<dir>/.backup-gateway/settings.json` (never backed
//!    up, never replaced by a restore, kept across restarts);
//! 3. PocketBase's default (for `meta.appName`: the data directory's own PocketBase
//!    setting, then `Acme`).
//!
//! The sections the gateway does not have (`smtp`, `s3`, `batch`, `logs` and the rest of
//! `meta`) are answered with PocketBase 0.40.6's defaults, so that the SDK's
//! types and the dashboard's code find every key; values PATCHed into them are accepted
//! and ignored (they configure nothing here).
//!
//! A PATCH is merged into the current settings the way PocketBase binds it (objects key by
//! key, keys without regard to ASCII case, `null` sets the zero value, an omitted `secret`
//! keeps the stored one), then validated with PocketBase's codes and messages, then saved
//! atomically.
//!
//! The room: the types here; [`Pins`] (`pins`); the [`SettingsStore`] that merges, checks
//! and saves a PATCH (`store`); PocketBase's JSON of the settings and the merge of a
//! PATCH into it (`wire`); PocketBase's validation codes (`validate`).

mod pins;
mod store;
mod validate;
mod wire;

pub use pins::Pins;
pub use store::{PatchError, SettingsStore};
pub use validate::{parse_ip_or_subnet, validate};
pub use wire::render;

use serde::{Deserialize, Serialize};

/// PocketBase's default `cronMaxKeep`.
pub const DEFAULT_CRON_MAX_KEEP: i64 = 3;

/// The settings the gateway acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Settings {
    #[serde(rename = "superuserIPs")]
    pub superuser_ips: Vec<String>,
    pub backups: Backups,
    pub meta: Meta,
    pub trusted_proxy: TrustedProxy,
    pub rate_limits: RateLimits,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            superuser_ips: Vec::new(),
            backups: Backups {
                cron: String::new(),
                cron_max_keep: DEFAULT_CRON_MAX_KEEP,
                ..Backups::default()
            },
            meta: Meta::default(),
            trusted_proxy: TrustedProxy::default(),
            rate_limits: RateLimits::default(),
        }
    }
}

/// `rateLimits`, PocketBase's shape ([`crate::api::rate_limit`] applies them). Unlike
/// PocketBase, on by default (with PocketBase's default rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RateLimits {
    pub rules: Vec<RateLimitRule>,
    #[serde(rename = "excludedIPs")]
    pub excluded_ips: Vec<String>,
    pub enabled: bool,
}

impl Default for RateLimits {
    /// PocketBase 0.40's default rules (`core/settings_model.go`), enabled.
    fn default() -> Self {
        let rule = |label: &str, max_requests, duration| RateLimitRule {
            label: label.into(),
            audience: String::new(),
            duration,
            max_requests,
        };
        Self {
            rules: vec![
                rule("*:auth", 2, 3),
                rule("*:create", 20, 5),
                rule("/api/batch", 3, 1),
                rule("/api/", 300, 10),
            ],
            excluded_ips: Vec::new(),
            enabled: true,
        }
    }
}

/// One rule of `rateLimits.rules`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RateLimitRule {
    /// A tag (`*:auth`), a path (`/api/batch`), a path prefix (ends with `/`), optionally
    /// after a method (`POST /api/backups`).
    pub label: String,
    /// `""` (everyone), `@guest` or `@auth`.
    pub audience: String,
    /// The window, in seconds.
    pub duration: i64,
    /// Requests allowed per window and client address.
    pub max_requests: i64,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Backups {
    pub cron: String,
    pub cron_max_keep: i64,
    pub s3: S3,
    /// The gateway's addition: which creates are verified once stored (`scheduled`, `all`,
    /// `off`; empty: `scheduled`). See [`Backups::verify_after_create`].
    pub verify_after_create: String,
    /// The gateway's addition: where failures are POSTed ([`crate::ops::notify`]); empty: nowhere.
    /// Like `s3.secret`, never answered (a webhook URL often holds its token).
    pub notify_url: String,
    /// The gateway's addition: the point-in-time stream of the data directory's databases
    /// ([`crate::pitr`]; on by default, bounded by `--pitr-max-size-mib`: docs/pitr.md).
    pub pitr: bool,
}

impl Default for Backups {
    /// Go's zero values, as PocketBase's, but the point-in-time stream on. A settings file
    /// saved by a build where it was off by default holds `"pitr": false` and keeps it.
    fn default() -> Self {
        Self {
            cron: String::new(),
            cron_max_keep: 0,
            s3: S3::default(),
            verify_after_create: String::new(),
            notify_url: String::new(),
            pitr: true,
        }
    }
}

impl std::fmt::Debug for Backups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backups")
            .field("cron", &self.cron)
            .field("cron_max_keep", &self.cron_max_keep)
            .field("s3", &self.s3)
            .field("verify_after_create", &self.verify_after_create)
            .field("notify_url", &"[redacted]")
            .field("pitr", &self.pitr)
            .finish()
    }
}

/// `backups.verifyAfterCreate`: which creates are verified as soon as they are stored
/// ([`crate::verify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyAfterCreate {
    Off,
    Scheduled,
    All,
}

impl VerifyAfterCreate {
    /// The setting's words; `None` for anything else (empty is the default).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "scheduled" => Some(Self::Scheduled),
            "all" => Some(Self::All),
            "off" => Some(Self::Off),
            _ => None,
        }
    }

    /// True when a create started by `trigger` is verified.
    pub fn covers(self, trigger: crate::ops::progress::Trigger) -> bool {
        match self {
            Self::Off => false,
            Self::Scheduled => trigger == crate::ops::progress::Trigger::Schedule,
            Self::All => true,
        }
    }
}

impl Backups {
    /// The effective `verifyAfterCreate` (a saved value is always valid).
    pub fn verify_after_create(&self) -> VerifyAfterCreate {
        VerifyAfterCreate::parse(&self.verify_after_create).unwrap_or(VerifyAfterCreate::Scheduled)
    }

    /// The effective notification URL.
    pub fn notify_url(&self) -> Option<&str> {
        Some(self.notify_url.trim()).filter(|u| !u.is_empty())
    }
}

/// `backups.s3`: where the backups go when `enabled` (else the local backups directory).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct S3 {
    pub enabled: bool,
    pub bucket: String,
    pub region: String,
    pub endpoint: String,
    pub access_key: String,
    pub secret: String,
    pub force_path_style: bool,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3")
            .field("enabled", &self.enabled)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .field("secret", &"[redacted]")
            .field("force_path_style", &self.force_path_style)
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Meta {
    /// `None` until saved: then the data directory's PocketBase `meta.appName`, or the
    /// `--app-name` default. (Serialised as `null` then, so that a PATCH finds the key.)
    pub app_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TrustedProxy {
    pub headers: Vec<String>,
    #[serde(rename = "useLeftmostIP")]
    pub use_leftmost_ip: bool,
    /// The gateway's addition: the peers (addresses or CIDR subnets) whose `headers` are
    /// believed; empty, every peer (PocketBase's behaviour). See [`crate::api::client_ip`].
    pub sources: Vec<String>,
}
