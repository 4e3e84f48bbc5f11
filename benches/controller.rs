//! km controller-manager benchmarks (issue 7): the endpoints controller.
//!
//! An in-process km apiserver holds N Services, each selecting 3 running,
//! ready pods with host port annotations (on 3 hosts, the same host port).
//!
//! * Computation: one full resync's worth of desired state (Endpoints and
//!   slices of every Service, from the pods), in memory; services per second.
//! * First sync: the controller starts with no Endpoints; time until all N
//!   Endpoints exist in the API (N Endpoints and N slices written);
//!   services per second. Target ≥ 1,000/s on a full resync.
//! * Change: one pod's readiness flipped in the API; time until its
//!   Service's Endpoints show it, p50 and p99 over many changes.
//! * Full resync: a second controller (a restart, or a new leader) starts
//!   with every Endpoints in place; time until it has synced all N Services
//!   (read from its /metrics), caches filled included; services per second.
//!
//! `cargo bench --bench controller` runs 1,000 Services; under `cargo test`
//! a small run (20) checks the paths.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[path = "../tests/mesos/support.rs"]
mod support;

#[derive(clap::Parser)]
struct ControllerCli {
    #[command(flatten)]
    args: km::controller::Args,
}

fn pod(svc: usize, i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{svc}-{i}"), "labels": {"app": format!("svc-{svc}")},
            "annotations": {"k8s.mesosphere.io/port_TCP_8080": (31000 + svc % 1000).to_string(),
                            "k8s.mesosphere.io/portName_TCP_http": (31000 + svc % 1000).to_string()}},
        "spec": {"nodeName": format!("agent-{i}"), "containers": [{"name": "c", "image": "i",
            "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "hostIP": format!("10.0.0.{}", i + 1),
            "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap()
}

fn service(svc: usize) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{svc}"), "namespace": "default", "uid": format!("u{svc}")},
        "spec": {"selector": {"app": format!("svc-{svc}")},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}
    }))
    .unwrap()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (services, changes) = if benching { (1000, 200) } else { (20, 5) };
    km::mesos::scheduler::install_crypto_provider();

    // Computation alone.
    let svcs: Vec<Service> = (0..services).map(service).collect();
    let mut pods: Vec<Pod> = Vec::new();
    for s in 0..services {
        for i in 0..3 {
            let mut p = pod(s, i);
            p.metadata.namespace = Some("default".into());
            pods.push(p);
        }
    }
    let started = Instant::now();
    let rounds = 3;
    for _ in 0..rounds {
        for s in &svcs {
            let d = km::controller::endpoints::compute::compute(s, &pods, true).unwrap();
            assert_eq!(d.slices.len(), 1);
        }
    }
    let took = started.elapsed() / rounds;
    println!(
        "endpoints computation: {services} services over {} pods (all pods scanned per service) in {:.1} ms = {:.0} services/s",
        pods.len(),
        took.as_secs_f64() * 1e3,
        services as f64 / took.as_secs_f64()
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        let (kubeconfig, client) = support::apiserver(dir.path(), stop.clone()).await;
        let pods_api: Api<Pod> = Api::namespaced(client.clone(), "default");
        let svc_api: Api<Service> = Api::namespaced(client.clone(), "default");
        let eps_api: Api<Endpoints> = Api::namespaced(client.clone(), "default");
        let setup = Instant::now();
        let sem = Arc::new(tokio::sync::Semaphore::new(32));
        let mut writes = tokio::task::JoinSet::new();
        for s in 0..services {
            for i in 0..3 {
                let (api, sem) = (pods_api.clone(), sem.clone());
                writes.spawn(async move {
                    let _permit = sem.acquire().await.unwrap();
                    let p = pod(s, i);
                    api.create(&PostParams::default(), &p).await.unwrap();
                    let status = json!({"status": p.status});
                    api.patch_status(&p.metadata.name.unwrap(), &PatchParams::default(), &Patch::Merge(&status))
                        .await
                        .unwrap();
                });
            }
            let (api, sem) = (svc_api.clone(), sem.clone());
            writes.spawn(async move {
                let _permit = sem.acquire().await.unwrap();
                let mut svc = service(s);
                svc.metadata.uid = None;
                svc.metadata.namespace = None;
                api.create(&PostParams::default(), &svc).await.unwrap();
            });
        }
        while let Some(r) = writes.join_next().await {
            r.unwrap();
        }
        println!(
            "setup: {services} services and {} pods written in {:.1} s",
            services * 3,
            setup.elapsed().as_secs_f64()
        );

        // First sync: every Endpoints and slice written.
        let args = <ControllerCli as clap::Parser>::parse_from([
            "km", "--kubeconfig", kubeconfig.to_str().unwrap(), "--controllers", "endpoints",
            "--leader-elect=false", "--port", "0", "--concurrent-syncs", "16",
        ])
        .args;
        let started = Instant::now();
        let first = stop.child_token();
        tokio::spawn(km::controller::run(args, first.clone()));
        loop {
            // Complete: each Endpoints lists its Service's 3 pods.
            let n = eps_api
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .filter(|e| {
                    e.subsets.iter().flatten().flat_map(|s| s.addresses.iter().flatten()).count() == 3
                })
                .count();
            if n >= services {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(300), "only {n} complete Endpoints after 300 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = started.elapsed();
        println!(
            "first sync: {services} Endpoints (+ {services} slices) written in {:.2} s = {:.0} services/s (target >= 1000/s), controller start included",
            took.as_secs_f64(),
            services as f64 / took.as_secs_f64()
        );

        // Changes: flip one pod's readiness, wait until its Endpoints show it.
        let mut lat = Vec::new();
        let mut writes = Vec::new();
        for c in 0..changes {
            let s = (c * 7919) % services;
            let name = format!("svc-{s}-0");
            let ready = c % 2 == 1;
            let status = json!({"status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
            let t = Instant::now();
            pods_api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
            writes.push(t.elapsed().as_secs_f64() * 1e3);
            let svc_name = format!("svc-{s}");
            loop {
                let e = eps_api.get(&svc_name).await.unwrap();
                let not_ready = e
                    .subsets
                    .iter()
                    .flatten()
                    .flat_map(|s| s.not_ready_addresses.iter().flatten())
                    .any(|a| a.ip == "10.0.0.1");
                if not_ready != ready {
                    break;
                }
                assert!(t.elapsed() < Duration::from_secs(30), "change {c} not seen");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        lat.sort_by(f64::total_cmp);
        writes.sort_by(f64::total_cmp);
        println!(
            "change: pod readiness → Endpoints with {services} services: p50 {:.1} ms, p99 {:.1} ms over {changes} changes \
             (the pod's own status write, a durable API write like the controller's, took p50 {:.1} ms)",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            percentile(&writes, 0.5)
        );

        // Full resync: a new controller finds everything in place.
        first.cancel();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let args = <ControllerCli as clap::Parser>::parse_from([
            "km", "--kubeconfig", kubeconfig.to_str().unwrap(), "--controllers", "endpoints",
            "--leader-elect=false", "--address", "127.0.0.1", "--port", &port.to_string(),
            "--concurrent-syncs", "16",
        ])
        .args;
        let started = Instant::now();
        tokio::spawn(km::controller::run(args, stop.clone()));
        let metrics = format!("http://127.0.0.1:{port}/metrics");
        loop {
            let synced = match reqwest::get(&metrics).await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            }
            .lines()
            .find_map(|l| l.strip_prefix("km_controller_syncs_total{controller=\"endpoints\",result=\"success\"} "))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
            if synced >= services as f64 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(300), "only {synced} syncs after 300 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = started.elapsed();
        let unchanged = eps_api.list(&ListParams::default()).await.unwrap().items.len();
        assert_eq!(unchanged, services);
        println!(
            "full resync: {services} Services synced (Endpoints already in place) in {:.2} s = {:.0} services/s (target >= 1000/s), controller start and cache fill included",
            took.as_secs_f64(),
            services as f64 / took.as_secs_f64()
        );
        stop.cancel();
    });
}
