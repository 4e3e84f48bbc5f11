//! `km`: every role of Kubernetes on Mesos in one binary. Dispatches on the
//! role given as first argument, or on the name it was started under.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};

/// Kubernetes on Apache Mesos: one binary for every role.
///
/// Run `km <role> --help` for a role's flags. A role also runs when km is
/// started under its name: k8sm-scheduler, k8sm-executor,
/// k8sm-controller-manager, k8sm-proxy, km-apiserver, or km-<role>.
#[derive(Parser)]
#[command(name = "km", version = env!("CARGO_PKG_VERSION"), long_version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("KM_GIT_COMMIT"), ")"), subcommand_required = true, arg_required_else_help = true, disable_help_subcommand = true)]
struct Cli {
    #[command(flatten)]
    log: km::logging::LogArgs,
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
#[command(subcommand_value_name = "ROLE", subcommand_help_heading = "Roles")]
enum Role {
    /// Explain whether a pod fits Mesos offers, and show the task km would launch.
    ///
    /// Reads a pod manifest (YAML or JSON) and Mesos v1 offers in Mesos JSON
    /// (one Offer, an array of them, or an OFFERS event), runs the scheduler's
    /// own matching with the matching flags below, and prints per offer
    /// whether the pod fits and why not; for the chosen offer, the TaskInfo,
    /// the ExecutorInfo and the host ports. `-o json` prints one document with
    /// the fields fits, offer_id, offer_ids, agent_id, hostname, task,
    /// executor, host_ports, reasons, summary and pod.
    ///
    /// Exit status: 0 the pod fits, 1 it fits nowhere, 2 bad input.
    Fit(km::fit::Args),
    /// Development stand-in for mesos-master: the v1 scheduler API, offers, hollow agents.
    DevMaster(km::devcluster::master::Args),
    /// Development stand-in for mesos-agent: runs executors and command tasks in cgroups.
    DevAgent(km::devcluster::agent::Args),
    /// Kubernetes-compatible API server with an embedded store, for single machines and tests.
    ///
    /// Serves the core, apps, coordination and discovery APIs that km's roles,
    /// kubectl and kube-rs use: watches, resourceVersion conflicts, selectors,
    /// patches, graceful deletion, server-side printing, OpenAPI v3. HTTPS with
    /// a generated CA and bearer tokens by default; `--write-kubeconfig PATH`
    /// writes an admin kubeconfig.
    Apiserver(km::apiserver::Args),
    /// The Mesos framework that schedules Kubernetes pods as Mesos tasks.
    ///
    /// Watches pods through the Kubernetes API, takes those whose
    /// schedulerName is --scheduler-name, places them on Mesos offers with
    /// the same matching as `km fit`, annotates each pod, then launches it.
    Scheduler(Box<km::scheduler::Args>),
    /// The Mesos executor that runs pods on Docker the way a kubelet does.
    ///
    /// Started by the Mesos agent (the scheduler's ExecutorInfo runs
    /// `km executor`), with the agent's MESOS_* environment. Binds each
    /// launched pod to its node, runs its containers on Docker in a per-pod
    /// cgroup under the executor's own, writes pod status, keeps the Node and
    /// its Lease, and serves container logs on a kubelet-compatible HTTPS
    /// endpoint. A small supervisor restarts the worker if it dies; the
    /// worker re-adopts the running containers.
    Executor(Box<km::executor::Args>),
    /// Controllers that keep Nodes and Endpoints true to what Mesos runs.
    ///
    /// Endpoints and EndpointSlices at the pods' hostIP:hostPort, Nodes that
    /// mirror the Mesos agents (a lost agent's pods fail after
    /// --pod-eviction-timeout), and on request the workload controllers
    /// (replicaset, deployment, garbagecollector, namespace) for clusters
    /// without the upstream kube-controller-manager. Leader-elected.
    ControllerManager(Box<km::controller::Args>),
    /// The Service proxy on every node: forwards Service traffic to endpoints at hostIP:hostPort.
    ///
    /// Watches Services and Endpoints and forwards each service port's TCP
    /// and UDP traffic to its ready endpoints (round-robin, or sticky with
    /// sessionAffinity ClientIP). Listens on NodePorts; serves ClusterIPs
    /// where it may program nftables or iptables DNAT (root), and otherwise
    /// warns that only NodePorts are served. /healthz and /metrics.
    Proxy(Box<km::proxy::Args>),
    /// The whole system on one machine: API server, Mesos master and agents, scheduler, controllers, proxy.
    ///
    /// Starts each role in order (the scheduler as a child process of this
    /// binary, the others inside this process), waits
    /// until each is ready, writes DATA_DIR/kubeconfig and prints how to use
    /// it. Pods run on the local Docker. A role that dies is restarted;
    /// Ctrl-C stops everything in reverse order, pods and their containers
    /// first. Run again with the same --data-dir to resume with the same
    /// API objects. Logs: DATA_DIR/logs/<part>.log.
    Local(Box<km::local::Args>),
    /// Print the version and git commit.
    Version,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(km::clidoc::CompletionArgs),
    /// Write the manual pages (km.1, km-ROLE.1) into a directory.
    #[command(hide = true)]
    Man(km::clidoc::ManArgs),
}

fn main() -> ExitCode {
    let args = km::dispatch::normalize_args(std::env::args_os().collect());
    if km::executor::supervise::is_lean_supervisor(&args) {
        return km::executor::supervise::lean_main(&args);
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e, &args),
    };
    // km local writes its in-process roles' lines to their log files: no colours there.
    km::logging::init_with(&cli.log, !matches!(cli.role, Role::Local(_)));
    let result = match cli.role {
        Role::Fit(a) => km::fit::run(a),
        Role::Apiserver(a) => serve(|stop| km::apiserver::run(a, stop)),
        Role::Scheduler(a) => serve(|stop| km::scheduler::run(*a, stop)),
        Role::Executor(a) => serve(|stop| km::executor::run(*a, stop)),
        Role::ControllerManager(a) => serve(|stop| km::controller::run(*a, stop)),
        Role::Proxy(a) => serve(|stop| km::proxy::run(*a, stop)),
        Role::DevMaster(a) => serve(|stop| km::devcluster::master::run(a, stop)),
        Role::DevAgent(a) => serve(|stop| km::devcluster::agent::run(a, stop)),
        Role::Local(a) => serve(|stop| km::local::run(*a, stop)),
        Role::Version => {
            println!("{}", km::version::long());
            Ok(ExitCode::SUCCESS)
        }
        Role::Completion(a) => km::clidoc::completion(a, Cli::command()),
        Role::Man(a) => km::clidoc::man(a, Cli::command()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("km: error: {e:#}");
            if e.downcast_ref::<km::fit::InputError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Runs a long-lived role on a tokio runtime until SIGINT or SIGTERM.
fn serve<F, Fut>(role: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(tokio_util::sync::CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let stop = km::shutdown::on_signal()?;
        role(stop).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Prints a command-line error, naming what is known, and returns exit code 2.
fn usage_error(e: clap::Error, args: &[std::ffi::OsString]) -> ExitCode {
    let cmd = Cli::command();
    match e.kind() {
        ErrorKind::InvalidSubcommand => {
            let role = e
                .get(clap::error::ContextKind::InvalidSubcommand)
                .map(|v| v.to_string())
                .unwrap_or_default();
            eprintln!(
                "km: unknown role {role}; known roles: {}",
                known_roles(&cmd).join(", ")
            );
            eprintln!("Run 'km --help' for what each role does.");
            ExitCode::from(2)
        }
        ErrorKind::UnknownArgument => {
            let _ = e.print();
            let role = args.get(1).map(|a| a.to_string_lossy().into_owned());
            if let Some(sub) = role.as_deref().and_then(|r| cmd.find_subcommand(r)) {
                let flags: Vec<String> = sub
                    .get_arguments()
                    .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                    .collect();
                eprintln!(
                    "Known flags of 'km {}': {}",
                    sub.get_name(),
                    flags.join(", ")
                );
            }
            ExitCode::from(2)
        }
        _ => {
            let _ = e.print();
            ExitCode::from(if e.use_stderr() { 2 } else { 0 })
        }
    }
}

/// The visible subcommands (hidden ones, like `man`, are for tooling).
fn known_roles(cmd: &clap::Command) -> Vec<String> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_role_is_in_the_dispatch_table() {
        for role in known_roles(&Cli::command()) {
            assert!(
                km::dispatch::ROLES.iter().any(|(r, _)| *r == role),
                "{role} missing from dispatch::ROLES"
            );
        }
    }
}
