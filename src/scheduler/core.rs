//! The scheduler's loop: one task owns the queue, the launched tasks and
//! the offers, and reacts to pod changes, Mesos events and timers.
//!
//! A pod is launched in two durable steps: its annotations (bindingHost,
//! taskId, slaveId, offerId, executorId, host ports) are written first,
//! then the offer is accepted with a LAUNCH. A crash between the two
//! leaves an annotated pod whose task the master does not know; explicit
//! reconciliation at the next subscription reports it lost, and the pod is
//! queued again under a new task id. A task is only ever launched under a
//! task id that was first written to its pod, and a new id is written only
//! after the previous task is known to be gone, so a pod never runs twice.
//!
//! Task states map to pods like this:
//!
//! | task update | pod not bound to a node | pod bound |
//! | --- | --- | --- |
//! | STAGING, STARTING, RUNNING | tracked | tracked |
//! | FINISHED | forgotten | forgotten (the executor reports the pod) |
//! | KILLED after a deletion | forgotten | forgotten |
//! | FAILED, LOST, DROPPED, GONE, ERROR, UNKNOWN, KILLED otherwise | annotations removed, queued again | marked Failed with the task's reason |
//! | any, for a task no pod of ours names | killed | killed |

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::events::Recorder;
use super::metrics::Metrics;
use super::queue::Queue;
use super::tasks::{Phase, Tasks, Tracked};
use crate::flags::Matching;
use crate::mesos::proto::v1::{self, scheduler::event};
use crate::mesos::scheduler::{Scheduler, SchedulerEvent};
use crate::offers::{Inventory, Matcher, OfferRegistry, Outcome};
use crate::podtask::annotations as ann;
use crate::podtask::launch::{self, Placement};
use crate::podtask::{PodKey, PodTask, TaskId};

/// Most events taken in at once before a placement round.
const BATCH: usize = 4096;

/// What the loop needs.
pub struct Core {
    pub(super) pods_api: Api<Pod>,
    pub(super) driver: Scheduler,
    pub(super) matching: Matching,
    pub(super) scheduler_name: String,
    pub(super) queue: Queue,
    pub(super) tasks: Tasks,
    pub(super) offers: OfferRegistry,
    pub(super) known_executors: HashMap<String, v1::ExecutorInfo>,
    pub(super) pods: HashMap<String, Seen>,
    pub(super) events: Recorder,
    pub(super) metrics: Arc<Metrics>,
    pub(super) roles: Vec<String>,
    pub(super) suppressed: bool,
    pub(super) subscribed: bool,
    pub(super) reconcile_interval: Duration,
    pub(super) next_implicit: Option<Instant>,
    pub(super) on_subscribed: mpsc::UnboundedSender<String>,
    pub(super) status: watch::Sender<super::DebugState>,
    pub(super) relist: Option<HashSet<String>>,
    pub(super) listings: mpsc::Receiver<ListingRequest>,
    pub(super) failure_hint: String,
}

/// What the loop keeps of each pod of ours: little, since a scheduler may
/// know a great many pods (the queue keeps what placing needs).
#[derive(Debug, Clone)]
pub struct Seen {
    /// `namespace/name`.
    pub key: PodKey,
    /// Being deleted (deletionTimestamp set).
    pub deleting: bool,
    /// `metadata.deletionGracePeriodSeconds`: the KILL's grace period.
    pub grace_seconds: Option<i64>,
}

/// What a `/debug/` listing shows.
#[derive(Debug, Clone, Copy)]
pub enum Listing {
    /// Pods waiting for an offer.
    Queue,
    /// Launched tasks.
    Tasks,
    /// Offers held.
    Offers,
}

/// A listing asked for by the HTTP server, answered by the loop.
pub type ListingRequest = (Listing, tokio::sync::oneshot::Sender<serde_json::Value>);

/// Whether a pod names this scheduler.
pub fn is_ours(pod: &Pod, name: &str) -> bool {
    let legacy = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ann::SCHEDULER_NAME));
    match legacy {
        Some(n) => n == name,
        None => pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()) == Some(name),
    }
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// Whether an executor took the pod: it has a node and the node started
/// it (a pod created with `spec.nodeName` has a node before any launch).
fn bound(pod: &Pod) -> bool {
    let has_node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let status = pod.status.as_ref();
    let started = status.is_some_and(|s| {
        s.start_time.is_some()
            || s.phase.as_deref().is_some_and(|p| p != "Pending")
            || s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "PodScheduled" && c.status == "True")
    });
    has_node && started
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn state_name(state: i32) -> String {
    v1::TaskState::try_from(state)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| format!("state {state}"))
}

fn reason_name(reason: Option<i32>) -> String {
    reason
        .and_then(|r| v1::task_status::Reason::try_from(r).ok())
        .map(|r| r.as_str_name().to_string())
        .unwrap_or_default()
}

/// One planned launch.
struct Plan {
    uid: String,
    key: PodKey,
    slot: usize,
    task_id: TaskId,
    annotations: BTreeMap<String, String>,
    resources: Vec<v1::Resource>,
    host_ports: Vec<crate::podtask::hostport::HostPort>,
    executor: v1::ExecutorInfo,
    resource_version: Option<String>,
    queued_since: Instant,
}

impl Core {
    /// Runs until `stop` or until the framework cannot go on.
    pub async fn run(
        mut self,
        mut mesos: mpsc::Receiver<SchedulerEvent>,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let pods = watcher(self.pods_api.clone(), watcher::Config::default()).default_backoff();
        futures::pin_mut!(pods);
        loop {
            let wake = self.next_wake();
            tokio::select! {
                _ = stop.cancelled() => {
                    self.driver.stop();
                    return Ok(());
                }
                ev = pods.next() => self.on_pod_stream(ev).await?,
                Some((what, reply)) = self.listings.recv() => {
                    let _ = reply.send(self.listing(what, Instant::now()));
                    continue;
                }
                ev = mesos.recv() => self.on_mesos_stream(ev).await?,
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            // Take in whatever else is ready before a placement round, so a
            // burst of pods is placed in a few large rounds, not one by one.
            for _ in 0..BATCH {
                match pods.next().now_or_never() {
                    Some(ev) => self.on_pod_stream(ev).await?,
                    None => break,
                }
            }
            for _ in 0..BATCH {
                match mesos.try_recv() {
                    Ok(ev) => self.on_mesos_stream(Some(ev)).await?,
                    Err(_) => break,
                }
            }
            self.tick().await;
        }
    }

    /// One item of the pod watch; `Err` when the watch ended.
    async fn on_pod_stream(
        &mut self,
        ev: Option<Result<watcher::Event<Pod>, watcher::Error>>,
    ) -> anyhow::Result<()> {
        match ev {
            Some(Ok(ev)) => self.on_watch(ev).await,
            Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
            None => anyhow::bail!("the pod watch ended"),
        }
        Ok(())
    }

    /// One item from the Mesos driver; `Err` when the framework cannot go on.
    async fn on_mesos_stream(&mut self, ev: Option<SchedulerEvent>) -> anyhow::Result<()> {
        match ev {
            Some(SchedulerEvent::Failed { message }) => anyhow::bail!(
                "the Mesos framework cannot go on: {message} ({})",
                self.failure_hint
            ),
            Some(ev) => self.on_mesos(ev).await,
            None => anyhow::bail!("the Mesos scheduler driver stopped"),
        }
        Ok(())
    }

    /// A `/debug/` listing as JSON.
    fn listing(&self, what: Listing, now: Instant) -> serde_json::Value {
        let ago = |t: Instant| format!("{:.3}s", now.saturating_duration_since(t).as_secs_f64());
        match what {
            Listing::Queue => {
                let mut rows: Vec<_> = self.queue.iter().collect();
                rows.sort_by_key(|(_, w)| w.since);
                json!(rows
                    .into_iter()
                    .map(|(uid, w)| json!({
                        "pod": w.task.key.to_string(),
                        "uid": uid,
                        "waiting": ago(w.since),
                        "attempts": w.attempts,
                        "next_attempt_in": format!("{:.3}s", w.not_before.saturating_duration_since(now).as_secs_f64()),
                        "last_reason": w.last_reason,
                        "cpus": w.task.limits.cpus,
                        "mem_mb": w.task.limits.mem_mb,
                    }))
                    .collect::<Vec<_>>())
            }
            Listing::Tasks => {
                let mut rows: Vec<_> = self.tasks.iter().collect();
                rows.sort_by_key(|t| t.key.to_string());
                json!(rows
                    .into_iter()
                    .map(|t| json!({
                        "pod": t.key.to_string(),
                        "uid": t.uid,
                        "task_id": t.task_id.as_str(),
                        "agent_id": t.agent_id,
                        "hostname": t.hostname,
                        "executor_id": t.executor_id,
                        "phase": format!("{:?}", t.phase),
                        "killing": t.killing,
                    }))
                    .collect::<Vec<_>>())
            }
            Listing::Offers => json!(self
                .offers
                .live()
                .map(|o| json!({
                    "id": o.id.value,
                    "agent_id": o.agent_id.value,
                    "hostname": o.hostname,
                    "resources": o.resources.iter().map(crate::resources::describe).collect::<Vec<_>>(),
                }))
                .collect::<Vec<_>>()),
        }
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + Duration::from_secs(1);
        for d in [
            self.queue.next_deadline(),
            self.offers.next_deadline(),
            self.next_implicit,
        ]
        .into_iter()
        .flatten()
        {
            wake = wake.min(d.max(now + Duration::from_millis(5)));
        }
        wake
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        self.schedule().await;
        let expired: Vec<v1::OfferId> = self.offers.expire(now).into_iter().map(|o| o.id).collect();
        if !expired.is_empty() {
            self.metrics.offers_declined.inc_by(expired.len() as u64);
            let _ = self
                .driver
                .decline(expired, Some(self.offers.filters()))
                .await;
        }
        if self.subscribed && self.queue.is_empty() && !self.suppressed {
            if self.driver.suppress(self.roles.clone()).await.is_ok() {
                self.suppressed = true;
            }
            self.decline_all(now).await;
        }
        if let Some(at) = self.next_implicit
            && now >= at
            && self.subscribed
        {
            self.metrics.reconciliations.inc();
            let _ = self.driver.reconcile(Vec::new()).await;
            self.next_implicit = Some(now + self.reconcile_interval);
        }
        self.publish();
    }

    /// Declines every offer held.
    async fn decline_all(&mut self, now: Instant) {
        let live: Vec<v1::OfferId> = self.offers.live().map(|o| o.id.clone()).collect();
        if live.is_empty() {
            return;
        }
        let ids: Vec<String> = live.iter().map(|o| o.value.clone()).collect();
        self.offers.take(&ids, now);
        self.metrics.offers_declined.inc_by(live.len() as u64);
        let _ = self.driver.decline(live, Some(self.offers.filters())).await;
    }

    fn publish(&self) {
        self.status.send_modify(|s| {
            s.subscribed = self.subscribed;
            s.queued = self.queue.len();
            s.tasks = self.tasks.len();
            s.offers = self.offers.len();
            s.suppressed = self.suppressed;
        });
        self.metrics.queue_depth.set(self.queue.len() as i64);
    }

    async fn on_watch(&mut self, ev: watcher::Event<Pod>) {
        match ev {
            watcher::Event::Init => self.relist = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                if let (Some(seen), Some(uid)) = (self.relist.as_mut(), pod.metadata.uid.clone()) {
                    seen.insert(uid);
                }
                self.on_pod(pod).await;
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relist.take() {
                    let gone: Vec<String> = self
                        .pods
                        .keys()
                        .filter(|u| !seen.contains(*u))
                        .cloned()
                        .collect();
                    for uid in gone {
                        self.on_deleted(&uid, true).await;
                    }
                }
            }
            watcher::Event::Apply(pod) => self.on_pod(pod).await,
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    self.on_deleted(uid, true).await;
                }
            }
        }
    }

    async fn on_pod(&mut self, pod: Pod) {
        if !is_ours(&pod, &self.scheduler_name) {
            return;
        }
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let deleting = pod.metadata.deletion_timestamp.is_some();
        self.pods.insert(
            uid.clone(),
            Seen {
                key: PodKey::of(&pod),
                deleting,
                grace_seconds: pod.metadata.deletion_grace_period_seconds,
            },
        );
        if deleting {
            self.on_deleted(&uid, false).await;
            return;
        }
        if terminal(&pod) {
            self.queue.remove(&uid);
            return;
        }
        if let Some(task_id) = annotation(&pod, ann::TASK_ID) {
            self.queue.remove(&uid);
            let known = self
                .tasks
                .for_pod(&uid)
                .map(|t| t.task_id.as_str() == task_id);
            if known != Some(true) {
                let t = Tracked {
                    uid: uid.clone(),
                    key: PodKey::of(&pod),
                    task_id: TaskId::from_existing(task_id),
                    agent_id: annotation(&pod, ann::SLAVE_ID)
                        .unwrap_or_default()
                        .to_string(),
                    hostname: annotation(&pod, ann::BINDING_HOST)
                        .unwrap_or_default()
                        .to_string(),
                    executor_id: annotation(&pod, ann::EXECUTOR_ID)
                        .unwrap_or_default()
                        .to_string(),
                    launched_at: None,
                    phase: Phase::Launched,
                    killing: false,
                };
                self.recover_executor(&pod, &t.agent_id);
                let reconcile = vec![(
                    v1::TaskId {
                        value: task_id.to_string(),
                    },
                    Some(v1::AgentId {
                        value: t.agent_id.clone(),
                    }),
                )];
                self.tasks.insert(t);
                if self.subscribed {
                    let _ = self.driver.reconcile(reconcile).await;
                }
            }
            return;
        }
        if annotation(&pod, ann::BINDING_HOST).is_some() || self.tasks.for_pod(&uid).is_some() {
            // Placed by someone else (a static pod's mirror), or ours with
            // the annotation not seen yet.
            return;
        }
        let key = PodKey::of(&pod);
        match PodTask::from_pod(pod, &self.matching.podtask) {
            Ok(task) => {
                let fresh = !self.queue.contains(&uid);
                self.queue.upsert(&uid, task.slim(), Instant::now());
                if fresh {
                    self.metrics.queued.inc();
                }
                self.revive().await;
            }
            Err(e) => {
                self.queue.remove(&uid);
                self.events.failed_scheduling(
                    &key,
                    &uid,
                    &format!("the pod cannot become a Mesos task: {e}"),
                );
            }
        }
    }

    /// Learns the executor of an agent from a pod launched there earlier.
    fn recover_executor(&mut self, pod: &Pod, agent_id: &str) {
        if self.known_executors.contains_key(agent_id) {
            return;
        }
        if let Some(res) = annotation(pod, ann::EXECUTOR_RESOURCES)
            && annotation(pod, ann::EXECUTOR_ID) == Some(self.matching.executor.id().as_str())
            && let Ok(resources) = launch::decode_resources(res)
        {
            self.known_executors.insert(
                agent_id.to_string(),
                self.matching.executor.info_with(resources),
            );
        }
    }

    /// A pod is being deleted (`gone`: it no longer exists).
    async fn on_deleted(&mut self, uid: &str, gone: bool) {
        self.queue.remove(uid);
        let seen = if gone {
            self.events.forget(uid);
            self.pods.remove(uid)
        } else {
            self.pods.get(uid).cloned()
        };
        let key = seen.as_ref().map(|s| s.key.to_string()).unwrap_or_default();
        // The executor gives the containers the pod's grace period.
        let policy = seen.and_then(|s| s.grace_seconds).map(|g| v1::KillPolicy {
            grace_period: Some(v1::DurationInfo {
                nanoseconds: g.max(0).saturating_mul(1_000_000_000),
            }),
        });
        let kill = match self.tasks.for_pod_mut(uid) {
            Some(t) if !t.killing => {
                t.killing = true;
                Some((t.task_id.clone(), t.agent_id.clone()))
            }
            _ => None,
        };
        if let Some((task_id, agent_id)) = kill {
            tracing::info!(pod = key, task = %task_id, "pod deleted: killing its task");
            let _ = self
                .driver
                .kill(
                    (&task_id).into(),
                    Some(v1::AgentId { value: agent_id }),
                    policy,
                )
                .await;
        }
    }

    async fn revive(&mut self) {
        if self.suppressed
            && self.subscribed
            && self.driver.revive(self.roles.clone()).await.is_ok()
        {
            self.suppressed = false;
        }
    }

    async fn on_mesos(&mut self, ev: SchedulerEvent) {
        let now = Instant::now();
        match ev {
            SchedulerEvent::Subscribed { framework_id, .. } => {
                tracing::info!(framework = framework_id.value, "subscribed");
                self.subscribed = true;
                // The subscription carried no suppressed roles: offers flow.
                self.suppressed = false;
                self.offers.invalidate_all(now);
                let _ = self.on_subscribed.send(framework_id.value.clone());
                // Explicit reconciliation of every task the pods name.
                let tasks: Vec<_> = self
                    .tasks
                    .iter()
                    .map(|t| {
                        (
                            (&t.task_id).into(),
                            Some(v1::AgentId {
                                value: t.agent_id.clone(),
                            }),
                        )
                    })
                    .collect();
                if !tasks.is_empty() {
                    self.metrics.reconciliations.inc();
                    let _ = self.driver.reconcile(tasks).await;
                }
                self.next_implicit =
                    (!self.reconcile_interval.is_zero()).then(|| now + self.reconcile_interval);
            }
            SchedulerEvent::Disconnected { reason } => {
                tracing::warn!(reason, "disconnected from the master; resubscribing");
                self.subscribed = false;
                self.offers.invalidate_all(now);
            }
            SchedulerEvent::Failed { .. } => {}
            SchedulerEvent::Event(e) => self.on_event(*e, now).await,
        }
    }

    async fn on_event(&mut self, e: v1::scheduler::Event, now: Instant) {
        match e.r#type.and_then(|t| event::Type::try_from(t).ok()) {
            Some(event::Type::Offers) => {
                let offers = e.offers.map(|o| o.offers).unwrap_or_default();
                self.metrics.offers_received.inc_by(offers.len() as u64);
                self.break_out(&offers, now);
                for o in offers {
                    self.offers.add(o, now);
                }
                if self.queue.is_empty() {
                    // Nothing waits: give them back at once.
                    self.decline_all(now).await;
                }
            }
            Some(event::Type::Rescind) => {
                if let Some(r) = e.rescind {
                    self.offers.rescind(&r.offer_id.value, now);
                }
            }
            Some(event::Type::Update) => {
                if let Some(u) = e.update {
                    self.on_status(u.status).await;
                }
            }
            Some(event::Type::Failure) => {
                if let Some(f) = e.failure
                    && let Some(agent) = f.agent_id
                {
                    tracing::warn!(agent = agent.value, "agent or executor failed");
                    self.known_executors.remove(&agent.value);
                    self.offers.invalidate_agent(&agent.value, now);
                }
            }
            Some(event::Type::Error) => {
                tracing::error!(
                    message = e.error.map(|e| e.message).unwrap_or_default(),
                    "master reported an error"
                );
            }
            _ => {}
        }
    }

    /// Ends the backoff of waiting pods that one of the new offers can hold.
    fn break_out(&mut self, offers: &[v1::Offer], now: Instant) {
        let waiting = self.queue.backing_off(now);
        if waiting.is_empty() || offers.is_empty() {
            return;
        }
        let mut inv = Inventory::build(offers, &self.matching.executor, &self.known_executors);
        let matcher = Matcher::new(
            &mut inv,
            &self.matching.executor,
            &self.matching.podtask.framework_roles,
            self.matching.policy,
        );
        let slots = inv.slots().len();
        let mut fits = Vec::new();
        for uid in waiting {
            if let Some(w) = self.queue.get(&uid)
                && (0..slots).any(|s| matcher.evaluate(&mut inv, s, &w.task).is_ok())
            {
                fits.push(uid);
            }
        }
        for uid in fits {
            self.queue.break_out(&uid, now);
        }
    }

    async fn on_status(&mut self, status: v1::TaskStatus) {
        use v1::TaskState as S;
        let id = status.task_id.value.clone();
        let state = S::try_from(status.state).unwrap_or(S::TaskUnknown);
        self.metrics
            .status(&state_name(status.state), &reason_name(status.reason));
        let known = self.tasks.by_task(&id).cloned();
        match (state, known) {
            (S::TaskStaging | S::TaskStarting | S::TaskRunning, Some(_)) => {
                if let Some(t) = self.tasks.by_task_mut(&id) {
                    if state == S::TaskRunning {
                        if let Some(at) = t.launched_at.take() {
                            self.metrics
                                .bind_latency
                                .observe(at.elapsed().as_secs_f64());
                        }
                        t.phase = Phase::Running;
                    } else {
                        t.phase = Phase::Starting;
                    }
                }
            }
            (S::TaskStaging | S::TaskStarting | S::TaskRunning | S::TaskUnreachable, None) => {
                tracing::warn!(
                    task = id,
                    "a task no pod of ours names is running: killing it"
                );
                let _ = self
                    .driver
                    .kill(status.task_id.clone(), status.agent_id.clone(), None)
                    .await;
            }
            (S::TaskUnreachable, Some(_)) => {
                tracing::warn!(task = id, "agent unreachable; the task may come back");
            }
            (_, None) => {}
            (S::TaskFinished, Some(t)) => {
                self.tasks.remove_task(&id);
                self.retire_executor(&t).await;
            }
            (_, Some(t)) => {
                self.tasks.remove_task(&id);
                self.retire_executor(&t).await;
                self.task_gone(t, &status, state).await;
            }
        }
        if let Err(e) = self.driver.acknowledge(&status).await {
            tracing::warn!(task = id, error = %e, "cannot acknowledge the update; the agent will resend it");
        }
    }

    /// Shuts down an outdated executor (another km version or other
    /// executor flags) once the last of its tasks has ended. New pods go to
    /// executors of the current configuration.
    async fn retire_executor(&mut self, t: &Tracked) {
        let current = self.matching.executor.id().as_str();
        if t.executor_id.is_empty()
            || t.executor_id == current
            || self.tasks.executor_in_use(&t.agent_id, &t.executor_id)
        {
            return;
        }
        tracing::info!(
            agent = t.agent_id,
            executor = t.executor_id,
            current,
            "the last task of an outdated executor ended: shutting it down"
        );
        self.metrics.executors_shut_down.inc();
        let _ = self
            .driver
            .shutdown(
                v1::ExecutorId {
                    value: t.executor_id.clone(),
                },
                v1::AgentId {
                    value: t.agent_id.clone(),
                },
            )
            .await;
    }

    /// A task ended without finishing: requeue an unbound pod, fail a bound one.
    async fn task_gone(&mut self, t: Tracked, status: &v1::TaskStatus, state: v1::TaskState) {
        if t.killing || self.pods.get(&t.uid).is_none_or(|s| s.deleting) {
            return;
        }
        let why = format!(
            "{} {}{}",
            state_name(state as i32),
            reason_name(status.reason),
            status
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
        let name = t.key.name.clone();
        let api: Api<Pod> = Api::namespaced(self.pods_api.clone().into_client(), &t.key.namespace);
        // Rare: read the pod as it is now rather than keeping every pod.
        let pod = match api.get_opt(&name).await {
            Ok(Some(p)) if p.metadata.uid.as_deref() == Some(t.uid.as_str()) => p,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(pod = %t.key, error = %e, "cannot read the pod whose task is gone; reconciliation will tell again");
                return;
            }
        };
        if bound(&pod) {
            tracing::warn!(pod = %t.key, task = %t.task_id, why, "the task of a bound pod is gone: marking the pod Failed");
            let patch = json!({"status": {"phase": "Failed", "reason": "TaskLost", "message": format!("Mesos task {} is gone: {why}", t.task_id)}});
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                tracing::warn!(pod = %t.key, error = %e, "cannot mark the pod Failed");
            }
        } else {
            tracing::info!(pod = %t.key, task = %t.task_id, why, "the task ended before the pod was bound: queueing the pod again");
            let mut remove: BTreeMap<String, serde_json::Value> = BTreeMap::new();
            for k in [
                ann::BINDING_HOST,
                ann::TASK_ID,
                ann::SLAVE_ID,
                ann::OFFER_ID,
                ann::EXECUTOR_ID,
                ann::EXECUTOR_RESOURCES,
            ] {
                remove.insert(k.to_string(), serde_json::Value::Null);
            }
            for k in pod.metadata.annotations.iter().flatten().map(|(k, _)| k) {
                if k.starts_with(&format!("{}port", ann::PREFIX)) {
                    remove.insert(k.clone(), serde_json::Value::Null);
                }
            }
            let patch = json!({"metadata": {"annotations": remove}});
            if let Err(e) = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                tracing::warn!(pod = %t.key, error = %e, "cannot clear the launch annotations");
            }
        }
    }

    /// One placement round over the due pods and the live offers.
    async fn schedule(&mut self) {
        let now = Instant::now();
        if !self.subscribed || self.offers.is_empty() {
            return;
        }
        let due = self.queue.ready(now);
        if due.is_empty() {
            return;
        }
        let offers: Vec<v1::Offer> = self.offers.live().cloned().collect();
        let mut inv = Inventory::build(&offers, &self.matching.executor, &self.known_executors);
        let mut matcher = Matcher::new(
            &mut inv,
            &self.matching.executor,
            &self.matching.podtask.framework_roles,
            self.matching.policy,
        );
        let tasks: Vec<&PodTask> = due
            .iter()
            .filter_map(|u| self.queue.get(u).map(|w| &w.task))
            .collect();
        let outcomes = matcher.place(&mut inv, &tasks, true);
        let slots: Vec<(String, String, Vec<String>)> = inv
            .slots()
            .iter()
            .map(|s| (s.agent_id.clone(), s.hostname.clone(), s.offer_ids.clone()))
            .collect();
        let mut plans = Vec::new();
        let mut unplaced = Vec::new();
        for (uid, outcome) in due.iter().zip(outcomes) {
            let Some(w) = self.queue.get(uid) else {
                continue;
            };
            match outcome {
                Outcome::Placed(a) => {
                    let (agent_id, hostname, offer_ids) = &slots[a.slot];
                    let task_id = TaskId::generate();
                    let annotations = launch::placement_annotations(&Placement {
                        task_id: &task_id,
                        agent_id,
                        hostname,
                        offer_id: &offer_ids[0],
                        resources: Vec::new(),
                        host_ports: a.host_ports.clone(),
                        executor: a.executor.clone(),
                    });
                    plans.push(Plan {
                        uid: uid.clone(),
                        key: w.task.key.clone(),
                        slot: a.slot,
                        task_id,
                        annotations,
                        resources: a.resources,
                        host_ports: a.host_ports,
                        executor: a.executor,
                        resource_version: w.task.resource_version.clone(),
                        queued_since: w.since,
                    });
                }
                Outcome::Unplaced(u) => unplaced.push((uid.clone(), u.summary)),
            }
        }
        for (uid, summary) in unplaced {
            self.queue.failed(&uid, summary.clone(), now);
            if let Some(key) = self.pods.get(&uid).map(|s| s.key.clone()) {
                self.events.failed_scheduling(
                    &key,
                    &uid,
                    &format!("no Mesos offer fits the pod: {summary}"),
                );
            }
        }
        if plans.is_empty() {
            return;
        }
        // Durable intent first: annotate every placed pod. The answer is
        // the pod as stored, which is what travels to the executor.
        let client = self.pods_api.clone().into_client();
        let annotated = futures::stream::iter(plans.into_iter().map(|p| {
            let api: Api<Pod> = Api::namespaced(client.clone(), &p.key.namespace);
            async move {
                let patch = json!({"metadata": {"annotations": p.annotations, "resourceVersion": p.resource_version}});
                let r = api
                    .patch(&p.key.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await;
                (p, r)
            }
        }))
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await;
        let mut by_slot: BTreeMap<usize, Vec<v1::TaskInfo>> = BTreeMap::new();
        for (p, r) in annotated {
            let pod = match r {
                Ok(pod) => pod,
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    self.queue.remove(&p.uid);
                    continue;
                }
                Err(e) => {
                    // Changed meanwhile (409) or unreachable: try again with what the watch brings.
                    tracing::debug!(pod = p.uid, error = %e, "cannot annotate the pod; it stays queued");
                    continue;
                }
            };
            let (agent_id, hostname, offer_ids) = &slots[p.slot];
            self.queue.remove(&p.uid);
            self.tasks.insert(Tracked {
                uid: p.uid.clone(),
                key: p.key.clone(),
                task_id: p.task_id.clone(),
                agent_id: agent_id.clone(),
                hostname: hostname.clone(),
                executor_id: p.executor.executor_id.value.clone(),
                launched_at: Some(now),
                phase: Phase::Launched,
                killing: false,
            });
            let placement = Placement {
                task_id: &p.task_id,
                agent_id,
                hostname,
                offer_id: &offer_ids[0],
                resources: p.resources,
                host_ports: p.host_ports,
                executor: p.executor.clone(),
            };
            let built = PodTask::from_pod(pod, &self.matching.podtask)
                .map_err(|e| e.to_string())
                .and_then(|t| launch::build(&t, placement).ok_or_else(|| "no pod".to_string()));
            let l = match built {
                Ok(l) => l,
                Err(e) => {
                    // Annotated but not launched: reconciliation reports the
                    // task lost and the pod is queued again.
                    tracing::warn!(pod = %p.key, error = e, "cannot build the task of an annotated pod");
                    let _ = self
                        .driver
                        .reconcile(vec![(
                            (&p.task_id).into(),
                            Some(v1::AgentId {
                                value: agent_id.clone(),
                            }),
                        )])
                        .await;
                    continue;
                }
            };
            self.metrics
                .queue_wait
                .observe(now.duration_since(p.queued_since).as_secs_f64());
            self.known_executors
                .entry(agent_id.clone())
                .or_insert(p.executor);
            self.events.scheduled(
                &p.key,
                &p.uid,
                &format!("Launched on agent {hostname} as Mesos task {}", p.task_id),
            );
            self.metrics.launched.inc();
            by_slot.entry(p.slot).or_default().push(l.task);
        }
        for (slot, task_infos) in by_slot {
            let (_, _, offer_ids) = &slots[slot];
            self.offers.take(offer_ids, now);
            let op = v1::offer::Operation {
                r#type: Some(v1::offer::operation::Type::Launch as i32),
                launch: Some(v1::offer::operation::Launch {
                    task_infos: task_infos.clone(),
                }),
                ..Default::default()
            };
            let ids = offer_ids
                .iter()
                .map(|o| v1::OfferId { value: o.clone() })
                .collect();
            self.metrics.offers_used.inc_by(offer_ids.len() as u64);
            if let Err(e) = self
                .driver
                .accept(ids, vec![op], Some(self.offers.filters()))
                .await
            {
                // Not sent: the annotated tasks are reconciled as lost and requeued.
                tracing::warn!(error = %e, tasks = task_infos.len(), "ACCEPT failed; reconciling the tasks");
                let ts = task_infos
                    .iter()
                    .map(|t| (t.task_id.clone(), Some(t.agent_id.clone())))
                    .collect();
                let _ = self.driver.reconcile(ts).await;
            }
        }
    }
}
