//! The configuration: [`Config`], what the library runs on, and the command line that
//! builds it ([`cli`]: every `serve` flag also from a `GATEWAY_*` environment variable,
//! checked once by [`cli::ServeArgs::into_config`]). Tests build a [`Config`] directly.
//!
//! The types of the rooms' own options (the S3 client's [`S3Config`], the archive's
//! [`Limits`], the edge's limits) live in those rooms; this module only gathers them.

pub mod cli;

pub use crate::storage::s3::{PayloadSigning, S3Config};
pub use cli::{Cli, Command, ConfigError, LogFormat, ServeArgs, SuperuserAction};

use crate::archive::Limits;
use clap::ValueEnum;
use std::path::PathBuf;

/// Default part size in MiB: the AWS CLI's default.
pub const DEFAULT_PART_SIZE_MIB: u64 = 8;
/// Default parts uploaded at once: the fewest that keep a nearby store's upload at full
/// speed, so the least memory (docs/design.md, "Performance"). Raise it for stores far away
/// (each connection's throughput is bounded by its round-trip time).
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 2;
/// `--memory-budget-mib`.
pub const DEFAULT_MEMORY_BUDGET_MIB: u64 = 64;
/// `--shutdown-grace-secs`.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
/// `--s3-read-timeout-secs`.
pub const DEFAULT_S3_READ_TIMEOUT_SECS: u64 = 120;
const MIB: u64 = 1024 * 1024;

/// `--incremental`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Incremental {
    /// Copy unchanged entries from the newest backup where the store can.
    Auto,
    /// Always upload the whole archive.
    Off,
}

/// What the library runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// The data directory that is backed up and restored.
    pub data_dir: PathBuf,
    pub storage: StorageConfig,
    /// Minimum multipart part size in bytes (see [`crate::storage::parts::part_size_for`]).
    pub part_size: u64,
    pub parts_in_flight: usize,
    pub compression_level: u32,
    pub incremental: Incremental,
    pub on_restore: Option<String>,
    pub restore_limits: Limits,
    /// `--restore-require` paths; empty: `data.db` when the data directory holds one.
    pub restore_require: Vec<PathBuf>,
    /// `--exclude` globs (checked by [`ServeArgs::into_config`]).
    pub exclude: Vec<String>,
    /// The fallback `meta.appName` (see [`crate::pocketbase::app_name`]).
    pub app_name: String,
    /// Settings that flags give explicitly ([`crate::settings::Pins`]).
    pub pins: crate::settings::Pins,
    /// How an S3 store configured over the API (`backups.s3`) is set up, beyond its
    /// settings: the `--s3-prefix`, payload signing and read timeout flags.
    pub s3_tuning: S3Tuning,
    /// `--superuser-email` and its password.
    pub initial_superuser: Option<InitialSuperuser>,
    /// The clock of scheduled backups (tests set it).
    pub clock: crate::schedule::ClockHandle,
    /// `--memory-budget-mib`, in bytes.
    pub memory_budget: u64,
    /// `--shutdown-grace-secs`.
    pub shutdown_grace: std::time::Duration,
    /// `--progress-log-secs` (zero: no progress lines).
    pub progress_log_every: std::time::Duration,
    /// How SQLite databases are snapshotted.
    pub snapshot: crate::archive::SnapshotOptions,
    /// `--exec` ([`crate::lifecycle`]).
    pub exec: Option<String>,
    /// `--app-stop` and `--app-start` (both or neither).
    pub app_stop: Option<String>,
    pub app_start: Option<String>,
    /// `--app-timeout-secs`.
    pub app_timeout: std::time::Duration,
    /// `--on-restore-timeout-secs`.
    pub on_restore_timeout: std::time::Duration,
    /// `--restore-while-running`.
    pub restore_while_running: bool,
    /// `--pitr-retention-days`.
    pub pitr_retention: std::time::Duration,
    /// `--pitr-base-hours`.
    pub pitr_base_every: std::time::Duration,
    /// `--pitr-max-size-mib`, in bytes: the most each database's history may take in the
    /// store (`None`: bounded by age only).
    pub pitr_max_bytes: Option<u64>,
    /// `--pitr-exclude`: the databases (paths in the data directory) never streamed.
    pub pitr_exclude: Vec<String>,
    /// When the point-in-time history is packed into fewer objects (no flag: a minute and
    /// an hour; the tests shorten them).
    pub pitr_levels: crate::pitr::compact::Levels,
    /// `--max-connections`, `--body-gap-secs`, `--small-body-secs`.
    pub serve_limits: crate::api::serve::Limits,
}

#[derive(Debug, Clone)]
pub enum StorageConfig {
    Local { dir: PathBuf },
    S3(S3Config),
}

/// See [`Config::s3_tuning`].
#[derive(Debug, Clone)]
pub struct S3Tuning {
    /// Normalized: empty, or ends with `/`.
    pub prefix: String,
    pub payload_signing: PayloadSigning,
    pub read_timeout: std::time::Duration,
}

impl Default for S3Tuning {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            payload_signing: PayloadSigning::Auto,
            read_timeout: std::time::Duration::from_secs(DEFAULT_S3_READ_TIMEOUT_SECS),
        }
    }
}

impl S3Tuning {
    /// The store that `backups.s3` describes.
    pub fn config_for(&self, s3: &crate::settings::S3) -> S3Config {
        S3Config {
            bucket: s3.bucket.clone(),
            endpoint: Some(s3.endpoint.clone()).filter(|e| !e.is_empty()),
            region: Some(s3.region.clone()).filter(|r| !r.is_empty()),
            prefix: self.prefix.clone(),
            force_path_style: s3.force_path_style,
            payload_signing: self.payload_signing,
            credentials: Some((s3.access_key.clone(), s3.secret.clone())),
            read_timeout: self.read_timeout,
        }
    }
}

/// The first-start superuser.
#[derive(Clone)]
pub struct InitialSuperuser {
    pub email: String,
    pub password: String,
}

impl std::fmt::Debug for InitialSuperuser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitialSuperuser")
            .field("email", &self.email)
            .field("password", &"[redacted]")
            .finish()
    }
}

impl Config {
    /// A configuration with the defaults of `serve` for `data_dir`, local storage.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            storage: StorageConfig::Local {
                dir: data_dir.join(crate::LOCAL_BACKUPS_DIR),
            },
            data_dir,
            part_size: DEFAULT_PART_SIZE_MIB * MIB,
            parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
            compression_level: 1,
            incremental: Incremental::Auto,
            on_restore: None,
            restore_limits: Limits::default(),
            restore_require: Vec::new(),
            exclude: Vec::new(),
            app_name: crate::pocketbase::DEFAULT_APP_NAME.into(),
            pins: crate::settings::Pins::default(),
            s3_tuning: S3Tuning::default(),
            initial_superuser: None,
            clock: crate::schedule::ClockHandle::system(),
            memory_budget: DEFAULT_MEMORY_BUDGET_MIB << 20,
            shutdown_grace: std::time::Duration::from_secs(DEFAULT_SHUTDOWN_GRACE_SECS),
            progress_log_every: std::time::Duration::from_secs(
                crate::ops::jobs::DEFAULT_PROGRESS_LOG_SECS,
            ),
            snapshot: crate::archive::SnapshotOptions::default(),
            exec: None,
            app_stop: None,
            app_start: None,
            app_timeout: std::time::Duration::from_secs(crate::lifecycle::DEFAULT_APP_TIMEOUT_SECS),
            on_restore_timeout: std::time::Duration::from_secs(
                crate::lifecycle::DEFAULT_ON_RESTORE_TIMEOUT_SECS,
            ),
            restore_while_running: false,
            pitr_retention: std::time::Duration::from_secs(7 * 86_400),
            pitr_base_every: std::time::Duration::from_secs(24 * 3_600),
            pitr_max_bytes: Some(crate::pitr::DEFAULT_MAX_MIB << 20),
            pitr_exclude: crate::pitr::DEFAULT_EXCLUDE
                .iter()
                .map(|s| (*s).to_string())
                .collect(),
            pitr_levels: crate::pitr::compact::Levels::default(),
            serve_limits: crate::api::serve::Limits::default(),
        }
    }

    /// Whether creates may copy unchanged entries from the newest backup (`--incremental`).
    pub fn incremental_allowed(&self) -> bool {
        self.incremental == Incremental::Auto
    }

    /// The S3 bucket backups go to: the `--s3-*` flags when given (they win over the
    /// settings), else the settings' `backups.s3` when enabled, else none (local storage).
    pub fn s3_for(&self, s3: &crate::settings::S3) -> Option<S3Config> {
        match &self.storage {
            StorageConfig::S3(flags) => Some(flags.clone()),
            StorageConfig::Local { .. } if s3.enabled => Some(self.s3_tuning.config_for(s3)),
            StorageConfig::Local { .. } => None,
        }
    }
}

/// `"a/b"` -> `"a/b/"`, `"/"` -> `""`: keys are `prefix + name`.
pub fn normalize_prefix(p: &str) -> String {
    let p = p.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}
