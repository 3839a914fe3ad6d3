//! backup-gateway: the PocketBase Backups API for a data directory, with the archives in an
//! S3-compatible bucket or a local directory.
//!
//! Crate map (data flows from the HTTP edge down to the stores and the data directory):
//! - [`config`]: the command line and [`Config`].
//! - [`api`]: the HTTP routes (PocketBase's paths, status codes and messages).
//! - [`serve`]: connections (the accept loop, graceful shutdown, lingering close).
//! - [`error`]: [`error::ApiError`], the one error type of the HTTP edge.
//! - [`auth`]: superuser tokens and file tokens.
//! - [`users`]: the superusers and the token secrets.
//! - [`installer`]: the first-run link that creates the first superuser.
//! - [`settings`]: the backup and superuser settings (`/api/settings`), saved and pinned.
//! - [`keys`]: backup name rules, and [`keys::BackupKey`], a key checked once.
//! - [`jobs`]: the one-create-or-restore-at-a-time lock and the keys being written.
//! - [`backup`]: create (data directory -> zip -> store), full or incremental.
//! - [`index`]: a stored archive's central directory, read with ranged reads.
//! - [`restore`]: restore (store -> checked entries -> staging -> atomic swap).
//! - [`schedule`]: scheduled backups and their retention; [`cron`]: PocketBase's cron
//!   expressions.
//! - [`archive`]: the zip format, the tree walk and survey, the consistent snapshots of
//!   SQLite databases, the create's pipeline, the restore's checks and extraction.
//! - [`storage`]: the [`storage::BackupStore`] trait, S3 and local backends, S3's multipart
//!   rules.
//! - [`bufpool`]: the one memory budget of backup bytes and its buffer pools.
//! - [`progress`]: the live progress of the running create or restore.
//! - [`outcomes`]: how operations ended: summary log lines, metrics, the last outcomes.
//! - [`metrics`]: the Prometheus families and their exposition (`--metrics-http`).
//! - [`pocketbase`]: what is read of a PocketBase data directory (its app name).
//! - [`state_dir`]: every path under `<dir>/.backup-gateway/`.
//! - [`fsutil`]: atomic writes, kept values, random names.
//! - [`time_fmt`]: PocketBase's date format.

pub mod api;
pub mod archive;
pub mod auth;
pub mod backup;
pub mod bufpool;
pub mod config;
pub mod cron;
pub mod error;
pub mod fsutil;
pub mod index;
pub mod installer;
pub mod jobs;
pub mod keys;
pub mod metrics;
pub mod outcomes;
pub mod pocketbase;
pub mod progress;
pub mod restore;
pub mod schedule;
pub mod serve;
pub mod settings;
pub mod state_dir;
pub mod storage;
pub mod time_fmt;
pub mod users;

pub use config::Config;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Name of the local backups directory inside the data directory (PocketBase's).
pub const LOCAL_BACKUPS_DIR: &str = "backups";

/// Everything a request needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// The store of the current settings, and the `backups.s3` it was opened for: see
    /// [`AppState::store`].
    store: Arc<std::sync::RwLock<(settings::S3, Arc<dyn storage::BackupStore>)>>,
    /// Serialises store changes ([`AppState::apply_settings`]).
    store_change: Arc<tokio::sync::Mutex<()>>,
    pub settings: Arc<settings::SettingsStore>,
    pub scheduled_runs: Arc<schedule::Runs>,
    pub tokens: Arc<auth::Tokens>,
    pub jobs: jobs::Jobs,
    pub restores: Arc<restore::Restores>,
    /// The last API create and upload.
    pub outcomes: Arc<outcomes::Outcomes>,
    pub metrics: Arc<metrics::Metrics>,
    /// The one memory budget of backup bytes ([`bufpool::Budget`]).
    pub budget: Arc<bufpool::Budget>,
    /// What a create leaves out: [`excluded_paths`] and the `--exclude` globs.
    backup_exclude: Arc<archive::Exclude>,
    /// The first-run link's token ([`installer`]).
    pub installer: Arc<installer::Installer>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot create the data directory {0}")]
    DataDir(PathBuf, #[source] std::io::Error),
    #[error("cannot open the local backups directory {0}")]
    BackupsDir(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    State(#[from] users::UsersError),
    #[error("cannot finish the restore that a crash interrupted")]
    Recover(#[source] std::io::Error),
    /// The SQLite built in cannot take consistent snapshots: backing up would copy torn
    /// files, so the gateway does not start.
    #[error("{0}")]
    Sqlite(String),
    #[error("invalid --exclude glob")]
    Exclude(#[source] globset::Error),
    #[error("cannot read the saved settings")]
    Settings(#[source] std::io::Error),
    #[error("cannot set up the superuser of --superuser-email")]
    Superuser(#[source] users::UsersError),
}

impl AppState {
    /// Opens the data directory, the gateway state and the store.
    ///
    /// # Errors
    /// When a directory cannot be created or the state file cannot be read.
    pub async fn new(config: Config) -> Result<Self, StartupError> {
        archive::sqlite::check_support().map_err(StartupError::Sqlite)?;
        let backup_exclude = archive::Exclude::new(excluded_paths(&config), &config.exclude)
            .map_err(StartupError::Exclude)?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StartupError::DataDir(config.data_dir.clone(), e))?;
        let users = users::Users::open(&config.data_dir)?;
        match &config.initial_superuser {
            Some(su) => users
                .ensure(&su.email, &su.password)
                .map_err(StartupError::Superuser)?,
            None if users.current()?.superusers.is_empty() => tracing::warn!(
                "no superuser yet: nothing can be done over the API until one exists; create \
                 one with `backup-gateway superuser upsert EMAIL PASSWORD --dir {}`, or start \
                 with GATEWAY_SUPERUSER_EMAIL and GATEWAY_SUPERUSER_PASSWORD",
                config.data_dir.display()
            ),
            None => {}
        }
        let restores = restore::Restores::open(&config.data_dir);
        restore::recover(&config.data_dir, &excluded_paths(&config), &restores)
            .map_err(StartupError::Recover)?;
        let settings = settings::SettingsStore::open(&config.data_dir, config.pins.clone())
            .map_err(StartupError::Settings)?;
        let s3_setting = settings.current().backups.s3.clone();
        let metrics = Arc::new(metrics::Metrics::new());
        let store = open_store(&config, &s3_setting, &metrics).await?;
        tracing::info!(store = %store.describe(), data_dir = %config.data_dir.display(), "gateway ready");
        let scheduled_runs = schedule::Runs::open(&config.data_dir);
        let outcomes = outcomes::Outcomes::open(&config.data_dir);
        last_successes(&metrics, &restores, &scheduled_runs, &outcomes);
        Ok(Self {
            budget: bufpool::Budget::new(config.memory_budget),
            scheduled_runs: Arc::new(scheduled_runs),
            outcomes: Arc::new(outcomes),
            metrics,
            jobs: jobs::Jobs::new(config.progress_log_every),
            config: Arc::new(config),
            store: Arc::new(std::sync::RwLock::new((s3_setting, store))),
            store_change: Arc::new(tokio::sync::Mutex::new(())),
            settings: Arc::new(settings),
            tokens: Arc::new(auth::Tokens::new(users)),
            restores: Arc::new(restores),
            backup_exclude: Arc::new(backup_exclude),
            installer: Arc::new(installer::Installer::default()),
        })
    }

    /// The store of the current settings. An operation takes it once, at its start, and
    /// keeps it to its end: a change of `backups.s3` applies to the next operation, never
    /// in the middle of a running one.
    pub fn store(&self) -> Arc<dyn storage::BackupStore> {
        self.store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Puts the saved settings into effect: when `backups.s3` differs from what the current
    /// store was opened for, the new store is opened (local again when it is disabled).
    /// Changes are applied one at a time, each to the newest settings, so two PATCHes racing
    /// cannot leave the store of the older one.
    ///
    /// # Errors
    /// When the local backups directory cannot be opened.
    pub async fn apply_settings(&self) -> Result<(), StartupError> {
        let _one_at_a_time = self.store_change.lock().await;
        let wanted = self.settings.current().backups.s3.clone();
        if self.store.read().unwrap_or_else(|e| e.into_inner()).0 == wanted {
            return Ok(());
        }
        let store = open_store(&self.config, &wanted, &self.metrics).await?;
        tracing::info!(store = %store.describe(), "backups store changed");
        *self.store.write().unwrap_or_else(|e| e.into_inner()) = (wanted, store);
        Ok(())
    }

    /// The effective `meta.appName`: saved (or pinned), else the data directory's
    /// PocketBase setting, else `--app-name`'s default.
    pub async fn app_name(&self) -> String {
        if let Some(name) = self.settings.current().meta.app_name.clone() {
            return name;
        }
        let (dir, fallback) = (self.config.data_dir.clone(), self.config.app_name.clone());
        tokio::task::spawn_blocking(move || pocketbase::app_name(&dir, &fallback))
            .await
            .unwrap_or_else(|_| self.config.app_name.clone())
    }

    /// Paths under the data directory that are never backed up nor touched by a restore:
    /// the gateway's state and scratch space, PocketBase's scratch directories
    /// ([`pocketbase::EXCLUDED`]), and the local backups directory when it lies inside the
    /// data directory.
    pub fn excluded_paths(&self) -> Vec<PathBuf> {
        excluded_paths(&self.config)
    }

    /// What a create leaves out: [`excluded_paths`] and the `--exclude` globs.
    pub fn backup_exclude(&self) -> archive::Exclude {
        (*self.backup_exclude).clone()
    }
}

/// The store for `s3` (the setting): the flags' bucket when they give one, else the bucket
/// of the setting when it is enabled, else the local backups directory.
async fn open_store(
    config: &Config,
    s3: &settings::S3,
    metrics: &metrics::Metrics,
) -> Result<Arc<dyn storage::BackupStore>, StartupError> {
    Ok(match (config.s3_for(s3), &config.storage) {
        (Some(c), _) => Arc::new(
            storage::s3::S3Store::metered(&c, metrics.store.clone())
                .await
                .with_pending_dir(state_dir::pending_uploads(&config.data_dir))
                .await,
        ),
        (None, config::StorageConfig::Local { dir }) => Arc::new(
            storage::local::LocalStore::new(dir)
                .map_err(|e| StartupError::BackupsDir(dir.clone(), e))?,
        ),
        (None, config::StorageConfig::S3(_)) => unreachable!("flags' S3 is always Some"),
    })
}

/// The last successful create and restore kept from before this start, for the metrics'
/// timestamps (an alert on a stale backup must not fire because the gateway restarted).
fn last_successes(
    metrics: &metrics::Metrics,
    restores: &restore::Restores,
    runs: &schedule::Runs,
    outcomes: &outcomes::Outcomes,
) {
    let parse = |t: &str| time_fmt::parse_pb(t);
    let creates = [
        outcomes
            .create
            .last()
            .filter(|o| o.status == outcomes::Status::Ok)
            .map(|o| o.finished_at),
        runs.last()
            .filter(|r| r.status == schedule::RunStatus::Ok)
            .map(|r| r.finished_at),
    ];
    for t in creates.into_iter().flatten().filter_map(|t| parse(&t)) {
        metrics.set_last_success(metrics::Operation::Create, t);
    }
    if let Some(t) = restores
        .last()
        .filter(|r| r.status == restore::Outcome::Ok)
        .and_then(|r| r.finished_at)
        .and_then(|t| parse(&t))
    {
        metrics.set_last_success(metrics::Operation::Restore, t);
    }
}

/// See [`AppState::excluded_paths`].
pub fn excluded_paths(config: &Config) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from(state_dir::NAME)];
    out.extend(pocketbase::EXCLUDED.iter().map(PathBuf::from));
    if let config::StorageConfig::Local { dir } = &config.storage {
        let data = std::path::absolute(&config.data_dir).unwrap_or(config.data_dir.clone());
        let backups = std::path::absolute(dir).unwrap_or(dir.clone());
        if let Ok(rel) = backups.strip_prefix(&data)
            && !rel.as_os_str().is_empty()
            && !out.iter().any(|p| p == rel)
        {
            out.push(rel.to_path_buf());
        }
    }
    out
}

/// The HTTP application.
pub fn router(state: AppState) -> axum::Router {
    api::router(state)
}

/// Serves `state` on `listener` until `shutdown` completes, with the configured grace
/// period ([`serve::serve`]).
///
/// # Errors
/// See [`serve::serve`].
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.config.shutdown_grace;
    let stop = tokio_util::sync::CancellationToken::new();
    let scheduler = tokio::spawn(schedule::run(state.clone(), stop.clone()));
    let shutdown = {
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    };
    let served = serve::serve(listener, router(state), shutdown, grace).await;
    stop.cancel();
    let _ = scheduler.await;
    served
}

/// Serves `GET /metrics` (`--metrics-http`) on `listener` until `shutdown`.
///
/// # Errors
/// When accepting connections fails.
pub async fn serve_metrics(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, api::progress::metrics_router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
