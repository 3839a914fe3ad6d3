//! The command line. Every `serve` flag can also come from a `GATEWAY_*` environment
//! variable; `--help` prints the `///` line of each field (docs/configuration.md is checked
//! against it). [`Cli`] is what the binary parses; [`ServeArgs::into_config`] checks it once
//! and builds the library's [`Config`].
//!
//! One concern: the flags, each with the help text `--help` prints, and their check.

use super::{
    Config, DEFAULT_MEMORY_BUDGET_MIB, DEFAULT_PART_SIZE_MIB, DEFAULT_PARTS_IN_FLIGHT,
    DEFAULT_S3_READ_TIMEOUT_SECS, DEFAULT_SHUTDOWN_GRACE_SECS, Incremental, InitialSuperuser, MIB,
    S3Config, S3Tuning, StorageConfig, normalize_prefix,
};
use crate::archive::Limits;
use crate::storage::s3::PayloadSigning;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The PocketBase Backups API over an S3 bucket or a local directory.
#[derive(Debug, Parser)]
#[command(name = "backup-gateway", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log lines as `text` (for people) or `json` (one object per line, for collectors).
    #[arg(long, env = "GATEWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the Backups API for a data directory.
    Serve(Box<ServeArgs>),
    /// Manage the superusers allowed to use the API.
    Superuser {
        #[command(subcommand)]
        action: SuperuserAction,
        /// The data directory whose gateway state holds the superusers.
        #[arg(long, env = "GATEWAY_DIR", default_value = "./pb_data", global = true)]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SuperuserAction {
    /// Create a superuser, or set the password of an existing one.
    Upsert {
        /// The superuser's email (the identity to log in with).
        email: String,
        /// The password: at least 8 characters.
        password: String,
    },
    /// Delete a superuser; their tokens stop working at once.
    Delete {
        /// The superuser's email.
        email: String,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "GATEWAY_HTTP", default_value = "127.0.0.1:8090")]
    pub http: SocketAddr,

    /// The data directory to back up and restore. The gateway keeps its own state in
    /// `<dir>/.backup-gateway/`, which is never backed up nor replaced by a restore.
    #[arg(long, env = "GATEWAY_DIR", default_value = "./pb_data")]
    pub dir: PathBuf,

    /// Local backups directory, used when no S3 bucket is set [default: <dir>/backups].
    #[arg(long, env = "GATEWAY_BACKUPS_DIR")]
    pub backups_dir: Option<PathBuf>,

    #[command(flatten)]
    pub s3: S3Args,

    /// Size of each multipart-upload part in MiB (at least 5). It grows automatically when
    /// the data is so large that 10,000 parts would not be enough.
    #[arg(long, env = "GATEWAY_PART_SIZE_MIB", default_value_t = DEFAULT_PART_SIZE_MIB,
        value_parser = clap::value_parser!(u64).range(5..=5120))]
    pub part_size_mib: u64,

    /// How many parts are uploaded at the same time. Memory use of a create or upload is
    /// bounded by part size x (parts in flight + 1).
    #[arg(long, env = "GATEWAY_PARTS_IN_FLIGHT", default_value_t = DEFAULT_PARTS_IN_FLIGHT as u8,
        value_parser = clap::value_parser!(u8).range(1..=64))]
    pub parts_in_flight: u8,

    /// Deflate level for created archives (0-9); files that do not compress are stored.
    #[arg(long, env = "GATEWAY_COMPRESSION_LEVEL", default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(0..=9))]
    pub compression_level: u32,

    /// Incremental creates: `auto` copies the entries of unchanged files from the newest
    /// backup inside the store (S3's UploadPartCopy) where the store can, so that only
    /// what changed is uploaded; every backup is still a whole, standalone zip. `off`
    /// always uploads everything. Local storage and Cloudflare R2 always do full creates.
    #[arg(long, env = "GATEWAY_INCREMENTAL", value_enum, default_value_t = Incremental::Auto)]
    pub incremental: Incremental,

    /// Which creates are verified right after they are stored (the archive read back from
    /// the store, every CRC and the restore's checks, `integrity_check` of every database
    /// image): `scheduled` (the default), `all` or `off`. A failed verify of a scheduled
    /// create fails its run and notifies. Given, it pins `backups.verifyAfterCreate`.
    #[arg(long, env = "GATEWAY_VERIFY_AFTER_CREATE", value_parser = ["scheduled", "all", "off"])]
    pub verify_after_create: Option<String>,

    /// A URL that gets a JSON POST on every failed scheduled create, failed verify and
    /// failed restore (`{"event","key","reason","time"}`), retried a few times. Given, it
    /// pins `backups.notifyUrl`.
    #[arg(long, env = "GATEWAY_NOTIFY_URL")]
    pub notify_url: Option<String>,

    /// Stream every WAL database of the data directory to the store, so that
    /// `POST /api/gateway/restore` can bring them back to any moment (point-in-time
    /// restore; docs/pitr.md). `--pitr` alone is `--pitr true`. Given, it pins
    /// `backups.pitr` (on by default, bounded by `--pitr-max-size-mib`).
    #[arg(long, env = "GATEWAY_PITR", num_args = 0..=1, default_missing_value = "true",
        value_parser = parse_on_off)]
    pub pitr: Option<bool>,

    /// How many days of point-in-time history are kept: older histories are deleted from
    /// the store (the newest of each database always stays).
    #[arg(long, env = "GATEWAY_PITR_RETENTION_DAYS", default_value_t = 7,
        value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub pitr_retention_days: u32,

    /// Every so many hours a database's stream begins a new history with a fresh base image,
    /// so that old history can be deleted and a restore reads at most this much of it.
    #[arg(long, env = "GATEWAY_PITR_BASE_HOURS", default_value_t = 24,
        value_parser = clap::value_parser!(u32).range(1..=720))]
    pub pitr_base_hours: u32,

    /// The most each database's point-in-time history may take in the store, in MiB (0:
    /// no bound but the retention). Past it the oldest histories are deleted first, and a
    /// history that reaches half of it ends and a new one begins, so that the one before
    /// can go: a busy database keeps a shorter window than the retention (docs/pitr.md).
    #[arg(long, env = "GATEWAY_PITR_MAX_SIZE_MIB", default_value_t = crate::pitr::DEFAULT_MAX_MIB)]
    pub pitr_max_size_mib: u64,

    /// The databases never streamed, comma-separated paths in the data directory (empty:
    /// none): covered by backups only, a restore to a moment takes them from the backup.
    /// By default PocketBase's request logs.
    #[arg(
        long,
        env = "GATEWAY_PITR_EXCLUDE",
        value_delimiter = ',',
        default_value = "auxiliary.db"
    )]
    pub pitr_exclude: Vec<String>,

    /// Restore refuses archives with more entries than this.
    #[arg(long, env = "GATEWAY_RESTORE_MAX_ENTRIES", default_value_t = Limits::DEFAULT.max_entries)]
    pub restore_max_entries: u64,

    /// Restore refuses archives larger than this uncompressed, in GiB (free disk space is
    /// checked as well).
    #[arg(long, env = "GATEWAY_RESTORE_MAX_SIZE_GIB", default_value_t = Limits::DEFAULT.max_total_size >> 30)]
    pub restore_max_size_gib: u64,

    /// Restore refuses entries over 1 MiB that expand more than this many times (zip bombs).
    #[arg(long, env = "GATEWAY_RESTORE_MAX_RATIO", default_value_t = Limits::DEFAULT.max_ratio)]
    pub restore_max_ratio: u64,

    /// Restore refuses entries with more path components than this.
    #[arg(long, env = "GATEWAY_RESTORE_MAX_DEPTH", default_value_t = Limits::DEFAULT.max_depth)]
    pub restore_max_depth: usize,

    /// Restore refuses entries with a path component (a file or directory name) longer than
    /// this many bytes.
    #[arg(long, env = "GATEWAY_RESTORE_MAX_NAME_BYTES", default_value_t = Limits::DEFAULT.max_component_bytes)]
    pub restore_max_name_bytes: usize,

    /// Restore refuses entries whose path is longer than this many bytes.
    #[arg(long, env = "GATEWAY_RESTORE_MAX_PATH_BYTES", default_value_t = Limits::DEFAULT.max_path_bytes)]
    pub restore_max_path_bytes: usize,

    /// Shell command run after a successful restore (and after the application's start,
    /// when --exec or --app-start is set), without the gateway's secrets in its
    /// environment, killed past --on-restore-timeout-secs. Its exit status and output are
    /// logged.
    #[arg(long, env = "GATEWAY_ON_RESTORE")]
    pub on_restore: Option<String>,

    /// A restore refuses archives without this file (repeatable; relative to the data
    /// directory; in the environment separated by `:`). Default: `data.db` when the data
    /// directory holds one (PocketBase's), else nothing; a list given here replaces that.
    #[arg(
        long = "restore-require",
        value_name = "PATH",
        env = "GATEWAY_RESTORE_REQUIRE",
        value_delimiter = ':'
    )]
    pub restore_require: Vec<PathBuf>,

    /// Leave paths matching this glob out of every backup (repeatable; relative to the data
    /// directory, `*` within one component, `**` across them, a matching directory whole).
    /// In the environment, several globs are separated by `:`.
    #[arg(
        long = "exclude",
        value_name = "GLOB",
        env = "GATEWAY_EXCLUDE",
        value_delimiter = ':'
    )]
    pub exclude: Vec<String>,

    /// How long a create waits for a lock that the application holds on one of its SQLite
    /// databases (a rollback-journal commit, an exclusive lock) before it fails, in
    /// milliseconds.
    #[arg(long, env = "GATEWAY_SQLITE_BUSY_TIMEOUT_MS", default_value_t = crate::archive::sqlite::DEFAULT_BUSY_TIMEOUT_MS)]
    pub sqlite_busy_timeout_ms: u64,

    /// The application's name in automatic backup names (`pb_backup_<name>_<time>.zip`,
    /// snake case): the setting `meta.appName`, pinned [default: the value saved over the
    /// API, else the data directory's PocketBase `meta.appName`, else Acme].
    #[arg(long, env = "GATEWAY_APP_NAME")]
    pub app_name: Option<String>,

    /// Scheduled backups, in PocketBase's cron syntax (UTC; for example `0 3 * * *` or
    /// `@daily`): the setting `backups.cron`, pinned [default: the value saved over the API,
    /// else none].
    #[arg(long, env = "GATEWAY_BACKUPS_CRON")]
    pub backups_cron: Option<String>,

    /// How many scheduled backups are kept (the newest; manual and uploaded ones are never
    /// pruned): the setting `backups.cronMaxKeep`, pinned [default: saved, else 3].
    #[arg(long, env = "GATEWAY_BACKUPS_CRON_MAX_KEEP", value_parser = clap::value_parser!(i64).range(0..))]
    pub backups_cron_max_keep: Option<i64>,

    /// The only addresses (IPs or CIDR subnets, comma separated) superusers may act from:
    /// the setting `superuserIPs`, pinned (an empty value pins "anywhere") [default: saved,
    /// else anywhere].
    #[arg(long, env = "GATEWAY_SUPERUSER_IPS", value_delimiter = ',')]
    pub superuser_ips: Option<Vec<String>>,

    /// Request headers that carry the client's address, set by a proxy in front (comma
    /// separated, for example `X-Forwarded-For`): the setting `trustedProxy.headers`, pinned
    /// [default: saved, else none: the socket's address].
    #[arg(long, env = "GATEWAY_TRUSTED_PROXY_HEADERS", value_delimiter = ',')]
    pub trusted_proxy_headers: Option<Vec<String>>,

    /// Take the leftmost address of a trusted header rather than the rightmost: the setting
    /// `trustedProxy.useLeftmostIP`, pinned [default: saved, else false].
    #[arg(long, env = "GATEWAY_TRUSTED_PROXY_USE_LEFTMOST_IP", num_args = 0..=1, default_missing_value = "true")]
    pub trusted_proxy_use_leftmost_ip: Option<bool>,

    /// The proxies (IPs or CIDR subnets, comma separated) whose `--trusted-proxy-headers`
    /// are believed; the headers of any other peer are ignored: the setting
    /// `trustedProxy.sources`, pinned [default: saved, else every peer, with a warning at
    /// start when headers are set].
    #[arg(long, env = "GATEWAY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,

    /// PocketBase's rate limits (`rateLimits`, on by default in the gateway with PocketBase's
    /// default rules), `on` or `off`: the setting `rateLimits.enabled`, pinned [default:
    /// saved, else on]. The rules themselves are set over the API or on the page.
    #[arg(long, env = "GATEWAY_RATE_LIMITS", value_parser = parse_on_off)]
    pub rate_limits: Option<bool>,

    /// The most connections open at once (the API's, and the metrics listener's apart): one
    /// past it waits up to 2 s for another to close, then is answered 503.
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS", default_value_t = crate::api::serve::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// A request body that stops arriving for this many seconds fails, and its connection
    /// is closed.
    #[arg(long, env = "GATEWAY_BODY_GAP_SECS", default_value_t = crate::api::serve::DEFAULT_BODY_GAP.as_secs())]
    pub body_gap_secs: u64,

    /// Every request body but an upload's (logins, settings: a few bytes) must be complete
    /// within this many seconds of its request's start.
    #[arg(long, env = "GATEWAY_SMALL_BODY_SECS", default_value_t = crate::api::serve::DEFAULT_SMALL_BODY_TIME.as_secs())]
    pub small_body_secs: u64,

    /// A superuser created at start (or given the password below), as MinIO's root user.
    #[arg(long, env = "GATEWAY_SUPERUSER_EMAIL")]
    pub superuser_email: Option<String>,

    /// The password of `--superuser-email`.
    #[arg(long, env = "GATEWAY_SUPERUSER_PASSWORD", hide_env_values = true)]
    pub superuser_password: Option<String>,

    /// A file holding the password of `--superuser-email` (a mounted secret), read at start.
    #[arg(long, env = "GATEWAY_SUPERUSER_PASSWORD_FILE")]
    pub superuser_password_file: Option<PathBuf>,

    /// The memory shared by every buffer of backup bytes (create and upload parts, download
    /// and restore read-ahead), in MiB: when it is taken, requests wait for their share.
    #[arg(long, env = "GATEWAY_MEMORY_BUDGET_MIB", default_value_t = DEFAULT_MEMORY_BUDGET_MIB,
        value_parser = clap::value_parser!(u64).range(8..))]
    pub memory_budget_mib: u64,

    /// On SIGTERM or Ctrl-C, how long open requests (a create in progress) may take to
    /// finish before they are cancelled (a cancelled create's upload is aborted), in seconds.
    #[arg(long, env = "GATEWAY_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,

    /// How often a running create or restore logs a progress line, in seconds (0: never).
    #[arg(long, env = "GATEWAY_PROGRESS_LOG_SECS", default_value_t = crate::ops::jobs::DEFAULT_PROGRESS_LOG_SECS)]
    pub progress_log_secs: u64,

    /// Serve Prometheus metrics at `http://ADDR/metrics` (off unless given). A listener of
    /// its own, so that it can stay off the public network.
    #[arg(long, env = "GATEWAY_METRICS_HTTP")]
    pub metrics_http: Option<SocketAddr>,

    #[command(flatten)]
    pub app: AppArgs,
}

/// The application that uses the data directory, and the commands run around a restore
/// (docs/application.md).
#[derive(Debug, Args)]
pub struct AppArgs {
    /// Run the application as the gateway's child (`sh -c CMD`, for example `pocketbase
    /// serve --http 0.0.0.0:8080 --dir /pb_data`): started once the gateway is ready,
    /// stopped (SIGTERM, SIGKILL after --app-timeout-secs) and started again around every
    /// restore's swap, sent the gateway's SIGTERM/SIGINT; when it exits on its own the
    /// gateway exits with its exit code.
    #[arg(long, env = "GATEWAY_EXEC", conflicts_with_all = ["app_stop", "app_start"])]
    pub exec: Option<String>,

    /// Command that stops the application before a restore's swap (for example `systemctl
    /// stop pocketbase`); needs --app-start. The restore waits until no process has a
    /// file of the data directory open.
    #[arg(long, env = "GATEWAY_APP_STOP", requires = "app_start")]
    pub app_stop: Option<String>,

    /// Command that starts the application after a restore's swap (or on the old data when
    /// the swap does not happen); needs --app-stop.
    #[arg(long, env = "GATEWAY_APP_START", requires = "app_stop")]
    pub app_start: Option<String>,

    /// How long --app-stop and --app-start may run, and how long an --exec child has to
    /// exit after SIGTERM (and the stopped application to close its files), in seconds.
    #[arg(long, env = "GATEWAY_APP_TIMEOUT_SECS", default_value_t = crate::lifecycle::DEFAULT_APP_TIMEOUT_SECS)]
    pub app_timeout_secs: u64,

    /// How long --on-restore may run before it is killed, in seconds.
    #[arg(long, env = "GATEWAY_ON_RESTORE_TIMEOUT_SECS", default_value_t = crate::lifecycle::DEFAULT_ON_RESTORE_TIMEOUT_SECS)]
    pub on_restore_timeout_secs: u64,

    /// Restore even when another process has the data directory's files open and neither
    /// --exec nor --app-stop/--app-start is set. That application keeps its open files
    /// (the replaced data) until it restarts: it serves data that no longer exists, and
    /// what it writes meanwhile is lost.
    #[arg(long, env = "GATEWAY_RESTORE_WHILE_RUNNING", default_value_t = false)]
    pub restore_while_running: bool,
}

#[derive(Debug, Args)]
pub struct S3Args {
    /// S3 bucket for the backups. When set, backups go to S3 instead of a local directory.
    /// Credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    /// profiles, web identity, instance roles).
    #[arg(long, env = "GATEWAY_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// S3 endpoint URL, for S3-compatible stores (MinIO, R2, B2, Garage, Ceph, ...).
    #[arg(long, env = "GATEWAY_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// S3 region [default: from the AWS chain, else us-east-1].
    #[arg(long, env = "GATEWAY_S3_REGION")]
    pub s3_region: Option<String>,

    /// Key prefix ("folder") for the backups inside the bucket.
    #[arg(long, env = "GATEWAY_S3_PREFIX", default_value = "")]
    pub s3_prefix: String,

    /// Use path-style addressing (`endpoint/bucket/key`), as MinIO and most self-hosted
    /// stores need.
    #[arg(long, env = "GATEWAY_S3_FORCE_PATH_STYLE", default_value_t = false)]
    pub s3_force_path_style: bool,

    /// Whether uploaded bytes are covered by the request signature (a SHA-256 of every byte,
    /// which the store computes again): `auto` signs them over plain HTTP and not over
    /// HTTPS, where TLS already protects them.
    #[arg(long, env = "GATEWAY_S3_PAYLOAD_SIGNING", value_enum, default_value_t = PayloadSigning::Auto)]
    pub s3_payload_signing: PayloadSigning,

    /// How long a store call waits for the store's next bytes before it fails, in seconds
    /// (each call is retried by the S3 client, then the operation fails and frees the lock).
    #[arg(long, env = "GATEWAY_S3_READ_TIMEOUT_SECS", default_value_t = DEFAULT_S3_READ_TIMEOUT_SECS)]
    pub s3_read_timeout_secs: u64,
}

/// A configuration mistake found at startup.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ServeArgs {
    /// Checks the flags once and builds the library's [`Config`]. Ranges are clap's (see the
    /// `value_parser`s above); what is checked here needs more than one flag or a parser of
    /// the library (globs, cron, IPs).
    ///
    /// # Errors
    /// A flag that cannot be used, with the reason.
    pub fn into_config(mut self) -> Result<Config, ConfigError> {
        let given = |c: &Option<String>| c.as_deref().is_some_and(|c| !c.trim().is_empty());
        if given(&self.app.app_stop) != given(&self.app.app_start) {
            return Err(ConfigError(
                "--app-stop and --app-start go together: a restore that stops the application \
                 must be able to start it again"
                    .into(),
            ));
        }
        let exclude: Vec<String> = std::mem::take(&mut self.exclude)
            .into_iter()
            .filter(|g| !g.is_empty())
            .collect();
        crate::archive::Exclude::new(Vec::new(), &exclude)
            .map_err(|e| ConfigError(format!("--exclude: {e}")))?;
        let restore_require = self.restore_require()?;
        let initial_superuser = self.initial_superuser()?;
        let s3_tuning = S3Tuning {
            prefix: normalize_prefix(&self.s3.s3_prefix),
            payload_signing: self.s3.s3_payload_signing,
            read_timeout: std::time::Duration::from_secs(self.s3.s3_read_timeout_secs.max(1)),
        };
        let storage = self.storage(&s3_tuning);
        let pins = self.pins(&storage)?;
        let secs = |s: u64| std::time::Duration::from_secs(s.max(1));
        Ok(Config {
            storage,
            part_size: self.part_size_mib * MIB,
            parts_in_flight: usize::from(self.parts_in_flight),
            compression_level: self.compression_level,
            incremental: self.incremental,
            on_restore: self.on_restore.filter(|c| !c.trim().is_empty()),
            restore_limits: Limits {
                max_entries: self.restore_max_entries,
                max_total_size: self.restore_max_size_gib.saturating_mul(1 << 30),
                max_ratio: self.restore_max_ratio.max(1),
                max_depth: self.restore_max_depth.max(1),
                max_component_bytes: self.restore_max_name_bytes.max(1),
                max_path_bytes: self.restore_max_path_bytes.max(1),
                ..Limits::default()
            },
            restore_require,
            exclude,
            app_name: self
                .app_name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| crate::pocketbase::DEFAULT_APP_NAME.into()),
            pins,
            s3_tuning,
            initial_superuser,
            clock: crate::schedule::ClockHandle::system(),
            memory_budget: self.memory_budget_mib << 20,
            shutdown_grace: std::time::Duration::from_secs(self.shutdown_grace_secs),
            progress_log_every: std::time::Duration::from_secs(self.progress_log_secs),
            snapshot: crate::archive::SnapshotOptions {
                busy_timeout: std::time::Duration::from_millis(self.sqlite_busy_timeout_ms),
            },
            exec: self.app.exec.filter(|c| !c.trim().is_empty()),
            app_stop: self.app.app_stop.filter(|c| !c.trim().is_empty()),
            app_start: self.app.app_start.filter(|c| !c.trim().is_empty()),
            app_timeout: secs(self.app.app_timeout_secs),
            on_restore_timeout: secs(self.app.on_restore_timeout_secs),
            restore_while_running: self.app.restore_while_running,
            pitr_retention: secs(u64::from(self.pitr_retention_days) * 86_400),
            pitr_base_every: secs(u64::from(self.pitr_base_hours) * 3_600),
            pitr_max_bytes: (self.pitr_max_size_mib > 0)
                .then(|| self.pitr_max_size_mib.saturating_mul(1 << 20)),
            pitr_exclude: data_paths(&self.pitr_exclude),
            pitr_levels: crate::pitr::compact::Levels::default(),
            serve_limits: crate::api::serve::Limits {
                header_read: crate::api::serve::HEADER_READ_TIMEOUT,
                max_connections: self.max_connections.max(1),
                body_gap: secs(self.body_gap_secs),
                small_body_time: secs(self.small_body_secs),
            },
            data_dir: self.dir,
        })
    }

    /// `--restore-require`: paths inside the data directory.
    fn restore_require(&mut self) -> Result<Vec<PathBuf>, ConfigError> {
        let paths: Vec<PathBuf> = std::mem::take(&mut self.restore_require)
            .into_iter()
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        let inside = |p: &PathBuf| {
            p.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        };
        match paths.iter().find(|p| !inside(p)) {
            Some(bad) => Err(ConfigError(format!(
                "--restore-require {}: a path relative to the data directory, without `..`",
                bad.display()
            ))),
            None => Ok(paths),
        }
    }

    /// `--superuser-email` with `--superuser-password` or `--superuser-password-file`.
    fn initial_superuser(&mut self) -> Result<Option<InitialSuperuser>, ConfigError> {
        let (email, password, file) = (
            self.superuser_email.take(),
            self.superuser_password.take(),
            self.superuser_password_file.take(),
        );
        let password = match (password, file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError(
                    "give --superuser-password or --superuser-password-file, not both".into(),
                ));
            }
            (Some(p), None) => Some(p),
            (None, Some(file)) => {
                let read = std::fs::read_to_string(&file).map_err(|e| {
                    ConfigError(format!("--superuser-password-file {}: {e}", file.display()))
                })?;
                Some(read.trim_end_matches(['\n', '\r']).to_string())
            }
            (None, None) => None,
        };
        match (email, password) {
            (None, None) => Ok(None),
            (Some(email), Some(password)) => Ok(Some(InitialSuperuser { email, password })),
            (Some(_), None) => Err(ConfigError(
                "--superuser-email needs --superuser-password or --superuser-password-file".into(),
            )),
            (None, Some(_)) => Err(ConfigError(
                "a superuser password needs --superuser-email".into(),
            )),
        }
    }

    /// The `--s3-*` flags' bucket, else the local backups directory.
    fn storage(&mut self, tuning: &S3Tuning) -> StorageConfig {
        match self.s3.s3_bucket.take() {
            Some(bucket) if !bucket.trim().is_empty() => StorageConfig::S3(S3Config {
                bucket,
                endpoint: self.s3.s3_endpoint.take().filter(|e| !e.is_empty()),
                region: self.s3.s3_region.take().filter(|r| !r.is_empty()),
                prefix: tuning.prefix.clone(),
                force_path_style: self.s3.s3_force_path_style,
                payload_signing: tuning.payload_signing,
                credentials: None,
                read_timeout: tuning.read_timeout,
            }),
            _ => StorageConfig::Local {
                dir: self
                    .backups_dir
                    .take()
                    .unwrap_or_else(|| self.dir.join(crate::LOCAL_BACKUPS_DIR)),
            },
        }
    }

    /// The settings the flags give ([`crate::settings::Pins`]), checked.
    fn pins(&mut self, storage: &StorageConfig) -> Result<crate::settings::Pins, ConfigError> {
        if let Some(cron) = self.backups_cron.as_deref().filter(|c| !c.is_empty()) {
            crate::schedule::cron::Schedule::parse(cron)
                .map_err(|e| ConfigError(format!("--backups-cron {cron:?}: {}", e.sentence())))?;
        }
        let list = |v: Option<Vec<String>>| {
            v.map(|v| {
                v.into_iter()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
            })
        };
        let ips = |flag: &str, v: Option<Vec<String>>| {
            let v = list(v);
            match v
                .iter()
                .flatten()
                .find(|ip| crate::settings::parse_ip_or_subnet(ip).is_none())
            {
                Some(bad) => Err(ConfigError(format!(
                    "{flag}: {bad:?} is not an IP or CIDR subnet"
                ))),
                None => Ok(v),
            }
        };
        Ok(crate::settings::Pins {
            app_name: self.app_name.clone().filter(|n| !n.is_empty()),
            cron: self.backups_cron.take(),
            cron_max_keep: self.backups_cron_max_keep,
            s3: match storage {
                StorageConfig::S3(c) => Some(s3_setting(c)),
                StorageConfig::Local { .. } => None,
            },
            superuser_ips: ips("--superuser-ips", self.superuser_ips.take())?,
            trusted_proxy_headers: list(self.trusted_proxy_headers.take()),
            trusted_proxy_use_leftmost_ip: self.trusted_proxy_use_leftmost_ip,
            rate_limits_enabled: self.rate_limits,
            trusted_proxy_sources: ips("--trusted-proxies", self.trusted_proxies.take())?,
            verify_after_create: self.verify_after_create.take(),
            notify_url: self.notify_url.take().filter(|u| !u.trim().is_empty()),
            pitr: self.pitr,
        })
    }
}

/// How `backups.s3` shows a store that flags give (credentials from the AWS chain are
/// never shown).
fn s3_setting(c: &S3Config) -> crate::settings::S3 {
    crate::settings::S3 {
        enabled: true,
        bucket: c.bucket.clone(),
        region: c.region.clone().unwrap_or_default(),
        endpoint: c.endpoint.clone().unwrap_or_default(),
        access_key: String::new(),
        secret: String::new(),
        force_path_style: c.force_path_style,
    }
}

/// `on`/`off` (also `true`/`false`), for `--rate-limits`.
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("{s:?}: on or off")),
    }
}

/// Paths in the data directory as given (`a.db`, `./a.db`, with spaces after commas), the
/// empty ones dropped.
fn data_paths(given: &[String]) -> Vec<String> {
    given
        .iter()
        .map(|s| s.trim().trim_start_matches("./").to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration of `backup-gateway serve` with `extra` arguments.
    fn serve_config(extra: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["backup-gateway", "serve"];
        argv.extend_from_slice(extra);
        let Command::Serve(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not serve")
        };
        args.into_config()
    }

    #[test]
    fn prefix_is_normalized() {
        assert_eq!(normalize_prefix(""), "");
        assert_eq!(normalize_prefix("/"), "");
        assert_eq!(normalize_prefix("a/b"), "a/b/");
        assert_eq!(normalize_prefix("/a/"), "a/");
    }

    #[test]
    fn out_of_range_flags_are_refused_by_the_parser_naming_the_flag() {
        let refused = |flag: &str, value: &str| {
            let arg = format!("{flag}={value}");
            let argv = ["backup-gateway", "serve", "--dir", "/tmp/x", &arg];
            let err = Cli::try_parse_from(argv).expect_err(flag).to_string();
            assert!(err.contains(flag), "{err}");
        };
        refused("--part-size-mib", "4");
        refused("--part-size-mib", "5121");
        refused("--parts-in-flight", "0");
        refused("--parts-in-flight", "65");
        refused("--compression-level", "10");
        refused("--memory-budget-mib", "7");
        refused("--backups-cron-max-keep", "-1");
        let argv = [
            "backup-gateway",
            "serve",
            "--part-size-mib",
            "5",
            "--parts-in-flight",
            "64",
        ];
        let Command::Serve(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not serve")
        };
        let config = args.into_config().unwrap();
        assert_eq!((config.part_size, config.parts_in_flight), (5 << 20, 64));
    }

    #[test]
    fn settings_flags_pin_their_values_and_bad_ones_are_refused_at_startup() {
        let parse = serve_config;
        let none = parse(&[]).unwrap().pins;
        assert!(none.cron.is_none() && none.superuser_ips.is_none() && none.s3.is_none());
        let c = parse(&[
            "--backups-cron",
            "@daily",
            "--superuser-ips",
            "10.0.0.0/8, ::1",
            "--trusted-proxy-headers",
            "X-Real-IP",
            "--trusted-proxy-use-leftmost-ip",
            "--s3-bucket",
            "b",
        ])
        .unwrap();
        assert_eq!(c.pins.cron.as_deref(), Some("@daily"));
        assert_eq!(
            c.pins.superuser_ips,
            Some(vec!["10.0.0.0/8".into(), "::1".into()])
        );
        assert_eq!(c.pins.trusted_proxy_headers, Some(vec!["X-Real-IP".into()]));
        assert_eq!(c.pins.trusted_proxy_use_leftmost_ip, Some(true));
        assert!(
            c.pins
                .s3
                .as_ref()
                .is_some_and(|s| s.enabled && s.bucket == "b")
        );
        // An empty allowlist given explicitly pins "anywhere" (the way out of a lock-out).
        assert_eq!(
            parse(&["--superuser-ips", ""]).unwrap().pins.superuser_ips,
            Some(vec![])
        );
        let err = parse(&["--backups-cron", "*/60 * * * *"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the step must be between 1 and the 59"),
            "{err}"
        );
        let err = parse(&["--superuser-ips", "10.0.0.300"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an IP or CIDR subnet"), "{err}");
        let err = parse(&["--superuser-email", "a@b.co"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs --superuser-password"), "{err}");
    }

    #[test]
    fn exclude_globs_repeat_and_an_invalid_one_is_refused_at_startup() {
        let parse = serve_config;
        let config = parse(&["--exclude", "logs/*.log", "--exclude", "**/*.tmp"]).unwrap();
        assert_eq!(config.exclude, ["logs/*.log", "**/*.tmp"]);
        let err = parse(&["--exclude", "a/[b"]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid configuration: --exclude:"),
            "{err}"
        );
    }

    #[test]
    fn the_stream_is_bounded_and_leaves_auxiliary_db_out_unless_told_otherwise() {
        let parse = |extra: &[&str]| serve_config(extra).unwrap();
        let c = parse(&[]);
        assert_eq!(c.pitr_max_bytes, Some(1 << 30));
        assert_eq!(c.pitr_exclude, ["auxiliary.db"]);
        assert!(c.pins.pitr.is_none());
        let c = parse(&["--pitr-max-size-mib", "0", "--pitr-exclude", ""]);
        assert_eq!(c.pitr_max_bytes, None);
        assert!(c.pitr_exclude.is_empty());
        let c = parse(&[
            "--pitr-exclude",
            "./a.db, sub/b.db",
            "--pitr-max-size-mib=64",
        ]);
        assert_eq!(c.pitr_exclude, ["a.db", "sub/b.db"]);
        assert_eq!(c.pitr_max_bytes, Some(64 << 20));
    }
}
