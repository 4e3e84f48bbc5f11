//! The process the Mesos agent starts: a small supervisor around the worker.
//!
//! `km executor` as started by the agent runs the real executor (the
//! "worker", the same binary with `--worker`) as its child and starts it
//! again if it dies, so a crashed or killed worker never costs the agent its
//! executor: the new worker resubscribes under the same executor id and
//! re-adopts the running containers from its checkpoints. A worker that
//! exits 0 (SHUTDOWN, idle) ends the supervisor; one that keeps crashing
//! ([`MAX_RESTARTS`] within [`RESTART_WINDOW`]) ends it with an error, and
//! the agent then reports the executor's tasks as failed. A worker that
//! exits 2 (a bad command line) is not started again.
//!
//! The supervisor lives as long as the executor, so `main` starts it through
//! [`lean_main`] before any command-line parsing: no clap tree, no
//! `RUST_LOG` filter, a single-threaded runtime. The code a process has run
//! stays mapped in its memory; the supervisor runs little of it. The worker
//! parses and checks the flags.

use std::ffi::OsString;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum as _;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::logging::LogFormat;
use crate::mesos::executor::ExecutorEnv;

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

/// Whether `args` (normalised, see [`crate::dispatch::normalize_args`])
/// start the supervisor the lean way: `km executor ...` without `--worker`,
/// help or version flags. Started by hand (no agent environment), it takes
/// the usual path, whose errors name a bad flag or the missing variable.
pub fn is_lean_supervisor(args: &[OsString]) -> bool {
    is_supervisor(args) && ExecutorEnv::from_env().is_ok()
}

fn is_supervisor(args: &[OsString]) -> bool {
    args.get(1).is_some_and(|r| r == "executor")
        && !args[2..].iter().any(|a| {
            ["--worker", "-h", "--help", "-V", "--version"]
                .iter()
                .any(|f| a == f)
        })
}

/// The log format asked for by `--log-format` or `KM_LOG_FORMAT`; text when
/// neither says (or says something unknown: the worker names the error).
fn log_format(args: &[OsString]) -> LogFormat {
    let mut value = std::env::var("KM_LOG_FORMAT").ok();
    let mut it = args.iter().map(|a| a.to_string_lossy());
    while let Some(a) = it.next() {
        if a == "--log-format" {
            value = it.next().map(|v| v.into_owned());
        } else if let Some(v) = a.strip_prefix("--log-format=") {
            value = Some(v.to_owned());
        }
    }
    value
        .and_then(|v| LogFormat::from_str(&v, true).ok())
        .unwrap_or(LogFormat::Text)
}

/// `km executor` as the agent starts it: the supervisor on a
/// single-threaded runtime, stopped by SIGTERM or SIGINT.
pub fn lean_main(args: &[OsString]) -> ExitCode {
    crate::logging::init_plain(log_format(args));
    let run = || -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async { supervise(crate::shutdown::on_signal()?).await })
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("km: error: {e:#}");
            match e.downcast_ref::<WorkerExit>() {
                Some(WorkerExit::BadCommandLine) => ExitCode::from(2),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// How a worker's exit ends the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum WorkerExit {
    /// The worker rejected its command line; restarting cannot help.
    #[error(
        "the executor worker rejected its command line (exit status 2); fix the executor's flags in the scheduler's ExecutorInfo"
    )]
    BadCommandLine,
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
        if status.code() == Some(2) {
            return Err(WorkerExit::BadCommandLine.into());
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

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn only_the_agent_s_command_line_takes_the_lean_path() {
        assert!(is_supervisor(&args(&["km", "executor"])));
        assert!(is_supervisor(&args(&[
            "km",
            "executor",
            "--suicide-timeout=1m"
        ])));
        assert!(!is_supervisor(&args(&["km", "executor", "--worker"])));
        assert!(!is_supervisor(&args(&["km", "executor", "--help"])));
        assert!(!is_supervisor(&args(&["km", "executor", "-V"])));
        assert!(!is_supervisor(&args(&["km", "scheduler"])));
        assert!(!is_supervisor(&args(&["km"])));
    }

    #[test]
    fn the_log_format_comes_from_the_flag_or_the_environment() {
        assert_eq!(
            log_format(&args(&["km", "executor", "--log-format", "json"])),
            LogFormat::Json
        );
        assert_eq!(
            log_format(&args(&["km", "executor", "--log-format=json"])),
            LogFormat::Json
        );
        assert_eq!(
            log_format(&args(&["km", "executor", "--log-format=yaml"])),
            LogFormat::Text
        );
    }
}
