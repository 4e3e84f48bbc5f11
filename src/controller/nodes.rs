//! The nodes controller: Nodes mirror the Mesos agents the master knows.
//!
//! Every `--node-monitor-period` it reads the leading master's `/state`:
//! - an active agent without a Node gets one (name = hostname, labels
//!   `kubernetes.io/hostname` and `k8s.mesosphere.io/attribute-<name>`,
//!   capacity from its resources), annotated with its agent ID;
//! - an active agent that runs no km executor has its Node kept Ready from
//!   Mesos's view (reason `SlaveReady`), with its labels and capacity; where
//!   a km executor runs, the executor keeps the Node itself;
//! - a Node of an agent that is disconnected (Ready Unknown,
//!   `AgentDisconnected`) or gone from the master (Ready False,
//!   `AgentRemoved`) goes NotReady, and once it has been NotReady for
//!   `--pod-eviction-timeout` its pods are marked Failed (`NodeLost`), so
//!   that their controllers replace them.
//!
//! Only Nodes carrying the agent-ID annotation are treated as Mesos agents,
//! so Nodes of other kinds in the same cluster are left alone. While the
//! master cannot be read, Nodes are left as they are and the read is retried
//! with backoff.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::events::Severity;
use super::{COMPONENT, Context};
use crate::mesos::detector::{MasterAddress, detect};
use crate::mesos::proto::v1;
use crate::podtask::annotations;

/// Node annotation with the Mesos agent ID; marks the Node as a Mesos agent's.
pub const AGENT_ID_ANNOTATION: &str = annotations::SLAVE_ID;
/// Ready reason of an agent Mesos reports active.
pub const REASON_READY: &str = "SlaveReady";
/// Ready reason of an agent that is disconnected from the master.
pub const REASON_DISCONNECTED: &str = "AgentDisconnected";
/// Ready reason of an agent the master no longer knows.
pub const REASON_REMOVED: &str = "AgentRemoved";
/// Pod status reason of a pod whose agent was lost.
pub const REASON_NODE_LOST: &str = "NodeLost";

/// The part of a master's `/state` this controller reads.
#[derive(Debug, Default, Deserialize)]
pub struct MasterState {
    /// Agents registered with the master.
    #[serde(default)]
    pub slaves: Vec<Agent>,
    /// Frameworks, with the executors they run (Apache Mesos lists them here).
    #[serde(default)]
    pub frameworks: Vec<Framework>,
}

/// One agent in `/state`.
#[derive(Debug, Deserialize)]
pub struct Agent {
    /// Agent ID.
    pub id: String,
    /// Agent hostname: the Node's name.
    pub hostname: String,
    /// `slave(1)@ip:port`.
    #[serde(default)]
    pub pid: Option<String>,
    /// Connected and not deactivated.
    #[serde(default = "yes")]
    pub active: bool,
    /// Total resources: `cpus`, `mem`, `disk` (MB) as numbers, `ports` as text.
    #[serde(default)]
    pub resources: BTreeMap<String, serde_json::Value>,
    /// Attributes: text or number.
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// Executors on it (km dev-master lists them here).
    #[serde(default)]
    pub executors: Vec<ExecutorRef>,
}

fn yes() -> bool {
    true
}

/// A framework in `/state`.
#[derive(Debug, Deserialize)]
pub struct Framework {
    /// Its executors.
    #[serde(default)]
    pub executors: Vec<ExecutorRef>,
}

/// An executor in `/state`.
#[derive(Debug, Deserialize)]
pub struct ExecutorRef {
    /// Executor ID.
    pub executor_id: String,
    /// Agent it runs on (absent where listed under the agent).
    #[serde(default)]
    pub slave_id: Option<String>,
}

/// Whether `executor_id` is a km executor (or the original k8sm's).
pub fn is_km_executor(executor_id: &str) -> bool {
    executor_id.starts_with("km-executor-") || executor_id.ends_with("_k8sm-executor")
}

impl MasterState {
    /// Agent IDs that run a km executor.
    pub fn agents_with_executor(&self) -> std::collections::HashSet<&str> {
        let mut with = std::collections::HashSet::new();
        for a in &self.slaves {
            if a.executors.iter().any(|e| is_km_executor(&e.executor_id)) {
                with.insert(a.id.as_str());
            }
        }
        for f in &self.frameworks {
            for e in &f.executors {
                if let Some(agent) = &e.slave_id
                    && is_km_executor(&e.executor_id)
                {
                    with.insert(agent.as_str());
                }
            }
        }
        with
    }
}

impl Agent {
    /// The agent's address from its pid, else its hostname if that is an IP.
    pub fn ip(&self) -> Option<IpAddr> {
        let from_pid = self
            .pid
            .as_deref()
            .and_then(|p| p.rsplit_once('@'))
            .and_then(|(_, hp)| hp.parse::<std::net::SocketAddr>().ok())
            .map(|sa| sa.ip());
        from_pid.or_else(|| self.hostname.parse().ok())
    }

    fn scalar(&self, name: &str) -> Option<f64> {
        self.resources.get(name).and_then(|v| v.as_f64())
    }

    /// The Node labels km owns: hostname and one per attribute.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let offer = v1::Offer {
            hostname: self.hostname.clone(),
            attributes: self
                .attributes
                .iter()
                .filter_map(|(name, v)| {
                    let (r#type, text, scalar) = match v {
                        serde_json::Value::Number(n) => (
                            v1::value::Type::Scalar,
                            None,
                            Some(v1::value::Scalar { value: n.as_f64()? }),
                        ),
                        serde_json::Value::String(s)
                            if s.starts_with('[') || s.starts_with('{') =>
                        {
                            (v1::value::Type::Ranges, None, None)
                        }
                        serde_json::Value::String(s) => (
                            v1::value::Type::Text,
                            Some(v1::value::Text { value: s.clone() }),
                            None,
                        ),
                        _ => return None,
                    };
                    Some(v1::Attribute {
                        name: name.clone(),
                        r#type: r#type as i32,
                        text,
                        scalar,
                        ..Default::default()
                    })
                })
                .collect(),
            ..Default::default()
        };
        crate::offers::labels(&offer)
    }

    fn resources(&self) -> Vec<v1::Resource> {
        ["cpus", "mem", "disk"]
            .into_iter()
            .filter_map(|name| {
                Some(v1::Resource {
                    name: name.to_string(),
                    r#type: v1::value::Type::Scalar as i32,
                    scalar: Some(v1::value::Scalar {
                        value: self.scalar(name)?,
                    }),
                    ..Default::default()
                })
            })
            .collect()
    }

    fn addresses(&self) -> Vec<NodeAddress> {
        let mut out = vec![NodeAddress {
            type_: "Hostname".into(),
            address: self.hostname.clone(),
        }];
        if let Some(ip) = self.ip() {
            out.insert(
                0,
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.to_string(),
                },
            );
        }
        out
    }
}

/// Why a Node is not Ready, from Mesos's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    Disconnected,
    Removed,
}

impl Lost {
    fn condition(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Lost::Disconnected => (
                "Unknown",
                REASON_DISCONNECTED,
                "the Mesos master reports the agent disconnected",
            ),
            Lost::Removed => (
                "False",
                REASON_REMOVED,
                "the Mesos master no longer knows the agent",
            ),
        }
    }
}

/// Runs the nodes controller until `stop`.
pub async fn run(ctx: Context, stop: CancellationToken) -> anyhow::Result<()> {
    let masters = detect(&ctx.config.mesos_master)
        .await
        .with_context(|| format!("--mesos-master {}", ctx.config.mesos_master))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client for the Mesos master")?;
    let period = ctx
        .config
        .node_monitor_period
        .max(Duration::from_millis(100));
    let mut delay = period;
    loop {
        match read_state(&http, &masters).await {
            Ok(state) => {
                delay = period;
                if let Err(e) = sync(&ctx, &state).await {
                    tracing::warn!(error = %format!("{e:#}"), "node sync failed; retrying");
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "cannot read the Mesos master's state; Nodes are left as they are");
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return Ok(()),
        }
    }
}

async fn read_state(
    http: &reqwest::Client,
    masters: &watch::Receiver<Option<MasterAddress>>,
) -> anyhow::Result<MasterState> {
    let base = masters
        .borrow()
        .as_ref()
        .map(|m| m.base.clone())
        .context("no leading Mesos master")?;
    let url = format!("{base}/master/state");
    let response = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !response.status().is_success() {
        anyhow::bail!("GET {url}: {}", response.status());
    }
    let body = response
        .bytes()
        .await
        .with_context(|| format!("GET {url}"))?;
    serde_json::from_slice(&body).with_context(|| format!("GET {url}: not a Mesos master state"))
}

/// One pass: Nodes for agents, Ready from Mesos, lost agents' pods.
pub async fn sync(ctx: &Context, state: &MasterState) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let nodes: HashMap<String, Node> = api
        .list(&ListParams::default())
        .await
        .context("listing Nodes")?
        .items
        .into_iter()
        .map(|n| (n.name_any(), n))
        .collect();
    let with_executor = state.agents_with_executor();
    let now = Timestamp::now();
    let grace = ctx.config.node_monitor_grace_period;
    let mut known = HashMap::new();
    for agent in &state.slaves {
        known.insert(agent.hostname.as_str(), agent);
    }
    for agent in state.slaves.iter().filter(|a| a.active) {
        let result = match nodes.get(&agent.hostname) {
            None => create(&api, agent, now).await,
            Some(node) => {
                keep(
                    ctx,
                    &api,
                    node,
                    agent,
                    with_executor.contains(agent.id.as_str()),
                    now,
                    grace,
                )
                .await
            }
        };
        if let Err(e) = result {
            tracing::warn!(node = %agent.hostname, error = %format!("{e:#}"), "cannot update the Node");
        }
    }
    for (name, node) in &nodes {
        if !node.annotations().contains_key(AGENT_ID_ANNOTATION) {
            continue;
        }
        let lost = match known.get(name.as_str()) {
            Some(a) if a.active => continue,
            Some(_) => Lost::Disconnected,
            None => Lost::Removed,
        };
        if let Err(e) = lose(ctx, &api, node, lost, now).await {
            tracing::warn!(node = %name, error = %format!("{e:#}"), "cannot mark the Node not ready or evict its pods");
        }
    }
    Ok(())
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

fn condition(
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
    since: Option<Time>,
) -> NodeCondition {
    NodeCondition {
        type_: "Ready".into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(since.unwrap_or(Time(now))),
    }
}

async fn create(api: &Api<Node>, agent: &Agent, now: Timestamp) -> anyhow::Result<()> {
    let (capacity, allocatable) = crate::resources::node::capacity(&agent.resources(), &[]);
    let node = Node {
        metadata: ObjectMeta {
            name: Some(agent.hostname.clone()),
            labels: Some(agent.labels()),
            annotations: Some(BTreeMap::from([(
                AGENT_ID_ANNOTATION.to_string(),
                agent.id.clone(),
            )])),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            capacity: Some(capacity),
            allocatable: Some(allocatable),
            addresses: Some(agent.addresses()),
            conditions: Some(vec![condition(
                "True",
                REASON_READY,
                "the Mesos master reports the agent active",
                now,
                None,
            )]),
            ..Default::default()
        }),
    };
    let params = PostParams {
        field_manager: Some(COMPONENT.into()),
        ..Default::default()
    };
    match api.create(&params, &node).await {
        Ok(created) => {
            // Servers that drop status on create get it through the subresource.
            if ready_condition(&created).is_none() {
                let body = json!({"status": node.status});
                api.patch_status(
                    &agent.hostname,
                    &PatchParams::default(),
                    &Patch::Merge(&body),
                )
                .await?;
            }
            tracing::info!(node = %agent.hostname, agent = %agent.id, "created the Node of a Mesos agent");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()), // its executor was faster
        Err(e) => Err(e.into()),
    }
}

/// Keeps the Node of an active agent: its agent ID, and without a km
/// executor its labels, capacity and a fresh Ready.
async fn keep(
    _ctx: &Context,
    api: &Api<Node>,
    node: &Node,
    agent: &Agent,
    has_executor: bool,
    now: Timestamp,
    grace: Duration,
) -> anyhow::Result<()> {
    let name = node.name_any();
    let mut meta = json!({});
    if node.annotations().get(AGENT_ID_ANNOTATION) != Some(&agent.id) {
        meta["annotations"] = json!({ AGENT_ID_ANNOTATION: agent.id });
    }
    if !has_executor {
        let wanted = agent.labels();
        let mut labels = serde_json::Map::new();
        for k in node.labels().keys() {
            if k.starts_with(annotations::ATTRIBUTE_LABEL_PREFIX) && !wanted.contains_key(k) {
                labels.insert(k.clone(), serde_json::Value::Null);
            }
        }
        for (k, v) in &wanted {
            if node.labels().get(k) != Some(v) {
                labels.insert(k.clone(), json!(v));
            }
        }
        if !labels.is_empty() {
            meta["labels"] = serde_json::Value::Object(labels);
        }
    }
    if meta.as_object().is_some_and(|m| !m.is_empty()) {
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": meta})),
        )
        .await?;
    }
    if has_executor {
        return Ok(());
    }
    let ready = ready_condition(node);
    let fresh = ready.is_some_and(|c| {
        c.status == "True"
            && c.last_heartbeat_time
                .as_ref()
                .is_some_and(|t| now.duration_since(t.0).unsigned_abs() < grace / 2)
    });
    let (capacity, allocatable) = crate::resources::node::capacity(&agent.resources(), &[]);
    let status = node.status.clone().unwrap_or_default();
    let resources_same = status.capacity.as_ref() == Some(&capacity);
    if fresh && resources_same {
        return Ok(());
    }
    let since = ready
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.clone());
    let mut conditions: Vec<NodeCondition> = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "Ready")
        .collect();
    conditions.push(condition(
        "True",
        REASON_READY,
        "the Mesos master reports the agent active",
        now,
        since,
    ));
    let body = json!({"status": {
        "capacity": capacity, "allocatable": allocatable,
        "addresses": agent.addresses(), "conditions": conditions,
    }});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    Ok(())
}

/// Marks the Node of a lost agent NotReady and, past the eviction
/// timeout, fails its pods.
async fn lose(
    ctx: &Context,
    api: &Api<Node>,
    node: &Node,
    lost: Lost,
    now: Timestamp,
) -> anyhow::Result<()> {
    let name = node.name_any();
    let (status, reason, message) = lost.condition();
    let ready = ready_condition(node);
    let since = match ready {
        Some(c) if c.status == status && c.reason.as_deref() == Some(reason) => {
            c.last_transition_time.clone().unwrap_or(Time(now))
        }
        _ => {
            let was_ready = ready.is_some_and(|c| c.status == "True");
            let mut conditions: Vec<NodeCondition> = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.type_ != "Ready")
                .collect();
            // Not ready for another reason already: the clock keeps running.
            let since = ready
                .filter(|c| c.status != "True")
                .and_then(|c| c.last_transition_time.clone());
            conditions.push(condition(status, reason, message, now, since.clone()));
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"conditions": conditions}})),
            )
            .await?;
            if was_ready {
                tracing::warn!(node = %name, reason, "{message}: the Node is not ready");
                ctx.events
                    .record(node, Severity::Warning, "NodeNotReady", message.to_string());
            }
            since.unwrap_or(Time(now))
        }
    };
    let down_for = now.duration_since(since.0).unsigned_abs();
    if down_for < ctx.config.pod_eviction_timeout {
        return Ok(());
    }
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let on_node = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
        .await
        .context("listing the Node's pods")?;
    for pod in on_node.items {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed"))
            || pod.annotations().contains_key(annotations::CONFIG_MIRROR)
        {
            continue;
        }
        let namespace = pod.namespace().unwrap_or_default();
        let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        let message = format!(
            "node {name}: {message} (not ready for {}s, more than --pod-eviction-timeout)",
            down_for.as_secs()
        );
        let body =
            json!({"status": {"phase": "Failed", "reason": REASON_NODE_LOST, "message": message}});
        match pod_api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&body),
            )
            .await
        {
            Ok(_) => {
                tracing::warn!(pod = %format!("{namespace}/{}", pod.name_any()), node = %name, "marked Failed: its Mesos agent is lost");
                ctx.events
                    .record(&pod, Severity::Warning, REASON_NODE_LOST, message);
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e).context("marking a pod Failed"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = r#"{
        "slaves": [
            {"id": "a1", "hostname": "agent-1", "pid": "slave(1)@10.0.0.1:5051", "active": true,
             "resources": {"cpus": 4, "mem": 2048, "disk": 10240, "ports": "[31000-32000]"},
             "attributes": {"rack": "r1", "zone": 2, "slots": "[1-4]"}},
            {"id": "a2", "hostname": "agent-2", "active": false,
             "executors": [{"executor_id": "km-executor-00ff", "framework_id": "f"}]}
        ],
        "frameworks": [{"executors": [{"executor_id": "x_k8sm-executor", "slave_id": "a3"},
                                      {"executor_id": "other", "slave_id": "a1"}]}]
    }"#;

    #[test]
    fn state_gives_agents_executors_and_labels() {
        let state: MasterState = serde_json::from_str(STATE).unwrap();
        let with = state.agents_with_executor();
        assert!(with.contains("a2") && with.contains("a3") && !with.contains("a1"));
        let a1 = &state.slaves[0];
        assert_eq!(a1.ip(), Some("10.0.0.1".parse().unwrap()));
        let labels = a1.labels();
        assert_eq!(labels["kubernetes.io/hostname"], "agent-1");
        assert_eq!(labels["k8s.mesosphere.io/attribute-rack"], "r1");
        assert_eq!(labels["k8s.mesosphere.io/attribute-zone"], "2");
        assert_eq!(labels["k8s.mesosphere.io/attribute-slots"], "");
        let (cap, _) = crate::resources::node::capacity(&a1.resources(), &[]);
        assert_eq!(cap["cpu"].0, "4");
        assert_eq!(cap["memory"].0, "2Gi");
        assert_eq!(cap["ephemeral-storage"].0, "10Gi");
        assert!(!state.slaves[1].active);
        assert_eq!(state.slaves[1].ip(), None);
    }

    #[test]
    fn lost_agents_have_distinct_conditions() {
        assert_eq!(Lost::Disconnected.condition().0, "Unknown");
        assert_eq!(Lost::Removed.condition().0, "False");
        assert_ne!(
            Lost::Disconnected.condition().1,
            Lost::Removed.condition().1
        );
    }
}
