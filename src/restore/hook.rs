//! The `--on-restore` command: run once the new data is in place (and the application,
//! when a way to start it is configured, started on it), through the one command runner
//! ([`crate::lifecycle::runner`]): `sh -c`, the environment without the gateway's secrets
//! plus the restored key and the data directory, its output logged, killed past
//! `--on-restore-timeout-secs` (the restore's busy lock is then freed).

use crate::AppState;
use crate::lifecycle::runner::{self, Ran};

/// Runs `cmd` after the restore of `key`; how it ended.
pub(super) async fn run_hook(state: &AppState, cmd: &str, key: &str) -> Ran {
    runner::run(
        "on-restore",
        cmd,
        &state.command_env(),
        &[
            ("GATEWAY_RESTORED_KEY", key.as_ref()),
            ("GATEWAY_DATA_DIR", state.config.data_dir.as_os_str()),
        ],
        state.config.on_restore_timeout,
    )
    .await
}
