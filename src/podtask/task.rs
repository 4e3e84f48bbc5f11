//! A pod read for scheduling.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::annotations;
use super::hostport::{self, HostPortError, PortMapping, PortRequest};
use super::ids::PodKey;
use super::limits::{self, ContainerDefaults, LimitError, PodLimits};
use super::roles::{self, NoUsableRole};

/// How pods become tasks: the scheduler's matching flags.
#[derive(Clone, Debug)]
pub struct PodTaskConfig {
    /// Limits for containers that state none.
    pub defaults: ContainerDefaults,
    /// Roles the framework holds (`--mesos-framework-roles`).
    pub framework_roles: Vec<String>,
    /// Roles of pods without a roles annotation (`--mesos-default-pod-roles`).
    pub default_pod_roles: Vec<String>,
    /// Host-port strategy of pods without a portMapping label.
    pub default_port_mapping: PortMapping,
}

impl Default for PodTaskConfig {
    fn default() -> Self {
        PodTaskConfig {
            defaults: ContainerDefaults::default(),
            framework_roles: vec!["*".into()],
            default_pod_roles: vec!["*".into()],
            default_port_mapping: PortMapping::Wildcard,
        }
    }
}

/// Why a pod cannot become a task. Each says what to change in the pod.
#[derive(Debug, thiserror::Error)]
pub enum PodTaskError {
    /// The pod has no spec.
    #[error("pod {0} has no spec")]
    NoSpec(PodKey),
    /// The pod has no name.
    #[error("the pod has no metadata.name")]
    NoName,
    /// A container's resources cannot be read.
    #[error("pod {pod}: {source}")]
    Limits {
        /// The pod.
        pod: PodKey,
        /// What is wrong.
        #[source]
        source: LimitError,
    },
    /// The pod's roles annotation leaves no role.
    #[error("pod {pod}: {source}")]
    Roles {
        /// The pod.
        pod: PodKey,
        /// What is wrong.
        #[source]
        source: NoUsableRole,
    },
    /// The pod's ports cannot be mapped.
    #[error("pod {pod}: {source}")]
    Ports {
        /// The pod.
        pod: PodKey,
        /// What is wrong.
        #[source]
        source: HostPortError,
    },
    /// The pod cannot be encoded again (it was decoded, so this is a bug).
    #[error("pod {pod}: cannot encode it: {message}")]
    Encode {
        /// The pod.
        pod: PodKey,
        /// What went wrong.
        message: String,
    },
    /// The portMapping label has a value km does not know.
    #[error("pod {pod}: label {label}={value:?} is not a port mapping; use fixed or wildcard", label = annotations::PORT_MAPPING)]
    PortMapping {
        /// The pod.
        pod: PodKey,
        /// The label's value.
        value: String,
    },
}

/// A pod, read once for scheduling.
#[derive(Clone, Debug)]
pub struct PodTask {
    /// `namespace/name`.
    pub key: PodKey,
    /// The pod's uid, if the API server gave it one.
    pub uid: Option<String>,
    /// The pod's resourceVersion when it was read.
    pub resource_version: Option<String>,
    /// The pod with default and minimum limits written into its containers,
    /// as compact JSON (the decoded form is several times larger); `None`
    /// once [`PodTask::slim`] dropped it. See [`PodTask::pod`].
    pod_json: Option<Box<str>>,
    /// What the pod asks Mesos for.
    pub limits: PodLimits,
    /// Mesos roles it may use, in preference order.
    pub roles: Vec<String>,
    /// Host-port strategy in force.
    pub port_mapping: PortMapping,
    /// Container ports that need host ports.
    pub ports: Vec<PortRequest>,
    /// `spec.nodeName`: the only agent hostname it may go to.
    pub node_name: Option<String>,
    /// `spec.nodeSelector`, matched against agent hostname and attributes.
    pub node_selector: BTreeMap<String, String>,
}

impl PodTask {
    /// The pod with default and minimum limits written into its containers
    /// (`None` after [`PodTask::slim`]).
    pub fn pod(&self) -> Option<Pod> {
        // Written by `from_pod` from a `Pod`, so it decodes.
        self.pod_json
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
    }

    /// Drops the pod itself, keeping what placing needs: for holding many
    /// waiting pods in little memory. Launching needs the pod again.
    pub fn slim(mut self) -> Self {
        self.pod_json = None;
        self
    }

    /// Reads `pod` under `cfg`.
    pub fn from_pod(mut pod: Pod, cfg: &PodTaskConfig) -> Result<Self, PodTaskError> {
        if pod.metadata.name.as_deref().unwrap_or("").is_empty() {
            return Err(PodTaskError::NoName);
        }
        let key = PodKey::of(&pod);
        let Some(spec) = pod.spec.as_mut() else {
            return Err(PodTaskError::NoSpec(key));
        };
        let limits = limits::apply(spec, &cfg.defaults).map_err(|source| PodTaskError::Limits {
            pod: key.clone(),
            source,
        })?;
        let node_name = spec.node_name.clone().filter(|n| !n.is_empty());
        let node_selector = spec.node_selector.clone().unwrap_or_default();
        let roles = roles::pod_roles(
            pod.metadata.annotations.as_ref(),
            &cfg.framework_roles,
            &cfg.default_pod_roles,
        )
        .map_err(|source| PodTaskError::Roles {
            pod: key.clone(),
            source,
        })?;
        let port_mapping = match pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(annotations::PORT_MAPPING))
        {
            None => cfg.default_port_mapping,
            Some(v) => v.parse().map_err(|_| PodTaskError::PortMapping {
                pod: key.clone(),
                value: v.clone(),
            })?,
        };
        let ports =
            hostport::requests(&pod, port_mapping).map_err(|source| PodTaskError::Ports {
                pod: key.clone(),
                source,
            })?;
        let pod_json = serde_json::to_string(&pod)
            .map_err(|e| PodTaskError::Encode {
                pod: key.clone(),
                message: e.to_string(),
            })?
            .into_boxed_str();
        Ok(PodTask {
            key,
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            pod_json: Some(pod_json),
            limits,
            roles,
            port_mapping,
            ports,
            node_name,
            node_selector,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn reads_everything_the_matcher_needs() {
        let p = pod(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1",
                         "annotations": {"k8s.mesosphere.io/roles": "public,*"}},
            "spec": {
                "nodeSelector": {"k8s.mesosphere.io/attribute-rack": "b"},
                "containers": [
                    {"name": "a", "ports": [{"containerPort": 80}]},
                    {"name": "b", "resources": {"limits": {"cpu": "1", "memory": "256Mi"}}}
                ]
            }
        }));
        let cfg = PodTaskConfig {
            framework_roles: vec!["*".into(), "public".into()],
            ..Default::default()
        };
        let t = PodTask::from_pod(p, &cfg).unwrap();
        assert_eq!(t.key.to_string(), "shop/web");
        assert_eq!(t.uid.as_deref(), Some("u1"));
        assert_eq!(
            t.limits,
            PodLimits {
                cpus: 1.25,
                mem_mb: 320.0
            }
        );
        assert_eq!(t.roles, ["public", "*"]);
        assert_eq!(t.ports.len(), 1);
        assert_eq!(t.node_selector["k8s.mesosphere.io/attribute-rack"], "b");
        assert_eq!(t.node_name, None);
    }

    #[test]
    fn fixed_label_changes_the_port_strategy() {
        let p = pod(json!({
            "metadata": {"name": "web", "labels": {"k8s.mesosphere.io/portMapping": "fixed"}},
            "spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80}]}]}
        }));
        let t = PodTask::from_pod(p, &PodTaskConfig::default()).unwrap();
        assert_eq!(t.port_mapping, PortMapping::Fixed);
        assert!(t.ports.is_empty());
        assert_eq!(t.key.namespace, "default");
    }

    #[test]
    fn errors_name_the_pod_and_the_fix() {
        let p = pod(json!({
            "metadata": {"name": "web", "labels": {"k8s.mesosphere.io/portMapping": "random"}},
            "spec": {"containers": [{"name": "a"}]}
        }));
        let e = PodTask::from_pod(p, &PodTaskConfig::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pod default/web: label k8s.mesosphere.io/portMapping=\"random\" is not a port mapping; use fixed or wildcard"
        );
        let e = PodTask::from_pod(
            pod(json!({"metadata": {"name": "x"}})),
            &PodTaskConfig::default(),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "pod default/x has no spec");
    }
}
