//! The `TaskInfo` for a placed pod, and the pod as it travels to the executor.

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use prost::Message;

use super::annotations;
use super::hostport::HostPort;
use super::ids::TaskId;
use super::task::PodTask;
use crate::mesos::proto::v1;

/// Where and with what a pod was placed.
#[derive(Clone, Debug)]
pub struct Placement<'a> {
    /// The task id to launch under.
    pub task_id: &'a TaskId,
    /// The agent.
    pub agent_id: &'a str,
    /// The agent's hostname.
    pub hostname: &'a str,
    /// The offer recorded on the pod (the first when several were combined).
    pub offer_id: &'a str,
    /// The task's resources, taken from the offer.
    pub resources: Vec<v1::Resource>,
    /// Host ports chosen for container ports.
    pub host_ports: Vec<HostPort>,
    /// The executor's `ExecutorInfo` (identical for every task on the agent).
    pub executor: v1::ExecutorInfo,
}

/// A task ready to launch.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The Mesos task.
    pub task: v1::TaskInfo,
    /// The pod carried in `task.data`: limits, host ports and annotations written.
    pub pod: Pod,
}

/// Builds the task and the annotated pod; `None` when the task was
/// [slimmed](PodTask::slim) and has no pod to carry.
pub fn build(pt: &PodTask, p: Placement<'_>) -> Option<Launch> {
    let mut pod = pt.pod()?;
    if let Some(spec) = pod.spec.as_mut() {
        for hp in &p.host_ports {
            if let Some(port) = spec
                .containers
                .get_mut(hp.container_index)
                .and_then(|c| c.ports.as_mut())
                .and_then(|ps| ps.get_mut(hp.port_index))
            {
                port.host_port = Some(i32::from(hp.host_port));
            }
        }
    }
    pod.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .extend(placement_annotations(&p));
    let data = serde_json::to_vec(&pod).unwrap_or_default();
    let task = v1::TaskInfo {
        name: pt.key.task_name(),
        task_id: p.task_id.into(),
        agent_id: v1::AgentId {
            value: p.agent_id.into(),
        },
        resources: p.resources,
        executor: Some(p.executor),
        data: Some(data),
        ..Default::default()
    };
    Some(Launch { task, pod })
}

/// The annotations a placement writes on its pod: bindingHost, taskId,
/// slaveId, offerId, executorId, executorResources and the host ports.
pub fn placement_annotations(p: &Placement<'_>) -> std::collections::BTreeMap<String, String> {
    let mut ann = std::collections::BTreeMap::new();
    let mut put = |k: String, v: String| {
        ann.insert(k, v);
    };
    put(annotations::BINDING_HOST.into(), p.hostname.into());
    put(annotations::TASK_ID.into(), p.task_id.to_string());
    put(annotations::SLAVE_ID.into(), p.agent_id.into());
    put(annotations::OFFER_ID.into(), p.offer_id.into());
    put(
        annotations::EXECUTOR_ID.into(),
        p.executor.executor_id.value.clone(),
    );
    put(
        annotations::EXECUTOR_RESOURCES.into(),
        encode_resources(&p.executor.resources),
    );
    for hp in &p.host_ports {
        put(
            annotations::port_key(&hp.protocol, hp.container_port),
            hp.host_port.to_string(),
        );
        if let Some(name) = &hp.name {
            put(
                annotations::port_name_key(&hp.protocol, name),
                hp.host_port.to_string(),
            );
        }
    }
    ann
}

/// Resources as the `executorResources` annotation holds them: standard base64
/// of each protobuf-encoded `mesos.v1.Resource`, comma separated.
pub fn encode_resources(resources: &[v1::Resource]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    resources
        .iter()
        .map(|r| b64.encode(r.encode_to_vec()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads an `executorResources` annotation back.
pub fn decode_resources(s: &str) -> Result<Vec<v1::Resource>, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let bytes = b64
                .decode(p)
                .map_err(|e| format!("not base64 ({e}): {p:?}"))?;
            v1::Resource::decode(bytes.as_slice())
                .map_err(|e| format!("not a mesos.v1.Resource ({e}): {p:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::podtask::{ExecutorConfig, ExecutorPrototype, PodTaskConfig};
    use crate::resources;

    #[test]
    fn task_and_pod_carry_the_placement() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "http"}]}]}
        }))
        .unwrap();
        let pt = PodTask::from_pod(pod, &PodTaskConfig::default()).unwrap();
        let exec = ExecutorPrototype::new(&ExecutorConfig::default(), &Default::default()).unwrap();
        let task_id = TaskId::generate();
        let host_ports = vec![HostPort {
            container: "a".into(),
            container_port: 80,
            protocol: "TCP".into(),
            host_port: 31005,
            name: Some("http".into()),
            role: "*".into(),
            container_index: 0,
            port_index: 0,
        }];
        let l = build(
            &pt,
            Placement {
                task_id: &task_id,
                agent_id: "S1",
                hostname: "node-1",
                offer_id: "O1",
                resources: vec![resources::scalar("cpus", 0.25)],
                host_ports,
                executor: exec.info_unreserved(),
            },
        )
        .expect("a task read from a pod carries it");
        assert_eq!(l.task.name, "web.shop.pod");
        assert_eq!(l.task.task_id.value, task_id.as_str());
        assert_eq!(l.task.agent_id.value, "S1");
        let a = l.pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[annotations::BINDING_HOST], "node-1");
        assert_eq!(a[annotations::TASK_ID], task_id.as_str());
        assert_eq!(a[annotations::SLAVE_ID], "S1");
        assert_eq!(a[annotations::OFFER_ID], "O1");
        assert_eq!(a[annotations::EXECUTOR_ID], exec.id().as_str());
        assert_eq!(a["k8s.mesosphere.io/port_TCP_80"], "31005");
        assert_eq!(a["k8s.mesosphere.io/portName_TCP_http"], "31005");
        let back = decode_resources(&a[annotations::EXECUTOR_RESOURCES]).unwrap();
        assert_eq!(back, exec.info_unreserved().resources);
        let sent: Pod = serde_json::from_slice(l.task.data.as_ref().unwrap()).unwrap();
        assert_eq!(
            sent.spec.unwrap().containers[0].ports.as_ref().unwrap()[0].host_port,
            Some(31005)
        );
    }
}
