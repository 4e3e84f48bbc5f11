//! `km proxy`: the Service proxy on every node.
//!
//! km pods use their host's network, so Endpoints (written by
//! `km controller-manager`) are hostIP:hostPort pairs. The proxy watches
//! Services and Endpoints and forwards each service port's TCP and UDP
//! traffic to its ready endpoints, round-robin or sticky per client IP
//! (`sessionAffinity: ClientIP`). It is a user-space proxy: connections
//! end in the proxy, which opens its own to the endpoint.
//!
//! Where traffic comes in:
//! * NodePorts (NodePort and LoadBalancer Services): the proxy listens on
//!   the NodePort on every address of the node, or on those inside
//!   `--nodeport-addresses`.
//! * ClusterIP:port: only with the privilege to program kernel NAT (root,
//!   and `nft` or `iptables`): each service port gets a listener on the
//!   node's address and a DNAT rule sends ClusterIP:port there
//!   ([`redirect`]). The rules are replaced at start (a crashed proxy's
//!   leftovers included) and removed on exit. Without the privilege, or
//!   with `--proxy-mode=userspace`, ClusterIPs are not served (one warning
//!   at start says so) and Services are reached on their NodePorts;
//!   userspace mode leaves the kernel's rules alone.
//!
//! Endpoint changes apply as their watch event arrives ([`sync`]). When an
//! endpoint goes, new connections avoid it at once and its open connections
//! wind down ([`tcp`]: FIN to the endpoint, its answer forwarded, closed
//! after `--connection-drain-timeout`); UDP sessions to it end.
//!
//! `/healthz` (200 once the first lists of Services and Endpoints are
//! applied) is served on `--healthz-bind-address`, and `/metrics`
//! ([`metrics`]) with `/healthz` on `--metrics-bind-address`. IPv4 only.

pub mod balancer;
pub mod dataplane;
pub mod metrics;
pub mod nodeaddr;
pub mod redirect;
pub mod sync;
pub mod table;
pub mod tcp;
pub mod udp;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::routing::get;
use k8s_openapi::api::core::v1::Node;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::redirect::Backend;

/// How ClusterIP traffic reaches the proxy (`--proxy-mode`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// nftables if it works, else iptables, else userspace with a warning.
    Auto,
    /// DNAT rules in nftables table `ip km-proxy`; fails without the privilege.
    Nftables,
    /// DNAT rules in iptables chain nat/KM-SERVICES; fails without the privilege.
    Iptables,
    /// No kernel rules: NodePorts only, ClusterIPs not served.
    Userspace,
}

/// Flags of `km proxy` (upstream kube-proxy names where they exist).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// kubeconfig of the Kubernetes API [default: $KUBECONFIG, ~/.kube/config, or in-cluster].
    #[arg(long, env = "KM_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name, instead of the hostname; its Node's InternalIP is where ClusterIP traffic is redirected (unless --bind-address is set).
    #[arg(long, env = "KM_HOSTNAME_OVERRIDE", value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// Address of the listeners ClusterIP traffic is redirected to; 0.0.0.0 means this node's address (its Node's InternalIP, else the source address of the default route).
    #[arg(
        long,
        env = "KM_PROXY_BIND_ADDRESS",
        default_value = "0.0.0.0",
        value_name = "IP"
    )]
    pub bind_address: IpAddr,
    /// How ClusterIP traffic is redirected to the proxy: auto (nftables, else iptables, else none), nftables, iptables, or userspace (none: ClusterIPs are not served, NodePorts are).
    #[arg(
        long,
        env = "KM_PROXY_MODE",
        value_enum,
        default_value = "auto",
        value_name = "MODE"
    )]
    pub proxy_mode: ProxyMode,
    /// Address and port of /healthz (port 0 picks one).
    #[arg(
        long,
        env = "KM_PROXY_HEALTHZ_BIND_ADDRESS",
        default_value = "127.0.0.1:10256",
        value_name = "IP:PORT",
        value_parser = socket_address
    )]
    pub healthz_bind_address: SocketAddr,
    /// Address and port of /metrics (and /healthz); port 0 picks one.
    #[arg(
        long,
        env = "KM_PROXY_METRICS_BIND_ADDRESS",
        default_value = "127.0.0.1:10249",
        value_name = "IP:PORT",
        value_parser = socket_address
    )]
    pub metrics_bind_address: SocketAddr,
    /// Serve NodePorts only on this node's addresses inside these IPv4 CIDRs (comma-separated, e.g. 127.0.0.0/8,192.0.2.0/24) [default: every address].
    #[arg(
        long,
        env = "KM_PROXY_NODEPORT_ADDRESSES",
        value_delimiter = ',',
        value_name = "CIDRS"
    )]
    pub nodeport_addresses: Vec<nodeaddr::Cidr>,
    /// How long a UDP client session lives without traffic.
    #[arg(long, env = "KM_PROXY_UDP_TIMEOUT", default_value = "30s", value_parser = positive_duration, value_name = "DURATION")]
    pub udp_timeout: Duration,
    /// How long connections to a removed endpoint may finish (the endpoint gets a FIN and its answer is forwarded) before they are closed.
    #[arg(long, env = "KM_PROXY_CONNECTION_DRAIN_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub connection_drain_timeout: Duration,
}

fn socket_address(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "{s:?} is not an address and port; write it like 127.0.0.1:10256 (port 0 picks one)"
        )
    })
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e}; write it like 30s or 500ms"))?;
    if d.is_zero() {
        return Err("must be greater than 0, like 30s".into());
    }
    Ok(d)
}

/// Runs the proxy until `stop`, then removes its kernel rules.
pub async fn run(args: Args, stop: CancellationToken) -> anyhow::Result<()> {
    crate::mesos::scheduler::install_crypto_provider();
    let local = nodeaddr::local_addresses()
        .context("cannot read this node's addresses from /proc/net/fib_trie")?;
    let nodeport_addresses = nodeaddr::nodeport_addresses(&args.nodeport_addresses, &local);
    if nodeport_addresses.as_ref().is_some_and(|a| a.is_empty()) {
        anyhow::bail!(
            "--nodeport-addresses matches no address of this node (its addresses: {}); give CIDRs that contain one",
            list(&local)
        );
    }
    let bind = match args.bind_address {
        IpAddr::V4(ip) if ip.is_unspecified() || local.contains(&ip) => ip,
        IpAddr::V4(ip) => anyhow::bail!(
            "--bind-address {ip} is not an address of this node (its addresses: {}); give one of them or 0.0.0.0",
            list(&local)
        ),
        IpAddr::V6(ip) => {
            anyhow::bail!(
                "--bind-address {ip}: km proxy serves IPv4 only; give an IPv4 address or 0.0.0.0"
            )
        }
    };
    let client = crate::kubeclient::from_kubeconfig(args.kubeconfig.as_deref()).await?;
    client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server (check --kubeconfig)")?;
    let hostname = args
        .hostname_override
        .clone()
        .unwrap_or_else(system_hostname);
    let redirect_ip = if bind.is_unspecified() {
        node_ip(&client, &hostname, &local).await
    } else {
        bind
    };
    let backend = match choose_backend(args.proxy_mode).await? {
        Ok(b) => {
            tracing::info!(backend = b.name(), to = %redirect_ip, "serving ClusterIPs: DNAT to the proxy's listeners");
            if redirect_ip.is_loopback() {
                tracing::warn!(
                    "ClusterIP traffic is redirected to {redirect_ip}: other hosts routing through this node need net.ipv4.conf.all.route_localnet=1; give --bind-address a routable address of this node"
                );
            }
            Some(b)
        }
        Err(why) => {
            tracing::warn!(
                "ClusterIPs are not served ({why}): Services are reachable on their NodePorts only. \
                 To serve ClusterIPs, run km proxy as root on a host with nft or iptables, with --proxy-mode=auto, nftables or iptables"
            );
            None
        }
    };

    let metrics = Arc::new(metrics::Metrics::default());
    let (ready_tx, ready) = watch::channel(false);
    serve_http(&args, metrics.clone(), ready, stop.clone()).await?;

    let shutdown = stop.child_token();
    let tasks = TaskTracker::new();
    let cfg = dataplane::Config {
        redirect_to: backend.map(|_| redirect_ip),
        nodeport_addresses,
        drain_timeout: args.connection_drain_timeout,
        udp_timeout: args.udp_timeout,
    };
    let mut dp = dataplane::Dataplane::new(cfg, metrics.clone(), shutdown.clone(), tasks.clone());
    let redirector = backend.map(|b| {
        tokio::spawn(redirect::keep(
            b,
            dp.rules(),
            metrics.clone(),
            shutdown.clone(),
        ))
    });
    tracing::info!(node = %hostname, mode = ?args.proxy_mode, "km proxy watching Services and Endpoints");
    sync::run(client, &mut dp, &metrics, ready_tx, shutdown.clone()).await;
    shutdown.cancel();
    dp.clear();
    if let Some(r) = redirector {
        let _ = r.await;
    }
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close within 5s of stopping");
    }
    Ok(())
}

/// The kernel's hostname.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn list(addrs: &BTreeSet<Ipv4Addr>) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where ClusterIP traffic goes when --bind-address is 0.0.0.0: the Node's
/// InternalIP if it is an address of this host, else the default route's.
async fn node_ip(client: &kube::Client, node: &str, local: &BTreeSet<Ipv4Addr>) -> Ipv4Addr {
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let internal = match nodes.get_opt(node).await {
        Ok(n) => n
            .and_then(|n| n.status)
            .and_then(|s| s.addresses)
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.type_ == "InternalIP")
            .find_map(|a| a.address.parse::<Ipv4Addr>().ok()),
        Err(e) => {
            tracing::debug!(%node, error = %e, "cannot read this node's Node");
            None
        }
    };
    match internal {
        Some(ip) if local.contains(&ip) => ip,
        _ => crate::hostaddr::primary_ipv4(),
    }
}

/// The redirect backend for `mode`, or why there is none. An explicitly
/// requested backend that does not work is an error.
async fn choose_backend(mode: ProxyMode) -> anyhow::Result<Result<Backend, String>> {
    let fix = "run km proxy as root with that tool installed, or use --proxy-mode=userspace";
    match mode {
        ProxyMode::Userspace => Ok(Err("--proxy-mode=userspace".into())),
        ProxyMode::Nftables => {
            Backend::Nftables.install(&[]).await.with_context(|| {
                format!("--proxy-mode=nftables: cannot program nftables; {fix}")
            })?;
            let _ = Backend::Iptables.remove().await;
            Ok(Ok(Backend::Nftables))
        }
        ProxyMode::Iptables => {
            Backend::Iptables.install(&[]).await.with_context(|| {
                format!("--proxy-mode=iptables: cannot program iptables; {fix}")
            })?;
            let _ = Backend::Nftables.remove().await;
            Ok(Ok(Backend::Iptables))
        }
        ProxyMode::Auto => {
            let nft = match Backend::Nftables.install(&[]).await {
                Ok(()) => {
                    let _ = Backend::Iptables.remove().await;
                    return Ok(Ok(Backend::Nftables));
                }
                Err(e) => e,
            };
            match Backend::Iptables.install(&[]).await {
                Ok(()) => Ok(Ok(Backend::Iptables)),
                Err(ipt) => Ok(Err(format!("nftables: {nft}; iptables: {ipt}"))),
            }
        }
    }
}

/// Serves /healthz on --healthz-bind-address and /metrics (with /healthz)
/// on --metrics-bind-address until `stop`.
async fn serve_http(
    args: &Args,
    metrics: Arc<metrics::Metrics>,
    ready: watch::Receiver<bool>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let healthz = get(move || {
        let ok = *ready.borrow();
        async move {
            if ok {
                (axum::http::StatusCode::OK, "ok")
            } else {
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "waiting for the first lists of Services and Endpoints",
                )
            }
        }
    });
    let metrics_app = axum::Router::new()
        .route("/healthz", healthz.clone())
        .route(
            "/metrics",
            get(move || {
                let text = metrics.render();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        );
    let mut servers = vec![(
        "--metrics-bind-address",
        args.metrics_bind_address,
        metrics_app,
    )];
    if args.healthz_bind_address != args.metrics_bind_address {
        servers.push((
            "--healthz-bind-address",
            args.healthz_bind_address,
            axum::Router::new().route("/healthz", healthz),
        ));
    }
    for (flag, addr, app) in servers {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("{flag} {addr}: cannot listen there (in use? pick another port, or 0)")
        })?;
        tracing::info!(address = %listener.local_addr()?, "serving {}", if flag == "--healthz-bind-address" { "/healthz" } else { "/metrics, /healthz" });
        let stop = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
    }
    Ok(())
}
