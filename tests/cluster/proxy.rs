//! `km proxy` in-process against an in-process km apiserver. Backends are
//! local TCP and UDP echo servers on this host's address, standing for pods
//! at hostIP:hostPort; Services and Endpoints are written straight into the
//! API (as the controller manager would), and clients connect through the
//! proxy's NodePort on 127.0.0.1 (userspace mode). As root with nft, the
//! `kernel_path_*` tests run the proxy in nftables mode and connect to
//! ClusterIPs (routed by the default route, then DNATed by km's rules) and
//! to this host's address at a NodePort; they take turns, since the kernel
//! has one `km-proxy` table.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support;

/// A hang guard: no test waits longer than this for something that should happen.
const PATIENCE: Duration = Duration::from_secs(20);

#[derive(clap::Parser)]
struct ProxyCli {
    #[command(flatten)]
    args: km::proxy::Args,
}

struct Proxy {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    metrics: SocketAddr,
}

impl Proxy {
    /// Starts `km proxy` with the test's flags plus `flags`; returns once /healthz is 200.
    async fn start(kubeconfig: &std::path::Path, flags: &[&str]) -> Proxy {
        let metrics: SocketAddr = ([127, 0, 0, 1], support::free_port()).into();
        let metrics_flag = metrics.to_string();
        let mut argv = vec![
            "km",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--healthz-bind-address",
            "127.0.0.1:0",
            "--metrics-bind-address",
            &metrics_flag,
        ];
        argv.extend_from_slice(flags);
        let args = <ProxyCli as clap::Parser>::parse_from(argv).args;
        let stop = CancellationToken::new();
        let task = tokio::spawn(km::proxy::run(args, stop.clone()));
        let p = Proxy {
            stop,
            task,
            metrics,
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if p.get("/healthz").await.is_some_and(|(code, _)| code == 200) {
                return p;
            }
            assert!(!p.task.is_finished(), "km proxy stopped while starting");
            assert!(
                tokio::time::Instant::now() < deadline,
                "km proxy never became healthy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A userspace proxy serving NodePorts on 127.0.0.1 only.
    async fn userspace(kubeconfig: &std::path::Path) -> Proxy {
        Proxy::start(
            kubeconfig,
            &[
                "--proxy-mode",
                "userspace",
                "--nodeport-addresses",
                "127.0.0.1/32",
            ],
        )
        .await
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = reqwest::get(format!("http://{}{path}", self.metrics))
            .await
            .ok()?;
        let code = r.status().as_u16();
        Some((code, r.text().await.ok()?))
    }

    /// The value of the sample of `metric` whose line contains `labels`.
    async fn metric(&self, metric: &str, labels: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics").await?;
        text.lines()
            .find(|l| l.starts_with(&format!("{metric}{{")) && l.contains(labels))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("km proxy stops")
            .unwrap()
            .unwrap();
    }
}

/// This host's address: where "pods" (the echo servers) are reached.
fn host_ip() -> Ipv4Addr {
    let ip = km::hostaddr::primary_ipv4();
    assert!(
        !ip.is_loopback(),
        "the tests need a non-loopback address (a default route): Endpoints may not be loopback"
    );
    ip
}

/// A TCP "pod": says its name on each connection, then echoes until EOF.
async fn tcp_backend(name: &str, stop: &CancellationToken) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (name, stop) = (name.to_string(), stop.clone());
    tokio::spawn(async move {
        loop {
            let (mut c, _) = tokio::select! {
                _ = stop.cancelled() => return,
                a = l.accept() => a.unwrap(),
            };
            let name = name.clone();
            tokio::spawn(async move {
                c.write_all(format!("{name}\n").as_bytes()).await?;
                let (mut r, mut w) = c.split();
                tokio::io::copy(&mut r, &mut w).await?;
                w.shutdown().await
            });
        }
    });
    SocketAddr::new(IpAddr::V4(host_ip()), port)
}

/// A UDP "pod": answers each datagram with `name:datagram`.
async fn udp_backend(name: &str, stop: &CancellationToken) -> SocketAddr {
    let s = UdpSocket::bind("0.0.0.0:0").await.unwrap();
    let port = s.local_addr().unwrap().port();
    let (name, stop) = (name.to_string(), stop.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, from) = tokio::select! {
                _ = stop.cancelled() => return,
                r = s.recv_from(&mut buf) => r.unwrap(),
            };
            let mut answer = format!("{name}:").into_bytes();
            answer.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&answer, from).await;
        }
    });
    SocketAddr::new(IpAddr::V4(host_ip()), port)
}

/// A NodePort (30000-32767) that is free on 127.0.0.1 for TCP and UDP.
fn node_port() -> u16 {
    loop {
        let p = fastrand::u16(30000..=32767);
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
        {
            return p;
        }
    }
}

async fn create_service(client: &kube::Client, svc: Value) -> Service {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    api.create(
        &PostParams::default(),
        &serde_json::from_value(svc).unwrap(),
    )
    .await
    .unwrap()
}

/// Endpoints subsets: one per backend (they share an IP, not a port).
fn subsets(port_name: &str, protocol: &str, backends: &[SocketAddr]) -> Value {
    Value::Array(
        backends
            .iter()
            .map(|b| {
                json!({"addresses": [{"ip": b.ip().to_string()}],
                       "ports": [{"name": port_name, "port": b.port(), "protocol": protocol}]})
            })
            .collect(),
    )
}

async fn set_endpoints(client: &kube::Client, name: &str, subsets: Value) {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let body = json!({"metadata": {"name": name}, "subsets": subsets});
    if api.get_opt(name).await.unwrap().is_none() {
        api.create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .unwrap();
    } else {
        api.patch(name, &PatchParams::default(), &Patch::Merge(body))
            .await
            .unwrap();
    }
}

/// Connects from `from` (an address of this host) to `to`.
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind((from, 0).into())?;
    s.connect(to).await
}

/// Reads one line (without the newline); `Ok(None)` at EOF before any byte.
async fn read_line(c: &mut TcpStream) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if c.read(&mut b).await? == 0 {
            return Ok((!line.is_empty()).then(|| String::from_utf8_lossy(&line).into()));
        }
        if b[0] == b'\n' {
            return Ok(Some(String::from_utf8_lossy(&line).into()));
        }
        line.push(b[0]);
    }
}

/// Which backend answers a new connection from `from` to `to`.
async fn ask_from(from: Ipv4Addr, to: SocketAddr) -> io::Result<Option<String>> {
    let mut c = connect_from(from, to).await?;
    tokio::time::timeout(PATIENCE, read_line(&mut c))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))?
}

async fn ask(to: SocketAddr) -> io::Result<Option<String>> {
    let mut c = TcpStream::connect(to).await?;
    tokio::time::timeout(PATIENCE, read_line(&mut c))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))?
}

/// Waits until a connection to `to` is answered by a backend.
async fn until_answered(to: SocketAddr) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(Some(name)) = ask(to).await {
            return name;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{to} never answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn node_port_service(name: &str, port: u16, extra: Value) -> Value {
    let mut spec =
        json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": port}]});
    if let (Some(s), Value::Object(e)) = (spec.as_object_mut(), extra) {
        s.extend(e);
    }
    json!({"metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn round_robin_over_three_endpoints_through_the_node_port() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (kubeconfig, client) = support::apiserver(dir.path(), stop.clone()).await;
    let np = node_port();
    create_service(&client, node_port_service("web", np, json!({}))).await;
    let mut backends = Vec::new();
    for n in ["a", "b", "c"] {
        backends.push(tcp_backend(n, &stop).await);
    }
    set_endpoints(&client, "web", subsets("http", "TCP", &backends)).await;
    let proxy = Proxy::userspace(&kubeconfig).await;
    let to: SocketAddr = ([127, 0, 0, 1], np).into();
    until_answered(to).await;

    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..9 {
        let name = ask(to).await.unwrap().unwrap();
        *seen.entry(name).or_insert(0) += 1;
    }
    assert_eq!(
        seen,
        [("a".to_string(), 3), ("b".into(), 3), ("c".into(), 3)].into(),
        "each endpoint in turn"
    );

    // Data flows both ways, and a half-close reaches the endpoint.
    let mut c = TcpStream::connect(to).await.unwrap();
    read_line(&mut c).await.unwrap().unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    c.write_all(&payload).await.unwrap();
    c.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    tokio::time::timeout(PATIENCE, c.read_to_end(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, payload);

    let labels = r#"namespace="default",service="web",port="http",protocol="TCP""#;
    let total = proxy
        .metric("km_proxy_connections_total", labels)
        .await
        .unwrap();
    assert!(total >= 10.0, "{total}");
    let received = proxy
        .metric("km_proxy_received_bytes_total", labels)
        .await
        .unwrap();
    assert!(received >= payload.len() as f64, "{received}");
    proxy.stop().await;
    stop.cancel();
}

#[tokio::test]
async fn a_removed_endpoint_gets_no_new_connections_and_its_open_one_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (kubeconfig, client) = support::apiserver(dir.path(), stop.clone()).await;
    let np = node_port();
    create_service(&client, node_port_service("web", np, json!({}))).await;
    let mut backends = Vec::new();
    for n in ["a", "b", "c"] {
        backends.push((n.to_string(), tcp_backend(n, &stop).await));
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.1).collect();
    set_endpoints(&client, "web", subsets("http", "TCP", &addrs)).await;
    let proxy = Proxy::userspace(&kubeconfig).await;
    let to: SocketAddr = ([127, 0, 0, 1], np).into();
    until_answered(to).await;

    let mut open = TcpStream::connect(to).await.unwrap();
    let gone = read_line(&mut open).await.unwrap().unwrap();
    open.write_all(b"still here\n").await.unwrap();
    assert_eq!(read_line(&mut open).await.unwrap().unwrap(), "still here");

    let keep: Vec<SocketAddr> = backends
        .iter()
        .filter(|(n, _)| *n != gone)
        .map(|b| b.1)
        .collect();
    set_endpoints(&client, "web", subsets("http", "TCP", &keep)).await;
    // The open connection to the removed endpoint ends (EOF, or a reset).
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(PATIENCE, open.read_to_end(&mut rest))
        .await
        .expect("the connection to the removed endpoint is closed");
    assert!(
        ended.is_ok() || matches!(&ended, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
        "{ended:?}"
    );
    for _ in 0..6 {
        let name = ask(to).await.unwrap().unwrap();
        assert_ne!(name, gone, "new connections avoid the removed endpoint");
    }
    proxy.stop().await;
    stop.cancel();
}

#[tokio::test]
async fn client_ip_session_affinity_keeps_a_client_on_one_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (kubeconfig, client) = support::apiserver(dir.path(), stop.clone()).await;
    let np = node_port();
    create_service(
        &client,
        node_port_service(
            "sticky",
            np,
            json!({"sessionAffinity": "ClientIP",
                   "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}),
        ),
    )
    .await;
    let mut backends = Vec::new();
    for n in ["a", "b", "c"] {
        backends.push(tcp_backend(n, &stop).await);
    }
    set_endpoints(&client, "sticky", subsets("http", "TCP", &backends)).await;
    let proxy = Proxy::userspace(&kubeconfig).await;
    let to: SocketAddr = ([127, 0, 0, 1], np).into();
    let first = until_answered(to).await;
    for _ in 0..6 {
        assert_eq!(ask(to).await.unwrap().unwrap(), first, "127.0.0.1 sticks");
    }
    // Other client addresses (all of 127/8 is this host) are spread.
    let mut others = std::collections::BTreeSet::new();
    for i in 2..=4 {
        let from = Ipv4Addr::new(127, 0, 0, i);
        let name = ask_from(from, to).await.unwrap().unwrap();
        assert_eq!(
            ask_from(from, to).await.unwrap().unwrap(),
            name,
            "{from} sticks"
        );
        others.insert(name);
    }
    assert!(
        others.len() > 1,
        "clients spread over endpoints: {others:?}"
    );
    proxy.stop().await;
    stop.cancel();
}

#[tokio::test]
async fn udp_sessions_are_forwarded_and_spread() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (kubeconfig, client) = support::apiserver(dir.path(), stop.clone()).await;
    let np = node_port();
    create_service(
        &client,
        json!({"metadata": {"name": "dns"}, "spec": {"type": "NodePort",
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "nodePort": np}]}}),
    )
    .await;
    let backends = vec![udp_backend("a", &stop).await, udp_backend("b", &stop).await];
    set_endpoints(&client, "dns", subsets("dns", "UDP", &backends)).await;
    let proxy = Proxy::userspace(&kubeconfig).await;
    let to: SocketAddr = ([127, 0, 0, 1], np).into();

    async fn exchange(s: &UdpSocket, msg: &str) -> Option<String> {
        s.send(msg.as_bytes()).await.ok()?;
        let mut buf = [0u8; 2048];
        let n = tokio::time::timeout(Duration::from_millis(500), s.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into())
    }
    let mut answered_by = std::collections::BTreeSet::new();
    for _ in 0..2 {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.connect(to).await.unwrap();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let first = loop {
            if let Some(a) = exchange(&s, "ping").await {
                break a;
            }
            assert!(tokio::time::Instant::now() < deadline, "no UDP answer");
        };
        let (name, echoed) = first.split_once(':').unwrap();
        assert_eq!(echoed, "ping");
        for i in 0..3 {
            let msg = format!("again {i}");
            assert_eq!(
                exchange(&s, &msg).await.unwrap(),
                format!("{name}:{msg}"),
                "one client address stays on its endpoint"
            );
        }
        answered_by.insert(name.to_string());
    }
    assert_eq!(
        answered_by.len(),
        2,
        "two clients, two endpoints: {answered_by:?}"
    );
    let labels = r#"service="dns",port="dns",protocol="UDP""#;
    assert_eq!(
        proxy.metric("km_proxy_connections_total", labels).await,
        Some(2.0)
    );
    proxy.stop().await;
    stop.cancel();
}

#[tokio::test]
async fn without_ready_endpoints_connections_are_reset_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (kubeconfig, client) = support::apiserver(dir.path(), stop.clone()).await;
    let np = node_port();
    create_service(&client, node_port_service("empty", np, json!({}))).await;
    let backend = tcp_backend("a", &stop).await;
    // Only a not-ready address.
    set_endpoints(
        &client,
        "empty",
        json!([{"notReadyAddresses": [{"ip": backend.ip().to_string()}],
                "ports": [{"name": "http", "port": backend.port()}]}]),
    )
    .await;
    let proxy = Proxy::userspace(&kubeconfig).await;
    let to: SocketAddr = ([127, 0, 0, 1], np).into();
    let labels = r#"service="empty",port="http",protocol="TCP",reason="no_endpoint""#;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        // Until the NodePort listens, connects are refused; after, reset.
        match ask(to).await {
            Ok(Some(name)) => panic!("answered by {name} without a ready endpoint"),
            Ok(None) => {}
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                ),
                "{e}"
            ),
        }
        if proxy
            .metric("km_proxy_errors_total", labels)
            .await
            .is_some_and(|n| n >= 1.0)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no no_endpoint error counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Once the address is ready, the same Service answers.
    set_endpoints(&client, "empty", subsets("http", "TCP", &[backend])).await;
    assert_eq!(until_answered(to).await, "a");
    proxy.stop().await;
    stop.cancel();
}

async fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = tokio::process::Command::new(cmd)
        .args(args)
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn nft_input(args: &[&str], script: &str) -> Result<(), String> {
    let mut nft = tokio::process::Command::new("nft")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    nft.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .await
        .unwrap();
    let out = nft.wait_with_output().await.unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Whether this test may program nftables (root, with nft).
async fn can_use_nft() -> bool {
    output("nft", &["list", "tables"]).await.is_some()
}

/// The kernel data path has one table per host: its tests take turns.
static KERNEL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Takes this test's turn with the kernel, or says why it must not: a
/// `km-proxy` table already there belongs to a running proxy (`km local`?)
/// that a test would break. The tests remove their own tables.
async fn kernel_turn() -> Option<tokio::sync::MutexGuard<'static, ()>> {
    if !can_use_nft().await {
        eprintln!("skipped: nft is not usable here (needs root and the nft tool)");
        return None;
    }
    let turn = KERNEL.lock().await;
    if km_table().await.is_some() {
        eprintln!(
            "skipped: an nftables table ip km-proxy exists, so a km proxy runs on this host; stop it, or run this test in a network namespace of its own (ip netns exec)"
        );
        return None;
    }
    Some(turn)
}

/// A kernel-path test's turn and its own API server.
struct Kernel {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    _dir: tempfile::TempDir,
    stop: CancellationToken,
    kubeconfig: std::path::PathBuf,
    client: kube::Client,
}

/// [`kernel_turn`], then an API server for the test (None: skipped).
async fn kernel_setup() -> Option<Kernel> {
    let turn = kernel_turn().await?;
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (kubeconfig, client) = support::apiserver(dir.path(), stop.clone()).await;
    Some(Kernel {
        _turn: turn,
        _dir: dir,
        stop,
        kubeconfig,
        client,
    })
}

/// km's table as `nft list` shows it, if there is one.
async fn km_table() -> Option<String> {
    output("nft", &["list", "table", "ip", "km-proxy"]).await
}

/// A proxy in nftables mode; returns once /healthz is 200 (its rules are programmed).
async fn kernel_proxy(kubeconfig: &std::path::Path) -> Proxy {
    Proxy::start(kubeconfig, &["--proxy-mode", "nftables"]).await
}

/// Stops the proxy and checks that it took its table along.
async fn stop_and_check_cleanup(proxy: Proxy) {
    proxy.stop().await;
    let ruleset = output("nft", &["list", "ruleset"]).await.unwrap();
    assert!(
        !ruleset.contains("km-proxy"),
        "rules left behind:\n{ruleset}"
    );
    if let Some(ipt) = output("iptables-save", &["-t", "nat"]).await {
        assert!(!ipt.contains("KM-SERVICES"), "{ipt}");
    }
    assert_eq!(local_routes().await, "", "ClusterIP routes left behind");
}

/// km proxy's ClusterIP routes (`ip route show table local proto 173`).
async fn local_routes() -> String {
    output("ip", &["route", "show", "table", "local", "proto", "173"])
        .await
        .unwrap_or_default()
}

fn cluster_ip(svc: &Service) -> Ipv4Addr {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap()
        .parse()
        .unwrap()
}

/// One datagram to the connected `s` and its answer, if one comes within 500 ms.
async fn udp_exchange(s: &UdpSocket, msg: &str) -> io::Result<Option<String>> {
    s.send(msg.as_bytes()).await?;
    let mut buf = [0u8; 2048];
    match tokio::time::timeout(Duration::from_millis(500), s.recv(&mut buf)).await {
        Ok(r) => Ok(Some(String::from_utf8_lossy(&buf[..r?]).into_owned())),
        Err(_) => Ok(None),
    }
}

/// Waits for an answer to `msg` on `s` from the endpoint named `name`.
async fn until_udp_answer_from(s: &UdpSocket, msg: &str, name: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let last = match udp_exchange(s, msg).await {
            Ok(Some(a)) if a == format!("{name}:{msg}") => return,
            other => other,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer from {name}; last: {last:?}"
        );
    }
}

#[tokio::test]
async fn every_kind_of_ruleset_change_is_accepted_by_nft() {
    use km::proxy::nft::{self, Names, NodePortAddresses, Port};
    use km::proxy::table::{Affinity, PortKey, Protocol, ServiceKey};
    if !can_use_nft().await {
        eprintln!("skipped: nft is not usable here (needs root and the nft tool)");
        return;
    }
    let key = |name: &str, protocol| PortKey {
        service: ServiceKey {
            namespace: "ns".into(),
            name: name.into(),
        },
        port_name: "p".into(),
        protocol,
    };
    let port = |protocol, eps: &[&str], affinity| Port {
        protocol,
        cluster_ip: Some((Ipv4Addr::new(10, 96, 200, 1), 80)),
        node_port: Some(30999),
        affinity,
        endpoints: eps.iter().map(|e| e.parse().unwrap()).collect(),
    };
    let sticky = |s| Affinity::ClientIp(Duration::from_secs(s));
    // One service port through a life of changes, each step applied to
    // the state the previous steps left, all in one checked transaction.
    let steps = [
        port(Protocol::Tcp, &[], Affinity::None),
        port(
            Protocol::Tcp,
            &["192.0.2.10:1", "192.0.2.11:1"],
            Affinity::None,
        ),
        port(Protocol::Tcp, &["192.0.2.11:1", "192.0.2.12:1"], sticky(60)),
        port(
            Protocol::Tcp,
            &["192.0.2.11:1", "192.0.2.13:1"],
            sticky(10800),
        ),
        port(Protocol::Tcp, &["192.0.2.13:1"], Affinity::None),
        port(Protocol::Tcp, &[], Affinity::None),
    ];
    let mut script = nft::replace(&NodePortAddresses::Only(vec![Ipv4Addr::new(192, 0, 2, 2)]));
    let tcp = Names::of(&key("web", Protocol::Tcp));
    let mut old: Option<&Port> = None;
    for (i, step) in steps.iter().enumerate() {
        let mut moved = step.clone();
        if i % 2 == 1 {
            moved.cluster_ip = Some((Ipv4Addr::new(10, 96, 200, 2), 81));
            moved.node_port = Some(30998);
        }
        nft::change(&mut script, &tcp, old, Some(step));
        nft::change(&mut script, &tcp, Some(step), Some(&moved));
        nft::change(&mut script, &tcp, Some(&moved), Some(step));
        old = Some(step);
    }
    nft::change(&mut script, &tcp, old, None);
    let udp = Names::of(&key("dns", Protocol::Udp));
    let dns = port(Protocol::Udp, &["192.0.2.10:53"], sticky(5));
    nft::change(&mut script, &udp, None, Some(&dns));
    // Check mode: the kernel validates the whole transaction, then drops it.
    if let Err(e) = nft_input(&["-c", "-f", "-"], &script).await {
        panic!("nft rejects the script: {e}\n{script}");
    }
}

#[tokio::test]
async fn kernel_path_serves_cluster_ip_tcp_and_udp_without_the_proxy_and_cleans_up() {
    let Some(Kernel {
        _turn,
        _dir,
        stop,
        kubeconfig,
        client,
    }) = kernel_setup().await
    else {
        return;
    };
    // A crashed proxy's leftovers: replaced at start.
    nft_input(&["-f", "-"], "table ip km-proxy {\n chain stale { }\n}\n")
        .await
        .unwrap();
    let stale_route = "route replace local 10.96.250.250/32 dev lo table local proto 173";
    let args: Vec<&str> = stale_route.split(' ').collect();
    assert!(output("ip", &args).await.is_some(), "ip {stale_route}");

    let svc = create_service(
        &client,
        json!({"metadata": {"name": "internal"}, "spec": {"ports": [
            {"name": "http", "port": 80},
            {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
    )
    .await;
    let cluster_ip = cluster_ip(&svc);
    let tcp = tcp_backend("a", &stop).await;
    let udp = udp_backend("u", &stop).await;
    let mut sets = subsets("http", "TCP", &[tcp]);
    if let (Value::Array(s), Value::Array(u)) = (&mut sets, subsets("dns", "UDP", &[udp])) {
        s.extend(u);
    }
    set_endpoints(&client, "internal", sets).await;
    let proxy = kernel_proxy(&kubeconfig).await;
    let ruleset = km_table().await.unwrap();
    assert!(!ruleset.contains("stale"), "{ruleset}");
    assert!(
        ruleset.contains(&format!("{cluster_ip} . tcp . 80 : goto svc-")),
        "{ruleset}"
    );
    assert!(
        ruleset.contains(&format!("dnat to {tcp}")),
        "DNAT straight to the endpoint: {ruleset}"
    );
    // The ClusterIP is routed to this host (loopback's MTU for local
    // clients); the stale route went at start.
    let routes = local_routes().await;
    assert!(
        routes.contains(&format!("local {cluster_ip} dev lo")) && !routes.contains("10.96.250.250"),
        "{routes}"
    );

    let to = SocketAddr::from((cluster_ip, 80));
    let mut c = TcpStream::connect(to).await.unwrap();
    assert_eq!(read_line(&mut c).await.unwrap().unwrap(), "a");
    assert_eq!(
        c.peer_addr().unwrap(),
        to,
        "the client still talks to the ClusterIP"
    );
    c.write_all(b"through the kernel\n").await.unwrap();
    assert_eq!(
        read_line(&mut c).await.unwrap().unwrap(),
        "through the kernel"
    );
    drop(c);
    for _ in 0..4 {
        assert_eq!(ask(to).await.unwrap().unwrap(), "a");
    }
    let s = UdpSocket::bind("0.0.0.0:0").await.unwrap();
    s.connect((cluster_ip, 53)).await.unwrap();
    until_udp_answer_from(&s, "ping", "u").await;

    // Connections are counted from the kernel's counters; no byte passed
    // through the proxy.
    let labels = r#"service="internal",port="http",protocol="TCP""#;
    assert_eq!(
        proxy.metric("km_proxy_connections_total", labels).await,
        Some(5.0)
    );
    assert_eq!(
        proxy.metric("km_proxy_received_bytes_total", labels).await,
        Some(0.0)
    );
    let udp_labels = r#"service="internal",port="dns",protocol="UDP""#;
    assert!(
        proxy
            .metric("km_proxy_connections_total", udp_labels)
            .await
            .is_some_and(|n| n >= 1.0)
    );
    stop_and_check_cleanup(proxy).await;
    stop.cancel();
}

#[tokio::test]
async fn kernel_path_round_robins_applies_endpoint_changes_and_serves_the_node_port() {
    let Some(Kernel {
        _turn,
        _dir,
        stop,
        kubeconfig,
        client,
    }) = kernel_setup().await
    else {
        return;
    };
    let np = node_port();
    let svc = create_service(&client, node_port_service("web", np, json!({}))).await;
    let cluster_ip = cluster_ip(&svc);
    let mut backends = Vec::new();
    for n in ["a", "b", "c"] {
        backends.push((n.to_string(), tcp_backend(n, &stop).await));
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.1).collect();
    set_endpoints(&client, "web", subsets("http", "TCP", &addrs)).await;
    let proxy = kernel_proxy(&kubeconfig).await;
    let to = SocketAddr::from((cluster_ip, 80));

    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..9 {
        let name = ask(to).await.unwrap().unwrap();
        *seen.entry(name).or_insert(0) += 1;
    }
    assert_eq!(
        seen,
        [("a".to_string(), 3), ("b".into(), 3), ("c".into(), 3)].into(),
        "each endpoint in turn"
    );
    // The NodePort on this host's address goes through the kernel too, and
    // on 127.0.0.1 through the user-space listener.
    let node = SocketAddr::from((host_ip(), np));
    assert!(ask(node).await.unwrap().is_some());
    let labels = r#"service="web",port="http",protocol="TCP""#;
    let before = proxy.metric("km_proxy_received_bytes_total", labels).await;
    assert_eq!(before, Some(0.0));
    let mut lo = TcpStream::connect(("127.0.0.1", np)).await.unwrap();
    read_line(&mut lo).await.unwrap().unwrap();
    lo.write_all(b"hi\n").await.unwrap();
    assert_eq!(read_line(&mut lo).await.unwrap().unwrap(), "hi");
    drop(lo);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while proxy.metric("km_proxy_received_bytes_total", labels).await != Some(3.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only the loopback NodePort passes through the proxy: 3 bytes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // An open connection to an endpoint that is removed goes on (conntrack).
    let mut open = TcpStream::connect(to).await.unwrap();
    let gone = read_line(&mut open).await.unwrap().unwrap();
    let keep: Vec<SocketAddr> = backends
        .iter()
        .filter(|(n, _)| *n != gone)
        .map(|b| b.1)
        .collect();
    set_endpoints(&client, "web", subsets("http", "TCP", &keep)).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    'applied: loop {
        for _ in 0..4 {
            if ask(to).await.unwrap().unwrap() == gone {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{gone} still gets new connections"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue 'applied;
            }
        }
        break;
    }
    let ruleset = km_table().await.unwrap();
    let gone_addr = backends.iter().find(|b| b.0 == gone).unwrap().1;
    assert!(
        !ruleset.contains(&gone_addr.to_string()),
        "the removed endpoint's chain is gone: {ruleset}"
    );
    open.write_all(b"still here\n").await.unwrap();
    assert_eq!(read_line(&mut open).await.unwrap().unwrap(), "still here");
    stop_and_check_cleanup(proxy).await;
    stop.cancel();
}

#[tokio::test]
async fn kernel_path_client_ip_affinity_sticks() {
    let Some(Kernel {
        _turn,
        _dir,
        stop,
        kubeconfig,
        client,
    }) = kernel_setup().await
    else {
        return;
    };
    let svc = create_service(
        &client,
        json!({"metadata": {"name": "sticky"}, "spec": {
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
            "ports": [{"name": "http", "port": 80}]}}),
    )
    .await;
    let mut backends = Vec::new();
    for n in ["a", "b", "c"] {
        backends.push(tcp_backend(n, &stop).await);
    }
    set_endpoints(&client, "sticky", subsets("http", "TCP", &backends)).await;
    let proxy = kernel_proxy(&kubeconfig).await;
    let to = SocketAddr::from((cluster_ip(&svc), 80));
    // Every non-loopback address of this host is a client of its own.
    let clients: Vec<Ipv4Addr> = km::proxy::nodeaddr::local_addresses()
        .unwrap()
        .into_iter()
        .filter(|ip| !ip.is_loopback())
        .collect();
    let mut chosen = std::collections::BTreeSet::new();
    for &from in &clients {
        let first = ask_from(from, to).await.unwrap().unwrap();
        for _ in 0..8 {
            assert_eq!(
                ask_from(from, to).await.unwrap().unwrap(),
                first,
                "{from} sticks"
            );
        }
        chosen.insert(first);
    }
    assert_eq!(
        chosen.len(),
        clients.len().min(3),
        "clients after the first get the next endpoints in turn"
    );
    // The kernel remembers the client, for the Service's timeout.
    let ruleset = km_table().await.unwrap();
    assert!(ruleset.contains("timeout 10m"), "{ruleset}");
    assert!(
        ruleset.contains(&format!("elements = {{ {} expires", clients[0])),
        "{ruleset}"
    );
    stop_and_check_cleanup(proxy).await;
    stop.cancel();
}

#[tokio::test]
async fn kernel_path_rejects_without_endpoints() {
    let Some(Kernel {
        _turn,
        _dir,
        stop,
        kubeconfig,
        client,
    }) = kernel_setup().await
    else {
        return;
    };
    let svc = create_service(
        &client,
        json!({"metadata": {"name": "empty"}, "spec": {"ports": [
            {"name": "http", "port": 80},
            {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
    )
    .await;
    let cluster_ip = cluster_ip(&svc);
    let backend = tcp_backend("a", &stop).await;
    // Only a not-ready address.
    set_endpoints(
        &client,
        "empty",
        json!([{"notReadyAddresses": [{"ip": backend.ip().to_string()}],
                "ports": [{"name": "http", "port": backend.port()}]}]),
    )
    .await;
    let proxy = kernel_proxy(&kubeconfig).await;
    let to = SocketAddr::from((cluster_ip, 80));
    let refused = tokio::time::timeout(PATIENCE, TcpStream::connect(to))
        .await
        .expect("rejected at once, not dropped");
    assert_eq!(
        refused.unwrap_err().kind(),
        io::ErrorKind::ConnectionRefused,
        "a TCP reset"
    );
    let s = UdpSocket::bind("0.0.0.0:0").await.unwrap();
    s.connect((cluster_ip, 53)).await.unwrap();
    // A local sender sees the rejection at once (EPERM: the kernel refused
    // to send it), or as ECONNREFUSED from the ICMP port unreachable.
    let udp = udp_exchange(&s, "anyone?").await;
    assert!(
        matches!(&udp, Err(e) if matches!(e.kind(), io::ErrorKind::PermissionDenied | io::ErrorKind::ConnectionRefused)),
        "{udp:?}"
    );
    let labels = r#"service="empty",port="http",protocol="TCP",reason="no_endpoint""#;
    assert_eq!(
        proxy.metric("km_proxy_errors_total", labels).await,
        Some(1.0)
    );

    // Once the address is ready, the same Service answers.
    set_endpoints(&client, "empty", subsets("http", "TCP", &[backend])).await;
    assert_eq!(until_answered(to).await, "a");
    stop_and_check_cleanup(proxy).await;
    stop.cancel();
}

#[tokio::test]
async fn kernel_path_ends_udp_flows_to_a_removed_endpoint() {
    if output("conntrack", &["--version"]).await.is_none() {
        eprintln!(
            "skipped: no conntrack tool (conntrack-tools); without it UDP flows end when their conntrack entries expire"
        );
        return;
    }
    let Some(Kernel {
        _turn,
        _dir,
        stop,
        kubeconfig,
        client,
    }) = kernel_setup().await
    else {
        return;
    };
    let svc = create_service(
        &client,
        json!({"metadata": {"name": "dns"}, "spec": {"ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
    )
    .await;
    let a = udp_backend("a", &stop).await;
    let b = udp_backend("b", &stop).await;
    set_endpoints(&client, "dns", subsets("dns", "UDP", &[a])).await;
    let proxy = kernel_proxy(&kubeconfig).await;
    // One client socket: one conntrack flow, kept alive by its traffic.
    let s = UdpSocket::bind("0.0.0.0:0").await.unwrap();
    s.connect((cluster_ip(&svc), 53)).await.unwrap();
    until_udp_answer_from(&s, "q", "a").await;
    set_endpoints(&client, "dns", subsets("dns", "UDP", &[b])).await;
    // "a" still answers whatever reaches it: only a deleted conntrack entry
    // moves this flow to "b".
    until_udp_answer_from(&s, "q", "b").await;
    stop_and_check_cleanup(proxy).await;
    stop.cancel();
}

/// A network namespace joined to this host by a veth pair: a second "host"
/// at 198.18.255.2 (this host is 198.18.255.1 on the link). It routes only
/// the Service range to this host, nothing else. Removed on drop.
struct OtherHost {
    ns: String,
    server: Option<tokio::process::Child>,
}

impl OtherHost {
    const HERE: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 1);
    const THERE: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 2);

    /// Creates it, or says why it cannot.
    async fn create() -> Result<OtherHost, String> {
        let id = std::process::id() % 100_000;
        let ns = format!("km-proxy-test-{id}");
        let (here, there) = (format!("kmpt{id}a"), format!("kmpt{id}b"));
        let host = OtherHost { ns, server: None };
        let ns = host.ns.as_str();
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", ns],
            vec![
                "link", "add", &here, "type", "veth", "peer", "name", &there, "netns", ns,
            ],
            vec!["addr", "add", "198.18.255.1/30", "dev", &here],
            vec!["link", "set", &here, "up"],
            vec!["-n", ns, "addr", "add", "198.18.255.2/30", "dev", &there],
            vec!["-n", ns, "link", "set", &there, "up"],
            vec!["-n", ns, "link", "set", "lo", "up"],
            vec![
                "-n",
                ns,
                "route",
                "add",
                "10.96.0.0/16",
                "via",
                "198.18.255.1",
            ],
        ];
        for step in steps {
            if output("ip", &step).await.is_none() {
                return Err(format!("`ip {}` failed", step.join(" ")));
            }
        }
        Ok(host)
    }

    /// Serves TCP `port` there: each connection gets `name` and a newline.
    async fn serve(&mut self, port: u16, name: &str) {
        let child = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "busybox", "nc", "-ll", "-p"])
            .arg(port.to_string())
            .args(["-e", "/bin/echo", name])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.server = Some(child);
        // Listening once this host gets an answer.
        let to = SocketAddr::from((Self::THERE, port));
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while ask(to).await.ok().flatten().as_deref() != Some(name) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the other host's server never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first line a client there reads from `to`.
    async fn ask(&self, to: SocketAddr) -> String {
        let out = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "timeout", "5", "busybox", "nc"])
            .args([to.ip().to_string(), to.port().to_string()])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.start_kill();
        }
        // Deleting the namespace deletes the veth pair with it.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .status();
    }
}

#[tokio::test]
async fn kernel_path_reaches_endpoints_on_other_hosts_and_serves_routed_clients() {
    if output("busybox", &["true"]).await.is_none() {
        eprintln!("skipped: no busybox (its nc serves and asks from the other host)");
        return;
    }
    let Some(_turn) = kernel_turn().await else {
        return;
    };
    let mut other = match OtherHost::create().await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("skipped: cannot make a network namespace for a second host: {e}");
            return;
        }
    };
    other.serve(8080, "remote").await;
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (kubeconfig, client) = support::apiserver(dir.path(), stop.clone()).await;
    let remote = create_service(
        &client,
        json!({"metadata": {"name": "remote"}, "spec": {"ports": [{"name": "http", "port": 80}]}}),
    )
    .await;
    let there = SocketAddr::from((OtherHost::THERE, 8080));
    set_endpoints(&client, "remote", subsets("http", "TCP", &[there])).await;
    let np = node_port();
    let local = create_service(&client, node_port_service("local", np, json!({}))).await;
    let a = tcp_backend("a", &stop).await;
    set_endpoints(&client, "local", subsets("http", "TCP", &[a])).await;
    let proxy = kernel_proxy(&kubeconfig).await;

    // This host to an endpoint on the other: the other host has no route
    // back to this host's main address, so this answers only because the
    // connection is masqueraded to the link's address as it leaves.
    let to = SocketAddr::from((cluster_ip(&remote), 80));
    assert_eq!(ask(to).await.unwrap().as_deref(), Some("remote"));
    // The other host as a client, routing the Service range through this
    // one (nat prerouting), to this host's endpoint; and to this host's
    // NodePort on the link's address.
    let to = SocketAddr::from((cluster_ip(&local), 80));
    assert_eq!(other.ask(to).await, "a", "ClusterIP from a routed client");
    let to = SocketAddr::from((OtherHost::HERE, np));
    assert_eq!(other.ask(to).await, "a", "NodePort from another host");
    stop_and_check_cleanup(proxy).await;
    stop.cancel();
}
