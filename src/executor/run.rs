//! `km executor`'s flags and start-up.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;

use super::cgroup::PodCgroups;
use super::kubelet_api::{self, Tls};
use super::node::{self, NodeConfig};
use super::pod::Host;
use super::runtime::Runtime;
use super::tasks::{self, LogIndex, Manager};
use crate::mesos::executor::{self as client, ExecutorEnv, ExecutorEvent, Options};

/// Flags of `km executor`. The Mesos agent supplies the rest through the
/// environment (`MESOS_*`).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// kubeconfig of the Kubernetes API [default: $KUBECONFIG, ~/.kube/config, or in-cluster].
    #[arg(long, env = "KM_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Docker Engine endpoint (unix:///path, tcp://host:port) [default: $DOCKER_HOST, else unix:///var/run/docker.sock].
    #[arg(long, value_name = "URL")]
    pub docker_host: Option<String>,
    /// Exit after being idle (no tasks) this long; 0 never.
    #[arg(long, default_value = "20m", value_parser = humantime::parse_duration)]
    pub suicide_timeout: Duration,
    /// Allow containers with securityContext.privileged.
    #[arg(long)]
    pub allow_privileged: bool,
    /// Put pods under the executor's cgroup so the Mesos limits cover them (needs Docker's cgroupfs driver).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub contain_pod_resources: bool,
    /// Address of the kubelet API (container logs) that `kubectl logs` reaches through the API server.
    #[arg(long, default_value = "0.0.0.0")]
    pub kubelet_address: IpAddr,
    /// Port of the kubelet API; 0 picks a free one (published in the Node's daemonEndpoints).
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// TLS certificate of the kubelet API [default: self-signed for the node name and address].
    #[arg(long, value_name = "FILE", requires = "kubelet_tls_private_key_file")]
    pub kubelet_tls_cert_file: Option<PathBuf>,
    /// TLS key of the kubelet API.
    #[arg(long, value_name = "FILE", requires = "kubelet_tls_cert_file")]
    pub kubelet_tls_private_key_file: Option<PathBuf>,
    /// A local image to use as each pod's infra container instead of the one km carries.
    #[arg(long, value_name = "IMAGE")]
    pub pause_image: Option<String>,
    /// Node name to use instead of the agent's hostname.
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// Run the executor itself rather than the supervisor that restarts it (set by the supervisor).
    #[arg(long, hide = true)]
    pub worker: bool,
}

/// Runs `km executor`: the supervisor, or with `--worker` the executor.
pub async fn run(args: Args, stop: CancellationToken) -> anyhow::Result<()> {
    if args.worker {
        worker(args, stop).await
    } else {
        // The agent's environment must be there before anything starts.
        ExecutorEnv::from_env().context("km executor is started by a Mesos agent")?;
        super::supervise::supervise(stop).await
    }
}

/// The node's address: the agent's endpoint address, unless that is
/// unspecified or loopback (an agent serving only this machine): then this
/// machine's primary address, where Docker publishes the pods' host ports
/// too (Endpoints may not hold loopback addresses).
fn host_ip(env: &ExecutorEnv) -> String {
    let host = env
        .agent_endpoint
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(&env.agent_endpoint)
        .trim_matches(['[', ']']);
    match host.parse::<IpAddr>() {
        Ok(ip) if !ip.is_unspecified() && !ip.is_loopback() => ip.to_string(),
        _ => crate::hostaddr::primary_ipv4().to_string(),
    }
}

async fn worker(args: Args, stop: CancellationToken) -> anyhow::Result<()> {
    let env = ExecutorEnv::from_env().context("km executor is started by a Mesos agent")?;
    let client = crate::kubeclient::from_kubeconfig(args.kubeconfig.as_deref()).await?;
    let (exec, mut events) = client::start(env.clone(), Options::default())?;
    // Wait for SUBSCRIBED: it carries the agent and executor facts.
    let subscribed = loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ExecutorEvent::Subscribed(s)) => break s,
                Some(ExecutorEvent::Shutdown(why)) => { tracing::info!(%why, "shut down before subscribing"); return Ok(()); }
                Some(ExecutorEvent::RecoveryTimeout) | None => anyhow::bail!("could not subscribe to the agent at {}", env.agent_endpoint),
                Some(other) => tracing::debug!(?other, "event before SUBSCRIBED"),
            },
            _ = stop.cancelled() => return Ok(()),
        }
    };
    let node_name = args
        .hostname_override
        .clone()
        .unwrap_or_else(|| subscribed.agent_info.hostname.clone());
    let ip = host_ip(&env);
    let Some(runtime) = connect_docker(&args, &exec, &mut events, &stop).await else {
        return Ok(());
    };
    let info = runtime.host_info().await?;
    let cgroups = PodCgroups::new(args.contain_pod_resources, &info.cgroup_driver)?;
    let pause_image = match &args.pause_image {
        Some(i) => i.clone(),
        None => runtime.ensure_pause_image().await?,
    };
    let sandbox = env.directory.clone();
    let host = Arc::new(Host {
        runtime: runtime.clone(),
        client: client.clone(),
        cgroups,
        node_name: node_name.clone(),
        host_ip: ip.clone(),
        executor_id: env.executor_id.value.clone(),
        framework_id: env.framework_id.value.clone(),
        agent_id: env
            .agent_id
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default(),
        pause_image,
        pods_dir: sandbox.join("pods"),
        allow_privileged: args.allow_privileged,
        extra_env: vec![(
            "MESOS_EXECUTOR_ID".to_string(),
            env.executor_id.value.clone(),
        )],
        max_grace: env
            .shutdown_grace_period
            .saturating_sub(Duration::from_secs(1))
            .max(Duration::from_secs(1)),
    });
    // The kubelet API, then the Node that advertises it.
    let logs = LogIndex::default();
    let tls = match (
        &args.kubelet_tls_cert_file,
        &args.kubelet_tls_private_key_file,
    ) {
        (Some(c), Some(k)) => Tls::from_files(c, k)?,
        _ => Tls::self_signed(
            std::slice::from_ref(&node_name),
            &ip.parse().map(|i| vec![i]).unwrap_or_default(),
        )?,
    };
    let api_stop = stop.child_token();
    let bound = kubelet_api::serve(
        SocketAddr::new(args.kubelet_address, args.kubelet_port),
        tls,
        Arc::new(logs.clone()),
        api_stop.clone(),
    )
    .await
    .with_context(|| {
        format!(
            "--kubelet-port {}: cannot serve the kubelet API (another kubelet or executor on this port? give --kubelet-port 0 for any free port)",
            args.kubelet_port
        )
    })?;
    let node_cfg = NodeConfig {
        name: node_name.clone(),
        host_ip: ip.clone(),
        agent_resources: subscribed.agent_info.resources.clone(),
        executor_resources: subscribed.executor_info.resources.clone(),
        attributes: subscribed.agent_info.attributes.clone(),
        kubelet_port: bound.port(),
        executor_id: env.executor_id.value.clone(),
        runtime_version: format!("docker://{}", info.server_version),
    };
    if let Err(e) = node::register(&client, &node_cfg).await {
        tracing::warn!(error = %e, node = node_name, "cannot register the Node; pods still run");
    }
    tokio::spawn(node::heartbeat(
        client.clone(),
        node_cfg,
        Duration::from_secs(10),
        Duration::from_secs(60),
        api_stop.clone(),
    ));
    let (mut manager, reports, bound_rx) =
        Manager::new(exec, host, sandbox.join(tasks::CHECKPOINT_DIR), logs);
    manager.recover().await;
    let statics = static_pods(subscribed.executor_info.data.as_deref());
    manager.start_static(statics).await;
    let suicide = (!args.suicide_timeout.is_zero()).then_some(args.suicide_timeout);
    tracing::info!(
        node = node_name,
        kubelet_port = bound.port(),
        "km executor ready"
    );
    let exit = manager.run(events, reports, bound_rx, suicide, stop).await;
    api_stop.cancel();
    tracing::info!(?exit, "km executor exiting");
    Ok(())
}

/// Connects to Docker. While Docker is unreachable, every LAUNCH fails with
/// the reason and the fix, and connecting is retried every few seconds;
/// `None` when the executor must stop meanwhile.
async fn connect_docker(
    args: &Args,
    exec: &client::Executor,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<ExecutorEvent>,
    stop: &CancellationToken,
) -> Option<Runtime> {
    loop {
        let why = match Runtime::connect(args.docker_host.as_deref()).await {
            Ok(rt) => return Some(rt),
            Err(e) => e.to_string(),
        };
        tracing::error!(error = why, "cannot run pods until Docker is reachable");
        let retry = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(retry);
        loop {
            tokio::select! {
                _ = &mut retry => break,
                _ = stop.cancelled() => return None,
                ev = events.recv() => match ev {
                    Some(ExecutorEvent::Launch(t)) => fail_launch(exec, &t, &why).await,
                    Some(ExecutorEvent::LaunchGroup(g)) => {
                        for t in &g.tasks {
                            fail_launch(exec, t, &why).await;
                        }
                    }
                    Some(ExecutorEvent::Shutdown(_) | ExecutorEvent::RecoveryTimeout) | None => return None,
                    Some(_) => {}
                },
            }
        }
    }
}

async fn fail_launch(exec: &client::Executor, task: &crate::mesos::proto::v1::TaskInfo, why: &str) {
    use crate::mesos::proto::v1;
    let st = v1::TaskStatus {
        task_id: task.task_id.clone(),
        agent_id: Some(task.agent_id.clone()),
        state: v1::TaskState::TaskFailed as i32,
        reason: Some(v1::task_status::Reason::ContainerLaunchFailed as i32),
        message: Some(why.to_string()),
        ..Default::default()
    };
    if let Err(e) = exec.update(st).await {
        tracing::warn!(error = %e, "cannot report the failed launch");
    }
}

/// Static pods the scheduler ships in `ExecutorInfo.data` (a v1 PodList).
fn static_pods(data: Option<&[u8]>) -> Vec<Pod> {
    let Some(data) = data.filter(|d| !d.is_empty()) else {
        return Vec::new();
    };
    #[derive(serde::Deserialize)]
    struct List {
        #[serde(default)]
        items: Vec<Pod>,
    }
    match serde_json::from_slice::<List>(data) {
        Ok(l) => l.items,
        Err(e) => {
            tracing::warn!(error = %e, "the executor's data is not a PodList: no static pods");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_pods_come_from_a_pod_list_and_bad_data_is_ignored() {
        let list = br#"{"apiVersion":"v1","kind":"PodList","items":[{"metadata":{"name":"s"},"spec":{"containers":[]}}]}"#;
        let pods = static_pods(Some(list));
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].metadata.name.as_deref(), Some("s"));
        assert!(static_pods(Some(b"not json")).is_empty());
        assert!(static_pods(None).is_empty());
    }
}
