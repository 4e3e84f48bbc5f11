//! One pod's life on this node: sandbox, init containers, containers,
//! restarts, probes, termination.
//!
//! A pod runs as one tokio task ([`spawn`]) that owns its sandbox (volumes,
//! cgroup, infra container) and one supervisor task per container. The
//! supervisors report [`ContainerRecord`]s; the pod task folds them into a
//! [`PodStatus`] and reports every change to the task manager, which writes
//! it to the API server and tells Mesos. The pod's steps are a small state
//! machine ([`Stage`]): preparing, initializing, running, terminating, done.
//!
//! A launched pod prepares its sandbox while its Binding is still being
//! written ([`Binding`]): no container of the pod's own starts before the
//! pod is bound to this node, and a failed binding removes the sandbox.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::cgroup::{self, PodCgroups, PodLimits};
use super::labels;
use super::probe::{self, ProbeKind};
use super::runtime::{ContainerInfo, PullPolicy, Runtime, RuntimeError};
use super::spec::{self, ContainerKind, PodContext};
use super::status::{self, ContainerRecord, PodView, RecordState};
use super::volumes::{self, EnvSources, VolumePaths};

/// Default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// What every pod on this node shares.
pub struct Host {
    /// Docker.
    pub runtime: Runtime,
    /// The Kubernetes API.
    pub client: kube::Client,
    /// Where pod cgroups go.
    pub cgroups: PodCgroups,
    /// This node's name (the agent's hostname).
    pub node_name: String,
    /// The node's address, also every pod's IP (host-private networking).
    pub host_ip: String,
    /// The Mesos executor id.
    pub executor_id: String,
    /// The Mesos framework id.
    pub framework_id: String,
    /// The Mesos agent id.
    pub agent_id: String,
    /// The infra image.
    pub pause_image: String,
    /// Pod directories (volumes) go below this.
    pub pods_dir: PathBuf,
    /// `--allow-privileged`.
    pub allow_privileged: bool,
    /// Environment added to every container.
    pub extra_env: Vec<(String, String)>,
    /// Upper bound of any grace period (the agent's shutdown grace).
    pub max_grace: Duration,
}

/// How a pod ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every container exited 0 and none restarts.
    Succeeded,
    /// A container failed and will not restart, or the pod could not start.
    Failed(String),
    /// Stopped by [`PodHandle::kill`].
    Killed,
}

/// What a pod tells the task manager.
#[derive(Debug)]
pub enum Report {
    /// The pod's status changed.
    Status {
        /// The task.
        task_id: String,
        /// The new status.
        status: Box<PodStatus>,
    },
    /// The pod is finished; its containers are stopped.
    Done {
        /// The task.
        task_id: String,
        /// How it ended.
        outcome: Outcome,
    },
}

/// Whether a pod is bound to this node, as its runner waits to know
/// before it starts the pod's own containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// The Binding is being written.
    Pending,
    /// The pod is bound here (or was before: re-adopted and static pods).
    Bound,
    /// It cannot be bound here: why.
    Failed(String),
}

/// Docker ids of a pod's containers by container name: the current
/// instance and the one before it (for `kubectl logs --previous`).
pub type ContainerIds = Arc<Mutex<HashMap<String, (Option<String>, Option<String>)>>>;

/// The manager's handle on a running pod.
pub struct PodHandle {
    kill: watch::Sender<Option<Duration>>,
    /// Docker ids of the pod's containers.
    pub ids: ContainerIds,
}

impl PodHandle {
    /// Stops the pod: SIGTERM, then SIGKILL after `grace` (bounded by the
    /// agent's shutdown grace); `None` uses the pod's own grace period.
    pub fn kill(&self, grace: Option<Duration>) {
        let g = grace.unwrap_or(Duration::MAX);
        self.kill.send_modify(|k| {
            *k = Some(k.map_or(g, |old| old.min(g)));
        });
    }
}

/// Where a pod's life is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Volumes, cgroup, infra container.
    Preparing,
    /// Init containers, one at a time.
    Initializing,
    /// The containers run (and restart per the policy).
    Running,
    /// Stopping every container.
    Terminating,
    /// Nothing runs any more.
    Done,
}

/// Starts a pod. `adopt` holds the pod's containers found running after
/// an executor restart; they are taken over instead of started again. The
/// sandbox is prepared at once; the containers start once `binding` says
/// [`Binding::Bound`].
pub fn spawn(
    host: Arc<Host>,
    task_id: String,
    pod: Pod,
    adopt: Vec<ContainerInfo>,
    reports: mpsc::UnboundedSender<Report>,
    binding: watch::Receiver<Binding>,
) -> PodHandle {
    let (kill, kill_rx) = watch::channel(None);
    let ids: ContainerIds = Arc::default();
    let runner = Runner {
        host,
        task_id,
        pod: Arc::new(pod),
        reports,
        kill: kill_rx,
        binding,
        ids: ids.clone(),
        init: Vec::new(),
        app: Vec::new(),
        last: None,
        start_time: None,
        initialized: false,
        stage: Stage::Preparing,
    };
    tokio::spawn(runner.run(adopt));
    PodHandle { kill, ids }
}

/// A message from a container supervisor to its pod.
enum Msg {
    Record(ContainerKind, usize, Box<ContainerRecord>),
    /// Exited for good with this code.
    Finished(usize, i32),
}

struct Runner {
    host: Arc<Host>,
    task_id: String,
    pod: Arc<Pod>,
    reports: mpsc::UnboundedSender<Report>,
    kill: watch::Receiver<Option<Duration>>,
    binding: watch::Receiver<Binding>,
    ids: ContainerIds,
    init: Vec<ContainerRecord>,
    app: Vec<ContainerRecord>,
    last: Option<PodStatus>,
    start_time: Option<Time>,
    initialized: bool,
    stage: Stage,
}

/// What a pod shares with its container supervisors.
#[derive(Clone)]
struct Sandbox {
    host: Arc<Host>,
    pod: Arc<Pod>,
    task_id: String,
    infra_id: String,
    infra_ip: Option<IpAddr>,
    cgroup_parent: Option<String>,
    volumes: Arc<VolumePaths>,
    env: Arc<EnvSources>,
    ids: ContainerIds,
}

impl Sandbox {
    fn context(&self) -> PodContext<'_> {
        PodContext {
            pod: &self.pod,
            node_name: &self.host.node_name,
            host_ip: &self.host.host_ip,
            task_id: &self.task_id,
            executor_id: &self.host.executor_id,
            framework_id: &self.host.framework_id,
            agent_id: &self.host.agent_id,
            cgroup_parent: self.cgroup_parent.as_deref(),
            allow_privileged: self.host.allow_privileged,
            extra_env: &self.host.extra_env,
        }
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// The pod's own grace period.
pub fn pod_grace(pod: &Pod) -> Duration {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(DEFAULT_GRACE)
}

impl Runner {
    fn uid(&self) -> String {
        self.pod.metadata.uid.clone().unwrap_or_default()
    }

    fn spec_containers(&self, kind: ContainerKind) -> Vec<Container> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        match kind {
            ContainerKind::Init => spec.init_containers.unwrap_or_default(),
            ContainerKind::App => spec.containers,
        }
    }

    /// Publishes the status if it changed.
    fn publish(&mut self, stopping: Option<&str>) {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let view = PodView {
            spec: &spec,
            init: &self.init,
            app: &self.app,
            host_ip: &self.host.host_ip,
            pod_ip: &self.host.host_ip,
            start_time: self.start_time.clone(),
            initialized: self.initialized,
            stopping,
        };
        let next = status::pod_status(&view, self.last.as_ref(), now());
        if status::changed(self.last.as_ref(), &next) {
            self.last = Some(next.clone());
            let _ = self.reports.send(Report::Status {
                task_id: self.task_id.clone(),
                status: Box::new(next),
            });
        }
    }

    fn record(&mut self, kind: ContainerKind, i: usize, r: ContainerRecord) {
        let list = match kind {
            ContainerKind::Init => &mut self.init,
            ContainerKind::App => &mut self.app,
        };
        if let Some(slot) = list.get_mut(i) {
            *slot = r;
        }
    }

    fn kill_requested(&self) -> Option<Duration> {
        *self.kill.borrow()
    }

    /// The grace to stop with: the request, else the pod's, bounded by the agent's.
    fn grace(&self) -> Duration {
        let asked = self.kill_requested().unwrap_or(Duration::MAX);
        asked.min(pod_grace(&self.pod)).min(self.host.max_grace)
    }

    async fn run(mut self, adopt: Vec<ContainerInfo>) {
        let name = pod_name(&self.pod);
        self.init = self
            .spec_containers(ContainerKind::Init)
            .iter()
            .map(|c| waiting(c, "PodInitializing"))
            .collect();
        self.app = self
            .spec_containers(ContainerKind::App)
            .iter()
            .map(|c| waiting(c, "ContainerCreating"))
            .collect();
        self.start_time = Some(now());
        self.publish(None);
        let outcome = match self.prepare(&adopt).await {
            Ok(Some(sandbox)) => match self.bound().await {
                Ok(()) => self.live(sandbox, adopt).await,
                Err(outcome) => {
                    let grace = Arc::new(Mutex::new(Duration::ZERO));
                    self.teardown(&sandbox, CancellationToken::new(), &grace)
                        .await;
                    outcome
                }
            },
            Ok(None) => Outcome::Killed,
            Err(why) => {
                tracing::warn!(pod = name, task = self.task_id, why, "the pod cannot start");
                Outcome::Failed(why)
            }
        };
        self.stage = Stage::Done;
        tracing::info!(pod = name, task = self.task_id, ?outcome, "pod finished");
        let _ = self.reports.send(Report::Done {
            task_id: self.task_id.clone(),
            outcome,
        });
    }

    /// Volumes, cgroup and infra container. `Ok(None)`: killed meanwhile.
    async fn prepare(&mut self, adopt: &[ContainerInfo]) -> Result<Option<Sandbox>, String> {
        let uid = self.uid();
        let host = self.host.clone();
        let pod_dir = host.pods_dir.join(&uid);
        let mut backoff = Backoff::kubelet();
        // Volumes and env sources may appear later (a ConfigMap created
        // after the pod): retry like a kubelet, reporting why.
        let (volumes, env) = loop {
            let attempt = async {
                let v = volumes::prepare(&host.client, &self.pod, &pod_dir)
                    .await
                    .map_err(|e| e.to_string())?;
                let e = volumes::env_sources(&host.client, &self.pod)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>((v, e))
            };
            match attempt.await {
                Ok(ok) => break ok,
                Err(why) => {
                    tracing::warn!(pod = pod_name(&self.pod), why, "volumes not ready");
                    let reason = "CreateContainerConfigError";
                    for r in self.init.iter_mut().chain(self.app.iter_mut()) {
                        r.state = RecordState::Waiting {
                            reason: reason.into(),
                            message: Some(why.clone()),
                        };
                    }
                    self.publish(None);
                    let delay = backoff.next(Duration::ZERO);
                    if self.wait_or_killed(delay).await {
                        let _ = volumes::remove(&pod_dir);
                        return Ok(None);
                    }
                }
            }
        };
        let limits = self.limits();
        let cgroup_parent = host
            .cgroups
            .create(&uid, &limits)
            .map_err(|e| e.to_string())?;
        let existing = adopt.iter().find(|c| {
            c.labels.get(labels::CONTAINER_TYPE).map(String::as_str) == Some(labels::TYPE_SANDBOX)
                && c.running
        });
        let (infra_id, infra_ip) = match existing {
            Some(c) => (
                c.id.clone(),
                c.ip_address.as_deref().and_then(|s| s.parse().ok()),
            ),
            None => {
                let ctx = PodContext {
                    pod: &self.pod,
                    node_name: &host.node_name,
                    host_ip: &host.host_ip,
                    task_id: &self.task_id,
                    executor_id: &host.executor_id,
                    framework_id: &host.framework_id,
                    agent_id: &host.agent_id,
                    cgroup_parent: cgroup_parent.as_deref(),
                    allow_privileged: host.allow_privileged,
                    extra_env: &host.extra_env,
                };
                let body = spec::infra_body(&ctx, &host.pause_image);
                let id = host
                    .runtime
                    .create(&spec::infra_name(&self.pod), body)
                    .await
                    .map_err(|e| format!("creating the pod's infra container: {e}"))?;
                if let Err(e) = host.runtime.start(&id).await {
                    let _ = host.runtime.remove(&id).await;
                    return Err(format!("starting the pod's infra container: {e}"));
                }
                let ip = host
                    .runtime
                    .inspect(&id)
                    .await
                    .ok()
                    .and_then(|i| i.ip_address)
                    .and_then(|s| s.parse().ok());
                (id, ip)
            }
        };
        Ok(Some(Sandbox {
            host: host.clone(),
            pod: self.pod.clone(),
            task_id: self.task_id.clone(),
            infra_id,
            infra_ip,
            cgroup_parent,
            volumes: Arc::new(volumes),
            env: Arc::new(env),
            ids: self.ids.clone(),
        }))
    }

    /// Pod limits from its containers' limits.
    fn limits(&self) -> PodLimits {
        let of = |cs: Vec<Container>| -> Vec<PodLimits> {
            cs.iter()
                .map(|c| {
                    let r = spec::resources(c);
                    PodLimits {
                        cpu_shares: r.cpu_shares.max(2) as u64,
                        cpu_quota_us: r.cpu_quota,
                        memory_bytes: r.memory_bytes,
                    }
                })
                .collect()
        };
        cgroup::pod_limits(
            &of(self.spec_containers(ContainerKind::App)),
            &of(self.spec_containers(ContainerKind::Init)),
        )
    }

    /// Waits until the pod is bound here; a failed binding or a kill first
    /// is the pod's outcome.
    async fn bound(&mut self) -> Result<(), Outcome> {
        let mut binding = self.binding.clone();
        let settled = tokio::select! {
            b = binding.wait_for(|b| *b != Binding::Pending) => b.map(|b| b.clone()).ok(),
            _ = self.kill.wait_for(Option::is_some) => return Err(Outcome::Killed),
        };
        match settled {
            Some(Binding::Bound) => Ok(()),
            Some(Binding::Failed(why)) => Err(Outcome::Failed(format!("binding failed: {why}"))),
            // The manager dropped the task: nothing will start it.
            Some(Binding::Pending) | None => Err(Outcome::Killed),
        }
    }

    /// Sleeps `d` unless a kill comes first (then true).
    async fn wait_or_killed(&mut self, d: Duration) -> bool {
        if self.kill_requested().is_some() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.kill.wait_for(Option::is_some) => true,
        }
    }

    /// Init containers, then the containers, until the pod ends or is killed.
    async fn live(&mut self, sb: Sandbox, adopt: Vec<ContainerInfo>) -> Outcome {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let grace = Arc::new(Mutex::new(pod_grace(&self.pod)));
        let policy = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone());
        let adopted_app = adopt
            .iter()
            .any(|c| c.labels.get(labels::CONTAINER_KIND).map(String::as_str) == Some("app"));
        // Init containers, in order (skipped when the pod was adopted with
        // its containers already past them).
        self.stage = Stage::Initializing;
        if !adopted_app {
            let inits = self.spec_containers(ContainerKind::Init);
            for (i, c) in inits.into_iter().enumerate() {
                let sup = Supervisor {
                    sb: sb.clone(),
                    kind: ContainerKind::Init,
                    index: i,
                    container: c,
                    policy: policy.clone(),
                    tx: tx.clone(),
                    stop: stop.clone(),
                    grace: grace.clone(),
                    adopt: None,
                };
                let mut job = tokio::spawn(sup.run());
                let mut kill = self.kill.clone();
                let code = loop {
                    tokio::select! {
                        m = rx.recv() => match m {
                            Some(Msg::Record(k, i, r)) => { self.record(k, i, *r); self.publish(None); }
                            Some(Msg::Finished(_, code)) => break Some(code),
                            None => break None,
                        },
                        _ = kill.wait_for(Option::is_some) => break None,
                    }
                };
                match code {
                    Some(0) => continue,
                    Some(code) => {
                        let _ = (&mut job).await;
                        let why =
                            format!("init container {} exited with {code}", self.init[i].name);
                        self.publish(None);
                        self.teardown(&sb, stop, &grace).await;
                        return Outcome::Failed(why);
                    }
                    None => {
                        *grace.lock().expect("grace lock") = self.grace();
                        stop.cancel();
                        let _ = job.await;
                        while let Ok(Msg::Record(k, i, r)) = rx.try_recv() {
                            self.record(k, i, *r);
                        }
                        self.stage = Stage::Terminating;
                        self.publish(Some("Killed"));
                        self.teardown(&sb, CancellationToken::new(), &grace).await;
                        return Outcome::Killed;
                    }
                }
            }
        }
        self.initialized = true;
        self.stage = Stage::Running;
        self.publish(None);
        let apps = self.spec_containers(ContainerKind::App);
        let mut jobs = Vec::new();
        for (i, c) in apps.into_iter().enumerate() {
            let found = adopt
                .iter()
                .filter(|a| {
                    a.labels.get(labels::CONTAINER_NAME) == Some(&c.name)
                        && a.labels.get(labels::CONTAINER_KIND).map(String::as_str) == Some("app")
                })
                .max_by_key(|a| {
                    a.labels
                        .get(labels::RESTART_COUNT)
                        .and_then(|n| n.parse::<u32>().ok())
                        .unwrap_or(0)
                })
                .cloned();
            let sup = Supervisor {
                sb: sb.clone(),
                kind: ContainerKind::App,
                index: i,
                container: c,
                policy: policy.clone(),
                tx: tx.clone(),
                stop: stop.clone(),
                grace: grace.clone(),
                adopt: found,
            };
            jobs.push(tokio::spawn(sup.run()));
        }
        drop(tx);
        let mut finished = vec![None; jobs.len()];
        let mut kill = self.kill.clone();
        let killed = loop {
            if finished.iter().all(Option::is_some) {
                break false;
            }
            tokio::select! {
                m = rx.recv() => match m {
                    Some(Msg::Record(k, i, r)) => { self.record(k, i, *r); self.publish(None); }
                    Some(Msg::Finished(i, code)) => { if let Some(f) = finished.get_mut(i) { *f = Some(code); } }
                    None => break false,
                },
                _ = kill.wait_for(Option::is_some) => break true,
            }
        };
        if killed {
            self.stage = Stage::Terminating;
            *grace.lock().expect("grace lock") = self.grace();
            stop.cancel();
            for j in jobs {
                let _ = j.await;
            }
            while let Ok(m) = rx.try_recv() {
                if let Msg::Record(k, i, r) = m {
                    self.record(k, i, *r);
                }
            }
            self.publish(Some("Killed"));
            self.teardown(&sb, CancellationToken::new(), &grace).await;
            return Outcome::Killed;
        }
        for j in jobs {
            let _ = j.await;
        }
        while let Ok(m) = rx.try_recv() {
            if let Msg::Record(k, i, r) = m {
                self.record(k, i, *r);
            }
        }
        self.publish(None);
        self.stop_infra(&sb).await;
        let failed: Vec<String> = self
            .app
            .iter()
            .zip(&finished)
            .filter(|(_, c)| c.is_some_and(|c| c != 0))
            .map(|(r, c)| format!("{} exited with {}", r.name, c.unwrap_or_default()))
            .collect();
        if failed.is_empty() {
            Outcome::Succeeded
        } else {
            Outcome::Failed(failed.join(", "))
        }
    }

    /// A finished pod: the infra container goes, the exited containers
    /// stay for `kubectl logs` until the pod is killed or the executor ends.
    async fn stop_infra(&self, sb: &Sandbox) {
        let rt = &self.host.runtime;
        let _ = rt.stop(&sb.infra_id, Duration::ZERO).await;
        let _ = rt.remove(&sb.infra_id).await;
    }

    /// Stops and removes every container of the pod, its cgroup and volumes.
    async fn teardown(&self, sb: &Sandbox, stop: CancellationToken, grace: &Arc<Mutex<Duration>>) {
        stop.cancel();
        let rt = &self.host.runtime;
        let g = *grace.lock().expect("grace lock");
        let uid = self.uid();
        let mine = rt
            .list(&[(labels::POD_UID, uid.as_str())])
            .await
            .unwrap_or_default();
        let stops = mine
            .iter()
            .filter(|c| c.id != sb.infra_id && c.running)
            .map(|c| rt.stop(&c.id, g));
        futures::future::join_all(stops).await;
        // Removal is forced: it kills the infra container (and anything
        // still running) first.
        for c in &mine {
            let _ = rt.remove(&c.id).await;
        }
        let _ = rt.remove(&sb.infra_id).await;
        if let Err(e) = self.host.cgroups.remove(&uid) {
            tracing::warn!(pod = pod_name(&self.pod), error = %e, "cannot remove the pod's cgroup");
        }
        let _ = volumes::remove(&self.host.pods_dir.join(&uid));
    }
}

fn waiting(c: &Container, reason: &str) -> ContainerRecord {
    ContainerRecord::waiting(&c.name, c.image.as_deref().unwrap_or(""), reason)
}

/// Runs one container: pull, create, start, watch, probe, restart.
struct Supervisor {
    sb: Sandbox,
    kind: ContainerKind,
    index: usize,
    container: Container,
    policy: Option<String>,
    tx: mpsc::UnboundedSender<Msg>,
    stop: CancellationToken,
    grace: Arc<Mutex<Duration>>,
    adopt: Option<ContainerInfo>,
}

/// How one run of a container ended.
enum RunEnd {
    Exited(Box<ContainerInfo>),
    Stopped,
}

impl Supervisor {
    fn send(&self, r: &ContainerRecord) {
        let _ = self
            .tx
            .send(Msg::Record(self.kind, self.index, Box::new(r.clone())));
    }

    fn restarts(&self, code: i32) -> bool {
        match self.kind {
            // Init containers never restart after success; "Always" means
            // "OnFailure" for them.
            ContainerKind::Init => code != 0 && self.policy.as_deref() != Some("Never"),
            ContainerKind::App => status::should_restart(self.policy.as_deref(), code),
        }
    }

    /// Sleeps unless stopped first (then true).
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.stop.cancelled() => true,
        }
    }

    fn set_ids(&self, current: Option<String>) -> Option<String> {
        let mut ids = self.sb.ids.lock().expect("ids lock");
        let slot = ids.entry(self.container.name.clone()).or_default();
        let old_previous = slot.1.take();
        slot.1 = slot.0.take();
        slot.0 = current;
        old_previous
    }

    async fn run(mut self) {
        let rt = self.sb.host.runtime.clone();
        let name = self.container.name.clone();
        let image = self.container.image.clone().unwrap_or_default();
        let mut rec = waiting(&self.container, "ContainerCreating");
        let mut backoff = Backoff::kubelet();
        let mut restart_count: u32 = 0;
        loop {
            // Take over a container found after an executor restart, or start one.
            let (id, image_id) = match self.adopt.take() {
                Some(info) => {
                    restart_count = info
                        .labels
                        .get(labels::RESTART_COUNT)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    self.sb
                        .ids
                        .lock()
                        .expect("ids lock")
                        .insert(name.clone(), (Some(info.id.clone()), None));
                    (info.id.clone(), info.image_id.clone())
                }
                None => match self.start_one(&mut rec, restart_count, &image).await {
                    Ok(v) => v,
                    Err(reason) => {
                        rec.state = RecordState::Waiting {
                            reason: reason.0.into(),
                            message: Some(reason.1),
                        };
                        self.send(&rec);
                        if self.pause(backoff.next(Duration::ZERO)).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            rec.restart_count = restart_count as i32;
            rec.container_id = Some(format!("docker://{id}"));
            rec.image_id = if image_id.is_empty() {
                String::new()
            } else {
                format!("docker://{image_id}")
            };
            let started = Instant::now();
            let info = rt.inspect(&id).await.ok();
            let started_at = info
                .as_ref()
                .and_then(|i| i.started_at.as_deref())
                .and_then(|s| s.parse().ok())
                .map(Time)
                .unwrap_or_else(now);
            rec.state = RecordState::Running { started_at };
            rec.ready = self.container.readiness_probe.is_none();
            rec.started = Some(self.container.startup_probe.is_none());
            self.send(&rec);
            let end = self.watch(&id, &mut rec).await;
            let info = match end {
                RunEnd::Stopped => {
                    let g = *self.grace.lock().expect("grace lock");
                    let _ = rt.stop(&id, g).await;
                    if let Ok(info) = rt.inspect(&id).await {
                        rec.state = RecordState::Terminated(terminated_of(&info));
                    }
                    rec.ready = false;
                    self.send(&rec);
                    return;
                }
                RunEnd::Exited(info) => *info,
            };
            let t = terminated_of(&info);
            let code = t.exit_code;
            rec.ready = false;
            rec.last_termination = Some(t.clone());
            rec.state = RecordState::Terminated(t);
            if let Some(old) = self.set_ids(None) {
                let _ = rt.remove(&old).await;
            }
            {
                let mut ids = self.sb.ids.lock().expect("ids lock");
                if let Some(slot) = ids.get_mut(&name) {
                    slot.1 = Some(id.clone());
                }
            }
            if !self.restarts(code) {
                self.send(&rec);
                let _ = self.tx.send(Msg::Finished(self.index, code));
                return;
            }
            let delay = backoff.next(started.elapsed());
            rec.state = RecordState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {} restarting failed container={name} pod={}",
                    humantime::format_duration(delay),
                    self.sb.pod.metadata.name.as_deref().unwrap_or("")
                )),
            };
            self.send(&rec);
            if self.pause(delay).await {
                return;
            }
            restart_count += 1;
        }
    }

    /// Pulls, creates and starts one instance. Err: (waiting reason, message).
    async fn start_one(
        &self,
        rec: &mut ContainerRecord,
        restart_count: u32,
        image: &str,
    ) -> Result<(String, String), (&'static str, String)> {
        let rt = &self.sb.host.runtime;
        let policy = PullPolicy::for_container(self.container.image_pull_policy.as_deref(), image);
        let image_id = match rt.ensure_image(image, policy).await {
            Ok(id) => id,
            Err(e @ RuntimeError::ImageNeverPull { .. }) => {
                return Err(("ErrImageNeverPull", e.to_string()));
            }
            Err(e) => return Err(("ErrImagePull", e.to_string())),
        };
        let ctx = self.sb.context();
        let body = spec::container_body(
            &ctx,
            &self.container,
            self.kind,
            restart_count,
            &self.sb.infra_id,
            &self.sb.volumes,
            &self.sb.env,
            image,
        )
        .map_err(|e| ("CreateContainerConfigError", e.to_string()))?;
        let cname = spec::container_name(&self.sb.pod, &self.container.name, restart_count);
        let id = rt
            .create(&cname, body)
            .await
            .map_err(|e| ("CreateContainerError", e.to_string()))?;
        if let Err(e) = rt.start(&id).await {
            let _ = rt.remove(&id).await;
            return Err(("RunContainerError", e.to_string()));
        }
        if let Some(old) = self.set_ids(Some(id.clone())) {
            let _ = rt.remove(&old).await;
        }
        rec.state = RecordState::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        };
        Ok((id, image_id))
    }

    /// Watches a running instance: its exit, its probes, a stop request.
    async fn watch(&self, id: &str, rec: &mut ContainerRecord) -> RunEnd {
        let rt = self.sb.host.runtime.clone();
        let target = self.sb.infra_ip.map(|ip| probe::Target {
            ip,
            container_id: id.to_string(),
            exec: Arc::new(DockerExec(rt.clone())) as Arc<dyn probe::Exec>,
        });
        let mut probes = Vec::new();
        let mut spawn_probe = |kind: ProbeKind, p: Option<&k8s_openapi::api::core::v1::Probe>| {
            let (tx, rx) = watch::channel(None);
            if let (Some(p), Some(t)) = (p, target.clone()) {
                probes.push(tokio::spawn(probe::run(
                    kind,
                    p.clone(),
                    self.container.clone(),
                    t,
                    tx,
                )));
            }
            rx
        };
        let mut startup = spawn_probe(ProbeKind::Startup, self.container.startup_probe.as_ref());
        let mut liveness = spawn_probe(ProbeKind::Liveness, None);
        let mut readiness = spawn_probe(ProbeKind::Readiness, None);
        let has_startup = self.container.startup_probe.is_some();
        if !has_startup {
            liveness = spawn_probe(ProbeKind::Liveness, self.container.liveness_probe.as_ref());
            readiness = spawn_probe(
                ProbeKind::Readiness,
                self.container.readiness_probe.as_ref(),
            );
        }
        let mut exited = rt.wait(id).boxed();
        let end = loop {
            tokio::select! {
                _ = &mut exited => {
                    break match rt.inspect(id).await {
                        Ok(info) => RunEnd::Exited(Box::new(info)),
                        Err(_) => RunEnd::Exited(Box::new(ContainerInfo { id: id.to_string(), exit_code: Some(137), error: "container vanished".into(), ..Default::default() })),
                    };
                }
                _ = self.stop.cancelled() => break RunEnd::Stopped,
                Ok(()) = startup.changed() => {
                    if *startup.borrow() == Some(true) {
                        rec.started = Some(true);
                        self.send(rec);
                        liveness = spawn_probe(ProbeKind::Liveness, self.container.liveness_probe.as_ref());
                        readiness = spawn_probe(ProbeKind::Readiness, self.container.readiness_probe.as_ref());
                    } else if *startup.borrow() == Some(false) {
                        tracing::info!(container = self.container.name, "startup probe failed: restarting the container");
                        let g = *self.grace.lock().expect("grace lock");
                        let _ = rt.stop(id, g).await;
                    }
                }
                Ok(()) = liveness.changed() => {
                    if *liveness.borrow() == Some(false) {
                        tracing::info!(container = self.container.name, "liveness probe failed: restarting the container");
                        let g = *self.grace.lock().expect("grace lock");
                        let _ = rt.stop(id, g).await;
                    }
                }
                Ok(()) = readiness.changed() => {
                    let ready = *readiness.borrow() == Some(true);
                    if rec.ready != ready {
                        rec.ready = ready;
                        self.send(rec);
                    }
                }
            }
        };
        for p in probes {
            p.abort();
        }
        end
    }
}

fn terminated_of(info: &ContainerInfo) -> status::Terminated {
    status::terminated(
        info.exit_code.unwrap_or(-1),
        info.oom_killed,
        &info.error,
        info.started_at.as_deref(),
        info.finished_at.as_deref(),
        Some(&format!("docker://{}", info.id)),
    )
}

/// Probes' exec on Docker.
struct DockerExec(Runtime);

impl probe::Exec for DockerExec {
    fn exec<'a>(
        &'a self,
        container_id: &'a str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(i64, String), String>> {
        async move {
            self.0
                .exec(container_id, cmd, timeout)
                .await
                .map(|o| (o.exit_code, o.output))
                .map_err(|e| e.to_string())
        }
        .boxed()
    }
}
