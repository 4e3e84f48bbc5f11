//! km scheduler benchmarks (W1's end-to-end placement and W5's pending-pod
//! memory), with `km scheduler` as a separate process (the km binary built
//! for this bench) against an in-process km apiserver (plain HTTP on
//! loopback, store on the build directory's disk) and an in-process
//! dev-master with hollow agents.
//!
//! * end to end: 1,000 hollow agents of `cpus:32;mem:65536;ports:[31000-32000]`,
//!   allocation interval 100 ms, hollow task delay 10 ms. 10,000 pods
//!   (one busybox container, cpu 100m, memory 64Mi) are created from 64
//!   concurrent clients; measured from the first create until every pod
//!   carries the `k8s.mesosphere.io/taskId` annotation (seen by a watch) and
//!   until the master's `/state` shows as many tasks TASK_RUNNING (polled
//!   every 200 ms). No task name may appear twice. Target: ≥ 1,000 pods/s
//!   end to end (10,000 pods in ≤ 10 s). Anchor: upstream kube-scheduler's
//!   CI floor is 810 pods/s on 6 CPUs. The scheduler's RSS is printed.
//! * pending memory: no agents, 100,000 pods for the scheduler; its RSS
//!   before the pods and once `/debug/state` shows them all queued, and the
//!   bytes per pending pod. Target: RSS ≤ 200 MB with 100,000 pending pods.
//!
//! `cargo bench --bench scheduler` runs the full sizes; under `cargo test`
//! a small run (20 agents, 100 pods; 1,000 pending pods) checks the code
//! paths. The scheduler's stderr goes to a file in the cluster's temporary
//! directory; its tail is printed when anything fails.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[path = "support/machine.rs"]
mod machine;

const TASK_ID: &str = "k8s.mesosphere.io/taskId";

struct Sizes {
    agents: u32,
    e2e_pods: usize,
    pending_pods: usize,
    /// Bound of every wait.
    timeout: Duration,
}

#[derive(clap::Parser)]
struct ApiCli {
    #[command(flatten)]
    args: km::apiserver::Args,
}

#[derive(clap::Parser)]
struct MasterCli {
    #[command(flatten)]
    args: km::devcluster::master::Args,
}

fn main() {
    // `cargo bench` passes --bench; under `cargo test` a short run checks the code paths.
    let benching = std::env::args().any(|a| a == "--bench");
    let sizes = if benching {
        Sizes {
            agents: 1_000,
            e2e_pods: 10_000,
            pending_pods: 100_000,
            timeout: Duration::from_secs(300),
        }
    } else {
        Sizes {
            agents: 20,
            e2e_pods: 100,
            pending_pods: 1_000,
            timeout: Duration::from_secs(20),
        }
    };
    println!(
        "{}\nworkload: km scheduler (separate process) + in-process km apiserver + dev-master with hollow agents",
        machine::describe()
    );
    km::mesos::scheduler::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        end_to_end(&sizes).await;
        pending_memory(&sizes).await;
    });
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"schedulerName": "k8sm-scheduler", "containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                          "limits": {"cpu": "100m", "memory": "64Mi"}}}]}
    }))
    .unwrap()
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// An in-process apiserver and dev-master, stopped by `stop`.
struct Cluster {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    client: kube::Client,
    master: SocketAddr,
    stop: CancellationToken,
}

async fn cluster(agents: u32) -> Cluster {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let stop = CancellationToken::new();
    let data = dir.path().join("api");
    let api_args = <ApiCli as clap::Parser>::parse_from([
        "km",
        "--data-dir",
        data.to_str().unwrap(),
        "--no-tls",
        "--insecure-port",
        "0",
    ])
    .args;
    let api = km::apiserver::start(api_args, stop.clone())
        .await
        .expect("apiserver starts");
    let url = format!("http://{}", api.insecure_addr.unwrap());
    tokio::spawn(api.wait());
    let kubeconfig = dir.path().join("kubeconfig");
    km::apiserver::kubeconfig::write_kubeconfig(&kubeconfig, &url, None, None).unwrap();
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let agents = agents.to_string();
    let master_args = <MasterCli as clap::Parser>::parse_from([
        "km",
        "--ip",
        "127.0.0.1",
        "--port",
        "0",
        "--allocation-interval",
        "100ms",
        "--hollow-agents",
        &agents,
        "--hollow-resources",
        "cpus:32;mem:65536;ports:[31000-32000]",
        "--hollow-task-delay",
        "10ms",
    ])
    .args;
    let master = km::devcluster::master::start(master_args, stop.clone())
        .await
        .expect("dev-master starts");
    Cluster {
        dir,
        kubeconfig,
        client,
        master: master.addr,
        stop,
    }
}

impl Cluster {
    async fn master_state(&self, http: &reqwest::Client) -> Value {
        http.get(format!("http://{}/state", self.master))
            .send()
            .await
            .expect("GET master /state")
            .json()
            .await
            .expect("master /state is JSON")
    }
}

/// The `km scheduler` child process; killed when dropped, and on a panic
/// the tail of its stderr is printed first.
struct Scheduler {
    child: Child,
    base: String,
    stderr: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Scheduler {
    fn start(c: &Cluster, name: &str) -> Scheduler {
        let port = free_port();
        let stderr = c.dir.path().join(format!("{name}.stderr"));
        let child = Command::new(env!("CARGO_BIN_EXE_km"))
            .args([
                "scheduler",
                "--mesos-master",
                &format!("http://{}", c.master),
                "--kubeconfig",
                c.kubeconfig.to_str().unwrap(),
                "--port",
                &port.to_string(),
                "--km-path",
                "file:///usr/bin/km",
                "--initial-pod-backoff",
                "200ms",
                "--offer-refuse-seconds",
                "0.2",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("scheduler stderr file"))
            .spawn()
            .expect("km scheduler starts");
        Scheduler {
            child,
            base: format!("http://127.0.0.1:{port}"),
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// VmRSS of the child, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("scheduler's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn stderr_tail(&self, n: usize) -> String {
        let text = self.stderr_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Panics when the child has exited.
    fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("km scheduler exited early: {status}");
        }
    }

    /// `/debug/state`, or `None` while it does not answer.
    async fn debug_state(&self, http: &reqwest::Client) -> Option<Value> {
        let r = http
            .get(format!("{}/debug/state", self.base))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    async fn wait_subscribed(&mut self, http: &reqwest::Client, timeout: Duration) -> Duration {
        let t = Instant::now();
        let mut last = None;
        while t.elapsed() < timeout {
            self.check_alive();
            last = self.debug_state(http).await;
            if last.as_ref().is_some_and(|s| s["subscribed"] == true) {
                return t.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("km scheduler not subscribed after {timeout:?}; last /debug/state: {last:?}");
    }

    /// The scheduler's own counters from `/metrics` (buckets left out).
    async fn metrics(&self, http: &reqwest::Client) -> String {
        let text = match http.get(format!("{}/metrics", self.base)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => return format!("  (no /metrics: {e})"),
        };
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.contains("_bucket"))
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Warnings and errors it logged: their count and the last few.
    fn log_summary(&self) -> String {
        let text = self.stderr_text();
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        let mut out = format!(
            "scheduler stderr: {} lines, {} WARN/ERROR",
            text.lines().count(),
            bad.len()
        );
        for l in &bad[bad.len().saturating_sub(5)..] {
            out.push_str("\n  ");
            out.push_str(l);
        }
        out
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- km scheduler (pid {}) stderr, last 40 lines ({}) ---\n{}\n---",
                self.pid(),
                self.stderr.display(),
                self.stderr_tail(40)
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates `n` pods named `<prefix>-<i>` in `default` from 64 concurrent
/// requests on one client; returns how long that took.
async fn create_pods(client: &kube::Client, prefix: &str, n: usize, timeout: Duration) -> Duration {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut creates = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let p = pod(&format!("{prefix}-{i:06}"));
            async move { api.create(&PostParams::default(), &p).await }
        })
        .buffer_unordered(64);
    let mut done = 0usize;
    loop {
        match tokio::time::timeout_at(deadline, creates.next()).await {
            Ok(Some(Ok(_))) => done += 1,
            Ok(Some(Err(e))) => panic!("creating pod {} of {n}: {e}", done + 1),
            Ok(None) => break,
            Err(_) => panic!("creating {n} pods: only {done} created after {timeout:?}"),
        }
    }
    started.elapsed()
}

#[derive(Clone, Copy, Default, Debug)]
struct Seen {
    listed: bool,
    annotated: usize,
}

/// Watches pods in `default`, counting those that carry the taskId annotation.
fn watch_annotations(client: &kube::Client) -> tokio::sync::watch::Receiver<Seen> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (tx, rx) = tokio::sync::watch::channel(Seen::default());
    tokio::spawn(async move {
        let mut names = HashSet::new();
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
        loop {
            let ev = tokio::select! {
                _ = tx.closed() => break,
                ev = events.next() => match ev {
                    Some(ev) => ev,
                    None => break,
                },
            };
            match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                    let has = p
                        .metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key(TASK_ID));
                    if has && names.insert(p.metadata.name.unwrap_or_default()) {
                        tx.send_modify(|s| s.annotated = names.len());
                    }
                }
                Ok(watcher::Event::InitDone) => tx.send_modify(|s| s.listed = true),
                Ok(_) => {}
                Err(e) => eprintln!("bench pod watch: {e}"),
            }
        }
    });
    rx
}

/// Task names and how often each appears, and how many tasks are TASK_RUNNING.
fn tasks_in(state: &Value) -> (BTreeMap<String, usize>, usize) {
    let mut names = BTreeMap::new();
    let mut running = 0;
    for f in state["frameworks"].as_array().into_iter().flatten() {
        for t in f["tasks"].as_array().into_iter().flatten() {
            *names
                .entry(t["name"].as_str().unwrap_or_default().to_string())
                .or_insert(0) += 1;
            if t["state"] == "TASK_RUNNING" {
                running += 1;
            }
        }
    }
    (names, running)
}

async fn end_to_end(sizes: &Sizes) {
    let n = sizes.e2e_pods;
    println!(
        "\nend_to_end: {} hollow agents of cpus:32;mem:65536;ports:[31000-32000], allocation interval 100ms, \
         hollow task delay 10ms; {n} pods (busybox, cpu 100m, memory 64Mi) from 64 concurrent clients",
        sizes.agents
    );
    let c = cluster(sizes.agents).await;
    let http = reqwest::Client::new();
    let mut sched = Scheduler::start(&c, "e2e");
    let took = sched.wait_subscribed(&http, sizes.timeout).await;
    println!(
        "scheduler pid {} subscribed after {:.2} s, RSS {}",
        sched.pid(),
        took.as_secs_f64(),
        mb(sched.rss())
    );

    let mut seen = watch_annotations(&c.client);
    tokio::time::timeout(sizes.timeout, seen.wait_for(|s| s.listed))
        .await
        .expect("the bench's pod watch lists within the timeout")
        .expect("pod watch running");

    let start = Instant::now();
    let create = async {
        let took = create_pods(&c.client, "e2e", n, sizes.timeout).await;
        println!(
            "creates: {n} pods in {:.2} s = {:.0} creates/s",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );
    };
    let annotated = async {
        let mut seen = seen.clone();
        let waited = tokio::time::timeout(sizes.timeout, seen.wait_for(|s| s.annotated >= n))
            .await
            .map(|r| r.map(|_| ()));
        match waited {
            Ok(r) => {
                r.expect("pod watch running");
                start.elapsed()
            }
            Err(_) => panic!(
                "only {} of {n} pods annotated with {TASK_ID} after {:?}",
                seen.borrow().annotated,
                sizes.timeout
            ),
        }
    };
    let running = async {
        let mut last = 0;
        while start.elapsed() < sizes.timeout {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (_, r) = tasks_in(&c.master_state(&http).await);
            last = r;
            if r >= n {
                return start.elapsed();
            }
        }
        panic!(
            "only {last} of {n} tasks TASK_RUNNING in the master's /state after {:?}",
            sizes.timeout
        );
    };
    let ((), annotated, running) = tokio::join!(create, annotated, running);
    sched.check_alive();
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "annotated: all {n} pods carry {TASK_ID} {:.2} s after the first create = {:.0} pods/s (target >= 1000; anchor: kube-scheduler CI floor 810 pods/s on 6 CPUs)",
        annotated.as_secs_f64(),
        rate(annotated)
    );
    println!(
        "running: {n} tasks TASK_RUNNING in the master's /state {:.2} s after the first create = {:.0} pods/s end to end (target >= 1000)",
        running.as_secs_f64(),
        rate(running)
    );

    // Anything launched twice shows up as a second task of the same name.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (names, running_now) = tasks_in(&c.master_state(&http).await);
    let duplicates = names.values().filter(|&&k| k > 1).count();
    let debug = sched.debug_state(&http).await;
    println!(
        "tasks in /state: {} names, {running_now} running, {duplicates} names launched more than once; scheduler /debug/state {}",
        names.len(),
        debug.map(|d| d.to_string()).unwrap_or_default()
    );
    println!("scheduler RSS at the end: {}", mb(sched.rss()));
    println!("scheduler /metrics:\n{}", sched.metrics(&http).await);
    println!("{}", sched.log_summary());
    assert_eq!(
        duplicates,
        0,
        "task names launched more than once: {:?}",
        names
            .iter()
            .filter(|(_, k)| **k > 1)
            .take(10)
            .collect::<Vec<_>>()
    );
    drop(seen);
    drop(sched);
    c.stop.cancel();
}

async fn pending_memory(sizes: &Sizes) {
    let n = sizes.pending_pods;
    println!("\npending_memory: no agents, {n} pods for the scheduler (cpu 100m, memory 64Mi)");
    let c = cluster(0).await;
    let http = reqwest::Client::new();
    let mut sched = Scheduler::start(&c, "pending");
    sched.wait_subscribed(&http, sizes.timeout).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = sched.rss();

    let start = Instant::now();
    let took = create_pods(&c.client, "pending", n, sizes.timeout).await;
    println!(
        "creates: {n} pods in {:.2} s = {:.0} creates/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    let mut last = None;
    loop {
        sched.check_alive();
        last = sched.debug_state(&http).await.or(last);
        let queued = last
            .as_ref()
            .and_then(|s| s["queued"].as_u64())
            .unwrap_or(0);
        if queued as usize == n {
            break;
        }
        if start.elapsed() > sizes.timeout {
            panic!(
                "/debug/state queued is {queued}, not {n}, {:?} after the first create; last /debug/state: {}",
                sizes.timeout,
                last.map(|s| s.to_string()).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let queued_after = start.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with = sched.rss();
    println!(
        "queued: all {n} pods in /debug/state {:.2} s after the first create",
        queued_after.as_secs_f64()
    );
    println!(
        "scheduler RSS: {} before the pods, {} with {n} pending (target <= 200 MB at 100,000) = {:.0} bytes per pending pod",
        mb(before),
        mb(with),
        with.saturating_sub(before) as f64 / n as f64
    );
    println!("{}", sched.log_summary());
    drop(sched);
    c.stop.cancel();
}
