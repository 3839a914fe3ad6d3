//! The saved settings: a PATCH merged, checked and saved atomically in
//! `<dir>/.backup-gateway/settings.json`, and the current value every reader shares.

use super::Settings;
use super::validate::{drop_at, insert_at};
use super::wire::merge;
use super::{Pins, validate};
use crate::error::FieldError;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

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
        let path = crate::util::state_dir::settings(data_dir);
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
        crate::util::fsutil::write_atomic(&self.path, &bytes, 0o600).map_err(PatchError::Save)?;
        let new = Arc::new(new);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{S3, render};
    use serde_json::json;

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
