//! The `--on-restore` command: run with `sh -c` once the new data is in place, with the
//! restored key and the data directory in its environment; its output is logged.

use std::path::Path;

/// Runs `cmd` and returns its exit code (`None`: it could not run, or a signal ended it).
pub(super) async fn run_hook(cmd: &str, key: &str, data_dir: &Path) -> Option<i32> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("GATEWAY_RESTORED_KEY", key)
        .env("GATEWAY_DATA_DIR", data_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    match out {
        Ok(out) => {
            let clip = |b: &[u8]| {
                let s = String::from_utf8_lossy(b);
                s.chars().take(4096).collect::<String>()
            };
            let code = out.status.code();
            if out.status.success() {
                tracing::info!(exit_code = ?code, stdout = %clip(&out.stdout), stderr = %clip(&out.stderr), "on-restore command finished");
            } else {
                tracing::error!(exit_code = ?code, stdout = %clip(&out.stdout), stderr = %clip(&out.stderr), "on-restore command failed");
            }
            code
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot run the on-restore command");
            None
        }
    }
}
