//! The agent core: one task owning every executor and task, driven by
//! [`Input`]s (master events, executor API calls, process starts and exits,
//! timers) and by the status-update retry clock. Nothing here blocks for
//! long: fetching and process supervision run in tasks of their own and
//! report back.
//!
//! # Decisions where Mesos leaves room or km differs
//!
//! * `ACKNOWLEDGED` goes to the executor as soon as the agent has taken an
//!   update into its stream (and checkpointed it), as Mesos does (reference
//!   §3.5); the framework's acknowledgement only releases the next update
//!   of that task towards the master.
//! * Shutting an executor down: SHUTDOWN if it is subscribed (SIGTERM to
//!   its process group if not); after the grace period SIGTERM, and
//!   [`TERM_TO_KILL`] later SIGKILL to the group and to everything left in
//!   its cgroup.
//! * EXECUTOR_EXITED is sent for custom executors only: the master never
//!   hears of the command executors the agent makes up (Mesos does the
//!   same).
//! * After a restart the agent waits `--executor-reregistration-timeout`
//!   (Mesos's `executor_reregistration_timeout`, 2 s by default) for
//!   checkpointed executors to SUBSCRIBE again; `--recovery-timeout` is what
//!   the executors themselves are told to wait (`MESOS_RECOVERY_TIMEOUT`).
//!   Executors that do not come back are killed and their tasks become
//!   TASK_GONE (TASK_LOST for frameworks that are not PARTITION_AWARE) with
//!   REASON_EXECUTOR_REREGISTRATION_TIMEOUT.
//! * Tasks of the DEFAULT executor type (task groups without an executor
//!   command) cannot run: there is no default executor binary. They fail
//!   with REASON_CONTAINER_LAUNCH_FAILED.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::cgroups::{CgroupManager, ContainerCgroup, Limits};
use super::checkpoint::{self, ExecutorCheckpoint};
use super::command::{self, CommandTask, KillStep};
use super::env::{self, ExecutorEnv};
use super::executor_api::{self, Reply};
use super::fetch;
use super::master::MasterClient;
use super::process::{self, Signal};
use super::sandbox::Layout;
use super::updates::{Ack, Push, StreamKey, Updates};
use crate::mesos::proto::devcluster::{
    AgentCall, AgentEvent, RunningExecutor, agent_call, agent_event,
};
use crate::mesos::proto::v1::{self, executor};

/// Time between the SIGTERM that ends a shutdown's grace period and SIGKILL.
pub const TERM_TO_KILL: Duration = Duration::from_secs(2);
/// How often adopted processes (not children of this agent) are checked.
pub const ADOPTED_POLL: Duration = Duration::from_millis(250);

/// The agent's fixed configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory layout.
    pub layout: Layout,
    /// Where executors reach the executor API.
    pub endpoint: std::net::SocketAddr,
    /// Hostname, port, resources and attributes (the id is added later).
    pub agent_info: v1::AgentInfo,
    /// `--executor-shutdown-grace-period`.
    pub shutdown_grace: Duration,
    /// `--executor-registration-timeout`.
    pub registration_timeout: Duration,
    /// `--executor-reregistration-timeout`.
    pub reregistration_timeout: Duration,
    /// `--recovery-timeout`.
    pub recovery_timeout: Duration,
    /// The base layer of executor environments.
    pub base_env: Vec<(String, String)>,
}

/// Something for the core to handle.
#[derive(Debug)]
pub enum Input {
    /// The master session wants the REGISTER call to send.
    Register(oneshot::Sender<AgentCall>),
    /// An event from the master.
    Master(Box<AgentEvent>),
    /// The master's event stream ended.
    Disconnected,
    /// An executor process started.
    Launched {
        /// Its container.
        container: String,
        /// Its pid.
        pid: u32,
        /// Its start time.
        start: Option<u64>,
    },
    /// Sandbox, fetch or spawn failed.
    LaunchFailed {
        /// The container.
        container: String,
        /// Why.
        message: String,
    },
    /// An executor (or command task) process ended; the raw wait status if
    /// known.
    Exited {
        /// Its container.
        container: String,
        /// Raw wait status.
        status: Option<i32>,
    },
    /// An executor's event stream was closed by the other side.
    StreamClosed {
        /// Its container.
        container: String,
        /// Which subscription.
        generation: u64,
    },
    /// A timer fired.
    Timer(Timer),
}

/// Timers of the core.
#[derive(Debug, Clone)]
pub enum Timer {
    /// An executor had its time to SUBSCRIBE.
    Registration(String),
    /// A shutdown's grace period is over: SIGTERM.
    ShutdownGrace(String),
    /// SIGKILL whatever is left of the container.
    ForceKill(String),
    /// A command task's kill grace may be over.
    CommandKill(String),
    /// The window for executors to re-subscribe after a restart is over.
    Reregistration,
}

/// Why an executor is being stopped; decides its tasks' final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Termination {
    Shutdown,
    RegistrationTimeout,
    ReregistrationTimeout,
}

/// Where an executor is in its life.
#[derive(Debug)]
enum Phase {
    /// Sandbox, fetch and spawn under way.
    Launching,
    /// Started (or disconnected), waiting for SUBSCRIBE.
    Registering,
    /// Subscribed; a command executor is Running without a stream.
    Running(Option<Sink>),
    /// Adopted after an agent restart, waiting for SUBSCRIBE.
    Recovering,
    /// Being shut down.
    Terminating(Option<Sink>),
    /// The process ended; kept until its tasks' updates are acknowledged.
    Terminated,
}

#[derive(Debug)]
struct Sink {
    tx: mpsc::UnboundedSender<executor::Event>,
    generation: u64,
}

#[derive(Debug)]
enum Kind {
    Custom,
    Command(CommandTask),
}

#[derive(Debug)]
struct Task {
    info: v1::TaskInfo,
    state: v1::TaskState,
    latest: Option<v1::TaskStatus>,
}

#[derive(Debug)]
struct Executor {
    framework_id: String,
    info: v1::ExecutorInfo,
    container_id: String,
    directory: PathBuf,
    checkpoint: bool,
    kind: Kind,
    phase: Phase,
    pid: Option<u32>,
    start_time: Option<u64>,
    tasks: BTreeMap<String, Task>,
    /// LAUNCH (one task) and LAUNCH_GROUP (several) events not yet sent.
    queue: Vec<(bool, Vec<String>)>,
    cgroup: Option<Arc<dyn ContainerCgroup>>,
    ever_subscribed: bool,
    ever_launched: bool,
    termination: Option<Termination>,
    /// KILL events for an executor that is not subscribed (yet, or again
    /// after an agent restart); delivered when it subscribes.
    pending_kills: Vec<executor::Event>,
}

impl Executor {
    fn id(&self) -> &str {
        &self.info.executor_id.value
    }

    fn is_command(&self) -> bool {
        matches!(self.kind, Kind::Command(_))
    }

    fn live_tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values().filter(|t| !is_terminal(t.state))
    }

    fn sink(&self) -> Option<&Sink> {
        match &self.phase {
            Phase::Running(s) | Phase::Terminating(s) => s.as_ref(),
            _ => None,
        }
    }

    fn send(&self, event: executor::Event) -> bool {
        self.sink().is_some_and(|s| s.tx.send(event).is_ok())
    }

    fn limits(&self) -> Limits {
        Limits::for_container(
            &self.info.resources,
            self.live_tasks().map(|t| t.info.resources.as_slice()),
        )
    }

    fn grace(&self, default: Duration) -> Duration {
        self.info
            .shutdown_grace_period
            .and_then(|d| u64::try_from(d.nanoseconds).ok())
            .map_or(default, Duration::from_nanos)
    }

    fn is_queued(&self, task_id: &str) -> bool {
        self.queue
            .iter()
            .any(|(_, ids)| ids.iter().any(|i| i == task_id))
    }
}

/// Whether a task state is terminal.
pub fn is_terminal(s: v1::TaskState) -> bool {
    use v1::TaskState::*;
    matches!(
        s,
        TaskFinished
            | TaskFailed
            | TaskKilled
            | TaskError
            | TaskLost
            | TaskDropped
            | TaskGone
            | TaskGoneByOperator
    )
}

fn state_of(s: &v1::TaskStatus) -> v1::TaskState {
    v1::TaskState::try_from(s.state).unwrap_or(v1::TaskState::TaskStaging)
}

fn has_capability(
    fw: Option<&v1::FrameworkInfo>,
    cap: v1::framework_info::capability::Type,
) -> bool {
    fw.is_some_and(|f| f.capabilities.iter().any(|c| c.r#type == Some(cap as i32)))
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn event(ty: executor::event::Type) -> executor::Event {
    executor::Event {
        r#type: Some(ty as i32),
        ..Default::default()
    }
}

/// The agent core.
pub struct Agent {
    cfg: Arc<Config>,
    agent_id: Option<String>,
    connected: bool,
    recovering: bool,
    stopping: bool,
    /// Stopping for good (SIGUSR1): every executor is shut down, even those
    /// of checkpointing frameworks.
    draining: bool,
    frameworks: HashMap<String, v1::FrameworkInfo>,
    executors: HashMap<String, Executor>,
    updates: Updates,
    cgroups: Arc<dyn CgroupManager>,
    master: MasterClient,
    http: reqwest::Client,
    tx: mpsc::UnboundedSender<Input>,
    next_generation: u64,
}

impl Agent {
    /// A core with the checkpointed agent id, if any.
    pub fn new(
        cfg: Config,
        agent_id: Option<String>,
        cgroups: Arc<dyn CgroupManager>,
        master: MasterClient,
        tx: mpsc::UnboundedSender<Input>,
    ) -> Agent {
        Agent {
            cfg: Arc::new(cfg),
            agent_id,
            connected: false,
            recovering: false,
            stopping: false,
            draining: false,
            frameworks: HashMap::new(),
            executors: HashMap::new(),
            updates: Updates::default(),
            cgroups,
            master,
            http: reqwest::Client::new(),
            tx,
            next_generation: 0,
        }
    }

    /// Whether executors are still waiting to re-subscribe after a restart.
    pub fn is_recovering(&self) -> bool {
        self.recovering
    }

    // ----- recovery -------------------------------------------------------

    /// Takes up the checkpointed executors: live ones wait for SUBSCRIBE (or
    /// are watched, for command tasks), dead ones are treated as ended, and
    /// cgroups under the root that belong to no executor are emptied and
    /// removed.
    pub fn recover(&mut self, checkpoints: Vec<ExecutorCheckpoint>) {
        let now = Instant::now();
        let mut dead = Vec::new();
        for cp in checkpoints {
            let Some(fw_id) = cp.framework.id.as_ref().map(|i| i.value.clone()) else {
                tracing::warn!(container = %cp.container_id, "checkpoint without a framework id; ignored");
                continue;
            };
            self.frameworks
                .entry(fw_id.clone())
                .or_insert_with(|| cp.framework.clone());
            let latest: HashMap<&str, &v1::TaskStatus> = cp
                .statuses
                .iter()
                .map(|s| (s.task_id.value.as_str(), s))
                .collect();
            let tasks = cp
                .tasks
                .iter()
                .map(|t| {
                    let latest = latest.get(t.task_id.value.as_str()).map(|s| (*s).clone());
                    let state = latest.as_ref().map_or(v1::TaskState::TaskStaging, state_of);
                    (
                        t.task_id.value.clone(),
                        Task {
                            info: t.clone(),
                            state,
                            latest,
                        },
                    )
                })
                .collect();
            for u in &cp.updates {
                let _ = self.updates.push(StreamKey::of(&fw_id, u), u.clone(), now);
            }
            let alive = !cp.terminated
                && cp
                    .pid
                    .is_some_and(|pid| process::is_running(pid, cp.pid_start_time));
            let kind = if cp.command_task {
                Kind::Command(CommandTask::Running)
            } else {
                Kind::Custom
            };
            let phase = match (&kind, alive, cp.terminated) {
                (_, _, true) => Phase::Terminated,
                (Kind::Command(_), true, _) => Phase::Running(None),
                (Kind::Custom, true, _) => Phase::Recovering,
                (_, false, _) => Phase::Launching,
            };
            let mut exec = Executor {
                framework_id: fw_id,
                info: cp.executor.clone(),
                container_id: cp.container_id.clone(),
                directory: cp.directory.clone(),
                checkpoint: true,
                kind,
                phase,
                pid: cp.pid,
                start_time: cp.pid_start_time,
                tasks,
                queue: Vec::new(),
                cgroup: None,
                ever_subscribed: true,
                ever_launched: true,
                termination: None,
                pending_kills: Vec::new(),
            };
            if !cp.terminated {
                match self.cgroups.open(&exec.container_id) {
                    Ok(cg) => exec.cgroup = Some(Arc::from(cg)),
                    Err(e) => tracing::warn!(error = %e, "cannot adopt the executor's cgroup"),
                }
            }
            if alive {
                if let Some(pid) = exec.pid {
                    watch_adopted(
                        pid,
                        exec.start_time,
                        exec.container_id.clone(),
                        self.tx.clone(),
                    );
                }
                tracing::info!(
                    container = %exec.container_id,
                    executor = %exec.id(),
                    pid = ?exec.pid,
                    "recovered a running executor"
                );
                if matches!(exec.phase, Phase::Recovering) {
                    self.recovering = true;
                }
            } else if !cp.terminated {
                dead.push(exec.container_id.clone());
            }
            self.executors.insert(exec.container_id.clone(), exec);
        }
        for container in dead {
            tracing::info!(container = %container, "checkpointed executor ended while the agent was down");
            self.exited(&container, None);
        }
        let terminated: Vec<String> = self.executors.keys().cloned().collect();
        for c in terminated {
            self.maybe_remove(&c);
        }
        for orphan in self.cgroups.containers() {
            if self.executors.contains_key(&orphan) {
                continue;
            }
            match self.cgroups.open(&orphan) {
                Ok(cg) => {
                    let pids = cg.processes();
                    tracing::info!(container = %orphan, processes = pids.len(), "destroying an orphaned container");
                    destroy_cgroup(Arc::from(cg));
                }
                Err(e) => {
                    tracing::warn!(container = %orphan, error = %e, "cannot open an orphaned cgroup")
                }
            }
        }
        if self.recovering {
            self.after(self.cfg.reregistration_timeout, Timer::Reregistration);
        }
    }

    // ----- the loop --------------------------------------------------------

    /// Runs until `stop` fires and every executor that must not outlive the
    /// agent has ended (or was killed when its grace ran out). When `drain`
    /// fires instead, every executor is shut down, as a Mesos agent does on
    /// SIGUSR1.
    pub async fn run(
        mut self,
        mut inputs: mpsc::UnboundedReceiver<Input>,
        mut calls: mpsc::UnboundedReceiver<executor_api::Request>,
        stop: tokio_util::sync::CancellationToken,
        drain: tokio_util::sync::CancellationToken,
    ) {
        let mut stop_deadline: Option<Instant> = None;
        loop {
            let retry_at = self
                .updates
                .deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let stop_at =
                stop_deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = stop.cancelled(), if stop_deadline.is_none() => {
                    stop_deadline = Some(self.begin_stop());
                }
                _ = drain.cancelled(), if stop_deadline.is_none() => {
                    tracing::info!("draining: shutting down every executor");
                    self.draining = true;
                    stop_deadline = Some(self.begin_stop());
                }
                Some(input) = inputs.recv() => self.handle(input),
                Some(req) = calls.recv() => {
                    let reply = self.executor_call(req.call);
                    let _ = req.reply.send(reply);
                }
                _ = tokio::time::sleep_until(retry_at) => self.retry_due(),
                _ = tokio::time::sleep_until(stop_at), if stop_deadline.is_some() => {
                    self.force_kill_remaining();
                    break;
                }
            }
            if stop_deadline.is_some() && self.stop_complete() {
                break;
            }
        }
        tracing::info!("agent core stopped");
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Register(reply) => {
                let _ = reply.send(self.register_call());
            }
            Input::Master(ev) => self.master_event(*ev),
            Input::Disconnected => {
                if self.connected {
                    tracing::warn!("disconnected from the master");
                }
                self.connected = false;
            }
            Input::Launched {
                container,
                pid,
                start,
            } => self.launched(&container, pid, start),
            Input::LaunchFailed { container, message } => self.launch_failed(&container, &message),
            Input::Exited { container, status } => self.exited(&container, status),
            Input::StreamClosed {
                container,
                generation,
            } => self.stream_closed(&container, generation),
            Input::Timer(t) => self.timer(t),
        }
    }

    fn after(&self, delay: Duration, timer: Timer) {
        let tx = self.tx.clone();
        tokio::spawn(
            async move {
                tokio::time::sleep(delay).await;
                let _ = tx.send(Input::Timer(timer));
            }
            .in_current_span(),
        );
    }

    // ----- the master -------------------------------------------------------

    fn register_call(&self) -> AgentCall {
        let mut info = self.cfg.agent_info.clone();
        info.id = self.agent_id.clone().map(|value| v1::AgentId { value });
        let executors = self
            .executors
            .values()
            .filter(|e| !matches!(e.phase, Phase::Terminated) || !e.tasks.is_empty())
            .filter_map(|e| {
                Some(RunningExecutor {
                    framework: self.frameworks.get(&e.framework_id)?.clone(),
                    executor: e.info.clone(),
                    tasks: e.tasks.values().map(|t| t.info.clone()).collect(),
                    statuses: e.tasks.values().filter_map(|t| t.latest.clone()).collect(),
                })
            })
            .collect();
        AgentCall {
            r#type: Some(agent_call::Type::Register as i32),
            agent_id: info.id.clone(),
            register: Some(agent_call::Register {
                agent_info: info,
                executors,
            }),
            ..Default::default()
        }
    }

    fn post(&self, call: AgentCall) {
        let (Some(agent_id), true) = (self.agent_id.clone(), self.connected) else {
            return;
        };
        let client = self.master.clone();
        tokio::spawn(
            async move {
                if let Err(e) = client.call(&agent_id, &call).await {
                    tracing::debug!(error = %e, "call to the master failed");
                }
            }
            .in_current_span(),
        );
    }

    fn agent_call(&self, ty: agent_call::Type) -> AgentCall {
        AgentCall {
            r#type: Some(ty as i32),
            agent_id: self.agent_id.clone().map(|value| v1::AgentId { value }),
            ..Default::default()
        }
    }

    fn forward(&self, framework_id: &str, status: v1::TaskStatus) {
        tracing::debug!(
            framework = framework_id,
            task = %status.task_id.value,
            state = state_of(&status).as_str_name(),
            "forwarding a status update"
        );
        let latest_state = self
            .updates
            .latest_state(&StreamKey::of(framework_id, &status));
        self.post(AgentCall {
            update: Some(agent_call::Update {
                framework_id: v1::FrameworkId {
                    value: framework_id.to_owned(),
                },
                status,
                latest_state,
            }),
            ..self.agent_call(agent_call::Type::Update)
        });
    }

    fn master_event(&mut self, ev: AgentEvent) {
        use agent_event::Type;
        let ty = ev.r#type.and_then(|t| Type::try_from(t).ok());
        match ty {
            Some(Type::Registered) => {
                let Some(r) = ev.registered else { return };
                self.registered(r.agent_id.value);
            }
            Some(Type::RunTask) => {
                if let Some(r) = ev.run_task {
                    self.run_task(r.framework, r.task);
                }
            }
            Some(Type::RunTaskGroup) => {
                if let Some(r) = ev.run_task_group {
                    self.run_task_group(r.framework, r.executor, r.task_group);
                }
            }
            Some(Type::KillTask) => {
                if let Some(k) = ev.kill_task {
                    self.kill_task(&k.framework_id.value, &k.task_id.value, k.kill_policy);
                }
            }
            Some(Type::ShutdownExecutor) => {
                if let Some(s) = ev.shutdown_executor
                    && let Some(c) = self.find_executor(&s.framework_id.value, &s.executor_id.value)
                {
                    self.shutdown(&c, Termination::Shutdown);
                }
            }
            Some(Type::ShutdownFramework) => {
                if let Some(s) = ev.shutdown_framework {
                    self.shutdown_framework(&s.framework_id.value);
                }
            }
            Some(Type::Acknowledge) => {
                if let Some(a) = ev.acknowledge {
                    self.acknowledge(&a.framework_id.value, &a.task_id.value, &a.uuid);
                }
            }
            Some(Type::Message) => {
                if let Some(m) = ev.message
                    && let Some(c) = self.find_executor(&m.framework_id.value, &m.executor_id.value)
                {
                    let e = executor::Event {
                        message: Some(executor::event::Message { data: m.data }),
                        ..event(executor::event::Type::Message)
                    };
                    if !self.executors[&c].send(e) {
                        tracing::warn!(container = %c, "dropping a framework message: the executor is not subscribed");
                    }
                }
            }
            Some(Type::UpdateFramework) => {
                if let Some(u) = ev.update_framework {
                    let fw = u.framework_id.value;
                    for (_, status) in self.updates.resend_framework(&fw, Instant::now()) {
                        self.forward(&fw, status);
                    }
                }
            }
            Some(Type::Heartbeat) => {}
            Some(Type::Error) => {
                let message = ev.error.map(|e| e.message).unwrap_or_default();
                tracing::error!(message = %message, "the master reports an error");
            }
            Some(Type::Unknown) | None => {
                tracing::warn!(r#type = ?ev.r#type, "ignoring an unknown master event");
            }
        }
    }

    fn registered(&mut self, agent_id: String) {
        match &self.agent_id {
            Some(old) if *old != agent_id => tracing::warn!(
                old = %old,
                new = %agent_id,
                "the master gave this agent a new id; running executors keep their sandboxes"
            ),
            _ => {}
        }
        tracing::info!(agent_id = %agent_id, "registered with the master");
        if let Err(e) = checkpoint::save_agent_id(&self.cfg.layout, &agent_id) {
            tracing::error!(error = %e, "cannot checkpoint the agent id");
        }
        self.agent_id = Some(agent_id);
        self.connected = true;
        for (key, status) in self.updates.resend_all(Instant::now()) {
            self.forward(&key.framework_id, status);
        }
        // Executors kept only for their unacknowledged updates are listed in
        // the registration with their tasks; tell the master they are gone,
        // so that it offers no executor that does not run.
        let ended: Vec<(String, v1::ExecutorId)> = self
            .executors
            .values()
            .filter(|e| matches!(e.phase, Phase::Terminated))
            .map(|e| (e.framework_id.clone(), e.info.executor_id.clone()))
            .collect();
        for (framework_id, executor_id) in ended {
            self.executor_exited(&framework_id, executor_id, None);
        }
    }

    fn retry_due(&mut self) {
        for (key, status) in self.updates.due(Instant::now()) {
            self.forward(&key.framework_id, status);
        }
    }

    // ----- status updates --------------------------------------------------

    fn new_status(
        &self,
        task_id: &str,
        executor_id: Option<&str>,
        state: v1::TaskState,
        source: v1::task_status::Source,
        reason: Option<v1::task_status::Reason>,
        message: impl Into<String>,
    ) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: v1::TaskId {
                value: task_id.to_owned(),
            },
            state: state as i32,
            message: Some(message.into()),
            source: Some(source as i32),
            reason: reason.map(|r| r as i32),
            agent_id: self.agent_id.clone().map(|value| v1::AgentId { value }),
            executor_id: executor_id.map(|e| v1::ExecutorId {
                value: e.to_owned(),
            }),
            timestamp: Some(now_secs()),
            uuid: Some(uuid::Uuid::new_v4().as_bytes().to_vec()),
            ..Default::default()
        }
    }

    /// Takes an update into its task's stream (sending it if the stream
    /// was idle) and records the task's new state. False for a duplicate.
    fn status_update(
        &mut self,
        framework_id: &str,
        mut status: v1::TaskStatus,
        container: Option<&str>,
    ) -> bool {
        if status.agent_id.is_none() {
            status.agent_id = self.agent_id.clone().map(|value| v1::AgentId { value });
        }
        if status.timestamp.is_none() {
            status.timestamp = Some(now_secs());
        }
        if status.executor_id.is_none()
            && let Some(e) = container.and_then(|c| self.executors.get(c))
        {
            status.executor_id = Some(e.info.executor_id.clone());
        }
        let key = StreamKey::of(framework_id, &status);
        let pushed = self.updates.push(key, status.clone(), Instant::now());
        if pushed == Push::Duplicate {
            return false;
        }
        tracing::info!(
            framework = framework_id,
            task = %status.task_id.value,
            state = state_of(&status).as_str_name(),
            source = ?status.source.and_then(|s| v1::task_status::Source::try_from(s).ok()),
            "status update"
        );
        if let Some(c) = container {
            self.record_task_state(c, &status);
        }
        if let Push::Send(s) = pushed {
            self.forward(framework_id, *s);
        }
        if let Some(c) = container {
            self.checkpoint(c);
        }
        true
    }

    fn record_task_state(&mut self, container: &str, status: &v1::TaskStatus) {
        let Some(exec) = self.executors.get_mut(container) else {
            return;
        };
        let Some(task) = exec.tasks.get_mut(&status.task_id.value) else {
            return;
        };
        let was_live = !is_terminal(task.state);
        task.state = state_of(status);
        task.latest = Some(status.clone());
        if was_live && is_terminal(task.state) {
            self.refresh_limits(container);
        }
    }

    /// Reports tasks the agent will not run as lost (or gone, for a
    /// partition-aware framework).
    fn refuse_tasks(
        &mut self,
        container: Option<&str>,
        framework_id: &str,
        tasks: &[v1::TaskInfo],
        reason: v1::task_status::Reason,
        message: &str,
    ) {
        let state = self.lost_state(framework_id, false);
        for t in tasks {
            self.agent_update(
                container,
                framework_id,
                &t.task_id.value,
                state,
                reason,
                message,
            );
        }
    }

    fn agent_update(
        &mut self,
        container: Option<&str>,
        framework_id: &str,
        task_id: &str,
        state: v1::TaskState,
        reason: v1::task_status::Reason,
        message: &str,
    ) {
        let executor_id = container
            .and_then(|c| self.executors.get(c))
            .map(|e| e.id().to_owned());
        let status = self.new_status(
            task_id,
            executor_id.as_deref(),
            state,
            v1::task_status::Source::Agent,
            Some(reason),
            message,
        );
        self.status_update(framework_id, status, container);
    }

    /// TASK_LOST, or TASK_DROPPED / TASK_GONE for PARTITION_AWARE frameworks.
    fn lost_state(&self, framework_id: &str, gone: bool) -> v1::TaskState {
        use v1::framework_info::capability::Type;
        if has_capability(self.frameworks.get(framework_id), Type::PartitionAware) {
            if gone {
                v1::TaskState::TaskGone
            } else {
                v1::TaskState::TaskDropped
            }
        } else {
            v1::TaskState::TaskLost
        }
    }

    fn acknowledge(&mut self, framework_id: &str, task_id: &str, uuid: &[u8]) {
        let key = StreamKey {
            framework_id: framework_id.to_owned(),
            task_id: task_id.to_owned(),
        };
        match self.updates.ack(&key, uuid, Instant::now()) {
            Ack::Ignored => {
                tracing::debug!(
                    framework = framework_id,
                    task = task_id,
                    "ignoring an unexpected acknowledgement"
                );
            }
            Ack::Acked { acked, next } => {
                let container = self.find_task(framework_id, task_id);
                if is_terminal(state_of(&acked))
                    && next.is_none()
                    && let Some(c) = &container
                    && let Some(e) = self.executors.get_mut(c)
                {
                    e.tasks.remove(task_id);
                }
                if let Some(next) = next {
                    self.forward(framework_id, *next);
                }
                if let Some(c) = container {
                    self.checkpoint(&c);
                    self.maybe_remove(&c);
                }
            }
        }
    }

    // ----- lookups ---------------------------------------------------------

    fn find_executor(&self, framework_id: &str, executor_id: &str) -> Option<String> {
        self.executors
            .values()
            .filter(|e| e.framework_id == framework_id && e.id() == executor_id)
            .min_by_key(|e| matches!(e.phase, Phase::Terminated))
            .map(|e| e.container_id.clone())
    }

    fn find_active_executor(&self, framework_id: &str, executor_id: &str) -> Option<String> {
        self.find_executor(framework_id, executor_id)
            .filter(|c| !matches!(self.executors[c].phase, Phase::Terminated))
    }

    fn find_task(&self, framework_id: &str, task_id: &str) -> Option<String> {
        self.executors
            .values()
            .filter(|e| e.framework_id == framework_id && e.tasks.contains_key(task_id))
            .min_by_key(|e| matches!(e.phase, Phase::Terminated))
            .map(|e| e.container_id.clone())
    }

    // ----- launching -------------------------------------------------------

    fn run_task(&mut self, framework: v1::FrameworkInfo, task: v1::TaskInfo) {
        let Some(fw_id) = framework.id.as_ref().map(|i| i.value.clone()) else {
            tracing::warn!(task = %task.task_id.value, "RUN_TASK without a framework id; ignored");
            return;
        };
        self.frameworks.insert(fw_id.clone(), framework.clone());
        let task_id = task.task_id.value.clone();
        if self.stopping {
            let state = self.lost_state(&fw_id, false);
            self.agent_update(
                None,
                &fw_id,
                &task_id,
                state,
                v1::task_status::Reason::AgentRestarted,
                "The agent is stopping",
            );
            return;
        }
        match (task.executor.clone(), task.command.is_some()) {
            (Some(mut exec), _) => {
                exec.framework_id = framework.id.clone();
                self.add_tasks(&framework, exec, vec![task], false);
            }
            (None, true) => {
                if self.find_task(&fw_id, &task_id).is_some() {
                    self.agent_update(
                        None,
                        &fw_id,
                        &task_id,
                        v1::TaskState::TaskFailed,
                        v1::task_status::Reason::TaskInvalid,
                        "A task with this id already runs on this agent",
                    );
                    return;
                }
                let info = command::executor_info(&task, &v1::FrameworkId { value: fw_id });
                self.launch_executor(
                    &framework,
                    info,
                    Kind::Command(CommandTask::Starting),
                    vec![task],
                    false,
                );
            }
            (None, false) => {
                self.agent_update(
                    None,
                    &fw_id,
                    &task_id,
                    v1::TaskState::TaskFailed,
                    v1::task_status::Reason::TaskInvalid,
                    "Task has neither an executor nor a command",
                );
            }
        }
    }

    fn run_task_group(
        &mut self,
        framework: v1::FrameworkInfo,
        mut exec: v1::ExecutorInfo,
        group: v1::TaskGroupInfo,
    ) {
        let Some(fw_id) = framework.id.as_ref().map(|i| i.value.clone()) else {
            return;
        };
        self.frameworks.insert(fw_id.clone(), framework.clone());
        if self.stopping {
            self.refuse_tasks(
                None,
                &fw_id,
                &group.tasks,
                v1::task_status::Reason::AgentRestarted,
                "The agent is stopping",
            );
            return;
        }
        exec.framework_id = framework.id.clone();
        self.add_tasks(&framework, exec, group.tasks, true);
    }

    /// Gives tasks to a custom executor: to a subscribed one at once, else
    /// queued until it subscribes; a new executor is launched.
    fn add_tasks(
        &mut self,
        framework: &v1::FrameworkInfo,
        exec: v1::ExecutorInfo,
        tasks: Vec<v1::TaskInfo>,
        group: bool,
    ) {
        let fw_id = framework
            .id
            .as_ref()
            .map(|i| i.value.clone())
            .unwrap_or_default();
        let Some(c) = self.find_active_executor(&fw_id, &exec.executor_id.value) else {
            self.launch_executor(framework, exec, Kind::Custom, tasks, group);
            return;
        };
        if matches!(self.executors[&c].phase, Phase::Terminating(_)) {
            self.refuse_tasks(
                Some(&c),
                &fw_id,
                &tasks,
                v1::task_status::Reason::ExecutorTerminated,
                "Executor is terminating",
            );
            return;
        }
        let ids: Vec<String> = tasks.iter().map(|t| t.task_id.value.clone()).collect();
        let Some(e) = self.executors.get_mut(&c) else {
            return;
        };
        for t in tasks {
            e.tasks.insert(
                t.task_id.value.clone(),
                Task {
                    info: t,
                    state: v1::TaskState::TaskStaging,
                    latest: None,
                },
            );
        }
        e.queue.push((group, ids));
        self.refresh_limits(&c);
        if matches!(self.executors[&c].phase, Phase::Running(Some(_))) {
            self.flush_queue(&c);
        }
        self.checkpoint(&c);
    }

    /// Sends the queued LAUNCH / LAUNCH_GROUP events.
    fn flush_queue(&mut self, container: &str) {
        let Some(e) = self.executors.get_mut(container) else {
            return;
        };
        let queue = std::mem::take(&mut e.queue);
        for (group, ids) in queue {
            let tasks: Vec<v1::TaskInfo> = ids
                .iter()
                .filter_map(|id| e.tasks.get(id))
                .filter(|t| !is_terminal(t.state))
                .map(|t| t.info.clone())
                .collect();
            if tasks.is_empty() {
                continue;
            }
            let ev = if group {
                executor::Event {
                    launch_group: Some(executor::event::LaunchGroup {
                        task_group: v1::TaskGroupInfo { tasks },
                    }),
                    ..event(executor::event::Type::LaunchGroup)
                }
            } else {
                let Some(task) = tasks.into_iter().next() else {
                    continue;
                };
                executor::Event {
                    launch: Some(executor::event::Launch { task }),
                    ..event(executor::event::Type::Launch)
                }
            };
            e.ever_launched = true;
            e.send(ev);
        }
    }

    fn refresh_limits(&self, container: &str) {
        let Some(e) = self.executors.get(container) else {
            return;
        };
        let Some(cg) = &e.cgroup else { return };
        let limits = e.limits();
        match cg.update(&limits) {
            Ok(()) => tracing::debug!(
                container,
                cpu_shares = limits.cpu_shares,
                memory_bytes = limits.memory_bytes,
                "cgroup limits updated"
            ),
            Err(err) => {
                tracing::warn!(container, error = %err, "cannot update cgroup limits; keeping the old ones")
            }
        }
    }

    fn launch_executor(
        &mut self,
        framework: &v1::FrameworkInfo,
        info: v1::ExecutorInfo,
        kind: Kind,
        tasks: Vec<v1::TaskInfo>,
        group: bool,
    ) {
        let fw_id = framework
            .id
            .as_ref()
            .map(|i| i.value.clone())
            .unwrap_or_default();
        let container_id = uuid::Uuid::new_v4().to_string();
        let agent_id = self.agent_id.clone().unwrap_or_default();
        let ids: Vec<String> = tasks.iter().map(|t| t.task_id.value.clone()).collect();
        let command_task = matches!(kind, Kind::Command(_));
        let mut exec = Executor {
            framework_id: fw_id.clone(),
            info,
            container_id: container_id.clone(),
            directory: PathBuf::new(),
            checkpoint: framework.checkpoint == Some(true),
            kind,
            phase: Phase::Launching,
            pid: None,
            start_time: None,
            tasks: tasks
                .into_iter()
                .map(|t| {
                    (
                        t.task_id.value.clone(),
                        Task {
                            info: t,
                            state: v1::TaskState::TaskStaging,
                            latest: None,
                        },
                    )
                })
                .collect(),
            queue: if command_task {
                Vec::new()
            } else {
                vec![(group, ids)]
            },
            cgroup: None,
            ever_subscribed: false,
            ever_launched: command_task,
            termination: None,
            pending_kills: Vec::new(),
        };
        let directory = self
            .cfg
            .layout
            .sandbox(&agent_id, &fw_id, exec.id(), &container_id);
        let command = match &exec.kind {
            Kind::Command(_) => exec
                .tasks
                .values()
                .next()
                .and_then(|t| t.info.command.clone()),
            Kind::Custom => exec.info.command.clone(),
        };
        let problem = match (&directory, &command) {
            (Err(e), _) => Some(e.to_string()),
            (_, None) => Some(
                "the executor has no command (DEFAULT executors are not supported by km dev-agent)"
                    .to_owned(),
            ),
            _ => None,
        };
        exec.directory = directory.clone().unwrap_or_default();
        tracing::info!(
            framework = %fw_id,
            executor = %exec.id(),
            container = %container_id,
            command_task,
            "launching an executor"
        );
        let limits = exec.limits();
        match self.cgroups.create(&container_id, &limits) {
            Ok(cg) => exec.cgroup = Some(Arc::from(cg)),
            Err(e) => {
                tracing::warn!(container = %container_id, error = %e, "cannot create the executor's cgroup; it runs unlimited")
            }
        }
        let env = ExecutorEnv {
            framework_id: &fw_id,
            executor_id: exec.id(),
            agent_id: &agent_id,
            directory: &exec.directory,
            endpoint: self.cfg.endpoint,
            checkpoint: exec.checkpoint,
            http_command_executor: false,
            shutdown_grace_period: exec.grace(self.cfg.shutdown_grace),
            recovery_timeout: self.cfg.recovery_timeout,
            subscription_backoff_max: self.cfg.reregistration_timeout,
            base: &self.cfg.base_env,
            command: command.as_ref(),
        };
        let env = env::build(&env);
        let cgroup = exec.cgroup.clone();
        let dir = exec.directory.clone();
        self.executors.insert(container_id.clone(), exec);
        self.checkpoint(&container_id);
        if let Some(problem) = problem {
            self.launch_failed(&container_id, &problem);
            return;
        }
        let Some(command) = command else { return };
        let tx = self.tx.clone();
        let http = self.http.clone();
        tokio::spawn(launch(container_id, dir, command, env, cgroup, http, tx).in_current_span());
    }

    fn launched(&mut self, container: &str, pid: u32, start: Option<u64>) {
        let Some(e) = self.executors.get_mut(container) else {
            process::signal_group(pid, Signal::Kill);
            return;
        };
        e.pid = Some(pid);
        e.start_time = start;
        tracing::info!(container, executor = %e.id(), pid, "executor process started");
        match (&e.phase, &mut e.kind) {
            (Phase::Terminating(_), _) => {
                // Shut down (or killed) while launching.
                process::signal_group(pid, Signal::Kill);
            }
            (_, Kind::Command(state)) => {
                *state = CommandTask::Running;
                e.phase = Phase::Running(None);
                let fw = e.framework_id.clone();
                let exec_id = e.id().to_owned();
                let tasks: Vec<String> = e
                    .live_tasks()
                    .map(|t| t.info.task_id.value.clone())
                    .collect();
                for t in tasks {
                    for state in [v1::TaskState::TaskStarting, v1::TaskState::TaskRunning] {
                        let s = self.new_status(
                            &t,
                            Some(&exec_id),
                            state,
                            v1::task_status::Source::Executor,
                            None,
                            "",
                        );
                        let s = v1::TaskStatus { message: None, ..s };
                        self.status_update(&fw, s, Some(container));
                    }
                }
            }
            (_, Kind::Custom) => {
                // The executor may have subscribed before this message was
                // handled; then it is already Running and stays so.
                if matches!(e.phase, Phase::Launching) {
                    e.phase = Phase::Registering;
                    self.after(
                        self.cfg.registration_timeout,
                        Timer::Registration(container.to_owned()),
                    );
                }
            }
        }
        self.checkpoint(container);
    }

    fn launch_failed(&mut self, container: &str, message: &str) {
        let Some(e) = self.executors.get(container) else {
            return;
        };
        tracing::warn!(container, executor = %e.id(), error = message, "executor launch failed");
        let fw = e.framework_id.clone();
        let tasks: Vec<String> = e
            .live_tasks()
            .map(|t| t.info.task_id.value.clone())
            .collect();
        let custom = !e.is_command();
        let exec_id = e.info.executor_id.clone();
        for t in tasks {
            self.agent_update(
                Some(container),
                &fw,
                &t,
                v1::TaskState::TaskFailed,
                v1::task_status::Reason::ContainerLaunchFailed,
                &format!("Failed to launch container: {message}"),
            );
        }
        self.end_container(container);
        if custom {
            self.executor_exited(&fw, exec_id, None);
        }
        self.checkpoint(container);
        self.maybe_remove(container);
    }

    fn executor_exited(
        &self,
        framework_id: &str,
        executor_id: v1::ExecutorId,
        status: Option<i32>,
    ) {
        self.post(AgentCall {
            executor_exited: Some(agent_call::ExecutorExited {
                framework_id: v1::FrameworkId {
                    value: framework_id.to_owned(),
                },
                executor_id,
                status,
            }),
            ..self.agent_call(agent_call::Type::ExecutorExited)
        });
    }

    // ----- killing ---------------------------------------------------------

    fn kill_task(&mut self, framework_id: &str, task_id: &str, policy: Option<v1::KillPolicy>) {
        let container = self
            .find_task(framework_id, task_id)
            .filter(|c| !matches!(self.executors[c].phase, Phase::Terminated));
        let Some(c) = container else {
            let state = self.lost_state(framework_id, false);
            self.agent_update(
                None,
                framework_id,
                task_id,
                state,
                v1::task_status::Reason::ExecutorTerminated,
                "Cannot find executor",
            );
            return;
        };
        let e = &self.executors[&c];
        if e.tasks.get(task_id).is_some_and(|t| is_terminal(t.state)) {
            return;
        }
        tracing::info!(framework = framework_id, task = task_id, container = %c, "killing a task");
        if e.is_command() {
            let task_policy = e.tasks.get(task_id).and_then(|t| t.info.kill_policy);
            let grace = command::kill_grace(policy.as_ref(), task_policy.as_ref());
            self.command_kill(&c, grace);
            return;
        }
        if e.is_queued(task_id) {
            self.kill_queued(&c, task_id);
            return;
        }
        if matches!(e.phase, Phase::Terminating(_)) {
            return;
        }
        let ev = executor::Event {
            kill: Some(executor::event::Kill {
                task_id: v1::TaskId {
                    value: task_id.to_owned(),
                },
                kill_policy: policy,
            }),
            ..event(executor::event::Type::Kill)
        };
        if !e.send(ev.clone()) {
            tracing::info!(task = task_id, container = %c, "executor not subscribed; KILL delivered when it subscribes");
            if let Some(e) = self.executors.get_mut(&c) {
                e.pending_kills.push(ev);
            }
        }
    }

    /// A task killed before its executor got it (a whole group with it).
    fn kill_queued(&mut self, container: &str, task_id: &str) {
        let Some(e) = self.executors.get_mut(container) else {
            return;
        };
        let Some(pos) = e
            .queue
            .iter()
            .position(|(_, ids)| ids.iter().any(|i| i == task_id))
        else {
            return;
        };
        let (_, ids) = e.queue.remove(pos);
        let fw = e.framework_id.clone();
        for id in ids {
            self.agent_update(
                Some(container),
                &fw,
                &id,
                v1::TaskState::TaskKilled,
                v1::task_status::Reason::TaskKilledDuringLaunch,
                "Killed before delivery to the executor",
            );
        }
        let e = &self.executors[container];
        if !e.ever_launched && e.live_tasks().next().is_none() {
            // Nothing was ever sent and nothing is left: the executor is
            // of no use (MESOS-8411).
            self.shutdown(container, Termination::Shutdown);
        }
    }

    fn command_kill(&mut self, container: &str, grace: Duration) {
        let Some(e) = self.executors.get_mut(container) else {
            return;
        };
        let Kind::Command(state) = &mut e.kind else {
            return;
        };
        let (step, next) = state.kill(grace, Instant::now());
        *state = next;
        let fw = e.framework_id.clone();
        let pid = e.pid;
        let exec_id = e.id().to_owned();
        match step {
            KillStep::Deferred => {
                // The task id is the executor id of a command executor.
                e.phase = Phase::Terminating(None);
                self.agent_update(
                    Some(container),
                    &fw,
                    &exec_id,
                    v1::TaskState::TaskKilled,
                    v1::task_status::Reason::TaskKilledDuringLaunch,
                    "Killed before the command started",
                );
            }
            KillStep::Terminate { kill_at } => {
                use v1::framework_info::capability::Type;
                if has_capability(self.frameworks.get(&fw), Type::TaskKillingState) {
                    let s = self.new_status(
                        &exec_id,
                        Some(&exec_id),
                        v1::TaskState::TaskKilling,
                        v1::task_status::Source::Executor,
                        None,
                        "",
                    );
                    self.status_update(&fw, v1::TaskStatus { message: None, ..s }, Some(container));
                }
                if let Some(pid) = pid {
                    process::signal_group(pid, Signal::Term);
                }
                self.after(
                    kill_at.saturating_duration_since(Instant::now()),
                    Timer::CommandKill(container.to_owned()),
                );
            }
            KillStep::Sooner { kill_at } => {
                self.after(
                    kill_at.saturating_duration_since(Instant::now()),
                    Timer::CommandKill(container.to_owned()),
                );
            }
            KillStep::Nothing => {}
        }
    }

    /// Starts shutting an executor down.
    fn shutdown(&mut self, container: &str, why: Termination) {
        let grace = match self.executors.get(container) {
            Some(e) => e.grace(self.cfg.shutdown_grace),
            None => return,
        };
        if self.executors[container].is_command() {
            if let Some(e) = self.executors.get_mut(container) {
                e.termination.get_or_insert(why);
            }
            self.command_kill(container, grace);
            if let Some(e) = self.executors.get_mut(container)
                && !matches!(e.phase, Phase::Terminated)
            {
                let sink = take_sink(&mut e.phase);
                e.phase = Phase::Terminating(sink);
            }
            return;
        }
        let Some(e) = self.executors.get_mut(container) else {
            return;
        };
        e.termination.get_or_insert(why);
        tracing::info!(container, executor = %e.id(), reason = ?why, "shutting an executor down");
        match std::mem::replace(&mut e.phase, Phase::Terminated) {
            Phase::Launching => e.phase = Phase::Terminating(None),
            Phase::Registering | Phase::Recovering => {
                if let Some(pid) = e.pid {
                    process::signal_group(pid, Signal::Term);
                }
                e.phase = Phase::Terminating(None);
                self.after(grace, Timer::ShutdownGrace(container.to_owned()));
            }
            Phase::Running(sink) => {
                e.phase = Phase::Terminating(sink);
                if !e.send(event(executor::event::Type::Shutdown))
                    && let Some(pid) = e.pid
                {
                    process::signal_group(pid, Signal::Term);
                }
                self.after(grace, Timer::ShutdownGrace(container.to_owned()));
            }
            other @ (Phase::Terminating(_) | Phase::Terminated) => e.phase = other,
        }
    }

    fn shutdown_framework(&mut self, framework_id: &str) {
        tracing::info!(framework = framework_id, "shutting a framework down");
        let containers: Vec<String> = self
            .executors
            .values()
            .filter(|e| e.framework_id == framework_id)
            .map(|e| e.container_id.clone())
            .collect();
        for c in containers {
            self.shutdown(&c, Termination::Shutdown);
        }
    }

    fn timer(&mut self, t: Timer) {
        match t {
            Timer::Registration(c) => {
                let late = self
                    .executors
                    .get(&c)
                    .is_some_and(|e| matches!(e.phase, Phase::Registering) && !e.ever_subscribed);
                if late {
                    tracing::warn!(container = %c, "executor did not subscribe in time");
                    self.shutdown(&c, Termination::RegistrationTimeout);
                }
            }
            Timer::ShutdownGrace(c) => {
                if let Some(e) = self.executors.get(&c)
                    && matches!(e.phase, Phase::Terminating(_))
                {
                    if let Some(pid) = e.pid {
                        tracing::info!(container = %c, pid, "shutdown grace period over; sending SIGTERM");
                        process::signal_group(pid, Signal::Term);
                    }
                    self.after(TERM_TO_KILL, Timer::ForceKill(c));
                }
            }
            Timer::ForceKill(c) => {
                if let Some(e) = self.executors.get(&c)
                    && !matches!(e.phase, Phase::Terminated)
                {
                    tracing::info!(container = %c, "killing what is left of the container");
                    kill_container(e);
                }
            }
            Timer::CommandKill(c) => {
                if let Some(e) = self.executors.get(&c)
                    && let Kind::Command(CommandTask::Killing { kill_at }) = e.kind
                    && kill_at <= Instant::now()
                {
                    tracing::info!(container = %c, "kill grace period over; sending SIGKILL");
                    kill_container(e);
                }
            }
            Timer::Reregistration => {
                self.recovering = false;
                let late: Vec<String> = self
                    .executors
                    .values()
                    .filter(|e| matches!(e.phase, Phase::Recovering))
                    .map(|e| e.container_id.clone())
                    .collect();
                for c in late {
                    tracing::warn!(container = %c, "executor did not subscribe again after the agent restarted");
                    self.shutdown(&c, Termination::ReregistrationTimeout);
                }
            }
        }
    }

    // ----- exits -----------------------------------------------------------

    fn exited(&mut self, container: &str, status: Option<i32>) {
        let Some(e) = self.executors.get_mut(container) else {
            return;
        };
        if matches!(e.phase, Phase::Terminated) {
            return;
        }
        tracing::info!(
            container,
            executor = %e.id(),
            status = %status.map_or_else(|| "unknown".to_owned(), process::describe_status),
            "executor process ended"
        );
        let fw = e.framework_id.clone();
        let exec_id = e.info.executor_id.clone();
        let live: Vec<String> = e
            .live_tasks()
            .map(|t| t.info.task_id.value.clone())
            .collect();
        let why = e.termination;
        e.queue.clear();
        match &e.kind {
            Kind::Command(state) => {
                let (state, message) = command::outcome(status, state.killed() || why.is_some());
                for t in live {
                    let s = self.new_status(
                        &t,
                        Some(&exec_id.value),
                        state,
                        v1::task_status::Source::Executor,
                        None,
                        message.clone(),
                    );
                    self.status_update(&fw, s, Some(container));
                }
            }
            Kind::Custom => {
                use v1::task_status::Reason;
                let (state, reason, message) = match why {
                    Some(Termination::ReregistrationTimeout) => (
                        self.lost_state(&fw, true),
                        Reason::ExecutorReregistrationTimeout,
                        "Executor did not reregister after the agent restarted".to_owned(),
                    ),
                    Some(Termination::RegistrationTimeout) => (
                        v1::TaskState::TaskFailed,
                        Reason::ExecutorRegistrationTimeout,
                        "Executor did not register in time".to_owned(),
                    ),
                    _ => (
                        v1::TaskState::TaskFailed,
                        Reason::ExecutorTerminated,
                        match status {
                            Some(s) => {
                                format!("Executor terminated: {}", process::describe_status(s))
                            }
                            None => "Executor terminated".to_owned(),
                        },
                    ),
                };
                for t in live {
                    self.agent_update(Some(container), &fw, &t, state, reason, &message);
                }
                self.executor_exited(&fw, exec_id, status);
            }
        }
        self.end_container(container);
        self.checkpoint(container);
        self.maybe_remove(container);
    }

    /// The process is gone: close its stream, kill leftovers, remove its
    /// cgroup.
    fn end_container(&mut self, container: &str) {
        let Some(e) = self.executors.get_mut(container) else {
            return;
        };
        e.phase = Phase::Terminated;
        if let Kind::Command(state) = &mut e.kind {
            *state = CommandTask::Exited;
        }
        if let Some(cg) = e.cgroup.take() {
            destroy_cgroup(cg);
        }
    }

    fn maybe_remove(&mut self, container: &str) {
        let done = self
            .executors
            .get(container)
            .is_some_and(|e| matches!(e.phase, Phase::Terminated) && e.tasks.is_empty());
        if !done {
            return;
        }
        if let Some(e) = self.executors.remove(container) {
            tracing::debug!(container, executor = %e.id(), "executor forgotten");
            if e.checkpoint
                && let Err(err) = checkpoint::remove_executor(&self.cfg.layout, container)
            {
                tracing::warn!(error = %err, "cannot remove a checkpoint");
            }
        }
    }

    fn stream_closed(&mut self, container: &str, generation: u64) {
        let Some(e) = self.executors.get_mut(container) else {
            return;
        };
        if let Phase::Running(Some(s)) = &e.phase
            && s.generation == generation
        {
            tracing::info!(container, executor = %e.id(), "executor disconnected");
            e.phase = Phase::Registering;
        } else if let Phase::Terminating(Some(s)) = &e.phase
            && s.generation == generation
        {
            e.phase = Phase::Terminating(None);
        }
    }

    // ----- the executor API ----------------------------------------------

    fn executor_call(&mut self, call: executor::Call) -> Reply {
        use executor::call::Type;
        let fw = call.framework_id.value.clone();
        let exec_id = call.executor_id.value.clone();
        let ty = call.r#type.and_then(|t| Type::try_from(t).ok());
        if ty != Some(Type::Subscribe) && self.recovering {
            return Reply::Error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Agent has not finished recovery".into(),
            );
        }
        if !self.frameworks.contains_key(&fw) {
            return Reply::Error(StatusCode::BAD_REQUEST, "Framework cannot be found".into());
        }
        let Some(c) = self
            .find_active_executor(&fw, &exec_id)
            .filter(|c| !self.executors[c].is_command())
        else {
            return Reply::Error(StatusCode::BAD_REQUEST, "Executor cannot be found".into());
        };
        match ty {
            Some(Type::Subscribe) => self.subscribe(&c, call.subscribe.unwrap_or_default()),
            Some(Type::Update) => {
                if self.executors[&c].sink().is_none() {
                    return Reply::Error(
                        StatusCode::FORBIDDEN,
                        "Executor is not subscribed".into(),
                    );
                }
                let Some(update) = call.update else {
                    return Reply::Error(
                        StatusCode::BAD_REQUEST,
                        "Expecting 'update' to be present".into(),
                    );
                };
                let status = update.status;
                let ack = executor::Event {
                    acknowledged: Some(executor::event::Acknowledged {
                        task_id: status.task_id.clone(),
                        uuid: status.uuid.clone().unwrap_or_default(),
                    }),
                    ..event(executor::event::Type::Acknowledged)
                };
                self.status_update(&fw, status, Some(&c));
                self.executors[&c].send(ack);
                Reply::Accepted
            }
            Some(Type::Message) => {
                if self.executors[&c].sink().is_none() {
                    return Reply::Error(
                        StatusCode::FORBIDDEN,
                        "Executor is not subscribed".into(),
                    );
                }
                let data = call.message.map(|m| m.data).unwrap_or_default();
                self.post(AgentCall {
                    message: Some(agent_call::Message {
                        framework_id: call.framework_id,
                        executor_id: call.executor_id,
                        data,
                    }),
                    ..self.agent_call(agent_call::Type::Message)
                });
                Reply::Accepted
            }
            _ => Reply::Accepted,
        }
    }

    fn guard(&self, container: &str, generation: u64) -> executor_api::Guard {
        Box::new(StreamGuard {
            core: self.tx.clone(),
            container: container.to_owned(),
            generation,
        })
    }

    fn subscribe(&mut self, container: &str, sub: executor::call::Subscribe) -> Reply {
        let e = &self.executors[container];
        if self.stopping && e.checkpoint && !self.draining {
            return Reply::Error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Agent is shutting down".into(),
            );
        }
        let fw = e.framework_id.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        self.next_generation += 1;
        let generation = self.next_generation;
        let sink = Sink {
            tx: tx.clone(),
            generation,
        };
        if matches!(e.phase, Phase::Terminating(_)) || self.stopping {
            let _ = tx.send(event(executor::event::Type::Shutdown));
            if let Some(e) = self.executors.get_mut(container) {
                e.phase = Phase::Terminating(Some(sink));
            }
            return Reply::Subscribed(rx, self.guard(container, generation));
        }
        tracing::info!(container, executor = %e.id(), "executor subscribed");
        // Replay what the executor has not seen acknowledged.
        let exec_id = e.info.executor_id.clone();
        let mut acks = Vec::new();
        for u in sub.unacknowledged_updates {
            if executor_api::validate_status(&u.status, &exec_id).is_err() {
                continue;
            }
            acks.push((
                u.status.task_id.clone(),
                u.status.uuid.clone().unwrap_or_default(),
            ));
            self.status_update(&fw, u.status, Some(container));
        }
        let e = &self.executors[container];
        let unacked: Vec<&str> = sub
            .unacknowledged_tasks
            .iter()
            .map(|t| t.task_id.value.as_str())
            .collect();
        let dropped: Vec<String> = e
            .tasks
            .values()
            .filter(|t| t.state == v1::TaskState::TaskStaging)
            .map(|t| t.info.task_id.value.clone())
            .filter(|id| !e.is_queued(id) && !unacked.contains(&id.as_str()))
            .collect();
        let lost = self.lost_state(&fw, false);
        for id in dropped {
            self.agent_update(
                Some(container),
                &fw,
                &id,
                lost,
                v1::task_status::Reason::AgentRestarted,
                "Task launched during agent restart",
            );
        }
        let subscribed = executor::Event {
            subscribed: Some(executor::event::Subscribed {
                executor_info: self.executors[container].info.clone(),
                framework_info: self.frameworks.get(&fw).cloned().unwrap_or_default(),
                agent_info: {
                    let mut a = self.cfg.agent_info.clone();
                    a.id = self.agent_id.clone().map(|value| v1::AgentId { value });
                    a
                },
                container_id: Some(v1::ContainerId {
                    value: container.to_owned(),
                    parent: None,
                }),
            }),
            ..event(executor::event::Type::Subscribed)
        };
        let _ = tx.send(subscribed);
        for (task_id, uuid) in acks {
            let _ = tx.send(executor::Event {
                acknowledged: Some(executor::event::Acknowledged { task_id, uuid }),
                ..event(executor::event::Type::Acknowledged)
            });
        }
        if let Some(e) = self.executors.get_mut(container) {
            e.phase = Phase::Running(Some(sink));
            e.ever_subscribed = true;
        }
        self.flush_queue(container);
        if let Some(e) = self.executors.get_mut(container) {
            for kill in std::mem::take(&mut e.pending_kills) {
                let _ = tx.send(kill);
            }
        }
        drop(tx);
        if self.recovering
            && !self
                .executors
                .values()
                .any(|e| matches!(e.phase, Phase::Recovering))
        {
            tracing::info!("every recovered executor subscribed again");
            self.recovering = false;
        }
        let e = &self.executors[container];
        if !e.ever_launched && e.live_tasks().next().is_none() {
            self.shutdown(container, Termination::Shutdown);
        }
        self.checkpoint(container);
        Reply::Subscribed(rx, self.guard(container, generation))
    }

    // ----- checkpoints and stopping -------------------------------------

    fn checkpoint(&self, container: &str) {
        let Some(e) = self.executors.get(container) else {
            return;
        };
        if !e.checkpoint {
            return;
        }
        let Some(framework) = self.frameworks.get(&e.framework_id) else {
            return;
        };
        let updates = e
            .tasks
            .keys()
            .filter_map(|t| {
                self.updates.stream(&StreamKey {
                    framework_id: e.framework_id.clone(),
                    task_id: t.clone(),
                })
            })
            .flat_map(|s| s.pending().cloned())
            .collect();
        let cp = ExecutorCheckpoint {
            framework: framework.clone(),
            executor: e.info.clone(),
            container_id: e.container_id.clone(),
            directory: e.directory.clone(),
            command_task: e.is_command(),
            pid: e.pid,
            pid_start_time: e.start_time,
            terminated: matches!(e.phase, Phase::Terminated),
            tasks: e.tasks.values().map(|t| t.info.clone()).collect(),
            statuses: e.tasks.values().filter_map(|t| t.latest.clone()).collect(),
            updates,
        };
        if let Err(err) = checkpoint::save_executor(&self.cfg.layout, &cp) {
            tracing::error!(error = %err, "cannot checkpoint an executor");
        }
    }

    /// Stops: executors of checkpointing frameworks are left running (their
    /// streams closed, so they start reconnecting); the others are shut
    /// down. Returns when to give up waiting for them.
    fn begin_stop(&mut self) -> Instant {
        tracing::info!("stopping the agent");
        self.stopping = true;
        let mut longest = Duration::ZERO;
        let containers: Vec<String> = self.executors.keys().cloned().collect();
        for c in containers {
            let Some(e) = self.executors.get_mut(&c) else {
                continue;
            };
            if matches!(e.phase, Phase::Terminated) {
                continue;
            }
            if e.checkpoint && !self.draining {
                let _ = take_sink(&mut e.phase);
                self.checkpoint(&c);
            } else {
                longest = longest.max(e.grace(self.cfg.shutdown_grace));
                self.shutdown(&c, Termination::Shutdown);
            }
        }
        Instant::now() + longest + TERM_TO_KILL + Duration::from_secs(1)
    }

    fn stop_complete(&self) -> bool {
        self.executors
            .values()
            .all(|e| (e.checkpoint && !self.draining) || matches!(e.phase, Phase::Terminated))
    }

    fn force_kill_remaining(&mut self) {
        for e in self.executors.values() {
            if (!e.checkpoint || self.draining) && !matches!(e.phase, Phase::Terminated) {
                tracing::warn!(container = %e.container_id, "still running at the end of the stop; killing it");
                kill_container(e);
                if let Some(cg) = &e.cgroup {
                    destroy_cgroup(cg.clone());
                }
            }
        }
    }
}

/// Takes the event sink out of a phase, leaving the executor to reconnect.
fn take_sink(phase: &mut Phase) -> Option<Sink> {
    match phase {
        Phase::Running(s) => {
            let s = s.take();
            if s.is_some() {
                *phase = Phase::Registering;
            }
            s
        }
        Phase::Terminating(s) => s.take(),
        _ => None,
    }
}

/// SIGKILL to the process group and to everything in the cgroup.
fn kill_container(e: &Executor) {
    if let Some(pid) = e.pid {
        process::signal_group(pid, Signal::Kill);
    }
    if let Some(cg) = &e.cgroup {
        process::signal_all(&cg.processes(), Signal::Kill);
    }
}

/// Kills whatever is left in a cgroup and removes it, off the core task.
fn destroy_cgroup(cg: Arc<dyn ContainerCgroup>) {
    tokio::task::spawn_blocking(move || {
        for _ in 0..20 {
            let pids = cg.processes();
            if pids.is_empty() {
                break;
            }
            process::signal_all(&pids, Signal::Kill);
            std::thread::sleep(Duration::from_millis(50));
        }
        match cg.destroy() {
            Ok(()) => tracing::debug!(cgroup = cg.path(), "cgroup removed"),
            Err(e) => tracing::warn!(error = %e, "cannot remove a cgroup"),
        }
    });
}

/// Tells the core when the response body of a subscription is dropped:
/// the executor went away, or the agent closed the stream.
struct StreamGuard {
    core: mpsc::UnboundedSender<Input>,
    container: String,
    generation: u64,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let _ = self.core.send(Input::StreamClosed {
            container: std::mem::take(&mut self.container),
            generation: self.generation,
        });
    }
}

/// Watches a process that is not a child of this agent.
fn watch_adopted(
    pid: u32,
    start: Option<u64>,
    container: String,
    core: mpsc::UnboundedSender<Input>,
) {
    tokio::spawn(
        async move {
            while process::is_running(pid, start) {
                if core.is_closed() {
                    return;
                }
                tokio::time::sleep(ADOPTED_POLL).await;
            }
            let _ = core.send(Input::Exited {
                container,
                status: None,
            });
        }
        .in_current_span(),
    );
}

/// Prepares the sandbox, fetches, starts the process, puts it into its
/// cgroup, then waits for it to end.
async fn launch(
    container: String,
    directory: PathBuf,
    command: v1::CommandInfo,
    env: BTreeMap<String, String>,
    cgroup: Option<Arc<dyn ContainerCgroup>>,
    http: reqwest::Client,
    core: mpsc::UnboundedSender<Input>,
) {
    let fail = |message: String| {
        let _ = core.send(Input::LaunchFailed {
            container: container.clone(),
            message,
        });
    };
    if let Err(e) = tokio::fs::create_dir_all(&directory).await {
        return fail(format!(
            "cannot create the sandbox {}: {e}",
            directory.display()
        ));
    }
    if let Err(e) = fetch::fetch_all(&command.uris, &directory, &http).await {
        return fail(error_chain(&e));
    }
    let mut child = match process::spawn(&command, &env, &directory) {
        Ok(c) => c,
        Err(e) => return fail(error_chain(&e)),
    };
    let Some(pid) = child.id() else {
        return fail("the process ended before it could be watched".into());
    };
    if let Some(cg) = &cgroup
        && let Err(e) = cg.add_process(pid)
    {
        tracing::warn!(container = %container, pid, error = %e, "cannot move the executor into its cgroup");
    }
    let _ = core.send(Input::Launched {
        container: container.clone(),
        pid,
        start: process::start_time(pid),
    });
    let status = match child.wait().await {
        Ok(st) => Some(process::raw_status(st)),
        Err(e) => {
            tracing::warn!(container = %container, error = %e, "cannot wait for the executor");
            None
        }
    };
    let _ = core.send(Input::Exited { container, status });
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
