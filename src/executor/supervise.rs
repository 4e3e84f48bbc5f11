//! The process the Mesos agent starts: a small supervisor around the worker.
//!
//! `km executor` as started by the agent runs the real executor (the
//! "worker", the same binary with `--worker`) as its child and starts it
//! again if it dies, so a crashed or killed worker never costs the agent its
//! executor: the new worker resubscribes under the same executor id and
//! re-adopts the running containers from its checkpoints. A worker that
//! exits 0 (SHUTDOWN, idle) ends the supervisor; one that keeps crashing
//! ([`MAX_RESTARTS`] within [`RESTART_WINDOW`]) ends it with an error, and
//! the agent then reports the executor's tasks as failed.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// Crashes tolerated within [`RESTART_WINDOW`].
pub const MAX_RESTARTS: usize = 5;
/// The window in which crashes are counted.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// The worker's command line: this binary, `executor`, the same flags, `--worker`.
pub fn worker_args(argv: Vec<OsString>) -> Vec<OsString> {
    let mut args = crate::dispatch::normalize_args(argv);
    args.remove(0);
    args.push("--worker".into());
    args
}

/// Runs and restarts the worker until it exits 0 or `stop` fires (then the
/// worker gets SIGTERM and is waited for: it stops its pods first).
pub async fn supervise(stop: CancellationToken) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the km binary to start the worker")?;
    let args = worker_args(std::env::args_os().collect());
    let mut crashes: Vec<tokio::time::Instant> = Vec::new();
    loop {
        let mut child = Command::new(&exe)
            .args(&args)
            .stdin(Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .with_context(|| format!("cannot start the executor worker {}", exe.display()))?;
        let pid = child.id();
        tracing::info!(pid, "executor worker started");
        let status = tokio::select! {
            s = child.wait() => s?,
            _ = stop.cancelled() => {
                if let Some(pid) = pid {
                    let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
                }
                let s = child.wait().await?;
                tracing::info!(%s, "executor worker stopped");
                return Ok(());
            }
        };
        if status.success() {
            tracing::info!("executor worker finished");
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        crashes.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        crashes.push(now);
        if crashes.len() > MAX_RESTARTS {
            anyhow::bail!(
                "the executor worker died {} times within {}s (last: {status}); giving up, see the sandbox's stderr",
                crashes.len(),
                RESTART_WINDOW.as_secs()
            );
        }
        tracing::warn!(%status, "executor worker died: starting it again; it re-adopts the running pods");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.cancelled() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_runs_the_executor_role_with_the_same_flags() {
        let a = worker_args(vec![
            "km".into(),
            "executor".into(),
            "--suicide-timeout=1m".into(),
        ]);
        assert_eq!(a, ["executor", "--suicide-timeout=1m", "--worker"]);
        let b = worker_args(vec![
            "/usr/bin/k8sm-executor".into(),
            "--allow-privileged".into(),
        ]);
        assert_eq!(b, ["executor", "--allow-privileged", "--worker"]);
    }
}
