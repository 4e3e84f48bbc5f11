//! `km local`: the whole system on one machine, for trying km and for the
//! end-to-end tests.
//!
//! It composes the roles, started in dependency order and each waited for
//! ([`plan`]): km apiserver (state under `--data-dir`), km dev-master,
//! `--agents` km dev-agents (whose executors run pods on Docker), km
//! scheduler as `default-scheduler`, km controller-manager with the workload
//! controllers, and km proxy. The scheduler is a child process of this same
//! binary; the other roles run inside km local's process ([`inproc`]), each
//! logging to its own file, and the agents' executors are its children. A part that dies is
//! restarted ([`supervisor`]); Ctrl-C or SIGTERM stops them in reverse
//! order, the agents draining first so that every pod's containers are
//! removed. The API objects stay in the data directory: a second
//! `km local` on it resumes with them (pods that were running are marked
//! Failed when their tasks turn out gone, and their controllers replace them).

pub mod inproc;
pub mod plan;
pub mod preflight;
pub mod supervisor;

use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use plan::{Layout, Stop};
use supervisor::{Supervisor, describe_exit};

/// What serves Service traffic in `km local`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyChoice {
    /// km proxy picks nftables, else iptables, else userspace.
    Auto,
    /// km proxy with nftables DNAT for ClusterIPs.
    Nftables,
    /// km proxy with iptables DNAT for ClusterIPs.
    Iptables,
    /// km proxy serving NodePorts only, no kernel rules.
    Userspace,
    /// No km proxy.
    None,
}

impl ProxyChoice {
    /// The `--proxy-mode` of km proxy, or None for no proxy.
    pub fn mode(self) -> Option<&'static str> {
        match self {
            ProxyChoice::Auto => Some("auto"),
            ProxyChoice::Nftables => Some("nftables"),
            ProxyChoice::Iptables => Some("iptables"),
            ProxyChoice::Userspace => Some("userspace"),
            ProxyChoice::None => None,
        }
    }
}

/// Flags of `km local`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// State of the cluster (API objects, certificates, agents' checkpoints), logs and pid files [default: ~/.km/local].
    #[arg(long, env = "KM_LOCAL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of Mesos agents (each a Node); several share the machine's cpus, memory and host ports evenly.
    #[arg(long, env = "KM_LOCAL_AGENTS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub agents: u32,
    /// Resources of every agent in Mesos syntax, e.g. 'cpus:8;mem:16384;ports:[31000-32000]'; what it leaves out comes from the machine.
    #[arg(long, env = "KM_LOCAL_AGENT_RESOURCES", value_name = "RESOURCES", value_parser = resources_text)]
    pub agent_resources: Option<String>,
    /// Attributes of every agent in Mesos syntax, e.g. 'rack:a;zone:1' (they become k8s.mesosphere.io/attribute-* node labels).
    #[arg(long, env = "KM_LOCAL_AGENT_ATTRIBUTES", value_name = "ATTRIBUTES", value_parser = attributes_text)]
    pub agent_attributes: Option<String>,
    /// Node name of the first agent; the others are NAME-2, NAME-3, ... [default: the system hostname].
    #[arg(long, env = "KM_LOCAL_HOSTNAME", value_name = "NAME")]
    pub hostname: Option<String>,
    /// NodePorts of Services, FROM-TO: apart from the agents' host ports (31000-32000 unless --agent-resources says otherwise), since km proxy listens on NodePorts on this same machine.
    #[arg(long, env = "KM_LOCAL_SERVICE_NODE_PORT_RANGE", default_value = "30000-30999", value_name = "FROM-TO", value_parser = node_port_range)]
    pub service_node_port_range: String,
    /// Address of the API server, the Mesos master and the agents.
    #[arg(long, env = "KM_LOCAL_BIND_ADDRESS", default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    /// HTTPS port of the API server.
    #[arg(long, env = "KM_LOCAL_API_PORT", default_value_t = 6443)]
    pub api_port: u16,
    /// Port of the Mesos master (km dev-master).
    #[arg(long, env = "KM_LOCAL_MASTER_PORT", default_value_t = 5050)]
    pub master_port: u16,
    /// Port of the first agent; agent i listens on this plus i-1.
    #[arg(long, env = "KM_LOCAL_AGENT_PORT", default_value_t = 5051)]
    pub agent_port: u16,
    /// Port of the scheduler's /healthz, /metrics and /debug/state (on 127.0.0.1).
    #[arg(long, env = "KM_LOCAL_SCHEDULER_PORT", default_value_t = 10251)]
    pub scheduler_port: u16,
    /// Port of the controller manager's /healthz (on 127.0.0.1).
    #[arg(
        long,
        env = "KM_LOCAL_CONTROLLER_MANAGER_PORT",
        default_value_t = 10252
    )]
    pub controller_manager_port: u16,
    /// How km proxy serves Services (ClusterIPs need root for nftables or iptables).
    #[arg(long, env = "KM_LOCAL_PROXY_MODE", value_enum, default_value_t = ProxyChoice::Auto)]
    pub proxy_mode: ProxyChoice,
    /// Port of km proxy's /healthz (on 127.0.0.1).
    #[arg(long, env = "KM_LOCAL_PROXY_HEALTHZ_PORT", default_value_t = 10256)]
    pub proxy_healthz_port: u16,
    /// Port of km proxy's /metrics (on 127.0.0.1).
    #[arg(long, env = "KM_LOCAL_PROXY_METRICS_PORT", default_value_t = 10249)]
    pub proxy_metrics_port: u16,
    /// How long each part may take to become ready.
    #[arg(long, env = "KM_LOCAL_READY_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,
}

fn resources_text(s: &str) -> Result<String, String> {
    crate::devcluster::agent::flags::parse_resources(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

fn node_port_range(s: &str) -> Result<String, String> {
    crate::apiserver::allocator::parse_port_range(s).map(|r| format!("{}-{}", r.start(), r.end()))
}

fn attributes_text(s: &str) -> Result<String, String> {
    crate::devcluster::agent::flags::parse_attributes(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// The data directory: the flag, else `~/.km/local`.
fn data_dir(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(d) = &args.data_dir {
        return Ok(d.clone());
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("--data-dir: HOME is not set; pass --data-dir DIR")?;
    Ok(PathBuf::from(home).join(".km").join("local"))
}

/// A progress line on stderr.
/// SIGUSR1 drains a dev-agent process; sent to km local, whose agents run
/// inside it, it would end the process without stopping anything. Say so
/// instead, and name the signals that do stop km local.
fn ignore_agent_drain_signal(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                got = usr1.recv() => {
                    if got.is_none() {
                        return;
                    }
                    say("SIGUSR1 ignored: km local stops everything, agents drained first, on Ctrl-C or SIGTERM");
                }
            }
        }
    });
}

fn say(line: impl std::fmt::Display) {
    eprintln!("km local: {line}");
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// Runs the whole system until `stop`, then stops it in order.
pub async fn run(args: Args, stop: CancellationToken) -> anyhow::Result<()> {
    let began = Instant::now();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = data_dir(&args)?;
    let root = if root.is_absolute() {
        root
    } else {
        std::env::current_dir()?.join(root)
    };
    let layout = Layout::new(&root);
    let _lock = preflight::data_dir(&layout)?;
    let leftovers = preflight::stop_leftovers(&layout);
    if !leftovers.is_empty() {
        say(format!(
            "stopped what an earlier km local left running: {}",
            leftovers.join(", ")
        ));
    }
    let mut ports = vec![
        ("--api-port", args.bind_address, args.api_port),
        ("--master-port", args.bind_address, args.master_port),
    ];
    let loopback: IpAddr = "127.0.0.1".parse()?;
    for i in 0..args.agents {
        let port = u16::try_from(u32::from(args.agent_port) + i)
            .context("--agent-port: agent ports run past 65535; choose a lower --agent-port")?;
        ports.push(("--agent-port", args.bind_address, port));
    }
    ports.push(("--scheduler-port", loopback, args.scheduler_port));
    ports.push((
        "--controller-manager-port",
        loopback,
        args.controller_manager_port,
    ));
    if args.proxy_mode != ProxyChoice::None {
        ports.push(("--proxy-healthz-port", loopback, args.proxy_healthz_port));
        ports.push(("--proxy-metrics-port", loopback, args.proxy_metrics_port));
    }
    preflight::ports(&ports)?;
    let docker = preflight::docker().await?;
    say(format!("{docker}; data in {}", root.display()));

    ignore_agent_drain_signal(stop.clone());

    let km = std::env::current_exe().context("cannot find this km binary")?;
    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(crate::devcluster::agent::flags::system_hostname);
    let parts = plan::parts(&args, &layout, &km, &hostname);
    route_logs(&layout, &parts)?;
    let mut sup = Supervisor::new(&km, layout.clone(), parts)?;

    // Start in order, each once the one before is ready.
    let n = sup.parts().len();
    for i in 0..n {
        if stop.is_cancelled() {
            break;
        }
        let t = Instant::now();
        sup.spawn(i)?;
        let ready = tokio::select! {
            r = sup.wait_ready(i, args.ready_timeout) => r,
            _ = stop.cancelled() => Ok(()),
        };
        if let Err(e) = ready {
            say(format!("{e:#}"));
            say("stopping what started");
            sup.stop_all(|_, _, _| {}).await;
            return Err(e.context("km local did not start"));
        }
        if !stop.is_cancelled() {
            say(format!(
                "{:<20} ready in {}",
                sup.parts()[i].name,
                secs(t.elapsed())
            ));
        }
    }
    if !stop.is_cancelled() {
        print_summary(&sup, &layout, began.elapsed());
    }

    // Keep everything running: restart what exits.
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            exit = sup.next_exit() => {
                let delay = sup.exited(&exit);
                let name = sup.parts()[exit.index].name.clone();
                say(format!(
                    "{name} exited with {}; restarting it in {} (restart {}, log {})",
                    describe_exit(&exit.status),
                    secs(delay),
                    sup.restarts(exit.index),
                    layout.log(&name).display()
                ));
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                if let Err(e) = sup.spawn(exit.index) {
                    say(format!("cannot restart {name}: {e:#}"));
                }
            }
        }
    }

    say("stopping (pods are stopped and their containers removed)");
    let agent_ids = agent_ids(&sup).await;
    sup.stop_all(|name, took, clean| {
        if clean {
            say(format!("{name:<20} stopped in {}", secs(took)));
        } else {
            say(format!(
                "{name:<20} did not stop in time and was killed after {}",
                secs(took)
            ));
        }
    })
    .await;
    sweep(&agent_ids).await;
    say("stopped");
    Ok(())
}

/// Sends the lines of the in-process parts to their log files, and every
/// other line of this process (km local's own, the shared libraries') to
/// `logs/local.log`.
fn route_logs(layout: &Layout, parts: &[plan::Part]) -> anyhow::Result<()> {
    let open = |name: &str| {
        let path = layout.log(name);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))
    };
    for p in parts.iter().filter(|p| p.host == plan::Host::InProcess) {
        let target = match p.args[0].as_str() {
            "apiserver" => "km::apiserver",
            "dev-master" => "km::devcluster::master",
            "controller-manager" => "km::controller",
            "proxy" => "km::proxy",
            // Lines of an agent's own tasks follow its span (see
            // `Supervisor`); those of tasks that do not carry it, such as
            // the executor API's connections, go here when there is one
            // agent, to local.log when there are several.
            "dev-agent" if parts.iter().filter(|q| q.stop == plan::Stop::Drain).count() == 1 => {
                "km::devcluster::agent"
            }
            _ => continue,
        };
        crate::logging::route(target, open(&p.name)?);
    }
    crate::logging::route("", open("local")?);
    Ok(())
}

fn print_summary(sup: &Supervisor, layout: &Layout, took: Duration) {
    let mut out = String::new();
    out.push_str(&format!("km local is ready ({})\n", secs(took)));
    for p in sup.parts() {
        let label = match p.name.as_str() {
            "apiserver" => "API server".to_string(),
            "dev-master" => "Mesos master".to_string(),
            n if p.stop == Stop::Drain => format!("Agent {}", n.trim_start_matches("agent-")),
            "scheduler" => "Scheduler".to_string(),
            "controller-manager" => "Controllers".to_string(),
            "proxy" => "Proxy".to_string(),
            n => n.to_string(),
        };
        out.push_str(&format!("  {label:<14} {}\n", p.summary));
    }
    out.push_str(&format!(
        "  {:<14} {}\n",
        "Logs",
        layout.root.join("logs").display()
    ));
    out.push_str(&format!(
        "\nUse it with kubectl:\n  export KUBECONFIG={}\n  kubectl get nodes\n\nCtrl-C stops everything.\n",
        layout.kubeconfig().display()
    ));
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

/// The ids of our agents, from the master, while it still runs.
async fn agent_ids(sup: &Supervisor) -> Vec<String> {
    let mut ids = Vec::new();
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
    else {
        return ids;
    };
    for p in sup.parts() {
        if let plan::Ready::AgentRegistered {
            state_url,
            hostname,
        } = &p.ready
        {
            let Ok(resp) = http.get(state_url).send().await else {
                return ids;
            };
            let Ok(state) = resp.json::<serde_json::Value>().await else {
                return ids;
            };
            for s in state["slaves"].as_array().into_iter().flatten() {
                if s["hostname"] == hostname.as_str()
                    && let Some(id) = s["id"].as_str()
                {
                    ids.push(id.to_string());
                }
            }
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

/// Removes any pod container of our agents that the executors left behind
/// (they remove their own; this is the safety net), saying so.
async fn sweep(agent_ids: &[String]) {
    let Ok(runtime) = crate::executor::runtime::Runtime::connect(None).await else {
        return;
    };
    let mut removed = 0;
    for id in agent_ids {
        let Ok(list) = runtime
            .list(&[(crate::executor::labels::AGENT_ID, id.as_str())])
            .await
        else {
            continue;
        };
        for c in list {
            if runtime.remove(&c.id).await.is_ok() {
                removed += 1;
            }
        }
    }
    if removed > 0 {
        say(format!(
            "removed {removed} containers the executors left behind"
        ));
    }
}
