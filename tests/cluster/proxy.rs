//! `km proxy` in-process against an in-process km apiserver. Backends are
//! local TCP and UDP echo servers on this host's address, standing for pods
//! at hostIP:hostPort; Services and Endpoints are written straight into the
//! API (as the controller manager would), and clients connect through the
//! proxy's NodePort on 127.0.0.1, or through a ClusterIP when the test runs
//! as root with nft.

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

/// Whether this test may program nftables (root, with nft).
async fn can_use_nft() -> bool {
    output("nft", &["list", "tables"]).await.is_some()
}

#[tokio::test]
async fn cluster_ip_is_served_through_nftables_dnat_and_cleaned_up() {
    if !can_use_nft().await {
        eprintln!("skipped: nft is not usable here (needs root and the nft tool)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (kubeconfig, client) = support::apiserver(dir.path(), stop.clone()).await;
    // A crashed proxy's leftovers: replaced at start.
    let stale = "table ip km-proxy {\n chain stale { }\n}\n";
    let mut nft = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    nft.stdin
        .take()
        .unwrap()
        .write_all(stale.as_bytes())
        .await
        .unwrap();
    assert!(nft.wait().await.unwrap().success());

    let svc = create_service(
        &client,
        json!({"metadata": {"name": "internal"}, "spec": {"ports": [
            {"name": "http", "port": 80},
            {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
    )
    .await;
    let cluster_ip: Ipv4Addr = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap()
        .parse()
        .unwrap();
    let tcp = tcp_backend("a", &stop).await;
    let udp = udp_backend("u", &stop).await;
    let mut sets = subsets("http", "TCP", &[tcp]);
    if let (Value::Array(s), Value::Array(u)) = (&mut sets, subsets("dns", "UDP", &[udp])) {
        s.extend(u);
    }
    set_endpoints(&client, "internal", sets).await;
    let proxy = Proxy::start(&kubeconfig, &["--proxy-mode", "nftables"]).await;
    let ruleset = output("nft", &["list", "table", "ip", "km-proxy"])
        .await
        .unwrap();
    assert!(!ruleset.contains("stale"), "{ruleset}");

    let to = SocketAddr::from((cluster_ip, 80));
    assert_eq!(until_answered(to).await, "a");
    let s = UdpSocket::bind("0.0.0.0:0").await.unwrap();
    s.connect((cluster_ip, 53)).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let answer = loop {
        s.send(b"ping").await.unwrap();
        let mut buf = [0u8; 64];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), s.recv(&mut buf)).await
        {
            break String::from_utf8_lossy(&buf[..n]).into_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no UDP answer on the ClusterIP"
        );
    };
    assert_eq!(answer, "u:ping");
    let ruleset = output("nft", &["list", "table", "ip", "km-proxy"])
        .await
        .unwrap();
    assert!(
        ruleset.contains(&format!("{cluster_ip} . tcp . 80")),
        "{ruleset}"
    );

    proxy.stop().await;
    let ruleset = output("nft", &["list", "ruleset"]).await.unwrap();
    assert!(
        !ruleset.contains("km-proxy"),
        "rules left behind:\n{ruleset}"
    );
    if let Some(ipt) = output("iptables-save", &["-t", "nat"]).await {
        assert!(!ipt.contains("KM-SERVICES"), "{ipt}");
    }
    stop.cancel();
}
