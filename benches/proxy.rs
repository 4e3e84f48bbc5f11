//! km proxy benchmarks, with `km proxy` as a separate process (the km
//! binary built for this bench) against an in-process km apiserver (plain
//! HTTP on loopback). Backends are in-process TCP servers on this host's
//! address, standing for pods at hostIP:hostPort; clients connect to the
//! backend directly and through the proxy, alternating rounds. Two paths,
//! each with its own direct baseline:
//!
//! * kernel: `--proxy-mode=nftables`; clients connect to the Service's
//!   ClusterIP:port and to hostIP:NodePort, which the kernel DNATs to the
//!   backend (needs root and nft, and a route for the ClusterIPs: the
//!   default route serves; skipped with a message without nft).
//! * user space: `--proxy-mode=userspace`, NodePorts on 127.0.0.1; the
//!   proxy forwards each connection itself.
//!
//! Measurements, per path:
//! * latency: one connection per request (connect, 64-byte request, 64-byte
//!   answer, close), sequential. Median and p99, direct and through the
//!   path; overhead = difference of the medians. Target ≤ 100 µs.
//! * throughput: one connection per 1 MB transfer (the backend writes 1 MiB
//!   and closes; the client reads to the end), sequential. MB/s direct and
//!   through the path. Target ≥ 80 % of direct.
//! * endpoints change: 1,000 NodePort Services with one endpoint each; an
//!   Endpoints object is patched to a backend with another name, and the
//!   time is measured from just before the write until a new connection
//!   through that Service (its ClusterIP on the kernel path, its NodePort
//!   on 127.0.0.1 in user space) is answered by the new backend (clients
//!   retry at once). p50/p99 over 200 changes, each path its own Services.
//!   Target p99 ≤ 100 ms.
//!
//! The proxy routes each ClusterIP to this host (`--cluster-ip-local-routes`,
//! on by default), so a connection to a ClusterIP is sized (MSS, initial
//! receive window) for loopback like the direct baseline; without those
//! routes it would be sized for the default route's MTU and trail the
//! NodePort row.
//!
//! `cargo bench --bench proxy` runs the full sizes; under `cargo test` a
//! small run checks the code paths.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[path = "support/machine.rs"]
mod machine;

struct Sizes {
    requests: usize,
    transfers: usize,
    rounds: usize,
    services: usize,
    changes: usize,
}

#[derive(clap::Parser)]
struct ApiCli {
    #[command(flatten)]
    args: km::apiserver::Args,
}

const REQUEST: usize = 64;
const TRANSFER: usize = 1 << 20;
/// Bound of every wait.
const PATIENCE: Duration = Duration::from_secs(120);

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let sizes = if benching {
        Sizes {
            requests: 2_000,
            transfers: 200,
            rounds: 5,
            services: 1_000,
            changes: 200,
        }
    } else {
        Sizes {
            requests: 50,
            transfers: 5,
            rounds: 1,
            services: 20,
            changes: 5,
        }
    };
    println!(
        "{}\nworkload: km proxy (separate process) + in-process km apiserver; backends on {}",
        machine::describe(),
        km::hostaddr::primary_ipv4()
    );
    km::mesos::scheduler::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let stop = CancellationToken::new();
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
        let (kubeconfig, client) = apiserver(dir.path(), stop.clone()).await;
        let host = IpAddr::V4(km::hostaddr::primary_ipv4());
        assert!(
            !host.is_loopback(),
            "needs a default route: Endpoints may not be loopback"
        );

        let echo = SocketAddr::new(host, serve(answer_request, &stop).await);
        let bulk = SocketAddr::new(host, serve(send_megabyte, &stop).await);
        let names = [
            SocketAddr::new(host, serve(|c| say(c, b"x\n"), &stop).await),
            SocketAddr::new(host, serve(|c| say(c, b"y\n"), &stop).await),
        ];
        let echo_svc = service(&client, "echo", echo).await;
        let bulk_svc = service(&client, "bulk", bulk).await;
        let mut changing = Vec::new();
        for i in 0..sizes.services {
            changing.push(service(&client, &format!("svc-{i}"), names[0]).await);
        }
        let step = (changing.len() / sizes.changes).max(1);
        let last = *changing.last().unwrap();

        // The kernel path: ClusterIP and hostIP:NodePort, DNATed by nftables.
        match kernel_path_usable(echo_svc.cluster_ip).await {
            Err(why) => println!("kernel path (nftables) skipped: {why}"),
            Ok(()) => {
                let mut proxy = Proxy::start(&kubeconfig, dir.path(), "nftables");
                let ready = |to| answered_by(to, Some("x"));
                proxy.until(|| answered_by(echo_svc.cluster(), None)).await;
                proxy.until(|| ready(last.cluster())).await;
                let pid = proxy.child.id();
                let paths = [
                    ("kernel (nftables), ClusterIP", echo_svc.cluster()),
                    (
                        "kernel (nftables), hostIP:NodePort",
                        SocketAddr::new(host, echo_svc.node_port),
                    ),
                ];
                latency(&sizes, echo, &paths, pid).await;
                let paths = [
                    ("kernel (nftables), ClusterIP", bulk_svc.cluster()),
                    (
                        "kernel (nftables), hostIP:NodePort",
                        SocketAddr::new(host, bulk_svc.node_port),
                    ),
                ];
                throughput(&sizes, bulk, &paths, pid).await;
                // Services of its own: every step-th, from the middle of a step.
                let targets: Vec<(String, SocketAddr)> = (0..sizes.changes)
                    .map(|k| (k * step + step / 2) % changing.len())
                    .map(|i| (format!("svc-{i}"), changing[i].cluster()))
                    .collect();
                endpoint_changes(
                    "kernel (nftables), ClusterIP",
                    &client,
                    changing.len(),
                    &targets,
                    names[1],
                    &mut proxy,
                )
                .await;
                proxy.stop();
                assert!(
                    kernel_table().await.is_none(),
                    "km proxy left its nftables table behind"
                );
            }
        }

        // The user-space path: NodePorts on 127.0.0.1.
        let mut proxy = Proxy::start(&kubeconfig, dir.path(), "userspace");
        let through = |np: u16| SocketAddr::from(([127, 0, 0, 1], np));
        proxy
            .until(|| answered_by(through(echo_svc.node_port), None))
            .await;
        proxy
            .until(|| answered_by(through(last.node_port), Some("x")))
            .await;
        let pid = proxy.child.id();
        let label = "user space, 127.0.0.1:NodePort";
        latency(&sizes, echo, &[(label, through(echo_svc.node_port))], pid).await;
        throughput(&sizes, bulk, &[(label, through(bulk_svc.node_port))], pid).await;
        let targets: Vec<(String, SocketAddr)> = (0..sizes.changes)
            .map(|k| (k * step) % changing.len())
            .map(|i| (format!("svc-{i}"), through(changing[i].node_port)))
            .collect();
        endpoint_changes(
            label,
            &client,
            changing.len(),
            &targets,
            names[1],
            &mut proxy,
        )
        .await;
        proxy.stop();
        stop.cancel();
    });
}

/// Why the kernel path cannot be measured here, if it cannot. Panics when
/// nft works but the ClusterIP is not routable: that is a broken setup.
async fn kernel_path_usable(cluster_ip: std::net::Ipv4Addr) -> Result<(), String> {
    let nft = tokio::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .await;
    match nft {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(format!(
                "nft does not work here (needs root): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Err(e) => return Err(format!("no nft tool: {e}")),
    }
    if kernel_table().await.is_some() {
        panic!(
            "an nftables table ip km-proxy exists: another km proxy runs on this host in nftables mode; stop it (or delete the table) before this benchmark"
        );
    }
    // connect() on a UDP socket looks the route up and sends nothing; the
    // kernel path DNATs only packets that found a route first.
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| s.connect((cluster_ip, 80)));
    if let Err(e) = probe {
        panic!(
            "ClusterIP {cluster_ip} is not routable here ({e}): the kernel path needs a route for the Service range 10.96.0.0/16 (a default route serves); add one, e.g. `ip route add default via <gateway>`"
        );
    }
    Ok(())
}

/// km's nftables table, if there is one.
async fn kernel_table() -> Option<String> {
    let out = tokio::process::Command::new("nft")
        .args(["list", "table", "ip", "km-proxy"])
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An in-process km apiserver: its kubeconfig and a client.
async fn apiserver(dir: &Path, stop: CancellationToken) -> (PathBuf, kube::Client) {
    let args = <ApiCli as clap::Parser>::parse_from([
        "km",
        "--data-dir",
        dir.join("api").to_str().unwrap(),
        "--no-tls",
        "--insecure-port",
        "0",
        "--service-cluster-ip-range",
        "10.96.0.0/16",
    ])
    .args;
    let api = km::apiserver::start(args, stop)
        .await
        .expect("apiserver starts");
    let url = format!("http://{}", api.insecure_addr.unwrap());
    tokio::spawn(api.wait());
    let kubeconfig = dir.join("kubeconfig");
    km::apiserver::kubeconfig::write_kubeconfig(&kubeconfig, &url, None, None).unwrap();
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    (kubeconfig, client)
}

/// Where a Service is reached.
#[derive(Clone, Copy)]
struct Svc {
    cluster_ip: std::net::Ipv4Addr,
    node_port: u16,
}

impl Svc {
    /// ClusterIP:80.
    fn cluster(&self) -> SocketAddr {
        SocketAddr::from((self.cluster_ip, 80))
    }
}

/// A NodePort Service `name` (port 80) with one endpoint.
async fn service(client: &kube::Client, name: &str, backend: SocketAddr) -> Svc {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"type": "NodePort", "ports": [{"name": "tcp", "port": 80}]}}))
    .unwrap();
    let spec = services
        .create(&PostParams::default(), &svc)
        .await
        .unwrap()
        .spec
        .unwrap();
    let node_port = spec.ports.unwrap()[0].node_port.unwrap() as u16;
    let cluster_ip = spec
        .cluster_ip
        .expect("the apiserver allocates ClusterIPs")
        .parse()
        .unwrap();
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let eps: Endpoints = serde_json::from_value(json!({"metadata": {"name": name},
        "subsets": subsets(backend)}))
    .unwrap();
    endpoints
        .create(&PostParams::default(), &eps)
        .await
        .unwrap();
    Svc {
        cluster_ip,
        node_port,
    }
}

fn subsets(backend: SocketAddr) -> serde_json::Value {
    json!([{"addresses": [{"ip": backend.ip().to_string()}], "ports": [{"name": "tcp", "port": backend.port()}]}])
}

/// `km proxy` as a child process.
struct Proxy {
    child: Child,
    log: PathBuf,
}

impl Proxy {
    /// `km proxy --proxy-mode mode`; in userspace mode NodePorts on 127.0.0.1 only.
    fn start(kubeconfig: &Path, dir: &Path, mode: &str) -> Proxy {
        let log = dir.join(format!("proxy-{mode}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_km"));
        cmd.args(["proxy", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--proxy-mode", mode]);
        if mode == "userspace" {
            cmd.args(["--nodeport-addresses", "127.0.0.1/32"]);
        }
        let child = cmd
            .args([
                "--healthz-bind-address",
                "127.0.0.1:0",
                "--metrics-bind-address",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("km proxy starts");
        Proxy { child, log }
    }

    /// Waits until `probe` succeeds; panics with the proxy's log if it never does.
    async fn until<F, Fut>(&mut self, probe: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + PATIENCE;
        while !probe().await {
            if Instant::now() > deadline || self.child.try_wait().ok().flatten().is_some() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("km proxy did not get there; its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM (so it removes its kernel rules), then SIGKILL after 10 s.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves each connection with `handle` on 0.0.0.0; returns the port.
async fn serve<F, Fut>(handle: F, stop: &CancellationToken) -> u16
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let l = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let c = tokio::select! {
                _ = stop.cancelled() => return,
                a = l.accept() => a,
            };
            if let Ok((c, _)) = c {
                let _ = c.set_nodelay(true);
                tokio::spawn(handle(c));
            }
        }
    });
    port
}

async fn answer_request(mut c: TcpStream) -> std::io::Result<()> {
    let mut req = [0u8; REQUEST];
    c.read_exact(&mut req).await?;
    c.write_all(&req).await?;
    // Wait for the client to close first (no TIME_WAIT pile-up on our side).
    let _ = c.read(&mut req).await;
    Ok(())
}

async fn send_megabyte(mut c: TcpStream) -> std::io::Result<()> {
    static DATA: [u8; TRANSFER] = [7u8; TRANSFER];
    c.write_all(&DATA).await?;
    c.shutdown().await
}

async fn say(mut c: TcpStream, what: &'static [u8]) -> std::io::Result<()> {
    c.write_all(what).await?;
    c.shutdown().await
}

/// Whether a new connection to `to` is answered (by `name`, when given)
/// within a second. A connection made before the proxy's rules are in place
/// may go out by the default route and reach something that never answers.
async fn answered_by(to: SocketAddr, name: Option<&str>) -> bool {
    tokio::time::timeout(Duration::from_secs(1), answered_by_now(to, name))
        .await
        .unwrap_or(false)
}

async fn answered_by_now(to: SocketAddr, name: Option<&str>) -> bool {
    let Ok(mut c) = TcpStream::connect(to).await else {
        return false;
    };
    if name.is_none() {
        let _ = c.set_nodelay(true);
        return c.write_all(&[0u8; REQUEST]).await.is_ok()
            && c.read_exact(&mut [0u8; REQUEST]).await.is_ok();
    }
    let mut got = Vec::new();
    if c.read_to_end(&mut got).await.is_err() {
        return false;
    }
    name.is_some_and(|n| got.strip_suffix(b"\n") == Some(n.as_bytes()))
}

async fn one_request(to: SocketAddr) -> Duration {
    let t = Instant::now();
    let mut c = TcpStream::connect(to).await.unwrap();
    c.set_nodelay(true).unwrap();
    c.write_all(&[1u8; REQUEST]).await.unwrap();
    let mut answer = [0u8; REQUEST];
    c.read_exact(&mut answer).await.unwrap();
    let d = t.elapsed();
    drop(c);
    d
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// CPU seconds (user + system) used so far by process `pid` ("self" for this one).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime, in clock ticks of 1/100 s (USER_HZ on Linux).
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU time per operation of this process and of the proxy while `ops` run.
struct Cpu {
    own: f64,
    proxy: f64,
    pid: String,
}

impl Cpu {
    fn start(proxy: u32) -> Cpu {
        let pid = proxy.to_string();
        Cpu {
            own: cpu_seconds("self"),
            proxy: cpu_seconds(&pid),
            pid,
        }
    }

    /// (this process, the proxy) CPU per operation.
    fn per(&self, ops: usize) -> (Duration, Duration) {
        let per = |s: f64| Duration::from_secs_f64((s / ops.max(1) as f64).max(0.0));
        (
            per(cpu_seconds("self") - self.own),
            per(cpu_seconds(&self.pid) - self.proxy),
        )
    }
}

/// Latency through each of `paths` against `direct`, rounds interleaved.
async fn latency(sizes: &Sizes, direct: SocketAddr, paths: &[(&str, SocketAddr)], proxy: u32) {
    // Warm up every path.
    for _ in 0..50 {
        one_request(direct).await;
        for (_, to) in paths {
            one_request(*to).await;
        }
    }
    let per_round = sizes.requests / sizes.rounds;
    let mut d = Vec::new();
    let mut p: Vec<Vec<Duration>> = vec![Vec::new(); paths.len()];
    let mut cpu_direct = Duration::ZERO;
    let mut cpu_paths = vec![(Duration::ZERO, Duration::ZERO); paths.len()];
    for _ in 0..sizes.rounds {
        let cpu = Cpu::start(proxy);
        for _ in 0..per_round {
            d.push(one_request(direct).await);
        }
        cpu_direct += cpu.per(per_round).0;
        for (i, (_, to)) in paths.iter().enumerate() {
            let cpu = Cpu::start(proxy);
            for _ in 0..per_round {
                p[i].push(one_request(*to).await);
            }
            let (own, px) = cpu.per(per_round);
            cpu_paths[i] = (cpu_paths[i].0 + own, cpu_paths[i].1 + px);
        }
    }
    let rounds = sizes.rounds as u32;
    d.sort();
    for (i, (label, _)) in paths.iter().enumerate() {
        let p = &mut p[i];
        p.sort();
        let overhead = pct(p, 0.5).saturating_sub(pct(&d, 0.5));
        println!(
            "latency [{label}] ({} requests each, new connection per {REQUEST}-byte request): direct p50 {} p99 {}; through km proxy p50 {} p99 {}; overhead p50 {} (target <= 100 µs) {}",
            d.len(),
            us(pct(&d, 0.5)),
            us(pct(&d, 0.99)),
            us(pct(p, 0.5)),
            us(pct(p, 0.99)),
            us(overhead),
            verdict(overhead <= Duration::from_micros(100)),
        );
        println!(
            "  CPU per request: direct {} (client and backend); through km proxy {} (client and backend) + {} (km proxy process)",
            us(cpu_direct / rounds),
            us(cpu_paths[i].0 / rounds),
            us(cpu_paths[i].1 / rounds),
        );
    }
}

async fn transfer(to: SocketAddr) -> Duration {
    let t = Instant::now();
    let mut c = TcpStream::connect(to).await.unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = c.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, TRANSFER);
    t.elapsed()
}

/// Throughput through each of `paths` against `direct`, rounds interleaved.
async fn throughput(sizes: &Sizes, direct: SocketAddr, paths: &[(&str, SocketAddr)], proxy: u32) {
    for _ in 0..5 {
        transfer(direct).await;
        for (_, to) in paths {
            transfer(*to).await;
        }
    }
    let per_round = sizes.transfers / sizes.rounds;
    let mut d = Duration::ZERO;
    let mut p = vec![Duration::ZERO; paths.len()];
    let mut cpu_direct = Duration::ZERO;
    let mut cpu_proxy = vec![Duration::ZERO; paths.len()];
    for _ in 0..sizes.rounds {
        let cpu = Cpu::start(proxy);
        for _ in 0..per_round {
            d += transfer(direct).await;
        }
        cpu_direct += cpu.per(per_round).0;
        for (i, (_, to)) in paths.iter().enumerate() {
            let cpu = Cpu::start(proxy);
            for _ in 0..per_round {
                p[i] += transfer(*to).await;
            }
            cpu_proxy[i] += cpu.per(per_round).1;
        }
    }
    let rounds = sizes.rounds as u32;
    let n = (per_round * sizes.rounds) as f64;
    let mbps = |t: Duration| n * TRANSFER as f64 / 1e6 / t.as_secs_f64();
    for (i, (label, _)) in paths.iter().enumerate() {
        let ratio = mbps(p[i]) / mbps(d);
        println!(
            "throughput [{label}] ({} transfers of 1 MiB each, new connection per transfer): direct {:.0} MB/s; through km proxy {:.0} MB/s = {:.0} % of direct (target >= 80 %) {}",
            n,
            mbps(d),
            mbps(p[i]),
            ratio * 100.0,
            verdict(ratio >= 0.8),
        );
        println!(
            "  CPU per 1 MiB transfer: direct {} (client and backend); km proxy process {}",
            us(cpu_direct / rounds),
            us(cpu_proxy[i] / rounds),
        );
    }
}

/// Moves each of `targets` (Service name, where it is reached) to backend
/// `to` ("y"); times each change from the write until the Service answers
/// with "y".
async fn endpoint_changes(
    label: &str,
    client: &kube::Client,
    services: usize,
    targets: &[(String, SocketAddr)],
    to: SocketAddr,
    proxy: &mut Proxy,
) {
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let mut times = Vec::with_capacity(targets.len());
    for (name, at) in targets {
        let started = Instant::now();
        endpoints
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"subsets": subsets(to)})),
            )
            .await
            .unwrap();
        proxy.until(|| answered_by(*at, Some("y"))).await;
        times.push(started.elapsed());
    }
    times.sort();
    let p99 = pct(&times, 0.99);
    println!(
        "endpoints change [{label}] with {services} Services ({} changes): written to the API -> routed p50 {} p99 {} max {} (target p99 <= 100 ms) {}",
        times.len(),
        ms(pct(&times, 0.5)),
        ms(p99),
        ms(*times.last().unwrap_or(&Duration::ZERO)),
        verdict(p99 <= Duration::from_millis(100)),
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}
