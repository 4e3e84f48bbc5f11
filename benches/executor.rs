//! km executor benchmarks (issue 6's targets), against real Docker.
//!
//! The cluster is the end-to-end tests' (tests/mesos/km_executor.rs): an
//! in-process km apiserver, dev-master, dev-agent and scheduler; the agent
//! starts `km executor` (this build's km binary) as a real process, which
//! runs the pods on Docker (image km-test/busybox:latest, one container
//! `sleep 3600` per pod, cpu 100m, memory 16Mi).
//!
//! * Docker alone: the same containers (km's pause image as infra plus the
//!   busybox container joined to its network, with the pod's cpu quota and
//!   memory limit), created and started through km's Docker client: one pod at a time (median of the per-pod times), and
//!   all pods of the burst at once (wall time).
//! * LAUNCH → TASK_RUNNING: pods created one at a time; the executor logs
//!   each task's time from LAUNCH to TASK_RUNNING (`launch_ms`). The
//!   overhead is its median minus Docker's per-pod median. Target ≤ 50 ms.
//! * Burst: N pods created at once; the time from the first create until all
//!   are Running in the API, against Docker alone for the same containers.
//!   Target ≤ 1.5×.
//! * RSS of the executor worker (and of its supervisor) with the pods of the
//!   sequential phase running. Target ≤ 30 MB with 20 pods.
//!
//! `cargo bench --bench executor` runs the full sizes (20 sequential pods,
//! a burst of 100); under `cargo test` a small run (2 and 4) checks the paths.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig};
use serde_json::json;

#[path = "../tests/mesos/support.rs"]
mod support;

#[path = "../tests/mesos/km_executor.rs"]
mod km_executor;

use km::executor::runtime::Runtime;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// The pod's limits (cpu 100m, memory 16Mi) as km applies them: container
/// startup runs inside the CFS quota, so the baseline must have it too.
fn limits() -> HostConfig {
    HostConfig {
        cpu_shares: Some(102),
        cpu_period: Some(100_000),
        cpu_quota: Some(10_000),
        memory: Some(16 << 20),
        ..Default::default()
    }
}

/// Creates and starts one pod's containers on Docker alone; returns their ids.
async fn docker_pod(rt: &Runtime, pause: &str, name: &str) -> Vec<String> {
    let infra = rt
        .create(
            &format!("{name}-infra"),
            ContainerCreateBody {
                image: Some(pause.to_string()),
                labels: Some(HashMap::from([("km-bench".to_string(), "1".to_string())])),
                host_config: Some(HostConfig {
                    ipc_mode: Some("shareable".into()),
                    ..limits()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    rt.start(&infra).await.unwrap();
    let c = rt
        .create(
            &format!("{name}-c"),
            ContainerCreateBody {
                image: Some(km_executor::IMAGE.to_string()),
                cmd: Some(vec!["sleep".into(), "3600".into()]),
                labels: Some(HashMap::from([("km-bench".to_string(), "1".to_string())])),
                host_config: Some(HostConfig {
                    network_mode: Some(format!("container:{infra}")),
                    ipc_mode: Some(format!("container:{infra}")),
                    ..limits()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    rt.start(&c).await.unwrap();
    vec![infra, c]
}

async fn remove_all(rt: &Runtime, ids: Vec<String>) {
    let jobs = ids.iter().map(|id| async move {
        let _ = rt.remove(id).await;
    });
    futures::future::join_all(jobs).await;
}

fn pod(name: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "spec": {"schedulerName": "k8sm-scheduler", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": km_executor::IMAGE, "command": ["sleep", "3600"],
                "imagePullPolicy": "IfNotPresent", "resources": {"limits": {"cpu": "100m", "memory": "16Mi"}}}]}
    })
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn parent(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            rest.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// `launch_ms` of each task from the executor's log in the agent's work dir.
fn launch_times(dir: &std::path::Path) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().is_some_and(|n| n == "stderr") {
                for line in std::fs::read_to_string(&p).unwrap_or_default().lines() {
                    if !line.contains("task running") {
                        continue;
                    }
                    let field = |k: &str| {
                        let at = line.find(k)? + k.len();
                        let v: String = line[at..]
                            .chars()
                            .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                            .collect();
                        Some(v.trim_matches('"').to_string())
                    };
                    if let (Some(t), Some(ms)) = (field("task="), field("launch_ms=")) {
                        out.insert(t, ms.parse().unwrap_or(f64::NAN));
                    }
                }
            }
        }
    }
    out
}

async fn all_running(n: &km_executor::Node, names: &[String]) -> bool {
    let list = n.pods().list(&Default::default()).await.unwrap();
    let running = list
        .items
        .iter()
        .filter(|p| names.contains(p.metadata.name.as_ref().unwrap()))
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count();
    running == names.len()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (seq, burst) = if full { (20, 100) } else { (2, 4) };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let docker = Runtime::connect(None).await.expect("Docker runs here");
        let pause = docker.ensure_pause_image().await.unwrap();
        let tag = std::process::id();
        // Docker alone, one pod at a time.
        let mut single = Vec::new();
        let mut ids = Vec::new();
        for i in 0..seq {
            let t = Instant::now();
            ids.extend(docker_pod(&docker, &pause, &format!("km-bench-{tag}-s{i}")).await);
            single.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        remove_all(&docker, std::mem::take(&mut ids)).await;
        let docker_single = median(single);
        // Docker alone, the burst at once.
        let t = Instant::now();
        let jobs = (0..burst).map(|i| {
            let (docker, pause) = (docker.clone(), pause.clone());
            async move { docker_pod(&docker, &pause, &format!("km-bench-{tag}-b{i}")).await }
        });
        let made = futures::future::join_all(jobs).await;
        let docker_burst = t.elapsed().as_secs_f64();
        remove_all(&docker, made.into_iter().flatten().collect()).await;

        // km: pods one at a time.
        let n = km_executor::node("cpus:64;mem:65536;ports:[31000-32000]", &[]).await;
        let mut names = Vec::new();
        for i in 0..seq {
            let name = format!("seq-{i}");
            n.create(pod(&name)).await;
            names.push(name.clone());
            let t = Instant::now();
            while !all_running(&n, std::slice::from_ref(&name)).await {
                assert!(t.elapsed() < Duration::from_secs(60), "pod {name} did not run");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let workers = n.workers();
        assert_eq!(workers.len(), 1, "one executor worker");
        let worker_rss = rss_kb(workers[0]) as f64 / 1024.0;
        let supervisor_rss = rss_kb(parent(workers[0])) as f64 / 1024.0;
        let launch = launch_times(n._dir.path());
        let launch_ms: Vec<f64> = launch.values().copied().collect();
        assert!(launch_ms.len() >= seq, "launch times of {} tasks found", launch_ms.len());
        let launch_median = median(launch_ms.clone());
        // km: the burst at once.
        let burst_names: Vec<String> = (0..burst).map(|i| format!("burst-{i}")).collect();
        let t = Instant::now();
        let creates = burst_names.iter().map(|name| n.create(pod(name)));
        futures::future::join_all(creates).await;
        while !all_running(&n, &burst_names).await {
            assert!(t.elapsed() < Duration::from_secs(600), "the burst did not run");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let km_burst = t.elapsed().as_secs_f64();
        let burst_worker_rss = rss_kb(workers[0]) as f64 / 1024.0;
        n.shutdown().await;

        println!("executor benchmark ({} mode)", if full { "full" } else { "small" });
        println!(
            "  Docker alone, one pod (infra + container) at a time: median {docker_single:.1} ms over {seq}"
        );
        println!(
            "  km LAUNCH -> TASK_RUNNING, one pod at a time: median {launch_median:.1} ms over {} (overhead over Docker {:.1} ms; target <= 50)",
            launch_ms.len(),
            launch_median - docker_single
        );
        println!(
            "  burst of {burst} pods: Docker alone {docker_burst:.2} s, km (create -> all Running) {km_burst:.2} s, ratio {:.2} (target <= 1.5)",
            km_burst / docker_burst
        );
        println!(
            "  executor worker RSS with {seq} pods: {worker_rss:.1} MB (supervisor {supervisor_rss:.1} MB; target <= 30 MB); with {} pods: {burst_worker_rss:.1} MB",
            seq + burst
        );
    });
}
