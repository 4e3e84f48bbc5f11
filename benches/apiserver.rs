//! km apiserver benchmarks (W2's durable creates, W6 watch fan-out, W7's
//! LIST, memory per stored pod), against an in-process server over real
//! HTTP on loopback, with its store on the build directory's disk.
//!
//! * creates: 64 concurrent clients POST pods; throughput and latency.
//!   Targets: ≥ 3,000 durable creates/s, p99 ≤ 20 ms. Floor: one fsync
//!   per commit (measured here first, on the same disk).
//! * list: LIST of a namespace of 5,000 pods, 50 times. Target p99 ≤ 200 ms.
//! * watch: 1,000 watchers of one namespace while a writer makes 500
//!   changes/s; delivery latency from the write request to each watcher.
//!   Targets: p99 ≤ 50 ms, ≤ 20 kB per watcher.
//! * memory: RSS growth of the store per stored pod, beyond its JSON.
//!   Target ≤ 2 kB.
//!
//! `cargo bench --bench apiserver` runs the full sizes; under `cargo test`
//! a small run checks the code paths.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use km::apiserver::resources;
use km::apiserver::store::embedded::{Embedded, Options};
use km::apiserver::store::{Key, Op, Precondition, Storage, Write};
use serde_json::{Value, json};

#[path = "support/machine.rs"]
mod machine;

struct Sizes {
    creates: usize,
    list_pods: usize,
    lists: usize,
    watchers: usize,
    events_per_sec: usize,
    watch_secs: u64,
    memory_pods: usize,
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"],
            "ports": [{"containerPort": 8080, "name": "http"}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}}]}})
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir")
}

/// The floor: fsync latency of a small write on the store's disk.
fn fsync_floor(n: usize) {
    use std::io::Write as _;
    let dir = data_dir();
    let mut f = std::fs::File::create(dir.path().join("probe")).unwrap();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f.write_all(format!("{i}\n").as_bytes()).unwrap();
        f.sync_data().unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    let p50 = pct(&times, 0.5);
    println!(
        "floor: fsync of a small write on this disk p50 {} p99 {} -> at most {:.0} unbatched commits/s",
        ms(p50),
        ms(pct(&times, 0.99)),
        1.0 / p50.as_secs_f64().max(1e-6)
    );
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let sizes = if benching {
        Sizes {
            creates: 20_000,
            list_pods: 5_000,
            lists: 50,
            watchers: 1_000,
            events_per_sec: 500,
            watch_secs: 10,
            memory_pods: 20_000,
        }
    } else {
        Sizes {
            creates: 200,
            list_pods: 100,
            lists: 3,
            watchers: 10,
            events_per_sec: 50,
            watch_secs: 1,
            memory_pods: 200,
        }
    };
    println!("{}", machine::describe());
    fsync_floor(if benching { 200 } else { 5 });
    memory_per_pod(sizes.memory_pods);
    km::mesos::scheduler::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = data_dir();
        let stop = tokio_util::sync::CancellationToken::new();
        let args = <ArgsCli as clap::Parser>::parse_from([
            "km",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--no-tls",
            "--insecure-port",
            "0",
        ])
        .args;
        let server = km::apiserver::start(args, stop.clone()).await.unwrap();
        let base = format!("http://{}", server.insecure_addr.unwrap());
        for ns in ["load", "list", "watch"] {
            let c = reqwest::Client::new();
            let r = c
                .post(format!("{base}/api/v1/namespaces"))
                .json(&json!({"metadata": {"name": ns}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
        creates(&base, sizes.creates, 64).await;
        list(&base, sizes.list_pods, sizes.lists).await;
        watch(
            &base,
            sizes.watchers,
            sizes.events_per_sec,
            sizes.watch_secs,
        )
        .await;
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), server.wait()).await;
    });
}

#[derive(clap::Parser)]
struct ArgsCli {
    #[command(flatten)]
    args: km::apiserver::Args,
}

async fn creates(base: &str, total: usize, clients: usize) {
    let url = format!("{base}/api/v1/namespaces/load/pods");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..clients {
        let url = url.clone();
        let n = total / clients + usize::from(w < total % clients);
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut lat = Vec::with_capacity(n);
            for i in 0..n {
                let body = serde_json::to_vec(&pod(&format!("p-{w}-{i}"))).unwrap();
                let t = Instant::now();
                let r = c
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                let _ = r.bytes().await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let took = started.elapsed();
    lat.sort();
    println!(
        "creates: {total} pods from {clients} clients in {:.2} s = {:.0} durable creates/s; latency p50 {} p99 {} max {}",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(*lat.last().unwrap_or(&Duration::ZERO)),
    );
}

async fn list(base: &str, pods: usize, times: usize) {
    let url = format!("{base}/api/v1/namespaces/list/pods");
    let c = reqwest::Client::new();
    let mut futs = futures::stream::iter(0..pods)
        .map(|i| {
            let c = c.clone();
            let url = url.clone();
            async move {
                c.post(&url)
                    .json(&pod(&format!("l-{i}")))
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        })
        .buffer_unordered(64);
    while let Some(s) = futs.next().await {
        assert_eq!(s, 201);
    }
    let mut lat = Vec::new();
    let mut bytes = 0;
    for _ in 0..times {
        let t = Instant::now();
        let body = c.get(&url).send().await.unwrap().bytes().await.unwrap();
        lat.push(t.elapsed());
        bytes = body.len();
    }
    lat.sort();
    println!(
        "list: {pods} pods ({:.1} MB) x{times}: p50 {} p99 {} max {}",
        bytes as f64 / 1e6,
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(*lat.last().unwrap_or(&Duration::ZERO))
    );
}

async fn watch(base: &str, watchers: usize, rate: usize, secs: u64) {
    let url = format!("{base}/api/v1/namespaces/watch/pods");
    let (_, list) = {
        let r = reqwest::get(&url).await.unwrap();
        ((), r.json::<Value>().await.unwrap())
    };
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let events = rate * secs as usize;
    let sent: Arc<Vec<std::sync::OnceLock<Instant>>> =
        Arc::new((0..events).map(|_| Default::default()).collect());
    let rss_before = rss_bytes();
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(watchers);
    // One client (one connection per open watch, as reqwest opens a new
    // one for each concurrent request), so per-watch memory is the server's
    // and the connections', not a client object's per watcher.
    let client = reqwest::Client::new();
    for _ in 0..watchers {
        let url = format!("{url}?watch=1&resourceVersion={rv}");
        let sent = sent.clone();
        let ready = ready_tx.clone();
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let r = c.get(&url).send().await.unwrap();
            ready.send(()).await.unwrap();
            let mut body = r.bytes_stream();
            let mut carry: Vec<u8> = Vec::new();
            let mut lat = Vec::with_capacity(events);
            while lat.len() < events {
                let Some(Ok(chunk)) = body.next().await else {
                    break;
                };
                let now = Instant::now();
                carry.extend_from_slice(&chunk);
                let mut start = 0;
                while let Some(off) = carry[start..].iter().position(|b| *b == b'\n') {
                    let line = &carry[start..start + off];
                    start += off + 1;
                    if let Some(idx) = event_index(line)
                        && let Some(t) = sent.get(idx).and_then(|s| s.get())
                    {
                        lat.push(now.saturating_duration_since(*t));
                    }
                }
                carry.drain(..start);
            }
            lat
        }));
    }
    drop(ready_tx);
    for _ in 0..watchers {
        ready_rx.recv().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let per_watcher = (rss_bytes().saturating_sub(rss_before)) as f64 / watchers as f64;
    // One writer at a fixed rate; each create's send time is recorded first.
    let c = reqwest::Client::new();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut inflight = futures::stream::FuturesUnordered::new();
    for i in 0..events {
        tick.tick().await;
        let _ = sent[i].set(Instant::now());
        let c = c.clone();
        let url = url.clone();
        inflight.push(async move {
            c.post(&url)
                .json(&pod(&format!("w-{i}")))
                .send()
                .await
                .unwrap()
                .status()
        });
        while let Some(s) = futures::FutureExt::now_or_never(inflight.next()).flatten() {
            assert_eq!(s, 201);
        }
    }
    while let Some(s) = inflight.next().await {
        assert_eq!(s, 201);
    }
    let write_secs = start.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("watchers drain")
                .unwrap(),
        );
    }
    lat.sort();
    println!(
        "watch: {watchers} watchers x {events} events at {:.0}/s: {} deliveries, latency p50 {} p99 {} max {}; client+server RSS {:.1} kB per open watch",
        events as f64 / write_secs,
        lat.len(),
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(*lat.last().unwrap_or(&Duration::ZERO)),
        per_watcher / 1024.0,
    );
    assert_eq!(
        lat.len(),
        watchers * events,
        "every watcher saw every event"
    );
}

/// The index in a watch line's pod name `w-<index>`, looked for near the
/// start of the line (the name comes first in the object's metadata).
fn event_index(line: &[u8]) -> Option<usize> {
    const NEEDLE: &[u8] = b"\"name\":\"w-";
    let head = &line[..line.len().min(200)];
    let at = head.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// RSS growth of the store itself (no HTTP) per stored pod, beyond its JSON.
fn memory_per_pod(n: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = data_dir();
        let store = Embedded::open(&dir.path().join("store.redb"), resources::indexer(), Options::default()).unwrap();
        let pods = resources::find("", "v1", "pods").unwrap();
        let before = rss_bytes();
        let mut json_bytes = 0usize;
        let mut futs = futures::stream::iter(0..n)
            .map(|i| {
                let mut v = pod(&format!("m-{i}"));
                v["metadata"]["namespace"] = json!("mem");
                v["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
                v["metadata"]["creationTimestamp"] = json!("2026-11-21T08:00:00Z");
                store.write(Write { key: pods.key(Some("mem"), &format!("m-{i}")), precondition: Precondition::Absent, op: Op::Put(v) })
            })
            .buffer_unordered(256);
        while let Some(c) = futs.next().await {
            json_bytes += c.unwrap().object.json.len();
        }
        let grown = rss_bytes().saturating_sub(before) as f64;
        let avg_json = json_bytes as f64 / n as f64;
        let _ = store.get(&Key::new("/pods/mem/m-0"));
        println!(
            "memory: {n} pods stored, average JSON {avg_json:.0} B, RSS +{:.1} MB = {:.0} B per pod, {:.0} B beyond its JSON (redb page cache included)",
            grown / 1e6,
            grown / n as f64,
            grown / n as f64 - avg_json
        );
    });
}
