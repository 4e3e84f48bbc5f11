//! `km dev-agent`: a development stand-in for mesos-agent.
//!
//! It registers with `km dev-master` over km's private protocol
//! (`proto/devcluster.proto`, [`master`]), launches executors as real
//! processes in Mesos-style sandboxes with the environment a Mesos agent
//! gives them ([`env`](mod@env), [`sandbox`], [`fetch`], [`process`]), each in a
//! cgroup whose cpu and memory limits grow and shrink with its tasks
//! ([`cgroups`]), serves the v1 executor HTTP API ([`executor_api`]), runs
//! command tasks under a built-in command executor ([`command`]), forwards
//! status updates reliably ([`updates`]), and checkpoints what it needs to
//! survive its own restart ([`checkpoint`]). The core that ties these
//! together is [`state`]; its module docs list the decisions taken where
//! Mesos leaves room.
//!
//! Lifecycle:
//!
//! 1. Read the checkpointed agent id and executors; adopt executors whose
//!    process still runs, treat the others as ended, remove orphaned
//!    cgroups.
//! 2. Listen on `--ip`/`--port`, then register with the master (again with
//!    the same id, listing running executors and tasks), re-registering
//!    with backoff whenever the event stream ends.
//! 3. On the stop token (SIGINT, SIGTERM): stop accepting work, shut down
//!    executors of frameworks that do not checkpoint, leave the others
//!    running (their streams closed, so they start reconnecting), then stop
//!    serving. On SIGUSR1, as mesos-agent does, shut down every executor
//!    first, checkpointing or not: the agent leaves for good.

pub mod cgroups;
pub mod checkpoint;
pub mod command;
pub mod duration;
pub mod env;
pub mod executor_api;
pub mod fetch;
pub mod flags;
pub mod master;
pub mod process;
pub mod sandbox;
pub mod state;
pub mod updates;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use backon::BackoffBuilder;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use flags::Args;

use crate::mesos::proto::devcluster::agent_event;
use crate::mesos::proto::v1;
use cgroups::{CgroupManager, FsCgroups, NoCgroups};
use master::MasterClient;
use sandbox::Layout;
use state::{Agent, Config, Input};

/// Runs the agent as a process of its own: until `shutdown` is cancelled,
/// or until SIGUSR1 has drained it (as for mesos-agent: stop for good,
/// shutting down every executor, and so every task, first).
pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let drain = CancellationToken::new();
    let drain_signal = tokio::spawn({
        let drain = drain.clone();
        async move {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
                Ok(mut usr1) => {
                    if usr1.recv().await.is_some() {
                        tracing::info!("SIGUSR1: draining the agent");
                        drain.cancel();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot listen for SIGUSR1; draining is off"),
            }
        }
    });
    let result = serve(args, shutdown, drain).await;
    drain_signal.abort();
    result
}

/// Runs the agent until `shutdown` is cancelled, or until `drain` is and
/// every executor has been shut down. The tasks it spawns carry the
/// caller's tracing span (km local routes each agent's lines by it).
pub async fn serve(
    args: Args,
    shutdown: CancellationToken,
    drain: CancellationToken,
) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("--work-dir: cannot create {}", args.work_dir.display()))?;
    let layout = Layout::new(&args.work_dir);
    let client = MasterClient::new(&args.master)?;

    let machine = flags::MachineResources::detect(&args.work_dir);
    let resources = flags::total_resources(args.resources.as_ref(), &machine);
    let hostname = args.hostname.clone().unwrap_or_else(flags::system_hostname);

    let listener = tokio::net::TcpListener::bind((args.ip, args.port))
        .await
        .with_context(|| format!("--ip/--port: cannot listen on {}:{}", args.ip, args.port))?;
    let port = listener.local_addr()?.port();
    let advertised: IpAddr = if args.ip.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        args.ip
    };
    let endpoint = SocketAddr::new(advertised, port);

    let cgroups: Arc<dyn CgroupManager> = if args.no_cgroups {
        tracing::info!("cgroups disabled by --no-cgroups");
        Arc::new(NoCgroups)
    } else {
        match FsCgroups::probe(&args.cgroups_root) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cgroups are not writable here (not root, or a read-only cgroup file system): executors run WITHOUT cpu and memory limits; pass --no-cgroups to silence this"
                );
                Arc::new(NoCgroups)
            }
        }
    };

    let agent_id = checkpoint::load_agent_id(&layout).context(
        "cannot read the checkpointed agent id; remove the file to start as a new agent",
    )?;
    let mut recovered = Vec::new();
    for cp in checkpoint::load_executors(&layout) {
        match cp {
            Ok(cp) => recovered.push(cp),
            Err(e) => tracing::error!(error = %e, "skipping an unreadable executor checkpoint"),
        }
    }

    let agent_info = v1::AgentInfo {
        hostname,
        port: Some(i32::from(port)),
        resources,
        attributes: args.attributes.clone().map(|a| a.0).unwrap_or_default(),
        ..Default::default()
    };
    let base_env = match &args.executor_environment_variables {
        Some(m) => m.0.clone(),
        None => env::inherited(std::env::vars()),
    };
    let cfg = Config {
        layout,
        endpoint,
        agent_info,
        shutdown_grace: args.executor_shutdown_grace_period,
        registration_timeout: args.executor_registration_timeout,
        reregistration_timeout: args.executor_reregistration_timeout,
        recovery_timeout: args.recovery_timeout,
        base_env,
    };

    let (tx, rx) = mpsc::unbounded_channel();
    let (calls_tx, calls_rx) = mpsc::unbounded_channel();
    let mut agent = Agent::new(
        cfg,
        agent_id.clone(),
        cgroups.clone(),
        client.clone(),
        tx.clone(),
    );
    agent.recover(recovered);

    let server_stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = server_stop.clone();
        async move {
            axum::serve(listener, executor_api::router(calls_tx))
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
        .in_current_span()
    });
    tracing::info!(
        endpoint = %endpoint,
        master = client.url(),
        agent_id = ?agent_id,
        "km dev-agent serving the executor API"
    );
    let session = tokio::spawn(session(client, tx).in_current_span());

    agent.run(rx, calls_rx, shutdown, drain).await;

    session.abort();
    server_stop.cancel();
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "executor API server failed"),
        Err(_) => tracing::warn!("executor API connections still open after 5s; leaving them"),
        _ => {}
    }
    if let Err(e) = cgroups.release() {
        tracing::warn!(error = %e, "could not remove the agent's root cgroup");
    }
    Ok(())
}

/// Registers with the master and relays its events to the core, for ever:
/// when the stream ends (or registering fails) it waits (exponential
/// backoff with jitter, 0.5 s to 10 s, reset once registered) and registers
/// again with the agent's current view.
async fn session(client: MasterClient, core: mpsc::UnboundedSender<Input>) {
    let backoff = || {
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    loop {
        let (tx, rx) = oneshot::channel();
        if core.send(Input::Register(tx)).is_err() {
            return;
        }
        let Ok(call) = rx.await else { return };
        match client.register(&call).await {
            Ok(mut events) => {
                while let Some(ev) = events.next().await {
                    match ev {
                        Ok(ev) => {
                            if ev.r#type == Some(agent_event::Type::Registered as i32) {
                                delays = backoff();
                            }
                            if core.send(Input::Master(Box::new(ev))).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the master's event stream broke");
                            break;
                        }
                    }
                }
                let _ = core.send(Input::Disconnected);
            }
            Err(e) => tracing::warn!(error = %e, "cannot register with the master; will retry"),
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(10));
        tokio::time::sleep(delay).await;
    }
}
