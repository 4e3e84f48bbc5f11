//! The executor keeps its Node, as a kubelet does.
//!
//! * [`register`] creates the Node of the agent (or updates it): the
//!   kubelet's well-known labels, one `k8s.mesosphere.io/attribute-<name>`
//!   label per Mesos agent attribute (the same labels the scheduler matches
//!   `nodeSelector` against, from [`crate::offers::labels`]), the
//!   `k8s.mesosphere.io/executorId` and `executorResources` annotations, and
//!   then the status: capacity and allocatable from the agent's and the
//!   executor's Mesos resources ([`capacity`]), addresses, the kubelet
//!   endpoint (container logs, see [`super::kubelet_api`]), system info read
//!   from `/proc` and `/etc`, and the kubelet's four conditions.
//! * [`heartbeat`] renews the Node's Lease in `kube-node-lease` every 10 s
//!   (the node lifecycle controller's liveness signal) and re-posts the
//!   status at least every minute, at once when something else turned the
//!   node's Ready condition away from True, and registers the Node again if
//!   it was deleted.
//! * [`mark_not_ready`] tells the cluster the executor stopped, as the node
//!   lifecycle controller would once the Lease expired, only sooner.
//!
//! Capacity is what Mesos gave the agent, over all roles; allocatable
//! subtracts what the executor itself holds. km's scheduler places pods by
//! offers, not by these numbers; they are for people and tools that read
//! Nodes.
//!
//! Writes are read-modify-write with the object's resourceVersion; a
//! conflict re-reads and tries again a few times.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, GetParams, PostParams};
use tokio_util::sync::CancellationToken;

use crate::mesos::proto::v1;
use crate::podtask::annotations;

/// Namespace of the nodes' Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// `spec.leaseDurationSeconds` of the Lease (the kubelet's default).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// Reason of the conditions [`mark_not_ready`] writes.
pub const REASON_UNKNOWN: &str = "NodeStatusUnknown";

/// How many times a write that conflicts is tried.
const ATTEMPTS: u32 = 5;

/// What the executor knows about its agent.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The agent's hostname = node name.
    pub name: String,
    /// `InternalIP` address.
    pub host_ip: String,
    /// `AgentInfo.resources` (all roles).
    pub agent_resources: Vec<v1::Resource>,
    /// `ExecutorInfo.resources`.
    pub executor_resources: Vec<v1::Resource>,
    /// `AgentInfo.attributes`.
    pub attributes: Vec<v1::Attribute>,
    /// `status.daemonEndpoints.kubeletEndpoint.Port`.
    pub kubelet_port: u16,
    /// Annotation `k8s.mesosphere.io/executorId`.
    pub executor_id: String,
    /// e.g. `docker://20.10.24`.
    pub runtime_version: String,
}

/// Failures to write the Node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The API server refused or could not be reached.
    #[error(
        "{action} Node {name}: {source} (check the API server address and the executor's credentials)"
    )]
    Api {
        /// What was being done, e.g. "creating".
        action: &'static str,
        /// The node.
        name: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// Every attempt met a newer version of the object.
    #[error(
        "updating Node {name}: it changed under every one of {attempts} attempts (another writer is busy with it); try again later"
    )]
    Conflict {
        /// The node.
        name: String,
        /// How many writes were tried.
        attempts: u32,
    },
}

fn api_error(action: &'static str, name: &str) -> impl FnOnce(kube::Error) -> NodeError + use<> {
    let name = name.to_string();
    move |source| NodeError::Api {
        action,
        name,
        source,
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// capacity and allocatable of the Node (see [`crate::resources::node::capacity`]).
fn capacity(cfg: &NodeConfig) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    crate::resources::node::capacity(&cfg.agent_resources, &cfg.executor_resources)
}

/// Go's name of this machine's architecture (`kubernetes.io/arch`).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The labels km owns on the Node: hostname, os, arch and one per attribute.
fn wanted_labels(cfg: &NodeConfig) -> BTreeMap<String, String> {
    let offer = v1::Offer {
        hostname: cfg.name.clone(),
        attributes: cfg.attributes.clone(),
        ..Default::default()
    };
    let mut labels = crate::offers::labels(&offer);
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), go_arch().into());
    labels
}

/// Puts km's labels and annotations into `meta`; true when something changed.
fn apply_metadata(meta: &mut ObjectMeta, cfg: &NodeConfig) -> bool {
    let wanted = wanted_labels(cfg);
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    let before = labels.clone();
    labels.retain(|k, _| {
        !k.starts_with(annotations::ATTRIBUTE_LABEL_PREFIX) || wanted.contains_key(k)
    });
    labels.extend(wanted);
    let mut changed = *labels != before;
    let notes = meta.annotations.get_or_insert_with(BTreeMap::new);
    let mut put = |k: &str, v: String| {
        if notes.get(k) != Some(&v) {
            notes.insert(k.to_string(), v);
            changed = true;
        }
    };
    put(annotations::EXECUTOR_ID, cfg.executor_id.clone());
    if !cfg.executor_resources.is_empty() {
        put(
            annotations::EXECUTOR_RESOURCES,
            crate::podtask::launch::encode_resources(&cfg.executor_resources),
        );
    }
    changed
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `PRETTY_NAME` (else `NAME`) of an os-release file's text.
fn os_image(os_release: &str) -> Option<String> {
    let field = |key: &str| {
        os_release.lines().find_map(|l| {
            let v = l.trim().strip_prefix(key)?.strip_prefix('=')?;
            let v = v.trim().trim_matches('"').trim_matches('\'');
            (!v.is_empty()).then(|| v.to_string())
        })
    };
    field("PRETTY_NAME").or_else(|| field("NAME"))
}

fn system_info(cfg: &NodeConfig) -> NodeSystemInfo {
    let os_release = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    NodeSystemInfo {
        architecture: go_arch().to_string(),
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
        container_runtime_version: cfg.runtime_version.clone(),
        kernel_version: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
        kube_proxy_version: String::new(),
        kubelet_version: format!(
            "v1.{}.0-km-{}",
            crate::apiserver::discovery::KUBE_MINOR,
            env!("CARGO_PKG_VERSION")
        ),
        machine_id: read_trimmed("/etc/machine-id")
            .or_else(|| read_trimmed("/var/lib/dbus/machine-id"))
            .unwrap_or_default(),
        operating_system: std::env::consts::OS.to_string(),
        os_image: os_image(&os_release).unwrap_or_else(|| "Linux".to_string()),
        swap: None,
        system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid")
            .map(|s| s.to_ascii_lowercase())
            .unwrap_or_default(),
    }
}

/// The four conditions a kubelet posts, as (type, status, reason, message).
const HEALTHY: [(&str, &str, &str, &str); 4] = [
    (
        "MemoryPressure",
        "False",
        "KubeletHasSufficientMemory",
        "kubelet has sufficient memory available",
    ),
    (
        "DiskPressure",
        "False",
        "KubeletHasNoDiskPressure",
        "kubelet has no disk pressure",
    ),
    (
        "PIDPressure",
        "False",
        "KubeletHasSufficientPID",
        "kubelet has sufficient PID available",
    ),
    (
        "Ready",
        "True",
        "KubeletReady",
        "km executor is posting ready status",
    ),
];

/// Sets one condition: the heartbeat is `now`, the transition time is kept
/// unless the status changes. Other conditions are left as they are.
fn set_condition(
    conditions: &mut Vec<NodeCondition>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &Time,
) {
    let c = match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(c) => c,
        None => {
            conditions.push(NodeCondition {
                type_: kind.to_string(),
                ..Default::default()
            });
            let last = conditions.len() - 1;
            &mut conditions[last]
        }
    };
    if c.status != status || c.last_transition_time.is_none() {
        c.last_transition_time = Some(now.clone());
    }
    c.status = status.to_string();
    c.reason = Some(reason.to_string());
    c.message = Some(message.to_string());
    c.last_heartbeat_time = Some(now.clone());
}

/// The status the executor posts, on top of what the Node had.
fn healthy_status(cfg: &NodeConfig, old: Option<NodeStatus>, now: Timestamp) -> NodeStatus {
    let mut s = old.unwrap_or_default();
    let (capacity, allocatable) = capacity(cfg);
    s.capacity = Some(capacity);
    s.allocatable = Some(allocatable);
    let mut addresses = Vec::new();
    if !cfg.host_ip.is_empty() {
        addresses.push(NodeAddress {
            type_: "InternalIP".into(),
            address: cfg.host_ip.clone(),
        });
    }
    addresses.push(NodeAddress {
        type_: "Hostname".into(),
        address: cfg.name.clone(),
    });
    s.addresses = Some(addresses);
    s.daemon_endpoints = Some(NodeDaemonEndpoints {
        kubelet_endpoint: Some(DaemonEndpoint {
            port: i32::from(cfg.kubelet_port),
        }),
    });
    s.node_info = Some(system_info(cfg));
    let now = Time(now);
    let conditions = s.conditions.get_or_insert_with(Vec::new);
    for (kind, status, reason, message) in HEALTHY {
        set_condition(conditions, kind, status, reason, message, &now);
    }
    s
}

fn ready_is_true(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Read-modify-write of the status subresource; `edit` returns false when
/// there is nothing to write. `None` when the Node does not exist.
async fn update_status(
    nodes: &Api<Node>,
    name: &str,
    mut edit: impl FnMut(Option<NodeStatus>) -> Option<NodeStatus>,
) -> Result<Option<Node>, NodeError> {
    for _ in 0..ATTEMPTS {
        let Some(mut node) = nodes
            .get_opt(name)
            .await
            .map_err(api_error("reading", name))?
        else {
            return Ok(None);
        };
        let Some(status) = edit(node.status.take()) else {
            return Ok(Some(node));
        };
        node.status = Some(status);
        match nodes
            .replace_status(name, &PostParams::default(), &node)
            .await
        {
            Ok(n) => return Ok(Some(n)),
            Err(e) if is_status(&e, 409) => continue,
            Err(e) => return Err(api_error("updating the status of", name)(e)),
        }
    }
    Err(NodeError::Conflict {
        name: name.to_string(),
        attempts: ATTEMPTS,
    })
}

/// Creates the Node or updates it: labels `kubernetes.io/hostname`,
/// `kubernetes.io/os=linux`, `kubernetes.io/arch`, and
/// `k8s.mesosphere.io/attribute-<name>` per agent attribute (other labels
/// kept, stale attribute labels removed); annotation
/// `k8s.mesosphere.io/executorId`; then the status subresource: capacity,
/// allocatable, addresses, daemonEndpoints, nodeInfo and the conditions
/// (Ready=True, no pressure). Conflicts are retried a few times.
pub async fn register(client: &kube::Client, cfg: &NodeConfig) -> Result<(), NodeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let name = cfg.name.as_str();
    let mut done = false;
    for _ in 0..ATTEMPTS {
        match nodes
            .get_opt(name)
            .await
            .map_err(api_error("reading", name))?
        {
            None => {
                let mut node = Node {
                    metadata: ObjectMeta {
                        name: Some(cfg.name.clone()),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                apply_metadata(&mut node.metadata, cfg);
                match nodes.create(&PostParams::default(), &node).await {
                    Ok(_) => {
                        tracing::info!(node = name, "created the Node");
                        done = true;
                        break;
                    }
                    Err(e) if is_status(&e, 409) => continue,
                    Err(e) => return Err(api_error("creating", name)(e)),
                }
            }
            Some(mut node) => {
                if !apply_metadata(&mut node.metadata, cfg) {
                    done = true;
                    break;
                }
                match nodes.replace(name, &PostParams::default(), &node).await {
                    Ok(_) => {
                        tracing::info!(node = name, "updated the Node's labels and annotations");
                        done = true;
                        break;
                    }
                    Err(e) if is_status(&e, 409) => continue,
                    Err(e) => return Err(api_error("updating", name)(e)),
                }
            }
        }
    }
    if !done {
        return Err(NodeError::Conflict {
            name: name.to_string(),
            attempts: ATTEMPTS,
        });
    }
    post_status(&nodes, cfg).await.map(|_| ())
}

/// Posts the healthy status; `None` when the Node is gone.
async fn post_status(nodes: &Api<Node>, cfg: &NodeConfig) -> Result<Option<Node>, NodeError> {
    update_status(nodes, &cfg.name, |old| {
        Some(healthy_status(cfg, old, Timestamp::now()))
    })
    .await
}

/// Renews (or creates) the Lease; `cache` holds the last Lease written.
async fn renew_lease(
    leases: &Api<Lease>,
    cfg: &NodeConfig,
    owner: Option<&Node>,
    cache: &mut Option<Lease>,
) -> Result<(), kube::Error> {
    let owner_ref = owner.and_then(|n| {
        Some(OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: cfg.name.clone(),
            uid: n.metadata.uid.clone()?,
            ..Default::default()
        })
    });
    let refresh = |lease: &mut Lease| {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(cfg.name.clone());
        spec.lease_duration_seconds = Some(LEASE_DURATION_SECONDS);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        if let Some(o) = &owner_ref {
            let refs = lease.metadata.owner_references.get_or_insert_with(Vec::new);
            // A Node recreated under the same name has a new uid.
            refs.retain(|r| !(r.kind == "Node" && r.api_version == "v1"));
            refs.push(o.clone());
        }
    };
    let name = cfg.name.as_str();
    let pp = PostParams::default();
    if let Some(mut lease) = cache.take() {
        refresh(&mut lease);
        match leases.replace(name, &pp, &lease).await {
            Ok(l) => {
                *cache = Some(l);
                return Ok(());
            }
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => {}
            Err(e) => return Err(e),
        }
    }
    match leases.get_opt(name).await? {
        Some(mut lease) => {
            refresh(&mut lease);
            *cache = Some(leases.replace(name, &pp, &lease).await?);
        }
        None => {
            let mut lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    ..Default::default()
                },
                spec: None,
            };
            refresh(&mut lease);
            *cache = Some(leases.create(&pp, &lease).await?);
            tracing::info!(node = name, "created the node Lease");
        }
    }
    Ok(())
}

/// Heartbeats until `stop`: renews the Lease `kube-node-lease/<node>`
/// (holderIdentity = node name, leaseDurationSeconds 40, renewTime now,
/// ownerReference to the Node) every `interval` (kubelet: 10 s), creating it
/// if missing; refreshes the Ready condition's lastHeartbeatTime every
/// `status_interval` (kubelet: 1 min at most, or at once if the node lost
/// its Ready=True). Errors are logged and retried, never fatal.
pub async fn heartbeat(
    client: kube::Client,
    cfg: NodeConfig,
    interval: Duration,
    status_interval: Duration,
    stop: CancellationToken,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let name = cfg.name.as_str();
    let mut lease: Option<Lease> = None;
    let mut posted = Instant::now();
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let node = match nodes.get_with(name, &GetParams::any()).await {
            Ok(node) => {
                let stale = posted.elapsed() >= status_interval;
                if stale || !ready_is_true(&node) {
                    match post_status(&nodes, &cfg).await {
                        Ok(Some(n)) => {
                            posted = Instant::now();
                            Some(n)
                        }
                        Ok(None) => None,
                        Err(e) => {
                            tracing::warn!(node = name, error = %e, "cannot post the node status; trying again at the next heartbeat");
                            Some(node)
                        }
                    }
                } else {
                    Some(node)
                }
            }
            Err(e) if is_status(&e, 404) => {
                tracing::warn!(node = name, "the Node is gone; registering it again");
                match register(&client, &cfg).await {
                    Ok(()) => {
                        posted = Instant::now();
                        nodes.get_opt(name).await.ok().flatten()
                    }
                    Err(e) => {
                        tracing::warn!(node = name, error = %e, "cannot register the Node; trying again at the next heartbeat");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::warn!(node = name, error = %e, "cannot read the Node; trying again at the next heartbeat");
                None
            }
        };
        if let Err(e) = renew_lease(&leases, &cfg, node.as_ref(), &mut lease).await {
            tracing::warn!(node = name, error = %e, "cannot renew the node Lease; trying again at the next heartbeat");
        }
    }
}

/// On executor exit: Ready=Unknown reason NodeStatusUnknown with `message`
/// (say that km executor stopped); the pressure conditions become Unknown
/// too, as the node lifecycle controller does. A missing Node is fine.
pub async fn mark_not_ready(
    client: &kube::Client,
    name: &str,
    message: &str,
) -> Result<(), NodeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    update_status(&nodes, name, |old| {
        let mut s = old.unwrap_or_default();
        let now = Time(Timestamp::now());
        let conditions = s.conditions.get_or_insert_with(Vec::new);
        for (kind, ..) in HEALTHY {
            set_condition(conditions, kind, "Unknown", REASON_UNKNOWN, message, &now);
        }
        Some(s)
    })
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(deprecated)] // the legacy `role` field is the simplest way to reserve
    fn scalar(name: &str, role: Option<&str>, value: f64) -> v1::Resource {
        v1::Resource {
            name: name.into(),
            r#type: v1::value::Type::Scalar as i32,
            scalar: Some(v1::value::Scalar { value }),
            role: role.map(str::to_string),
            ..Default::default()
        }
    }

    fn text_attr(name: &str, value: &str) -> v1::Attribute {
        v1::Attribute {
            name: name.into(),
            r#type: v1::value::Type::Text as i32,
            text: Some(v1::value::Text {
                value: value.into(),
            }),
            ..Default::default()
        }
    }

    fn config(name: &str) -> NodeConfig {
        NodeConfig {
            name: name.into(),
            host_ip: "10.1.2.3".into(),
            agent_resources: vec![
                scalar("cpus", None, 3.0),
                scalar("cpus", Some("web"), 1.0),
                scalar("mem", None, 1024.0),
                scalar("mem", Some("web"), 1024.0),
                scalar("disk", None, 10240.0),
            ],
            executor_resources: vec![scalar("cpus", None, 0.25), scalar("mem", None, 64.0)],
            attributes: vec![text_attr("rack", "a"), text_attr("zone", "z1")],
            kubelet_port: 10250,
            executor_id: "km-exec-1".into(),
            runtime_version: "docker://20.10.24".into(),
        }
    }

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    #[test]
    fn capacity_sums_roles_and_subtracts_the_executor() {
        let (cap, alloc) = capacity(&config("n"));
        assert_eq!(cap["cpu"], q("4"));
        assert_eq!(cap["memory"], q("2Gi"));
        assert_eq!(cap["pods"], q("110"));
        assert_eq!(cap["ephemeral-storage"], q("10Gi"));
        assert_eq!(alloc["cpu"], q("3750m"));
        assert_eq!(alloc["memory"], q("1984Mi"));
        assert_eq!(alloc["pods"], q("110"));
        assert_eq!(alloc["ephemeral-storage"], q("10Gi"));

        let mut small = config("n");
        small.agent_resources = vec![scalar("cpus", None, 0.1), scalar("mem", None, 0.5)];
        small.executor_resources = vec![scalar("cpus", None, 1.0), scalar("mem", None, 1000.0)];
        let (cap, alloc) = capacity(&small);
        assert_eq!(cap["cpu"], q("100m"));
        assert_eq!(cap["memory"], q("512Ki"));
        assert!(!cap.contains_key("ephemeral-storage"));
        assert_eq!(alloc["cpu"], q("0"), "never below zero");
        assert_eq!(alloc["memory"], q("0"));
    }

    #[test]
    fn os_release_gives_the_pretty_name() {
        assert_eq!(
            os_image("NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n")
                .as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(os_image("NAME=Alpine\n").as_deref(), Some("Alpine"));
        assert_eq!(os_image(""), None);
    }

    struct Server {
        client: kube::Client,
        stop: CancellationToken,
        _dir: tempfile::TempDir,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: crate::apiserver::Args,
    }

    async fn server() -> Server {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let cli = Cli::try_parse_from([
            "km",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--no-tls",
            "--insecure-port",
            "0",
        ])
        .unwrap();
        let stop = CancellationToken::new();
        let running = crate::apiserver::start(cli.args, stop.clone())
            .await
            .unwrap();
        let url = format!("http://{}", running.insecure_addr.unwrap());
        tokio::spawn(running.wait());
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        Server {
            client,
            stop,
            _dir: dir,
        }
    }

    fn condition<'a>(node: &'a Node, kind: &str) -> &'a NodeCondition {
        node.status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap_or_else(|| panic!("condition {kind}"))
    }

    #[tokio::test]
    async fn register_creates_then_updates() {
        let s = server().await;
        let nodes: Api<Node> = Api::all(s.client.clone());
        let cfg = config("node-a");
        register(&s.client, &cfg).await.unwrap();

        let n = nodes.get("node-a").await.unwrap();
        let labels = n.metadata.labels.clone().unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "node-a");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], go_arch());
        assert_eq!(labels["k8s.mesosphere.io/attribute-rack"], "a");
        assert_eq!(labels["k8s.mesosphere.io/attribute-zone"], "z1");
        let notes = n.metadata.annotations.clone().unwrap();
        assert_eq!(notes["k8s.mesosphere.io/executorId"], "km-exec-1");
        assert!(notes.contains_key("k8s.mesosphere.io/executorResources"));

        let st = n.status.clone().unwrap();
        assert_eq!(st.capacity.as_ref().unwrap()["cpu"], q("4"));
        assert_eq!(st.allocatable.as_ref().unwrap()["memory"], q("1984Mi"));
        let addrs: Vec<(String, String)> = st
            .addresses
            .unwrap()
            .into_iter()
            .map(|a| (a.type_, a.address))
            .collect();
        assert_eq!(
            addrs,
            [
                ("InternalIP".to_string(), "10.1.2.3".to_string()),
                ("Hostname".to_string(), "node-a".to_string())
            ]
        );
        assert_eq!(
            st.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port,
            10250
        );
        let info = st.node_info.unwrap();
        assert_eq!(info.container_runtime_version, "docker://20.10.24");
        assert_eq!(info.operating_system, "linux");
        assert!(
            info.kubelet_version.starts_with("v1.35.0-km-"),
            "{}",
            info.kubelet_version
        );
        assert!(!info.kernel_version.is_empty());
        assert!(!info.boot_id.is_empty());
        let ready = condition(&n, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("True", Some("KubeletReady"))
        );
        let first_transition = ready.last_transition_time.clone();
        for (kind, reason) in [
            ("MemoryPressure", "KubeletHasSufficientMemory"),
            ("DiskPressure", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "KubeletHasSufficientPID"),
        ] {
            let c = condition(&n, kind);
            assert_eq!(
                (c.status.as_str(), c.reason.as_deref()),
                ("False", Some(reason))
            );
        }

        // Someone adds a label; the agent's attributes change.
        let mut edited = n.clone();
        edited
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "blue".into());
        nodes
            .replace("node-a", &PostParams::default(), &edited)
            .await
            .unwrap();
        let mut cfg2 = cfg.clone();
        cfg2.attributes = vec![text_attr("rack", "b")];
        cfg2.executor_id = "km-exec-2".into();
        register(&s.client, &cfg2).await.unwrap();
        let n = nodes.get("node-a").await.unwrap();
        let labels = n.metadata.labels.clone().unwrap();
        assert_eq!(labels["team"], "blue", "other labels are kept");
        assert_eq!(labels["k8s.mesosphere.io/attribute-rack"], "b");
        assert!(
            !labels.contains_key("k8s.mesosphere.io/attribute-zone"),
            "stale attribute labels are removed: {labels:?}"
        );
        assert_eq!(
            n.metadata.annotations.as_ref().unwrap()["k8s.mesosphere.io/executorId"],
            "km-exec-2"
        );
        assert_eq!(
            condition(&n, "Ready").last_transition_time,
            first_transition,
            "staying Ready is no transition"
        );

        mark_not_ready(&s.client, "node-a", "km executor stopped")
            .await
            .unwrap();
        let n = nodes.get("node-a").await.unwrap();
        let ready = condition(&n, "Ready");
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(ready.message.as_deref(), Some("km executor stopped"));
        assert_eq!(condition(&n, "MemoryPressure").status, "Unknown");
        // A node that does not exist is nothing to mark.
        mark_not_ready(&s.client, "no-such-node", "km executor stopped")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn heartbeat_keeps_the_lease_and_the_ready_condition() {
        let s = server().await;
        let nodes: Api<Node> = Api::all(s.client.clone());
        let leases: Api<Lease> = Api::namespaced(s.client.clone(), LEASE_NAMESPACE);
        let cfg = config("node-b");
        register(&s.client, &cfg).await.unwrap();
        let uid = nodes.get("node-b").await.unwrap().metadata.uid.unwrap();

        let stop = CancellationToken::new();
        let task = tokio::spawn(heartbeat(
            s.client.clone(),
            cfg.clone(),
            Duration::from_millis(100),
            Duration::from_secs(3600),
            stop.clone(),
        ));

        let lease = wait_for(|| async { leases.get_opt("node-b").await.unwrap() }).await;
        let spec = lease.spec.clone().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("node-b"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        let owner = &lease.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("Node", "node-b")
        );
        assert_eq!(owner.uid, uid);
        let first = spec.renew_time.unwrap();
        let renewed = wait_for(|| async {
            let l = leases.get("node-b").await.unwrap();
            let t = l.spec.unwrap().renew_time.unwrap();
            (t > first).then_some(t)
        })
        .await;
        assert!(renewed > first);

        // Something else says the node is not ready: the heartbeat says it is.
        mark_not_ready(&s.client, "node-b", "test").await.unwrap();
        wait_for(|| async {
            let n = nodes.get("node-b").await.unwrap();
            (condition(&n, "Ready").status == "True").then_some(())
        })
        .await;

        // A deleted Lease is created again.
        leases.delete("node-b", &Default::default()).await.unwrap();
        wait_for(|| async { leases.get_opt("node-b").await.unwrap() }).await;

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("heartbeat stops when told")
            .unwrap();
    }

    #[tokio::test]
    async fn heartbeat_refreshes_the_status_on_its_interval() {
        let s = server().await;
        let nodes: Api<Node> = Api::all(s.client.clone());
        let cfg = config("node-c");
        register(&s.client, &cfg).await.unwrap();
        let beat = |n: &Node| condition(n, "Ready").last_heartbeat_time.clone().unwrap();
        let first = beat(&nodes.get("node-c").await.unwrap());
        let stop = CancellationToken::new();
        let task = tokio::spawn(heartbeat(
            s.client.clone(),
            cfg,
            Duration::from_millis(100),
            Duration::from_millis(300),
            stop.clone(),
        ));
        // Time has whole-second precision on the wire.
        wait_for(|| async {
            let b = beat(&nodes.get("node-c").await.unwrap());
            (b > first).then_some(())
        })
        .await;
        stop.cancel();
        task.await.unwrap();
    }

    /// Polls `f` until it gives something (10 s at most).
    async fn wait_for<T, F, Fut>(mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
