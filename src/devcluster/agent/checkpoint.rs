//! Checkpoints: what a restarted agent needs to take up where it stopped.
//!
//! * `meta/agent.json`: the agent id, so the agent registers again as the
//!   same agent.
//! * `meta/executors/<container>.json`, for executors of frameworks with
//!   `checkpoint: true` only: the framework and executor info, the
//!   process (pid and start time), the tasks, each task's latest status and
//!   the updates the framework has not acknowledged yet. Protobuf messages
//!   are stored as base64 protobuf: a JSON round trip would add defaults
//!   (`shell: true`, ...) and the master compares ExecutorInfos for
//!   identity.
//!
//! Files are written to a temporary name and renamed, so a crash leaves the
//! old or the new content, never half of one.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::sandbox::Layout;
use crate::mesos::proto::v1;

fn pb<M: prost::Message>(m: &M) -> Value {
    Value::String(BASE64.encode(m.encode_to_vec()))
}

fn unpb<M: prost::Message + prost::Name + Default>(v: &Value) -> std::result::Result<M, String> {
    let text = v
        .as_str()
        .ok_or_else(|| format!("{} is not a base64 string", M::full_name()))?;
    let bytes = BASE64
        .decode(text)
        .map_err(|e| format!("{}: {e}", M::full_name()))?;
    M::decode(bytes.as_slice()).map_err(|e| format!("{}: {e}", M::full_name()))
}

/// A checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File system trouble.
    #[error("checkpoint {path}: {what}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The content is not what the agent writes.
    #[error("checkpoint {path}: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// Result type of this module.
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// One executor run, as checkpointed.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutorCheckpoint {
    /// The framework (with its id).
    pub framework: v1::FrameworkInfo,
    /// The executor (for a command task, the one the agent made up).
    pub executor: v1::ExecutorInfo,
    /// The container id (also the checkpoint's file name).
    pub container_id: String,
    /// The sandbox.
    pub directory: PathBuf,
    /// Whether this is the built-in command executor of one task.
    pub command_task: bool,
    /// The process, once started.
    pub pid: Option<u32>,
    /// Its start time, telling it apart from a later process with its pid.
    pub pid_start_time: Option<u64>,
    /// Whether the process has ended (the record stays until the updates
    /// are acknowledged).
    pub terminated: bool,
    /// Tasks not yet terminal (launched or queued).
    pub tasks: Vec<v1::TaskInfo>,
    /// Latest status of each task.
    pub statuses: Vec<v1::TaskStatus>,
    /// Updates not yet acknowledged by the framework, oldest first.
    pub updates: Vec<v1::TaskStatus>,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |what| {
        let path = path.to_owned();
        move |source| CheckpointError::Io { path, what, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating its directory"))?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).map_err(io("writing"))?;
    std::fs::rename(&tmp, path).map_err(io("renaming into place"))
}

/// Writes the agent id.
pub fn save_agent_id(layout: &Layout, agent_id: &str) -> Result<()> {
    let body = json!({ "agent_id": agent_id }).to_string();
    write_atomic(&layout.agent_file(), body.as_bytes())
}

/// Reads the agent id, if one was checkpointed.
pub fn load_agent_id(layout: &Layout) -> Result<Option<String>> {
    let path = layout.agent_file();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Io {
                path,
                what: "reading",
                source,
            });
        }
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| CheckpointError::Corrupt {
        path: path.clone(),
        problem: e.to_string(),
    })?;
    match v.get("agent_id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => Ok(Some(id.to_owned())),
        _ => Err(CheckpointError::Corrupt {
            path,
            problem: "no agent_id".into(),
        }),
    }
}

impl ExecutorCheckpoint {
    fn to_json(&self) -> Value {
        json!({
            "framework": pb(&self.framework),
            "executor": pb(&self.executor),
            "container_id": self.container_id,
            "directory": self.directory,
            "command_task": self.command_task,
            "pid": self.pid,
            "pid_start_time": self.pid_start_time,
            "terminated": self.terminated,
            "tasks": self.tasks.iter().map(pb).collect::<Vec<_>>(),
            "statuses": self.statuses.iter().map(pb).collect::<Vec<_>>(),
            "updates": self.updates.iter().map(pb).collect::<Vec<_>>(),
        })
    }

    fn from_json(path: &Path, v: &Value) -> Result<ExecutorCheckpoint> {
        let corrupt = |problem: String| CheckpointError::Corrupt {
            path: path.to_owned(),
            problem,
        };
        let field = |name: &str| v.get(name).ok_or_else(|| corrupt(format!("no {name}")));
        fn list<M: prost::Message + prost::Name + Default>(
            v: Option<&Value>,
        ) -> std::result::Result<Vec<M>, String> {
            v.and_then(Value::as_array)
                .map(|a| a.iter().map(unpb::<M>).collect())
                .unwrap_or(Ok(Vec::new()))
        }
        let pid = v
            .get("pid")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok());
        Ok(ExecutorCheckpoint {
            framework: unpb(field("framework")?).map_err(corrupt)?,
            executor: unpb(field("executor")?).map_err(corrupt)?,
            container_id: field("container_id")?
                .as_str()
                .ok_or_else(|| corrupt("container_id is not a string".into()))?
                .to_owned(),
            directory: PathBuf::from(
                field("directory")?
                    .as_str()
                    .ok_or_else(|| corrupt("directory is not a string".into()))?,
            ),
            command_task: v
                .get("command_task")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            pid,
            pid_start_time: v.get("pid_start_time").and_then(Value::as_u64),
            terminated: v
                .get("terminated")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            tasks: list(v.get("tasks")).map_err(corrupt)?,
            statuses: list(v.get("statuses")).map_err(corrupt)?,
            updates: list(v.get("updates")).map_err(corrupt)?,
        })
    }
}

/// Writes an executor's checkpoint.
pub fn save_executor(layout: &Layout, cp: &ExecutorCheckpoint) -> Result<()> {
    let path = layout
        .executor_file(&cp.container_id)
        .map_err(|e| CheckpointError::Corrupt {
            path: layout.executors_dir(),
            problem: e.to_string(),
        })?;
    write_atomic(&path, cp.to_json().to_string().as_bytes())
}

/// Removes an executor's checkpoint (a missing one is fine).
pub fn remove_executor(layout: &Layout, container_id: &str) -> Result<()> {
    let Ok(path) = layout.executor_file(container_id) else {
        return Ok(());
    };
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CheckpointError::Io {
            path,
            what: "removing",
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Reads every executor checkpoint; unreadable ones come back as errors
/// so the caller can report them and go on.
pub fn load_executors(layout: &Layout) -> Vec<Result<ExecutorCheckpoint>> {
    let dir = layout.executors_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).map_err(|source| CheckpointError::Io {
                path: path.clone(),
                what: "reading",
                source,
            })?;
            let v: Value = serde_json::from_str(&text).map_err(|e| CheckpointError::Corrupt {
                path: path.clone(),
                problem: e.to_string(),
            })?;
            ExecutorCheckpoint::from_json(&path, &v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ExecutorCheckpoint {
        let task = v1::TaskInfo {
            name: "web".into(),
            task_id: v1::TaskId { value: "t1".into() },
            agent_id: v1::AgentId {
                value: "A-S0".into(),
            },
            resources: vec![crate::resources::scalar("cpus", 0.5)],
            ..Default::default()
        };
        let status = v1::TaskStatus {
            task_id: task.task_id.clone(),
            state: v1::TaskState::TaskRunning as i32,
            uuid: Some(vec![7; 16]),
            ..Default::default()
        };
        ExecutorCheckpoint {
            framework: v1::FrameworkInfo {
                user: "root".into(),
                name: "fw".into(),
                id: Some(v1::FrameworkId {
                    value: "F-0".into(),
                }),
                checkpoint: Some(true),
                ..Default::default()
            },
            executor: v1::ExecutorInfo {
                executor_id: v1::ExecutorId { value: "e1".into() },
                ..Default::default()
            },
            container_id: "c1".into(),
            directory: "/w/sandbox".into(),
            command_task: false,
            pid: Some(42),
            pid_start_time: Some(1234),
            terminated: false,
            tasks: vec![task],
            statuses: vec![status.clone()],
            updates: vec![status],
        }
    }

    #[test]
    fn executors_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let cp = sample();
        save_executor(&layout, &cp).unwrap();
        let back: Vec<_> = load_executors(&layout)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(back, [cp]);
        remove_executor(&layout, "c1").unwrap();
        remove_executor(&layout, "c1").unwrap();
        assert!(load_executors(&layout).is_empty());
    }

    #[test]
    fn agent_id_round_trips_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        assert_eq!(load_agent_id(&layout).unwrap(), None);
        save_agent_id(&layout, "A-S3").unwrap();
        assert_eq!(load_agent_id(&layout).unwrap().as_deref(), Some("A-S3"));
        std::fs::write(layout.agent_file(), "{").unwrap();
        assert!(load_agent_id(&layout).is_err());
        std::fs::create_dir_all(layout.executors_dir()).unwrap();
        std::fs::write(layout.executors_dir().join("bad.json"), "{}").unwrap();
        let loaded = load_executors(&layout);
        assert_eq!(loaded.len(), 1);
        assert!(loaded[0].is_err());
    }
}
