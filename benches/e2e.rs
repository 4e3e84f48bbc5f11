//! End-to-end benchmark of `km local` (issue 8's targets), on real Docker.
//!
//! `make bench-e2e` runs `cargo bench --bench e2e`. The km binary is the one
//! cargo builds for this bench (`CARGO_BIN_EXE_km`: `target/release/km`
//! under `cargo bench`, `target/debug/km` under `cargo test`); the harness is
//! the end-to-end suite's (tests/e2e/support.rs), so km local runs exactly as
//! in the tests: a fresh data dir, free ports, one agent with
//! `cpus:32;mem:16384`, `--proxy-mode userspace`. Pods are `sleep 3600` in
//! `km-test/busybox:1` (scripts/test-deps.sh builds it) stating no
//! resources: km gives them its default limits, 0.25 cpu and 64 MB, enforced
//! by Docker. (A pod that requests only 10m cpu gets a 10m limit too, as
//! src/podtask/limits.rs says; under a 1 % CFS quota its containers take
//! seconds to start.)
//!
//! Figures, on stdout:
//! * cold start: spawning `km local` to its `km local is ready` line
//!   (target ≤ 2 s), then one pod created to Running (target ≤ 1 s later);
//! * burst: N pods created at once (concurrent creates through the API) to
//!   all Running, with per-pod p50 and p99 (from the pod's create request to
//!   the first watch event showing it Running), side by side with Docker
//!   alone starting the same containers in the same run: per pod, km's pause
//!   image as infra plus the busybox container joined to its network, with
//!   the same cpu shares, CFS quota and memory limit, all pods at once
//!   through the Docker API (as the executor does). Target: km ≤ 1.5×
//!   Docker alone;
//! * memory with the burst running: the sum of VmRSS (and of Pss, which
//!   counts shared pages once) over every km process: km local, its
//!   children and the executors. Target ≤ 150 MB.
//!
//! Everything is removed at the end. Under `cargo test` (no `--bench`) a
//! small run (a burst of 3) checks the paths; `cargo bench` bursts 100.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::watcher;
use serde_json::json;

#[path = "../tests/e2e/support.rs"]
mod support;

use km::executor::runtime::Runtime;
use support::{IMAGE, Local, Setup, WAIT, phase, proc_kb};

/// A pod of the benchmark: it states no resources, so km gives its
/// container the scheduler's defaults as requests and limits (0.25 cpu,
/// 64 MB), which Docker enforces.
fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "sleeper", "image": IMAGE, "command": ["sleep", "3600"]}]
        }
    }))
    .unwrap()
}

/// The pod's container limits as km applies them (see [`pod`]): cpu shares
/// 256, CFS quota 25 ms per 100 ms, memory 64 MB.
fn limits() -> HostConfig {
    HostConfig {
        cpu_shares: Some(256),
        cpu_period: Some(100_000),
        cpu_quota: Some(25_000),
        memory: Some(64 << 20),
        ..Default::default()
    }
}

/// When each pod of `ns` was first seen Running, fed by a watch.
struct RunningWatch {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningWatch {
    /// Starts watching and returns once the watch has listed the namespace.
    async fn start(api: Api<Pod>) -> RunningWatch {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let (listed, done) = tokio::sync::oneshot::channel();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut listed = Some(listed);
            let mut events = watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(l) = listed.take() {
                            let _ = l.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))
                        if phase(&p) == "Running" =>
                    {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        record
                            .lock()
                            .unwrap()
                            .entry(name)
                            .or_insert_with(Instant::now);
                    }
                    _ => {}
                }
            }
        });
        done.await.expect("the pod watch lists the namespace");
        RunningWatch { seen, task }
    }

    /// When `name` was first seen Running.
    fn running_at(&self, name: &str) -> Option<Instant> {
        self.seen.lock().unwrap().get(name).copied()
    }
}

impl Drop for RunningWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Creates `names` at once; returns each pod's time from its create request
/// to Running, and the time from the first request to the last Running.
async fn run_pods(api: &Api<Pod>, watch: &RunningWatch, names: &[String]) -> (Vec<f64>, f64) {
    let began = Instant::now();
    let creates = names.iter().map(|name| {
        let api = api.clone();
        async move {
            let sent = Instant::now();
            api.create(&PostParams::default(), &pod(name))
                .await
                .unwrap_or_else(|e| panic!("create pod {name}: {e}"));
            (name.clone(), sent)
        }
    });
    let sent: Vec<(String, Instant)> = futures::future::join_all(creates).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let done = sent
            .iter()
            .filter(|(n, _)| watch.running_at(n).is_some())
            .count();
        if done == sent.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {} pods Running after {WAIT:?}",
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut last = began;
    let per_pod = sent
        .iter()
        .map(|(n, t)| {
            let at = watch.running_at(n).unwrap();
            last = last.max(at);
            at.duration_since(*t).as_secs_f64()
        })
        .collect();
    (per_pod, last.duration_since(began).as_secs_f64())
}

/// One pod's containers on Docker alone: km's pause image as infra (under
/// the pod's limits, as km's per-pod cgroup puts it), the busybox
/// container in its network namespace with the container's limits.
/// Returns the ids and the time it took.
async fn docker_pod(rt: &Runtime, pause: &str, name: &str, tag: &str) -> (Vec<String>, f64) {
    let t = Instant::now();
    let labels = Some(HashMap::from([(
        "km-bench-e2e".to_string(),
        tag.to_string(),
    )]));
    let infra = rt
        .create(
            &format!("{name}-infra"),
            ContainerCreateBody {
                image: Some(pause.to_string()),
                labels: labels.clone(),
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
    let app = rt
        .create(
            &format!("{name}-sleeper"),
            ContainerCreateBody {
                image: Some(IMAGE.to_string()),
                cmd: Some(vec!["sleep".into(), "3600".into()]),
                labels,
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
    rt.start(&app).await.unwrap();
    (vec![infra, app], t.elapsed().as_secs_f64())
}

/// The `q` quantile of `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// RSS and Pss in MB of every km process of `setup`, by role.
fn memory(setup: &Setup) -> BTreeMap<String, (usize, f64, f64)> {
    let mut by_role: BTreeMap<String, (usize, f64, f64)> = BTreeMap::new();
    for pid in setup.processes() {
        let cmd = support::cmdline(pid);
        let role = cmd.split(' ').nth(1).unwrap_or("?").to_string();
        let e = by_role.entry(role).or_default();
        e.0 += 1;
        e.1 += proc_kb(pid, "status", "VmRSS:") as f64 / 1024.0;
        e.2 += proc_kb(pid, "smaps_rollup", "Pss:") as f64 / 1024.0;
    }
    by_role
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let burst = if full { 100 } else { 3 };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        // Cold start, then one pod.
        let mut setup = Setup::new(1);
        // Room for the burst at the default limits (0.25 cpu, 64 MB per pod).
        setup.agent_resources = "cpus:32;mem:16384".into();
        let local = Local::start(setup).await;
        let ready = local.ready_after.as_secs_f64();
        let ready_line = local.stdout().first().cloned().unwrap_or_default();
        let ns = local.namespace("bench").await;
        let api: Api<Pod> = local.pods(&ns);
        let watch = RunningWatch::start(api.clone()).await;
        let (first, _) = run_pods(&api, &watch, &["first".to_string()]).await;
        let first_pod = first[0];

        // Docker alone: the burst's containers, all pods at once.
        let docker = Runtime::connect(None).await.expect("Docker runs here");
        let pause = docker.ensure_pause_image().await.unwrap();
        let tag = local.setup().tag.clone();
        let t = Instant::now();
        let jobs = (0..burst).map(|i| {
            let (docker, pause, tag) = (docker.clone(), pause.clone(), tag.clone());
            async move { docker_pod(&docker, &pause, &format!("km-bench-e2e-{tag}-{i}"), &tag).await }
        });
        let made = futures::future::join_all(jobs).await;
        let docker_wall = t.elapsed().as_secs_f64();
        let docker_per_pod: Vec<f64> = made.iter().map(|(_, s)| *s).collect();
        let ids: Vec<String> = made.into_iter().flat_map(|(ids, _)| ids).collect();
        let removals = ids.iter().map(|id| docker.remove(id));
        for r in futures::future::join_all(removals).await {
            r.expect("the benchmark's own containers are removed");
        }

        // km: the burst at once.
        let names: Vec<String> = (0..burst).map(|i| format!("burst-{i:03}")).collect();
        let (km_per_pod, km_wall) = run_pods(&api, &watch, &names).await;

        // Memory with the burst running.
        let mem = memory(local.setup());
        let (rss, pss): (f64, f64) = mem.values().fold((0.0, 0.0), |a, m| (a.0 + m.1, a.1 + m.2));
        drop(watch);

        // Clean up: the pods, then km local; nothing of them is left.
        local
            .kubectl(&["-n", &ns, "delete", "pods", "--all", "--timeout=300s"])
            .await;
        let (status, setup) = local.stop("TERM").await;
        assert!(status.success(), "km local exits 0: {status}");
        assert!(setup.processes().is_empty(), "no km process is left");
        let left = support::containers(true, &[("io.kubernetes.pod.namespace", &ns)]).await;
        assert!(left.is_empty(), "containers left: {left:?}");

        println!(
            "km local end-to-end benchmark ({} mode, km binary {})",
            if full { "full" } else { "small" },
            support::km_binary().display()
        );
        println!(
            "  cold start to ready: {ready:.2} s (target <= 2 s); km local says: {ready_line}"
        );
        println!("  then one pod created to Running: {first_pod:.2} s (target <= 1 s)");
        println!(
            "  burst of {burst} pods: km {km_wall:.2} s to all Running (per pod p50 {:.2} s, p99 {:.2} s); \
             Docker alone {docker_wall:.2} s (per pod p50 {:.2} s, p99 {:.2} s); ratio {:.2} (target <= 1.5)",
            quantile(&km_per_pod, 0.5),
            quantile(&km_per_pod, 0.99),
            quantile(&docker_per_pod, 0.5),
            quantile(&docker_per_pod, 0.99),
            km_wall / docker_wall
        );
        println!(
            "  memory of all km processes with {} pods running: RSS {rss:.1} MB (target <= 150 MB), Pss {pss:.1} MB",
            burst + 1
        );
        for (role, (n, rss, pss)) in &mem {
            println!("    {role:<20} {n} process(es)  RSS {rss:6.1} MB  Pss {pss:6.1} MB");
        }
    });
}
