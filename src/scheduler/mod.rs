//! `km scheduler`: the Mesos framework that schedules Kubernetes pods.
//!
//! It watches every pod through the Kubernetes API and takes those that
//! name it (`spec.schedulerName`, or the legacy annotation
//! `scheduler.alpha.kubernetes.io/name`) and are not yet placed. Offers are
//! matched by the core library's matcher, several pods per offer; a placed
//! pod is annotated first and launched second (see [`core`] for why that
//! keeps a pod from ever running twice, and for how task states map to pod
//! outcomes). The framework ID lives in a ConfigMap, so a restarted
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
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
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
    /// Address of /healthz, /readyz, /metrics and /debug/state.
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
    #[command(flatten)]
    #[allow(missing_docs)]
    pub matching: MatchingFlags,
}

/// What `/debug/state` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DebugState {
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

async fn kube_client(path: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match path {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("--kubeconfig {}: cannot read it", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("--kubeconfig {}: not usable", p.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes API configured: give --kubeconfig FILE or set KUBECONFIG")?,
    };
    kube::Client::try_from(config).context("cannot build the Kubernetes client")
}

/// Runs the scheduler until `stop`.
pub async fn run(args: Args, stop: CancellationToken) -> anyhow::Result<()> {
    crate::mesos::scheduler::install_crypto_provider();
    let matching = args.matching.build()?;
    let spec: MasterSpec = args
        .mesos_master
        .parse()
        .with_context(|| format!("--mesos-master {}", args.mesos_master))?;
    let client = kube_client(args.kubeconfig.as_ref()).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &args.namespace);
    let store_name = framework_id::object_name(&args.framework_name);
    client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server (check --kubeconfig)")?;
    let stored = if args.failover_timeout.is_zero() {
        framework_id::remove(&cms, &store_name).await?;
        None
    } else {
        framework_id::load(&cms, &store_name)
            .await
            .with_context(|| {
                format!(
                    "cannot read the framework ID from ConfigMap {}/{store_name}",
                    args.namespace
                )
            })?
    };
    let credentials = match (
        &args.mesos_authentication_principal,
        &args.mesos_authentication_secret_file,
    ) {
        (Some(p), Some(f)) => Some(Credentials {
            principal: p.clone(),
            secret: std::fs::read_to_string(f)
                .with_context(|| format!("--mesos-authentication-secret-file {}", f.display()))?
                .trim()
                .to_string(),
        }),
        (Some(_), None) => anyhow::bail!(
            "--mesos-authentication-principal needs --mesos-authentication-secret-file"
        ),
        _ => None,
    };
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

    let (status, status_rx) = watch::channel(DebugState {
        framework_id: stored,
        ..Default::default()
    });
    let metrics = Arc::new(metrics::Metrics::default());
    let (subscribed_tx, mut subscribed_rx) = mpsc::unbounded_channel::<String>();
    // Keep the framework ID stored after every subscription.
    {
        let (cms, name, status) = (cms.clone(), store_name.clone(), status.clone());
        tokio::spawn(async move {
            while let Some(id) = subscribed_rx.recv().await {
                status.send_modify(|s| s.framework_id = Some(id.clone()));
                if let Err(e) = framework_id::save(&cms, &name, &id).await {
                    tracing::error!(error = %e, "cannot store the framework ID; a restart would register a new framework");
                }
            }
        });
    }
    let listener = tokio::net::TcpListener::bind((args.address, args.port))
        .await
        .with_context(|| {
            format!(
                "--address/--port: cannot listen on {}:{} (in use? pick another --port)",
                args.address, args.port
            )
        })?;
    tracing::info!(address = %listener.local_addr()?, "serving /healthz, /readyz, /metrics, /debug/state");
    let app = {
        let (m, s1, s2) = (metrics.clone(), status_rx.clone(), status_rx.clone());
        axum::Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(move || {
                    let ready = s1.borrow().subscribed;
                    async move {
                        if ready {
                            (axum::http::StatusCode::OK, "ok")
                        } else {
                            (
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                "not subscribed to a Mesos master",
                            )
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
    };
    let http_stop = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await;
    });

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
    };
    core.run(mesos_events, stop).await
}
