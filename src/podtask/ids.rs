//! Identifiers that must not be confused with one another or with plain strings.

use std::fmt;

use crate::mesos::proto::v1;

/// A Mesos task id for a pod: `pod.<uuid>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(String);

impl TaskId {
    /// A fresh, unique task id.
    pub fn generate() -> Self {
        TaskId(format!("pod.{}", uuid::Uuid::new_v4()))
    }

    /// Wraps an id read back from Mesos or from a pod annotation.
    pub fn from_existing(id: impl Into<String>) -> Self {
        TaskId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&TaskId> for v1::TaskId {
    fn from(id: &TaskId) -> Self {
        v1::TaskId {
            value: id.0.clone(),
        }
    }
}

/// The id of a km executor: `km-executor-<hash of its configuration>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecutorId(String);

impl ExecutorId {
    /// Wraps an existing executor id.
    pub fn from_existing(id: impl Into<String>) -> Self {
        ExecutorId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExecutorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&ExecutorId> for v1::ExecutorId {
    fn from(id: &ExecutorId) -> Self {
        v1::ExecutorId {
            value: id.0.clone(),
        }
    }
}

/// A pod's `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    /// The namespace (`default` when the pod names none).
    pub namespace: String,
    /// The pod's name.
    pub name: String,
}

impl PodKey {
    /// The key of a pod object.
    pub fn of(pod: &k8s_openapi::api::core::v1::Pod) -> Self {
        PodKey {
            namespace: pod
                .metadata
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".to_string()),
            name: pod.metadata.name.clone().unwrap_or_default(),
        }
    }

    /// The Mesos task name: `<name>.<namespace>.pod`.
    pub fn task_name(&self) -> String {
        format!("{}.{}.pod", self.name, self.namespace)
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_unique_and_prefixed() {
        let a = TaskId::generate();
        let b = TaskId::generate();
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("pod."));
        assert_eq!(a.as_str().len(), "pod.".len() + 36);
    }

    #[test]
    fn task_name_follows_the_original_format() {
        let key = PodKey {
            namespace: "web".into(),
            name: "nginx".into(),
        };
        assert_eq!(key.task_name(), "nginx.web.pod");
        assert_eq!(key.to_string(), "web/nginx");
    }
}
