//! The task manager: Mesos tasks in, pods on Docker out.
//!
//! It turns the agent's events into pod work (LAUNCH binds the pod, then
//! starts it; KILL and SHUTDOWN stop pods), turns pod reports into Mesos
//! status updates and API status writes, checkpoints each task in the
//! sandbox so that a restarted executor re-adopts its containers, and exits
//! when idle for `--suicide-timeout`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use prost::Message;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::kubelet_api::{LogQuery, Logs};
use super::labels;
use super::pod::{self, Binding, ContainerIds, Host, Outcome, PodHandle, Report};
use super::runtime::{LogOptions, Runtime};
use crate::mesos::executor::{Executor, ExecutorEvent};
use crate::mesos::proto::v1;
use crate::podtask::annotations as ann;

/// Directory (in the sandbox) of the task checkpoints.
pub const CHECKPOINT_DIR: &str = "km-tasks";

/// A task the executor runs.
struct Entry {
    info: v1::TaskInfo,
    namespace: String,
    name: String,
    uid: String,
    handle: PodHandle,
    /// TASK_RUNNING was sent.
    running_sent: bool,
    /// Static pods are not Mesos tasks: no updates.
    is_static: bool,
    /// The status writer of this pod.
    status: watch::Sender<Option<PodStatus>>,
    /// Whether the pod is bound here yet: its containers and its status
    /// writes wait for it.
    binding: watch::Sender<Binding>,
    /// When LAUNCH arrived (or the task was re-adopted).
    launched_at: std::time::Instant,
}

/// What a launch ends in, reported back to the manager's loop.
enum Bound {
    Ok { task_id: String },
    Failed { task_id: String, message: String },
}

/// Where logs are found, shared with the kubelet API.
#[derive(Clone, Default)]
pub struct LogIndex {
    pods: Arc<Mutex<HashMap<(String, String), ContainerIds>>>,
    runtime: Arc<Mutex<Option<Runtime>>>,
}

impl Logs for LogIndex {
    fn logs(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        query: &LogQuery,
    ) -> Result<BoxStream<'static, Result<bytes::Bytes, String>>, String> {
        let runtime = self
            .runtime
            .lock()
            .expect("log index lock")
            .clone()
            .ok_or("the executor is not connected to Docker")?;
        let ids = self
            .pods
            .lock()
            .expect("log index lock")
            .get(&(namespace.to_string(), pod.to_string()))
            .cloned()
            .ok_or_else(|| format!("pod {namespace}/{pod} is not running on this node"))?;
        let (current, previous) = ids
            .lock()
            .expect("container ids lock")
            .get(container)
            .cloned()
            .ok_or_else(|| {
                format!("container {container} of pod {namespace}/{pod} has not started")
            })?;
        let id = if query.previous {
            previous.ok_or_else(|| {
                format!("previous terminated container {container} in pod {pod} not found")
            })?
        } else {
            current
                .or(previous)
                .ok_or_else(|| format!("container {container} in pod {pod} is waiting to start"))?
        };
        let since = query
            .since_seconds
            .map(|s| unix_now() - s as i64)
            .or_else(|| {
                query.since_time.as_deref().and_then(|t| {
                    t.parse::<k8s_openapi::jiff::Timestamp>()
                        .ok()
                        .map(|ts| ts.as_second())
                })
            });
        let opts = LogOptions {
            follow: query.follow,
            tail: query.tail_lines,
            since,
            timestamps: query.timestamps,
        };
        let limit = query.limit_bytes;
        let mut sent = 0u64;
        let stream = runtime
            .logs(&id, opts)
            .map(|r| r.map_err(|e| e.to_string()))
            .take_while(move |r| {
                let go = limit.is_none_or(|l| sent < l);
                if let Ok(b) = r {
                    sent += b.len() as u64;
                }
                futures::future::ready(go)
            });
        Ok(stream.boxed())
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The manager's state.
pub struct Manager {
    exec: Executor,
    host: Arc<Host>,
    tasks: HashMap<String, Entry>,
    reports_tx: mpsc::UnboundedSender<Report>,
    bound_tx: mpsc::UnboundedSender<BoundMsg>,
    checkpoints: PathBuf,
    logs: LogIndex,
}

/// How the manager's loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// SHUTDOWN, recovery timeout, or stop signal: pods were stopped.
    Shutdown(String),
    /// Idle for the suicide timeout.
    Idle,
}

fn status(task: &v1::TaskInfo, state: v1::TaskState) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: task.task_id.clone(),
        state: state as i32,
        agent_id: Some(task.agent_id.clone()),
        ..Default::default()
    }
}

/// Decodes the pod a task carries and checks it is for this node.
pub fn pod_of(task: &v1::TaskInfo, node: &str) -> Result<Pod, String> {
    let data = task
        .data
        .as_deref()
        .ok_or("the task carries no pod (TaskInfo.data is empty)")?;
    let pod: Pod =
        serde_json::from_slice(data).map_err(|e| format!("the task's data is not a pod: {e}"))?;
    if pod.metadata.name.as_deref().unwrap_or("").is_empty() || pod.spec.is_none() {
        return Err("the task's pod has no name or no spec".into());
    }
    let target = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ann::BINDING_HOST))
        .map(String::as_str)
        .unwrap_or("");
    if !target.is_empty() && target != node {
        return Err(format!(
            "the pod was placed on node {target}, but this executor runs on node {node}"
        ));
    }
    Ok(pod)
}

impl Manager {
    /// A manager for this executor; `logs` is shared with the kubelet API.
    pub fn new(
        exec: Executor,
        host: Arc<Host>,
        checkpoints: PathBuf,
        logs: LogIndex,
    ) -> (
        Manager,
        mpsc::UnboundedReceiver<Report>,
        mpsc::UnboundedReceiver<BoundMsg>,
    ) {
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let (bound_tx, bound_rx) = mpsc::unbounded_channel();
        *logs.runtime.lock().expect("log index lock") = Some(host.runtime.clone());
        (
            Manager {
                exec,
                host,
                tasks: HashMap::new(),
                reports_tx,
                bound_tx,
                checkpoints,
                logs,
            },
            reports_rx,
            bound_rx,
        )
    }

    /// Number of live tasks (static pods excluded).
    fn busy(&self) -> usize {
        self.tasks.values().filter(|e| !e.is_static).count()
    }

    async fn update(&self, st: v1::TaskStatus) {
        if let Err(e) = self.exec.update(st).await
            && !e.is_kept()
        {
            tracing::warn!(error = %e, "status update lost");
        }
    }

    fn checkpoint_path(&self, task_id: &str) -> PathBuf {
        let safe: String = task_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.checkpoints.join(format!("{safe}.pb"))
    }

    fn checkpoint(&self, task: &v1::TaskInfo) {
        let path = self.checkpoint_path(&task.task_id.value);
        let tmp = path.with_extension("tmp");
        let ok = std::fs::create_dir_all(&self.checkpoints)
            .and_then(|_| std::fs::write(&tmp, task.encode_to_vec()))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = ok {
            tracing::warn!(path = %path.display(), error = %e, "cannot checkpoint the task; it will not survive an executor restart");
        }
    }

    /// Tasks checkpointed by an earlier run of this executor.
    pub fn checkpointed(&self) -> Vec<v1::TaskInfo> {
        let Ok(dir) = std::fs::read_dir(&self.checkpoints) else {
            return Vec::new();
        };
        dir.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pb"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| v1::TaskInfo::decode(b.as_slice()).ok())
            .collect()
    }

    /// Re-adopts the containers of checkpointed tasks; removes containers of
    /// this executor that belong to no known task.
    pub async fn recover(&mut self) {
        let known = self.checkpointed();
        let rt = self.host.runtime.clone();
        let mine = rt
            .list(&[
                (labels::EXECUTOR_ID, self.host.executor_id.as_str()),
                (labels::FRAMEWORK_ID, self.host.framework_id.as_str()),
            ])
            .await
            .unwrap_or_default();
        let ids: Vec<&str> = known.iter().map(|t| t.task_id.value.as_str()).collect();
        for c in &mine {
            let task = c
                .labels
                .get(labels::TASK_ID)
                .map(String::as_str)
                .unwrap_or("");
            if !ids.contains(&task) {
                tracing::info!(
                    container = c.name,
                    task,
                    "removing an orphan container of no known task"
                );
                let _ = rt.stop(&c.id, Duration::from_secs(2)).await;
                let _ = rt.remove(&c.id).await;
            }
        }
        for task in known {
            let adopt: Vec<_> = mine
                .iter()
                .filter(|c| c.labels.get(labels::TASK_ID) == Some(&task.task_id.value))
                .cloned()
                .collect();
            let pod = match pod_of(&task, &self.host.node_name) {
                Ok(p) => p,
                Err(_) => {
                    let _ = std::fs::remove_file(self.checkpoint_path(&task.task_id.value));
                    continue;
                }
            };
            let running = adopt.iter().any(|c| c.running);
            tracing::info!(
                task = task.task_id.value,
                containers = adopt.len(),
                running,
                "re-adopting a task after an executor restart"
            );
            self.start(task, pod, false, Binding::Bound, adopt);
        }
    }

    /// Tracks a task and starts its pod (taking over `adopt`'s containers),
    /// with a status writer of its own.
    fn start(
        &mut self,
        info: v1::TaskInfo,
        pod: Pod,
        is_static: bool,
        binding: Binding,
        adopt: Vec<super::runtime::ContainerInfo>,
    ) {
        let (tx, rx) = watch::channel(None);
        let (binding, binding_rx) = watch::channel(binding);
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        tokio::spawn(write_status(
            Api::namespaced(self.host.client.clone(), &namespace),
            name.clone(),
            rx,
            binding.subscribe(),
        ));
        let task_id = info.task_id.value.clone();
        let handle = pod::spawn(
            self.host.clone(),
            task_id.clone(),
            pod,
            adopt,
            self.reports_tx.clone(),
            binding_rx,
        );
        self.logs
            .pods
            .lock()
            .expect("log index lock")
            .insert((namespace.clone(), name.clone()), handle.ids.clone());
        self.tasks.insert(
            task_id,
            Entry {
                info,
                namespace,
                name,
                uid,
                handle,
                running_sent: false,
                is_static,
                status: tx,
                binding,
                launched_at: std::time::Instant::now(),
            },
        );
    }

    /// LAUNCH: decode, checkpoint, then bind and prepare the pod's sandbox
    /// at the same time; its containers start once it is bound.
    pub async fn launch(&mut self, task: v1::TaskInfo) {
        let id = task.task_id.value.clone();
        if self.tasks.contains_key(&id) {
            tracing::warn!(task = id, "LAUNCH of a task already running: ignored");
            return;
        }
        let pod = match pod_of(&task, &self.host.node_name) {
            Ok(p) => p,
            Err(message) => {
                tracing::warn!(task = id, message, "refusing a task");
                let mut st = status(&task, v1::TaskState::TaskFailed);
                st.reason = Some(v1::task_status::Reason::TaskInvalid as i32);
                st.message = Some(message);
                self.update(st).await;
                return;
            }
        };
        self.checkpoint(&task);
        self.start(task, pod.clone(), false, Binding::Pending, Vec::new());
        let client = self.host.client.clone();
        let node = self.host.node_name.clone();
        let tx = self.bound_tx.clone();
        tokio::spawn(async move {
            let msg = match bind(&client, pod, &node).await {
                Ok(_) => Bound::Ok { task_id: id },
                Err(message) => Bound::Failed {
                    task_id: id,
                    message,
                },
            };
            let _ = tx.send(BoundMsg(msg));
        });
    }

    /// The binding of a launched pod finished: its runner goes on (or
    /// removes its sandbox and reports the failure).
    pub async fn bound(&mut self, msg: BoundMsg) {
        match msg.0 {
            Bound::Ok { task_id } => {
                let Some(e) = self.tasks.get(&task_id) else {
                    return;
                };
                let _ = e.binding.send(Binding::Bound);
                let mut st = status(&e.info, v1::TaskState::TaskStarting);
                st.message = Some(format!("pod bound to node {}", self.host.node_name));
                self.update(st).await;
            }
            Bound::Failed { task_id, message } => {
                tracing::warn!(task = task_id, message, "binding failed");
                if let Some(e) = self.tasks.get(&task_id) {
                    let _ = e.binding.send(Binding::Failed(message));
                }
            }
        }
    }

    /// KILL: stop the pod with the given grace.
    pub async fn kill(&mut self, task_id: &v1::TaskId, policy: Option<v1::KillPolicy>) {
        let grace = policy
            .and_then(|p| p.grace_period)
            .map(|d| Duration::from_nanos(d.nanoseconds.max(0) as u64));
        let Some(e) = self.tasks.get_mut(&task_id.value) else {
            tracing::info!(
                task = task_id.value,
                "KILL of a task this executor does not run"
            );
            let mut st = v1::TaskStatus {
                task_id: task_id.clone(),
                state: v1::TaskState::TaskLost as i32,
                ..Default::default()
            };
            st.message = Some("this executor does not run the task".into());
            self.update(st).await;
            return;
        };
        e.handle.kill(grace);
    }

    /// A pod reported.
    pub async fn report(&mut self, r: Report) {
        match r {
            Report::Status { task_id, status } => {
                let Some(e) = self.tasks.get_mut(&task_id) else {
                    return;
                };
                let phase = status.phase.clone().unwrap_or_default();
                let _ = e.status.send(Some((*status).clone()));
                if phase == "Running" && !e.running_sent && !e.is_static {
                    e.running_sent = true;
                    tracing::info!(
                        task = task_id,
                        launch_ms = e.launched_at.elapsed().as_millis() as u64,
                        "task running"
                    );
                    let mut st = self::status(&e.info, v1::TaskState::TaskRunning);
                    st.message = Some(format!("pod-running:{}_{}", e.name, e.namespace));
                    st.data = serde_json::to_vec(&*status).ok();
                    self.update(st).await;
                }
            }
            Report::Done { task_id, outcome } => self.finish(&task_id, outcome).await,
        }
    }

    /// The terminal update, the API pod's deletion when it was being
    /// deleted, and forgetting the task.
    async fn finish(&mut self, task_id: &str, outcome: Outcome) {
        let Some(e) = self.tasks.remove(task_id) else {
            return;
        };
        // A finished pod keeps its exited containers, and their logs stay
        // readable; a killed pod's containers are gone.
        if outcome == Outcome::Killed {
            self.logs
                .pods
                .lock()
                .expect("log index lock")
                .remove(&(e.namespace.clone(), e.name.clone()));
        }
        let _ = std::fs::remove_file(self.checkpoint_path(task_id));
        if e.is_static {
            return;
        }
        let (state, message) = match &outcome {
            Outcome::Succeeded => (v1::TaskState::TaskFinished, "pod succeeded".to_string()),
            Outcome::Failed(m) => (v1::TaskState::TaskFailed, m.clone()),
            Outcome::Killed => (v1::TaskState::TaskKilled, "pod killed".to_string()),
        };
        let mut st = status(&e.info, state);
        st.message = Some(message.clone());
        let unbound = matches!(*e.binding.borrow(), Binding::Failed(_));
        if matches!(outcome, Outcome::Failed(_)) && unbound {
            st.reason = Some(v1::task_status::Reason::ContainerLaunchFailed as i32);
        }
        self.update(st).await;
        let api: Api<Pod> = Api::namespaced(self.host.client.clone(), &e.namespace);
        match outcome {
            // As a kubelet does: once the containers of a pod being deleted
            // are gone, remove it for good.
            Outcome::Killed => {
                if let Ok(Some(p)) = api.get_opt(&e.name).await
                    && p.metadata.uid.as_deref() == Some(e.uid.as_str())
                    && p.metadata.deletion_timestamp.is_some()
                {
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: Some(e.uid.clone()),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    if let Err(err) = api.delete(&e.name, &dp).await {
                        tracing::warn!(pod = e.name, error = %err, "cannot finish deleting the pod");
                    }
                }
            }
            Outcome::Failed(m) if unbound => {
                let patch =
                    json!({"status": {"phase": "Failed", "reason": "LaunchFailed", "message": m}});
                let _ = api
                    .patch_status(&e.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await;
            }
            _ => {}
        }
    }

    /// Stops every pod within `within` (the agent's shutdown grace, after
    /// which it kills the executor): each pod gets its own grace period,
    /// bounded by `within` less a [`cleanup_reserve`]; then whatever
    /// containers are left are removed, concurrently, before the deadline.
    pub async fn stop_all(
        &mut self,
        within: Duration,
        reports: &mut mpsc::UnboundedReceiver<Report>,
    ) {
        let began = tokio::time::Instant::now();
        let reserve = cleanup_reserve(within, self.tasks.len());
        for e in self.tasks.values() {
            e.handle.kill(Some(within - reserve));
        }
        // The pods remove their own containers once stopped: half the
        // reserve is theirs, the other half the sweep's.
        let deadline = began + within - reserve / 2;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, reports.recv()).await {
                Ok(Some(r)) => self.report(r).await,
                _ => break,
            }
        }
        // Whatever is left (also exited containers kept for logs).
        let rt = &self.host.runtime;
        let left = rt
            .list(&[(labels::EXECUTOR_ID, self.host.executor_id.as_str())])
            .await
            .unwrap_or_default();
        if !left.is_empty() {
            let n = left.len();
            let removals = futures::stream::iter(left)
                .map(|c| async move { rt.remove(&c.id).await })
                .buffer_unordered(16)
                .collect::<Vec<_>>();
            let end =
                (began + within).max(tokio::time::Instant::now() + Duration::from_millis(500));
            match tokio::time::timeout_at(end, removals).await {
                Ok(_) => tracing::info!(containers = n, "removed the containers left at shutdown"),
                Err(_) => tracing::warn!(
                    containers = n,
                    grace = ?within,
                    "containers were still being removed when the shutdown grace ran out; give executors more time (km scheduler --executor-shutdown-grace-period)"
                ),
            }
        }
        self.exec.wait_acknowledged(Duration::from_secs(2)).await;
    }

    /// Runs the loop until SHUTDOWN, recovery timeout, `stop`, or idleness.
    pub async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<ExecutorEvent>,
        mut reports: mpsc::UnboundedReceiver<Report>,
        mut bound: mpsc::UnboundedReceiver<BoundMsg>,
        suicide_timeout: Option<Duration>,
        stop: CancellationToken,
    ) -> Exit {
        let shutdown_grace = self.exec.env().shutdown_grace_period;
        let mut idle_since = tokio::time::Instant::now();
        loop {
            let idle = async {
                match suicide_timeout {
                    Some(t) if self.busy() == 0 => tokio::time::sleep_until(idle_since + t).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else {
                        self.stop_all(shutdown_grace, &mut reports).await;
                        return Exit::Shutdown("the agent connection ended".into());
                    };
                    match ev {
                        ExecutorEvent::Subscribed(_) => tracing::info!("subscribed to the agent"),
                        ExecutorEvent::Launch(t) => self.launch(*t).await,
                        ExecutorEvent::LaunchGroup(g) => {
                            for t in g.tasks {
                                self.launch(t).await;
                            }
                        }
                        ExecutorEvent::Kill { task_id, kill_policy } => self.kill(&task_id, kill_policy).await,
                        ExecutorEvent::Acknowledged { .. } => {}
                        ExecutorEvent::Message(m) => tracing::info!(bytes = m.len(), "message from the scheduler ignored"),
                        ExecutorEvent::Error(m) => tracing::warn!(message = m, "the agent reported an error"),
                        ExecutorEvent::Disconnected => tracing::warn!("disconnected from the agent; pods keep running while reconnecting"),
                        ExecutorEvent::Shutdown(why) => {
                            tracing::info!(%why, "shutting down");
                            self.stop_all(shutdown_grace, &mut reports).await;
                            return Exit::Shutdown(why.to_string());
                        }
                        ExecutorEvent::RecoveryTimeout => {
                            tracing::warn!("the agent stayed unreachable beyond the recovery timeout: stopping the pods and exiting");
                            self.stop_all(shutdown_grace, &mut reports).await;
                            return Exit::Shutdown("recovery timeout".into());
                        }
                    }
                }
                Some(r) = reports.recv() => self.report(r).await,
                Some(b) = bound.recv() => self.bound(b).await,
                _ = idle => {
                    tracing::info!(timeout = ?suicide_timeout, "idle for the suicide timeout: exiting");
                    self.stop_all(shutdown_grace, &mut reports).await;
                    return Exit::Idle;
                }
                _ = stop.cancelled() => {
                    self.stop_all(shutdown_grace, &mut reports).await;
                    return Exit::Shutdown("stop signal".into());
                }
            }
            if self.busy() > 0 {
                idle_since = tokio::time::Instant::now();
            }
        }
    }

    /// Runs static pods: a mirror pod in the API, the pod on Docker; no Mesos task.
    pub async fn start_static(&mut self, pods: Vec<Pod>) {
        for mut p in pods {
            let base = p.metadata.name.clone().unwrap_or_default();
            let name = format!("{base}-{}", self.host.node_name);
            let ns = p
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            p.metadata.name = Some(name.clone());
            p.metadata.namespace = Some(ns.clone());
            let a = p.metadata.annotations.get_or_insert_with(BTreeMap::new);
            a.insert("kubernetes.io/config.mirror".into(), "km-executor".into());
            a.insert("kubernetes.io/config.source".into(), "file".into());
            a.insert(ann::BINDING_HOST.into(), self.host.node_name.clone());
            if let Some(s) = p.spec.as_mut() {
                s.node_name = Some(self.host.node_name.clone());
            }
            p.metadata.uid = None;
            p.metadata.resource_version = None;
            let api: Api<Pod> = Api::namespaced(self.host.client.clone(), &ns);
            let _ = api
                .delete(
                    &name,
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    },
                )
                .await;
            let mirror = match api.create(&PostParams::default(), &p).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(pod = name, error = %e, "cannot create the mirror pod of a static pod");
                    continue;
                }
            };
            let task_id = format!("static:{ns}/{name}");
            let info = v1::TaskInfo {
                name: name.clone(),
                task_id: v1::TaskId {
                    value: task_id.clone(),
                },
                ..Default::default()
            };
            self.start(info, mirror, true, Binding::Bound, Vec::new());
        }
    }
}

/// The result of a bind, for the manager's loop.
pub struct BoundMsg(Bound);

/// Binds the pod to `node` with the scheduler's annotations (or, when it is
/// already bound there, writes the annotations); returns the pod as bound.
pub async fn bind(client: &kube::Client, pod: Pod, node: &str) -> Result<Pod, String> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let current = api
        .get_opt(&name)
        .await
        .map_err(|e| format!("reading pod {ns}/{name}: {e}"))?
        .ok_or_else(|| format!("pod {ns}/{name} no longer exists"))?;
    if pod.metadata.uid.is_some() && current.metadata.uid != pod.metadata.uid {
        return Err(format!(
            "pod {ns}/{name} was replaced by another pod of the same name"
        ));
    }
    if current.metadata.deletion_timestamp.is_some() {
        return Err(format!("pod {ns}/{name} is being deleted"));
    }
    let ours: BTreeMap<String, String> = pod
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with(ann::PREFIX))
        .collect();
    let bound_to = current
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    if bound_to.is_empty() {
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": ns, "uid": current.metadata.uid, "annotations": ours},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        let _: serde_json::Value = api
            .create_subresource("binding", &name, &PostParams::default(), &binding)
            .await
            .map_err(|e| format!("POST binding of {ns}/{name} to {node}: {e}"))?;
    } else if bound_to != node {
        return Err(format!(
            "pod {ns}/{name} is bound to node {bound_to}, not {node}"
        ));
    } else {
        let patch = json!({"metadata": {"annotations": ours}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| format!("annotating {ns}/{name}: {e}"))?;
    }
    let mut out = pod;
    if let Some(s) = out.spec.as_mut() {
        s.node_name = Some(node.to_string());
    }
    if out.metadata.uid.is_none() {
        out.metadata.uid = current.metadata.uid;
    }
    Ok(out)
}

/// Writes a pod's status through the status subresource, coalesced: only
/// the latest status is written, and nothing when it did not change.
/// Nothing is written before the pod is bound here, nor if it cannot be.
async fn write_status(
    api: Api<Pod>,
    name: String,
    mut rx: watch::Receiver<Option<PodStatus>>,
    mut binding: watch::Receiver<Binding>,
) {
    match binding.wait_for(|b| *b != Binding::Pending).await {
        Ok(b) if *b == Binding::Bound => {}
        _ => return,
    }
    while rx.changed().await.is_ok() {
        let Some(st) = rx.borrow_and_update().clone() else {
            continue;
        };
        let patch = json!({"status": st});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
            Err(e) => {
                tracing::warn!(pod = name, error = %e, "cannot write the pod's status; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                rx.mark_changed();
            }
        }
    }
}

/// The part of a shutdown grace kept for removing the containers of `pods`
/// pods after their own grace: 1 s plus 100 ms a pod (Docker removes about
/// 20 containers a second on a small machine), at most half the grace.
pub fn cleanup_reserve(within: Duration, pods: usize) -> Duration {
    let per_pod =
        Duration::from_millis(100).saturating_mul(u32::try_from(pods).unwrap_or(u32::MAX));
    (Duration::from_secs(1) + per_pod).min(within / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cleanup_reserve_grows_with_the_pods_up_to_half_the_grace() {
        let s = Duration::from_secs;
        assert_eq!(cleanup_reserve(s(30), 0), s(1));
        assert_eq!(cleanup_reserve(s(30), 20), s(3));
        assert_eq!(cleanup_reserve(s(30), 100), s(11));
        assert_eq!(cleanup_reserve(s(30), 1000), s(15));
        assert_eq!(cleanup_reserve(s(5), 100), Duration::from_millis(2500));
        assert_eq!(cleanup_reserve(Duration::ZERO, 3), Duration::ZERO);
    }
}
