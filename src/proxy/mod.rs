//! `km proxy`: the Service proxy on every node.
//!
//! km pods use their host's network, so Endpoints (written by
//! `km controller-manager`) are hostIP:hostPort pairs. The proxy watches
//! Services and Endpoints and forwards each service port's TCP and UDP
//! traffic to its ready endpoints, round-robin or sticky per client IP
//! (`sessionAffinity: ClientIP`), on two paths:
//!
//! * The kernel data path (`--proxy-mode=nftables`, and `auto` where `nft`
//!   works; root): the kernel DNATs `ClusterIP:port` and `nodeIP:NodePort`
//!   straight to an endpoint, so those packets never pass through the
//!   proxy ([`kernel`], ruleset in [`nft`]). Rules are updated per changed
//!   service port, replaced at start (a crashed proxy's leftovers
//!   included) and removed on exit. NodePorts on 127.0.0.0/8 are not
//!   DNATed (that would need `route_localnet`): the user-space path serves
//!   them. Each ClusterIP is routed to this host
//!   (`--cluster-ip-local-routes`, [`localroute`]) so that connections
//!   from this node use loopback's MTU.
//! * The user-space path: connections end in the proxy, which opens its
//!   own to the endpoint ([`tcp`], [`udp`]). It serves the NodePorts on
//!   every address of the node (or those inside `--nodeport-addresses`) in
//!   every mode; in nftables mode the kernel takes the non-loopback ones
//!   first. In iptables mode it also serves ClusterIPs: each service port
//!   gets a listener on the node's address and an iptables DNAT rule sends
//!   `ClusterIP:port` there ([`redirect`]). In userspace mode (the fallback
//!   without the privilege) ClusterIPs are not served (one warning at start
//!   says so) and the kernel's rules are left alone.
//!
//! Endpoint changes apply as their watch event arrives ([`sync`]). When an
//! endpoint goes, new connections avoid it at once. On the user-space path
//! its open connections wind down ([`tcp`]: FIN to the endpoint, its
//! answer forwarded, closed after `--connection-drain-timeout`) and UDP
//! sessions to it end; on the kernel path conntrack keeps open TCP
//! connections going until they close, and UDP flows are ended with the
//! `conntrack` tool when it is installed.
//!
//! `/healthz` (200 once the first lists of Services and Endpoints are
//! applied, in nftables mode programmed too) is served on
//! `--healthz-bind-address`, and `/metrics` ([`metrics`]) with `/healthz`
//! on `--metrics-bind-address`. IPv4 only.

pub mod balancer;
pub mod dataplane;
pub mod kernel;
pub mod localroute;
pub mod metrics;
pub mod nft;
pub mod nodeaddr;
pub mod redirect;
pub mod sync;
pub mod table;
pub mod tcp;
pub mod tool;
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

use self::kernel::Kernel;

/// How Service traffic reaches its endpoints (`--proxy-mode`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// nftables if it works, else iptables, else userspace with a warning.
    Auto,
    /// The kernel DNATs ClusterIPs and NodePorts to the endpoints (nftables
    /// table `ip km-proxy`); fails without the privilege.
    Nftables,
    /// ClusterIPs DNATed to the proxy's listeners (iptables chain
    /// nat/KM-SERVICES); fails without the privilege.
    Iptables,
    /// No kernel rules: NodePorts only, ClusterIPs not served.
    Userspace,
}

/// Which path serves ClusterIPs, as chosen at start.
enum Path {
    /// nftables DNAT to the endpoints.
    Kernel(Kernel),
    /// iptables DNAT to the proxy's listeners.
    Redirect,
    /// None, for this reason.
    None(String),
}

/// Flags of `km proxy` (upstream kube-proxy names where they exist).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// kubeconfig of the Kubernetes API [default: $KUBECONFIG, ~/.kube/config, or in-cluster].
    #[arg(long, env = "KM_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name, instead of the hostname; in iptables mode its Node's InternalIP is where ClusterIP traffic is redirected (unless --bind-address is set).
    #[arg(long, env = "KM_HOSTNAME_OVERRIDE", value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// In iptables mode, the address of the listeners ClusterIP traffic is redirected to; 0.0.0.0 means this node's address (its Node's InternalIP, else the source address of the default route).
    #[arg(
        long,
        env = "KM_PROXY_BIND_ADDRESS",
        default_value = "0.0.0.0",
        value_name = "IP"
    )]
    pub bind_address: IpAddr,
    /// How Service traffic reaches the endpoints: auto (nftables, else iptables, else userspace), nftables (the kernel DNATs ClusterIPs and NodePorts straight to the endpoints; 127.0.0.1 NodePorts stay in user space), iptables (ClusterIPs DNATed to the proxy, which forwards), or userspace (NodePorts only, ClusterIPs not served).
    #[arg(
        long,
        env = "KM_PROXY_MODE",
        value_enum,
        default_value = "auto",
        value_name = "MODE"
    )]
    pub proxy_mode: ProxyMode,
    /// With the nftables path, route each ClusterIP to this host (a /32 `local` route on lo with this node's address as source, routing protocol 173, removed on exit), as kube-proxy's IPVS mode binds them to kube-ipvs0: connections from this node then get loopback's MTU instead of the default route's (in km's bench, 1 MiB transfers to an endpoint on this node went from 61 % to 99 % of a direct connection). false leaves the routing table alone.
    #[arg(long, env = "KM_PROXY_CLUSTER_IP_LOCAL_ROUTES", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub cluster_ip_local_routes: bool,
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
    let kernel_nodeports = match &nodeport_addresses {
        None => nft::NodePortAddresses::Local,
        Some(list) => nft::NodePortAddresses::Only(
            list.iter()
                .filter_map(|ip| match ip {
                    IpAddr::V4(v4) => Some(*v4),
                    IpAddr::V6(_) => None,
                })
                .collect(),
        ),
    };
    let route_src = match args.cluster_ip_local_routes {
        true => Some(node_ip(&client, &hostname, &local).await),
        false => None,
    };
    let path = choose_path(args.proxy_mode, kernel_nodeports, route_src).await?;
    let mut redirect_to = None;
    match &path {
        Path::Kernel(_) => tracing::info!(
            table = nft::TABLE,
            "serving ClusterIPs and NodePorts in the kernel: nftables DNAT straight to the endpoints (NodePorts on 127.0.0.0/8 in user space)"
        ),
        Path::Redirect => {
            let to = if bind.is_unspecified() {
                node_ip(&client, &hostname, &local).await
            } else {
                bind
            };
            tracing::info!(backend = "iptables", %to, "serving ClusterIPs: DNAT to the proxy's listeners");
            if to.is_loopback() {
                tracing::warn!(
                    "ClusterIP traffic is redirected to {to}: other hosts routing through this node need net.ipv4.conf.all.route_localnet=1; give --bind-address a routable address of this node"
                );
            }
            redirect_to = Some(to);
        }
        Path::None(why) => tracing::warn!(
            "ClusterIPs are not served ({why}): Services are reachable on their NodePorts only. \
             To serve ClusterIPs, run km proxy as root on a host with nft or iptables, with --proxy-mode=auto, nftables or iptables"
        ),
    }
    let kernel = match &path {
        Path::Kernel(k) => Some(k.clone()),
        _ => None,
    };

    let metrics = Arc::new(metrics::Metrics::default());
    let (ready_tx, ready) = watch::channel(false);
    serve_http(&args, metrics.clone(), kernel.clone(), ready, stop.clone()).await?;

    let shutdown = stop.child_token();
    let tasks = TaskTracker::new();
    let cfg = dataplane::Config {
        redirect_to,
        kernel: kernel.clone(),
        nodeport_addresses,
        drain_timeout: args.connection_drain_timeout,
        udp_timeout: args.udp_timeout,
    };
    let mut dp = dataplane::Dataplane::new(cfg, metrics.clone(), shutdown.clone(), tasks.clone());
    let rules = match path {
        Path::Kernel(k) => Some(tokio::spawn(k.run(metrics.clone(), shutdown.clone()))),
        Path::Redirect => Some(tokio::spawn(redirect::keep(
            dp.rules(),
            metrics.clone(),
            shutdown.clone(),
        ))),
        Path::None(_) => None,
    };
    tracing::info!(node = %hostname, mode = ?args.proxy_mode, "km proxy watching Services and Endpoints");
    sync::run(client, &mut dp, &metrics, ready_tx, shutdown.clone()).await;
    shutdown.cancel();
    dp.clear();
    if let Some(r) = rules {
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

/// The path that serves ClusterIPs in `mode`, or why there is none; the
/// other mode's leftover rules are removed. An explicitly requested mode
/// that does not work is an error.
async fn choose_path(
    mode: ProxyMode,
    nodeports: nft::NodePortAddresses,
    local_routes: Option<Ipv4Addr>,
) -> anyhow::Result<Path> {
    let fix = "run km proxy as root with that tool installed, or use --proxy-mode=userspace";
    match mode {
        ProxyMode::Userspace => Ok(Path::None("--proxy-mode=userspace".into())),
        ProxyMode::Nftables => {
            let k = Kernel::start(nodeports, local_routes)
                .await
                .with_context(|| {
                    format!("--proxy-mode=nftables: cannot program nftables; {fix}")
                })?;
            let _ = redirect::remove().await;
            Ok(Path::Kernel(k))
        }
        ProxyMode::Iptables => {
            redirect::install(&[]).await.with_context(|| {
                format!("--proxy-mode=iptables: cannot program iptables; {fix}")
            })?;
            let _ = Kernel::remove_table().await;
            Ok(Path::Redirect)
        }
        ProxyMode::Auto => {
            let nft = match Kernel::start(nodeports, local_routes).await {
                Ok(k) => {
                    let _ = redirect::remove().await;
                    return Ok(Path::Kernel(k));
                }
                Err(e) => e,
            };
            match redirect::install(&[]).await {
                Ok(()) => Ok(Path::Redirect),
                Err(ipt) => Ok(Path::None(format!("nftables: {nft}; iptables: {ipt}"))),
            }
        }
    }
}

/// Serves /healthz on --healthz-bind-address and /metrics (with /healthz)
/// on --metrics-bind-address until `stop`.
async fn serve_http(
    args: &Args,
    metrics: Arc<metrics::Metrics>,
    kernel: Option<Kernel>,
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
                let (metrics, kernel) = (metrics.clone(), kernel.clone());
                async move {
                    if let Some(k) = kernel {
                        k.read_counters().await;
                    }
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.render(),
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
