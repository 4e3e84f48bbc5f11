//! A user's session with the whole path on real Docker: km apiserver, km
//! dev-master and a dev-agent, km scheduler, km executor, km
//! controller-manager (endpoints, nodes and the workload controllers) and
//! km proxy. A Deployment behind a NodePort Service answers through the
//! proxy; scaling, a rolling update and a killed container show up in what
//! the proxy reaches.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::km_executor::{IMAGE, docker, node};

#[derive(clap::Parser)]
struct ControllerCli {
    #[command(flatten)]
    args: km::controller::Args,
}

#[derive(clap::Parser)]
struct ProxyCli {
    #[command(flatten)]
    args: km::proxy::Args,
}

const WAIT: Duration = Duration::from_secs(120);

/// The body of `GET /` through the proxy's NodePort, if it answers.
async fn fetch(port: u16) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
        .await
        .ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1);
    (status == Some("200")).then(|| body.trim().to_string())
}

/// The answers of `n` requests through the proxy.
async fn answers(port: u16, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        if let Some(body) = fetch(port).await {
            seen.insert(body);
        }
    }
    seen
}

/// Waits until `n` requests reach exactly `pods` distinct pods, all at `version`.
async fn wait_answers(port: u16, pods: usize, version: &str) -> BTreeSet<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = answers(port, pods * 4).await;
        if seen.len() == pods && seen.iter().all(|a| a.ends_with(version)) {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "through the proxy: wanted {pods} pods at {version}, last saw {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Names of the pods in the ready and not-ready addresses of `svc`.
async fn endpoint_pods(api: &Api<Endpoints>, svc: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let e = api.get_opt(svc).await.unwrap();
    let (mut ready, mut not_ready) = (BTreeSet::new(), BTreeSet::new());
    for s in e.iter().flat_map(|e| e.subsets.iter().flatten()) {
        for a in s.addresses.iter().flatten() {
            ready.extend(a.target_ref.as_ref().and_then(|r| r.name.clone()));
        }
        for a in s.not_ready_addresses.iter().flatten() {
            not_ready.extend(a.target_ref.as_ref().and_then(|r| r.name.clone()));
        }
    }
    (ready, not_ready)
}

#[tokio::test]
async fn a_deployment_behind_a_service_answers_through_km_proxy() {
    // Warnings of the in-process roles show with the test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "km=warn".into()),
        )
        .with_test_writer()
        .try_init();
    let n = node("cpus:4;mem:4096;disk:1000;ports:[31000-31999]", &[]).await;
    let kubeconfig = n.kubeconfig.to_str().unwrap().to_string();
    let controllers = <ControllerCli as clap::Parser>::parse_from([
        "km",
        "--kubeconfig",
        &kubeconfig,
        "--leader-elect=false",
        "--port",
        "0",
        "--controllers",
        "*,replicaset,deployment,garbagecollector",
        "--mesos-master",
        &format!("http://{}", n.master),
        "--node-monitor-period",
        "1s",
    ])
    .args;
    tokio::spawn(km::controller::run(controllers, n.stop.child_token()));
    let proxy = <ProxyCli as clap::Parser>::parse_from([
        "km",
        "--kubeconfig",
        &kubeconfig,
        "--hostname-override",
        &n.hostname,
        "--proxy-mode",
        "userspace",
        "--healthz-bind-address",
        "127.0.0.1:0",
        "--metrics-bind-address",
        "127.0.0.1:0",
    ])
    .args;
    tokio::spawn(km::proxy::run(proxy, n.stop.child_token()));

    let deployments: Api<Deployment> = Api::namespaced(n.client.clone(), &n.ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "schedulerName": "k8sm-scheduler",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "web", "image": IMAGE,
                        "command": ["sh", "-c", "mkdir -p /www && echo $(POD_NAME) $(VERSION) > /www/index.html && exec httpd -f -p 8080 -h /www"],
                        "env": [
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "VERSION", "value": "v1"}
                        ],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                                           "initialDelaySeconds": 1, "periodSeconds": 1},
                        "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}}
                    }]
                }
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(n.client.clone(), &n.ns);
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }))
    .unwrap();
    let service = services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let node_port = service.spec.unwrap().ports.unwrap()[0].node_port.unwrap() as u16;

    // Three replicas run, are published, and answer through the proxy in turn.
    n.kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"])
        .await;
    let endpoints: Api<Endpoints> = Api::namespaced(n.client.clone(), &n.ns);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (ready, not_ready) = endpoint_pods(&endpoints, "web").await;
        if ready.len() == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Endpoints web: ready {ready:?}, not ready {not_ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = wait_answers(node_port, 3, "v1").await;

    // Scale up and down.
    let scale = |replicas: i32| {
        let deployments = deployments.clone();
        async move {
            deployments
                .patch(
                    "web",
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"spec": {"replicas": replicas}})),
                )
                .await
                .unwrap();
        }
    };
    scale(5).await;
    let five = wait_answers(node_port, 5, "v1").await;
    assert!(
        first.is_subset(&five),
        "scaling up keeps the running pods: {first:?} {five:?}"
    );
    scale(2).await;
    wait_answers(node_port, 2, "v1").await;

    // A rolling update: kubectl sees it through, and only v2 answers.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(&json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "env": [{"name": "VERSION", "value": "v2"}]}]}}}})),
        )
        .await
        .unwrap();
    n.kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"])
        .await;
    let v2 = wait_answers(node_port, 2, "v2").await;

    // One pod's container killed: its endpoint leaves the ready addresses
    // while it is not ready, then comes back.
    let victim = v2
        .iter()
        .next()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let ids = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=io.kubernetes.pod.name={victim}"),
        "--filter",
        "label=io.kubernetes.container.name=web",
    ]);
    let id = ids
        .lines()
        .next()
        .expect("the victim's container runs")
        .to_string();
    docker(&["kill", &id]);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (ready, _) = endpoint_pods(&endpoints, "web").await;
        if !ready.contains(&victim) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{victim} stays a ready endpoint after its container was killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (ready, not_ready) = endpoint_pods(&endpoints, "web").await;
        if ready.contains(&victim) && not_ready.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{victim} never came back: ready {ready:?}, not ready {not_ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_answers(node_port, 2, "v2").await;
    n.shutdown().await;
}
