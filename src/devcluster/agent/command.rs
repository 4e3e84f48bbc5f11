//! The built-in command executor: tasks that carry only a `CommandInfo`
//! run without an executor process of their own, as Mesos runs them under
//! its command executor, except that km's lives inside the agent.
//!
//! What it does, after Mesos's `mesos-executor`:
//!
//! * the executor id is the task id; the made-up `ExecutorInfo` carries
//!   `cpus:0.1;mem:32` of overhead, which the master does not account for;
//! * the task's command runs in the sandbox with the executor environment
//!   plus the task command's own environment;
//! * it reports `TASK_STARTING` then `TASK_RUNNING` once the process runs,
//!   and on exit `TASK_FINISHED` (status 0), `TASK_KILLED` (after a kill)
//!   or `TASK_FAILED`, with the message `Command exited with status N` /
//!   `Command terminated with signal S`; all with source SOURCE_EXECUTOR;
//! * a kill sends `TASK_KILLING` first when the framework has the
//!   TASK_KILLING_STATE capability, then SIGTERM to the process group and
//!   SIGKILL after the grace period: the KILL's kill policy, else the
//!   task's, else 3 seconds. A later kill may shorten the grace, never
//!   lengthen it.
//!
//! A command task adopted after an agent restart is no child of the agent,
//! so its exit status cannot be known: it is reported `TASK_FAILED` with a
//! message saying so.

use std::time::Duration;

use tokio::time::Instant;

use crate::mesos::proto::v1;
use crate::resources;

/// Kill grace when neither the KILL nor the task has a kill policy.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);
/// CPUs the command executor adds to the task's.
pub const EXECUTOR_CPUS: f64 = 0.1;
/// Memory (MB) the command executor adds to the task's.
pub const EXECUTOR_MEM_MB: f64 = 32.0;

/// The `ExecutorInfo` a command task runs under.
pub fn executor_info(task: &v1::TaskInfo, framework_id: &v1::FrameworkId) -> v1::ExecutorInfo {
    let command = task.command.as_ref();
    let line = command
        .and_then(|c| c.value.clone())
        .map(|v| {
            if command.is_some_and(|c| c.shell()) {
                format!("sh -c '{v}'")
            } else {
                let args = command.map(|c| c.arguments.join(" ")).unwrap_or_default();
                format!("{v} [{args}]")
            }
        })
        .unwrap_or_default();
    #[allow(deprecated)]
    v1::ExecutorInfo {
        executor_id: v1::ExecutorId {
            value: task.task_id.value.clone(),
        },
        framework_id: Some(framework_id.clone()),
        name: Some(format!(
            "Command Executor (Task: {}) (Command: {line})",
            task.task_id.value
        )),
        source: Some(task.task_id.value.clone()),
        command: Some(v1::CommandInfo {
            value: Some("km dev-agent built-in command executor".into()),
            ..Default::default()
        }),
        resources: vec![
            resources::scalar("cpus", EXECUTOR_CPUS),
            resources::scalar("mem", EXECUTOR_MEM_MB),
        ],
        ..Default::default()
    }
}

/// The kill grace period: the KILL's policy wins over the task's.
pub fn kill_grace(event: Option<&v1::KillPolicy>, task: Option<&v1::KillPolicy>) -> Duration {
    event
        .and_then(|p| p.grace_period)
        .or_else(|| task.and_then(|p| p.grace_period))
        .map(|d| Duration::from_nanos(u64::try_from(d.nanoseconds).unwrap_or(0)))
        .unwrap_or(DEFAULT_KILL_GRACE)
}

/// A command task's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandTask {
    /// Sandbox, fetch and spawn under way.
    Starting,
    /// The process runs.
    Running,
    /// SIGTERM sent; SIGKILL due at `kill_at`.
    Killing {
        /// When SIGKILL is due.
        kill_at: Instant,
    },
    /// The process ended.
    Exited,
}

/// What a kill request means for a command task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillStep {
    /// Not started yet: remember the kill; kill as soon as it runs.
    Deferred,
    /// Send TASK_KILLING (if the framework wants it) and SIGTERM; SIGKILL at
    /// the given instant.
    Terminate {
        /// When SIGKILL is due.
        kill_at: Instant,
    },
    /// Already being killed: SIGKILL moves to the given earlier instant.
    Sooner {
        /// When SIGKILL is due now.
        kill_at: Instant,
    },
    /// Nothing to do (gone already, or the grace would only grow).
    Nothing,
}

impl CommandTask {
    /// The step for a kill with `grace` at `now`, and the new state.
    pub fn kill(self, grace: Duration, now: Instant) -> (KillStep, CommandTask) {
        match self {
            CommandTask::Starting => (KillStep::Deferred, self),
            CommandTask::Running => {
                let kill_at = now + grace;
                (
                    KillStep::Terminate { kill_at },
                    CommandTask::Killing { kill_at },
                )
            }
            CommandTask::Killing { kill_at } if now + grace < kill_at => {
                let kill_at = now + grace;
                (
                    KillStep::Sooner { kill_at },
                    CommandTask::Killing { kill_at },
                )
            }
            CommandTask::Killing { .. } | CommandTask::Exited => (KillStep::Nothing, self),
        }
    }

    /// Whether a kill was requested.
    pub fn killed(self) -> bool {
        matches!(self, CommandTask::Killing { .. })
    }
}

/// The terminal state and message for a command that ended with wait
/// status `raw` (`None`: unknown), `killed` telling whether the agent
/// killed it.
pub fn outcome(raw: Option<i32>, killed: bool) -> (v1::TaskState, String) {
    use super::process::{describe_status, succeeded};
    match raw {
        None => (
            v1::TaskState::TaskFailed,
            "Command ended while the agent was restarting or not its parent; exit status unknown"
                .to_owned(),
        ),
        Some(raw) => {
            let state = if succeeded(raw) {
                v1::TaskState::TaskFinished
            } else if killed {
                v1::TaskState::TaskKilled
            } else {
                v1::TaskState::TaskFailed
            };
            (state, format!("Command {}", describe_status(raw)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(secs: i64) -> v1::KillPolicy {
        v1::KillPolicy {
            grace_period: Some(v1::DurationInfo {
                nanoseconds: secs * 1_000_000_000,
            }),
        }
    }

    #[test]
    fn grace_comes_from_the_kill_then_the_task_then_three_seconds() {
        assert_eq!(kill_grace(None, None), Duration::from_secs(3));
        assert_eq!(kill_grace(None, Some(&policy(7))), Duration::from_secs(7));
        assert_eq!(
            kill_grace(Some(&policy(1)), Some(&policy(7))),
            Duration::from_secs(1)
        );
        assert_eq!(
            kill_grace(Some(&v1::KillPolicy::default()), Some(&policy(7))),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn kills_only_shorten_the_grace() {
        let t0 = Instant::now();
        let (step, s) = CommandTask::Running.kill(Duration::from_secs(10), t0);
        assert_eq!(
            step,
            KillStep::Terminate {
                kill_at: t0 + Duration::from_secs(10)
            }
        );
        assert!(s.killed());
        let (step, s2) = s.kill(Duration::from_secs(20), t0);
        assert_eq!(step, KillStep::Nothing);
        assert_eq!(s2, s);
        let (step, _) = s.kill(Duration::from_secs(2), t0 + Duration::from_secs(1));
        assert_eq!(
            step,
            KillStep::Sooner {
                kill_at: t0 + Duration::from_secs(3)
            }
        );
        assert_eq!(
            CommandTask::Starting.kill(Duration::ZERO, t0).0,
            KillStep::Deferred
        );
        assert_eq!(
            CommandTask::Exited.kill(Duration::ZERO, t0).0,
            KillStep::Nothing
        );
    }

    #[test]
    fn outcomes_follow_the_wait_status() {
        use v1::TaskState::*;
        assert_eq!(
            outcome(Some(0), false),
            (TaskFinished, "Command exited with status 0".into())
        );
        assert_eq!(outcome(Some(0), true).0, TaskFinished);
        assert_eq!(
            outcome(Some(2 << 8), false),
            (TaskFailed, "Command exited with status 2".into())
        );
        assert_eq!(
            outcome(Some(15), true),
            (
                TaskKilled,
                "Command terminated with signal Terminated".into()
            )
        );
        assert_eq!(outcome(Some(9), false).0, TaskFailed);
        assert_eq!(outcome(None, false).0, TaskFailed);
    }

    #[test]
    fn made_up_executor_info() {
        let task = v1::TaskInfo {
            name: "t".into(),
            task_id: v1::TaskId {
                value: "task-1".into(),
            },
            command: Some(v1::CommandInfo {
                value: Some("echo hi".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let fw = v1::FrameworkId { value: "F".into() };
        let e = executor_info(&task, &fw);
        assert_eq!(e.executor_id.value, "task-1");
        assert_eq!(e.framework_id, Some(fw));
        assert_eq!(
            e.name.as_deref(),
            Some("Command Executor (Task: task-1) (Command: sh -c 'echo hi')")
        );
        let r = crate::resources::Resources::from_vec(e.resources);
        assert_eq!((r.scalar("cpus"), r.scalar("mem")), (0.1, 32.0));
    }
}
