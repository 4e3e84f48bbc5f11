//! The Mesos-facing controllers of `km controller-manager`, in process
//! against km apiserver (and km dev-master for the nodes controller):
//! Endpoints and EndpointSlices at hostIP:hostPort, Nodes that follow the
//! Mesos agents.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::support;

const WAIT: Duration = Duration::from_secs(30);

#[derive(clap::Parser)]
struct ControllerCli {
    #[command(flatten)]
    args: km::controller::Args,
}

/// `km controller-manager` running in process with `flags` until `stop`.
fn start_controllers(kubeconfig: &std::path::Path, flags: &[&str], stop: &CancellationToken) {
    let argv = [
        "km",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--leader-elect=false",
        "--port",
        "0",
    ]
    .into_iter()
    .chain(flags.iter().copied());
    let args = <ControllerCli as clap::Parser>::parse_from(argv).args;
    tokio::spawn(km::controller::run(args, stop.clone()));
}

/// Polls `check` until it gives a value, or fails the test naming `what`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A pod as km's scheduler and executor leave it: host port annotations,
/// bound, running, with Ready as given.
async fn running_pod(
    client: &Client,
    name: &str,
    host_ip: &str,
    host_port: Option<u16>,
    ready: bool,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let notes = match host_port {
        Some(p) => json!({
            "k8s.mesosphere.io/port_TCP_8080": p.to_string(),
            "k8s.mesosphere.io/portName_TCP_http": p.to_string(),
        }),
        None => json!({}),
    };
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}, "annotations": notes},
        "spec": {"nodeName": "agent-1", "containers": [{"name": "c", "image": "km-test/busybox:1",
                 "ports": [{"name": "http", "containerPort": 8080}]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    set_ready(client, name, host_ip, ready).await;
}

async fn set_ready(client: &Client, name: &str, host_ip: &str, ready: bool) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let status = json!({"status": {"phase": "Running", "hostIP": host_ip, "podIP": host_ip,
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// (ip:port of ready addresses, ip:port of not-ready ones), sorted.
fn addresses(e: &Endpoints) -> (Vec<String>, Vec<String>) {
    let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
    for s in e.subsets.iter().flatten() {
        for p in s.ports.iter().flatten() {
            for a in s.addresses.iter().flatten() {
                ready.push(format!("{}:{}", a.ip, p.port));
            }
            for a in s.not_ready_addresses.iter().flatten() {
                not_ready.push(format!("{}:{}", a.ip, p.port));
            }
        }
    }
    ready.sort();
    not_ready.sort();
    (ready, not_ready)
}

/// The same from km's EndpointSlices of `service`.
async fn slice_addresses(client: &Client, service: &str) -> (Vec<String>, Vec<String>) {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .unwrap();
    let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
    for s in list.items {
        for p in s.ports.iter().flatten() {
            for e in &s.endpoints {
                let r = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
                let entry = format!("{}:{}", e.addresses[0], p.port.unwrap());
                if r {
                    ready.push(entry)
                } else {
                    not_ready.push(entry)
                }
            }
        }
    }
    ready.sort();
    not_ready.sort();
    (ready, not_ready)
}

async fn endpoints_become(client: &Client, service: &str, ready: &[&str], not_ready: &[&str]) {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let want = (
        ready.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        not_ready.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    eventually(&format!("Endpoints {service} = {want:?}"), || {
        let (api, want) = (api.clone(), want.clone());
        async move {
            let e = api.get_opt(service).await.unwrap()?;
            (addresses(&e) == want).then_some(())
        }
    })
    .await;
    eventually(&format!("EndpointSlices of {service} = {want:?}"), || {
        let want = want.clone();
        async move { (slice_addresses(client, service).await == want).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn endpoints_follow_pods_at_their_host_ports() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let (kubeconfig, client) = support::apiserver(dir.path(), stop.clone()).await;
    start_controllers(&kubeconfig, &["--controllers", "endpoints"], &stop);

    // A Service with a good port and one whose targetPort names nothing.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"tier": "front"}},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "admin", "port": 81, "targetPort": "admin"}]}
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    running_pod(&client, "web-1", "10.1.0.1", Some(31001), true).await;
    running_pod(&client, "web-2", "10.1.0.2", Some(31002), true).await;
    endpoints_become(&client, "web", &["10.1.0.1:31001", "10.1.0.2:31002"], &[]).await;

    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let e = endpoints.get("web").await.unwrap();
    let notes = e.metadata.annotations.unwrap_or_default();
    assert_eq!(
        notes["k8s.mesosphere.io/containerPort_TCP_10.1.0.2_31002"],
        "8080"
    );
    assert_eq!(
        e.metadata.labels.unwrap_or_default()["tier"],
        "front",
        "Service labels carry over"
    );

    // The broken port is reported on the Service.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let message = eventually("a TargetPortNotFound event on the Service", || {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .find_map(|ev| {
                    let message = ev.message.unwrap_or_default();
                    (ev.reason.as_deref() == Some("TargetPortNotFound")
                        && ev.involved_object.name.as_deref() == Some("web")
                        && message.contains("port admin:"))
                    .then_some(message)
                })
        }
    })
    .await;
    assert!(message.contains("targetPort \"admin\""), "{message}");
    let complaints: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|ev| ev.reason.as_deref() == Some("TargetPortNotFound"))
        .filter_map(|ev| ev.message)
        .collect();
    assert_eq!(
        complaints.len(),
        1,
        "only the broken port is reported: {complaints:?}"
    );

    // Readiness moves an address; a pod without host ports is skipped.
    set_ready(&client, "web-2", "10.1.0.2", false).await;
    running_pod(&client, "web-3", "10.1.0.3", None, true).await;
    endpoints_become(&client, "web", &["10.1.0.1:31001"], &["10.1.0.2:31002"]).await;

    // A deleted pod leaves; so does one being deleted (held by a finalizer).
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.delete("web-1", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    endpoints_become(&client, "web", &[], &["10.1.0.2:31002"]).await;
    running_pod(&client, "web-4", "10.1.0.4", Some(31004), true).await;
    endpoints_become(&client, "web", &["10.1.0.4:31004"], &["10.1.0.2:31002"]).await;
    pods.patch(
        "web-4",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": ["test/hold"]}})),
    )
    .await
    .unwrap();
    pods.delete("web-4", &DeleteParams::default())
        .await
        .unwrap();
    endpoints_become(&client, "web", &[], &["10.1.0.2:31002"]).await;
    pods.patch(
        "web-4",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();

    // Relabelled away: no longer selected.
    pods.patch(
        "web-2",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    endpoints_become(&client, "web", &[], &[]).await;

    // Hand-written Endpoints of a selectorless Service are not touched.
    let manual: Service = serde_json::from_value(json!({
        "metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432}]}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &manual)
        .await
        .unwrap();
    let written: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "subsets": [{"addresses": [{"ip": "10.9.9.9"}], "ports": [{"port": 5432}]}]
    }))
    .unwrap();
    endpoints
        .create(&PostParams::default(), &written)
        .await
        .unwrap();

    // The Service goes: so do its Endpoints and slices.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("web's Endpoints and slices gone", || {
        let endpoints = endpoints.clone();
        let client = client.clone();
        async move {
            let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
            let left = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
                .await
                .unwrap()
                .items
                .len();
            (endpoints.get_opt("web").await.unwrap().is_none() && left == 0).then_some(())
        }
    })
    .await;
    let db = endpoints.get("db").await.unwrap();
    assert_eq!(
        addresses(&db).0,
        ["10.9.9.9:5432"],
        "selectorless Endpoints kept"
    );
}

/// A `Ready` condition's (status, reason).
fn ready(node: &Node) -> Option<(String, String)> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

#[tokio::test]
async fn nodes_follow_mesos_agents_and_lost_agents_pods_fail() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let (kubeconfig, client) = support::apiserver(dir.path(), stop.clone()).await;

    let master = km::devcluster::master::start(
        support::master_args(&[
            "--port",
            "0",
            "--agent-timeout",
            "3s",
            "--hollow-agents",
            "1",
            "--hollow-attributes",
            "rack:r1;zone:2",
        ]),
        stop.clone(),
    )
    .await
    .unwrap();
    let master_addr = format!("127.0.0.1:{}", master.addr.port());
    let agent_stop = CancellationToken::new();
    let agent = tokio::spawn(km::devcluster::agent::run(
        support::agent_args(&[
            "--master",
            &master_addr,
            "--port",
            &support::free_port().to_string(),
            "--work-dir",
            dir.path().join("agent").to_str().unwrap(),
            "--cgroups-root",
            &format!("km-nodes-test-{}", uuid::Uuid::new_v4().simple()),
            "--hostname",
            "agent-lost",
            "--resources",
            "cpus:2;mem:1024;disk:1000;ports:[31000-31100]",
        ]),
        agent_stop.clone(),
    ));
    start_controllers(
        &kubeconfig,
        &[
            "--controllers",
            "nodes,replicaset",
            "--mesos-master",
            &master_addr,
            "--node-monitor-period",
            "200ms",
            "--pod-eviction-timeout",
            "2s",
        ],
        &stop,
    );

    let nodes: Api<Node> = Api::all(client.clone());
    let hollow = eventually("the hollow agent's Node, Ready", || {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get_opt("hollow-00000").await.unwrap()?;
            (ready(&n)? == ("True".into(), "SlaveReady".into())).then_some(n)
        }
    })
    .await;
    let labels = hollow.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["kubernetes.io/hostname"], "hollow-00000");
    assert_eq!(labels["k8s.mesosphere.io/attribute-rack"], "r1");
    assert_eq!(labels["k8s.mesosphere.io/attribute-zone"], "2");
    assert!(
        hollow
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("k8s.mesosphere.io/slaveId")
    );
    assert!(hollow.status.unwrap().capacity.unwrap().contains_key("cpu"));
    eventually("the real agent's Node, Ready", || {
        let nodes = nodes.clone();
        async move { (ready(&nodes.get_opt("agent-lost").await.unwrap()?)?.0 == "True").then_some(()) }
    })
    .await;

    // A pod runs on the agent that will be lost, another on the hollow one.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for (name, node) in [("on-lost", "agent-lost"), ("on-hollow", "hollow-00000")] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "km-test/busybox:1"}]}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        pods.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    }

    // A ReplicaSet's pod, bound to the agent that will be lost.
    let sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> =
        Api::namespaced(client.clone(), "default");
    let rs = serde_json::from_value(json!({
        "metadata": {"name": "keeper"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "keeper"}},
                 "template": {"metadata": {"labels": {"app": "keeper"}},
                              "spec": {"containers": [{"name": "c", "image": "km-test/busybox:1"}]}}}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &rs).await.unwrap();
    let first = eventually("the ReplicaSet's pod", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=keeper"))
                .await
                .unwrap();
            list.items.into_iter().next().and_then(|p| p.metadata.name)
        }
    })
    .await;
    let binding: k8s_openapi::api::core::v1::Binding = serde_json::from_value(json!({
        "metadata": {"name": first}, "target": {"kind": "Node", "name": "agent-lost"}
    }))
    .unwrap();
    let _: serde_json::Value = pods
        .create_subresource("binding", &first, &PostParams::default(), &binding)
        .await
        .unwrap();
    pods.patch_status(
        &first,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();

    // The agent stops: disconnected, then removed by the master.
    agent_stop.cancel();
    let _ = tokio::time::timeout(WAIT, agent).await;
    eventually("the lost agent's Node NotReady, AgentRemoved", || {
        let nodes = nodes.clone();
        async move {
            let r = ready(&nodes.get("agent-lost").await.unwrap())?;
            (r == ("False".into(), "AgentRemoved".into())).then_some(())
        }
    })
    .await;
    let failed = eventually("the lost agent's pod Failed", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("on-lost").await.unwrap();
            let s = p.status?;
            (s.phase.as_deref() == Some("Failed")).then_some(s)
        }
    })
    .await;
    assert_eq!(failed.reason.as_deref(), Some("NodeLost"));
    assert!(failed.message.unwrap_or_default().contains("agent-lost"));
    let other = pods.get("on-hollow").await.unwrap();
    assert_eq!(
        other.status.unwrap().phase.as_deref(),
        Some("Running"),
        "pods elsewhere untouched"
    );
    let hollow = nodes.get("hollow-00000").await.unwrap();
    assert_eq!(ready(&hollow).unwrap().0, "True");

    // The ReplicaSet replaces its pod that failed with the agent.
    eventually("a replacement for the ReplicaSet's lost pod", || {
        let (pods, first) = (pods.clone(), first.clone());
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=keeper"))
                .await
                .unwrap();
            let lost = list.items.iter().any(|p| {
                p.metadata.name.as_deref() == Some(first.as_str())
                    && p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("NodeLost")
            });
            let replaced = list
                .items
                .iter()
                .any(|p| p.metadata.name.as_deref() != Some(first.as_str()));
            (lost && replaced).then_some(())
        }
    })
    .await;
}
