//! The `backup-gateway` binary: parse the command line, set up logging, run.

use backup_gateway::config::{Cli, Command, SuperuserAction};
use backup_gateway::{AppState, serve, users::Users};
use clap::Parser;
use std::process::ExitCode;

/// With `--features jemalloc` (the Dockerfile's build), jemalloc rather than glibc's malloc:
/// under many clients at once glibc keeps freed buffers resident in its arenas (measured in
/// docs/design.md, "Reads from the store, and the memory budget").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,aws_config=warn,aws_smithy_runtime=warn".into()),
        )
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stdout())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", backup_gateway::error::ErrorChain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Serve(args) => {
            let addr = args.http;
            let config = args.into_config()?;
            let state = AppState::new(config).await?;
            let listener = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(address = %listener.local_addr()?, "listening");
            serve(listener, state, shutdown_signal()).await?;
            // Cancelled creates and uploads: their aborts reach the store before exit.
            backup_gateway::storage::s3::finish_aborts(std::time::Duration::from_secs(10)).await;
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
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
