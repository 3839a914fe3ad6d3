//! backup-gateway: the PocketBase Backups API for a data directory, with the archives in an
//! S3-compatible bucket or a local directory.
//!
//! Crate map. The rooms are layered: no two import each other, directly or through others
//! (tests/architecture.rs checks it), and data flows from the HTTP edge down to the stores
//! and the data directory. This crate root wires them together ([`AppState`]).
//!
//! The edge and its configuration:
//! - [`config`]: [`Config`], and the command line that builds it ([`config::cli`]).
//! - [`api`]: the HTTP routes (PocketBase's paths, status codes and messages), the
//!   connections ([`api::serve`]), the client address and `rateLimits`
//!   ([`api::client_ip`], [`api::rate_limit`]).
//! - [`auth`]: superuser and file tokens, the superusers, bounded password logins, the
//!   first-run link.
//! - [`settings`]: the backup and superuser settings (`/api/settings`), saved and pinned.
//!
//! The services:
//! - [`schedule`]: scheduled backups and their retention, PocketBase's cron expressions,
//!   the clock.
//! - [`backup`]: the one create job of the API and the schedule, and the create itself
//!   (data directory -> zip -> store), full or incremental.
//! - [`restore`]: restore (store -> checked entries -> staging -> atomic swap).
//! - [`verify`]: a stored backup read and checked without restoring it, and the results.
//! - [`lifecycle`]: the application around a restore (`--exec`, `--app-stop/--app-start`)
//!   and the one runner of the operator's commands.
//! - [`pitr`]: point-in-time restore: the databases' transactions streamed to the store
//!   (`--pitr`), and each database rebuilt to a moment.
//!
//! What they are built on:
//! - [`archive`]: the zip format, the tree walk and survey, the consistent snapshots of
//!   SQLite databases, the create's pipeline, the restore's checks and extraction.
//! - [`index`]: a stored archive's central directory, read with ranged reads.
//! - [`storage`]: the [`storage::BackupStore`] trait, the local and S3 backends.
//! - [`keys`]: backup name rules, and [`keys::BackupKey`], a key checked once.
//! - [`pocketbase`]: what is read of a PocketBase data directory (its app name).
//! - [`ops`]: the busy lock, live progress, outcomes, metrics and failure notifications.
//! - [`error`]: PocketBase's error answers ([`error::ApiError`]) and field errors.
//! - [`util`]: atomic writes and kept values, the state directory's paths, PocketBase's
//!   date format, the one memory budget of backup bytes.

pub mod api;
pub mod archive;
pub mod auth;
pub mod backup;
pub mod config;
pub mod error;
pub mod index;
pub mod keys;
pub mod lifecycle;
pub mod ops;
pub mod pitr;
pub mod pocketbase;
pub mod restore;
pub mod schedule;
pub mod settings;
pub mod storage;
pub mod util;
pub mod verify;

pub use config::Config;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use api::{rate_limit, serve};
use auth::{installer, login, users};
use ops::{jobs, metrics, outcomes};
use util::{bufpool, state_dir, time_fmt};

/// Name of the local backups directory inside the data directory (PocketBase's).
pub const LOCAL_BACKUPS_DIR: &str = "backups";

/// Everything a request needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// The store of the current settings, and the `backups.s3` it was opened for: see
    /// [`AppState::store`].
    store: StoreCell,
    /// Serialises store changes ([`AppState::apply_settings`]).
    store_change: Arc<tokio::sync::Mutex<()>>,
    pub settings: Arc<settings::SettingsStore>,
    pub scheduled_runs: Arc<outcomes::Runs>,
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
    /// The last verify result of every key.
    pub verifications: Arc<verify::Verifications>,
    pub notifier: ops::notify::Notifier,
    /// How a restore stops and starts the application ([`lifecycle`]).
    pub app: lifecycle::Lifecycle,
    /// The edge's bounds: password hashes at once ([`login::LoginGate`]).
    pub logins: Arc<login::LoginGate>,
    /// ... and the `rateLimits` counters ([`rate_limit::Limiter`]).
    pub rate_limits: Arc<rate_limit::Limiter>,
    /// The first-run link's token ([`installer`]).
    pub installer: Arc<installer::Installer>,
    /// The point-in-time streams, running while the setting `backups.pitr` is on.
    pub pitr: Arc<pitr::Pitr>,
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
    /// `--backups-dir` where backups and the data would mix (see [`check_backups_dir`]).
    #[error("{0}")]
    UnsafeBackupsDir(String),
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
        check_backups_dir(&config)?;
        state_dir::make_private(&config.data_dir)
            .map_err(|e| StartupError::DataDir(state_dir::root(&config.data_dir), e))?;
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
        let settings = Arc::new(
            settings::SettingsStore::open(&config.data_dir, config.pins.clone())
                .map_err(StartupError::Settings)?,
        );
        warn_if_proxy_headers_trusted_from_every_peer(&settings.current());
        let s3_setting = settings.current().backups.s3.clone();
        let metrics = Arc::new(metrics::Metrics::new());
        let store = open_store(&config, &s3_setting, &metrics).await?;
        tracing::info!(store = %store.describe(), data_dir = %config.data_dir.display(), "gateway ready");
        let scheduled_runs = outcomes::Runs::open(&config.data_dir);
        let outcomes = outcomes::Outcomes::open(&config.data_dir);
        last_successes(&metrics, &restores, &scheduled_runs, &outcomes);
        let verifications = verify::Verifications::open(&config.data_dir);
        // A database image a verify left when the process died.
        let _ = std::fs::remove_dir_all(state_dir::verify_scratch(&config.data_dir));
        if let Some(t) = verifications
            .last_success()
            .and_then(|t| time_fmt::parse_pb(&t))
        {
            metrics.set_last_success(metrics::Operation::Verify, t);
        }
        let notifier = notifier_of(&settings);
        let app = lifecycle::Lifecycle::new(
            config.exec.as_deref(),
            config.app_stop.as_deref().zip(config.app_start.as_deref()),
            config.app_timeout,
        );
        let budget = bufpool::Budget::new(config.memory_budget);
        let store = Arc::new(std::sync::RwLock::new((s3_setting, store)));
        let pitr = start_pitr(&config, &store, &budget, &notifier);
        pitr.set_enabled(settings.current().backups.pitr);
        Ok(Self {
            budget,
            scheduled_runs: Arc::new(scheduled_runs),
            outcomes: Arc::new(outcomes),
            metrics,
            jobs: jobs::Jobs::new(config.progress_log_every),
            config: Arc::new(config),
            store,
            store_change: Arc::new(tokio::sync::Mutex::new(())),
            settings,
            tokens: Arc::new(auth::Tokens::new(users)),
            restores: Arc::new(restores),
            backup_exclude: Arc::new(backup_exclude),
            verifications: Arc::new(verifications),
            notifier,
            app,
            logins: Arc::new(login::LoginGate::default()),
            rate_limits: Arc::new(rate_limit::Limiter::default()),
            installer: Arc::new(installer::Installer::default()),
            pitr,
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

    /// Puts the saved settings into effect: the point-in-time streams start or stop with
    /// `backups.pitr`; when `backups.s3` differs from what the current store was opened
    /// for, the new store is opened (local again when it is disabled).
    /// Changes are applied one at a time, each to the newest settings, so two PATCHes racing
    /// cannot leave the store of the older one.
    ///
    /// # Errors
    /// When the local backups directory cannot be opened.
    pub async fn apply_settings(&self) -> Result<(), StartupError> {
        let _one_at_a_time = self.store_change.lock().await;
        let pitr = self.pitr.clone();
        let on = self.settings.current().backups.pitr;
        let _ = tokio::task::spawn_blocking(move || pitr.set_enabled(on)).await;
        let wanted = self.settings.current().backups.s3.clone();
        if self.store.read().unwrap_or_else(|e| e.into_inner()).0 == wanted {
            return Ok(());
        }
        let store = open_store(&self.config, &wanted, &self.metrics).await?;
        tracing::info!(store = %store.describe(), "backups store changed");
        *self.store.write().unwrap_or_else(|e| e.into_inner()) = (wanted, store);
        Ok(())
    }

    /// The store of the current settings and what it says of `key`: `None` when the key is
    /// missing or still being written (a create's or an upload's), which a restore and a
    /// verify both answer as a missing backup. The operation keeps the store to its end.
    ///
    /// # Errors
    /// When the store cannot say.
    pub async fn stored_backup(
        &self,
        key: &str,
    ) -> Result<Option<(Arc<dyn storage::BackupStore>, storage::BackupInfo)>, storage::StorageError>
    {
        if self.jobs.is_being_written(key) {
            return Ok(None);
        }
        let store = self.store();
        Ok(store.stat(key).await?.map(|info| (store, info)))
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

    /// The environment of the operator's commands and of the application: the gateway's,
    /// without its secrets ([`lifecycle::runner::scrubbed_env`]): the S3 keys of the flags
    /// and of the settings, the first superuser's password.
    pub fn command_env(&self) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        let mut secrets = Vec::new();
        let s3 = self.settings.current().backups.s3.clone();
        secrets.extend([s3.access_key, s3.secret]);
        if let config::StorageConfig::S3(c) = &self.config.storage
            && let Some((key, secret)) = &c.credentials
        {
            secrets.extend([key.clone(), secret.clone()]);
        }
        if let Some(su) = &self.config.initial_superuser {
            secrets.push(su.password.clone());
        }
        lifecycle::runner::scrubbed_env(&secrets)
    }
}

/// The notifier, to the `backups.notifyUrl` of the settings current at each send.
fn notifier_of(settings: &Arc<settings::SettingsStore>) -> ops::notify::Notifier {
    let settings = settings.clone();
    ops::notify::Notifier::new(Arc::new(move || {
        settings.current().backups.notify_url().map(str::to_string)
    }))
}

/// The current store, as [`AppState::store`] reads it.
type StoreCell = Arc<std::sync::RwLock<(settings::S3, Arc<dyn storage::BackupStore>)>>;

/// The point-in-time streams of the data directory's databases into the store of the
/// current settings (they run while `backups.pitr` is on).
fn start_pitr(
    config: &Config,
    store: &StoreCell,
    budget: &Arc<bufpool::Budget>,
    notifier: &ops::notify::Notifier,
) -> Arc<pitr::Pitr> {
    let cell = store.clone();
    let ctx = pitr::stream::Ctx {
        rt: tokio::runtime::Handle::current(),
        store: Arc::new(move || cell.read().unwrap_or_else(|e| e.into_inner()).1.clone()),
        put: storage::PutOptions {
            part_size: config.part_size,
            parts_in_flight: config.parts_in_flight,
            budget: budget.clone(),
            copy: None,
        },
        base_every: config.pitr_base_every,
        levels: config.pitr_levels,
        max_bytes: config.pitr_max_bytes,
    };
    let notifier = notifier.clone();
    let on_stall = Box::new(move |db: &str, why: &str| {
        notifier.send(ops::notify::Event::failed(
            ops::notify::What::PitrStalled,
            db,
            why,
        ));
    });
    let pitr = pitr::Pitr::new(
        &config.data_dir,
        excluded_paths(config),
        ctx,
        pitr::Keep {
            retention: config.pitr_retention,
            max_bytes: config.pitr_max_bytes,
            exclude: config.pitr_exclude.clone(),
        },
        on_stall,
    );
    pitr.start();
    pitr
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
    runs: &outcomes::Runs,
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
            .filter(|r| r.status == outcomes::RunStatus::Ok)
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

/// Refuses a local backups directory that a delete or a restore could turn against the
/// data: the data directory itself (`DELETE /api/backups/data.db` would delete the live
/// database), a directory that contains it (a backup key could name a file of the data
/// directory's parent, and the create would archive its own output's neighbours), or one
/// inside the gateway's own state. Inside the data directory is PocketBase's layout
/// (`pb_data/backups`) and is safe because that path is left out of every backup and every
/// restore ([`excluded_paths`]); it is refused when it only lies inside through a symbolic
/// link, where that exclusion, made from the paths as given, would not see it and a restore
/// would replace the backups. Paths are compared canonical (links and `..` resolved; a
/// directory that does not exist yet by its nearest existing parent).
///
/// # Errors
/// [`StartupError::UnsafeBackupsDir`] with a message naming both paths.
pub fn check_backups_dir(config: &Config) -> Result<(), StartupError> {
    let config::StorageConfig::Local { dir } = &config.storage else {
        return Ok(());
    };
    let data = canonical(&config.data_dir);
    let backups = canonical(dir);
    let refuse = |why: &str| {
        Err(StartupError::UnsafeBackupsDir(format!(
            "--backups-dir {} {why} (--dir {}): choose a directory outside it, or leave \
             --backups-dir out for {}",
            dir.display(),
            config.data_dir.display(),
            config.data_dir.join(LOCAL_BACKUPS_DIR).display(),
        )))
    };
    if backups == data {
        return refuse("is the data directory");
    }
    if data.starts_with(&backups) {
        return refuse("contains the data directory");
    }
    if let Ok(rel) = backups.strip_prefix(&data) {
        if rel.starts_with(state_dir::NAME) {
            return refuse("is inside the gateway's state directory");
        }
        if !excluded_paths(config).iter().any(|p| p == rel) {
            return refuse("is inside the data directory through a symbolic link");
        }
    }
    Ok(())
}

/// `path` with links and `..` resolved, component by component: what exists is
/// canonicalized as it is met, and a `..` after it goes up from there (as the kernel
/// would); what does not exist yet is taken as written.
fn canonical(path: &std::path::Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for part in abs.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => {
                out.push(other);
                if let Ok(c) = out.canonicalize() {
                    out = c;
                }
            }
        }
    }
    out
}

/// Proxy headers believed from every peer let any client that reaches the port name its
/// own address (the allowlist, the rate limits): said at start and when saved.
pub fn warn_if_proxy_headers_trusted_from_every_peer(settings: &settings::Settings) {
    if api::client_ip::trusts_every_peer(&settings.trusted_proxy) {
        tracing::warn!(
            headers = ?settings.trusted_proxy.headers,
            "trustedProxy.headers are believed from every peer: a client that reaches this \
             port directly can claim any address; list your proxies in trustedProxy.sources \
             (--trusted-proxies)"
        );
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
    // `--exec`: the application starts now that the gateway is ready (a create or a
    // restore can reach it from its first write on); when it exits on its own, the gateway
    // stops too.
    let child = match &state.app {
        lifecycle::Lifecycle::Exec(s) => Some(Arc::clone(s)),
        lifecycle::Lifecycle::None | lifecycle::Lifecycle::Commands { .. } => None,
    };
    if let Some(s) = &child {
        s.start(&state.command_env())?;
    }
    let shutdown = {
        let (stop, child) = (stop.clone(), child.clone());
        async move {
            match &child {
                Some(s) => tokio::select! {
                    () = shutdown => {}
                    () = s.exited_on_its_own() => {}
                },
                None => shutdown.await,
            }
            stop.cancel();
        }
    };
    let limits = state.config.serve_limits;
    let served = serve::serve_with(listener, router(state), shutdown, grace, limits).await;
    stop.cancel();
    let _ = scheduler.await;
    if let Some(s) = &child {
        s.close();
    }
    if let Some(s) = child
        && let Err(e) = s.stop(rustix::process::Signal::TERM).await
    {
        tracing::error!(error = %e, "stopping the application failed");
    }
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
    // The API's connection handling: the same header and idle timeouts and bounds.
    let limits = state.config.serve_limits;
    let app = api::progress::metrics_router(state);
    serve::serve_with(listener, app, shutdown, Duration::from_secs(5), limits).await
}
