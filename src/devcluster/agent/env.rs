//! The environment an executor (and a command task) is started with, as a
//! Mesos agent builds it (reference §3.2, `executorEnvironment()`).
//!
//! Layers, later ones winning:
//!
//! 1. the base: `--executor-environment-variables` if given, else the
//!    agent's own environment without its `KM_*` variables (they configure
//!    km roles and would reconfigure a `km executor`) and without inherited
//!    `MESOS_*`/`LIBPROCESS_PORT` variables;
//! 2. `LIBPROCESS_PORT=0` and every `MESOS_*` variable of §3.2;
//! 3. `CommandInfo.environment` of the executor (or of the command task).
//!
//! `PATH` falls back to the usual host default when no layer sets it.
//! Executor authentication is not implemented, so
//! `MESOS_EXECUTOR_AUTHENTICATION_TOKEN` is never set, and neither is
//! `MESOS_DOMAIN_SOCKET` (no Unix socket API).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::duration;
use crate::mesos::proto::v1;

/// `PATH` when no layer sets one (what Mesos calls the host default path).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What an executor's environment is made of.
#[derive(Debug, Clone)]
pub struct ExecutorEnv<'a> {
    /// `MESOS_FRAMEWORK_ID`.
    pub framework_id: &'a str,
    /// `MESOS_EXECUTOR_ID` (for a command task, the task id).
    pub executor_id: &'a str,
    /// `MESOS_SLAVE_ID`.
    pub agent_id: &'a str,
    /// The sandbox: `MESOS_DIRECTORY` and `MESOS_SANDBOX` (no container
    /// rootfs here, so both are the host path).
    pub directory: &'a Path,
    /// The executor API address: `MESOS_AGENT_ENDPOINT` and `MESOS_SLAVE_PID`.
    pub endpoint: SocketAddr,
    /// `FrameworkInfo.checkpoint`: `MESOS_CHECKPOINT` and whether the
    /// recovery variables are set.
    pub checkpoint: bool,
    /// `MESOS_HTTP_COMMAND_EXECUTOR`.
    pub http_command_executor: bool,
    /// The effective shutdown grace period (ExecutorInfo's, else the flag).
    pub shutdown_grace_period: Duration,
    /// `MESOS_RECOVERY_TIMEOUT` (checkpointing only).
    pub recovery_timeout: Duration,
    /// `MESOS_SUBSCRIPTION_BACKOFF_MAX` (checkpointing only).
    pub subscription_backoff_max: Duration,
    /// The base layer.
    pub base: &'a [(String, String)],
    /// The executor's (or command task's) command; its environment wins.
    pub command: Option<&'a v1::CommandInfo>,
}

/// The `MESOS_SLAVE_PID` of an agent serving at `endpoint`.
pub fn agent_pid(endpoint: SocketAddr) -> String {
    format!("slave(1)@{endpoint}")
}

/// The base layer when no `--executor-environment-variables` is given: the
/// agent's environment less `KM_*`, `MESOS_*` and `LIBPROCESS_PORT`.
pub fn inherited(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    vars.into_iter()
        .filter(|(k, _)| {
            !(k.starts_with("KM_") || k.starts_with("MESOS_") || k == "LIBPROCESS_PORT")
        })
        .collect()
}

/// Builds the environment. Secret variables of `CommandInfo.environment`
/// are not supported and left out (with a warning).
pub fn build(e: &ExecutorEnv<'_>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = e.base.iter().cloned().collect();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_owned(), v);
    };
    let directory = e.directory.display().to_string();
    set("LIBPROCESS_PORT", "0".into());
    set("MESOS_FRAMEWORK_ID", e.framework_id.into());
    set("MESOS_EXECUTOR_ID", e.executor_id.into());
    set("MESOS_DIRECTORY", directory.clone());
    set("MESOS_SANDBOX", directory);
    set("MESOS_SLAVE_ID", e.agent_id.into());
    set("MESOS_SLAVE_PID", agent_pid(e.endpoint));
    set("MESOS_AGENT_ENDPOINT", e.endpoint.to_string());
    set("MESOS_CHECKPOINT", flag(e.checkpoint));
    set("MESOS_HTTP_COMMAND_EXECUTOR", flag(e.http_command_executor));
    set(
        "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD",
        duration::format(e.shutdown_grace_period),
    );
    if e.checkpoint {
        set(
            "MESOS_RECOVERY_TIMEOUT",
            duration::format(e.recovery_timeout),
        );
        set(
            "MESOS_SUBSCRIPTION_BACKOFF_MAX",
            duration::format(e.subscription_backoff_max),
        );
    }
    for var in e
        .command
        .and_then(|c| c.environment.as_ref())
        .map(|env| env.variables.as_slice())
        .unwrap_or_default()
    {
        use v1::environment::variable::Type;
        match var.r#type.and_then(|t| Type::try_from(t).ok()) {
            Some(Type::Value) | None => {
                env.insert(var.name.clone(), var.value.clone().unwrap_or_default());
            }
            Some(other) => {
                tracing::warn!(
                    variable = %var.name,
                    kind = other.as_str_name(),
                    "environment variables other than VALUE are not supported; left out"
                );
            }
        }
    }
    env.entry("PATH".to_owned())
        .or_insert_with(|| DEFAULT_PATH.to_owned());
    env
}

fn flag(b: bool) -> String {
    if b { "1" } else { "0" }.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(
        checkpoint: bool,
        base: &'a [(String, String)],
        command: Option<&'a v1::CommandInfo>,
    ) -> ExecutorEnv<'a> {
        ExecutorEnv {
            framework_id: "fw-0001",
            executor_id: "exec-1",
            agent_id: "M-S0",
            directory: Path::new("/w/slaves/M-S0/frameworks/fw-0001/executors/exec-1/runs/c1"),
            endpoint: "127.0.0.1:5051".parse().unwrap(),
            checkpoint,
            http_command_executor: false,
            shutdown_grace_period: Duration::from_secs(5),
            recovery_timeout: Duration::from_secs(900),
            subscription_backoff_max: Duration::from_secs(2),
            base,
            command,
        }
    }

    #[test]
    fn every_mesos_variable_in_mesos_format() {
        let env = build(&inputs(true, &[], None));
        let sandbox = "/w/slaves/M-S0/frameworks/fw-0001/executors/exec-1/runs/c1";
        let want = [
            ("MESOS_FRAMEWORK_ID", "fw-0001"),
            ("MESOS_EXECUTOR_ID", "exec-1"),
            ("MESOS_DIRECTORY", sandbox),
            ("MESOS_SANDBOX", sandbox),
            ("MESOS_SLAVE_ID", "M-S0"),
            ("MESOS_SLAVE_PID", "slave(1)@127.0.0.1:5051"),
            ("MESOS_AGENT_ENDPOINT", "127.0.0.1:5051"),
            ("MESOS_CHECKPOINT", "1"),
            ("MESOS_HTTP_COMMAND_EXECUTOR", "0"),
            ("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "5secs"),
            ("MESOS_RECOVERY_TIMEOUT", "15mins"),
            ("MESOS_SUBSCRIPTION_BACKOFF_MAX", "2secs"),
            ("LIBPROCESS_PORT", "0"),
            ("PATH", DEFAULT_PATH),
        ];
        for (k, v) in want {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
        }
        let mesos: Vec<&String> = env.keys().filter(|k| k.starts_with("MESOS_")).collect();
        assert_eq!(mesos.len(), 12, "{mesos:?}");
    }

    #[test]
    fn recovery_variables_only_when_checkpointing() {
        let env = build(&inputs(false, &[], None));
        assert_eq!(env["MESOS_CHECKPOINT"], "0");
        assert!(!env.contains_key("MESOS_RECOVERY_TIMEOUT"));
        assert!(!env.contains_key("MESOS_SUBSCRIPTION_BACKOFF_MAX"));
    }

    #[test]
    fn command_environment_wins_and_secrets_are_left_out() {
        use v1::environment::{Variable, variable::Type};
        let base = vec![
            ("PATH".to_owned(), "/opt/bin".to_owned()),
            ("FOO".to_owned(), "base".to_owned()),
        ];
        let command = v1::CommandInfo {
            environment: Some(v1::Environment {
                variables: vec![
                    Variable {
                        name: "FOO".into(),
                        value: Some("task".into()),
                        ..Default::default()
                    },
                    Variable {
                        name: "MESOS_SANDBOX".into(),
                        value: Some("/override".into()),
                        ..Default::default()
                    },
                    Variable {
                        name: "SECRET".into(),
                        r#type: Some(Type::Secret as i32),
                        ..Default::default()
                    },
                ],
            }),
            ..Default::default()
        };
        let env = build(&inputs(false, &base, Some(&command)));
        assert_eq!(env["FOO"], "task");
        assert_eq!(env["PATH"], "/opt/bin");
        assert_eq!(env["MESOS_SANDBOX"], "/override");
        assert!(!env.contains_key("SECRET"));
    }

    #[test]
    fn inherited_drops_km_and_mesos_variables() {
        let got = inherited([
            ("KM_MASTER".to_owned(), "m".to_owned()),
            ("MESOS_SLAVE_ID".to_owned(), "old".to_owned()),
            ("LIBPROCESS_PORT".to_owned(), "5051".to_owned()),
            ("LIBPROCESS_IP".to_owned(), "10.0.0.1".to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
        ]);
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["LIBPROCESS_IP", "HOME"]);
    }
}
