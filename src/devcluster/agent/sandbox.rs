//! Where things live under `--work-dir`, laid out like a Mesos agent's:
//!
//! ```text
//! <work-dir>/slaves/<agent>/frameworks/<fw>/executors/<exec>/runs/<container>   sandbox
//! <work-dir>/meta/agent.json                                                    the agent id
//! <work-dir>/meta/executors/<container>.json                                    one executor's checkpoint
//! ```
//!
//! Ids become path components, so each is checked first: not empty, not `.`
//! or `..`, no `/`, `\` or control characters (Mesos's own id rules).

use std::path::{Path, PathBuf};

/// An id cannot be used as a path component.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{kind} id {id:?} cannot name a directory: ids must not be empty, '.', '..' or hold '/', '\\' or control characters"
)]
pub struct BadId {
    /// Which id (framework, executor, ...).
    pub kind: &'static str,
    /// The id.
    pub id: String,
}

/// Checks an id is safe as one path component.
pub fn check_id(kind: &'static str, id: &str) -> Result<(), BadId> {
    let bad = id.is_empty()
        || id == "."
        || id == ".."
        || id.len() > 255
        || id.chars().any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        return Err(BadId {
            kind,
            id: id.to_owned(),
        });
    }
    Ok(())
}

/// The directory layout under the work directory.
#[derive(Debug, Clone)]
pub struct Layout {
    work_dir: PathBuf,
}

impl Layout {
    /// The layout rooted at `work_dir`.
    pub fn new(work_dir: impl Into<PathBuf>) -> Layout {
        Layout {
            work_dir: work_dir.into(),
        }
    }

    /// The work directory.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// The sandbox of one executor run.
    pub fn sandbox(
        &self,
        agent: &str,
        framework: &str,
        executor: &str,
        container: &str,
    ) -> Result<PathBuf, BadId> {
        check_id("agent", agent)?;
        check_id("framework", framework)?;
        check_id("executor", executor)?;
        check_id("container", container)?;
        Ok(self
            .work_dir
            .join("slaves")
            .join(agent)
            .join("frameworks")
            .join(framework)
            .join("executors")
            .join(executor)
            .join("runs")
            .join(container))
    }

    /// Checkpoint directory.
    pub fn meta(&self) -> PathBuf {
        self.work_dir.join("meta")
    }

    /// The file holding the agent id.
    pub fn agent_file(&self) -> PathBuf {
        self.meta().join("agent.json")
    }

    /// The directory of executor checkpoints.
    pub fn executors_dir(&self) -> PathBuf {
        self.meta().join("executors")
    }

    /// The checkpoint of the executor run in `container`.
    pub fn executor_file(&self, container: &str) -> Result<PathBuf, BadId> {
        check_id("container", container)?;
        Ok(self.executors_dir().join(format!("{container}.json")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_path_is_the_mesos_layout() {
        let l = Layout::new("/w");
        assert_eq!(
            l.sandbox("A-S0", "F-0000", "e1", "c1").unwrap(),
            Path::new("/w/slaves/A-S0/frameworks/F-0000/executors/e1/runs/c1")
        );
        assert_eq!(
            l.executor_file("c1").unwrap(),
            Path::new("/w/meta/executors/c1.json")
        );
    }

    #[test]
    fn ids_that_would_escape_are_refused() {
        let l = Layout::new("/w");
        for bad in ["", ".", "..", "a/b", "a\\b", "a\nb"] {
            assert!(l.sandbox("A", "F", bad, "c").is_err(), "{bad:?}");
        }
        assert!(check_id("task", "web.1-x_y").is_ok());
    }
}
