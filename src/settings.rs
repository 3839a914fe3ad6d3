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

use crate::error::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

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

/// `rateLimits`, PocketBase's shape ([`crate::rate_limit`] applies them). Unlike
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

#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Backups {
    pub cron: String,
    pub cron_max_keep: i64,
    pub s3: S3,
    /// The gateway's addition: which creates are verified once stored (`scheduled`, `all`,
    /// `off`; empty: `scheduled`). See [`Backups::verify_after_create`].
    pub verify_after_create: String,
    /// The gateway's addition: where failures are POSTed ([`crate::notify`]); empty: nowhere.
    /// Like `s3.secret`, never answered (a webhook URL often holds its token).
    pub notify_url: String,
}

impl std::fmt::Debug for Backups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backups")
            .field("cron", &self.cron)
            .field("cron_max_keep", &self.cron_max_keep)
            .field("s3", &self.s3)
            .field("verify_after_create", &self.verify_after_create)
            .field("notify_url", &"[redacted]")
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
    pub fn covers(self, trigger: crate::progress::Trigger) -> bool {
        match self {
            Self::Off => false,
            Self::Scheduled => trigger == crate::progress::Trigger::Schedule,
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
}

/// A pinned value: where it sits in the settings' JSON, and the flag that pins it.
struct Pin {
    path: &'static [&'static str],
    flag: &'static str,
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
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// `settings` with every pinned value laid over it.
    fn lay_over(&self, settings: Settings) -> Settings {
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
    fn broken_by(&self, settings: &Settings) -> Vec<Pin> {
        let mut doc = serde_json::to_value(settings).unwrap_or_default();
        self.list()
            .into_iter()
            .filter(|pin| {
                pin.slot(&mut doc).map(|v| pinned_part(v)) != Some(pinned_part(&pin.value))
            })
            .collect()
    }
}

/// Why a PATCH was refused.
#[derive(Debug)]
pub enum PatchError {
    /// Not a JSON object, or a value of the wrong type: PocketBase's "loading" error.
    Load,
    /// Field errors, nested as PocketBase nests them (`{"backups": {"cron": {...}}}`).
    Invalid(Map<String, Value>),
    /// The settings could not be saved.
    Save(std::io::Error),
}

/// The current settings, shared by every request; see the module docs.
pub struct SettingsStore {
    path: PathBuf,
    pins: Pins,
    current: RwLock<Arc<Settings>>,
    /// Serialises PATCHes (read, merge, validate, save).
    writing: Mutex<()>,
}

impl std::fmt::Debug for SettingsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettingsStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SettingsStore {
    /// Reads the saved settings of `data_dir` (PocketBase's defaults when there are none)
    /// and lays the pins over them.
    ///
    /// # Errors
    /// When the file exists but cannot be read or parsed: the gateway does not start on
    /// settings it cannot understand.
    pub fn open(data_dir: &Path, pins: Pins) -> std::io::Result<Self> {
        let path = crate::state_dir::settings(data_dir);
        let saved = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Settings>(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Settings::default(),
            Err(e) => return Err(e),
        };
        let saved = pins.lay_over(saved);
        Ok(Self {
            path,
            pins,
            current: RwLock::new(Arc::new(saved)),
            writing: Mutex::new(()),
        })
    }

    pub fn current(&self) -> Arc<Settings> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Merges `patch` into the current settings, validates and saves the result.
    ///
    /// # Errors
    /// See [`PatchError`]; nothing changes on error.
    pub fn patch(&self, patch: &Value) -> Result<Arc<Settings>, PatchError> {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let Value::Object(patch) = patch else {
            return Err(PatchError::Load);
        };
        let old = self.current();
        let mut doc = serde_json::to_value(&*old).map_err(|_| PatchError::Load)?;
        merge(&mut doc, patch)?;
        let new: Settings = serde_json::from_value(doc).map_err(|_| PatchError::Load)?;
        let mut errors = validate(&new);
        if self.pins.s3.is_some() {
            // The pinned store was checked at start and takes its credentials from the
            // AWS chain (never shown, never saved): its section is not the API's to check,
            // only not to change (below).
            drop_at(&mut errors, &["backups", "s3"]);
        }
        for pin in self.pins.broken_by(&new) {
            insert_at(
                &mut errors,
                pin.path,
                FieldError::new(
                    "validation_pinned_by_flag",
                    format!("Set by {} at start; change it there.", pin.flag),
                ),
            );
        }
        if !errors.is_empty() {
            return Err(PatchError::Invalid(errors));
        }
        let bytes = serde_json::to_vec_pretty(&new).map_err(|e| PatchError::Save(e.into()))?;
        crate::fsutil::write_atomic(&self.path, &bytes, 0o600).map_err(PatchError::Save)?;
        let new = Arc::new(new);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        Ok(new)
    }
}

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

/// The gateway's additions to `backups`, answered only when set (so that the answer stays
/// PocketBase's where they are not used): `verifyAfterCreate`, and `notifyUrlSet` for a
/// notification URL, which is never answered itself.
fn backups_additions(b: &Backups, out: &mut Value) {
    if !b.verify_after_create.is_empty() {
        out["verifyAfterCreate"] = json!(b.verify_after_create);
    }
    if b.notify_url().is_some() {
        out["notifyUrlSet"] = json!(true);
    }
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
fn merge(target: &mut Value, patch: &Map<String, Value>) -> Result<(), PatchError> {
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

/// PocketBase's checks of the sections the gateway has, with its codes and messages.
pub fn validate(s: &Settings) -> Map<String, Value> {
    let mut errors = Map::new();
    for (i, ip) in s.superuser_ips.iter().enumerate() {
        let err = if ip.is_empty() {
            Some(FieldError::required())
        } else if parse_ip_or_subnet(ip).is_none() {
            Some(FieldError::new(
                "validation_invlaid_ip_or_subnet",
                "Invalid IP or CIDR subnet.",
            ))
        } else {
            None
        };
        if let Some(err) = err {
            let index = i.to_string();
            insert_at_owned(&mut errors, &["superuserIPs", &index], err);
        }
    }
    validate_rate_limits(&s.rate_limits, &mut errors);
    if VerifyAfterCreate::parse(&s.backups.verify_after_create).is_none() {
        insert_at_owned(
            &mut errors,
            &["backups", "verifyAfterCreate"],
            FieldError::new(
                "validation_in_invalid",
                "Must be a valid value (scheduled, all or off).",
            ),
        );
    }
    if let Some(url) = s.backups.notify_url()
        && !reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
    {
        insert_at_owned(
            &mut errors,
            &["backups", "notifyUrl"],
            FieldError::new("validation_is_url", "Must be a valid url."),
        );
    }
    for (i, ip) in s.trusted_proxy.sources.iter().enumerate() {
        let err = if ip.is_empty() {
            Some(FieldError::required())
        } else if parse_ip_or_subnet(ip).is_none() {
            Some(FieldError::new(
                "validation_invlaid_ip_or_subnet",
                "Invalid IP or CIDR subnet.",
            ))
        } else {
            None
        };
        if let Some(err) = err {
            let index = i.to_string();
            insert_at_owned(&mut errors, &["trustedProxy", "sources", &index], err);
        }
    }
    if let Some(name) = &s.meta.app_name {
        let len = name.chars().count();
        if len == 0 {
            insert_at(&mut errors, &["meta", "appName"], FieldError::required());
        } else if len > 255 {
            insert_at(
                &mut errors,
                &["meta", "appName"],
                FieldError::new(
                    "validation_length_out_of_range",
                    "The length must be between 1 and 255.",
                )
                .with_params(json!({"max": 255, "min": 1})),
            );
        }
    }
    let b = &s.backups;
    if !b.cron.is_empty()
        && let Err(e) = crate::cron::Schedule::parse(&b.cron)
    {
        insert_at(
            &mut errors,
            &["backups", "cron"],
            FieldError::new("validation_invalid_cron", e.sentence()),
        );
    }
    if !b.cron.is_empty() && b.cron_max_keep == 0 {
        insert_at(
            &mut errors,
            &["backups", "cronMaxKeep"],
            FieldError::required(),
        );
    } else if b.cron_max_keep < 0 {
        insert_at(
            &mut errors,
            &["backups", "cronMaxKeep"],
            FieldError::new(
                "validation_min_greater_equal_than_required",
                "Must be no less than 1.",
            )
            .with_params(json!({"threshold": 1})),
        );
    }
    let s3 = &b.s3;
    if !s3.endpoint.is_empty() && !is_endpoint_url(&s3.endpoint) {
        insert_at(
            &mut errors,
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
                insert_at_owned(
                    &mut errors,
                    &["backups", "s3", name],
                    FieldError::required(),
                );
            }
        }
    }
    errors
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
            let min_one = || {
                FieldError::new(
                    "validation_min_greater_equal_than_required",
                    "Must be no less than 1.",
                )
                .with_params(json!({"threshold": 1}))
            };
            let checks = [
                (
                    "label",
                    if rule.label.is_empty() {
                        Some(FieldError::required())
                    } else if !is_rate_limit_label(&rule.label) {
                        Some(FieldError::new(
                            "validation_match_invalid",
                            "Must be in a valid format.",
                        ))
                    } else {
                        None
                    },
                ),
                (
                    "maxRequests",
                    match rule.max_requests {
                        0 => Some(FieldError::required()),
                        n if n < 1 => Some(min_one()),
                        _ => None,
                    },
                ),
                (
                    "duration",
                    match rule.duration {
                        0 => Some(FieldError::required()),
                        n if n < 1 => Some(min_one()),
                        _ => None,
                    },
                ),
                (
                    "audience",
                    (!["", "@guest", "@auth"].contains(&rule.audience.as_str())).then(|| {
                        FieldError::new("validation_in_invalid", "Must be a valid value.")
                    }),
                ),
            ];
            for (field, err) in checks {
                if let Some(err) = err {
                    insert_at_owned(errors, &["rateLimits", "rules", &index, field], err);
                }
            }
        }
    }
    for (i, ip) in r.excluded_ips.iter().enumerate() {
        let err = if ip.is_empty() {
            Some(FieldError::required())
        } else if parse_ip_or_subnet(ip).is_none() {
            Some(FieldError::new(
                "validation_invlaid_ip_or_subnet",
                "Invalid IP or CIDR subnet.",
            ))
        } else {
            None
        };
        if let Some(err) = err {
            let index = i.to_string();
            insert_at_owned(errors, &["rateLimits", "excludedIPs", &index], err);
        }
    }
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
fn drop_at(errors: &mut Map<String, Value>, path: &[&str]) {
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

fn insert_at(errors: &mut Map<String, Value>, path: &[&'static str], err: FieldError) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn store(pins: Pins) -> (tempfile::TempDir, SettingsStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SettingsStore::open(dir.path(), pins).unwrap();
        (dir, s)
    }

    fn invalid(r: Result<Arc<Settings>, PatchError>) -> Value {
        match r {
            Err(PatchError::Invalid(m)) => Value::Object(m),
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    #[test]
    fn patches_merge_keep_the_secret_and_survive_a_reopen() {
        let (dir, s) = store(Pins::default());
        let s3 = json!({"backups": {"s3": {"enabled": true, "endpoint": "http://127.0.0.1:9000",
            "bucket": "b", "region": "r", "accessKey": "a", "secret": "top"}}});
        s.patch(&s3).unwrap();
        s.patch(&json!({"backups": {"cron": "@daily"}})).unwrap();
        // An omitted secret, a key in another case, a null (the zero value, as in
        // PocketBase) and an unknown section.
        let new = s
            .patch(&json!({"BACKUPS": {"s3": {"bucket": "b2"}, "cron": null}, "smtp": {"port": 1}}))
            .unwrap();
        assert_eq!(new.backups.s3.bucket, "b2");
        assert_eq!(new.backups.s3.secret, "top");
        assert_eq!(new.backups.cron, "");
        // Two keys for one setting are refused, as PocketBase refuses them.
        assert!(matches!(
            s.patch(&json!({"backups": {"cron": "@hourly", "Cron": "@daily"}})),
            Err(PatchError::Load)
        ));
        let rendered = render(&new, "Acme");
        assert!(rendered["backups"]["s3"].get("secret").is_none());
        assert_eq!(rendered["smtp"]["port"], 587);
        let reopened = SettingsStore::open(dir.path(), Pins::default()).unwrap();
        assert_eq!(*reopened.current(), *new);
    }

    #[test]
    fn invalid_values_get_pocketbase_codes_and_change_nothing() {
        let (_d, s) = store(Pins::default());
        let before = s.current();
        let e = invalid(s.patch(&json!({
            "superuserIPs": ["1.2.3.4", "", "nope", "10.0.0.0/8", "::1", "fe80::/10", "1.2.3.4/33"],
            "backups": {"cron": "* * * * *", "cronMaxKeep": 0, "s3": {"enabled": true, "endpoint": "not a url"}},
            "meta": {"appName": ""},
        })));
        assert_eq!(
            e,
            json!({
                "superuserIPs": {
                    "1": {"code": "validation_required", "message": "Cannot be blank."},
                    "2": {"code": "validation_invlaid_ip_or_subnet", "message": "Invalid IP or CIDR subnet."},
                    "6": {"code": "validation_invlaid_ip_or_subnet", "message": "Invalid IP or CIDR subnet."},
                },
                "backups": {
                    "cronMaxKeep": {"code": "validation_required", "message": "Cannot be blank."},
                    "s3": {
                        "endpoint": {"code": "validation_is_url", "message": "Must be a valid URL."},
                        "bucket": {"code": "validation_required", "message": "Cannot be blank."},
                        "region": {"code": "validation_required", "message": "Cannot be blank."},
                        "accessKey": {"code": "validation_required", "message": "Cannot be blank."},
                        "secret": {"code": "validation_required", "message": "Cannot be blank."},
                    },
                },
                "meta": {"appName": {"code": "validation_required", "message": "Cannot be blank."}},
            })
        );
        assert!(matches!(
            s.patch(&json!({"backups": {"cronMaxKeep": "x"}})),
            Err(PatchError::Load)
        ));
        assert!(matches!(s.patch(&json!([1])), Err(PatchError::Load)));
        assert_eq!(*s.current(), *before);
    }

    #[test]
    fn a_pinned_value_may_be_repeated_but_not_changed() {
        let pins = Pins {
            cron: Some("@daily".into()),
            ..Pins::default()
        };
        let (_d, s) = store(pins);
        assert_eq!(s.current().backups.cron, "@daily");
        s.patch(&json!({"backups": {"cron": "@daily", "cronMaxKeep": 5}}))
            .unwrap();
        let e = invalid(s.patch(&json!({"backups": {"cron": "@hourly"}})));
        assert_eq!(
            e["backups"]["cron"]["code"], "validation_pinned_by_flag",
            "{e}"
        );
        assert!(
            e["backups"]["cron"]["message"]
                .as_str()
                .unwrap()
                .contains("--backups-cron")
        );
        assert_eq!(s.current().backups.cron_max_keep, 5);
    }

    #[test]
    fn with_s3_pinned_by_flags_the_other_settings_can_change_but_not_the_store() {
        // As `--s3-bucket` and the AWS chain give it: no access key, no secret, and no
        // endpoint for AWS itself.
        let pinned = S3 {
            enabled: true,
            bucket: "backups".into(),
            region: "us-east-1".into(),
            ..S3::default()
        };
        let (_d, s) = store(Pins {
            s3: Some(pinned.clone()),
            ..Pins::default()
        });
        let new = s
            .patch(&json!({"backups": {"cron": "@daily", "cronMaxKeep": 4}, "superuserIPs": ["10.0.0.0/8"]}))
            .unwrap();
        assert_eq!(new.backups.cron, "@daily");
        assert_eq!(new.superuser_ips, ["10.0.0.0/8"]);
        assert_eq!(new.backups.s3, pinned);
        // The page saves the whole section as it was shown: no change, accepted.
        let shown = render(&new, "Acme")["backups"]["s3"].clone();
        s.patch(&json!({"backups": {"s3": shown, "cronMaxKeep": 5}}))
            .unwrap();
        // Other settings are still checked.
        let e = invalid(s.patch(&json!({"superuserIPs": ["nope"]})));
        assert_eq!(
            e["superuserIPs"]["0"]["code"],
            "validation_invlaid_ip_or_subnet"
        );
        for change in [
            json!({"bucket": "other"}),
            json!({"enabled": false}),
            json!({"accessKey": "k", "secret": "s"}),
        ] {
            let e = invalid(s.patch(&json!({"backups": {"s3": change}})));
            assert_eq!(
                e,
                json!({"backups": {"s3": {"code": "validation_pinned_by_flag",
                    "message": "Set by --s3-bucket (GATEWAY_S3_BUCKET) at start; change it there."}}}),
            );
        }
        assert_eq!(s.current().backups.s3, pinned);
        assert_eq!(s.current().backups.cron_max_keep, 5);
    }
}
