//! The km executor as Mesos sees it: one `ExecutorInfo` per configuration.
//!
//! The executor id is `km-executor-<hash>`, the hash covering everything that
//! makes two executors behave differently (command, arguments, environment,
//! fetched URIs, static pods, the km version) and nothing else: not the
//! resources, not the agent. Two schedulers with the same flags therefore
//! build the same id, and a restarted scheduler recognises the executors it
//! started before.
//!
//! Upgrades: a new km version or changed executor flags give a new id.
//! Mesos lets one framework run several executors on an agent as long as
//! their ids differ, so new pods start a new executor beside the old one
//! instead of being refused for an incompatible `ExecutorInfo` (k8sm #572).
//! The scheduler shuts an outdated executor down once its last task ends.
//!
//! Mesos charges an executor's resources once, when its first task launches,
//! and requires every later task on that agent to carry the *identical*
//! `ExecutorInfo`. The resources are the base (`--mesos-executor-cpus`,
//! `--mesos-executor-mem`) plus the limits of the static pods it runs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use prost::Message;
use sha2::{Digest, Sha256};

use super::ids::ExecutorId;
use super::limits::{self, ContainerDefaults, LimitError};
use crate::mesos::proto::v1;

/// `--mesos-executor-cpus` default.
pub const DEFAULT_EXECUTOR_CPUS: f64 = 0.25;
/// `--mesos-executor-mem` default (MB).
pub const DEFAULT_EXECUTOR_MEM_MB: f64 = 128.0;

/// How to start the executor on an agent, and what it costs.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// The `km` binary: a path on the agent, or a URL the agent fetches.
    pub km_path: String,
    /// Arguments after `km executor`.
    pub args: Vec<String>,
    /// Environment of the executor.
    pub env: BTreeMap<String, String>,
    /// Base cpus of the executor itself.
    pub cpus: f64,
    /// Base memory (MB) of the executor itself.
    pub mem_mb: f64,
    /// Static pods every executor runs.
    pub static_pods: Vec<Pod>,
    /// The executor's `shutdown_grace_period`: how long the agent waits
    /// after SHUTDOWN before killing it (None: the agent's default).
    pub shutdown_grace: Option<std::time::Duration>,
    /// The km version the executor runs (label `km-version`).
    pub version: String,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            km_path: "/usr/bin/km".into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            cpus: DEFAULT_EXECUTOR_CPUS,
            mem_mb: DEFAULT_EXECUTOR_MEM_MB,
            static_pods: Vec::new(),
            shutdown_grace: None,
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// The executor's `ExecutorInfo` without resources, its id, and its cost.
#[derive(Clone, Debug)]
pub struct ExecutorPrototype {
    id: ExecutorId,
    info: v1::ExecutorInfo,
    cpus: f64,
    mem_mb: f64,
}

/// `ExecutorInfo.type` CUSTOM.
const CUSTOM: i32 = 2;

impl ExecutorPrototype {
    /// Builds the prototype; static pods get default container limits first.
    pub fn new(cfg: &ExecutorConfig, defaults: &ContainerDefaults) -> Result<Self, LimitError> {
        let mut cpus = cfg.cpus;
        let mut mem_mb = cfg.mem_mb;
        let mut static_pods = cfg.static_pods.clone();
        for pod in &mut static_pods {
            if let Some(spec) = pod.spec.as_mut() {
                let l = limits::apply(spec, defaults)?;
                cpus += l.cpus;
                mem_mb += l.mem_mb;
            }
        }
        let is_url = cfg.km_path.contains("://") && !cfg.km_path.starts_with("file://");
        let (value, uris) = if is_url {
            let base = cfg.km_path.rsplit('/').next().unwrap_or("km").to_string();
            let uri = v1::command_info::Uri {
                value: cfg.km_path.clone(),
                executable: Some(true),
                extract: Some(false),
                ..Default::default()
            };
            (format!("./{base}"), vec![uri])
        } else {
            (
                cfg.km_path.trim_start_matches("file://").to_string(),
                Vec::new(),
            )
        };
        let mut arguments = vec!["km".to_string(), "executor".to_string()];
        arguments.extend(cfg.args.iter().cloned());
        let environment = (!cfg.env.is_empty()).then(|| v1::Environment {
            variables: cfg
                .env
                .iter()
                .map(|(k, v)| v1::environment::Variable {
                    name: k.clone(),
                    value: Some(v.clone()),
                    ..Default::default()
                })
                .collect(),
        });
        let data = (!static_pods.is_empty()).then(|| {
            let list =
                serde_json::json!({"apiVersion": "v1", "kind": "PodList", "items": static_pods});
            list.to_string().into_bytes()
        });
        let mut info = v1::ExecutorInfo {
            r#type: Some(CUSTOM),
            name: Some("km executor".into()),
            command: Some(v1::CommandInfo {
                uris,
                environment,
                shell: Some(false),
                value: Some(value),
                arguments,
                user: None,
            }),
            data,
            shutdown_grace_period: cfg.shutdown_grace.map(|d| v1::DurationInfo {
                nanoseconds: i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            }),
            labels: Some(v1::Labels {
                labels: vec![v1::Label {
                    key: "km-version".into(),
                    value: Some(cfg.version.clone()),
                }],
            }),
            ..Default::default()
        };
        let digest = Sha256::digest(info.encode_to_vec());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let id = ExecutorId::from_existing(format!("km-executor-{hex}"));
        info.executor_id = (&id).into();
        Ok(ExecutorPrototype {
            id,
            info,
            cpus: crate::resources::round_scalar(cpus),
            mem_mb: crate::resources::round_scalar(mem_mb),
        })
    }

    /// The executor id shared by every agent's executor of this configuration.
    pub fn id(&self) -> &ExecutorId {
        &self.id
    }

    /// Cpus the executor needs (base plus static pods).
    pub fn cpus(&self) -> f64 {
        self.cpus
    }

    /// Memory (MB) the executor needs (base plus static pods).
    pub fn mem_mb(&self) -> f64 {
        self.mem_mb
    }

    /// The `ExecutorInfo` for an executor holding `resources`.
    pub fn info_with(&self, resources: Vec<v1::Resource>) -> v1::ExecutorInfo {
        v1::ExecutorInfo {
            resources,
            ..self.info.clone()
        }
    }

    /// The `ExecutorInfo` with unreserved base resources, for showing what an
    /// executor that is already running on an agent most likely looks like.
    pub fn info_unreserved(&self) -> v1::ExecutorInfo {
        self.info_with(vec![
            crate::resources::scalar("cpus", self.cpus),
            crate::resources::scalar("mem", self.mem_mb),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(cfg: &ExecutorConfig) -> ExecutorPrototype {
        ExecutorPrototype::new(cfg, &ContainerDefaults::default()).unwrap()
    }

    #[test]
    fn identity_is_stable_for_equal_configurations() {
        let a = proto(&ExecutorConfig::default());
        let b = proto(&ExecutorConfig::default());
        assert_eq!(a.id(), b.id());
        assert!(a.id().as_str().starts_with("km-executor-"), "{}", a.id());
        assert_eq!(a.id().as_str().len(), "km-executor-".len() + 16);
    }

    #[test]
    fn identity_changes_with_behaviour_but_not_with_cost() {
        let base = proto(&ExecutorConfig::default());
        let args = proto(&ExecutorConfig {
            args: vec!["--v=2".into()],
            ..Default::default()
        });
        assert_ne!(base.id(), args.id());
        let cheaper = proto(&ExecutorConfig {
            cpus: 0.1,
            mem_mb: 64.0,
            ..Default::default()
        });
        assert_eq!(base.id(), cheaper.id());
        assert_eq!(cheaper.cpus(), 0.1);
        let upgraded = proto(&ExecutorConfig {
            version: "99.0.0".into(),
            ..Default::default()
        });
        assert_ne!(base.id(), upgraded.id());
    }

    #[test]
    fn command_runs_km_executor_without_a_shell() {
        let p = proto(&ExecutorConfig {
            km_path: "/opt/km/bin/km".into(),
            ..Default::default()
        });
        let info = p.info_with(vec![]);
        let cmd = info.command.as_ref().unwrap();
        assert_eq!(cmd.value.as_deref(), Some("/opt/km/bin/km"));
        assert_eq!(cmd.shell, Some(false));
        assert_eq!(cmd.arguments[..2], ["km", "executor"]);
        assert!(cmd.uris.is_empty());
        assert_eq!(info.r#type, Some(CUSTOM));
        assert_eq!(info.executor_id.value, p.id().as_str());
    }

    #[test]
    fn the_shutdown_grace_travels_in_the_executor_info() {
        let p = proto(&ExecutorConfig {
            shutdown_grace: Some(std::time::Duration::from_secs(30)),
            ..Default::default()
        });
        let grace = p.info_with(vec![]).shutdown_grace_period;
        assert_eq!(grace.map(|d| d.nanoseconds), Some(30_000_000_000));
        assert_ne!(p.id(), proto(&ExecutorConfig::default()).id());
        let none = proto(&ExecutorConfig::default()).info_with(vec![]);
        assert_eq!(none.shutdown_grace_period, None);
    }

    #[test]
    fn a_url_is_fetched_into_the_sandbox() {
        let p = proto(&ExecutorConfig {
            km_path: "http://repo/bin/km".into(),
            ..Default::default()
        });
        let cmd = p.info_with(vec![]).command.unwrap();
        assert_eq!(cmd.value.as_deref(), Some("./km"));
        assert_eq!(cmd.uris[0].value, "http://repo/bin/km");
        assert_eq!(cmd.uris[0].executable, Some(true));
    }

    #[test]
    fn static_pods_add_their_limits_and_travel_in_data() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s"},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "500m", "memory": "100Mi"}}}]}
        }))
        .unwrap();
        let p = proto(&ExecutorConfig {
            static_pods: vec![pod],
            ..Default::default()
        });
        assert_eq!((p.cpus(), p.mem_mb()), (0.75, 228.0));
        let data = p.info_with(vec![]).data.unwrap();
        let list: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(list["items"][0]["metadata"]["name"], "s");
        assert_ne!(p.id(), proto(&ExecutorConfig::default()).id());
    }
}
