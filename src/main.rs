//! The `backup-gateway` binary: parse the command line, set up logging, run.

use backup_gateway::auth::users::Users;
use backup_gateway::config::{Cli, Command, LogFormat, SuperuserAction};
use backup_gateway::{AppState, serve};
use clap::{CommandFactory, FromArgMatches};
use std::process::ExitCode;

/// With the `jemalloc` feature (a default one: every build users make, the image's and the
/// tests'), jemalloc rather than glibc's malloc: under many clients at once glibc keeps
/// freed buffers resident in its arenas (docs/design.md, "Reads from the store, and the
/// memory budget").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `--version`: the version and the allocator this binary was built with.
const VERSION: &str = if cfg!(feature = "jemalloc") {
    concat!(env!("CARGO_PKG_VERSION"), " (allocator: jemalloc)")
} else {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (allocator: the system's malloc)"
    )
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::command()
        .version(VERSION)
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging(cli.log_format);
    match run(cli).await {
        Ok(Some(code)) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", backup_gateway::error::ErrorChain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Log lines on stdout, filtered by `RUST_LOG` (default `info`, the AWS SDK at `warn`), as
/// text (colours on a terminal unless `NO_COLOR`) or as one JSON object per line.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,aws_config=warn,aws_smithy_runtime=warn".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => logs
            .with_ansi(
                std::io::IsTerminal::is_terminal(&std::io::stdout())
                    && std::env::var_os("NO_COLOR").is_none(),
            )
            .init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Runs the command; `Some(code)` is the `--exec` application's exit code, which the
/// gateway exits with.
async fn run(cli: Cli) -> Result<Option<i32>, Box<dyn std::error::Error>> {
    let mut exit_code = None;
    match cli.command {
        Command::Serve(args) => {
            let (addr, metrics_addr) = (args.http, args.metrics_http);
            let config = args.into_config()?;
            // Before the `--exec` application starts (`AppState::new`).
            let signals = ShutdownSignals::listen()?;
            let state = AppState::new(config).await?;
            let listener = tokio::net::TcpListener::bind(addr).await?;
            if let Some(link) =
                backup_gateway::auth::installer::first_run_link(&state, listener.local_addr()?)?
            {
                print_first_run_link(&link, cli.log_format, &state.config.data_dir);
            }
            tracing::info!(address = %listener.local_addr()?, "listening");
            let stop = tokio_util::sync::CancellationToken::new();
            let child = match &state.app {
                backup_gateway::lifecycle::Lifecycle::Exec(s) => Some(std::sync::Arc::clone(s)),
                backup_gateway::lifecycle::Lifecycle::None
                | backup_gateway::lifecycle::Lifecycle::Commands { .. } => None,
            };
            tokio::spawn({
                let (stop, child) = (stop.clone(), child.clone());
                async move {
                    let signal = signals.first().await;
                    // The `--exec` application gets the same signal at once, and stops
                    // while the open requests finish.
                    if let Some(c) = &child {
                        c.close();
                        c.signal(signal);
                    }
                    stop.cancel();
                }
            });
            if let Some(addr) = metrics_addr {
                let metrics = tokio::net::TcpListener::bind(addr).await?;
                tracing::info!(address = %metrics.local_addr()?, "metrics listening");
                let (state, stop) = (state.clone(), stop.clone());
                tokio::spawn(async move {
                    if let Err(e) =
                        backup_gateway::serve_metrics(metrics, state, stop.cancelled_owned()).await
                    {
                        tracing::error!(error = %e, "the metrics listener failed");
                    }
                });
            }
            let pitr = state.pitr.clone();
            serve(listener, state, stop.cancelled_owned()).await?;
            // The point-in-time streams ship what they captured (bounded: a store that does
            // not answer does not hold the exit up past the retries' minute).
            let drained = tokio::task::spawn_blocking(move || pitr.shut_down());
            let _ = tokio::time::timeout(std::time::Duration::from_secs(70), drained).await;
            // Cancelled creates and uploads: their aborts reach the store before exit.
            backup_gateway::storage::s3::finish_aborts(std::time::Duration::from_secs(10)).await;
            exit_code = child.and_then(|c| c.exit_code());
        }
        Command::Superuser { action, dir } => {
            let users = Users::open(&dir)?;
            match action {
                SuperuserAction::Upsert { email, password } => {
                    users.upsert(&email, &password)?;
                    println!("Successfully saved superuser \"{email}\"!");
                }
                SuperuserAction::Delete { email } => {
                    users.delete(&email)?;
                    println!("Successfully deleted superuser \"{email}\"!");
                }
            }
        }
    }
    Ok(exit_code)
}

/// What PocketBase prints at its first start: the one-time link to the page's install
/// screen (as a log event with `--log-format json`, so that collectors can parse it).
fn print_first_run_link(link: &str, format: LogFormat, dir: &std::path::Path) {
    let valid = backup_gateway::auth::installer::VALIDITY.whole_minutes();
    match format {
        LogFormat::Text => {
            println!(
                "\n(!) No superuser yet. Open this link in a browser to create the first one \
                 (it works once, for {valid} minutes):\n{link}\n(or run: backup-gateway \
                 superuser upsert EMAIL PASSWORD --dir {})\n",
                dir.display()
            );
        }
        LogFormat::Json => tracing::warn!(
            url = %link,
            valid_minutes = valid,
            "no superuser yet: open the link to create the first one"
        ),
    }
}

/// Ctrl-C (SIGINT) and SIGTERM, listened to from the start: their handlers are installed
/// before the `--exec` application is spawned, so that it starts with their default
/// actions (an exec resets handled signals, not ignored ones) even when the gateway
/// inherited them ignored (`nohup`, a background job of a script), and its own traps work.
struct ShutdownSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Which one came first.
    async fn first(mut self) -> rustix::process::Signal {
        let signal = tokio::select! {
            _ = self.int.recv() => rustix::process::Signal::INT,
            _ = self.term.recv() => rustix::process::Signal::TERM,
        };
        tracing::info!("shutting down");
        signal
    }
}
