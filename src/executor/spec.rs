//! From a Kubernetes pod to Docker create bodies, the way a kubelet's Docker
//! integration built them.
//!
//! Networking (host-private): each pod has an infra container on Docker's
//! default bridge network that owns the pod's network and IPC namespaces and
//! publishes the pod's host ports ([`infra_body`]); the pod's containers join
//! it with `network_mode`/`ipc_mode` `container:<infra id>` and so share
//! `localhost` ([`container_body`]). A `hostNetwork` pod uses the host's
//! network (and UTS) namespace everywhere and publishes nothing.
//!
//! Docker names and labels follow the kubelet's (`k8s_<container>_<pod>_<ns>
//! _<uid>_<restarts>`, `io.kubernetes.*`), plus km's Mesos ids
//! ([`super::labels`]). Docker never restarts a container (`restart policy
//! no`): km's executor does, as a kubelet would.
//!
//! Where Docker or km cannot do what Kubernetes specifies:
//! * `runAsGroup` without `runAsUser` is refused (Docker's `User` cannot
//!   combine the image's user with another group), as the kubelet's Docker
//!   integration did; `runAsNonRoot` is checked only against an explicit
//!   `runAsUser`.
//! * `seccompProfile` `Localhost` is refused; with no profile the container
//!   keeps Docker's default profile.
//! * A resourceFieldRef on a missing limit reports the node's capacity (the
//!   cpus this process may use, the host's memory) where the kubelet reports
//!   its allocatable.
//! * Host ports are published for `spec.containers` only (as the kubelet and
//!   km's scheduler count them), not for init containers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountBindOptions, MountBindOptionsPropagationEnum,
    MountType, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use k8s_openapi::api::core::v1::{
    Container, ObjectFieldSelector, Pod, ResourceFieldSelector, SecurityContext,
};

use super::labels as l;
use super::volumes::{EnvSources, VolumePaths};
use crate::resources::Quantity;

/// Longest hostname (a DNS label).
const MAX_HOSTNAME: usize = 63;
/// CFS period km gives containers with a cpu limit (µs), as the kubelet.
pub const CPU_PERIOD: i64 = 100_000;
/// Smallest CFS quota the kubelet sets (µs).
pub const MIN_CPU_QUOTA: i64 = 1_000;
/// Smallest cpu shares (the kernel's minimum).
pub const MIN_CPU_SHARES: i64 = 2;
/// Largest cpu shares (the kernel's maximum).
pub const MAX_CPU_SHARES: i64 = 262_144;

/// Everything about a pod and its node that its container bodies need.
pub struct PodContext<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// The node (Kubernetes name) the pod runs on.
    pub node_name: &'a str,
    /// The host's IP; also the pod IP km reports (`status.podIP`).
    pub host_ip: &'a str,
    /// The Mesos task id of the pod.
    pub task_id: &'a str,
    /// The Mesos executor id.
    pub executor_id: &'a str,
    /// The Mesos framework id.
    pub framework_id: &'a str,
    /// The Mesos agent id.
    pub agent_id: &'a str,
    /// `HostConfig.cgroup_parent` of every container of the pod.
    pub cgroup_parent: Option<&'a str>,
    /// Whether privileged containers may run (`--allow-privileged`).
    pub allow_privileged: bool,
    /// Environment given to every container after its own (e.g. `MESOS_*`
    /// facts); a variable the container defines itself wins.
    pub extra_env: &'a [(String, String)],
}

/// Whether a container is an init container or a regular one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerKind {
    /// From `spec.initContainers`.
    Init,
    /// From `spec.containers`.
    App,
}

impl ContainerKind {
    /// The value of the [`l::CONTAINER_KIND`] label: `init` or `app`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerKind::Init => "init",
            ContainerKind::App => "app",
        }
    }

    /// Reads a [`l::CONTAINER_KIND`] label value back.
    pub fn from_label(s: &str) -> Option<Self> {
        match s {
            "init" => Some(ContainerKind::Init),
            "app" => Some(ContainerKind::App),
            _ => None,
        }
    }
}

/// A container of the pod cannot be run as specified.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The container asks to be privileged on a node that forbids it.
    #[error(
        "container {container}: securityContext.privileged is not allowed on this node (start km executor with --allow-privileged)"
    )]
    PrivilegedNotAllowed {
        /// The container's name.
        container: String,
    },
    /// A volumeMount names a volume the pod does not have.
    #[error(
        "container {container}: volumeMounts[{index}].name: volume {volume:?} is not one of the pod's volumes (spec.volumes); declare it there or fix the name"
    )]
    UnknownVolume {
        /// The container's name.
        container: String,
        /// Index in `volumeMounts`.
        index: usize,
        /// The volume name.
        volume: String,
    },
    /// A subPath/subPathExpr that is absolute, climbs out or cannot be made.
    #[error("container {container}: volumeMounts[{index}].{field} {value:?}: {reason}")]
    SubPath {
        /// The container's name.
        container: String,
        /// Index in `volumeMounts`.
        index: usize,
        /// `subPath` or `subPathExpr`.
        field: &'static str,
        /// The (expanded) sub-path.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// An env fieldRef names a field that cannot be exposed.
    #[error("container {container}: {field}.valueFrom.fieldRef.fieldPath {path:?}: {reason}")]
    FieldRef {
        /// The container's name.
        container: String,
        /// e.g. `env[2]`.
        field: String,
        /// The field path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// An env resourceFieldRef names a resource km cannot expose.
    #[error(
        "container {container}: {field}.valueFrom.resourceFieldRef.resource {resource:?}: {reason}"
    )]
    ResourceFieldRef {
        /// The container's name.
        container: String,
        /// e.g. `env[2]`.
        field: String,
        /// The resource.
        resource: String,
        /// What is wrong.
        reason: String,
    },
    /// A ConfigMap or Secret the environment needs was not found.
    #[error(
        "container {container}: {field}: {kind} {name:?} was not found in the pod's namespace; create it or mark the reference optional"
    )]
    MissingObject {
        /// The container's name.
        container: String,
        /// e.g. `envFrom[0].configMapRef` or `env[1].valueFrom.secretKeyRef`.
        field: String,
        /// `ConfigMap` or `Secret`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A key the environment needs is not in its ConfigMap or Secret.
    #[error(
        "container {container}: {field}: key {key:?} is not in {kind} {name:?}; add it or mark the reference optional"
    )]
    MissingKey {
        /// The container's name.
        container: String,
        /// e.g. `env[1].valueFrom.configMapKeyRef`.
        field: String,
        /// `ConfigMap` or `Secret`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The key.
        key: String,
    },
    /// Any other field km cannot carry out.
    #[error("container {container}: {field}: {reason}")]
    Unsupported {
        /// The container's name.
        container: String,
        /// The field path.
        field: String,
        /// What is wrong and what to do.
        reason: String,
    },
}

/// cpu and memory settings of a container, as the kubelet computes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerResources {
    /// `cpu.shares`: from the cpu request (or the limit when only it is set).
    pub cpu_shares: i64,
    /// CFS quota (µs per period), only with a cpu limit.
    pub cpu_quota: Option<i64>,
    /// CFS period (µs), only with a cpu limit.
    pub cpu_period: Option<i64>,
    /// Memory limit in bytes (`limits.memory`).
    pub memory_bytes: Option<i64>,
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

fn pod_uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

/// All Docker labels of a container of the pod; `container` is `None` for
/// the infra container.
pub fn labels(
    ctx: &PodContext<'_>,
    container: Option<(&str, ContainerKind)>,
    restart_count: u32,
) -> HashMap<String, String> {
    let mut m = HashMap::new();
    let mut put = |k: &str, v: &str| {
        m.insert(k.to_owned(), v.to_owned());
    };
    put(l::POD_NAME, pod_name(ctx.pod));
    put(l::POD_NAMESPACE, pod_namespace(ctx.pod));
    put(l::POD_UID, pod_uid(ctx.pod));
    put(l::TASK_ID, ctx.task_id);
    put(l::EXECUTOR_ID, ctx.executor_id);
    put(l::FRAMEWORK_ID, ctx.framework_id);
    put(l::AGENT_ID, ctx.agent_id);
    put(l::RESTART_COUNT, &restart_count.to_string());
    match container {
        None => {
            put(l::CONTAINER_TYPE, l::TYPE_SANDBOX);
            put(l::CONTAINER_NAME, l::INFRA_NAME);
        }
        Some((name, kind)) => {
            put(l::CONTAINER_TYPE, l::TYPE_CONTAINER);
            put(l::CONTAINER_NAME, name);
            put(l::CONTAINER_KIND, kind.as_str());
        }
    }
    m
}

/// Docker name of the pod's infra container: `k8s_POD_<pod>_<ns>_<uid>_0`.
pub fn infra_name(pod: &Pod) -> String {
    format!(
        "k8s_{}_{}_{}_{}_0",
        l::INFRA_NAME,
        pod_name(pod),
        pod_namespace(pod),
        pod_uid(pod)
    )
}

/// Docker name of a container: `k8s_<container>_<pod>_<ns>_<uid>_<restarts>`.
pub fn container_name(pod: &Pod, container: &str, restart_count: u32) -> String {
    format!(
        "k8s_{container}_{}_{}_{}_{restart_count}",
        pod_name(pod),
        pod_namespace(pod),
        pod_uid(pod)
    )
}

/// The pod's hostname: `spec.hostname`, else the pod name cut to 63
/// characters without trailing `-` or `.` (as the kubelet does).
pub fn hostname(pod: &Pod) -> String {
    let given = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty());
    let name = given.unwrap_or_else(|| pod_name(pod));
    if name.len() <= MAX_HOSTNAME {
        return name.to_owned();
    }
    let mut cut = MAX_HOSTNAME;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    name[..cut].trim_end_matches(['-', '.']).to_owned()
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

fn host_ipc(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_ipc).unwrap_or(false)
}

fn host_pid(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_pid).unwrap_or(false)
}

fn no_restart() -> Option<RestartPolicy> {
    Some(RestartPolicy {
        name: Some(RestartPolicyNameEnum::NO),
        maximum_retry_count: None,
    })
}

/// The Docker port key of a container port: `80/tcp`, `53/udp`, `9/sctp`
/// (unknown protocols count as TCP, as in the kubelet).
pub fn port_key(container_port: i32, protocol: Option<&str>) -> String {
    let proto = match protocol.unwrap_or("TCP") {
        "UDP" => "udp",
        "SCTP" => "sctp",
        _ => "tcp",
    };
    format!("{container_port}/{proto}")
}

/// The infra container of the pod: it owns the network (and IPC) namespace
/// the pod's containers join and publishes every container port that has a
/// `hostPort`.
pub fn infra_body(ctx: &PodContext<'_>, image: &str) -> ContainerCreateBody {
    let pod = ctx.pod;
    let spec = pod.spec.as_ref();
    let host_net = host_network(pod);
    let mut hc = HostConfig {
        cgroup_parent: ctx.cgroup_parent.map(str::to_owned),
        restart_policy: no_restart(),
        network_mode: Some(if host_net { "host" } else { "bridge" }.to_owned()),
        ipc_mode: Some(if host_ipc(pod) { "host" } else { "shareable" }.to_owned()),
        ..Default::default()
    };
    if host_net {
        hc.uts_mode = Some("host".to_owned());
    }
    if host_pid(pod) {
        hc.pid_mode = Some("host".to_owned());
    }

    let mut exposed = BTreeSet::new();
    if !host_net {
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for c in spec.map(|s| s.containers.as_slice()).unwrap_or(&[]) {
            for p in c.ports.iter().flatten() {
                let Some(host_port) = p.host_port.filter(|&h| h > 0) else {
                    continue;
                };
                let key = port_key(p.container_port, p.protocol.as_deref());
                exposed.insert(key.clone());
                bindings
                    .entry(key)
                    .or_insert_with(|| Some(Vec::new()))
                    .get_or_insert_with(Vec::new)
                    .push(PortBinding {
                        host_ip: p.host_ip.clone().filter(|ip| !ip.is_empty()),
                        host_port: Some(host_port.to_string()),
                    });
            }
        }
        if !bindings.is_empty() {
            hc.port_bindings = Some(bindings);
        }
    }

    if let Some(dns) = spec.and_then(|s| s.dns_config.as_ref()) {
        hc.dns = dns.nameservers.clone().filter(|v| !v.is_empty());
        hc.dns_search = dns.searches.clone().filter(|v| !v.is_empty());
        let opts: Vec<String> = dns
            .options
            .iter()
            .flatten()
            .filter_map(|o| {
                let name = o.name.as_deref().filter(|n| !n.is_empty())?;
                Some(match o.value.as_deref() {
                    Some(v) if !v.is_empty() => format!("{name}:{v}"),
                    _ => name.to_owned(),
                })
            })
            .collect();
        if !opts.is_empty() {
            hc.dns_options = Some(opts);
        }
    }
    let hosts: Vec<String> = spec
        .and_then(|s| s.host_aliases.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|a| {
            a.hostnames
                .iter()
                .flatten()
                .map(move |h| format!("{h}:{}", a.ip))
        })
        .collect();
    if !hosts.is_empty() {
        hc.extra_hosts = Some(hosts);
    }

    // Namespaced sysctls belong to the namespaces the infra container owns;
    // skip those of namespaces shared with the host.
    let sysctls: HashMap<String, String> = spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|sc| sc.sysctls.as_ref())
        .into_iter()
        .flatten()
        .filter(|s| {
            let net = s.name.starts_with("net.");
            let ipc = s.name.starts_with("kernel.shm")
                || s.name.starts_with("kernel.msg")
                || s.name == "kernel.sem"
                || s.name.starts_with("fs.mqueue.");
            !((net && host_net) || (ipc && host_ipc(pod)))
        })
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    if !sysctls.is_empty() {
        hc.sysctls = Some(sysctls);
    }

    ContainerCreateBody {
        image: Some(image.to_owned()),
        hostname: (!host_net).then(|| hostname(pod)),
        labels: Some(labels(ctx, None, 0)),
        exposed_ports: (!exposed.is_empty()).then(|| exposed.into_iter().collect()),
        host_config: Some(hc),
        ..Default::default()
    }
}

/// One container of the pod, joined to the infra container `infra_id`:
/// command/args (after `$(VAR)` expansion), environment ([`environment`]),
/// user, security settings, bind mounts from `volumes`, cpu and memory
/// ([`resources`]) and labels. Creates missing `subPath` directories inside
/// their volume, as the kubelet does.
#[allow(clippy::too_many_arguments)]
pub fn container_body(
    ctx: &PodContext<'_>,
    c: &Container,
    kind: ContainerKind,
    restart_count: u32,
    infra_id: &str,
    volumes: &VolumePaths,
    env_sources: &EnvSources,
    image: &str,
) -> Result<ContainerCreateBody, SpecError> {
    let pod = ctx.pod;
    let name = c.name.as_str();
    let unsupported = |field: &str, reason: String| SpecError::Unsupported {
        container: name.to_owned(),
        field: field.to_owned(),
        reason,
    };

    let env = environment(ctx, c, env_sources)?;
    let env_map: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let lookup = |n: &str| env_map.get(n).map(|v| (*v).to_owned());
    let expand_all = |v: &Option<Vec<String>>| -> Option<Vec<String>> {
        v.as_ref()
            .filter(|v| !v.is_empty())
            .map(|v| v.iter().map(|s| expand(s, lookup)).collect())
    };

    let joined = format!("container:{infra_id}");
    let host_net = host_network(pod);
    let mut hc = HostConfig {
        cgroup_parent: ctx.cgroup_parent.map(str::to_owned),
        restart_policy: no_restart(),
        network_mode: Some(if host_net {
            "host".to_owned()
        } else {
            joined.clone()
        }),
        ipc_mode: Some(if host_ipc(pod) {
            "host".to_owned()
        } else {
            joined.clone()
        }),
        ..Default::default()
    };
    if host_net {
        hc.uts_mode = Some("host".to_owned());
    }
    let share_pid = pod
        .spec
        .as_ref()
        .and_then(|s| s.share_process_namespace)
        .unwrap_or(false);
    if host_pid(pod) {
        hc.pid_mode = Some("host".to_owned());
    } else if share_pid {
        hc.pid_mode = Some(joined.clone());
    }

    let r = resources(c);
    hc.cpu_shares = Some(r.cpu_shares);
    hc.cpu_quota = r.cpu_quota;
    hc.cpu_period = r.cpu_period;
    hc.memory = r.memory_bytes;
    // Kubernetes containers do not swap: the swap limit equals the memory limit.
    hc.memory_swap = r.memory_bytes;

    // Security context: the container's fields over the pod's.
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc: Option<&SecurityContext> = c.security_context.as_ref();
    let run_as_user = csc
        .and_then(|s| s.run_as_user)
        .or(psc.and_then(|s| s.run_as_user));
    let run_as_group = csc
        .and_then(|s| s.run_as_group)
        .or(psc.and_then(|s| s.run_as_group));
    let run_as_non_root = csc
        .and_then(|s| s.run_as_non_root)
        .or(psc.and_then(|s| s.run_as_non_root))
        .unwrap_or(false);
    let user = match (run_as_user, run_as_group) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, Some(_)) => {
            return Err(unsupported(
                "securityContext.runAsGroup",
                "runAsGroup needs runAsUser with Docker (the image's user cannot be combined with another group); set runAsUser too".to_owned(),
            ));
        }
        (None, None) => None,
    };
    if run_as_non_root && run_as_user == Some(0) {
        return Err(unsupported(
            "securityContext.runAsNonRoot",
            "runAsNonRoot is true but runAsUser is 0 (root); set a non-zero runAsUser".to_owned(),
        ));
    }
    let privileged = csc.and_then(|s| s.privileged).unwrap_or(false);
    if privileged {
        if !ctx.allow_privileged {
            return Err(SpecError::PrivilegedNotAllowed {
                container: name.to_owned(),
            });
        }
        hc.privileged = Some(true);
    }
    if csc.and_then(|s| s.read_only_root_filesystem) == Some(true) {
        hc.readonly_rootfs = Some(true);
    }
    if let Some(caps) = csc.and_then(|s| s.capabilities.as_ref()) {
        hc.cap_add = caps.add.clone().filter(|v| !v.is_empty());
        hc.cap_drop = caps.drop.clone().filter(|v| !v.is_empty());
    }
    let mut security_opt = Vec::new();
    if csc.and_then(|s| s.allow_privilege_escalation) == Some(false) {
        security_opt.push("no-new-privileges".to_owned());
    }
    let seccomp = csc
        .and_then(|s| s.seccomp_profile.as_ref())
        .or(psc.and_then(|s| s.seccomp_profile.as_ref()));
    if let Some(p) = seccomp {
        match p.type_.as_str() {
            "RuntimeDefault" => {}
            "Unconfined" => security_opt.push("seccomp=unconfined".to_owned()),
            other => {
                return Err(unsupported(
                    "securityContext.seccompProfile.type",
                    format!("{other:?} is not supported by km; use RuntimeDefault or Unconfined"),
                ));
            }
        }
    }
    let apparmor = csc
        .and_then(|s| s.app_armor_profile.as_ref())
        .or(psc.and_then(|s| s.app_armor_profile.as_ref()));
    if let Some(p) = apparmor {
        match (p.type_.as_str(), p.localhost_profile.as_deref()) {
            ("RuntimeDefault", _) => {}
            ("Unconfined", _) => security_opt.push("apparmor=unconfined".to_owned()),
            ("Localhost", Some(profile)) if !profile.is_empty() => {
                security_opt.push(format!("apparmor={profile}"))
            }
            (other, _) => {
                return Err(unsupported(
                    "securityContext.appArmorProfile",
                    format!(
                        "type {other:?} is not supported (Localhost needs localhostProfile); use RuntimeDefault, Unconfined or Localhost"
                    ),
                ));
            }
        }
    }
    if !security_opt.is_empty() {
        hc.security_opt = Some(security_opt);
    }
    // Supplemental groups and fsGroup join the container's groups.
    let groups: Vec<String> = psc
        .and_then(|s| s.supplemental_groups.as_ref())
        .into_iter()
        .flatten()
        .copied()
        .chain(psc.and_then(|s| s.fs_group))
        .map(|g| g.to_string())
        .collect();
    if !groups.is_empty() {
        hc.group_add = Some(groups);
    }

    // Mounts.
    let mut mounts = Vec::new();
    for (index, vm) in c.volume_mounts.iter().flatten().enumerate() {
        let Some((root, forced_ro)) = volumes.get(&vm.name) else {
            return Err(SpecError::UnknownVolume {
                container: name.to_owned(),
                index,
                volume: vm.name.clone(),
            });
        };
        let sub = match (
            vm.sub_path.as_deref().filter(|s| !s.is_empty()),
            vm.sub_path_expr.as_deref().filter(|s| !s.is_empty()),
        ) {
            (Some(s), _) => Some(("subPath", s.to_owned())),
            (None, Some(e)) => Some(("subPathExpr", expand(e, lookup))),
            (None, None) => None,
        };
        let source = match sub {
            None => root.to_path_buf(),
            Some((field, value)) => {
                safe_subpath(root, &value).map_err(|reason| SpecError::SubPath {
                    container: name.to_owned(),
                    index,
                    field,
                    value: value.clone(),
                    reason,
                })?
            }
        };
        let propagation = match vm.mount_propagation.as_deref() {
            None | Some("") | Some("None") => None,
            Some("HostToContainer") => Some(MountBindOptionsPropagationEnum::RSLAVE),
            Some("Bidirectional") if privileged => Some(MountBindOptionsPropagationEnum::RSHARED),
            Some("Bidirectional") => {
                return Err(unsupported(
                    &format!("volumeMounts[{index}].mountPropagation"),
                    "Bidirectional propagation needs a privileged container".to_owned(),
                ));
            }
            Some(other) => {
                return Err(unsupported(
                    &format!("volumeMounts[{index}].mountPropagation"),
                    format!("{other:?} is unknown; use None, HostToContainer or Bidirectional"),
                ));
            }
        };
        mounts.push(Mount {
            target: Some(vm.mount_path.clone()),
            source: Some(source.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(forced_ro || vm.read_only.unwrap_or(false)),
            bind_options: propagation.map(|p| MountBindOptions {
                propagation: Some(p),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if !mounts.is_empty() {
        hc.mounts = Some(mounts);
    }

    Ok(ContainerCreateBody {
        image: Some(image.to_owned()),
        entrypoint: expand_all(&c.command),
        cmd: expand_all(&c.args),
        env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        user,
        tty: Some(c.tty.unwrap_or(false)),
        open_stdin: Some(c.stdin.unwrap_or(false)),
        stdin_once: Some(c.stdin_once.unwrap_or(false)),
        labels: Some(labels(ctx, Some((name, kind)), restart_count)),
        host_config: Some(hc),
        ..Default::default()
    })
}

/// `root` joined with the relative `sub`, refusing absolute paths, `..`
/// and symbolic links that lead outside `root`; missing directories are
/// created with `root`'s mode, as the kubelet does. Returns the resolved path.
fn safe_subpath(root: &Path, sub: &str) -> Result<PathBuf, String> {
    let p = Path::new(sub);
    if p.is_absolute() {
        return Err("must be a relative path".to_owned());
    }
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s),
            Component::CurDir => {}
            Component::ParentDir => return Err("must not contain '..'".to_owned()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("must be a relative path".to_owned());
            }
        }
    }
    let root_real = std::fs::canonicalize(root)
        .map_err(|e| format!("the volume's directory {} is unusable: {e}", root.display()))?;
    let mode = std::fs::metadata(&root_real)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o755);
    let mut cur = root_real.clone();
    for part in parts {
        cur.push(part);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                let real = std::fs::canonicalize(&cur)
                    .map_err(|e| format!("{} cannot be resolved: {e}", cur.display()))?;
                if !real.starts_with(&root_real) {
                    return Err("leads outside the volume through a symbolic link".to_owned());
                }
                cur = real;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&cur)
                    .and_then(|()| {
                        std::fs::set_permissions(
                            &cur,
                            std::os::unix::fs::PermissionsExt::from_mode(mode),
                        )
                    })
                    .map_err(|e| format!("cannot create {}: {e}", cur.display()))?;
            }
            Err(e) => return Err(format!("{}: {e}", cur.display())),
        }
    }
    Ok(cur)
}

/// Environment variable names accepted from envFrom: printable ASCII
/// without `=` (Kubernetes' relaxed validation, the default since 1.34).
fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

/// An ordered environment where a later definition replaces the value of an
/// earlier one in place.
#[derive(Default)]
struct Env {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl Env {
    fn set(&mut self, k: String, v: String) {
        match self.index.get(&k) {
            Some(&i) => self.vars[i].1 = v,
            None => {
                self.index.insert(k.clone(), self.vars.len());
                self.vars.push((k, v));
            }
        }
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.index.get(k).map(|&i| self.vars[i].1.as_str())
    }
}

/// The effective environment of container `c`, in order: `envFrom` sources
/// (keys in sorted order, with their prefix; keys that are not valid
/// variable names are skipped), then `env`; a later definition replaces an
/// earlier one's value. `value`s have `$(VAR)` references expanded against
/// the variables defined before them and then [`PodContext::extra_env`];
/// `$$` is a literal `$` and unknown references stay as written.
/// [`PodContext::extra_env`] variables the container does not define come last.
pub fn environment(
    ctx: &PodContext<'_>,
    c: &Container,
    env_sources: &EnvSources,
) -> Result<Vec<(String, String)>, SpecError> {
    let name = c.name.as_str();
    let mut env = Env::default();
    for (i, ef) in c.env_from.iter().flatten().enumerate() {
        let prefix = ef.prefix.as_deref().unwrap_or("");
        let (kind, field, src_name, optional, data) = if let Some(r) = &ef.config_map_ref {
            (
                "ConfigMap",
                format!("envFrom[{i}].configMapRef"),
                &r.name,
                r.optional,
                env_sources.config_map(&r.name),
            )
        } else if let Some(r) = &ef.secret_ref {
            (
                "Secret",
                format!("envFrom[{i}].secretRef"),
                &r.name,
                r.optional,
                env_sources.secret(&r.name),
            )
        } else {
            continue;
        };
        let Some(data) = data else {
            if optional.unwrap_or(false) {
                continue;
            }
            return Err(SpecError::MissingObject {
                container: name.to_owned(),
                field,
                kind,
                name: src_name.clone(),
            });
        };
        for (k, v) in data {
            let key = format!("{prefix}{k}");
            if !valid_env_name(&key) {
                tracing::warn!(container = name, key = %key, source = %src_name,
                    "skipping an envFrom key that is not a valid environment variable name");
                continue;
            }
            env.set(key, v.clone());
        }
    }
    let extra: HashMap<&str, &str> = ctx
        .extra_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for (i, e) in c.env.iter().flatten().enumerate() {
        let field = format!("env[{i}]");
        let value = match (e.value.as_deref(), &e.value_from) {
            (Some(v), _) if !v.is_empty() => expand(v, |n| {
                env.get(n)
                    .or_else(|| extra.get(n).copied())
                    .map(str::to_owned)
            }),
            (_, Some(vf)) => {
                if let Some(f) = &vf.field_ref {
                    let node_name = ctx
                        .pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .filter(|n| !n.is_empty())
                        .unwrap_or(ctx.node_name);
                    field_ref_value(ctx.pod, Some((node_name, ctx.host_ip)), f, false).map_err(
                        |reason| SpecError::FieldRef {
                            container: name.to_owned(),
                            field: field.clone(),
                            path: f.field_path.clone(),
                            reason,
                        },
                    )?
                } else if let Some(r) = &vf.resource_field_ref {
                    let target = r.container_name.as_deref().filter(|n| !n.is_empty());
                    let res = match target {
                        Some(t) if t != name => resource_field_value(ctx.pod, t, r),
                        _ => resource_value(c, r),
                    };
                    res.map_err(|reason| SpecError::ResourceFieldRef {
                        container: name.to_owned(),
                        field: field.clone(),
                        resource: r.resource.clone(),
                        reason,
                    })?
                } else if let Some(r) = &vf.config_map_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    let field = format!("{field}.valueFrom.configMapKeyRef");
                    match key_of(env_sources.config_map(&r.name), &r.key) {
                        Lookup::Found(v) => v,
                        _ if optional => continue,
                        Lookup::NoObject => {
                            return Err(SpecError::MissingObject {
                                container: name.to_owned(),
                                field,
                                kind: "ConfigMap",
                                name: r.name.clone(),
                            });
                        }
                        Lookup::NoKey => {
                            return Err(SpecError::MissingKey {
                                container: name.to_owned(),
                                field,
                                kind: "ConfigMap",
                                name: r.name.clone(),
                                key: r.key.clone(),
                            });
                        }
                    }
                } else if let Some(r) = &vf.secret_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    let field = format!("{field}.valueFrom.secretKeyRef");
                    match key_of(env_sources.secret(&r.name), &r.key) {
                        Lookup::Found(v) => v,
                        _ if optional => continue,
                        Lookup::NoObject => {
                            return Err(SpecError::MissingObject {
                                container: name.to_owned(),
                                field,
                                kind: "Secret",
                                name: r.name.clone(),
                            });
                        }
                        Lookup::NoKey => {
                            return Err(SpecError::MissingKey {
                                container: name.to_owned(),
                                field,
                                kind: "Secret",
                                name: r.name.clone(),
                                key: r.key.clone(),
                            });
                        }
                    }
                } else if vf.file_key_ref.is_some() {
                    return Err(SpecError::Unsupported {
                        container: name.to_owned(),
                        field: format!("{field}.valueFrom.fileKeyRef"),
                        reason: "environment files are not supported by km's executor".to_owned(),
                    });
                } else {
                    String::new()
                }
            }
            _ => String::new(),
        };
        env.set(e.name.clone(), value);
    }
    for (k, v) in ctx.extra_env {
        if env.get(k).is_none() {
            env.set(k.clone(), v.clone());
        }
    }
    Ok(env.vars)
}

enum Lookup {
    Found(String),
    NoObject,
    NoKey,
}

fn key_of(data: Option<&BTreeMap<String, String>>, key: &str) -> Lookup {
    match data {
        None => Lookup::NoObject,
        Some(d) => match d.get(key) {
            Some(v) => Lookup::Found(v.clone()),
            None => Lookup::NoKey,
        },
    }
}

/// Expands `$(VAR)` references in `input` as Kubernetes does: `$$` is a
/// literal `$`, `$(NAME)` is replaced by `lookup(NAME)` or kept as written
/// when it has no value, an unterminated `$(` and any other `$` stay as they
/// are.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match after.chars().next() {
            None => {
                out.push('$');
                rest = after;
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after[1..].find(')') {
                Some(end) => {
                    let var = &after[1..1 + end];
                    match lookup(var) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(var);
                            out.push(')');
                        }
                    }
                    rest = &after[end + 2..];
                }
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(ch) => {
                out.push('$');
                out.push(ch);
                rest = &after[ch.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Splits `metadata.labels['key']` into (`metadata.labels`, `key`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (base, key) = inner.split_once("['")?;
    (!base.is_empty()).then_some((base, key))
}

/// A map as the downward API shows it: sorted `key="value"` lines, values
/// quoted and escaped like Go's `%q`.
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", crate::goquote::quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of a downward API fieldRef. `node` is `(nodeName, hostIP)` for
/// env vars; volumes (`for_volume`) allow only `metadata.*`, and whole
/// `metadata.labels`/`metadata.annotations` maps.
pub(crate) fn field_ref_value(
    pod: &Pod,
    node: Option<(&str, &str)>,
    sel: &ObjectFieldSelector,
    for_volume: bool,
) -> Result<String, String> {
    match sel.api_version.as_deref() {
        None | Some("") | Some("v1") => {}
        Some(v) => return Err(format!("apiVersion {v:?} is not supported; use v1")),
    }
    let path = sel.field_path.as_str();
    let meta = &pod.metadata;
    if let Some((base, key)) = split_subscript(path) {
        return match base {
            "metadata.labels" => Ok(meta
                .labels
                .as_ref()
                .and_then(|m| m.get(key))
                .cloned()
                .unwrap_or_default()),
            "metadata.annotations" => Ok(meta
                .annotations
                .as_ref()
                .and_then(|m| m.get(key))
                .cloned()
                .unwrap_or_default()),
            _ => Err(
                "only metadata.labels['key'] and metadata.annotations['key'] take a key".to_owned(),
            ),
        };
    }
    let expected = if for_volume {
        "use metadata.name, metadata.namespace, metadata.uid, metadata.labels, metadata.annotations, metadata.labels['key'] or metadata.annotations['key']"
    } else {
        "use metadata.name, metadata.namespace, metadata.uid, metadata.labels['key'], metadata.annotations['key'], spec.nodeName, spec.serviceAccountName, status.hostIP, status.hostIPs, status.podIP or status.podIPs"
    };
    match (path, node) {
        ("metadata.name", _) => Ok(pod_name(pod).to_owned()),
        ("metadata.namespace", _) => Ok(pod_namespace(pod).to_owned()),
        ("metadata.uid", _) => Ok(pod_uid(pod).to_owned()),
        ("metadata.labels", _) if for_volume => Ok(format_map(meta.labels.as_ref())),
        ("metadata.annotations", _) if for_volume => Ok(format_map(meta.annotations.as_ref())),
        ("spec.nodeName", Some((node, _))) => Ok(node.to_owned()),
        ("spec.serviceAccountName", Some(_)) => Ok(pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default()),
        // km's pods have the host's address.
        ("status.hostIP" | "status.hostIPs" | "status.podIP" | "status.podIPs", Some((_, ip))) => {
            Ok(ip.to_owned())
        }
        _ => Err(format!("not supported; {expected}")),
    }
}

/// Nano-units per milli-unit and per unit.
const NANOS_PER_MILLI: i128 = 1_000_000;
const NANOS_PER_UNIT: i128 = 1_000_000_000;

fn ceil_div(n: i128, d: i128) -> i128 {
    let q = n.div_euclid(d);
    if n.rem_euclid(d) == 0 { q } else { q + 1 }
}

fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// Milli-units, rounded up (Kubernetes' `MilliValue`).
fn milli(q: Quantity) -> i128 {
    ceil_div(q.nanos(), NANOS_PER_MILLI)
}

/// Whole units, rounded up (Kubernetes' `Value`).
fn units(q: Quantity) -> i128 {
    ceil_div(q.nanos(), NANOS_PER_UNIT)
}

/// Reads `resource` from a requests/limits map; unparsable values (which an
/// API server rejects) count as absent.
fn quantity(
    map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    resource: &str,
) -> Option<Quantity> {
    let q = map?.get(resource)?;
    match Quantity::from_k8s(q) {
        Ok(q) => Some(q),
        Err(e) => {
            tracing::warn!(resource, error = %e, "ignoring an unparsable resource quantity");
            None
        }
    }
}

fn limit_of(c: &Container, resource: &str) -> Option<Quantity> {
    quantity(c.resources.as_ref()?.limits.as_ref(), resource)
}

/// The request, defaulting to the limit when only the limit is set.
fn request_of(c: &Container, resource: &str) -> Option<Quantity> {
    quantity(c.resources.as_ref()?.requests.as_ref(), resource).or_else(|| limit_of(c, resource))
}

/// cpu shares, CFS quota/period and memory limit of container `c` (kubelet
/// arithmetic: shares = milliCPU × 1024 / 1000 within 2..=262144; quota =
/// milliCPU × 100000 / 1000, at least 1000, only with a non-zero cpu limit;
/// memory = `limits.memory` in bytes).
pub fn resources(c: &Container) -> ContainerResources {
    let request_milli = request_of(c, "cpu").map(milli).unwrap_or(0);
    let cpu_shares = if request_milli <= 0 {
        MIN_CPU_SHARES
    } else {
        clamp_i64(request_milli * 1024 / 1000).clamp(MIN_CPU_SHARES, MAX_CPU_SHARES)
    };
    let limit_milli = limit_of(c, "cpu").map(milli).unwrap_or(0);
    let (cpu_quota, cpu_period) = if limit_milli > 0 {
        let quota = clamp_i64(limit_milli * i128::from(CPU_PERIOD) / 1000).max(MIN_CPU_QUOTA);
        (Some(quota), Some(CPU_PERIOD))
    } else {
        (None, None)
    };
    let memory_bytes = limit_of(c, "memory")
        .map(units)
        .filter(|&b| b > 0)
        .map(clamp_i64);
    ContainerResources {
        cpu_shares,
        cpu_quota,
        cpu_period,
        memory_bytes,
    }
}

/// A downward API resourceFieldRef on container `container_name` of `pod`.
pub(crate) fn resource_field_value(
    pod: &Pod,
    container_name: &str,
    sel: &ResourceFieldSelector,
) -> Result<String, String> {
    let spec = pod.spec.as_ref();
    let c = spec
        .into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| c.name == container_name)
        .ok_or_else(|| format!("the pod has no container {container_name:?}"))?;
    resource_value(c, sel)
}

/// The node's capacity for a missing limit: the cpus this process may use
/// (in milli-cpus) and the host's memory (bytes).
fn node_capacity(resource: &str) -> Option<i128> {
    match resource {
        "cpu" => std::thread::available_parallelism()
            .ok()
            .map(|n| n.get() as i128 * 1000),
        "memory" => {
            let text = std::fs::read_to_string("/proc/meminfo").ok()?;
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: i128 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        }
        _ => None,
    }
}

/// The value of a resourceFieldRef for container `c`: the quantity divided
/// by the divisor (default 1), rounded up; cpu in milli-units against the
/// divisor's milli-units. A missing limit is the node's capacity (the
/// kubelet uses its allocatable); a missing request is 0.
fn resource_value(c: &Container, sel: &ResourceFieldSelector) -> Result<String, String> {
    let (which, res) = sel.resource.split_once('.').ok_or_else(|| {
        "use limits.cpu, limits.memory, requests.cpu or requests.memory".to_owned()
    })?;
    let cpu = match res {
        "cpu" => true,
        "memory" => false,
        _ => {
            return Err(
                "not supported by km; use limits.cpu, limits.memory, requests.cpu or requests.memory"
                    .to_owned(),
            );
        }
    };
    let divisor = match &sel.divisor {
        Some(d) => Quantity::from_k8s(d).map_err(|e| format!("divisor: {e}"))?,
        None => Quantity::ZERO,
    };
    let divisor = if divisor.is_zero() {
        Quantity::from_nanos(NANOS_PER_UNIT)
    } else {
        divisor
    };
    let scale = |q: Quantity| if cpu { milli(q) } else { units(q) };
    let value = match which {
        "limits" => match limit_of(c, res) {
            Some(q) => scale(q),
            None => node_capacity(res)
                .ok_or_else(|| "no limit is set and the node's capacity is unknown".to_owned())?,
        },
        "requests" => request_of(c, res).map(scale).unwrap_or(0),
        _ => {
            return Err(
                "use limits.cpu, limits.memory, requests.cpu or requests.memory".to_owned(),
            );
        }
    };
    let d = scale(divisor);
    if d <= 0 {
        return Err(format!("divisor {divisor} must be positive"));
    }
    Ok(ceil_div(value, d).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("test pod")
    }

    fn base_pod(containers: serde_json::Value) -> Pod {
        pod(json!({
            "metadata": {"name": "web-1", "namespace": "prod", "uid": "u-123",
                          "labels": {"app": "web", "tier": "front"},
                          "annotations": {"note": "say \"hi\"\n"}},
            "spec": {"containers": containers, "serviceAccountName": "robot"}
        }))
    }

    const EXTRA: &[(String, String)] = &[];

    fn ctx<'a>(pod: &'a Pod, extra: &'a [(String, String)]) -> PodContext<'a> {
        PodContext {
            pod,
            node_name: "node-a",
            host_ip: "10.1.2.3",
            task_id: "task-1",
            executor_id: "exec-1",
            framework_id: "fw-1",
            agent_id: "agent-1",
            cgroup_parent: Some("/km/pod-1"),
            allow_privileged: false,
            extra_env: extra,
        }
    }

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).expect("test container")
    }

    fn env_of(
        p: &Pod,
        c: &Container,
        src: &EnvSources,
    ) -> Result<Vec<(String, String)>, SpecError> {
        environment(&ctx(p, EXTRA), c, src)
    }

    fn body(p: &Pod, c: &Container) -> Result<ContainerCreateBody, SpecError> {
        container_body(
            &ctx(p, EXTRA),
            c,
            ContainerKind::App,
            0,
            "infra-id",
            &VolumePaths::default(),
            &EnvSources::default(),
            "img:1",
        )
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn docker_names_follow_the_kubelet() {
        let p = base_pod(json!([{"name": "app"}]));
        assert_eq!(infra_name(&p), "k8s_POD_web-1_prod_u-123_0");
        assert_eq!(container_name(&p, "app", 3), "k8s_app_web-1_prod_u-123_3");
        let no_ns = pod(json!({"metadata": {"name": "a", "uid": "u"}, "spec": {"containers": []}}));
        assert_eq!(infra_name(&no_ns), "k8s_POD_a_default_u_0");
    }

    #[test]
    fn labels_of_infra_and_containers() {
        let p = base_pod(json!([{"name": "app"}]));
        let c = ctx(&p, EXTRA);
        let infra = labels(&c, None, 0);
        assert_eq!(infra[l::POD_NAME], "web-1");
        assert_eq!(infra[l::POD_NAMESPACE], "prod");
        assert_eq!(infra[l::POD_UID], "u-123");
        assert_eq!(infra[l::TASK_ID], "task-1");
        assert_eq!(infra[l::EXECUTOR_ID], "exec-1");
        assert_eq!(infra[l::FRAMEWORK_ID], "fw-1");
        assert_eq!(infra[l::AGENT_ID], "agent-1");
        assert_eq!(infra[l::CONTAINER_TYPE], "podsandbox");
        assert_eq!(infra[l::CONTAINER_NAME], "POD");
        assert!(!infra.contains_key(l::CONTAINER_KIND));
        let app = labels(&c, Some(("app", ContainerKind::Init)), 4);
        assert_eq!(app[l::CONTAINER_TYPE], "container");
        assert_eq!(app[l::CONTAINER_NAME], "app");
        assert_eq!(app[l::CONTAINER_KIND], "init");
        assert_eq!(app[l::RESTART_COUNT], "4");
        assert_eq!(ContainerKind::from_label("app"), Some(ContainerKind::App));
        assert_eq!(ContainerKind::from_label("x"), None);
    }

    #[test]
    fn hostname_is_spec_hostname_or_truncated_pod_name() {
        let long = format!("{}-.b", "a".repeat(61));
        let p = pod(json!({"metadata": {"name": long}, "spec": {"containers": []}}));
        assert_eq!(hostname(&p), "a".repeat(61));
        let p =
            pod(json!({"metadata": {"name": "x"}, "spec": {"containers": [], "hostname": "h1"}}));
        assert_eq!(hostname(&p), "h1");
    }

    #[test]
    fn infra_publishes_only_ports_with_a_host_port() {
        let p = base_pod(json!([
            {"name": "a", "ports": [
                {"containerPort": 80, "hostPort": 31000},
                {"containerPort": 81},
                {"containerPort": 53, "hostPort": 31053, "protocol": "UDP", "hostIP": "127.0.0.1"},
            ]},
            {"name": "b", "ports": [
                {"containerPort": 9, "hostPort": 31009, "protocol": "SCTP"},
                {"containerPort": 80, "hostPort": 31001, "protocol": "TCP"},
            ]},
        ]));
        let b = infra_body(&ctx(&p, EXTRA), "pause:1");
        assert_eq!(b.image.as_deref(), Some("pause:1"));
        assert_eq!(b.hostname.as_deref(), Some("web-1"));
        assert_eq!(
            b.exposed_ports,
            Some(vec![
                "53/udp".to_owned(),
                "80/tcp".to_owned(),
                "9/sctp".to_owned()
            ])
        );
        let hc = b.host_config.expect("host config");
        let pb = hc.port_bindings.expect("bindings");
        assert_eq!(pb.len(), 3);
        let b80: Vec<_> = pb["80/tcp"].clone().expect("80");
        let ports: Vec<_> = b80
            .iter()
            .map(|b| b.host_port.clone().unwrap_or_default())
            .collect();
        assert_eq!(ports, ["31000", "31001"]);
        assert_eq!(b80[0].host_ip, None);
        let b53 = &pb["53/udp"].clone().expect("53")[0];
        assert_eq!(b53.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(b53.host_port.as_deref(), Some("31053"));
        assert!(!pb.contains_key("81/tcp"));
        assert_eq!(hc.network_mode.as_deref(), Some("bridge"));
        assert_eq!(hc.ipc_mode.as_deref(), Some("shareable"));
        assert_eq!(hc.cgroup_parent.as_deref(), Some("/km/pod-1"));
        assert_eq!(
            hc.restart_policy.and_then(|r| r.name),
            Some(RestartPolicyNameEnum::NO)
        );
        let labels = b.labels.expect("labels");
        assert_eq!(labels[l::CONTAINER_TYPE], "podsandbox");
    }

    #[test]
    fn infra_dns_hosts_and_sysctls() {
        let p = pod(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [],
                "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["a.local"],
                    "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]},
                "hostAliases": [{"ip": "10.0.0.9", "hostnames": ["db", "db.local"]}],
                "securityContext": {"sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]}}
        }));
        let hc = infra_body(&ctx(&p, EXTRA), "pause")
            .host_config
            .expect("hc");
        assert_eq!(hc.dns, Some(vec!["1.1.1.1".to_owned()]));
        assert_eq!(hc.dns_search, Some(vec!["a.local".to_owned()]));
        assert_eq!(
            hc.dns_options,
            Some(vec!["ndots:2".to_owned(), "edns0".to_owned()])
        );
        assert_eq!(
            hc.extra_hosts,
            Some(vec![
                "db:10.0.0.9".to_owned(),
                "db.local:10.0.0.9".to_owned()
            ])
        );
        assert_eq!(hc.sysctls.expect("sysctls")["net.core.somaxconn"], "1024");
    }

    #[test]
    fn host_network_pods_use_the_host_network_and_publish_nothing() {
        let p = pod(json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"hostNetwork": true, "containers": [
                {"name": "a", "ports": [{"containerPort": 80, "hostPort": 80}]}],
                "securityContext": {"sysctls": [{"name": "net.core.somaxconn", "value": "1"}]}}
        }));
        let b = infra_body(&ctx(&p, EXTRA), "pause");
        assert_eq!(b.hostname, None);
        assert_eq!(b.exposed_ports, None);
        let hc = b.host_config.expect("hc");
        assert_eq!(hc.network_mode.as_deref(), Some("host"));
        assert_eq!(hc.uts_mode.as_deref(), Some("host"));
        assert_eq!(hc.port_bindings, None);
        assert_eq!(hc.sysctls, None);
        let spec = p.spec.as_ref().expect("spec");
        let cb = body(&p, &spec.containers[0]).expect("body");
        let hc = cb.host_config.expect("hc");
        assert_eq!(hc.network_mode.as_deref(), Some("host"));
        assert_eq!(hc.ipc_mode.as_deref(), Some("container:infra-id"));
        assert_eq!(hc.port_bindings, None);
    }

    #[test]
    fn containers_join_the_infra_container() {
        let p = base_pod(json!([{"name": "a", "image": "x", "workingDir": "/w",
            "tty": true, "stdin": true, "stdinOnce": true}]));
        let c = &p.spec.as_ref().expect("spec").containers[0];
        let b = body(&p, c).expect("body");
        assert_eq!(b.image.as_deref(), Some("img:1"));
        assert_eq!(b.working_dir.as_deref(), Some("/w"));
        assert_eq!(b.tty, Some(true));
        assert_eq!(b.open_stdin, Some(true));
        assert_eq!(b.stdin_once, Some(true));
        assert_eq!(b.hostname, None);
        assert_eq!(b.exposed_ports, None);
        let hc = b.host_config.expect("hc");
        assert_eq!(hc.network_mode.as_deref(), Some("container:infra-id"));
        assert_eq!(hc.ipc_mode.as_deref(), Some("container:infra-id"));
        assert_eq!(hc.pid_mode, None);
        assert_eq!(hc.cgroup_parent.as_deref(), Some("/km/pod-1"));
        assert_eq!(hc.log_config, None);
        assert_eq!(
            hc.restart_policy.and_then(|r| r.name),
            Some(RestartPolicyNameEnum::NO)
        );
        let labels = b.labels.expect("labels");
        assert_eq!(labels[l::CONTAINER_KIND], "app");
        assert_eq!(labels[l::CONTAINER_NAME], "a");

        let shared = pod(json!({"metadata": {"name": "p"},
            "spec": {"shareProcessNamespace": true, "containers": [{"name": "a"}]}}));
        let hc = body(&shared, &shared.spec.as_ref().expect("spec").containers[0])
            .expect("body")
            .host_config
            .expect("hc");
        assert_eq!(hc.pid_mode.as_deref(), Some("container:infra-id"));
    }

    #[test]
    fn command_replaces_entrypoint_and_args_replace_cmd() {
        let p = base_pod(json!([]));
        let only_args = container(json!({"name": "a", "args": ["-v", "$(GREETING)"],
            "env": [{"name": "GREETING", "value": "hi"}]}));
        let b = body(&p, &only_args).expect("body");
        assert_eq!(b.entrypoint, None);
        assert_eq!(b.cmd, Some(vec!["-v".to_owned(), "hi".to_owned()]));

        let only_command = container(
            json!({"name": "a", "command": ["/bin/run", "$$(GREETING)", "$(NOPE)"],
            "env": [{"name": "GREETING", "value": "hi"}]}),
        );
        let b = body(&p, &only_command).expect("body");
        assert_eq!(
            b.entrypoint,
            Some(vec![
                "/bin/run".to_owned(),
                "$(GREETING)".to_owned(),
                "$(NOPE)".to_owned()
            ])
        );
        assert_eq!(b.cmd, None);

        let both = container(json!({"name": "a", "command": ["sh"], "args": ["-c", "echo"]}));
        let b = body(&p, &both).expect("body");
        assert_eq!(b.entrypoint, Some(vec!["sh".to_owned()]));
        assert_eq!(b.cmd, Some(vec!["-c".to_owned(), "echo".to_owned()]));

        let empty = container(json!({"name": "a", "command": [], "args": []}));
        let b = body(&p, &empty).expect("body");
        assert_eq!((b.entrypoint, b.cmd), (None, None));
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let look = |n: &str| match n {
            "A" => Some("x".to_owned()),
            "B" => Some("$(A)".to_owned()),
            "" => None,
            _ => None,
        };
        let cases = [
            ("$(A)", "x"),
            ("pre-$(A)-post", "pre-x-post"),
            ("$(A)$(A)", "xx"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$x"),
            ("$$$$", "$$"),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$(B)", "$(A)"),
            ("$(A", "$(A"),
            ("$(A$(A)", "$(A$(A)"),
            ("a$", "a$"),
            ("$b", "$b"),
            ("$é$(A)", "$éx"),
            ("$()", "$()"),
            ("", ""),
            ("no refs", "no refs"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, look), want, "input {input:?}");
        }
    }

    #[test]
    fn env_order_env_from_prefix_and_expansion() {
        let p = base_pod(json!([]));
        let mut src = EnvSources::default();
        src.insert_config_map(
            "cm",
            [
                ("B", "from-cm"),
                ("A", "a-cm"),
                ("bad=key", "x"),
                ("1X", "digit"),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        );
        src.insert_secret("sec", [("TOKEN".to_owned(), "s3cr3t".to_owned())].into());
        let c = container(json!({"name": "a",
        "envFrom": [
            {"configMapRef": {"name": "cm"}},
            {"prefix": "S_", "secretRef": {"name": "sec"}},
            {"configMapRef": {"name": "absent", "optional": true}},
        ],
        "env": [
            {"name": "LATER", "value": "$(FIRST)"},
            {"name": "FIRST", "value": "one"},
            {"name": "B", "value": "env-$(B)-$(S_TOKEN)"},
            {"name": "ESC", "value": "$$(FIRST)"},
            {"name": "REF", "value": "$(FIRST)/$(MESOS_X)/$(NOPE)"},
            {"name": "EMPTY"},
            {"name": "MESOS_X", "value": "mine"},
        ]}));
        let extra = pairs(&[("MESOS_X", "given"), ("MESOS_Y", "y")]);
        let got = environment(&ctx(&p, &extra), &c, &src).expect("env");
        assert_eq!(
            got,
            pairs(&[
                ("1X", "digit"),
                ("A", "a-cm"),
                ("B", "env-from-cm-s3cr3t"),
                ("S_TOKEN", "s3cr3t"),
                ("LATER", "$(FIRST)"),
                ("FIRST", "one"),
                ("ESC", "$(FIRST)"),
                ("REF", "one/given/$(NOPE)"),
                ("EMPTY", ""),
                ("MESOS_X", "mine"),
                ("MESOS_Y", "y"),
            ])
        );
    }

    #[test]
    fn every_field_ref() {
        let mut p = base_pod(json!([]));
        let fields = [
            ("metadata.name", "web-1"),
            ("metadata.namespace", "prod"),
            ("metadata.uid", "u-123"),
            ("metadata.labels['app']", "web"),
            ("metadata.labels['missing']", ""),
            ("metadata.annotations['note']", "say \"hi\"\n"),
            ("spec.nodeName", "node-a"),
            ("spec.serviceAccountName", "robot"),
            ("status.hostIP", "10.1.2.3"),
            ("status.hostIPs", "10.1.2.3"),
            ("status.podIP", "10.1.2.3"),
            ("status.podIPs", "10.1.2.3"),
        ];
        let env: Vec<_> = fields
            .iter()
            .enumerate()
            .map(|(i, (path, _))| json!({"name": format!("V{i}"), "valueFrom": {"fieldRef": {"fieldPath": path}}}))
            .collect();
        let c = container(json!({"name": "a", "env": env}));
        let got = env_of(&p, &c, &EnvSources::default()).expect("env");
        for (i, (path, want)) in fields.iter().enumerate() {
            assert_eq!(got[i].1, *want, "{path}");
        }
        // A bound pod's own nodeName is reported.
        p.spec.as_mut().expect("spec").node_name = Some("bound".to_owned());
        let c = container(json!({"name": "a", "env": [
            {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName", "apiVersion": "v1"}}}]}));
        assert_eq!(
            env_of(&p, &c, &EnvSources::default()).expect("env")[0].1,
            "bound"
        );

        for bad in [
            "metadata.labels",
            "spec.hostname",
            "status.phase",
            "metadata.name['x']",
        ] {
            let c = container(json!({"name": "web", "env": [
                {"name": "OK", "value": "1"},
                {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": bad}}}]}));
            let err = env_of(&p, &c, &EnvSources::default())
                .expect_err(bad)
                .to_string();
            assert!(
                err.starts_with(&format!(
                    "container web: env[1].valueFrom.fieldRef.fieldPath {bad:?}"
                )),
                "{err}"
            );
        }
        let c = container(json!({"name": "web", "env": [
            {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name", "apiVersion": "v2"}}}]}));
        assert!(env_of(&p, &c, &EnvSources::default()).is_err());
    }

    #[test]
    fn volume_field_refs_allow_whole_maps() {
        let p = base_pod(json!([]));
        let sel = |path: &str| ObjectFieldSelector {
            field_path: path.to_owned(),
            api_version: None,
        };
        assert_eq!(
            field_ref_value(&p, None, &sel("metadata.labels"), true).expect("labels"),
            "app=\"web\"\ntier=\"front\""
        );
        assert_eq!(
            field_ref_value(&p, None, &sel("metadata.annotations"), true).expect("annotations"),
            "note=\"say \\\"hi\\\"\\n\""
        );
        assert!(field_ref_value(&p, None, &sel("spec.nodeName"), true).is_err());
        assert!(field_ref_value(&p, None, &sel("status.podIP"), true).is_err());
        assert_eq!(
            crate::goquote::quote("a\u{1}\u{7f}\u{85}é\\"),
            "\"a\\x01\\x7f\\u0085é\\\\\""
        );
    }

    #[test]
    fn resource_field_refs_with_divisors() {
        let p = base_pod(json!([]));
        let c = container(json!({"name": "a",
        "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}, "requests": {"cpu": "100m"}},
        "env": [
            {"name": "L_CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "L_CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
            {"name": "R_CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
            {"name": "L_MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
            {"name": "L_MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "L_MEM_M", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1M"}}},
            {"name": "R_MEM_K", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory", "divisor": "1k"}}},
            {"name": "ZERO_DIV", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "0"}}},
        ]}));
        let got = env_of(&p, &c, &EnvSources::default()).expect("env");
        let want = [
            ("L_CPU", "1"),
            ("L_CPU_M", "250"),
            ("R_CPU_M", "100"),
            ("L_MEM", "67108864"),
            ("L_MEM_MI", "64"),
            // 67108864 / 1000000 rounded up.
            ("L_MEM_M", "68"),
            // The request defaults to the limit.
            ("R_MEM_K", "67109"),
            ("ZERO_DIV", "1"),
        ];
        assert_eq!(got, pairs(&want));

        let bare = container(json!({"name": "a", "env": [
            {"name": "R", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
            {"name": "L", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}}]}));
        let got = env_of(&p, &bare, &EnvSources::default()).expect("env");
        assert_eq!(got[0].1, "0");
        // No limit: the node's capacity.
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        assert_eq!(got[1].1, (cpus * 1000).to_string());

        let other = base_pod(json!([{"name": "side", "resources": {"limits": {"memory": "1Gi"}}}]));
        let c = container(
            json!({"name": "a", "env": [{"name": "M", "valueFrom": {"resourceFieldRef":
            {"resource": "limits.memory", "containerName": "side", "divisor": "1Mi"}}}]}),
        );
        assert_eq!(
            env_of(&other, &c, &EnvSources::default()).expect("env")[0].1,
            "1024"
        );

        for bad in ["limits.nvidia.com/gpu", "requests.ephemeral-storage", "cpu"] {
            let c = container(
                json!({"name": "web", "env": [{"name": "X", "valueFrom": {"resourceFieldRef": {"resource": bad}}}]}),
            );
            let err = env_of(&p, &c, &EnvSources::default())
                .expect_err(bad)
                .to_string();
            assert!(
                err.starts_with(&format!(
                    "container web: env[0].valueFrom.resourceFieldRef.resource {bad:?}"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn config_map_and_secret_keys_honour_optional() {
        let p = base_pod(json!([]));
        let mut src = EnvSources::default();
        src.insert_config_map("cm", [("k".to_owned(), "v".to_owned())].into());
        src.insert_secret("sec", [("pw".to_owned(), "hunter2".to_owned())].into());
        let c = container(json!({"name": "web", "env": [
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
            {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "nope", "optional": true}}},
            {"name": "D", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "x", "optional": true}}},
        ], "envFrom": [{"secretRef": {"name": "gone", "optional": true}}]}));
        assert_eq!(
            env_of(&p, &c, &src).expect("env"),
            pairs(&[("A", "v"), ("B", "hunter2")])
        );

        let cases = [
            (
                json!({"configMapKeyRef": {"name": "cm", "key": "nope"}}),
                "container web: env[0].valueFrom.configMapKeyRef: key \"nope\" is not in ConfigMap \"cm\"",
            ),
            (
                json!({"secretKeyRef": {"name": "sec", "key": "nope", "optional": false}}),
                "container web: env[0].valueFrom.secretKeyRef: key \"nope\" is not in Secret \"sec\"",
            ),
            (
                json!({"secretKeyRef": {"name": "gone", "key": "x"}}),
                "container web: env[0].valueFrom.secretKeyRef: Secret \"gone\" was not found",
            ),
            (
                json!({"configMapKeyRef": {"name": "gone", "key": "x"}}),
                "container web: env[0].valueFrom.configMapKeyRef: ConfigMap \"gone\" was not found",
            ),
        ];
        for (vf, want) in cases {
            let c = container(json!({"name": "web", "env": [{"name": "X", "valueFrom": vf}]}));
            let err = env_of(&p, &c, &src).expect_err(want).to_string();
            assert!(err.starts_with(want), "{err}");
        }
        let c = container(json!({"name": "web", "envFrom": [{"configMapRef": {"name": "gone"}}]}));
        let err = env_of(&p, &c, &src).expect_err("envFrom").to_string();
        assert!(
            err.starts_with(
                "container web: envFrom[0].configMapRef: ConfigMap \"gone\" was not found"
            ),
            "{err}"
        );
    }

    #[test]
    fn privileged_needs_allow_privileged() {
        let p = base_pod(json!([]));
        let c = container(json!({"name": "web", "securityContext": {"privileged": true}}));
        let err = body(&p, &c).expect_err("refused").to_string();
        assert_eq!(
            err,
            "container web: securityContext.privileged is not allowed on this node (start km executor with --allow-privileged)"
        );
        let mut cx = ctx(&p, EXTRA);
        cx.allow_privileged = true;
        let b = container_body(
            &cx,
            &c,
            ContainerKind::App,
            0,
            "i",
            &VolumePaths::default(),
            &EnvSources::default(),
            "img",
        )
        .expect("allowed");
        assert_eq!(b.host_config.expect("hc").privileged, Some(true));
    }

    #[test]
    fn security_context_fields() {
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {
            "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "supplementalGroups": [4000], "fsGroup": 2000},
            "containers": []}}));
        let c = container(json!({"name": "a", "securityContext": {
            "runAsUser": 1001, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
            "seccompProfile": {"type": "Unconfined"}}}));
        let b = body(&p, &c).expect("body");
        assert_eq!(b.user.as_deref(), Some("1001:3000"));
        let hc = b.host_config.expect("hc");
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.cap_add, Some(vec!["NET_ADMIN".to_owned()]));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(
            hc.security_opt,
            Some(vec![
                "no-new-privileges".to_owned(),
                "seccomp=unconfined".to_owned()
            ])
        );
        assert_eq!(
            hc.group_add,
            Some(vec!["4000".to_owned(), "2000".to_owned()])
        );

        let plain = base_pod(json!([]));
        let b = body(&plain, &container(json!({"name": "a"}))).expect("body");
        assert_eq!(b.user, None);
        let hc = b.host_config.expect("hc");
        assert_eq!(
            (hc.privileged, hc.readonly_rootfs, hc.security_opt),
            (None, None, None)
        );

        let group_only = container(json!({"name": "web", "securityContext": {"runAsGroup": 5}}));
        let err = body(&plain, &group_only)
            .expect_err("group only")
            .to_string();
        assert!(
            err.starts_with("container web: securityContext.runAsGroup:"),
            "{err}"
        );
        let root = container(
            json!({"name": "web", "securityContext": {"runAsUser": 0, "runAsNonRoot": true}}),
        );
        assert!(body(&plain, &root).is_err());
    }

    #[test]
    fn mounts_from_volume_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, data.join("escape")).expect("symlink");
        let mut vols = VolumePaths::default();
        vols.insert("data", data.clone(), false);
        vols.insert("cfg", PathBuf::from("/host/cfg"), true);
        let p = base_pod(json!([]));
        let mk = |mounts: serde_json::Value| {
            let c = container(json!({"name": "web", "volumeMounts": mounts,
                "env": [{"name": "SUB", "value": "by-env"}]}));
            container_body(
                &ctx(&p, EXTRA),
                &c,
                ContainerKind::App,
                0,
                "i",
                &vols,
                &EnvSources::default(),
                "img",
            )
        };
        let b = mk(json!([
            {"name": "data", "mountPath": "/data"},
            {"name": "cfg", "mountPath": "/etc/cfg"},
            {"name": "data", "mountPath": "/ro", "readOnly": true, "subPath": "a/b"},
            {"name": "data", "mountPath": "/expr", "subPathExpr": "x-$(SUB)"},
            {"name": "data", "mountPath": "/h2c", "mountPropagation": "HostToContainer"},
        ]))
        .expect("body");
        let mounts = b.host_config.expect("hc").mounts.expect("mounts");
        let real = std::fs::canonicalize(&data).expect("canonical");
        let view: Vec<_> = mounts
            .iter()
            .map(|m| {
                (
                    m.target.clone().unwrap_or_default(),
                    m.source.clone().unwrap_or_default(),
                    m.read_only.unwrap_or(false),
                    m.typ,
                )
            })
            .collect();
        assert_eq!(
            view[0],
            (
                "/data".to_owned(),
                data.display().to_string(),
                false,
                Some(MountType::BIND)
            )
        );
        assert_eq!(
            view[1],
            (
                "/etc/cfg".to_owned(),
                "/host/cfg".to_owned(),
                true,
                Some(MountType::BIND)
            )
        );
        assert_eq!(
            view[2],
            (
                "/ro".to_owned(),
                real.join("a/b").display().to_string(),
                true,
                Some(MountType::BIND)
            )
        );
        assert!(real.join("a/b").is_dir(), "subPath directory is created");
        assert_eq!(view[3].1, real.join("x-by-env").display().to_string());
        assert_eq!(
            mounts[4].bind_options.as_ref().and_then(|o| o.propagation),
            Some(MountBindOptionsPropagationEnum::RSLAVE)
        );

        for (sub, why) in [
            ("../x", "'..'"),
            ("a/../../x", "'..'"),
            ("/etc", "relative"),
            ("escape", "outside"),
        ] {
            let err = mk(json!([{"name": "data", "mountPath": "/d", "subPath": sub}]))
                .expect_err(sub)
                .to_string();
            assert!(
                err.starts_with(&format!("container web: volumeMounts[0].subPath {sub:?}:"))
                    && err.contains(why),
                "{err}"
            );
        }
        let err = mk(json!([{"name": "data", "mountPath": "/d", "subPathExpr": "$(SUB)/../.."}]))
            .expect_err("expr")
            .to_string();
        assert!(
            err.starts_with("container web: volumeMounts[0].subPathExpr \"by-env/../..\""),
            "{err}"
        );
        let err = mk(json!([{"name": "nope", "mountPath": "/d"}]))
            .expect_err("unknown")
            .to_string();
        assert!(
            err.starts_with("container web: volumeMounts[0].name: volume \"nope\""),
            "{err}"
        );
        let err =
            mk(json!([{"name": "data", "mountPath": "/d", "mountPropagation": "Bidirectional"}]))
                .expect_err("bidi")
                .to_string();
        assert!(err.contains("privileged"), "{err}");
    }

    fn res(v: serde_json::Value) -> ContainerResources {
        resources(&container(json!({"name": "a", "resources": v})))
    }

    #[test]
    fn resource_arithmetic() {
        let none = res(json!({}));
        assert_eq!(
            none,
            ContainerResources {
                cpu_shares: 2,
                cpu_quota: None,
                cpu_period: None,
                memory_bytes: None
            }
        );
        let r =
            res(json!({"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "128Mi"}}));
        assert_eq!(
            r,
            ContainerResources {
                cpu_shares: 256,
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory_bytes: Some(128 << 20)
            }
        );
        // Only a limit: the request defaults to it.
        let r = res(json!({"limits": {"cpu": "2"}}));
        assert_eq!((r.cpu_shares, r.cpu_quota), (2048, Some(200_000)));
        // Only a request: no quota.
        let r = res(json!({"requests": {"cpu": "1.5", "memory": "1Gi"}}));
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.cpu_period, r.memory_bytes),
            (1536, None, None, None)
        );
        // Minimums.
        let r = res(json!({"limits": {"cpu": "1m"}}));
        assert_eq!((r.cpu_shares, r.cpu_quota), (2, Some(1000)));
        let r = res(json!({"limits": {"cpu": "1n"}}));
        assert_eq!((r.cpu_shares, r.cpu_quota), (2, Some(1000)));
        let r = res(json!({"limits": {"cpu": "0"}}));
        assert_eq!((r.cpu_shares, r.cpu_quota), (2, None));
        // Maximum shares.
        assert_eq!(
            res(json!({"requests": {"cpu": "1000"}})).cpu_shares,
            262_144
        );
        // Docker's API applies the kubelet's rounding: milliCPU and bytes round up.
        assert_eq!(res(json!({"requests": {"cpu": "0.0015"}})).cpu_shares, 2);
        assert_eq!(res(json!({"requests": {"cpu": "10m"}})).cpu_shares, 10);
    }

    #[test]
    fn quantity_forms_for_memory() {
        let mem = |q: &str| res(json!({"limits": {"memory": q}})).memory_bytes;
        assert_eq!(mem("1"), Some(1));
        assert_eq!(mem("1k"), Some(1000));
        assert_eq!(mem("1Ki"), Some(1024));
        assert_eq!(mem("1M"), Some(1_000_000));
        assert_eq!(mem("1Mi"), Some(1 << 20));
        assert_eq!(mem("1G"), Some(1_000_000_000));
        assert_eq!(mem("1Gi"), Some(1 << 30));
        assert_eq!(mem("1.5Gi"), Some(3 << 29));
        assert_eq!(mem("129e6"), Some(129_000_000));
        assert_eq!(mem("128974848e0"), Some(128_974_848));
        assert_eq!(mem("1E3"), Some(1000));
        assert_eq!(mem("12e-1"), Some(2));
        assert_eq!(mem("500m"), Some(1));
        assert_eq!(mem("+2Ki"), Some(2048));
        assert_eq!(mem("1Ti"), Some(1 << 40));
        assert_eq!(mem("0"), None);
        // Invalid quantities (an API server rejects them) count as absent.
        assert_eq!(mem("64MB"), None);
        assert_eq!(mem("1 Gi"), None);
        let cpu = |q: &str| res(json!({"limits": {"cpu": q}})).cpu_quota;
        assert_eq!(cpu("0.1"), Some(10_000));
        assert_eq!(cpu("100m"), Some(10_000));
        assert_eq!(cpu("1e-1"), Some(10_000));
        assert_eq!(cpu("100000u"), Some(10_000));
    }

    /// Runs an infra container (busybox `sleep` standing in for the pause
    /// image) and an httpd container joined to it, and fetches a file from
    /// the mapped host port.
    #[tokio::test]
    async fn two_containers_on_docker_answer_on_the_host_port() {
        use bollard::query_parameters::{
            CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
        };
        let docker = bollard::Docker::connect_with_local_defaults()
            .expect("docker client")
            .negotiate_version()
            .await
            .expect("docker version");
        let host_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let www = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(
            www.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        std::fs::write(www.path().join("index.html"), "hello from km\n").expect("write");
        let uid = uuid::Uuid::new_v4().simple().to_string();
        let p = pod(json!({
            "metadata": {"name": "spec-test", "namespace": "default", "uid": uid},
            "spec": {"containers": [
                {"name": "web", "image": "km-test/busybox:latest",
                 "command": ["httpd"], "args": ["-f", "-p", "$(PORT)", "-h", "/www"],
                 "env": [{"name": "PORT", "value": "8080"}],
                 "ports": [{"containerPort": 8080, "hostPort": host_port}],
                 "volumeMounts": [{"name": "www", "mountPath": "/www", "readOnly": true}],
                 "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}}},
                {"name": "idle", "image": "km-test/busybox:latest", "command": ["sleep", "3600"]}
            ]}
        }));
        let mut cx = ctx(&p, EXTRA);
        cx.cgroup_parent = None;
        let mut vols = VolumePaths::default();
        vols.insert("www", www.path().to_path_buf(), false);
        let mut infra = infra_body(&cx, "km-test/busybox:latest");
        infra.cmd = Some(vec!["sleep".to_owned(), "3600".to_owned()]);

        let mut created: Vec<String> = Vec::new();
        let outcome: Result<String, String> = async {
            let create = |name: String, body: ContainerCreateBody| {
                let docker = docker.clone();
                async move {
                    docker
                        .create_container(
                            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                            body,
                        )
                        .await
                        .map(|r| r.id)
                        .map_err(|e| format!("create {name}: {e}"))
                }
            };
            let infra_id = create(infra_name(&p), infra).await?;
            created.push(infra_id.clone());
            docker
                .start_container(&infra_id, None)
                .await
                .map_err(|e| format!("start infra: {e}"))?;
            let spec = p.spec.as_ref().ok_or("spec")?;
            for c in &spec.containers {
                let b = container_body(
                    &cx,
                    c,
                    ContainerKind::App,
                    0,
                    &infra_id,
                    &vols,
                    &EnvSources::default(),
                    "km-test/busybox:latest",
                )
                .map_err(|e| e.to_string())?;
                let id = create(container_name(&p, &c.name, 0), b).await?;
                created.push(id.clone());
                docker
                    .start_container(&id, None)
                    .await
                    .map_err(|e| format!("start {}: {e}", c.name))?;
            }
            // The app container got the limits.
            let web = docker
                .inspect_container(&created[1], None)
                .await
                .map_err(|e| e.to_string())?;
            let hc = web.host_config.ok_or("no host config")?;
            if hc.memory != Some(32 << 20) || hc.cpu_quota != Some(10_000) {
                return Err(format!(
                    "limits not applied: {:?} {:?}",
                    hc.memory, hc.cpu_quota
                ));
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                match fetch(host_port).await {
                    Ok(body) => return Ok(body),
                    Err(e) if std::time::Instant::now() > deadline => {
                        return Err(format!("host port {host_port} never answered: {e}"));
                    }
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
                }
            }
        }
        .await;
        for id in created.iter().rev() {
            let _ = docker
                .remove_container(
                    id,
                    Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                )
                .await;
        }
        let body = outcome.expect("pod on docker");
        assert!(
            body.starts_with("HTTP/1.") && body.contains("hello from km"),
            "{body}"
        );
    }

    async fn fetch(port: u16) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await?;
        let mut out = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            s.read_to_string(&mut out),
        )
        .await
        .map_err(|_| std::io::Error::other("read timed out"))??;
        if out.is_empty() {
            return Err(std::io::Error::other("empty answer"));
        }
        Ok(out)
    }
}
