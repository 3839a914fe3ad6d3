//! Command line and configuration. Every `serve` flag can also come from a `GATEWAY_*`
//! environment variable; `--help` prints the `///` line of each field.
//!
//! [`Cli`] is what the binary parses; [`Config`] is what the library runs on, checked once by
//! [`ServeArgs::into_config`]. Tests build a [`Config`] directly.

use crate::archive::Limits;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
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
    #[arg(long, env = "GATEWAY_PART_SIZE_MIB", default_value_t = DEFAULT_PART_SIZE_MIB)]
    pub part_size_mib: u64,

    /// How many parts are uploaded at the same time. Memory use of a create or upload is
    /// bounded by part size x (parts in flight + 1).
    #[arg(long, env = "GATEWAY_PARTS_IN_FLIGHT", default_value_t = DEFAULT_PARTS_IN_FLIGHT)]
    pub parts_in_flight: usize,

    /// Deflate level for created archives (0-9); files that do not compress are stored.
    #[arg(long, env = "GATEWAY_COMPRESSION_LEVEL", default_value_t = 1)]
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
    #[arg(long, env = "GATEWAY_BACKUPS_CRON_MAX_KEEP")]
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
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS", default_value_t = crate::serve::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// A request body that stops arriving for this many seconds fails, and its connection
    /// is closed.
    #[arg(long, env = "GATEWAY_BODY_GAP_SECS", default_value_t = crate::serve::DEFAULT_BODY_GAP.as_secs())]
    pub body_gap_secs: u64,

    /// Every request body but an upload's (logins, settings: a few bytes) must be complete
    /// within this many seconds of its request's start.
    #[arg(long, env = "GATEWAY_SMALL_BODY_SECS", default_value_t = crate::serve::DEFAULT_SMALL_BODY_TIME.as_secs())]
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
    #[arg(long, env = "GATEWAY_MEMORY_BUDGET_MIB", default_value_t = DEFAULT_MEMORY_BUDGET_MIB)]
    pub memory_budget_mib: u64,

    /// On SIGTERM or Ctrl-C, how long open requests (a create in progress) may take to
    /// finish before they are cancelled (a cancelled create's upload is aborted), in seconds.
    #[arg(long, env = "GATEWAY_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,

    /// How often a running create or restore logs a progress line, in seconds (0: never).
    #[arg(long, env = "GATEWAY_PROGRESS_LOG_SECS", default_value_t = crate::jobs::DEFAULT_PROGRESS_LOG_SECS)]
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

/// Whether the bodies of UploadPart and PutObject requests are signed (SigV4
/// `x-amz-content-sha256` with the body's SHA-256) or sent as `UNSIGNED-PAYLOAD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum PayloadSigning {
    /// Signed over plain HTTP, where nothing else protects the bytes in transit; unsigned
    /// over HTTPS, where TLS does (what the AWS SDK for Java's S3 client does). Every zip
    /// entry also carries a CRC-32, which a restore checks.
    #[default]
    Auto,
    Always,
    Never,
}

impl PayloadSigning {
    /// Whether bodies sent to `endpoint` are signed (no endpoint: AWS, over HTTPS).
    pub fn signs(self, endpoint: Option<&str>) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Auto => endpoint
                .is_some_and(|e| !e.trim_start().to_ascii_lowercase().starts_with("https://")),
        }
    }
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
    /// `--max-connections`, `--body-gap-secs`, `--small-body-secs`.
    pub serve_limits: crate::serve::Limits,
}

#[derive(Debug, Clone)]
pub enum StorageConfig {
    Local { dir: PathBuf },
    S3(S3Config),
}

#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Normalized: empty, or ends with `/`.
    pub prefix: String,
    pub force_path_style: bool,
    pub payload_signing: PayloadSigning,
    /// Fixed credentials instead of the AWS chain (tests; never from the command line).
    pub credentials: Option<(String, String)>,
    /// How long a store call may wait for the store's next bytes before it fails (and is
    /// retried by the client, then fails the operation).
    pub read_timeout: std::time::Duration,
}

impl S3Config {
    /// How `backups.s3` shows this store when flags give it (credentials from the AWS
    /// chain are never shown).
    pub fn as_setting(&self) -> crate::settings::S3 {
        crate::settings::S3 {
            enabled: true,
            bucket: self.bucket.clone(),
            region: self.region.clone().unwrap_or_default(),
            endpoint: self.endpoint.clone().unwrap_or_default(),
            access_key: String::new(),
            secret: String::new(),
            force_path_style: self.force_path_style,
        }
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("force_path_style", &self.force_path_style)
            .field("payload_signing", &self.payload_signing)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
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

/// A configuration mistake found at startup.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ServeArgs {
    /// Checks the flags once and builds the library's [`Config`].
    ///
    /// # Errors
    /// When a value is out of range (part size under 5 MiB, no parts in flight, ...).
    pub fn into_config(self) -> Result<Config, ConfigError> {
        if self.part_size_mib * MIB < crate::storage::parts::MIN_PART_SIZE {
            return Err(ConfigError("--part-size-mib must be at least 5".into()));
        }
        if self.part_size_mib * MIB > crate::storage::parts::MAX_PART_SIZE {
            return Err(ConfigError("--part-size-mib must be at most 5120".into()));
        }
        if !(1..=64).contains(&self.parts_in_flight) {
            return Err(ConfigError("--parts-in-flight must be 1 to 64".into()));
        }
        if self.compression_level > 9 {
            return Err(ConfigError("--compression-level must be 0 to 9".into()));
        }
        if self.memory_budget_mib < 8 {
            return Err(ConfigError("--memory-budget-mib must be at least 8".into()));
        }
        let given = |c: &Option<String>| c.as_deref().is_some_and(|c| !c.trim().is_empty());
        if given(&self.app.app_stop) != given(&self.app.app_start) {
            return Err(ConfigError(
                "--app-stop and --app-start go together: a restore that stops the application \
                 must be able to start it again"
                    .into(),
            ));
        }
        let exclude: Vec<String> = self.exclude.into_iter().filter(|g| !g.is_empty()).collect();
        let restore_require: Vec<PathBuf> = self
            .restore_require
            .into_iter()
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if let Some(bad) = restore_require.iter().find(|p| {
            !p.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        }) {
            return Err(ConfigError(format!(
                "--restore-require {}: a path relative to the data directory, without `..`",
                bad.display()
            )));
        }
        crate::archive::Exclude::new(Vec::new(), &exclude)
            .map_err(|e| ConfigError(format!("--exclude: {e}")))?;
        if let Some(cron) = self.backups_cron.as_deref().filter(|c| !c.is_empty()) {
            crate::cron::Schedule::parse(cron)
                .map_err(|e| ConfigError(format!("--backups-cron {cron:?}: {}", e.sentence())))?;
        }
        if self.backups_cron_max_keep.is_some_and(|k| k < 0) {
            return Err(ConfigError(
                "--backups-cron-max-keep must be 0 or more".into(),
            ));
        }
        let superuser_ips = self.superuser_ips.map(|v| {
            v.into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        });
        if let Some(bad) = superuser_ips
            .iter()
            .flatten()
            .find(|ip| crate::settings::parse_ip_or_subnet(ip).is_none())
        {
            return Err(ConfigError(format!(
                "--superuser-ips: {bad:?} is not an IP or CIDR subnet"
            )));
        }
        let trusted_proxy_sources = self.trusted_proxies.map(|v| {
            v.into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        });
        if let Some(bad) = trusted_proxy_sources
            .iter()
            .flatten()
            .find(|ip| crate::settings::parse_ip_or_subnet(ip).is_none())
        {
            return Err(ConfigError(format!(
                "--trusted-proxies: {bad:?} is not an IP or CIDR subnet"
            )));
        }
        let initial_superuser = match (
            self.superuser_email,
            self.superuser_password,
            self.superuser_password_file,
        ) {
            (None, None, None) => None,
            (Some(email), Some(password), None) => Some(InitialSuperuser { email, password }),
            (Some(email), None, Some(file)) => {
                let password = std::fs::read_to_string(&file).map_err(|e| {
                    ConfigError(format!("--superuser-password-file {}: {e}", file.display()))
                })?;
                Some(InitialSuperuser {
                    email,
                    password: password.trim_end_matches(['\n', '\r']).to_string(),
                })
            }
            (Some(_), Some(_), Some(_)) => {
                return Err(ConfigError(
                    "give --superuser-password or --superuser-password-file, not both".into(),
                ));
            }
            (Some(_), None, None) => {
                return Err(ConfigError(
                    "--superuser-email needs --superuser-password or --superuser-password-file"
                        .into(),
                ));
            }
            (None, _, _) => {
                return Err(ConfigError(
                    "a superuser password needs --superuser-email".into(),
                ));
            }
        };
        let s3_tuning = S3Tuning {
            prefix: normalize_prefix(&self.s3.s3_prefix),
            payload_signing: self.s3.s3_payload_signing,
            read_timeout: std::time::Duration::from_secs(self.s3.s3_read_timeout_secs.max(1)),
        };
        let storage = match self.s3.s3_bucket {
            Some(bucket) if !bucket.trim().is_empty() => StorageConfig::S3(S3Config {
                bucket,
                endpoint: self.s3.s3_endpoint.filter(|e| !e.is_empty()),
                region: self.s3.s3_region.filter(|r| !r.is_empty()),
                prefix: normalize_prefix(&self.s3.s3_prefix),
                force_path_style: self.s3.s3_force_path_style,
                payload_signing: self.s3.s3_payload_signing,
                credentials: None,
                read_timeout: std::time::Duration::from_secs(self.s3.s3_read_timeout_secs.max(1)),
            }),
            _ => StorageConfig::Local {
                dir: self
                    .backups_dir
                    .unwrap_or_else(|| self.dir.join(crate::LOCAL_BACKUPS_DIR)),
            },
        };
        let pins = crate::settings::Pins {
            app_name: self.app_name.clone().filter(|n| !n.is_empty()),
            cron: self.backups_cron,
            cron_max_keep: self.backups_cron_max_keep,
            s3: match &storage {
                StorageConfig::S3(c) => Some(c.as_setting()),
                StorageConfig::Local { .. } => None,
            },
            superuser_ips,
            trusted_proxy_headers: self.trusted_proxy_headers.map(|v| {
                v.into_iter()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
                    .collect()
            }),
            trusted_proxy_use_leftmost_ip: self.trusted_proxy_use_leftmost_ip,
            rate_limits_enabled: self.rate_limits,
            trusted_proxy_sources,
            verify_after_create: self.verify_after_create,
            notify_url: self.notify_url.filter(|u| !u.trim().is_empty()),
        };
        Ok(Config {
            data_dir: self.dir,
            storage,
            part_size: self.part_size_mib * MIB,
            parts_in_flight: self.parts_in_flight,
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
            app_timeout: std::time::Duration::from_secs(self.app.app_timeout_secs.max(1)),
            on_restore_timeout: std::time::Duration::from_secs(
                self.app.on_restore_timeout_secs.max(1),
            ),
            restore_while_running: self.app.restore_while_running,
            serve_limits: crate::serve::Limits {
                header_read: crate::serve::HEADER_READ_TIMEOUT,
                max_connections: self.max_connections.max(1),
                body_gap: std::time::Duration::from_secs(self.body_gap_secs.max(1)),
                small_body_time: std::time::Duration::from_secs(self.small_body_secs.max(1)),
            },
        })
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
                crate::jobs::DEFAULT_PROGRESS_LOG_SECS,
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
            serve_limits: crate::serve::Limits::default(),
        }
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

/// `on`/`off` (also `true`/`false`), for `--rate-limits`.
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("{s:?}: on or off")),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_normalized() {
        assert_eq!(normalize_prefix(""), "");
        assert_eq!(normalize_prefix("/"), "");
        assert_eq!(normalize_prefix("a/b"), "a/b/");
        assert_eq!(normalize_prefix("/a/"), "a/");
    }

    #[test]
    fn payload_signing_auto_signs_only_over_plain_http() {
        let auto = PayloadSigning::Auto;
        assert!(auto.signs(Some("http://127.0.0.1:9000")));
        assert!(auto.signs(Some("HTTP://minio.internal")));
        assert!(!auto.signs(Some("https://account.r2.cloudflarestorage.com")));
        assert!(!auto.signs(Some("HTTPS://s3.example.com")));
        assert!(!auto.signs(None), "AWS itself, over HTTPS");
        assert!(PayloadSigning::Always.signs(Some("https://s3.example.com")));
        assert!(!PayloadSigning::Never.signs(Some("http://127.0.0.1:9000")));
    }

    #[test]
    fn cli_parses_and_checks_serve_flags() {
        let cli = Cli::try_parse_from([
            "backup-gateway",
            "serve",
            "--dir",
            "/tmp/x",
            "--part-size-mib",
            "4",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(
            args.into_config().unwrap_err().to_string(),
            "invalid configuration: --part-size-mib must be at least 5"
        );
    }

    #[test]
    fn settings_flags_pin_their_values_and_bad_ones_are_refused_at_startup() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["backup-gateway", "serve"];
            argv.extend_from_slice(extra);
            let Command::Serve(args) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("not serve")
            };
            args.into_config()
        };
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
        let parse = |extra: &[&str]| {
            let mut argv = vec!["backup-gateway", "serve"];
            argv.extend_from_slice(extra);
            let Command::Serve(args) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("not serve")
            };
            args.into_config()
        };
        let config = parse(&["--exclude", "logs/*.log", "--exclude", "**/*.tmp"]).unwrap();
        assert_eq!(config.exclude, ["logs/*.log", "**/*.tmp"]);
        let err = parse(&["--exclude", "a/[b"]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid configuration: --exclude:"),
            "{err}"
        );
    }
}
