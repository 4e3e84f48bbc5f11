//! The dev-master's books: frameworks, agents, offers and tasks, and every
//! rule that changes them. Synchronous and free of I/O: each operation
//! updates the books and sends events down the connections' channels, so the
//! whole master is testable without a network.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedSender;

use crate::mesos::encoding::Encoding;
use crate::mesos::proto::devcluster::{AgentEvent, RunningExecutor, agent_event};
use crate::mesos::proto::v1::{self, scheduler::Event, scheduler::event};
use crate::mesos::stream::record;
use crate::resources::{self, Resources};

use v1::TaskState;
use v1::task_status::{Reason, Source};

/// Capability numbers of `FrameworkInfo.Capability.Type` that change what the master does.
const CAP_PARTITION_AWARE: i32 = 5;
const CAP_MULTI_ROLE: i32 = 6;

/// Default refuse filter (seconds), as Mesos's `Filters.refuse_seconds`.
const DEFAULT_REFUSE: f64 = 5.0;

/// A connection a stream of events goes down.
#[derive(Debug, Clone)]
pub struct Conn {
    /// Records for the response body.
    pub tx: UnboundedSender<Bytes>,
    /// The negotiated encoding.
    pub encoding: Encoding,
    /// Mesos-Stream-Id (frameworks) or a connection id (agents).
    pub stream_id: String,
}

impl Conn {
    fn send<M: prost::Message + prost::Name>(&self, m: &M) {
        let _ = self.tx.send(record(m, self.encoding));
    }
}

/// A subscribed framework.
#[derive(Debug)]
pub struct Framework {
    /// Its id.
    pub id: String,
    /// What it said about itself (with `id` filled in).
    pub info: v1::FrameworkInfo,
    /// Its event stream, while connected.
    pub conn: Option<Conn>,
    /// When a disconnected framework is removed.
    pub failover_deadline: Option<Instant>,
    /// Roles it asked not to get offers for.
    pub suppressed: HashSet<String>,
    /// Refuse filters: agent id → (refused resources, until).
    pub filters: Vec<(String, Resources, Instant)>,
}

impl Framework {
    fn has_capability(&self, cap: i32) -> bool {
        self.info.capabilities.iter().any(|c| c.r#type == Some(cap))
    }

    /// Roles it takes offers for.
    pub fn roles(&self) -> Vec<String> {
        if self.has_capability(CAP_MULTI_ROLE) {
            self.info.roles.clone()
        } else {
            vec![legacy_role(&self.info)]
        }
    }

    fn partition_aware(&self) -> bool {
        self.has_capability(CAP_PARTITION_AWARE)
    }
}

/// How an agent runs its tasks.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentKind {
    /// A `km dev-agent` process connected over the agent protocol.
    Real,
    /// Simulated: tasks run without processes; RUNNING comes after `delay`.
    Hollow {
        /// Delay before TASK_RUNNING.
        delay: Duration,
    },
}

/// A registered agent.
#[derive(Debug)]
pub struct Agent {
    /// Its id.
    pub id: String,
    /// What it said about itself (with `id` filled in).
    pub info: v1::AgentInfo,
    /// Everything it has.
    pub total: Resources,
    /// Its event stream, while connected (always `None` for hollow agents).
    pub conn: Option<Conn>,
    /// Real or hollow.
    pub kind: AgentKind,
    /// When a disconnected agent is removed.
    pub remove_at: Option<Instant>,
    /// Executors running there: (framework id, executor id) → info.
    pub executors: BTreeMap<(String, String), v1::ExecutorInfo>,
}

impl Agent {
    fn active(&self) -> bool {
        self.conn.is_some() || matches!(self.kind, AgentKind::Hollow { .. })
    }
}

/// A task the master knows.
#[derive(Debug, Clone)]
pub struct Task {
    /// The framework.
    pub framework_id: String,
    /// The agent.
    pub agent_id: String,
    /// As launched.
    pub info: v1::TaskInfo,
    /// The latest status the framework was sent.
    pub status: v1::TaskStatus,
    /// The state of the newest update the agent holds for the task, when it
    /// is ahead of `status` (queued behind an unacknowledged one).
    pub latest_state: Option<TaskState>,
    /// Executor id (the task id for command tasks).
    pub executor_id: String,
    /// Whether the terminal update was acknowledged (then the task is forgotten).
    pub terminal_uuid: Option<Vec<u8>>,
}

impl Task {
    /// The task's state as far as the master knows: the newest the agent
    /// reported, even if the framework has not seen it yet (as Mesos's
    /// `Task.state`); resources are freed once it is terminal.
    pub fn state(&self) -> TaskState {
        self.latest_state.unwrap_or_else(|| self.reported_state())
    }

    /// The state the framework was last sent.
    fn reported_state(&self) -> TaskState {
        TaskState::try_from(self.status.state).unwrap_or(TaskState::TaskStaging)
    }
}

/// An outstanding offer.
#[derive(Debug, Clone)]
pub struct OfferRec {
    /// The framework it was made to.
    pub framework_id: String,
    /// The agent.
    pub agent_id: String,
    /// The offer as sent.
    pub offer: v1::Offer,
}

/// Work the async layer must schedule.
#[derive(Debug, Clone)]
pub enum Timer {
    /// A hollow agent's task starts running.
    HollowRunning {
        /// Framework.
        framework_id: String,
        /// Task.
        task_id: String,
    },
}

/// How many ended tasks `/state` keeps.
pub const COMPLETED_TASKS: usize = 1000;

/// Everything the master knows.
#[derive(Debug)]
pub struct Master {
    /// The master's id (a UUID).
    pub id: String,
    /// What SUBSCRIBED carries.
    pub info: v1::MasterInfo,
    /// Frameworks by id.
    pub frameworks: BTreeMap<String, Framework>,
    /// Ids of removed frameworks (resubscribing gets an ERROR).
    pub removed: HashSet<String>,
    /// Agents by id.
    pub agents: BTreeMap<String, Agent>,
    /// Outstanding offers by id.
    pub offers: HashMap<String, OfferRec>,
    /// Tasks by (framework id, task id).
    pub tasks: BTreeMap<(String, String), Task>,
    /// The last [`COMPLETED_TASKS`] tasks that ended (state.json's `completed_tasks`).
    pub completed: std::collections::VecDeque<Task>,
    /// Timers to schedule (drained by the async layer).
    pub timers: Vec<(Duration, Timer)>,
    /// How long a disconnected agent is kept.
    pub agent_timeout: Duration,
    next_framework: u64,
    next_offer: u64,
    next_agent: u64,
    /// Counters for /metrics/snapshot.
    pub counters: BTreeMap<&'static str, u64>,
}

/// Why a call was refused: an HTTP status and a plain-text body, as Mesos answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status code.
    pub status: u16,
    /// Body.
    pub message: String,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// The single role of a framework without MULTI_ROLE (`FrameworkInfo.role`, default `*`).
#[allow(deprecated)]
fn legacy_role(info: &v1::FrameworkInfo) -> String {
    info.role
        .clone()
        .unwrap_or_else(|| resources::ANY_ROLE.to_string())
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn event(t: event::Type) -> Event {
    Event {
        r#type: Some(t as i32),
        ..Default::default()
    }
}

fn is_terminal(s: TaskState) -> bool {
    matches!(
        s,
        TaskState::TaskFinished
            | TaskState::TaskFailed
            | TaskState::TaskKilled
            | TaskState::TaskLost
            | TaskState::TaskError
            | TaskState::TaskDropped
            | TaskState::TaskGone
            | TaskState::TaskGoneByOperator
    )
}

/// Strips allocation metadata so task and offer resources compare with an agent's total.
fn unallocated(rs: &[v1::Resource]) -> Resources {
    rs.iter()
        .map(|r| v1::Resource {
            allocation_info: None,
            ..r.clone()
        })
        .collect()
}

/// `a` minus as much of `b` as `a` holds.
fn minus(a: &Resources, b: &Resources) -> Resources {
    if let Some(r) = a.checked_sub(b) {
        return r;
    }
    let mut out = a.clone();
    for r in b.iter() {
        if let Some(n) = out.checked_sub_one(r) {
            out = n;
        }
    }
    out
}

impl Master {
    /// A master with no frameworks or agents.
    pub fn new(info: v1::MasterInfo, agent_timeout: Duration) -> Self {
        Master {
            id: info.id.clone(),
            info,
            frameworks: BTreeMap::new(),
            removed: HashSet::new(),
            agents: BTreeMap::new(),
            offers: HashMap::new(),
            tasks: BTreeMap::new(),
            completed: Default::default(),
            timers: Vec::new(),
            agent_timeout,
            next_framework: 0,
            next_offer: 0,
            next_agent: 0,
            counters: BTreeMap::new(),
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.counters.entry(what).or_default() += 1;
    }

    fn send(&self, framework_id: &str, e: &Event) {
        if let Some(c) = self
            .frameworks
            .get(framework_id)
            .and_then(|f| f.conn.as_ref())
        {
            c.send(e);
        }
    }

    fn send_agent(&self, agent_id: &str, e: &AgentEvent) {
        if let Some(c) = self.agents.get(agent_id).and_then(|a| a.conn.as_ref()) {
            c.send(e);
        }
    }

    // ----- frameworks -------------------------------------------------------

    /// SUBSCRIBE. Returns the framework id; the SUBSCRIBED (or ERROR) event
    /// and a first HEARTBEAT are already on `conn`.
    pub fn subscribe(
        &mut self,
        call_framework_id: Option<&str>,
        mut info: v1::FrameworkInfo,
        conn: Conn,
    ) -> Option<String> {
        let id = match call_framework_id.or(info.id.as_ref().map(|i| i.value.as_str())) {
            Some(id) if self.removed.contains(id) => {
                let mut e = event(event::Type::Error);
                e.error = Some(event::Error {
                    message: "Framework has been removed".into(),
                });
                conn.send(&e);
                return None;
            }
            Some(id) => id.to_string(),
            None => {
                let id = format!("{}-{:04}", self.id, self.next_framework);
                self.next_framework += 1;
                id
            }
        };
        info.id = Some(v1::FrameworkId { value: id.clone() });
        if let Some(old) = self.frameworks.get_mut(&id) {
            // Failover: the old stream is told and closed; its offers go away silently.
            if let Some(c) = old.conn.take() {
                let mut e = event(event::Type::Error);
                e.error = Some(event::Error {
                    message: "Framework failed over".into(),
                });
                c.send(&e);
            }
            // user and checkpoint cannot change on resubscribe.
            info.user = old.info.user.clone();
            info.checkpoint = old.info.checkpoint;
            old.info = info;
            old.failover_deadline = None;
            old.conn = Some(conn.clone());
            self.discard_offers_of(&id);
            self.tell_agents_framework_updated(&id);
        } else {
            self.frameworks.insert(
                id.clone(),
                Framework {
                    id: id.clone(),
                    info,
                    conn: Some(conn.clone()),
                    failover_deadline: None,
                    suppressed: HashSet::new(),
                    filters: Vec::new(),
                },
            );
        }
        let mut e = event(event::Type::Subscribed);
        e.subscribed = Some(event::Subscribed {
            framework_id: v1::FrameworkId { value: id.clone() },
            heartbeat_interval_seconds: Some(super::HEARTBEAT.as_secs_f64()),
            master_info: Some(self.info.clone()),
        });
        conn.send(&e);
        conn.send(&event(event::Type::Heartbeat));
        self.count("frameworks_subscribed");
        Some(id)
    }

    /// UPDATE_FRAMEWORK to every agent running tasks of `framework_id`, so
    /// that they resend its unacknowledged updates now instead of at their
    /// next retry (Mesos sends UpdateFrameworkMessage on re-registration).
    fn tell_agents_framework_updated(&self, framework_id: &str) {
        let agents: BTreeSet<&str> = self
            .tasks
            .values()
            .filter(|t| t.framework_id == framework_id)
            .map(|t| t.agent_id.as_str())
            .collect();
        let e = AgentEvent {
            r#type: Some(agent_event::Type::UpdateFramework as i32),
            update_framework: Some(agent_event::UpdateFramework {
                framework_id: v1::FrameworkId {
                    value: framework_id.into(),
                },
            }),
            ..Default::default()
        };
        for agent_id in agents {
            self.send_agent(agent_id, &e);
        }
    }

    /// The subscription stream with `stream_id` closed.
    pub fn framework_disconnected(&mut self, framework_id: &str, stream_id: &str, now: Instant) {
        let Some(f) = self.frameworks.get_mut(framework_id) else {
            return;
        };
        if f.conn.as_ref().map(|c| c.stream_id.as_str()) != Some(stream_id) {
            return; // an older stream, already replaced
        }
        f.conn = None;
        let timeout = f.info.failover_timeout.unwrap_or(0.0);
        f.failover_deadline = Some(now + Duration::from_secs_f64(timeout.clamp(0.0, 1e9)));
        self.discard_offers_of(framework_id);
        if timeout <= 0.0 {
            self.remove_framework(framework_id);
        }
    }

    /// Checks a non-SUBSCRIBE call's framework and stream id.
    pub fn check_call(
        &self,
        framework_id: Option<&str>,
        stream_id: Option<&str>,
    ) -> Result<(), Refusal> {
        let Some(fid) = framework_id else {
            return Err(Refusal::new(
                400,
                "Failed to validate scheduler::Call: Expecting 'framework_id' to be present",
            ));
        };
        let Some(f) = self.frameworks.get(fid) else {
            return Err(Refusal::new(400, "Framework cannot be found"));
        };
        let Some(sid) = stream_id else {
            return Err(Refusal::new(
                400,
                "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
            ));
        };
        let Some(conn) = &f.conn else {
            return Err(Refusal::new(403, "Framework is not subscribed"));
        };
        if conn.stream_id != sid {
            return Err(Refusal::new(
                400,
                format!(
                    "The stream ID '{sid}' included in this request didn't match the stream ID currently associated with framework ID {fid}"
                ),
            ));
        }
        Ok(())
    }

    /// TEARDOWN, or a failover timeout that ran out.
    pub fn remove_framework(&mut self, framework_id: &str) {
        let Some(mut f) = self.frameworks.remove(framework_id) else {
            return;
        };
        self.discard_offers_of(framework_id);
        for a in self.agents.values_mut() {
            a.executors.retain(|(fw, _), _| fw != framework_id);
        }
        let agents: Vec<String> = self.agents.keys().cloned().collect();
        for agent in agents {
            let mut e = AgentEvent {
                r#type: Some(agent_event::Type::ShutdownFramework as i32),
                ..Default::default()
            };
            e.shutdown_framework = Some(agent_event::ShutdownFramework {
                framework_id: v1::FrameworkId {
                    value: framework_id.into(),
                },
            });
            self.send_agent(&agent, &e);
        }
        self.tasks.retain(|(fw, _), _| fw != framework_id);
        self.removed.insert(framework_id.to_string());
        // Dropping the sender ends the stream.
        f.conn = None;
        self.count("frameworks_removed");
    }

    fn discard_offers_of(&mut self, framework_id: &str) {
        self.offers.retain(|_, o| o.framework_id != framework_id);
    }

    /// Removes frameworks and agents whose timeouts ran out.
    pub fn expire(&mut self, now: Instant) {
        let due: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| f.conn.is_none() && f.failover_deadline.is_some_and(|d| d <= now))
            .map(|f| f.id.clone())
            .collect();
        for id in due {
            self.remove_framework(&id);
        }
        let due: Vec<String> = self
            .agents
            .values()
            .filter(|a| a.remove_at.is_some_and(|d| d <= now))
            .map(|a| a.id.clone())
            .collect();
        for id in due {
            self.remove_agent(&id);
        }
        for f in self.frameworks.values_mut() {
            f.filters.retain(|(_, _, until)| *until > now);
        }
    }

    /// Sends a HEARTBEAT to every connected framework and agent.
    pub fn heartbeat(&self) {
        let hb = event(event::Type::Heartbeat);
        for f in self.frameworks.values() {
            if let Some(c) = &f.conn {
                c.send(&hb);
            }
        }
        let ahb = AgentEvent {
            r#type: Some(agent_event::Type::Heartbeat as i32),
            ..Default::default()
        };
        for a in self.agents.values() {
            if let Some(c) = &a.conn {
                c.send(&ahb);
            }
        }
    }

    // ----- offers -----------------------------------------------------------

    /// What each agent has that is neither used nor offered, by agent id.
    pub fn available_by_agent(&self) -> HashMap<String, Resources> {
        let mut used = self.used_by_agent();
        self.agents
            .values()
            .map(|a| {
                let u = used.remove(a.id.as_str()).unwrap_or_default();
                (a.id.clone(), self.available_with(a, u))
            })
            .collect()
    }

    /// Resources held by live tasks and outstanding offers, per agent, in one pass.
    fn used_by_agent(&self) -> HashMap<&str, Resources> {
        let mut used: HashMap<&str, Resources> = HashMap::new();
        for t in self.tasks.values().filter(|t| !is_terminal(t.state())) {
            *used.entry(t.agent_id.as_str()).or_default() += &unallocated(&t.info.resources);
        }
        for o in self.offers.values() {
            *used.entry(o.agent_id.as_str()).or_default() += &unallocated(&o.offer.resources);
        }
        used
    }

    fn available_with(&self, agent: &Agent, mut used: Resources) -> Resources {
        for e in agent.executors.values() {
            used += &unallocated(&e.resources);
        }
        minus(&agent.total, &used)
    }

    /// One allocation cycle: offers every active agent's available resources
    /// to active frameworks, the least-served framework first, one OFFERS
    /// event per framework. Returns the number of offers made.
    pub fn allocate(&mut self, now: Instant) -> usize {
        let active: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| f.conn.is_some())
            .map(|f| f.id.clone())
            .collect();
        if active.is_empty() {
            return 0;
        }
        let mut served: HashMap<String, f64> = active.iter().map(|f| (f.clone(), 0.0)).collect();
        for t in self.tasks.values().filter(|t| !is_terminal(t.state())) {
            if let Some(s) = served.get_mut(&t.framework_id) {
                *s += unallocated(&t.info.resources).scalar("cpus");
            }
        }
        let mut batches: HashMap<String, Vec<v1::Offer>> = HashMap::new();
        let agent_ids: Vec<String> = self
            .agents
            .values()
            .filter(|a| a.active())
            .map(|a| a.id.clone())
            .collect();
        let mut used: HashMap<String, Resources> = self
            .used_by_agent()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let mut new_offers = Vec::new();
        for agent_id in agent_ids {
            let Some(agent) = self.agents.get(&agent_id) else {
                continue;
            };
            let mut avail = self.available_with(agent, used.remove(&agent_id).unwrap_or_default());
            if avail.is_empty() {
                continue;
            }
            let mut order = active.clone();
            order.sort_by(|a, b| served[a].total_cmp(&served[b]).then_with(|| a.cmp(b)));
            for fid in order {
                let f = &self.frameworks[&fid];
                let multi = f.has_capability(CAP_MULTI_ROLE);
                for role in f.roles() {
                    if f.suppressed.contains(&role) {
                        continue;
                    }
                    let chunk: Resources = avail
                        .iter()
                        .filter(|r| {
                            let rr = resources::reservation_role(r);
                            rr == resources::ANY_ROLE || rr == role
                        })
                        .cloned()
                        .collect();
                    if chunk.scalar("cpus") < 0.01 && chunk.scalar("mem") < 32.0 {
                        continue;
                    }
                    let filtered = f.filters.iter().any(|(a, refused, until)| {
                        *a == agent_id && *until > now && refused.contains(&chunk)
                    });
                    if filtered {
                        continue;
                    }
                    avail = minus(&avail, &chunk);
                    let alloc = multi.then(|| v1::resource::AllocationInfo {
                        role: Some(role.clone()),
                    });
                    let offered: Vec<v1::Resource> = chunk
                        .iter()
                        .map(|r| v1::Resource {
                            allocation_info: alloc.clone(),
                            ..r.clone()
                        })
                        .collect();
                    *served.entry(fid.clone()).or_default() += chunk.scalar("cpus");
                    let id = format!("{}-O{}", self.id, self.next_offer);
                    self.next_offer += 1;
                    let executor_ids = agent
                        .executors
                        .keys()
                        .filter(|(fw, _)| *fw == fid)
                        .map(|(_, e)| v1::ExecutorId { value: e.clone() })
                        .collect();
                    let offer = v1::Offer {
                        id: v1::OfferId { value: id.clone() },
                        framework_id: v1::FrameworkId { value: fid.clone() },
                        agent_id: v1::AgentId {
                            value: agent_id.clone(),
                        },
                        hostname: agent.info.hostname.clone(),
                        url: Some(v1::Url {
                            scheme: "http".into(),
                            address: v1::Address {
                                hostname: Some(agent.info.hostname.clone()),
                                ip: None,
                                port: agent.info.port.unwrap_or(5051),
                            },
                            path: Some("/slave(1)".into()),
                            ..Default::default()
                        }),
                        resources: offered,
                        attributes: agent.info.attributes.clone(),
                        executor_ids,
                        allocation_info: alloc,
                        ..Default::default()
                    };
                    new_offers.push((
                        id,
                        OfferRec {
                            framework_id: fid.clone(),
                            agent_id: agent_id.clone(),
                            offer: offer.clone(),
                        },
                    ));
                    batches.entry(fid.clone()).or_default().push(offer);
                    if avail.is_empty() {
                        break;
                    }
                }
            }
        }
        self.offers.extend(new_offers);
        let mut n = 0;
        for (fid, offers) in batches {
            n += offers.len();
            let mut e = event(event::Type::Offers);
            e.offers = Some(event::Offers { offers });
            self.send(&fid, &e);
        }
        *self.counters.entry("offers_sent").or_default() += n as u64;
        n
    }

    fn rescind_agent_offers(&mut self, agent_id: &str) {
        let ids: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| o.agent_id == agent_id)
            .map(|(k, _)| k.clone())
            .collect();
        for id in ids {
            if let Some(o) = self.offers.remove(&id) {
                let mut e = event(event::Type::Rescind);
                e.rescind = Some(event::Rescind {
                    offer_id: v1::OfferId { value: id },
                });
                self.send(&o.framework_id, &e);
            }
        }
    }

    fn add_filter(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        refused: Resources,
        filters: Option<&v1::Filters>,
        now: Instant,
    ) {
        let secs = filters
            .and_then(|f| f.refuse_seconds)
            .unwrap_or(DEFAULT_REFUSE);
        let secs = if secs < 0.0 {
            DEFAULT_REFUSE
        } else {
            secs.min(31_536_000.0)
        };
        if secs == 0.0 || refused.is_empty() {
            return;
        }
        if let Some(f) = self.frameworks.get_mut(framework_id) {
            f.filters.push((
                agent_id.to_string(),
                refused,
                now + Duration::from_secs_f64(secs),
            ));
        }
    }

    /// DECLINE: the offers go back, filtered for `filters.refuse_seconds`.
    pub fn decline(
        &mut self,
        framework_id: &str,
        offer_ids: &[v1::OfferId],
        filters: Option<&v1::Filters>,
        now: Instant,
    ) {
        for id in offer_ids {
            match self.offers.get(&id.value) {
                Some(o) if o.framework_id == framework_id => {
                    let o = self.offers.remove(&id.value).expect("checked");
                    self.add_filter(
                        framework_id,
                        &o.agent_id,
                        unallocated(&o.offer.resources),
                        filters,
                        now,
                    );
                }
                _ => {
                    tracing::debug!(offer = %id.value, "ignoring decline of an offer that is no longer valid")
                }
            }
        }
    }

    /// REVIVE: clears filters and un-suppresses `roles` (all when empty).
    pub fn revive(&mut self, framework_id: &str, roles: &[String]) {
        if let Some(f) = self.frameworks.get_mut(framework_id) {
            f.filters.clear();
            if roles.is_empty() {
                f.suppressed.clear();
            } else {
                for r in roles {
                    f.suppressed.remove(r);
                }
            }
        }
    }

    /// SUPPRESS: no more offers for `roles` (all when empty).
    pub fn suppress(&mut self, framework_id: &str, roles: &[String]) {
        if let Some(f) = self.frameworks.get_mut(framework_id) {
            let roles = if roles.is_empty() {
                f.roles()
            } else {
                roles.to_vec()
            };
            f.suppressed.extend(roles);
        }
    }

    /// ACCEPT with LAUNCH and LAUNCH_GROUP operations.
    pub fn accept(
        &mut self,
        framework_id: &str,
        accept: v1::scheduler::call::Accept,
        now: Instant,
    ) {
        let launches: Vec<(Vec<v1::TaskInfo>, Option<v1::ExecutorInfo>)> = accept
            .operations
            .iter()
            .filter_map(|op| {
                if let Some(l) = &op.launch {
                    Some((l.task_infos.clone(), None))
                } else {
                    op.launch_group
                        .as_ref()
                        .map(|g| (g.task_group.tasks.clone(), Some(g.executor.clone())))
                }
            })
            .collect();
        // Validate the offers.
        let mut agent: Option<String> = None;
        let mut offered = Resources::new();
        let mut problem: Option<String> = None;
        if accept.offer_ids.is_empty() {
            problem = Some("No offers specified".into());
        }
        for id in &accept.offer_ids {
            match self.offers.get(&id.value) {
                None => problem = Some(format!("Offer {} is no longer valid", id.value)),
                Some(o) if o.framework_id != framework_id => {
                    problem = Some(format!("Offer {} belongs to another framework", id.value))
                }
                Some(o) => {
                    if agent.as_ref().is_some_and(|a| *a != o.agent_id) {
                        problem = Some("Aggregated offers must belong to one single agent".into());
                    }
                    agent = Some(o.agent_id.clone());
                    offered += &unallocated(&o.offer.resources);
                }
            }
        }
        for id in &accept.offer_ids {
            if self
                .offers
                .get(&id.value)
                .is_some_and(|o| o.framework_id == framework_id)
            {
                self.offers.remove(&id.value);
            }
        }
        let partition_aware = self
            .frameworks
            .get(framework_id)
            .is_some_and(Framework::partition_aware);
        let (Some(agent_id), None) = (agent.clone(), problem.clone()) else {
            let why = problem.unwrap_or_default();
            for (tasks, _) in &launches {
                for t in tasks {
                    let state = if partition_aware {
                        TaskState::TaskDropped
                    } else {
                        TaskState::TaskLost
                    };
                    self.master_update(
                        framework_id,
                        t,
                        state,
                        Reason::InvalidOffers,
                        &format!("Task launched with invalid offers: {why}"),
                    );
                }
            }
            return;
        };
        let mut remaining = offered;
        // Executors this ACCEPT starts: charged once, later tasks must match them.
        let mut starting: HashMap<String, v1::ExecutorInfo> = HashMap::new();
        for (tasks, group_executor) in launches {
            let mut group_ok = true;
            let mut checked = Vec::new();
            for t in &tasks {
                match self.validate_task(
                    framework_id,
                    &agent_id,
                    t,
                    group_executor.as_ref(),
                    &remaining,
                    &mut starting,
                ) {
                    Ok(need) => {
                        remaining = minus(&remaining, &need);
                        checked.push(t.clone());
                    }
                    Err(why) => {
                        group_ok = false;
                        let reason = if group_executor.is_some() {
                            Reason::TaskGroupInvalid
                        } else {
                            Reason::TaskInvalid
                        };
                        self.master_update(framework_id, t, TaskState::TaskError, reason, &why);
                    }
                }
            }
            if group_executor.is_some() && !group_ok {
                for t in &checked {
                    self.master_update(
                        framework_id,
                        t,
                        TaskState::TaskError,
                        Reason::TaskGroupInvalid,
                        "Task group is invalid",
                    );
                }
                continue;
            }
            for t in checked {
                self.launch(framework_id, &agent_id, t, group_executor.as_ref(), now);
            }
        }
        self.add_filter(
            framework_id,
            &agent_id,
            remaining,
            accept.filters.as_ref(),
            now,
        );
    }

    /// Checks a task against Mesos's rules; returns the resources it takes
    /// (its own plus a new executor's).
    fn validate_task(
        &self,
        framework_id: &str,
        agent_id: &str,
        t: &v1::TaskInfo,
        group_executor: Option<&v1::ExecutorInfo>,
        remaining: &Resources,
        starting: &mut HashMap<String, v1::ExecutorInfo>,
    ) -> Result<Resources, String> {
        let id = &t.task_id.value;
        if id.is_empty()
            || id.len() > 255
            || id == "."
            || id == ".."
            || id.chars().any(|c| c.is_control() || c == '/' || c == '\\')
        {
            return Err(format!("Task ID '{id}' is invalid"));
        }
        if self
            .tasks
            .contains_key(&(framework_id.to_string(), id.clone()))
        {
            return Err("Task has duplicate ID".into());
        }
        if t.agent_id.value != agent_id {
            return Err(format!("Task uses invalid agent: {}", t.agent_id.value));
        }
        if t.resources.is_empty() {
            return Err("Task uses no resources".into());
        }
        for r in &t.resources {
            resources::validate(r).map_err(|e| format!("Task uses invalid resources: {e}"))?;
        }
        let executor = group_executor.or(t.executor.as_ref());
        match (group_executor, &t.executor, &t.command) {
            (None, Some(_), Some(_)) | (None, None, None) => {
                return Err("Task should have at least one (but not both) of CommandInfo or ExecutorInfo present".into());
            }
            (Some(g), Some(e), _) if g.executor_id != e.executor_id => {
                return Err("Task group tasks must use the group's executor".into());
            }
            _ => {}
        }
        let mut need = unallocated(&t.resources);
        if let Some(e) = executor {
            if let Some(ty) = e.r#type
                && ty == v1::executor_info::Type::Default as i32
                && group_executor.is_none()
            {
                return Err("'ExecutorInfo.type' must be CUSTOM for LAUNCH".into());
            }
            if group_executor.is_none() && e.command.is_none() {
                return Err("Executor must have a CommandInfo".into());
            }
            let agent = &self.agents[agent_id];
            let known = agent
                .executors
                .get(&(framework_id.to_string(), e.executor_id.value.clone()))
                .or_else(|| starting.get(&e.executor_id.value));
            match known {
                Some(running) => {
                    let mut mine = e.clone();
                    mine.framework_id = running.framework_id.clone();
                    if &mine != running {
                        return Err(format!(
                            "ExecutorInfo is not compatible with existing ExecutorInfo of executor {}",
                            e.executor_id.value
                        ));
                    }
                }
                None => need += &unallocated(&e.resources),
            }
        }
        if !remaining.contains(&need) {
            return Err(format!(
                "Total resources {need} required by task and its executor is more than available {remaining}"
            ));
        }
        if let Some(e) = executor {
            starting
                .entry(e.executor_id.value.clone())
                .or_insert_with(|| {
                    let mut e = e.clone();
                    e.framework_id = Some(v1::FrameworkId {
                        value: framework_id.into(),
                    });
                    e
                });
        }
        Ok(need)
    }

    fn launch(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        mut t: v1::TaskInfo,
        group_executor: Option<&v1::ExecutorInfo>,
        _now: Instant,
    ) {
        let fw_id = v1::FrameworkId {
            value: framework_id.into(),
        };
        let executor = group_executor
            .cloned()
            .or_else(|| t.executor.clone())
            .map(|mut e| {
                e.framework_id = Some(fw_id.clone());
                e
            });
        if let Some(e) = &executor
            && group_executor.is_none()
        {
            t.executor = Some(e.clone());
        }
        let executor_id = executor
            .as_ref()
            .map_or_else(|| t.task_id.value.clone(), |e| e.executor_id.value.clone());
        let Some(framework) = self.frameworks.get(framework_id).map(|f| f.info.clone()) else {
            return;
        };
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        if let Some(e) = &executor {
            agent
                .executors
                .entry((framework_id.to_string(), executor_id.clone()))
                .or_insert_with(|| e.clone());
        }
        let status = v1::TaskStatus {
            task_id: t.task_id.clone(),
            state: TaskState::TaskStaging as i32,
            agent_id: Some(v1::AgentId {
                value: agent_id.into(),
            }),
            executor_id: Some(v1::ExecutorId {
                value: executor_id.clone(),
            }),
            timestamp: Some(now_secs()),
            ..Default::default()
        };
        let kind = agent.kind.clone();
        self.tasks.insert(
            (framework_id.to_string(), t.task_id.value.clone()),
            Task {
                framework_id: framework_id.into(),
                agent_id: agent_id.into(),
                info: t.clone(),
                status,
                latest_state: None,
                executor_id,
                terminal_uuid: None,
            },
        );
        self.count("tasks_launched");
        match kind {
            AgentKind::Hollow { delay } => self.timers.push((
                delay,
                Timer::HollowRunning {
                    framework_id: framework_id.into(),
                    task_id: t.task_id.value.clone(),
                },
            )),
            AgentKind::Real => {
                let e = match group_executor {
                    Some(g) => {
                        let mut g = g.clone();
                        g.framework_id = Some(fw_id);
                        AgentEvent {
                            r#type: Some(agent_event::Type::RunTaskGroup as i32),
                            run_task_group: Some(agent_event::RunTaskGroup {
                                framework,
                                executor: g,
                                task_group: v1::TaskGroupInfo { tasks: vec![t] },
                            }),
                            ..Default::default()
                        }
                    }
                    None => AgentEvent {
                        r#type: Some(agent_event::Type::RunTask as i32),
                        run_task: Some(agent_event::RunTask { framework, task: t }),
                        ..Default::default()
                    },
                };
                self.send_agent(agent_id, &e);
            }
        }
    }

    /// An update the master makes itself (no uuid), sent to the framework.
    fn master_update(
        &mut self,
        framework_id: &str,
        t: &v1::TaskInfo,
        state: TaskState,
        reason: Reason,
        message: &str,
    ) {
        let status = v1::TaskStatus {
            task_id: t.task_id.clone(),
            state: state as i32,
            message: Some(message.to_string()),
            source: Some(Source::Master as i32),
            reason: Some(reason as i32),
            agent_id: Some(t.agent_id.clone()),
            timestamp: Some(now_secs()),
            ..Default::default()
        };
        self.send_update(framework_id, status);
    }

    fn send_update(&self, framework_id: &str, status: v1::TaskStatus) {
        let mut e = event(event::Type::Update);
        e.update = Some(event::Update { status });
        self.send(framework_id, &e);
    }

    /// A status update from an agent (or a hollow agent), forwarded to the
    /// framework. `latest_state` is the state of the newest update the agent
    /// holds for the task, when it says.
    pub fn status_update(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        mut status: v1::TaskStatus,
        latest_state: Option<i32>,
    ) {
        let key = (framework_id.to_string(), status.task_id.value.clone());
        status.agent_id = Some(v1::AgentId {
            value: agent_id.into(),
        });
        if status.timestamp.is_none() {
            status.timestamp = Some(now_secs());
        }
        if let Some(t) = self.tasks.get_mut(&key) {
            if status.executor_id.is_none() {
                status.executor_id = Some(v1::ExecutorId {
                    value: t.executor_id.clone(),
                });
            }
            let state = TaskState::try_from(status.state).unwrap_or(TaskState::TaskStaging);
            if is_terminal(state) {
                t.terminal_uuid = status.uuid.clone();
            }
            t.status = status.clone();
            t.latest_state = latest_state
                .and_then(|l| TaskState::try_from(l).ok())
                .filter(|l| *l as i32 != t.status.state);
        }
        self.count("status_updates");
        self.send_update(framework_id, status);
    }

    /// ACKNOWLEDGE from a framework: relayed to the agent; a terminal update's
    /// acknowledgement makes the master forget the task.
    pub fn acknowledge(
        &mut self,
        framework_id: &str,
        ack: &v1::scheduler::call::Acknowledge,
    ) -> Result<(), Refusal> {
        if ack.uuid.len() != 16 {
            return Err(Refusal::new(
                400,
                "Failed to validate scheduler::Call: Not a valid UUID",
            ));
        }
        let key = (framework_id.to_string(), ack.task_id.value.clone());
        if let Some(t) = self.tasks.get(&key)
            && t.terminal_uuid.as_deref() == Some(ack.uuid.as_slice())
            && let Some(t) = self.tasks.remove(&key)
        {
            if self.completed.len() >= COMPLETED_TASKS {
                self.completed.pop_front();
            }
            self.completed.push_back(t);
        }
        let e = AgentEvent {
            r#type: Some(agent_event::Type::Acknowledge as i32),
            acknowledge: Some(agent_event::Acknowledge {
                framework_id: v1::FrameworkId {
                    value: framework_id.into(),
                },
                task_id: ack.task_id.clone(),
                uuid: ack.uuid.clone(),
            }),
            ..Default::default()
        };
        self.send_agent(&ack.agent_id.value, &e);
        Ok(())
    }

    /// KILL: known tasks are killed on their agent; unknown ones are answered
    /// like an explicit reconciliation.
    pub fn kill(&mut self, framework_id: &str, kill: &v1::scheduler::call::Kill) {
        let key = (framework_id.to_string(), kill.task_id.value.clone());
        let Some(t) = self.tasks.get(&key) else {
            self.reconcile(
                framework_id,
                &[(kill.task_id.clone(), kill.agent_id.clone())],
            );
            return;
        };
        let agent_id = t.agent_id.clone();
        let hollow = matches!(
            self.agents.get(&agent_id).map(|a| &a.kind),
            Some(AgentKind::Hollow { .. })
        );
        if hollow {
            let status = hollow_status(t, TaskState::TaskKilled);
            self.status_update(framework_id, &agent_id, status, None);
            return;
        }
        let e = AgentEvent {
            r#type: Some(agent_event::Type::KillTask as i32),
            kill_task: Some(agent_event::KillTask {
                framework_id: v1::FrameworkId {
                    value: framework_id.into(),
                },
                task_id: kill.task_id.clone(),
                kill_policy: kill.kill_policy,
            }),
            ..Default::default()
        };
        self.send_agent(&agent_id, &e);
    }

    /// Closes every event stream, as a master that dies does.
    pub fn drop_connections(&mut self) {
        for f in self.frameworks.values_mut() {
            f.conn = None;
        }
        for a in self.agents.values_mut() {
            a.conn = None;
        }
    }

    /// SHUTDOWN of an executor. A hollow agent kills the executor's tasks
    /// and reports the executor gone, as a real agent would.
    pub fn shutdown_executor(&mut self, framework_id: &str, s: &v1::scheduler::call::Shutdown) {
        let agent_id = s.agent_id.value.clone();
        if matches!(
            self.agents.get(&agent_id).map(|a| &a.kind),
            Some(AgentKind::Hollow { .. })
        ) {
            let running: Vec<v1::TaskStatus> = self
                .tasks
                .values()
                .filter(|t| {
                    t.framework_id == framework_id
                        && t.agent_id == agent_id
                        && t.executor_id == s.executor_id.value
                        && !is_terminal(t.state())
                })
                .map(|t| hollow_status(t, TaskState::TaskKilled))
                .collect();
            for status in running {
                self.status_update(framework_id, &agent_id, status, None);
            }
            self.executor_exited(&agent_id, framework_id, &s.executor_id.value, Some(0));
            return;
        }
        let e = AgentEvent {
            r#type: Some(agent_event::Type::ShutdownExecutor as i32),
            shutdown_executor: Some(agent_event::ShutdownExecutor {
                framework_id: v1::FrameworkId {
                    value: framework_id.into(),
                },
                executor_id: s.executor_id.clone(),
            }),
            ..Default::default()
        };
        self.send_agent(&s.agent_id.value, &e);
    }

    /// MESSAGE from a framework to an executor.
    pub fn framework_message(&mut self, framework_id: &str, m: &v1::scheduler::call::Message) {
        let e = AgentEvent {
            r#type: Some(agent_event::Type::Message as i32),
            message: Some(agent_event::Message {
                framework_id: v1::FrameworkId {
                    value: framework_id.into(),
                },
                executor_id: m.executor_id.clone(),
                data: m.data.clone(),
            }),
            ..Default::default()
        };
        self.send_agent(&m.agent_id.value, &e);
    }

    /// RECONCILE, answered as Mesos does (§5.8 of the wire facts): UPDATEs
    /// from the master with REASON_RECONCILIATION and no uuid.
    pub fn reconcile(&mut self, framework_id: &str, tasks: &[(v1::TaskId, Option<v1::AgentId>)]) {
        let partition_aware = self
            .frameworks
            .get(framework_id)
            .is_some_and(Framework::partition_aware);
        let latest = |t: &Task| {
            let mut s = t.status.clone();
            s.uuid = None;
            s.source = Some(Source::Master as i32);
            s.reason = Some(Reason::Reconciliation as i32);
            s.message = Some("Reconciliation: Latest task state".into());
            s.timestamp = Some(now_secs());
            s
        };
        let mut out = Vec::new();
        if tasks.is_empty() {
            for t in self
                .tasks
                .values()
                .filter(|t| t.framework_id == framework_id)
            {
                out.push(latest(t));
            }
        } else {
            for (task_id, agent_id) in tasks {
                if let Some(t) = self
                    .tasks
                    .get(&(framework_id.to_string(), task_id.value.clone()))
                {
                    out.push(latest(t));
                    continue;
                }
                let agent_known = agent_id
                    .as_ref()
                    .is_some_and(|a| self.agents.contains_key(&a.value));
                let (state, message) = match (agent_known, partition_aware) {
                    (true, true) => (
                        TaskState::TaskGone,
                        "Reconciliation: Task is unknown to the agent",
                    ),
                    (true, false) => (
                        TaskState::TaskLost,
                        "Reconciliation: Task is unknown to the agent",
                    ),
                    (false, true) => (TaskState::TaskUnknown, "Reconciliation: Task is unknown"),
                    (false, false) => (TaskState::TaskLost, "Reconciliation: Task is unknown"),
                };
                out.push(v1::TaskStatus {
                    task_id: task_id.clone(),
                    state: state as i32,
                    message: Some(message.into()),
                    source: Some(Source::Master as i32),
                    reason: Some(Reason::Reconciliation as i32),
                    agent_id: agent_id.clone(),
                    timestamp: Some(now_secs()),
                    ..Default::default()
                });
            }
        }
        for s in out {
            self.send_update(framework_id, s);
        }
    }

    // ----- agents -----------------------------------------------------------

    /// An agent registers (or registers again). Returns its id; REGISTERED is on `conn`.
    pub fn register_agent(
        &mut self,
        mut info: v1::AgentInfo,
        executors: Vec<RunningExecutor>,
        conn: Option<Conn>,
        kind: AgentKind,
    ) -> String {
        let id = match info.id.as_ref().map(|i| i.value.clone()) {
            Some(id) if !id.is_empty() => id,
            _ => {
                let id = format!("{}-S{}", self.id, self.next_agent);
                self.next_agent += 1;
                id
            }
        };
        info.id = Some(v1::AgentId { value: id.clone() });
        let total: Resources = info.resources.iter().cloned().collect();
        let mut execs = BTreeMap::new();
        for re in &executors {
            let fid = re
                .framework
                .id
                .as_ref()
                .map(|i| i.value.clone())
                .unwrap_or_default();
            execs.insert(
                (fid.clone(), re.executor.executor_id.value.clone()),
                re.executor.clone(),
            );
            for t in &re.tasks {
                let key = (fid.clone(), t.task_id.value.clone());
                let status = re
                    .statuses
                    .iter()
                    .find(|s| s.task_id == t.task_id)
                    .cloned()
                    .unwrap_or_else(|| v1::TaskStatus {
                        task_id: t.task_id.clone(),
                        state: TaskState::TaskRunning as i32,
                        ..Default::default()
                    });
                self.tasks.entry(key).or_insert_with(|| Task {
                    framework_id: fid.clone(),
                    agent_id: id.clone(),
                    info: t.clone(),
                    status,
                    latest_state: None,
                    executor_id: re.executor.executor_id.value.clone(),
                    terminal_uuid: None,
                });
            }
        }
        if let Some(c) = &conn {
            let e = AgentEvent {
                r#type: Some(agent_event::Type::Registered as i32),
                registered: Some(agent_event::Registered {
                    agent_id: v1::AgentId { value: id.clone() },
                    master_info: Some(self.info.clone()),
                }),
                ..Default::default()
            };
            c.send(&e);
        }
        match self.agents.get_mut(&id) {
            Some(a) => {
                a.info = info;
                a.total = total;
                a.conn = conn;
                a.remove_at = None;
                for (k, v) in execs {
                    a.executors.entry(k).or_insert(v);
                }
            }
            None => {
                self.agents.insert(
                    id.clone(),
                    Agent {
                        id: id.clone(),
                        info,
                        total,
                        conn,
                        kind,
                        remove_at: None,
                        executors: execs,
                    },
                );
            }
        }
        self.count("agents_registered");
        id
    }

    /// An agent's stream closed: its offers are rescinded, tasks of
    /// non-checkpointing frameworks are lost, and it is removed unless it
    /// comes back within the agent timeout.
    pub fn agent_disconnected(&mut self, agent_id: &str, stream_id: &str, now: Instant) {
        let Some(a) = self.agents.get_mut(agent_id) else {
            return;
        };
        if a.conn.as_ref().map(|c| c.stream_id.as_str()) != Some(stream_id) {
            return;
        }
        a.conn = None;
        a.remove_at = Some(now + self.agent_timeout);
        self.rescind_agent_offers(agent_id);
        let lost: Vec<(String, String)> = self
            .tasks
            .iter()
            // Lost as far as the framework knows: an ending it has not been
            // sent yet is lost with the agent's connection.
            .filter(|(_, t)| t.agent_id == agent_id && !is_terminal(t.reported_state()))
            .filter(|(_, t)| {
                self.frameworks
                    .get(&t.framework_id)
                    .is_none_or(|f| f.info.checkpoint != Some(true))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in lost {
            self.lose_task(&key, Reason::AgentDisconnected, "Agent disconnected", false);
        }
    }

    fn lose_task(
        &mut self,
        key: &(String, String),
        reason: Reason,
        message: &str,
        unreachable: bool,
    ) {
        let Some(t) = self.tasks.remove(key) else {
            return;
        };
        let partition_aware = self
            .frameworks
            .get(&t.framework_id)
            .is_some_and(Framework::partition_aware);
        let state = if unreachable && partition_aware {
            TaskState::TaskUnreachable
        } else {
            TaskState::TaskLost
        };
        let mut s = t.status.clone();
        s.state = state as i32;
        s.uuid = None;
        s.source = Some(Source::Master as i32);
        s.reason = Some(reason as i32);
        s.message = Some(message.into());
        s.timestamp = Some(now_secs());
        if unreachable {
            s.unreachable_time = Some(v1::TimeInfo {
                nanoseconds: (now_secs() * 1e9) as i64,
            });
        }
        self.send_update(&t.framework_id, s);
    }

    /// Removes an agent: its tasks are lost (or unreachable), every connected
    /// framework gets FAILURE{agent_id}.
    pub fn remove_agent(&mut self, agent_id: &str) {
        self.rescind_agent_offers(agent_id);
        let keys: Vec<(String, String)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.agent_id == agent_id)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.lose_task(&key, Reason::AgentRemoved, "Agent removed", true);
        }
        self.agents.remove(agent_id);
        let mut e = event(event::Type::Failure);
        e.failure = Some(event::Failure {
            agent_id: Some(v1::AgentId {
                value: agent_id.into(),
            }),
            executor_id: None,
            status: None,
        });
        for f in self.frameworks.values().filter(|f| f.conn.is_some()) {
            self.send(&f.id, &e);
        }
        self.count("agents_removed");
    }

    /// An executor process ended on an agent.
    pub fn executor_exited(
        &mut self,
        agent_id: &str,
        framework_id: &str,
        executor_id: &str,
        status: Option<i32>,
    ) {
        let removed = self.agents.get_mut(agent_id).and_then(|a| {
            a.executors
                .remove(&(framework_id.to_string(), executor_id.to_string()))
        });
        // Command executors (executor id = task id) are not reported, as in Mesos.
        if removed.is_some() {
            let mut e = event(event::Type::Failure);
            e.failure = Some(event::Failure {
                agent_id: Some(v1::AgentId {
                    value: agent_id.into(),
                }),
                executor_id: Some(v1::ExecutorId {
                    value: executor_id.into(),
                }),
                status,
            });
            self.send(framework_id, &e);
        }
    }

    /// An executor's message to its framework.
    pub fn executor_message(
        &mut self,
        agent_id: &str,
        framework_id: &str,
        executor_id: &v1::ExecutorId,
        data: Vec<u8>,
    ) {
        let mut e = event(event::Type::Message);
        e.message = Some(event::Message {
            agent_id: v1::AgentId {
                value: agent_id.into(),
            },
            executor_id: executor_id.clone(),
            data,
        });
        self.send(framework_id, &e);
    }

    /// A hollow agent's timer fired.
    pub fn fire(&mut self, timer: Timer) {
        match timer {
            Timer::HollowRunning {
                framework_id,
                task_id,
            } => {
                let Some(t) = self.tasks.get(&(framework_id.clone(), task_id)) else {
                    return;
                };
                if t.state() != TaskState::TaskStaging {
                    return;
                }
                let agent = t.agent_id.clone();
                let s = hollow_status(t, TaskState::TaskRunning);
                self.status_update(&framework_id, &agent, s, None);
            }
        }
    }
}

/// A hollow agent's update: from the "executor", with a uuid to acknowledge.
fn hollow_status(t: &Task, state: TaskState) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: t.info.task_id.clone(),
        state: state as i32,
        source: Some(Source::Executor as i32),
        executor_id: Some(v1::ExecutorId {
            value: t.executor_id.clone(),
        }),
        uuid: Some(uuid::Uuid::new_v4().as_bytes().to_vec()),
        timestamp: Some(now_secs()),
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
