//! `km scheduler`: the Mesos framework that schedules Kubernetes pods.
//!
//! It watches every pod through the Kubernetes API and takes those that
//! name it (`spec.schedulerName`, or the legacy annotation
//! `scheduler.alpha.kubernetes.io/name`) and are not yet placed. Offers are
//! matched by the core library's matcher, several pods per offer; a placed
//! pod is annotated first and launched second (see [`core`] for why that
//! keeps a pod from ever running twice, and for how task states map to pod
//! outcomes). The framework ID lives in a ConfigMap (or ZooKeeper), so a restarted
//! scheduler fails over to its framework and its running tasks.

pub mod core;
pub mod events;
pub mod framework_id;
pub mod metrics;
pub mod queue;
pub mod tasks;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::flags::MatchingFlags;
use crate::mesos::detector::{MasterSpec, detect};
use crate::mesos::proto::v1;
use crate::mesos::scheduler::{Credentials, SchedulerConfig};
use crate::offers::{OfferRegistry, RegistryConfig};

/// Flags of `km scheduler` (the original k8sm names where they apply).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Mesos master: host:port, http(s)://host:port, or zk://h1:p1,h2:p2/mesos.
    #[arg(long, env = "KM_MESOS_MASTER", default_value = "localhost:5050")]
    pub mesos_master: String,
    /// FrameworkInfo.user: the user tasks run as on the agents.
    #[arg(long, env = "KM_MESOS_USER", default_value = "root")]
    pub mesos_user: String,
    /// Principal for HTTP basic authentication with the master.
    #[arg(long, env = "KM_MESOS_AUTHENTICATION_PRINCIPAL")]
    pub mesos_authentication_principal: Option<String>,
    /// File holding the secret of --mesos-authentication-principal.
    #[arg(long, env = "KM_MESOS_AUTHENTICATION_SECRET_FILE", value_name = "FILE")]
    pub mesos_authentication_secret_file: Option<PathBuf>,
    /// How long Mesos keeps the framework's tasks while no scheduler is connected (0: forget the stored framework ID).
    #[arg(long, env = "KM_FAILOVER_TIMEOUT", default_value = "1week", value_parser = humantime::parse_duration)]
    pub failover_timeout: Duration,
    /// FrameworkInfo.name.
    #[arg(long, env = "KM_FRAMEWORK_NAME", default_value = "Kubernetes")]
    pub framework_name: String,
    /// FrameworkInfo.webui_url.
    #[arg(long, env = "KM_FRAMEWORK_WEBURI")]
    pub framework_weburi: Option<String>,
    /// Pods whose spec.schedulerName (or scheduler.alpha.kubernetes.io/name annotation) is this are scheduled here.
    #[arg(long, env = "KM_SCHEDULER_NAME", default_value = "k8sm-scheduler")]
    pub scheduler_name: String,
    /// Namespace of the scheduler's own objects (the framework ID ConfigMap).
    #[arg(long, env = "KM_NAMESPACE", default_value = "kube-system")]
    pub namespace: String,
    /// kubeconfig of the Kubernetes API [default: $KUBECONFIG, ~/.kube/config, or in-cluster].
    #[arg(long, env = "KM_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Period of implicit task reconciliation (0 disables; explicit reconciliation runs on every subscription).
    #[arg(long, env = "KM_RECONCILE_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub reconcile_interval: Duration,
    /// Address of /healthz, /readyz, /metrics and /debug/{state,queue,tasks,offers}.
    #[arg(long, env = "KM_SCHEDULER_ADDRESS", default_value = "127.0.0.1")]
    pub address: IpAddr,
    /// Port of /healthz, /readyz, /metrics and /debug/state (0 picks one).
    #[arg(long, env = "KM_SCHEDULER_PORT", default_value_t = 10251)]
    pub port: u16,
    /// How long an unused offer is held before it is declined.
    #[arg(long, env = "KM_OFFER_TTL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub offer_ttl: Duration,
    /// refuse_seconds of declined offers: how long the master keeps them from this framework.
    #[arg(long, env = "KM_OFFER_REFUSE_SECONDS", default_value_t = 5.0)]
    pub offer_refuse_seconds: f64,
    /// First delay before a pod that fit nowhere is tried again (doubling, with jitter).
    #[arg(long, env = "KM_INITIAL_POD_BACKOFF", default_value = "1s", value_parser = humantime::parse_duration)]
    pub initial_pod_backoff: Duration,
    /// Longest delay between attempts for one pod (an offer that fits ends it early).
    #[arg(long, env = "KM_MAX_POD_BACKOFF", default_value = "60s", value_parser = humantime::parse_duration)]
    pub max_pod_backoff: Duration,
    /// Where the framework ID is kept: k8s:// (a ConfigMap in --namespace) or zk://h1:p1,h2:p2/path (znode <path>/<framework name>) [default: zk://<masters>/<mesos path>/k8sm when --mesos-master is zk://, else k8s://].
    #[arg(long, env = "KM_FRAMEWORK_STORE_URI", value_name = "URI")]
    pub framework_store_uri: Option<String>,
    /// Run as one of several replicas: only the holder of the Lease k8sm-<framework name>-scheduler in --namespace schedules, the others stand by.
    #[arg(long, env = "KM_HA")]
    pub ha: bool,
    /// With --ha: how long the leader's lease lasts without renewal (a standby takes over within it).
    #[arg(long, env = "KM_HA_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub ha_lease_duration: Duration,
    /// With --ha: the leader steps down when it could not renew for this long.
    #[arg(long, env = "KM_HA_RENEW_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub ha_renew_deadline: Duration,
    /// With --ha: pause between attempts to take or renew the lease.
    #[arg(long, env = "KM_HA_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    pub ha_retry_period: Duration,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub matching: MatchingFlags,
}

/// What `/debug/state` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DebugState {
    /// Holds the leader lease (always, without --ha).
    pub leader: bool,
    /// Subscribed to a master.
    pub subscribed: bool,
    /// The framework ID.
    pub framework_id: Option<String>,
    /// Pods waiting for an offer.
    pub queued: usize,
    /// Tasks launched and not yet ended.
    pub tasks: usize,
    /// Offers held.
    pub offers: usize,
    /// Offers suppressed.
    pub suppressed: bool,
}

/// Picks where the framework ID is kept.
fn framework_store(
    args: &Args,
    spec: &MasterSpec,
    client: &kube::Client,
) -> anyhow::Result<framework_id::Store> {
    let slug = framework_id::object_name(&args.framework_name);
    let configmap = || framework_id::Store::ConfigMap {
        api: Box::new(Api::namespaced(client.clone(), &args.namespace)),
        namespace: args.namespace.clone(),
        name: slug.clone(),
    };
    let name = args.framework_name.trim().replace('/', "-");
    match args.framework_store_uri.as_deref() {
        None => Ok(match spec {
            MasterSpec::ZooKeeper { servers, path } => framework_id::Store::ZooKeeper {
                servers: servers.clone(),
                path: format!("{path}/k8sm/{name}"),
            },
            MasterSpec::Http { .. } => configmap(),
        }),
        Some("k8s://") => Ok(configmap()),
        Some(uri) if uri.starts_with("zk://") => match uri.parse::<MasterSpec>() {
            Ok(MasterSpec::ZooKeeper { servers, path }) => Ok(framework_id::Store::ZooKeeper {
                servers,
                path: format!("{path}/{name}"),
            }),
            _ => anyhow::bail!(
                "--framework-store-uri {uri}: not a ZooKeeper URL; use zk://host:port[,host:port]/path"
            ),
        },
        Some(uri) => anyhow::bail!(
            "--framework-store-uri {uri}: unknown store; use k8s:// or zk://host:port/path"
        ),
    }
}

/// Serves /healthz, /readyz, /metrics and /debug/ until `stop`.
async fn serve(
    args: &Args,
    metrics: Arc<metrics::Metrics>,
    status_rx: watch::Receiver<DebugState>,
    listings_tx: mpsc::Sender<core::ListingRequest>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind((args.address, args.port))
        .await
        .with_context(|| {
            format!(
                "--address/--port: cannot listen on {}:{} (in use? pick another --port)",
                args.address, args.port
            )
        })?;
    tracing::info!(address = %listener.local_addr()?, "serving /healthz, /readyz, /metrics, /debug/state");
    let listing = |what: core::Listing| {
        let tx = listings_tx.clone();
        get(move || {
            let tx = tx.clone();
            async move {
                let (reply, answer) = tokio::sync::oneshot::channel();
                if tx.send((what, reply)).await.is_err() {
                    return Err(axum::http::StatusCode::SERVICE_UNAVAILABLE);
                }
                answer
                    .await
                    .map(axum::Json)
                    .map_err(|_| axum::http::StatusCode::SERVICE_UNAVAILABLE)
            }
        })
    };
    let app = {
        let (m, s1, s2) = (metrics, status_rx.clone(), status_rx);
        axum::Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(move || {
                    let (leader, ready) = {
                        let s = s1.borrow();
                        (s.leader, s.subscribed)
                    };
                    async move {
                        match (leader, ready) {
                            (_, true) => (axum::http::StatusCode::OK, "ok"),
                            (false, _) => (
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                "standing by: another replica holds the leader lease",
                            ),
                            (true, false) => (
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                "not subscribed to a Mesos master",
                            ),
                        }
                    }
                }),
            )
            .route(
                "/metrics",
                get(move || {
                    let text = m.render();
                    async move { text }
                }),
            )
            .route(
                "/debug/state",
                get(move || {
                    let s = s2.borrow().clone();
                    async move { axum::Json(s) }
                }),
            )
            .route("/debug/queue", listing(core::Listing::Queue))
            .route("/debug/tasks", listing(core::Listing::Tasks))
            .route("/debug/offers", listing(core::Listing::Offers))
    };
    let http_stop = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await;
    });

    Ok(())
}

/// Runs the scheduler until `stop`.
pub async fn run(args: Args, stop: CancellationToken) -> anyhow::Result<()> {
    crate::mesos::scheduler::install_crypto_provider();
    let mut flags = args.matching.clone();
    if flags.executor_kubeconfig.is_none() {
        flags.executor_kubeconfig = args.kubeconfig.clone();
    }
    let matching = flags.build()?;
    let spec: MasterSpec = args
        .mesos_master
        .parse()
        .with_context(|| format!("--mesos-master {}", args.mesos_master))?;
    let election = args.ha.then(|| crate::election::Config {
        namespace: args.namespace.clone(),
        name: format!(
            "{}-scheduler",
            framework_id::object_name(&args.framework_name).trim_end_matches("-framework")
        ),
        identity: crate::election::default_identity(),
        lease_duration: args.ha_lease_duration,
        renew_deadline: args.ha_renew_deadline,
        retry_period: args.ha_retry_period,
    });
    if let Some(e) = &election {
        e.validate()
            .context("--ha-retry-period, --ha-renew-deadline, --ha-lease-duration")?;
    }
    let client = crate::kubeclient::from_kubeconfig(args.kubeconfig.as_deref()).await?;
    client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server (check --kubeconfig)")?;
    let store = Arc::new(framework_store(&args, &spec, &client)?);
    let credentials = read_credentials(&args)?;

    let (status, status_rx) = watch::channel(DebugState::default());
    let metrics = Arc::new(metrics::Metrics::default());
    let (listings_tx, listings) = mpsc::channel::<core::ListingRequest>(8);
    serve(&args, metrics.clone(), status_rx, listings_tx, stop.clone()).await?;

    let leadership = match election {
        Some(cfg) => {
            tracing::info!(lease = %cfg.name, identity = %cfg.identity, "--ha: waiting to become the leader");
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
    status.send_modify(|s| s.leader = true);
    let result = lead(
        args,
        spec,
        client,
        store,
        credentials,
        matching,
        status,
        metrics,
        listings,
        leadership.as_ref().map(|l| l.lost()),
        stop,
    )
    .await;
    if let Some(l) = leadership {
        l.release().await;
    }
    result
}

fn read_credentials(args: &Args) -> anyhow::Result<Option<Credentials>> {
    match (
        &args.mesos_authentication_principal,
        &args.mesos_authentication_secret_file,
    ) {
        (Some(p), Some(f)) => Ok(Some(Credentials {
            principal: p.clone(),
            secret: std::fs::read_to_string(f)
                .with_context(|| format!("--mesos-authentication-secret-file {}", f.display()))?
                .trim()
                .to_string(),
        })),
        (Some(_), None) => anyhow::bail!(
            "--mesos-authentication-principal needs --mesos-authentication-secret-file"
        ),
        _ => Ok(None),
    }
}

/// The scheduler proper, once this replica leads.
#[allow(clippy::too_many_arguments)]
async fn lead(
    args: Args,
    spec: MasterSpec,
    client: kube::Client,
    store: Arc<framework_id::Store>,
    credentials: Option<Credentials>,
    matching: crate::flags::Matching,
    status: watch::Sender<DebugState>,
    metrics: Arc<metrics::Metrics>,
    listings: mpsc::Receiver<core::ListingRequest>,
    lost: Option<CancellationToken>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let stored = if args.failover_timeout.is_zero() {
        store.remove().await.with_context(|| {
            format!("--failover-timeout 0: cannot forget the framework ID in {store}")
        })?;
        None
    } else {
        store
            .load()
            .await
            .with_context(|| format!("cannot read the framework ID from {store}"))?
    };
    if let Some(id) = &stored {
        tracing::info!(framework = id, %store, "failing over to the stored framework");
    }
    let roles = matching.podtask.framework_roles.clone();
    let framework = v1::FrameworkInfo {
        user: args.mesos_user.clone(),
        name: args.framework_name.trim().to_string(),
        id: stored.clone().map(|value| v1::FrameworkId { value }),
        failover_timeout: (!args.failover_timeout.is_zero())
            .then_some(args.failover_timeout.as_secs_f64()),
        checkpoint: Some(true),
        webui_url: args.framework_weburi.clone(),
        principal: args.mesos_authentication_principal.clone(),
        roles: roles.clone(),
        capabilities: vec![v1::framework_info::Capability {
            r#type: Some(v1::framework_info::capability::Type::MultiRole as i32),
        }],
        ..Default::default()
    };
    let mut config = SchedulerConfig::new(framework);
    config.credentials = credentials;
    let masters = detect(&spec)
        .await
        .with_context(|| format!("--mesos-master {}", args.mesos_master))?;
    let (driver, mesos_events) = crate::mesos::scheduler::start(config, masters)?;

    status.send_modify(|s| s.framework_id = stored.clone());
    let (subscribed_tx, mut subscribed_rx) = mpsc::unbounded_channel::<String>();
    // Keep the framework ID stored after every subscription.
    {
        let (store, status) = (store.clone(), status.clone());
        tokio::spawn(async move {
            while let Some(id) = subscribed_rx.recv().await {
                status.send_modify(|s| s.framework_id = Some(id.clone()));
                if let Err(e) = store.save(&id).await {
                    tracing::error!(error = %e, "cannot store the framework ID; a restart would register a new framework");
                }
            }
        });
    }
    let core = core::Core {
        pods_api: Api::<Pod>::all(client.clone()),
        driver,
        matching,
        scheduler_name: args.scheduler_name.clone(),
        queue: queue::Queue::new(queue::Backoff {
            initial: args.initial_pod_backoff,
            max: args.max_pod_backoff,
        }),
        tasks: tasks::Tasks::default(),
        offers: OfferRegistry::new(RegistryConfig {
            ttl: args.offer_ttl,
            refuse_seconds: args.offer_refuse_seconds,
            ..RegistryConfig::default()
        }),
        known_executors: HashMap::new(),
        pods: HashMap::new(),
        events: events::Recorder::new(client.clone(), Duration::from_secs(30), 20),
        metrics,
        roles,
        suppressed: false,
        subscribed: false,
        reconcile_interval: args.reconcile_interval,
        next_implicit: None,
        on_subscribed: subscribed_tx,
        status,
        relist: None,
        listings,
        failure_hint: format!(
            "to register a new framework, delete the framework ID in {store} or start once with --failover-timeout 0"
        ),
    };
    let core_stop = stop.child_token();
    if let Some(lost) = lost.clone() {
        let core_stop = core_stop.clone();
        tokio::spawn(async move {
            lost.cancelled().await;
            core_stop.cancel();
        });
    }
    core.run(mesos_events, core_stop).await?;
    if lost.is_some_and(|l| l.is_cancelled()) {
        anyhow::bail!(
            "lost the leader lease: stopping so that another replica takes over (restart this one to stand by again)"
        );
    }
    Ok(())
}
