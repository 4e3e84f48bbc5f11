//! What `km local` starts: one [`Part`] per role instance, in start order,
//! each with its command line, where it runs, how to tell it is ready and
//! how to stop it. Pure: the supervisor runs the plan, the tests read it.
//!
//! The API server, the dev-master, the agents, the controller manager and
//! the proxy run inside km local's own process ([`Host::InProcess`]), so
//! they share one copy of the binary's pages; the executors the agents
//! start are km local's children. The scheduler is a child process: it must
//! stand being killed and restarted on its own, as on a real cluster.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::Args;
use crate::devcluster::agent::flags::MachineResources;

/// Where a data directory keeps what.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The data directory itself.
    pub root: PathBuf,
}

impl Layout {
    /// The layout of `root`.
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }
    /// The admin kubeconfig the API server writes.
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }
    /// One log file per part: `logs/<part>.log`.
    pub fn log(&self, part: &str) -> PathBuf {
        self.root.join("logs").join(format!("{part}.log"))
    }
    /// One pid file per part: `run/<part>.pid`.
    pub fn pid_file(&self, part: &str) -> PathBuf {
        self.root.join("run").join(format!("{part}.pid"))
    }
    /// The lock held while km local runs.
    pub fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }
    /// The API server's store, certificates and token.
    pub fn apiserver(&self) -> PathBuf {
        self.root.join("apiserver")
    }
    /// Agent `i`'s sandboxes and checkpoints (1-based).
    pub fn agent(&self, i: u32) -> PathBuf {
        self.root.join("agents").join(i.to_string())
    }
}

/// How the supervisor knows a part is up.
#[derive(Debug, Clone, PartialEq)]
pub enum Ready {
    /// The API server at `addr` (host:port) accepts connections and answers
    /// `/version` through the written kubeconfig.
    ApiServer {
        /// Where it listens.
        addr: String,
    },
    /// `GET url` answers 200.
    Http(String),
    /// The master's `/state` lists an agent of this hostname.
    AgentRegistered {
        /// The master's state URL.
        state_url: String,
        /// The agent's hostname.
        hostname: String,
    },
}

/// The signal that stops a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM.
    Term,
    /// Drain: an agent shuts down its executors (and their pods) first
    /// (SIGUSR1 for a dev-agent process, its drain token in process).
    Drain,
}

/// Where a part runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// A child process of km local, in a process group of its own.
    Child,
    /// A task of km local's own process.
    InProcess,
}

/// One part of `km local`.
#[derive(Debug, Clone)]
pub struct Part {
    /// Its name in progress lines, logs and pid files.
    pub name: String,
    /// The arguments after `km`.
    pub args: Vec<String>,
    /// Where it runs.
    pub host: Host,
    /// Readiness.
    pub ready: Ready,
    /// How it is stopped.
    pub stop: Stop,
    /// What the summary says about it, once ready.
    pub summary: String,
}

/// Agent `i`'s node name: the hostname for the first, `hostname-i` after.
pub fn agent_hostname(hostname: &str, i: u32) -> String {
    if i == 1 {
        hostname.to_string()
    } else {
        format!("{hostname}-{i}")
    }
}

/// The resources flag of agent `i` of `n`: the user's, plus an even share
/// of the machine's cpus, memory and host ports 31000-32000 for whatever
/// the user left out when several agents share the machine.
pub fn agent_resources(
    given: Option<&str>,
    i: u32,
    n: u32,
    machine: &MachineResources,
) -> Option<String> {
    let named: Vec<String> = given
        .and_then(|g| crate::resources::text::parse_resources(g).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .collect();
    let mut parts: Vec<String> = given
        .filter(|g| !g.trim().is_empty())
        .map(|g| vec![g.trim().trim_end_matches(';').to_string()])
        .unwrap_or_default();
    if n > 1 {
        let has = |name: &str| named.iter().any(|r| r == name);
        if !has("cpus") {
            let share = (machine.cpus / f64::from(n) * 100.0).floor() / 100.0;
            parts.push(format!("cpus:{}", share.max(0.1)));
        }
        if !has("mem") {
            let usable = if machine.mem_total_mb > 2048.0 {
                machine.mem_total_mb - 1024.0
            } else {
                machine.mem_total_mb / 2.0
            };
            parts.push(format!("mem:{}", (usable / f64::from(n)).floor().max(64.0)));
        }
        if !has("ports") {
            let width = 1001 / n;
            let lo = 31000 + (i - 1) * width;
            let hi = if i == n { 32000 } else { lo + width - 1 };
            parts.push(format!("ports:[{lo}-{hi}]"));
        }
    }
    (!parts.is_empty()).then(|| parts.join(";"))
}

/// The parts, in start order (they stop in the reverse order).
pub fn parts(args: &Args, layout: &Layout, km: &Path, hostname: &str) -> Vec<Part> {
    let machine = MachineResources::detect(&layout.root);
    parts_on(args, layout, km, hostname, &machine)
}

/// [`parts`] for a given machine.
pub fn parts_on(
    args: &Args,
    layout: &Layout,
    km: &Path,
    hostname: &str,
    machine: &MachineResources,
) -> Vec<Part> {
    let bind = args.bind_address;
    let host = url_host(bind);
    let master = format!("{host}:{}", args.master_port);
    let master_url = format!("http://{master}");
    let kubeconfig = layout.kubeconfig().display().to_string();
    let loopback = "127.0.0.1";
    let mut out = Vec::new();

    out.push(Part {
        name: "apiserver".into(),
        args: strings(&[
            "apiserver",
            "--data-dir",
            &layout.apiserver().display().to_string(),
            "--bind-address",
            &bind.to_string(),
            "--secure-port",
            &args.api_port.to_string(),
            "--write-kubeconfig",
            &kubeconfig,
            "--service-node-port-range",
            &args.service_node_port_range,
        ]),
        host: Host::InProcess,
        ready: Ready::ApiServer {
            addr: format!("{host}:{}", args.api_port),
        },
        stop: Stop::Term,
        summary: format!(
            "https://{host}:{} (NodePorts {})",
            args.api_port, args.service_node_port_range
        ),
    });
    out.push(Part {
        name: "dev-master".into(),
        args: strings(&[
            "dev-master",
            "--ip",
            &bind.to_string(),
            "--port",
            &args.master_port.to_string(),
        ]),
        host: Host::InProcess,
        ready: Ready::Http(format!("{master_url}/health")),
        stop: Stop::Term,
        summary: format!("{master_url} (tasks: {master_url}/state)"),
    });
    for i in 1..=args.agents {
        let name = agent_hostname(hostname, i);
        let port = args.agent_port + (i - 1) as u16;
        let mut a = strings(&[
            "dev-agent",
            "--master",
            &master,
            "--ip",
            &bind.to_string(),
            "--port",
            &port.to_string(),
            "--hostname",
            &name,
            "--work-dir",
            &layout.agent(i).display().to_string(),
            "--cgroups-root",
            &format!("km-local-{}", cgroup_safe(&name)),
        ]);
        let resources = agent_resources(args.agent_resources.as_deref(), i, args.agents, machine);
        if let Some(r) = &resources {
            a.extend(strings(&["--resources", r]));
        }
        if let Some(attrs) = &args.agent_attributes {
            a.extend(strings(&["--attributes", attrs]));
        }
        out.push(Part {
            name: format!("agent-{i}"),
            args: a,
            host: Host::InProcess,
            ready: Ready::AgentRegistered {
                state_url: format!("{master_url}/state"),
                hostname: name.clone(),
            },
            stop: Stop::Drain,
            summary: format!(
                "{name} at {host}:{port}, {}",
                resources.unwrap_or_else(|| "the machine's resources".into())
            ),
        });
    }
    out.push(Part {
        name: "scheduler".into(),
        args: strings(&[
            "scheduler",
            "--mesos-master",
            &master_url,
            "--kubeconfig",
            &kubeconfig,
            "--scheduler-name",
            "default-scheduler",
            "--address",
            loopback,
            "--port",
            &args.scheduler_port.to_string(),
            "--km-path",
            &km.display().to_string(),
            "--executor-kubelet-port",
            "0",
        ]),
        host: Host::Child,
        ready: Ready::Http(format!("http://{loopback}:{}/readyz", args.scheduler_port)),
        stop: Stop::Term,
        summary: format!(
            "default-scheduler, status at http://{loopback}:{}/debug/state",
            args.scheduler_port
        ),
    });
    out.push(Part {
        name: "controller-manager".into(),
        args: strings(&[
            "controller-manager",
            "--kubeconfig",
            &kubeconfig,
            "--controllers",
            "*,replicaset,deployment,garbagecollector,namespace",
            "--mesos-master",
            &master_url,
            "--leader-elect=false",
            "--address",
            loopback,
            "--port",
            &args.controller_manager_port.to_string(),
        ]),
        host: Host::InProcess,
        ready: Ready::Http(format!(
            "http://{loopback}:{}/readyz",
            args.controller_manager_port
        )),
        stop: Stop::Term,
        summary: "endpoints, nodes, replicaset, deployment, garbagecollector, namespace".into(),
    });
    if let Some(mode) = args.proxy_mode.mode() {
        out.push(Part {
            name: "proxy".into(),
            args: strings(&[
                "proxy",
                "--kubeconfig",
                &kubeconfig,
                "--hostname-override",
                &agent_hostname(hostname, 1),
                "--proxy-mode",
                mode,
                "--healthz-bind-address",
                &format!("{loopback}:{}", args.proxy_healthz_port),
                "--metrics-bind-address",
                &format!("{loopback}:{}", args.proxy_metrics_port),
            ]),
            host: Host::InProcess,
            ready: Ready::Http(format!(
                "http://{loopback}:{}/healthz",
                args.proxy_healthz_port
            )),
            stop: Stop::Term,
            summary: format!("--proxy-mode {mode}, NodePorts on this machine"),
        });
    }
    out
}

/// `ip` as the host part of a URL.
pub fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".into(),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// A hostname as a cgroup name (no slashes or dots).
fn cgroup_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn machine() -> MachineResources {
        MachineResources {
            cpus: 4.0,
            mem_total_mb: 9216.0,
            disk_free_mb: Some(100_000.0),
        }
    }

    fn plan(flags: &[&str]) -> Vec<Part> {
        let mut argv = vec!["km", "--data-dir", "/d"];
        argv.extend_from_slice(flags);
        let args = Cli::parse_from(argv).args;
        parts_on(
            &args,
            &Layout::new(Path::new("/d")),
            Path::new("/usr/bin/km"),
            "box",
            &machine(),
        )
    }

    #[test]
    fn parts_start_in_dependency_order() {
        let names: Vec<String> = plan(&["--agents", "2"])
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(
            names,
            [
                "apiserver",
                "dev-master",
                "agent-1",
                "agent-2",
                "scheduler",
                "controller-manager",
                "proxy"
            ]
        );
        let names: Vec<String> = plan(&["--proxy-mode", "none"])
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert!(!names.contains(&"proxy".to_string()));
    }

    #[test]
    fn the_scheduler_is_a_process_the_rest_runs_inside_km_local() {
        for p in plan(&["--agents", "2"]) {
            let child = p.name == "scheduler";
            assert_eq!(p.host == Host::Child, child, "{}", p.name);
            assert_eq!(
                p.host == Host::InProcess,
                super::super::inproc::hostable(&p.args[0]),
                "{}",
                p.name
            );
        }
    }

    #[test]
    fn the_scheduler_is_the_default_scheduler_and_runs_this_km_as_executor() {
        let p = plan(&[]);
        let s = p.iter().find(|p| p.name == "scheduler").unwrap();
        let flag = |f: &str| {
            let i = s.args.iter().position(|a| a == f).unwrap();
            s.args[i + 1].clone()
        };
        assert_eq!(flag("--scheduler-name"), "default-scheduler");
        assert_eq!(flag("--km-path"), "/usr/bin/km");
        assert_eq!(flag("--kubeconfig"), "/d/kubeconfig");
        assert_eq!(flag("--mesos-master"), "http://127.0.0.1:5050");
    }

    #[test]
    fn node_ports_stay_clear_of_the_agents_host_ports() {
        let p = plan(&[]);
        let api = &p[0];
        let i = api
            .args
            .iter()
            .position(|a| a == "--service-node-port-range")
            .unwrap();
        assert_eq!(api.args[i + 1], "30000-30999");
    }

    #[test]
    fn agents_share_the_machine_without_overlapping_host_ports() {
        let p = plan(&["--agents", "3"]);
        let agents: Vec<&Part> = p.iter().filter(|p| p.stop == Stop::Drain).collect();
        assert_eq!(agents.len(), 3);
        let res: Vec<String> = agents
            .iter()
            .map(|a| {
                let i = a.args.iter().position(|x| x == "--resources").unwrap();
                a.args[i + 1].clone()
            })
            .collect();
        assert_eq!(res[0], "cpus:1.33;mem:2730;ports:[31000-31332]");
        assert_eq!(res[1], "cpus:1.33;mem:2730;ports:[31333-31665]");
        assert_eq!(res[2], "cpus:1.33;mem:2730;ports:[31666-32000]");
        let hosts: Vec<String> = agents
            .iter()
            .map(|a| match &a.ready {
                Ready::AgentRegistered { hostname, .. } => hostname.clone(),
                r => panic!("{r:?}"),
            })
            .collect();
        assert_eq!(hosts, ["box", "box-2", "box-3"]);
        let ports: Vec<&String> = agents
            .iter()
            .map(|a| &a.args[a.args.iter().position(|x| x == "--port").unwrap() + 1])
            .collect();
        assert_eq!(ports, ["5051", "5052", "5053"]);
    }

    #[test]
    fn given_resources_are_kept_and_completed_per_agent() {
        assert_eq!(
            agent_resources(Some("cpus:8;mem:16384"), 2, 2, &machine()).as_deref(),
            Some("cpus:8;mem:16384;ports:[31500-32000]")
        );
        assert_eq!(
            agent_resources(Some("cpus:8"), 1, 1, &machine()).as_deref(),
            Some("cpus:8")
        );
        assert_eq!(agent_resources(None, 1, 1, &machine()), None);
    }

    #[test]
    fn one_agent_uses_the_whole_machine_and_names_the_node_after_the_host() {
        let p = plan(&[]);
        let a = p.iter().find(|p| p.name == "agent-1").unwrap();
        assert!(!a.args.contains(&"--resources".to_string()));
        assert!(a.args.windows(2).any(|w| w == ["--hostname", "box"]));
        let proxy = p.iter().find(|p| p.name == "proxy").unwrap();
        assert!(
            proxy
                .args
                .windows(2)
                .any(|w| w == ["--hostname-override", "box"])
        );
    }
}
