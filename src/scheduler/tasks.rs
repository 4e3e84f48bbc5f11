//! The tasks km launched, by pod uid and by task id, and where each is in
//! its life. Rebuilt at start from pod annotations, which are written
//! before every launch: the annotation is the durable record that a task
//! may exist.

use std::collections::HashMap;

use crate::podtask::{PodKey, TaskId};

/// Where a launched task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Annotated and accepted; no status yet (or recovered from annotations).
    Launched,
    /// TASK_STAGING or TASK_STARTING.
    Starting,
    /// TASK_RUNNING.
    Running,
}

/// One launched task.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The pod's uid.
    pub uid: String,
    /// The pod.
    pub key: PodKey,
    /// The task.
    pub task_id: TaskId,
    /// The agent it was launched on.
    pub agent_id: String,
    /// The agent's hostname.
    pub hostname: String,
    /// The executor it runs in.
    pub executor_id: String,
    /// When it was launched by this process (None: recovered from annotations).
    pub launched_at: Option<std::time::Instant>,
    /// Its phase.
    pub phase: Phase,
    /// A KILL was sent (the pod is being deleted).
    pub killing: bool,
}

/// Launched tasks.
#[derive(Debug, Default)]
pub struct Tasks {
    by_uid: HashMap<String, Tracked>,
    by_task: HashMap<String, String>,
}

impl Tasks {
    /// Records a task, replacing any earlier one of the same pod.
    pub fn insert(&mut self, t: Tracked) {
        if let Some(old) = self.by_uid.remove(&t.uid) {
            self.by_task.remove(old.task_id.as_str());
        }
        self.by_task
            .insert(t.task_id.as_str().to_string(), t.uid.clone());
        self.by_uid.insert(t.uid.clone(), t);
    }

    /// The task of a pod.
    pub fn for_pod(&self, uid: &str) -> Option<&Tracked> {
        self.by_uid.get(uid)
    }

    /// The task of a pod, to change.
    pub fn for_pod_mut(&mut self, uid: &str) -> Option<&mut Tracked> {
        self.by_uid.get_mut(uid)
    }

    /// A task by id.
    pub fn by_task(&self, task_id: &str) -> Option<&Tracked> {
        self.by_task.get(task_id).and_then(|u| self.by_uid.get(u))
    }

    /// A task by id, to change.
    pub fn by_task_mut(&mut self, task_id: &str) -> Option<&mut Tracked> {
        let uid = self.by_task.get(task_id)?;
        self.by_uid.get_mut(uid)
    }

    /// Forgets a task.
    pub fn remove_task(&mut self, task_id: &str) -> Option<Tracked> {
        let uid = self.by_task.remove(task_id)?;
        self.by_uid.remove(&uid)
    }

    /// Whether any task still runs in `executor_id` on `agent_id`.
    pub fn executor_in_use(&self, agent_id: &str, executor_id: &str) -> bool {
        self.by_uid
            .values()
            .any(|t| t.agent_id == agent_id && t.executor_id == executor_id)
    }

    /// Every task.
    pub fn iter(&self) -> impl Iterator<Item = &Tracked> {
        self.by_uid.values()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    /// Whether none.
    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(uid: &str, task: &str) -> Tracked {
        Tracked {
            uid: uid.into(),
            key: PodKey {
                namespace: "ns".into(),
                name: uid.into(),
            },
            task_id: TaskId::from_existing(task),
            agent_id: "a1".into(),
            hostname: "h1".into(),
            executor_id: "e1".into(),
            launched_at: None,
            phase: Phase::Launched,
            killing: false,
        }
    }

    #[test]
    fn one_task_per_pod_indexed_both_ways() {
        let mut ts = Tasks::default();
        ts.insert(t("u1", "pod.1"));
        ts.insert(t("u1", "pod.2"));
        assert_eq!(ts.len(), 1, "a pod has one task");
        assert!(ts.by_task("pod.1").is_none());
        assert_eq!(ts.by_task("pod.2").unwrap().uid, "u1");
        ts.by_task_mut("pod.2").unwrap().phase = Phase::Running;
        assert_eq!(ts.for_pod("u1").unwrap().phase, Phase::Running);
        assert!(ts.remove_task("pod.2").is_some());
        assert!(ts.is_empty());
    }
}
