//! The role's entry: flags, leader election, and the controllers' lifetimes.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::routing::get;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::selection::{self, Controller};
use super::{COMPONENT, Config, Context, events};
use crate::mesos::detector::MasterSpec;

/// Flags of `km controller-manager` (upstream kube-controller-manager names where they exist).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// kubeconfig of the Kubernetes API [default: $KUBECONFIG, ~/.kube/config, or in-cluster].
    #[arg(long, env = "KM_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Controllers to run: '*' the default set (endpoints, nodes), 'name' adds one, '-name' removes one. Also: replicaset, deployment, garbagecollector, namespace. Beside the upstream kube-controller-manager, run that one with --controllers=*,-endpoints-controller,-endpointslice-controller,-endpointslice-mirroring-controller.
    #[arg(
        long,
        env = "KM_CONTROLLERS",
        default_value = "*",
        value_delimiter = ',',
        value_name = "NAMES"
    )]
    pub controllers: Vec<String>,
    /// Endpoints at the pods' hostIP:hostPort from the scheduler's port annotations (true, as the scheduler's default), or at podIP:containerPort (false).
    #[arg(long, env = "KM_HOST_PORT_ENDPOINTS", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub host_port_endpoints: bool,
    /// Mesos master the nodes controller reads agents from: host:port, http(s)://host:port, or zk://h1:p1,h2:p2/mesos.
    #[arg(long, env = "KM_MESOS_MASTER", default_value = "localhost:5050")]
    pub mesos_master: String,
    /// How often the nodes controller reads the master's state.
    #[arg(long, env = "KM_NODE_MONITOR_PERIOD", default_value = "5s", value_parser = humantime::parse_duration)]
    pub node_monitor_period: Duration,
    /// A Node whose Ready heartbeat is older than this is kept Ready from Mesos's view (no executor renews it).
    #[arg(long, env = "KM_NODE_MONITOR_GRACE_PERIOD", default_value = "40s", value_parser = humantime::parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// How long a removed or unreachable agent's pods are left before they are marked Failed (and replaced by their controllers).
    #[arg(long, env = "KM_POD_EVICTION_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub pod_eviction_timeout: Duration,
    /// Objects each controller reconciles at once.
    #[arg(long, env = "KM_CONCURRENT_SYNCS", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrent_syncs: u16,
    /// Run as one of several replicas: only the holder of the Lease --leader-elect-resource-name acts.
    #[arg(long, env = "KM_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub leader_elect: bool,
    /// Name of the leader Lease.
    #[arg(long, default_value = "km-controller-manager")]
    pub leader_elect_resource_name: String,
    /// Namespace of the leader Lease.
    #[arg(long, default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,
    /// How long the leader's lease lasts without renewal.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// The leader steps down when it could not renew for this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// Pause between attempts to take or renew the lease.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub leader_elect_retry_period: Duration,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "KM_CONTROLLER_MANAGER_ADDRESS",
        default_value = "127.0.0.1"
    )]
    pub address: IpAddr,
    /// Port of /healthz, /readyz and /metrics (0 picks one).
    #[arg(long, env = "KM_CONTROLLER_MANAGER_PORT", default_value_t = 10252)]
    pub port: u16,
}

/// Runs the selected controllers until `stop`.
pub async fn run(args: Args, stop: CancellationToken) -> anyhow::Result<()> {
    crate::mesos::scheduler::install_crypto_provider();
    let selected = selection::parse(&args.controllers)?;
    if selected.is_empty() {
        anyhow::bail!(
            "--controllers {:?} selects no controller; use '*' for the default set",
            args.controllers.join(",")
        );
    }
    let mesos_master: MasterSpec = args
        .mesos_master
        .parse()
        .with_context(|| format!("--mesos-master {}", args.mesos_master))?;
    let election = args.leader_elect.then(|| crate::election::Config {
        namespace: args.leader_elect_resource_namespace.clone(),
        name: args.leader_elect_resource_name.clone(),
        identity: crate::election::default_identity(),
        lease_duration: args.leader_elect_lease_duration,
        renew_deadline: args.leader_elect_renew_deadline,
        retry_period: args.leader_elect_retry_period,
    });
    if let Some(e) = &election {
        e.validate().context(
            "--leader-elect-retry-period, --leader-elect-renew-deadline, --leader-elect-lease-duration",
        )?;
    }
    let client = crate::kubeclient::from_kubeconfig(args.kubeconfig.as_deref()).await?;
    client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server (check --kubeconfig)")?;

    let (leading_tx, leading) = watch::channel(false);
    let metrics = super::metrics::Metrics::default();
    serve(&args, leading, metrics.clone(), stop.clone()).await?;

    let leadership = match election {
        Some(cfg) => {
            tracing::info!(lease = %cfg.name, identity = %cfg.identity, "waiting to become the leader");
            match crate::election::Elector::new(client.clone(), cfg)
                .acquire(&stop)
                .await
            {
                Some(l) => Some(l),
                None => return Ok(()),
            }
        }
        None => None,
    };
    let _ = leading_tx.send(true);
    let lost = leadership.as_ref().map(|l| l.lost());
    let work = stop.child_token();
    if let Some(lost) = lost.clone() {
        let work = work.clone();
        tokio::spawn(async move {
            lost.cancelled().await;
            work.cancel();
        });
    }
    let ctx = Context {
        events: events::Recorder::new(client.clone(), COMPONENT),
        client,
        config: Arc::new(Config {
            host_port_endpoints: args.host_port_endpoints,
            concurrent_syncs: args.concurrent_syncs,
            mesos_master,
            node_monitor_period: args.node_monitor_period,
            node_monitor_grace_period: args.node_monitor_grace_period,
            pod_eviction_timeout: args.pod_eviction_timeout,
        }),
        metrics,
    };
    tracing::info!(controllers = ?selected.iter().map(|c| c.name()).collect::<Vec<_>>(), "starting controllers");
    let mut running = tokio::task::JoinSet::new();
    for c in selected {
        running.spawn(keep_running(c, ctx.clone(), work.clone()));
    }
    while running.join_next().await.is_some() {}
    if let Some(l) = leadership {
        let deposed = lost.is_some_and(|l| l.is_cancelled()) && !stop.is_cancelled();
        l.release().await;
        if deposed {
            anyhow::bail!("lost the leader lease; exiting so that a restart stands by again");
        }
    }
    Ok(())
}

/// Runs one controller until `stop`, restarting it (with backoff) when it fails.
async fn keep_running(c: Controller, ctx: Context, stop: CancellationToken) {
    let mut delay = Duration::from_secs(1);
    loop {
        let started = std::time::Instant::now();
        let result = tokio::select! {
            r = start(c, ctx.clone(), stop.clone()) => r,
            _ = stop.cancelled() => return,
        };
        if stop.is_cancelled() {
            return;
        }
        if started.elapsed() > Duration::from_secs(60) {
            delay = Duration::from_secs(1);
        }
        match result {
            Ok(()) => tracing::warn!(controller = %c, "controller ended; restarting in {delay:?}"),
            Err(e) => {
                tracing::error!(controller = %c, error = %format!("{e:#}"), "controller failed; restarting in {delay:?}")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

async fn start(c: Controller, ctx: Context, stop: CancellationToken) -> anyhow::Result<()> {
    match c {
        Controller::Endpoints => super::endpoints::run(ctx, stop).await,
        Controller::Nodes => super::nodes::run(ctx, stop).await,
        Controller::ReplicaSet => super::replicaset::run(ctx, stop).await,
        Controller::Deployment => super::deployment::run(ctx, stop).await,
        Controller::GarbageCollector => super::garbagecollector::run(ctx, stop).await,
        Controller::Namespace => super::namespace::run(ctx, stop).await,
    }
}

/// Serves /healthz, /readyz (ready once leading) and /metrics until `stop`.
async fn serve(
    args: &Args,
    leading: watch::Receiver<bool>,
    metrics: super::metrics::Metrics,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind((args.address, args.port))
        .await
        .with_context(|| {
            format!(
                "--address/--port: cannot listen on {}:{} (in use? pick another --port, or 0)",
                args.address, args.port
            )
        })?;
    tracing::info!(address = %listener.local_addr()?, "serving /healthz, /readyz, /metrics");
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let text = metrics.render();
                async move { text }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let leading = *leading.borrow();
                async move {
                    if leading {
                        (axum::http::StatusCode::OK, "ok")
                    } else {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "standing by: another replica holds the leader lease",
                        )
                    }
                }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok(())
}
