//! `km dev-master`: a development stand-in for mesos-master that speaks the
//! v1 scheduler API as Mesos does (the wire facts in the project's
//! reference), for one machine and for tests. A real cluster runs Apache Mesos.
//!
//! * Frameworks subscribe, get offers every allocation interval (and at once
//!   on subscribe, REVIVE and agent registration), accept, decline, kill,
//!   acknowledge and reconcile; failover and teardown behave as in Mesos.
//! * `km dev-agent` processes register over km's agent protocol
//!   (`proto/devcluster.proto`) and run the tasks.
//! * `--hollow-agents N` adds simulated agents whose tasks have no process:
//!   TASK_RUNNING after `--hollow-task-delay`, TASK_KILLED on kill. They let
//!   a scheduler be measured against thousands of agents on one machine.

mod http;
pub mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::routing::{any, get};
use clap::Args as ClapArgs;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::mesos::proto::v1;
use crate::resources::text::{parse_attributes, parse_resources};
use state::{AgentKind, Master};

pub use http::AGENT_ID_HEADER;

/// The Mesos version the dev-master reports on `/version`.
pub const MESOS_VERSION: &str = "1.12.0";
/// Interval between HEARTBEAT events.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Flags of `km dev-master`.
#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "KM_DEV_MASTER_IP", default_value = "127.0.0.1")]
    pub ip: std::net::IpAddr,
    /// Port to listen on (0 picks a free one; the chosen address is logged).
    #[arg(long, env = "KM_DEV_MASTER_PORT", default_value_t = 5050)]
    pub port: u16,
    /// Hostname to advertise [default: the ip].
    #[arg(long, env = "KM_DEV_MASTER_HOSTNAME")]
    pub hostname: Option<String>,
    /// How often offers are made.
    #[arg(long, env = "KM_ALLOCATION_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub allocation_interval: Duration,
    /// How long a disconnected agent is kept before its tasks are reported lost.
    #[arg(long, env = "KM_AGENT_TIMEOUT", default_value = "75s", value_parser = humantime::parse_duration)]
    pub agent_timeout: Duration,
    /// File of `principal secret` lines; when set, scheduler calls need HTTP basic authentication.
    #[arg(long, env = "KM_DEV_MASTER_CREDENTIALS", value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// Simulated agents to register at start.
    #[arg(long, env = "KM_HOLLOW_AGENTS", default_value_t = 0, value_name = "N")]
    pub hollow_agents: u32,
    /// Resources of each hollow agent, in Mesos syntax.
    #[arg(
        long,
        env = "KM_HOLLOW_RESOURCES",
        default_value = "cpus:4;mem:16384;disk:100000;ports:[31000-32000]"
    )]
    pub hollow_resources: String,
    /// Attributes of each hollow agent, in Mesos syntax.
    #[arg(long, env = "KM_HOLLOW_ATTRIBUTES", default_value = "")]
    pub hollow_attributes: String,
    /// Delay before a hollow agent's task reports TASK_RUNNING.
    #[arg(long, env = "KM_HOLLOW_TASK_DELAY", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub hollow_task_delay: Duration,
}

/// Shared state of a running dev-master.
pub struct App {
    master: Mutex<Master>,
    /// Wakes the allocator before its interval.
    pub wake: Notify,
    credentials: Option<HashMap<String, String>>,
    timers: tokio::sync::mpsc::UnboundedSender<(Duration, state::Timer)>,
}

impl App {
    /// The master's books.
    pub fn lock(&self) -> MutexGuard<'_, Master> {
        self.master.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Schedules timers the last change asked for.
    pub fn after_change(&self) {
        let timers = std::mem::take(&mut self.lock().timers);
        for t in timers {
            let _ = self.timers.send(t);
        }
    }
}

fn read_credentials(path: &PathBuf) -> anyhow::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--credentials: cannot read {}", path.display()))?;
    let mut out = HashMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some(p), Some(s)) => {
                out.insert(p.to_string(), s.to_string());
            }
            _ => anyhow::bail!(
                "--credentials: {}:{}: expected 'principal secret'",
                path.display(),
                n + 1
            ),
        }
    }
    Ok(out)
}

/// A dev-master bound to its address, ready to serve.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its state, for in-process tests and benchmarks.
    pub app: Arc<App>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Waits until the master stops.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("dev-master task panicked")?
    }
}

/// Binds and starts the dev-master; it runs until `shutdown` is cancelled.
pub async fn start(args: Args, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let listener = tokio::net::TcpListener::bind((args.ip, args.port))
        .await
        .with_context(|| format!("--ip/--port: cannot listen on {}:{}", args.ip, args.port))?;
    let addr = listener.local_addr()?;
    let hostname = args.hostname.clone().unwrap_or_else(|| args.ip.to_string());
    let id = uuid::Uuid::new_v4().to_string();
    let ip_u32 = match args.ip {
        std::net::IpAddr::V4(v4) => u32::from_le_bytes(v4.octets()),
        std::net::IpAddr::V6(_) => 0,
    };
    let info = v1::MasterInfo {
        id: id.clone(),
        ip: ip_u32,
        port: u32::from(addr.port()),
        pid: Some(format!("master@{}:{}", args.ip, addr.port())),
        hostname: Some(hostname.clone()),
        version: Some(MESOS_VERSION.into()),
        address: Some(v1::Address {
            hostname: Some(hostname),
            ip: Some(args.ip.to_string()),
            port: i32::from(addr.port()),
        }),
        ..Default::default()
    };
    let credentials = args
        .credentials
        .as_ref()
        .map(read_credentials)
        .transpose()?;
    let mut master = Master::new(info, args.agent_timeout);
    if args.hollow_agents > 0 {
        let resources = parse_resources(&args.hollow_resources).context("--hollow-resources")?;
        let attributes =
            parse_attributes(&args.hollow_attributes).context("--hollow-attributes")?;
        for i in 0..args.hollow_agents {
            let info = v1::AgentInfo {
                hostname: format!("hollow-{i:05}"),
                port: Some(5051),
                resources: resources.clone(),
                attributes: attributes.clone(),
                ..Default::default()
            };
            master.register_agent(
                info,
                vec![],
                None,
                AgentKind::Hollow {
                    delay: args.hollow_task_delay,
                },
            );
        }
    }
    let (timer_tx, mut timer_rx) = tokio::sync::mpsc::unbounded_channel();
    let app = Arc::new(App {
        master: Mutex::new(master),
        wake: Notify::new(),
        credentials,
        timers: timer_tx,
    });

    let router = Router::new()
        .route("/api/v1/scheduler", any(http::scheduler))
        .route("/master/api/v1/scheduler", any(http::scheduler))
        .route("/api/v1/km/agent", any(http::agent))
        .route("/version", get(http::version))
        .route("/health", get(http::health))
        .route("/master/health", get(http::health))
        .route("/state", get(http::state))
        .route("/master/state", get(http::state))
        .route("/state.json", get(http::state))
        .route("/metrics/snapshot", get(http::metrics))
        .with_state(app.clone());

    // Allocation, heartbeats, timeouts and hollow timers.
    let bg = app.clone();
    let stop = shutdown.clone();
    let interval = args.allocation_interval;
    tokio::spawn(async move {
        let mut alloc = tokio::time::interval(interval);
        let mut hb = tokio::time::interval(HEARTBEAT);
        hb.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    // Streams would keep the server's graceful shutdown waiting.
                    bg.lock().drop_connections();
                    break;
                }
                _ = alloc.tick() => {}
                _ = bg.wake.notified() => {}
                _ = hb.tick() => { bg.lock().heartbeat(); continue; }
                Some((delay, timer)) = timer_rx.recv() => {
                    let app = bg.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        app.lock().fire(timer);
                        app.after_change();
                    });
                    continue;
                }
            }
            let now = Instant::now();
            let mut m = bg.lock();
            m.expire(now);
            m.allocate(now);
            drop(m);
            bg.after_change();
        }
    });

    tracing::info!(%addr, master_id = %id, hollow_agents = args.hollow_agents, "dev-master listening");
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("dev-master HTTP server")
    });
    Ok(Running { addr, app, task })
}

/// Runs `km dev-master` until `shutdown`.
pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(args, shutdown).await?.wait().await
}
