//! Starting, signalling and watching executor and task processes.
//!
//! A command runs as Mesos runs it: `CommandInfo.shell` (the default) means
//! `/bin/sh -c <value>`; otherwise `value` is the program and `arguments`
//! its argv (`arguments[0]` is argv\[0\]). The process starts in the
//! sandbox, in a process group of its own (so a Ctrl-C meant for the agent
//! does not reach it and it can outlive the agent), with exactly the
//! environment given, stdin from /dev/null and stdout/stderr appended to
//! the sandbox's `stdout` and `stderr` files.
//!
//! Signals are sent with the system `kill` utility, because the crate
//! forbids `unsafe` and has no syscall wrapper dependency. Processes the
//! agent did not start itself (adopted after a restart) are watched through
//! `/proc/<pid>/stat`, checking the start time so a recycled pid is not
//! mistaken for the original process.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use crate::mesos::proto::v1;

/// A command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The CommandInfo has no value.
    #[error(
        "the command has no value (a shell command line, or the program to run when shell is false)"
    )]
    NoValue,
    /// Opening the sandbox's output files failed.
    #[error("cannot open {file} in the sandbox")]
    Output {
        /// `stdout` or `stderr`.
        file: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The exec failed.
    #[error("cannot start {program:?}")]
    Exec {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A signal the agent sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: please stop.
    Term,
    /// SIGKILL.
    Kill,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Kill => "KILL",
        }
    }
}

/// Starts `command` in `sandbox` with exactly `env`.
pub fn spawn(
    command: &v1::CommandInfo,
    env: &BTreeMap<String, String>,
    sandbox: &Path,
) -> Result<tokio::process::Child, SpawnError> {
    let value = command
        .value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or(SpawnError::NoValue)?;
    let mut cmd = if command.shell() {
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c").arg(value);
        c
    } else {
        let mut c = tokio::process::Command::new(value);
        if let Some((argv0, rest)) = command.arguments.split_first() {
            c.arg0(argv0).args(rest);
        }
        c
    };
    if let Some(user) = &command.user {
        tracing::warn!(user = %user, "CommandInfo.user is not supported; running as the agent's user");
    }
    let output = |file: &'static str| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(sandbox.join(file))
            .map_err(|source| SpawnError::Output { file, source })
    };
    cmd.current_dir(sandbox)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(output("stdout")?)
        .stderr(output("stderr")?)
        .process_group(0)
        .kill_on_drop(false);
    cmd.spawn().map_err(|source| SpawnError::Exec {
        program: value.to_owned(),
        source,
    })
}

/// Sends `sig` to the process group led by `pid` and to `pid` itself.
/// A process that is already gone is not an error worth reporting.
pub fn signal_group(pid: u32, sig: Signal) {
    let group = format!("-{pid}");
    run_kill(sig, &[group.as_str(), &pid.to_string()]);
}

/// Sends `sig` to each of `pids`.
pub fn signal_all(pids: &[u32], sig: Signal) {
    if pids.is_empty() {
        return;
    }
    let args: Vec<String> = pids.iter().map(u32::to_string).collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run_kill(sig, &refs);
}

fn run_kill(sig: Signal, targets: &[&str]) {
    let out = std::process::Command::new("kill")
        .arg("-s")
        .arg(sig.name())
        .arg("--")
        .args(targets)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match out {
        Ok(_) => tracing::debug!(signal = sig.name(), targets = ?targets, "signalled"),
        Err(e) => tracing::warn!(signal = sig.name(), error = %e, "cannot run kill"),
    }
}

/// The start time of `pid` (field 22 of `/proc/<pid>/stat`, in clock ticks
/// since boot), if the process exists.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_field(&stat, 22)?.parse().ok()
}

/// Field `n` (1-based, as in proc(5)) of a `/proc/<pid>/stat` line. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted from after its closing parenthesis.
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n.checked_sub(3)?)
}

/// Whether `pid` is a live (not zombie) process started at `start` (when
/// given).
pub fn is_running(pid: u32, start: Option<u64>) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    if matches!(stat_field(&stat, 3), Some("Z" | "X" | "x")) {
        return false;
    }
    match (
        start,
        stat_field(&stat, 22).and_then(|s| s.parse::<u64>().ok()),
    ) {
        (Some(want), Some(got)) => want == got,
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// A raw wait status as `waitpid` gives it.
pub fn raw_status(status: ExitStatus) -> i32 {
    status.into_raw()
}

/// A wait status in words, as Mesos writes it: `exited with status 1`,
/// `terminated with signal Killed`.
pub fn describe_status(raw: i32) -> String {
    let status = ExitStatus::from_raw(raw);
    if let Some(code) = status.code() {
        format!("exited with status {code}")
    } else if let Some(sig) = status.signal() {
        format!("terminated with signal {}", signal_name(sig))
    } else {
        format!("ended with wait status {raw}")
    }
}

/// Whether a wait status is a clean exit (status 0).
pub fn succeeded(raw: i32) -> bool {
    ExitStatus::from_raw(raw).code() == Some(0)
}

fn signal_name(sig: i32) -> String {
    match sig {
        1 => "Hangup".into(),
        2 => "Interrupt".into(),
        3 => "Quit".into(),
        4 => "Illegal instruction".into(),
        6 => "Aborted".into(),
        7 => "Bus error".into(),
        8 => "Floating point exception".into(),
        9 => "Killed".into(),
        10 => "User defined signal 1".into(),
        11 => "Segmentation fault".into(),
        12 => "User defined signal 2".into(),
        13 => "Broken pipe".into(),
        14 => "Alarm clock".into(),
        15 => "Terminated".into(),
        n => format!("{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_in_words() {
        assert_eq!(describe_status(0), "exited with status 0");
        assert_eq!(describe_status(1 << 8), "exited with status 1");
        assert_eq!(describe_status(9), "terminated with signal Killed");
        assert_eq!(describe_status(15), "terminated with signal Terminated");
        assert!(succeeded(0));
        assert!(!succeeded(1 << 8));
        assert!(!succeeded(9));
    }

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let stat = "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 0 0";
        assert_eq!(stat_field(stat, 3), Some("S"));
        assert_eq!(stat_field(stat, 22), Some("98765"));
    }

    #[tokio::test]
    async fn shell_and_argv_commands_run_in_the_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let mut env = BTreeMap::new();
        env.insert("PATH".to_owned(), "/usr/bin:/bin".to_owned());
        env.insert("GREETING".to_owned(), "hello".to_owned());
        let shell = v1::CommandInfo {
            value: Some("echo $GREETING > out; echo err >&2; pwd".into()),
            ..Default::default()
        };
        let mut child = spawn(&shell, &env, dir.path()).unwrap();
        let st = child.wait().await.unwrap();
        assert!(succeeded(raw_status(st)));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out")).unwrap(),
            "hello\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("stderr")).unwrap(),
            "err\n"
        );
        let argv = v1::CommandInfo {
            shell: Some(false),
            value: Some("/bin/sh".into()),
            arguments: vec!["my-argv0".into(), "-c".into(), "echo $0; exit 3".into()],
            ..Default::default()
        };
        let mut child = spawn(&argv, &env, dir.path()).unwrap();
        let raw = raw_status(child.wait().await.unwrap());
        assert_eq!(describe_status(raw), "exited with status 3");
        let stdout = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
        assert!(stdout.ends_with("my-argv0\n"), "{stdout:?}");
        assert!(
            stdout.starts_with(dir.path().to_str().unwrap()),
            "{stdout:?}"
        );
    }

    #[tokio::test]
    async fn signals_reach_the_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = v1::CommandInfo {
            value: Some("sleep 30 & sleep 30; wait".into()),
            ..Default::default()
        };
        let env = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
        let mut child = spawn(&cmd, &env, dir.path()).unwrap();
        let pid = child.id().unwrap();
        let start = start_time(pid);
        assert!(start.is_some());
        assert!(is_running(pid, start));
        assert!(!is_running(pid, start.map(|s| s + 1)));
        signal_group(pid, Signal::Kill);
        let raw = raw_status(child.wait().await.unwrap());
        assert_eq!(describe_status(raw), "terminated with signal Killed");
        assert!(!is_running(pid, None));
        assert!(matches!(
            spawn(&v1::CommandInfo::default(), &BTreeMap::new(), dir.path()),
            Err(SpawnError::NoValue)
        ));
    }
}
