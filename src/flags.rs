//! Flag groups shared by several roles. The scheduler and `km fit` flatten
//! [`MatchingFlags`] so both read pods and offers exactly the same way.

use std::path::{Path, PathBuf};

use clap::{ArgAction, Args};
use k8s_openapi::api::core::v1::Pod;

use crate::offers::Policy;
use crate::podtask::{
    ContainerDefaults, ExecutorConfig, ExecutorPrototype, PodTaskConfig, PortMapping,
};

/// How pods are read, matched against offers and launched.
#[derive(Args, Clone, Debug)]
pub struct MatchingFlags {
    /// CPU limit (and request) written into containers that state none.
    #[arg(
        long,
        env = "KM_DEFAULT_CONTAINER_CPU_LIMIT",
        default_value_t = 0.25,
        value_name = "CPUS"
    )]
    pub default_container_cpu_limit: f64,
    /// Memory limit (and request) in MB written into containers that state none.
    #[arg(
        long,
        env = "KM_DEFAULT_CONTAINER_MEM_LIMIT",
        default_value_t = 64.0,
        value_name = "MB"
    )]
    pub default_container_mem_limit: f64,
    /// Mesos roles the framework takes offers for, comma separated (`*` = unreserved).
    #[arg(
        long,
        env = "KM_MESOS_FRAMEWORK_ROLES",
        value_delimiter = ',',
        default_value = "*",
        value_name = "ROLES"
    )]
    pub mesos_framework_roles: Vec<String>,
    /// Roles of pods without a k8s.mesosphere.io/roles annotation, in preference order.
    #[arg(
        long,
        env = "KM_MESOS_DEFAULT_POD_ROLES",
        value_delimiter = ',',
        default_value = "*",
        value_name = "ROLES"
    )]
    pub mesos_default_pod_roles: Vec<String>,
    /// Give every declared container port a host port (wildcard mapping); false maps only explicit hostPorts (fixed).
    #[arg(long, env = "KM_HOST_PORT_ENDPOINTS", default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub host_port_endpoints: bool,
    /// Placement policy: binpack (fill agents one after another) or spread (most free cpus first).
    #[arg(
        long,
        env = "KM_PLACEMENT",
        default_value = "binpack",
        value_name = "POLICY"
    )]
    pub placement: Policy,
    /// CPUs of each km executor itself (static pods add theirs).
    #[arg(
        long,
        visible_alias = "executor-cpus",
        env = "KM_MESOS_EXECUTOR_CPUS",
        default_value_t = 0.25,
        value_name = "CPUS"
    )]
    pub mesos_executor_cpus: f64,
    /// Memory in MB of each km executor itself (static pods add theirs).
    #[arg(
        long,
        visible_alias = "executor-mem",
        env = "KM_MESOS_EXECUTOR_MEM",
        default_value_t = 128.0,
        value_name = "MB"
    )]
    pub mesos_executor_mem: f64,
    /// The km binary agents run as executor: a path on the agents, or a URL they fetch [default: this binary].
    #[arg(long, env = "KM_KM_PATH", value_name = "PATH|URL")]
    pub km_path: Option<String>,
    /// Directory of static pod manifests (YAML or JSON) every executor runs; each container needs cpu and memory limits.
    #[arg(long, env = "KM_STATIC_PODS_CONFIG", value_name = "DIR")]
    pub static_pods_config: Option<PathBuf>,
    /// kubeconfig the executors use, a path on the agents [default: the scheduler's --kubeconfig].
    #[arg(long, env = "KM_EXECUTOR_KUBECONFIG", value_name = "FILE")]
    pub executor_kubeconfig: Option<PathBuf>,
    /// Executors exit after being idle (no pods) this long; 0 never.
    #[arg(long, default_value = "20m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub executor_suicide_timeout: std::time::Duration,
    /// Time an executor has to stop its pods after SHUTDOWN before the agent kills it (ExecutorInfo.shutdown_grace_period; the agent's own default is 5s). Pods get their terminationGracePeriodSeconds within it, less the time kept for removing their containers.
    #[arg(long, env = "KM_EXECUTOR_SHUTDOWN_GRACE_PERIOD", default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub executor_shutdown_grace_period: std::time::Duration,
    /// Port of each executor's kubelet API (container logs); 0 picks a free port per executor.
    #[arg(long, default_value_t = 10250, value_name = "PORT")]
    pub executor_kubelet_port: u16,
    /// Let executors run privileged containers.
    #[arg(long)]
    pub allow_privileged: bool,
    /// Put pods under the executor's cgroup so the Mesos limits cover them (needs Docker's cgroupfs driver).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub contain_pod_resources: bool,
}

impl MatchingFlags {
    /// The arguments after `km executor` (only those that differ from the
    /// executor's defaults, so the executor id changes only when they do).
    pub fn executor_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(k) = &self.executor_kubeconfig {
            let abs = std::path::absolute(k).unwrap_or_else(|_| k.clone());
            args.push(format!("--kubeconfig={}", abs.display()));
        }
        if self.executor_suicide_timeout != std::time::Duration::from_secs(20 * 60) {
            args.push(format!(
                "--suicide-timeout={}",
                humantime::format_duration(self.executor_suicide_timeout)
            ));
        }
        if self.executor_kubelet_port != 10250 {
            args.push(format!("--kubelet-port={}", self.executor_kubelet_port));
        }
        if self.allow_privileged {
            args.push("--allow-privileged".into());
        }
        if !self.contain_pod_resources {
            args.push("--contain-pod-resources=false".into());
        }
        args
    }
}

/// Everything matching needs, checked.
#[derive(Clone, Debug)]
pub struct Matching {
    /// How pods become tasks.
    pub podtask: PodTaskConfig,
    /// The executor tasks run in.
    pub executor: ExecutorPrototype,
    /// Placement policy.
    pub policy: Policy,
}

/// A flag value that cannot work. The message names the flag and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {problem}")]
pub struct FlagError {
    /// The flag, e.g. `--mesos-default-pod-roles`.
    pub flag: &'static str,
    /// What is wrong and how to fix it.
    pub problem: String,
}

fn positive(flag: &'static str, v: f64, example: &str) -> Result<f64, FlagError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(FlagError {
            flag,
            problem: format!("{v} is not a positive number; use e.g. {example}"),
        })
    }
}

impl MatchingFlags {
    /// Checks the flags and builds the matching configuration.
    pub fn build(&self) -> Result<Matching, FlagError> {
        let defaults = ContainerDefaults {
            cpus: positive(
                "--default-container-cpu-limit",
                self.default_container_cpu_limit,
                "0.25",
            )?,
            mem_mb: positive(
                "--default-container-mem-limit",
                self.default_container_mem_limit,
                "64",
            )?,
        };
        let roles = |flag: &'static str, v: &[String]| -> Result<Vec<String>, FlagError> {
            let r: Vec<String> = v
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if r.is_empty() {
                return Err(FlagError {
                    flag,
                    problem: "names no role; use e.g. '*' or 'k8s,*'".into(),
                });
            }
            Ok(r)
        };
        let framework_roles = roles("--mesos-framework-roles", &self.mesos_framework_roles)?;
        let default_pod_roles = roles("--mesos-default-pod-roles", &self.mesos_default_pod_roles)?;
        if let Some(bad) = default_pod_roles
            .iter()
            .find(|r| !framework_roles.contains(r))
        {
            return Err(FlagError {
                flag: "--mesos-default-pod-roles",
                problem: format!(
                    "role {bad:?} is not one of --mesos-framework-roles ({}); add it there or remove it here",
                    framework_roles.join(",")
                ),
            });
        }
        let static_pods = match &self.static_pods_config {
            Some(dir) => load_static_pods(dir)?,
            None => Vec::new(),
        };
        let km_path = match &self.km_path {
            Some(p) if !p.trim().is_empty() => p.clone(),
            Some(_) => {
                return Err(FlagError {
                    flag: "--km-path",
                    problem: "is empty; give a path or URL".into(),
                });
            }
            None => std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "/usr/bin/km".to_string()),
        };
        let executor_cfg = ExecutorConfig {
            km_path,
            cpus: positive("--mesos-executor-cpus", self.mesos_executor_cpus, "0.25")?,
            mem_mb: positive("--mesos-executor-mem", self.mesos_executor_mem, "128")?,
            static_pods,
            args: self.executor_args(),
            shutdown_grace: Some(self.executor_shutdown_grace_period).filter(|d| !d.is_zero()),
            ..Default::default()
        };
        let executor = ExecutorPrototype::new(&executor_cfg, &defaults).map_err(|e| FlagError {
            flag: "--static-pods-config",
            problem: e.to_string(),
        })?;
        Ok(Matching {
            podtask: PodTaskConfig {
                defaults,
                framework_roles,
                default_pod_roles,
                default_port_mapping: if self.host_port_endpoints {
                    PortMapping::Wildcard
                } else {
                    PortMapping::Fixed
                },
            },
            executor,
            policy: self.placement,
        })
    }
}

/// Reads every file of `dir` (subdirectories are skipped) as one Pod manifest.
fn load_static_pods(dir: &Path) -> Result<Vec<Pod>, FlagError> {
    let err = |problem: String| FlagError {
        flag: "--static-pods-config",
        problem,
    };
    let entries = std::fs::read_dir(dir)
        .map_err(|e| err(format!("cannot read directory {}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut pods = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| err(format!("cannot read {}: {e}", f.display())))?;
        if text.trim().is_empty() {
            continue;
        }
        let mut pod =
            crate::manifest::parse_pod(&text).map_err(|e| err(format!("{}: {e}", f.display())))?;
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(missing) = missing_limit(&pod) {
            return Err(err(format!(
                "{}: {missing} has no limit; static pods are charged to every executor, so give each container resources.limits.cpu and resources.limits.memory",
                f.display()
            )));
        }
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                crate::podtask::annotations::STATIC_POD_FILENAME.into(),
                name,
            );
        pods.push(pod);
    }
    Ok(pods)
}

/// The first container field of a static pod that lacks a cpu or memory limit.
fn missing_limit(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let named = |what: &str, i: usize| format!("{what}[{i}]");
    let all = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (named("spec.containers", i), c))
        .chain(
            spec.init_containers
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, c)| (named("spec.initContainers", i), c)),
        );
    for (path, c) in all {
        let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
        for key in ["cpu", "memory"] {
            if !limits.is_some_and(|l| l.contains_key(key)) {
                return Some(format!("{path}.resources.limits.{key}"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: MatchingFlags,
    }

    fn flags(args: &[&str]) -> MatchingFlags {
        let mut argv = vec!["km"];
        argv.extend_from_slice(args);
        Cli::parse_from(argv).flags
    }

    const LIMITED: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: logger}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources: {limits: {cpu: 500m, memory: 100Mi}}\n";

    #[test]
    fn static_pods_add_their_limits_to_every_executor() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("logger.yaml"), LIMITED).unwrap();
        let m = flags(&[
            "--executor-cpus",
            "0.5",
            "--static-pods-config",
            dir.path().to_str().unwrap(),
        ])
        .build()
        .unwrap();
        assert_eq!(m.executor.cpus(), 1.0);
        assert_eq!(m.executor.mem_mb(), 228.0);
    }

    #[test]
    fn a_static_pod_without_limits_is_refused_naming_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a-ok.yaml"), LIMITED).unwrap();
        let bare = LIMITED.replace(", memory: 100Mi", "");
        std::fs::write(dir.path().join("b-bare.yaml"), bare).unwrap();
        let e = flags(&["--static-pods-config", dir.path().to_str().unwrap()])
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--static-pods-config: "), "{e}");
        assert!(e.contains("b-bare.yaml"), "{e}");
        assert!(
            e.contains("spec.containers[0].resources.limits.memory"),
            "{e}"
        );
    }
}
