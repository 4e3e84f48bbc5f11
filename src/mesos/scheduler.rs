//! The scheduler side of the Mesos v1 HTTP API: a client library that keeps
//! a framework subscribed to the leading master and sends its calls.
//!
//! # Lifecycle
//!
//! [`start`] spawns one background task (the *driver*) and returns a cloneable
//! [`Scheduler`] handle plus the receiving end of the event channel. The driver
//! walks these states, published by [`Scheduler::state`]:
//!
//! ```text
//!            no master known / backing off
//!   Disconnected ─────────────────────────────┐
//!        │ master detected                    │
//!        ▼                                    │ 503, 404, 5xx, I/O error,
//!   Subscribing ── 307 ──▶ Subscribing        │ timeout, truncated stream,
//!        │ 200 + SUBSCRIBED    (leader)       │ missed heartbeats, EOF,
//!        ▼                                    │ master changed, ERROR
//!   Subscribed ───────────────────────────────┘ (not "removed"/"failed over")
//!        │
//!        ├── ERROR "Framework has been removed" / "failed over",
//!        │   or SUBSCRIBE answered 4xx (not 404/408/429) or 501 ──▶ Failed
//!        └── Scheduler::stop, Scheduler::teardown, event receiver dropped ──▶ Stopped
//! ```
//!
//! * **Subscribing.** SUBSCRIBE goes to `<base>/api/v1/scheduler` with
//!   `Content-Type` and `Accept` both set to the configured encoding, HTTP basic
//!   authentication if configured, and no `Mesos-Stream-Id`. A 307 is followed
//!   (protocol-relative or absolute `Location`) for at most [`MAX_REDIRECTS`]
//!   hops. 503 (no leader, recovering), 404, 408, 429 and other 5xx are
//!   retried, as the C++ scheduler library does; the other 4xx answers and 501
//!   mean the request itself is wrong (bad `FrameworkInfo`, credentials,
//!   content type) and end the driver with [`SchedulerEvent::Failed`].
//! * **Subscribed.** The first record must be `SUBSCRIBED`. Its framework id is
//!   remembered: it becomes `FrameworkInfo.id` and `Call.framework_id` of every
//!   later SUBSCRIBE (failover keeps the framework and its tasks), and the
//!   `framework_id` of every call. The `Mesos-Stream-Id` answer header goes on
//!   every call. HEARTBEAT events only feed the watchdog: when no event at all
//!   arrives for `missed_heartbeats × heartbeat_interval`, the connection is
//!   taken for dead and dropped. Only time spent waiting on the master counts,
//!   not time spent waiting for the application to take an event.
//! * **Back to Disconnected.** Any failure of the stream, and any change of the
//!   detected master, ends the subscription. A subscription that had reached
//!   `Subscribed` reports [`SchedulerEvent::Disconnected`]. The driver then
//!   resubscribes: at once after a master change, otherwise after an
//!   exponential backoff with jitter (`backoff_min` doubling up to
//!   `backoff_max`, each delay drawn from the upper half of its step), reset by
//!   every successful subscription.
//! * **ERROR events.** An ERROR saying the framework was removed (torn down,
//!   failover timeout expired) or failed over (another instance subscribed with
//!   the same id) cannot be cured by resubscribing: the driver reports
//!   [`SchedulerEvent::Failed`] and stops. Any other ERROR (typically a refused
//!   SUBSCRIBE: invalid `FrameworkInfo`, not authorized) is passed on as
//!   [`SchedulerEvent::Event`] and the driver resubscribes with backoff, so a
//!   transient authorizer failure heals; a framework that wants to give up on
//!   a refusal calls [`Scheduler::stop`].
//! * **Stopped.** [`Scheduler::stop`], a successful [`Scheduler::teardown`] or
//!   dropping the event receiver end the driver; the event channel then closes.
//!
//! Calls ([`Scheduler::call`] and the typed helpers) go on their own
//! connections, never on the subscription's. They succeed on `202 Accepted`
//! (`200 OK` for UPDATE_FRAMEWORK and RECONCILE_OPERATIONS) and fail with the
//! status and the body text otherwise, or with [`CallError::NotSubscribed`]
//! while no subscription is up.
//!
//! Every network wait is bounded: connecting and each call by
//! `request_timeout`, the SUBSCRIBE answer and its first event by
//! `request_timeout`, later events by the heartbeat watchdog. The driver waits
//! without bound only for the application to take events from the channel
//! (that is the back-pressure) and for a master to be detected.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::detector::{MasterAddress, redirect_base};
use super::encoding::Encoding;
use super::proto::v1;
use super::proto::v1::scheduler::{Call, Event, call, event};
use super::recordio::DEFAULT_MAX_RECORD;
use super::stream::{STREAM_ID_HEADER, events};

/// Path of the scheduler API on a master, appended to [`MasterAddress::base`].
pub const SCHEDULER_PATH: &str = "/api/v1/scheduler";

/// How many 307 redirects one SUBSCRIBE attempt follows before it backs off.
pub const MAX_REDIRECTS: usize = 3;

/// Heartbeat interval assumed when SUBSCRIBED does not carry a usable one
/// (Mesos always sends 15 s).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);

/// Longest heartbeat interval believed from a master; longer values are capped
/// so a bogus SUBSCRIBED cannot switch the watchdog off.
const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3600);

/// The shortest backoff step, so a zero `backoff_min` cannot spin.
const MIN_BACKOFF: Duration = Duration::from_millis(1);

/// How much of an error answer's body is kept for error messages.
const MAX_ERROR_BODY: usize = 4096;

/// Installs ring as the process-wide rustls crypto provider, which reqwest
/// (built with `rustls-no-provider`) needs before any client is built.
/// Idempotent, and harmless when another provider was installed first.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing a race with another installer is fine: a provider is set.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}

/// HTTP basic credentials for a master started with
/// `--authenticate_http_frameworks`. The secret must not contain `:`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The principal; must equal `FrameworkInfo.principal` when that is set.
    pub principal: String,
    /// The secret.
    pub secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("principal", &self.principal)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// How to subscribe and talk to the master. [`SchedulerConfig::new`] gives the
/// defaults; every field is public so callers adjust what they need.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The framework to subscribe. Set `id` to fail over to an existing
    /// framework, and set `failover_timeout`: Mesos' default of 0 tears the
    /// framework down the moment its stream drops.
    pub framework: v1::FrameworkInfo,
    /// Body encoding of requests and of the event stream (protobuf default).
    pub encoding: Encoding,
    /// HTTP basic credentials sent with every request.
    pub credentials: Option<Credentials>,
    /// Roles to subscribe with offers suppressed. Later
    /// [`Scheduler::suppress`] and [`Scheduler::revive`] calls update the set
    /// sent on resubscription.
    pub suppressed_roles: Vec<String>,
    /// Heartbeats that may be missed before the stream is taken for dead (5).
    pub missed_heartbeats: u32,
    /// First resubscription delay (1 s).
    pub backoff_min: Duration,
    /// Cap of the resubscription delay (15 s, as the Mesos docs suggest).
    pub backoff_max: Duration,
    /// Bound on connecting, on each call, and on the SUBSCRIBE answer and its
    /// first event (75 s, as the Mesos docs suggest).
    pub request_timeout: Duration,
    /// Longest accepted event record in bytes.
    pub max_record: usize,
    /// Capacity of the event channel.
    pub event_buffer: usize,
}

impl SchedulerConfig {
    /// The defaults for `framework`: protobuf, no credentials, nothing
    /// suppressed, 5 missed heartbeats, backoff 1 s to 15 s, 75 s timeout.
    pub fn new(framework: v1::FrameworkInfo) -> Self {
        SchedulerConfig {
            framework,
            encoding: Encoding::Protobuf,
            credentials: None,
            suppressed_roles: Vec::new(),
            missed_heartbeats: 5,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(15),
            request_timeout: Duration::from_secs(75),
            max_record: DEFAULT_MAX_RECORD,
            event_buffer: 256,
        }
    }
}

/// What the driver tells the framework.
// `Subscribed` (~300 bytes) is rare; the frequent `Event` is boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum SchedulerEvent {
    /// A subscription is up (first time or after a resubscription). Calls work
    /// from now on. Offers made before a disconnection are gone.
    Subscribed {
        /// The framework's id, kept for every later resubscription.
        framework_id: v1::FrameworkId,
        /// The master's heartbeat interval.
        heartbeat_interval: Duration,
        /// The master that accepted the subscription (after redirects), with
        /// the `MasterInfo` from SUBSCRIBED when the master sent one.
        master: MasterAddress,
    },
    /// An event from the master: OFFERS, RESCIND, UPDATE, MESSAGE, FAILURE,
    /// INVERSE_OFFERS, UPDATE_OPERATION_STATUS, a recoverable ERROR, and
    /// types newer than this client. Never HEARTBEAT or SUBSCRIBED.
    Event(Box<Event>),
    /// The subscription ended; the driver resubscribes by itself. Calls fail
    /// with [`CallError::NotSubscribed`] until the next `Subscribed`.
    Disconnected {
        /// Why the subscription ended.
        reason: String,
    },
    /// The framework cannot go on (removed, failed over by another instance,
    /// or SUBSCRIBE refused for a reason retrying cannot fix). The driver has
    /// stopped and the channel closes after this event.
    Failed {
        /// What the master said, and what to check.
        message: String,
    },
}

/// Where the driver is, as published by [`Scheduler::state`].
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// No subscription: no master detected yet, or waiting to retry.
    Disconnected {
        /// Why (the last failure, or that no master is known).
        reason: String,
    },
    /// A SUBSCRIBE is in flight to `master`.
    Subscribing {
        /// Base URL of the master being asked.
        master: String,
    },
    /// A subscription stream is up; calls go to `master`.
    Subscribed {
        /// Base URL of the master holding the stream.
        master: String,
        /// The `Mesos-Stream-Id` sent with every call.
        stream_id: String,
        /// The subscribed framework.
        framework_id: v1::FrameworkId,
    },
    /// The driver ended because the framework cannot go on.
    Failed {
        /// Same text as [`SchedulerEvent::Failed`].
        message: String,
    },
    /// The driver ended on request.
    Stopped,
}

/// Building the scheduler client failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// reqwest could not build its HTTP client.
    #[error(
        "building the HTTP client for the Mesos scheduler API failed; \
         check the TLS setup (install_crypto_provider installs ring)"
    )]
    Client(#[source] reqwest::Error),
}

/// A call was not accepted by the master.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No subscription is up (not yet, or between two).
    #[error(
        "cannot send {call}: no subscription to a Mesos master is up; \
         wait for SchedulerEvent::Subscribed and retry"
    )]
    NotSubscribed {
        /// The call type.
        call: &'static str,
    },
    /// The driver has ended; nothing can be sent any more.
    #[error("cannot send {call}: the scheduler client has ended ({reason}); start a new one")]
    Stopped {
        /// The call type.
        call: &'static str,
        /// Why the driver ended.
        reason: String,
    },
    /// The call cannot be sent as built.
    #[error("invalid {call} call: {reason}")]
    Invalid {
        /// The call type.
        call: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The request could not be sent or its answer not read.
    #[error("sending {call} to {url} failed; check that the master is reachable")]
    Transport {
        /// The call type.
        call: &'static str,
        /// Where it went.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The master answered with a status other than the call's success code.
    #[error("the master at {url} answered {call} with HTTP {status}: {body:?}; {}", status_hint(*status))]
    Rejected {
        /// The call type.
        call: &'static str,
        /// Where it went.
        url: String,
        /// HTTP status code.
        status: u16,
        /// The start of the answer's body (Mesos explains errors there).
        body: String,
    },
}

/// A hint for an HTTP status answering a call.
fn status_hint(status: u16) -> &'static str {
    match status {
        307 => "this master is not the leader; the client resubscribes to the leader",
        400 => "check the call's fields, the framework id and that the stream id is current",
        401 => "check the configured principal and secret",
        403 => "the master does not consider this framework subscribed, or refuses its principal",
        415 | 406 => "the master does not accept this encoding",
        503 => "the master is recovering or has no leader; retry later",
        _ => "see the master's log",
    }
}

/// The name of a call's type, for messages and logs.
fn call_name(call: &Call) -> &'static str {
    call.r#type
        .and_then(|t| call::Type::try_from(t).ok())
        .map_or("UNKNOWN", |t| t.as_str_name())
}

/// The scheduler API endpoint on the master at `base`.
fn endpoint(base: &str) -> String {
    format!("{}{SCHEDULER_PATH}", base.trim_end_matches('/'))
}

/// Builders for every scheduler call this client sends. They leave
/// `framework_id` unset; [`Scheduler::call`] fills it in.
pub mod calls {
    use super::{Call, CallError, call, v1};

    fn envelope(ty: call::Type) -> Call {
        Call {
            r#type: Some(ty as i32),
            ..Default::default()
        }
    }

    /// SUBSCRIBE. A `framework` with an id (a resubscription) sets both
    /// `Call.framework_id` and `framework_info.id`, as the master requires.
    pub fn subscribe(framework: &v1::FrameworkInfo, suppressed_roles: Vec<String>) -> Call {
        Call {
            framework_id: framework.id.clone(),
            subscribe: Some(call::Subscribe {
                framework_info: framework.clone(),
                suppressed_roles,
                offer_constraints: None,
            }),
            ..envelope(call::Type::Subscribe)
        }
    }

    /// TEARDOWN: remove the framework, killing all its tasks and executors.
    pub fn teardown() -> Call {
        envelope(call::Type::Teardown)
    }

    /// ACCEPT offers with operations (LAUNCH, LAUNCH_GROUP, RESERVE, ...).
    pub fn accept(
        offer_ids: Vec<v1::OfferId>,
        operations: Vec<v1::offer::Operation>,
        filters: Option<v1::Filters>,
    ) -> Call {
        Call {
            accept: Some(call::Accept {
                offer_ids,
                operations,
                filters,
            }),
            ..envelope(call::Type::Accept)
        }
    }

    /// DECLINE offers.
    pub fn decline(offer_ids: Vec<v1::OfferId>, filters: Option<v1::Filters>) -> Call {
        Call {
            decline: Some(call::Decline { offer_ids, filters }),
            ..envelope(call::Type::Decline)
        }
    }

    /// REVIVE offers for `roles` (empty: all the framework's roles), clearing
    /// their filters.
    pub fn revive(roles: Vec<String>) -> Call {
        Call {
            revive: Some(call::Revive { roles }),
            ..envelope(call::Type::Revive)
        }
    }

    /// SUPPRESS offers for `roles` (empty: all the framework's roles).
    pub fn suppress(roles: Vec<String>) -> Call {
        Call {
            suppress: Some(call::Suppress { roles }),
            ..envelope(call::Type::Suppress)
        }
    }

    /// KILL a task.
    pub fn kill(
        task_id: v1::TaskId,
        agent_id: Option<v1::AgentId>,
        kill_policy: Option<v1::KillPolicy>,
    ) -> Call {
        Call {
            kill: Some(call::Kill {
                task_id,
                agent_id,
                kill_policy,
            }),
            ..envelope(call::Type::Kill)
        }
    }

    /// SHUTDOWN a custom executor.
    pub fn shutdown(executor_id: v1::ExecutorId, agent_id: v1::AgentId) -> Call {
        Call {
            shutdown: Some(call::Shutdown {
                executor_id,
                agent_id,
            }),
            ..envelope(call::Type::Shutdown)
        }
    }

    /// ACKNOWLEDGE a status update. `Ok(None)` for an update without a uuid
    /// (the master made it, and it must not be acknowledged); an error for
    /// one with a uuid but no agent id, which cannot be acknowledged.
    pub fn acknowledge(status: &v1::TaskStatus) -> Result<Option<Call>, CallError> {
        let Some(uuid) = status.uuid.as_ref().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let Some(agent_id) = status.agent_id.clone() else {
            return Err(CallError::Invalid {
                call: "ACKNOWLEDGE",
                reason: format!(
                    "the update of task {:?} carries a uuid but no agent_id; \
                     acknowledge the update as the master delivered it",
                    status.task_id.value
                ),
            });
        };
        Ok(Some(Call {
            acknowledge: Some(call::Acknowledge {
                agent_id,
                task_id: status.task_id.clone(),
                uuid: uuid.clone(),
            }),
            ..envelope(call::Type::Acknowledge)
        }))
    }

    /// RECONCILE tasks; an empty list asks for all of the framework's tasks
    /// (implicit reconciliation).
    pub fn reconcile(tasks: Vec<(v1::TaskId, Option<v1::AgentId>)>) -> Call {
        Call {
            reconcile: Some(call::Reconcile {
                tasks: tasks
                    .into_iter()
                    .map(|(task_id, agent_id)| call::reconcile::Task { task_id, agent_id })
                    .collect(),
            }),
            ..envelope(call::Type::Reconcile)
        }
    }

    /// MESSAGE: best-effort data to an executor.
    pub fn message(agent_id: v1::AgentId, executor_id: v1::ExecutorId, data: Vec<u8>) -> Call {
        Call {
            message: Some(call::Message {
                agent_id,
                executor_id,
                data,
            }),
            ..envelope(call::Type::Message)
        }
    }

    /// UPDATE_FRAMEWORK: change the framework's info (roles, capabilities,
    /// ...) without resubscribing.
    pub fn update_framework(
        framework_info: v1::FrameworkInfo,
        suppressed_roles: Vec<String>,
    ) -> Call {
        Call {
            update_framework: Some(call::UpdateFramework {
                framework_info,
                suppressed_roles,
                offer_constraints: None,
            }),
            ..envelope(call::Type::UpdateFramework)
        }
    }
}

/// The roles a framework subscribes with: `roles` for MULTI_ROLE frameworks,
/// otherwise `role` (default `*`).
// `role` is deprecated in favour of MULTI_ROLE, but is still what a framework
// without that capability subscribes with.
#[allow(deprecated)]
fn framework_roles(framework: &v1::FrameworkInfo) -> Vec<String> {
    if framework.roles.is_empty() {
        vec![framework.role.clone().unwrap_or_else(|| "*".to_owned())]
    } else {
        framework.roles.clone()
    }
}

/// What the next SUBSCRIBE sends, kept current by UPDATE_FRAMEWORK, SUPPRESS
/// and REVIVE.
#[derive(Debug, Clone)]
struct Subscription {
    framework: v1::FrameworkInfo,
    suppressed: BTreeSet<String>,
}

impl Subscription {
    /// Records a successful SUPPRESS of `roles` (empty: all).
    fn suppressed(&mut self, roles: &[String]) {
        let roles = if roles.is_empty() {
            framework_roles(&self.framework)
        } else {
            roles.to_vec()
        };
        self.suppressed.extend(roles);
    }

    /// Records a successful REVIVE of `roles` (empty: all).
    fn revived(&mut self, roles: &[String]) {
        if roles.is_empty() {
            self.suppressed.clear();
        } else {
            for r in roles {
                self.suppressed.remove(r);
            }
        }
    }

    fn call(&self) -> Call {
        calls::subscribe(&self.framework, self.suppressed.iter().cloned().collect())
    }
}

/// Exponential backoff: step `n` is `min × 2ⁿ` capped at `max`, and each
/// delay is drawn from the upper half of its step.
#[derive(Debug, Clone)]
struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(MIN_BACKOFF);
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The current step before jitter.
    fn step(&self) -> Duration {
        2u32.checked_pow(self.attempt)
            .and_then(|f| self.min.checked_mul(f))
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The next delay, with `unit` in [0, 1] choosing within the step.
    fn next_with(&mut self, unit: f64) -> Duration {
        let step = self.step();
        self.attempt = self.attempt.saturating_add(1);
        jittered(step, unit)
    }

    fn next_delay(&mut self) -> Duration {
        self.next_with(random_unit())
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A delay in `[step/2, step]`.
fn jittered(step: Duration, unit: f64) -> Duration {
    let half = step / 2;
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        1.0
    };
    half + (step - half).mul_f64(unit)
}

/// A uniformly random number in [0, 1).
fn random_unit() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u64_pair().0 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// The heartbeat interval announced in SUBSCRIBED, or the default when it is
/// missing or unusable.
fn heartbeat_interval(seconds: Option<f64>) -> Duration {
    match seconds {
        Some(s) if s.is_finite() && s > 0.0 => Duration::try_from_secs_f64(s)
            .map_or(DEFAULT_HEARTBEAT_INTERVAL, |d| {
                d.min(MAX_HEARTBEAT_INTERVAL)
            }),
        _ => DEFAULT_HEARTBEAT_INTERVAL,
    }
}

/// How long the stream may stay silent before it is taken for dead.
fn watchdog_timeout(interval: Duration, missed_heartbeats: u32) -> Duration {
    interval.saturating_mul(missed_heartbeats.max(1))
}

/// Whether an ERROR event ends the framework for good.
fn error_is_terminal(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("removed") || m.contains("failed over")
}

/// Whether a non-200 answer to SUBSCRIBE is worth retrying.
fn subscribe_status_is_retryable(status: u16) -> bool {
    matches!(status, 404 | 408 | 429) || (status >= 500 && status != 501) || status < 400
}

/// An error and its sources, one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// State shared by the handles and the driver.
struct Shared {
    client: reqwest::Client,
    encoding: Encoding,
    credentials: Option<Credentials>,
    request_timeout: Duration,
    state: watch::Sender<State>,
    subscription: Mutex<Subscription>,
    cancel: CancellationToken,
}

impl Shared {
    fn subscription(&self) -> std::sync::MutexGuard<'_, Subscription> {
        self.subscription
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A POST of `body` to the scheduler endpoint at `base`.
    fn post(&self, base: &str, body: Bytes, stream_id: Option<&str>) -> reqwest::RequestBuilder {
        let content_type = self.encoding.content_type();
        let mut request = self
            .client
            .post(endpoint(base))
            .header(CONTENT_TYPE, content_type)
            .header(ACCEPT, content_type)
            .body(body);
        if let Some(c) = &self.credentials {
            request = request.basic_auth(&c.principal, Some(&c.secret));
        }
        if let Some(id) = stream_id {
            request = request.header(STREAM_ID_HEADER, id);
        }
        request
    }
}

/// A handle on the scheduler client. Cheap to clone; every clone talks to the
/// same subscription.
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("state", &*self.shared.state.borrow())
            .finish_non_exhaustive()
    }
}

/// Starts the scheduler client: a background task subscribes to the master
/// that `masters` names (and to each new one it names), and delivers events
/// on the returned channel. Must be called inside a tokio runtime.
///
/// The driver runs until [`Scheduler::stop`], a successful
/// [`Scheduler::teardown`], a [`SchedulerEvent::Failed`], or until the event
/// receiver is dropped. Dropping every [`Scheduler`] handle does not stop it.
pub fn start(
    config: SchedulerConfig,
    masters: watch::Receiver<Option<MasterAddress>>,
) -> Result<(Scheduler, mpsc::Receiver<SchedulerEvent>), StartError> {
    install_crypto_provider();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.request_timeout)
        .tcp_keepalive(Duration::from_secs(30))
        .build()
        .map_err(StartError::Client)?;
    let (state, _) = watch::channel(State::Disconnected {
        reason: "no master detected yet".to_owned(),
    });
    let shared = Arc::new(Shared {
        client,
        encoding: config.encoding,
        credentials: config.credentials,
        request_timeout: config.request_timeout,
        state,
        subscription: Mutex::new(Subscription {
            framework: config.framework,
            suppressed: config.suppressed_roles.into_iter().collect(),
        }),
        cancel: CancellationToken::new(),
    });
    let (events, receiver) = mpsc::channel(config.event_buffer.max(1));
    let driver = Driver {
        shared: shared.clone(),
        masters,
        masters_open: true,
        events,
        missed_heartbeats: config.missed_heartbeats.max(1),
        max_record: config.max_record,
        backoff: Backoff::new(config.backoff_min, config.backoff_max),
    };
    tokio::spawn(driver.run());
    Ok((Scheduler { shared }, receiver))
}

impl Scheduler {
    /// The framework's id: the configured one, or the one the master assigned
    /// in the first SUBSCRIBED. Kept across disconnections.
    pub fn framework_id(&self) -> Option<v1::FrameworkId> {
        self.shared.subscription().framework.id.clone()
    }

    /// Where the driver is now.
    pub fn state(&self) -> State {
        self.shared.state.borrow().clone()
    }

    /// A receiver that sees every state change (for readiness checks).
    pub fn watch_state(&self) -> watch::Receiver<State> {
        self.shared.state.subscribe()
    }

    /// Ends the driver: the subscription is dropped (the master keeps the
    /// framework for its `failover_timeout`), calls fail, the event channel
    /// closes.
    pub fn stop(&self) {
        self.shared.cancel.cancel();
    }

    /// Sends `call` on a new request to the subscribed master, with the
    /// stream id, and `framework_id` filled in when unset. Succeeds on 202
    /// (200 for UPDATE_FRAMEWORK and RECONCILE_OPERATIONS; the answer body of
    /// the latter is dropped).
    pub async fn call(&self, mut call: Call) -> Result<(), CallError> {
        let name = call_name(&call);
        let ty = call.r#type.and_then(|t| call::Type::try_from(t).ok());
        match ty {
            None | Some(call::Type::Unknown) => {
                return Err(CallError::Invalid {
                    call: name,
                    reason: "the call has no known type".to_owned(),
                });
            }
            Some(call::Type::Subscribe) => {
                return Err(CallError::Invalid {
                    call: name,
                    reason: "the client subscribes by itself; configure SUBSCRIBE through \
                             SchedulerConfig"
                        .to_owned(),
                });
            }
            Some(_) => {}
        }
        let (base, stream_id, framework_id) = match &*self.shared.state.borrow() {
            State::Subscribed {
                master,
                stream_id,
                framework_id,
            } => (master.clone(), stream_id.clone(), framework_id.clone()),
            State::Failed { message } => {
                return Err(CallError::Stopped {
                    call: name,
                    reason: message.clone(),
                });
            }
            State::Stopped => {
                return Err(CallError::Stopped {
                    call: name,
                    reason: "stopped".to_owned(),
                });
            }
            State::Disconnected { .. } | State::Subscribing { .. } => {
                return Err(CallError::NotSubscribed { call: name });
            }
        };
        if call.framework_id.is_none() {
            call.framework_id = Some(framework_id);
        }
        let url = endpoint(&base);
        let body = Bytes::from(self.shared.encoding.encode(&call));
        let response = self
            .shared
            .post(&base, body, Some(&stream_id))
            .timeout(self.shared.request_timeout)
            .send()
            .await
            .map_err(|source| CallError::Transport {
                call: name,
                url: url.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        let success = match ty {
            Some(call::Type::UpdateFramework | call::Type::ReconcileOperations) => {
                status == 200 || status == 202
            }
            _ => status == 202,
        };
        if success {
            debug!(call = name, master = %base, status, "call accepted");
            return Ok(());
        }
        let body = read_prefix(response, MAX_ERROR_BODY).await;
        warn!(call = name, master = %base, status, body = %body, "call refused");
        Err(CallError::Rejected {
            call: name,
            url,
            status,
            body,
        })
    }

    /// ACCEPTs offers with operations. Unused resources are declined with
    /// `filters` (Mesos' default: refuse for 5 s).
    pub async fn accept(
        &self,
        offer_ids: Vec<v1::OfferId>,
        operations: Vec<v1::offer::Operation>,
        filters: Option<v1::Filters>,
    ) -> Result<(), CallError> {
        self.call(calls::accept(offer_ids, operations, filters))
            .await
    }

    /// DECLINEs offers.
    pub async fn decline(
        &self,
        offer_ids: Vec<v1::OfferId>,
        filters: Option<v1::Filters>,
    ) -> Result<(), CallError> {
        self.call(calls::decline(offer_ids, filters)).await
    }

    /// REVIVEs offers for `roles` (empty: all). Resubscriptions stop sending
    /// these roles as suppressed.
    pub async fn revive(&self, roles: Vec<String>) -> Result<(), CallError> {
        self.call(calls::revive(roles.clone())).await?;
        self.shared.subscription().revived(&roles);
        Ok(())
    }

    /// SUPPRESSes offers for `roles` (empty: all). Resubscriptions send these
    /// roles as suppressed, so a failover does not bring offers back.
    pub async fn suppress(&self, roles: Vec<String>) -> Result<(), CallError> {
        self.call(calls::suppress(roles.clone())).await?;
        self.shared.subscription().suppressed(&roles);
        Ok(())
    }

    /// KILLs a task.
    pub async fn kill(
        &self,
        task_id: v1::TaskId,
        agent_id: Option<v1::AgentId>,
        kill_policy: Option<v1::KillPolicy>,
    ) -> Result<(), CallError> {
        self.call(calls::kill(task_id, agent_id, kill_policy)).await
    }

    /// SHUTDOWNs an executor.
    pub async fn shutdown(
        &self,
        executor_id: v1::ExecutorId,
        agent_id: v1::AgentId,
    ) -> Result<(), CallError> {
        self.call(calls::shutdown(executor_id, agent_id)).await
    }

    /// ACKNOWLEDGEs a status update if it carries a uuid; updates without one
    /// come from the master and are not acknowledged. Returns whether an
    /// ACKNOWLEDGE was sent.
    pub async fn acknowledge(&self, status: &v1::TaskStatus) -> Result<bool, CallError> {
        match calls::acknowledge(status)? {
            Some(call) => self.call(call).await.map(|()| true),
            None => Ok(false),
        }
    }

    /// RECONCILEs tasks (empty: all of the framework's tasks).
    pub async fn reconcile(
        &self,
        tasks: Vec<(v1::TaskId, Option<v1::AgentId>)>,
    ) -> Result<(), CallError> {
        self.call(calls::reconcile(tasks)).await
    }

    /// Sends a best-effort MESSAGE to an executor.
    pub async fn message(
        &self,
        agent_id: v1::AgentId,
        executor_id: v1::ExecutorId,
        data: Vec<u8>,
    ) -> Result<(), CallError> {
        self.call(calls::message(agent_id, executor_id, data)).await
    }

    /// TEARDOWN: the master removes the framework with all its tasks. On
    /// success the driver stops (the master closes the stream; a
    /// `Disconnected` may come before the channel closes).
    pub async fn teardown(&self) -> Result<(), CallError> {
        self.call(calls::teardown()).await?;
        info!("framework torn down; stopping the scheduler client");
        self.stop();
        Ok(())
    }

    /// UPDATE_FRAMEWORK: replaces the framework's info and suppressed roles
    /// without resubscribing. `framework_info.id` is filled in when unset. On
    /// success later resubscriptions send the new info.
    pub async fn update_framework(
        &self,
        mut framework_info: v1::FrameworkInfo,
        suppressed_roles: Vec<String>,
    ) -> Result<(), CallError> {
        if framework_info.id.is_none() {
            framework_info.id = self.framework_id();
        }
        self.call(calls::update_framework(
            framework_info.clone(),
            suppressed_roles.clone(),
        ))
        .await?;
        let mut subscription = self.shared.subscription();
        subscription.framework = framework_info;
        subscription.suppressed = suppressed_roles.into_iter().collect();
        Ok(())
    }
}

/// The first `limit` bytes of a body as text; read errors end it early.
async fn read_prefix(response: reqwest::Response, limit: usize) -> String {
    let mut out = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(Ok(chunk)) = body.next().await {
        let take = (limit - out.len()).min(chunk.len());
        out.extend_from_slice(&chunk[..take]);
        if out.len() >= limit {
            break;
        }
    }
    String::from_utf8_lossy(&out).trim().to_owned()
}

/// How one subscription attempt ended.
#[derive(Debug)]
enum End {
    /// Stop requested, or nobody listens any more.
    Stopped,
    /// The framework cannot go on.
    Failed(String),
    /// The detector names another master (or none).
    MasterChanged,
    /// Retry after a backoff.
    Retry(String),
}

/// Resolves when the driver should stop.
async fn stopped(cancel: &CancellationToken, events: &mpsc::Sender<SchedulerEvent>) {
    tokio::select! {
        () = cancel.cancelled() => {}
        () = events.closed() => {}
    }
}

/// Resolves when the detected master is no longer `current` (another one, or
/// none). Pends forever once the detector is gone: the last master stays.
async fn master_changed(
    masters: &mut watch::Receiver<Option<MasterAddress>>,
    open: &mut bool,
    current: &str,
) {
    loop {
        if !*open {
            return std::future::pending().await;
        }
        if masters.changed().await.is_err() {
            *open = false;
            continue;
        }
        let differs = masters
            .borrow_and_update()
            .as_ref()
            .is_none_or(|m| m.base != current);
        if differs {
            return;
        }
    }
}

/// The background task.
struct Driver {
    shared: Arc<Shared>,
    masters: watch::Receiver<Option<MasterAddress>>,
    masters_open: bool,
    events: mpsc::Sender<SchedulerEvent>,
    missed_heartbeats: u32,
    max_record: usize,
    backoff: Backoff,
}

impl Driver {
    async fn run(mut self) {
        loop {
            let Some(detected) = self.wait_for_master().await else {
                break;
            };
            let (end, was_subscribed) = self.session(&detected).await;
            match end {
                End::Stopped => break,
                End::Failed(message) => {
                    self.fail(message).await;
                    break;
                }
                End::MasterChanged => {
                    let reason = format!("the detected master is no longer {}", detected.base);
                    info!(master = %detected.base, "master changed; resubscribing");
                    if !self.disconnected(reason, was_subscribed).await {
                        break;
                    }
                }
                End::Retry(reason) => {
                    let delay = self.backoff.next_delay();
                    warn!(master = %detected.base, reason = %reason, retry_in = ?delay,
                        "subscription failed or ended; resubscribing after backoff");
                    if !self.disconnected(reason, was_subscribed).await {
                        break;
                    }
                    tokio::select! {
                        () = stopped(&self.shared.cancel, &self.events) => break,
                        () = tokio::time::sleep(delay) => {}
                        () = master_changed(&mut self.masters, &mut self.masters_open, &detected.base) => {}
                    }
                }
            }
        }
        self.shared.state.send_if_modified(|s| {
            if matches!(s, State::Failed { .. } | State::Stopped) {
                false
            } else {
                *s = State::Stopped;
                true
            }
        });
        info!("scheduler client stopped");
    }

    /// Waits until a master is detected; `None` when the driver must end.
    async fn wait_for_master(&mut self) -> Option<MasterAddress> {
        loop {
            if let Some(m) = self.masters.borrow_and_update().clone() {
                return Some(m);
            }
            if !self.masters_open {
                self.fail(
                    "master detection ended without naming a master; check the --mesos-master \
                     setting"
                        .to_owned(),
                )
                .await;
                return None;
            }
            tokio::select! {
                () = stopped(&self.shared.cancel, &self.events) => return None,
                r = self.masters.changed() => {
                    if r.is_err() {
                        self.masters_open = false;
                    }
                }
            }
        }
    }

    /// Publishes `Disconnected`, and tells the framework when a subscription
    /// was up. False when the driver must end.
    async fn disconnected(&mut self, reason: String, tell: bool) -> bool {
        self.shared.state.send_replace(State::Disconnected {
            reason: reason.clone(),
        });
        !tell || self.deliver(SchedulerEvent::Disconnected { reason }).await
    }

    async fn fail(&mut self, message: String) {
        warn!(message = %message, "scheduler client failed; not resubscribing");
        self.shared.state.send_replace(State::Failed {
            message: message.clone(),
        });
        self.deliver(SchedulerEvent::Failed { message }).await;
    }

    /// Hands an event to the framework. False when the driver must end.
    async fn deliver(&self, event: SchedulerEvent) -> bool {
        tokio::select! {
            biased;
            () = self.shared.cancel.cancelled() => false,
            sent = self.events.send(event) => sent.is_ok(),
        }
    }

    /// One subscription: SUBSCRIBE (following redirects), then the event
    /// stream until it ends. Also returns whether SUBSCRIBED was reached.
    async fn session(&mut self, detected: &MasterAddress) -> (End, bool) {
        let shared = self.shared.clone();
        let timeout = shared.request_timeout;
        let mut base = detected.base.trim_end_matches('/').to_owned();
        let (body, framework_id) = {
            let subscription = shared.subscription();
            let call = subscription.call();
            (
                Bytes::from(shared.encoding.encode(&call)),
                call.framework_id,
            )
        };
        let framework = framework_id.as_ref().map_or("", |f| f.value.as_str());
        let mut hops = 0;
        let response = loop {
            shared.state.send_replace(State::Subscribing {
                master: base.clone(),
            });
            info!(master = %base, framework_id = framework, "subscribing");
            let request = shared.post(&base, body.clone(), None).send();
            let answer = tokio::select! {
                biased;
                () = stopped(&shared.cancel, &self.events) => return (End::Stopped, false),
                () = master_changed(&mut self.masters, &mut self.masters_open, &detected.base) => {
                    return (End::MasterChanged, false);
                }
                r = tokio::time::timeout(timeout, request) => r,
            };
            let response = match answer {
                Err(_) => {
                    let reason = format!("no answer to SUBSCRIBE from {base} within {timeout:?}");
                    return (End::Retry(reason), false);
                }
                Ok(Err(e)) => {
                    let reason = format!("SUBSCRIBE to {base} failed: {}", error_chain(&e));
                    return (End::Retry(reason), false);
                }
                Ok(Ok(r)) => r,
            };
            let status = response.status().as_u16();
            if status == 200 {
                break response;
            }
            if status == 307 {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let next = location.as_deref().and_then(|l| redirect_base(&base, l));
                match next {
                    Some(next) if hops < MAX_REDIRECTS => {
                        info!(from = %base, to = %next, "master is not the leader; following redirect");
                        base = next.trim_end_matches('/').to_owned();
                        hops += 1;
                        continue;
                    }
                    Some(_) => {
                        let reason = format!(
                            "SUBSCRIBE redirected more than {MAX_REDIRECTS} times (last at {base})"
                        );
                        return (End::Retry(reason), false);
                    }
                    None => {
                        let reason = format!(
                            "{base} answered SUBSCRIBE with 307 but no usable Location ({location:?})"
                        );
                        return (End::Retry(reason), false);
                    }
                }
            }
            let text = tokio::time::timeout(timeout, read_prefix(response, MAX_ERROR_BODY))
                .await
                .unwrap_or_default();
            return if subscribe_status_is_retryable(status) {
                let reason = format!("{base} answered SUBSCRIBE with HTTP {status}: {text:?}");
                (End::Retry(reason), false)
            } else {
                let message = format!(
                    "{base} refused SUBSCRIBE with HTTP {status}: {text:?}; {}",
                    subscribe_hint(status)
                );
                (End::Failed(message), false)
            };
        };

        let Some(stream_id) = response
            .headers()
            .get(STREAM_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
        else {
            let reason = format!("{base} answered SUBSCRIBE without a {STREAM_ID_HEADER} header");
            return (End::Retry(reason), false);
        };
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let Some(encoding) = Encoding::from_content_type(content_type) else {
            let reason = format!(
                "{base} answered SUBSCRIBE with Content-Type {content_type:?}, expected {:?}",
                shared.encoding.content_type()
            );
            return (End::Retry(reason), false);
        };
        if encoding != shared.encoding {
            warn!(master = %base, content_type, "master answered in another encoding than asked for");
        }

        let body = Box::pin(response.bytes_stream());
        let stream = events::<Event, _, _, _>(body, encoding, self.max_record);
        let mut stream = std::pin::pin!(stream);
        let mut wait = timeout;
        let mut subscribed = false;
        loop {
            let next = tokio::select! {
                biased;
                () = stopped(&shared.cancel, &self.events) => return (End::Stopped, subscribed),
                () = master_changed(&mut self.masters, &mut self.masters_open, &detected.base) => {
                    return (End::MasterChanged, subscribed);
                }
                n = tokio::time::timeout(wait, stream.next()) => n,
            };
            let event = match next {
                Err(_) if subscribed => {
                    let reason = format!(
                        "no event from {base} for {wait:?} ({} heartbeats missed)",
                        self.missed_heartbeats
                    );
                    return (End::Retry(reason), true);
                }
                Err(_) => {
                    let reason = format!("no SUBSCRIBED from {base} within {wait:?}");
                    return (End::Retry(reason), false);
                }
                Ok(None) => {
                    let reason = format!("{base} closed the event stream");
                    return (End::Retry(reason), subscribed);
                }
                Ok(Some(Err(e))) => {
                    let reason = format!("event stream from {base} broke: {}", error_chain(&e));
                    return (End::Retry(reason), subscribed);
                }
                Ok(Some(Ok(event))) => event,
            };
            let ty = event.r#type.and_then(|t| event::Type::try_from(t).ok());
            match ty {
                Some(event::Type::Subscribed) => {
                    let Some(s) = event.subscribed else {
                        let reason = format!("{base} sent SUBSCRIBED without its payload");
                        return (End::Retry(reason), subscribed);
                    };
                    let interval = heartbeat_interval(s.heartbeat_interval_seconds);
                    wait = watchdog_timeout(interval, self.missed_heartbeats);
                    let id = s.framework_id;
                    {
                        let mut subscription = shared.subscription();
                        if let Some(old) = subscription.framework.id.as_ref().filter(|o| **o != id)
                        {
                            warn!(old = %old.value, new = %id.value, "master assigned another framework id");
                        }
                        subscription.framework.id = Some(id.clone());
                    }
                    shared.state.send_replace(State::Subscribed {
                        master: base.clone(),
                        stream_id: stream_id.clone(),
                        framework_id: id.clone(),
                    });
                    self.backoff.reset();
                    subscribed = true;
                    info!(master = %base, framework_id = %id.value, stream_id = %stream_id,
                        heartbeat_interval = ?interval, "subscribed");
                    let info = s.master_info.or_else(|| {
                        (base == detected.base.trim_end_matches('/'))
                            .then(|| detected.info.clone())
                            .flatten()
                    });
                    let event = SchedulerEvent::Subscribed {
                        framework_id: id,
                        heartbeat_interval: interval,
                        master: MasterAddress {
                            base: base.clone(),
                            info,
                        },
                    };
                    if !self.deliver(event).await {
                        return (End::Stopped, true);
                    }
                }
                Some(event::Type::Heartbeat) => {
                    debug!(master = %base, "heartbeat");
                }
                Some(event::Type::Error) => {
                    let message = event
                        .error
                        .as_ref()
                        .map_or_else(String::new, |e| e.message.clone());
                    if error_is_terminal(&message) {
                        let message = format!(
                            "master {base} ended the framework: {message:?}; subscribe a new \
                             framework (clear the stored framework id) or stop the other instance"
                        );
                        return (End::Failed(message), subscribed);
                    }
                    warn!(master = %base, error = %message, "master sent ERROR; resubscribing");
                    if !self.deliver(SchedulerEvent::Event(Box::new(event))).await {
                        return (End::Stopped, subscribed);
                    }
                    let reason = format!("{base} sent ERROR: {message:?}");
                    return (End::Retry(reason), subscribed);
                }
                _ if !subscribed => {
                    let name = ty.map_or("UNKNOWN", |t| t.as_str_name());
                    let reason = format!("{base} sent {name} before SUBSCRIBED");
                    return (End::Retry(reason), false);
                }
                _ => {
                    if !self.deliver(SchedulerEvent::Event(Box::new(event))).await {
                        return (End::Stopped, subscribed);
                    }
                }
            }
        }
    }
}

/// What to check when SUBSCRIBE is refused for good.
fn subscribe_hint(status: u16) -> &'static str {
    match status {
        400 => "check the FrameworkInfo (user and name are required, roles, principal)",
        401 => "check the configured principal and secret",
        403 => "the master refuses this principal",
        406 | 415 => "the master does not speak this encoding; try the other one",
        _ => "see the master's log",
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::body::Body;
    use axum::extract::State as Extract;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use base64::Engine as _;
    use futures::stream;

    use super::*;
    use crate::mesos::stream::record;

    /// Bound on every wait in these tests; far above what any step needs.
    const WAIT: Duration = Duration::from_secs(10);

    fn framework() -> v1::FrameworkInfo {
        v1::FrameworkInfo {
            user: "root".into(),
            name: "km-test".into(),
            failover_timeout: Some(3600.0),
            ..Default::default()
        }
    }

    fn fid(value: &str) -> v1::FrameworkId {
        v1::FrameworkId {
            value: value.into(),
        }
    }

    fn config(encoding: Encoding) -> SchedulerConfig {
        SchedulerConfig {
            encoding,
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            request_timeout: Duration::from_secs(2),
            ..SchedulerConfig::new(framework())
        }
    }

    fn of_type(ty: event::Type) -> Event {
        Event {
            r#type: Some(ty as i32),
            ..Default::default()
        }
    }

    fn subscribed(id: &str, interval: f64) -> Event {
        Event {
            subscribed: Some(event::Subscribed {
                framework_id: fid(id),
                heartbeat_interval_seconds: Some(interval),
                master_info: None,
            }),
            ..of_type(event::Type::Subscribed)
        }
    }

    fn error(message: &str) -> Event {
        Event {
            error: Some(event::Error {
                message: message.into(),
            }),
            ..of_type(event::Type::Error)
        }
    }

    fn rescind(offer: &str) -> Event {
        Event {
            rescind: Some(event::Rescind {
                offer_id: v1::OfferId {
                    value: offer.into(),
                },
            }),
            ..of_type(event::Type::Rescind)
        }
    }

    /// One request a fake master received.
    #[derive(Debug, Clone)]
    struct Seen {
        headers: HeaderMap,
        call: Call,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).and_then(|v| v.to_str().ok())
        }

        fn is_subscribe(&self) -> bool {
            self.call.r#type == Some(call::Type::Subscribe as i32)
        }
    }

    /// Answers the `n`-th request of its kind (SUBSCRIBE or other);
    /// `None` never answers (a hung master).
    type Script = dyn Fn(&Seen, usize) -> Option<Response> + Send + Sync;

    #[derive(Clone)]
    struct FakeState {
        script: Arc<Script>,
        seen: Arc<Mutex<Vec<Seen>>>,
        subscribes: Arc<AtomicUsize>,
        calls: Arc<AtomicUsize>,
    }

    /// An in-process master for faults a real one does not produce on demand.
    struct FakeMaster {
        base: String,
        port: u16,
        seen: Arc<Mutex<Vec<Seen>>>,
        server: tokio::task::JoinHandle<()>,
    }

    impl Drop for FakeMaster {
        fn drop(&mut self) {
            self.server.abort();
        }
    }

    impl FakeMaster {
        async fn start(
            script: impl Fn(&Seen, usize) -> Option<Response> + Send + Sync + 'static,
        ) -> FakeMaster {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a loopback port");
            let port = listener.local_addr().expect("local address").port();
            let state = FakeState {
                script: Arc::new(script),
                seen: Arc::default(),
                subscribes: Arc::default(),
                calls: Arc::default(),
            };
            let seen = state.seen.clone();
            let app = Router::new()
                .route(SCHEDULER_PATH, axum::routing::post(fake_scheduler_api))
                .with_state(state);
            let server = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            FakeMaster {
                base: format!("http://127.0.0.1:{port}"),
                port,
                seen,
                server,
            }
        }

        /// A master whose SUBSCRIBE answers come from `subscribe` and whose
        /// calls all get 202.
        async fn on_subscribe(
            subscribe: impl Fn(usize) -> Option<Response> + Send + Sync + 'static,
        ) -> FakeMaster {
            FakeMaster::start(move |seen, n| {
                if seen.is_subscribe() {
                    subscribe(n)
                } else {
                    Some(StatusCode::ACCEPTED.into_response())
                }
            })
            .await
        }

        fn address(&self) -> MasterAddress {
            MasterAddress {
                base: self.base.clone(),
                info: None,
            }
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().expect("fake master log").clone()
        }

        fn subscribes(&self) -> Vec<Seen> {
            self.seen().into_iter().filter(Seen::is_subscribe).collect()
        }

        fn calls(&self) -> Vec<Seen> {
            self.seen()
                .into_iter()
                .filter(|s| !s.is_subscribe())
                .collect()
        }
    }

    /// The fake's scheduler endpoint: checks the content type byte for byte
    /// like Mesos, decodes the call, logs it and lets the script answer.
    async fn fake_scheduler_api(
        Extract(state): Extract<FakeState>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let Some(encoding) = Encoding::from_content_type(content_type) else {
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "bad Content-Type").into_response();
        };
        let call = match encoding.decode::<Call>(&body) {
            Ok(call) => call,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        };
        let seen = Seen { headers, call };
        let counter = if seen.is_subscribe() {
            &state.subscribes
        } else {
            &state.calls
        };
        let n = counter.fetch_add(1, Ordering::SeqCst);
        state
            .seen
            .lock()
            .expect("fake master log")
            .push(seen.clone());
        match (state.script)(&seen, n) {
            Some(response) => response,
            None => std::future::pending().await,
        }
    }

    /// A SUBSCRIBE answer: one RecordIO record per chunk, then either the end
    /// of the body or silence with the connection kept open.
    fn event_stream(
        encoding: Encoding,
        stream_id: &str,
        chunks: Vec<Bytes>,
        hang: bool,
    ) -> Option<Response> {
        let chunks = stream::iter(chunks.into_iter().map(Ok::<_, Infallible>));
        let body = if hang {
            Body::from_stream(chunks.chain(stream::pending()))
        } else {
            Body::from_stream(chunks)
        };
        Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, encoding.content_type())
            .header(STREAM_ID_HEADER, stream_id)
            .body(body)
            .ok()
    }

    fn records(encoding: Encoding, events: &[Event]) -> Vec<Bytes> {
        events.iter().map(|e| record(e, encoding)).collect()
    }

    /// A stream that sends SUBSCRIBED for `id` and then stays open, silent.
    fn subscribed_then_silent(id: &str, interval: f64) -> Option<Response> {
        let encoding = Encoding::Protobuf;
        let chunks = records(encoding, &[subscribed(id, interval)]);
        event_stream(encoding, "stream-1", chunks, true)
    }

    async fn next(rx: &mut mpsc::Receiver<SchedulerEvent>) -> SchedulerEvent {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("an event in time")
            .expect("the event channel is open")
    }

    async fn expect_subscribed(
        rx: &mut mpsc::Receiver<SchedulerEvent>,
    ) -> (v1::FrameworkId, MasterAddress) {
        match next(rx).await {
            SchedulerEvent::Subscribed {
                framework_id,
                master,
                ..
            } => (framework_id, master),
            other => panic!("expected Subscribed, got {other:?}"),
        }
    }

    async fn expect_disconnected(rx: &mut mpsc::Receiver<SchedulerEvent>) -> String {
        match next(rx).await {
            SchedulerEvent::Disconnected { reason } => reason,
            other => panic!("expected Disconnected, got {other:?}"),
        }
    }

    async fn expect_closed(rx: &mut mpsc::Receiver<SchedulerEvent>) {
        let end = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("the channel closes in time");
        assert!(end.is_none(), "expected the channel to close, got {end:?}");
    }

    fn launch(scheduler_config: SchedulerConfig, master: Option<MasterAddress>) -> Launched {
        let (masters_tx, masters) = watch::channel(master);
        let (scheduler, events) = start(scheduler_config, masters).expect("client builds");
        Launched {
            scheduler,
            events,
            masters: masters_tx,
        }
    }

    struct Launched {
        scheduler: Scheduler,
        events: mpsc::Receiver<SchedulerEvent>,
        masters: watch::Sender<Option<MasterAddress>>,
    }

    fn offer_id(value: &str) -> v1::OfferId {
        v1::OfferId {
            value: value.into(),
        }
    }

    fn task_id(value: &str) -> v1::TaskId {
        v1::TaskId {
            value: value.into(),
        }
    }

    fn agent_id(value: &str) -> v1::AgentId {
        v1::AgentId {
            value: value.into(),
        }
    }

    fn executor_id(value: &str) -> v1::ExecutorId {
        v1::ExecutorId {
            value: value.into(),
        }
    }

    // ---------------------------------------------------------------------
    // Pure parts

    /// The names of the payload fields set on a call.
    fn payloads(c: &Call) -> Vec<&'static str> {
        let fields = [
            ("subscribe", c.subscribe.is_some()),
            ("accept", c.accept.is_some()),
            ("decline", c.decline.is_some()),
            ("accept_inverse_offers", c.accept_inverse_offers.is_some()),
            ("decline_inverse_offers", c.decline_inverse_offers.is_some()),
            ("revive", c.revive.is_some()),
            ("kill", c.kill.is_some()),
            ("shutdown", c.shutdown.is_some()),
            ("acknowledge", c.acknowledge.is_some()),
            (
                "acknowledge_operation_status",
                c.acknowledge_operation_status.is_some(),
            ),
            ("reconcile", c.reconcile.is_some()),
            ("reconcile_operations", c.reconcile_operations.is_some()),
            ("message", c.message.is_some()),
            ("request", c.request.is_some()),
            ("suppress", c.suppress.is_some()),
            ("update_framework", c.update_framework.is_some()),
        ];
        fields
            .into_iter()
            .filter_map(|(name, set)| set.then_some(name))
            .collect()
    }

    fn uuid_status(uuid: Option<Vec<u8>>, agent: Option<&str>) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: task_id("t1"),
            state: v1::TaskState::TaskRunning as i32,
            agent_id: agent.map(agent_id),
            uuid,
            ..Default::default()
        }
    }

    #[test]
    fn typed_builders_set_the_type_and_only_their_payload() {
        let ack = calls::acknowledge(&uuid_status(Some(vec![7; 16]), Some("S1")))
            .expect("valid")
            .expect("has a uuid");
        let cases = [
            (
                calls::subscribe(&framework(), vec![]),
                call::Type::Subscribe,
                vec!["subscribe"],
            ),
            (calls::teardown(), call::Type::Teardown, vec![]),
            (
                calls::accept(vec![offer_id("o1")], vec![], None),
                call::Type::Accept,
                vec!["accept"],
            ),
            (
                calls::decline(vec![offer_id("o1")], None),
                call::Type::Decline,
                vec!["decline"],
            ),
            (calls::revive(vec![]), call::Type::Revive, vec!["revive"]),
            (
                calls::suppress(vec![]),
                call::Type::Suppress,
                vec!["suppress"],
            ),
            (
                calls::kill(task_id("t1"), None, None),
                call::Type::Kill,
                vec!["kill"],
            ),
            (
                calls::shutdown(executor_id("e1"), agent_id("S1")),
                call::Type::Shutdown,
                vec!["shutdown"],
            ),
            (ack, call::Type::Acknowledge, vec!["acknowledge"]),
            (
                calls::reconcile(vec![]),
                call::Type::Reconcile,
                vec!["reconcile"],
            ),
            (
                calls::message(agent_id("S1"), executor_id("e1"), b"hi".to_vec()),
                call::Type::Message,
                vec!["message"],
            ),
            (
                calls::update_framework(framework(), vec![]),
                call::Type::UpdateFramework,
                vec!["update_framework"],
            ),
        ];
        for (built, ty, fields) in cases {
            assert_eq!(built.r#type, Some(ty as i32), "{ty:?}");
            assert_eq!(payloads(&built), fields, "{ty:?}");
            if ty != call::Type::Subscribe {
                assert_eq!(built.framework_id, None, "{ty:?}: filled in when sent");
            }
        }
    }

    #[test]
    fn typed_builders_carry_their_arguments() {
        let filters = v1::Filters {
            refuse_seconds: Some(30.0),
        };
        let op = v1::offer::Operation {
            r#type: Some(v1::offer::operation::Type::Launch as i32),
            ..Default::default()
        };
        let accept = calls::accept(
            vec![offer_id("o1"), offer_id("o2")],
            vec![op.clone()],
            Some(filters),
        )
        .accept
        .expect("payload");
        assert_eq!(accept.offer_ids, [offer_id("o1"), offer_id("o2")]);
        assert_eq!(accept.operations, [op]);
        assert_eq!(accept.filters, Some(filters));

        let decline = calls::decline(vec![offer_id("o3")], Some(filters))
            .decline
            .expect("payload");
        assert_eq!(
            (decline.offer_ids, decline.filters),
            (vec![offer_id("o3")], Some(filters))
        );

        let roles = vec!["k8s".to_owned()];
        assert_eq!(
            calls::revive(roles.clone()).revive.expect("payload").roles,
            roles
        );
        assert_eq!(
            calls::suppress(roles.clone())
                .suppress
                .expect("payload")
                .roles,
            roles
        );

        let policy = v1::KillPolicy {
            grace_period: Some(v1::DurationInfo {
                nanoseconds: 5_000_000_000,
            }),
        };
        let kill = calls::kill(task_id("t1"), Some(agent_id("S1")), Some(policy))
            .kill
            .expect("payload");
        assert_eq!(kill.task_id, task_id("t1"));
        assert_eq!(kill.agent_id, Some(agent_id("S1")));
        assert_eq!(kill.kill_policy, Some(policy));

        let shutdown = calls::shutdown(executor_id("e1"), agent_id("S1"))
            .shutdown
            .expect("payload");
        assert_eq!(
            (shutdown.executor_id, shutdown.agent_id),
            (executor_id("e1"), agent_id("S1"))
        );

        let reconcile = calls::reconcile(vec![
            (task_id("t1"), Some(agent_id("S1"))),
            (task_id("t2"), None),
        ])
        .reconcile
        .expect("payload");
        assert_eq!(
            reconcile.tasks,
            [
                call::reconcile::Task {
                    task_id: task_id("t1"),
                    agent_id: Some(agent_id("S1"))
                },
                call::reconcile::Task {
                    task_id: task_id("t2"),
                    agent_id: None
                },
            ]
        );

        let message = calls::message(agent_id("S1"), executor_id("e1"), b"hi".to_vec())
            .message
            .expect("payload");
        assert_eq!(
            (message.agent_id, message.executor_id, message.data),
            (agent_id("S1"), executor_id("e1"), b"hi".to_vec())
        );

        let update = calls::update_framework(framework(), roles.clone())
            .update_framework
            .expect("payload");
        assert_eq!(
            (update.framework_info, update.suppressed_roles),
            (framework(), roles)
        );
    }

    #[test]
    fn subscribe_sets_both_framework_ids_only_when_resubscribing() {
        let first = calls::subscribe(&framework(), vec!["r".into()]);
        assert_eq!(first.framework_id, None);
        let payload = first.subscribe.expect("payload");
        assert_eq!(payload.framework_info.id, None);
        assert_eq!(payload.suppressed_roles, ["r"]);

        let known = v1::FrameworkInfo {
            id: Some(fid("F-1")),
            ..framework()
        };
        let again = calls::subscribe(&known, vec![]);
        assert_eq!(again.framework_id, Some(fid("F-1")));
        assert_eq!(
            again.subscribe.expect("payload").framework_info.id,
            Some(fid("F-1"))
        );
    }

    #[test]
    fn acknowledge_skips_updates_without_a_uuid() {
        assert!(
            calls::acknowledge(&uuid_status(None, Some("S1")))
                .expect("valid")
                .is_none()
        );
        assert!(
            calls::acknowledge(&uuid_status(Some(vec![]), Some("S1")))
                .expect("valid")
                .is_none()
        );
        let ack = calls::acknowledge(&uuid_status(Some(vec![9; 16]), Some("S1")))
            .expect("valid")
            .expect("sent")
            .acknowledge
            .expect("payload");
        assert_eq!(ack.uuid, vec![9; 16]);
        assert_eq!(ack.task_id, task_id("t1"));
        assert_eq!(ack.agent_id, agent_id("S1"));
        let err =
            calls::acknowledge(&uuid_status(Some(vec![9; 16]), None)).expect_err("no agent id");
        assert!(err.to_string().contains("no agent_id"), "{err}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(15));
        let tops: Vec<u64> = (0..6).map(|_| b.next_with(1.0).as_secs()).collect();
        assert_eq!(tops, [1, 2, 4, 8, 15, 15]);
        assert_eq!(
            b.next_with(0.0),
            Duration::from_millis(7500),
            "lower half bound"
        );
        for _ in 0..100 {
            b.next_with(1.0); // no overflow far past the cap
        }
        assert_eq!(b.next_with(1.0), Duration::from_secs(15));
        b.reset();
        assert_eq!(b.next_with(0.0), Duration::from_millis(500));

        // A zero minimum cannot spin; a maximum below the minimum is lifted.
        let mut z = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(z.next_with(1.0), MIN_BACKOFF);
    }

    #[test]
    fn jittered_delays_stay_in_the_upper_half_of_the_step() {
        let step = Duration::from_secs(8);
        for _ in 0..1000 {
            let d = jittered(step, random_unit());
            assert!(d >= step / 2 && d <= step, "{d:?}");
        }
        assert_eq!(jittered(step, f64::NAN), step);
        assert_eq!(jittered(step, 7.0), step);
    }

    #[test]
    fn heartbeat_deadline_arithmetic() {
        assert_eq!(
            watchdog_timeout(heartbeat_interval(Some(15.0)), 5),
            Duration::from_secs(75)
        );
        assert_eq!(heartbeat_interval(Some(0.05)), Duration::from_millis(50));
        assert_eq!(
            watchdog_timeout(Duration::from_millis(50), 2),
            Duration::from_millis(100)
        );
        for bad in [
            None,
            Some(0.0),
            Some(-1.0),
            Some(f64::NAN),
            Some(f64::INFINITY),
        ] {
            assert_eq!(
                heartbeat_interval(bad),
                DEFAULT_HEARTBEAT_INTERVAL,
                "{bad:?}"
            );
        }
        assert_eq!(heartbeat_interval(Some(1e12)), MAX_HEARTBEAT_INTERVAL);
        assert_eq!(
            watchdog_timeout(Duration::from_secs(15), 0),
            Duration::from_secs(15)
        );
        assert_eq!(watchdog_timeout(Duration::MAX, 5), Duration::MAX);
    }

    #[test]
    fn only_removal_and_failover_errors_are_final() {
        assert!(error_is_terminal("Framework has been removed"));
        assert!(error_is_terminal("Framework failed over"));
        assert!(!error_is_terminal("Not authorized to use roles 'k8s'"));
        assert!(!error_is_terminal(""));
    }

    #[test]
    fn subscribe_statuses_worth_retrying() {
        for s in [404, 408, 429, 500, 502, 503, 504] {
            assert!(subscribe_status_is_retryable(s), "{s}");
        }
        for s in [400, 401, 403, 405, 406, 415, 501] {
            assert!(!subscribe_status_is_retryable(s), "{s}");
        }
    }

    #[test]
    fn suppressed_roles_follow_suppress_and_revive() {
        let mut multi = Subscription {
            framework: v1::FrameworkInfo {
                roles: vec!["a".into(), "b".into()],
                ..framework()
            },
            suppressed: BTreeSet::new(),
        };
        multi.suppressed(&[]);
        assert_eq!(
            multi.call().subscribe.expect("payload").suppressed_roles,
            ["a", "b"]
        );
        multi.revived(&["a".into()]);
        assert_eq!(multi.suppressed, BTreeSet::from(["b".to_owned()]));
        multi.revived(&[]);
        assert!(multi.suppressed.is_empty());

        let mut single = Subscription {
            framework: framework(),
            suppressed: BTreeSet::new(),
        };
        single.suppressed(&[]);
        assert_eq!(single.suppressed, BTreeSet::from(["*".to_owned()]));
    }

    #[test]
    fn credentials_debug_hides_the_secret() {
        let c = Credentials {
            principal: "p".into(),
            secret: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn calls_need_a_type_a_subscription_and_no_subscribe() {
        let Launched {
            scheduler,
            mut events,
            masters: _masters,
        } = launch(config(Encoding::Protobuf), None);
        let err = scheduler
            .call(calls::subscribe(&framework(), vec![]))
            .await
            .expect_err("subscribe");
        assert!(
            matches!(
                err,
                CallError::Invalid {
                    call: "SUBSCRIBE",
                    ..
                }
            ),
            "{err}"
        );
        let err = scheduler.call(Call::default()).await.expect_err("untyped");
        assert!(matches!(err, CallError::Invalid { .. }), "{err}");
        let err = scheduler.revive(vec![]).await.expect_err("no master yet");
        assert!(
            matches!(err, CallError::NotSubscribed { call: "REVIVE" }),
            "{err}"
        );
        assert!(matches!(scheduler.state(), State::Disconnected { .. }));
        // An update without uuid needs no subscription: nothing is sent.
        assert!(
            !scheduler
                .acknowledge(&uuid_status(None, None))
                .await
                .expect("no-op")
        );

        scheduler.stop();
        expect_closed(&mut events).await;
        assert_eq!(scheduler.state(), State::Stopped);
        let err = scheduler.revive(vec![]).await.expect_err("stopped");
        assert!(matches!(err, CallError::Stopped { .. }), "{err}");
    }

    // ---------------------------------------------------------------------
    // Fault injection against fake masters

    #[tokio::test]
    async fn fake_master_redirect_307_is_followed_to_the_leader() {
        let leader = FakeMaster::on_subscribe(|_| subscribed_then_silent("F-1", 15.0)).await;
        let location = format!("//127.0.0.1:{}{SCHEDULER_PATH}", leader.port);
        let follower = FakeMaster::start(move |_, _| {
            Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header(LOCATION, location.as_str())
                .body(Body::empty())
                .ok()
        })
        .await;
        let mut l = launch(config(Encoding::Protobuf), Some(follower.address()));

        let (id, master) = expect_subscribed(&mut l.events).await;
        assert_eq!(id, fid("F-1"));
        assert_eq!(master.base, leader.base);
        assert_eq!(follower.subscribes().len(), 1);
        assert_eq!(leader.subscribes().len(), 1);

        l.scheduler
            .decline(vec![offer_id("o1")], None)
            .await
            .expect("declined");
        assert_eq!(leader.calls().len(), 1, "calls go to the leader");
        assert_eq!(follower.calls().len(), 0);
    }

    #[tokio::test]
    async fn fake_master_redirect_loop_is_bounded() {
        // A master that redirects to itself: the client gives up after
        // MAX_REDIRECTS hops per attempt and backs off.
        let port = Arc::new(std::sync::OnceLock::<u16>::new());
        let own = port.clone();
        let looping = FakeMaster::start(move |_, _| {
            let location = format!(
                "//127.0.0.1:{}{SCHEDULER_PATH}",
                own.get().copied().unwrap_or(1)
            );
            Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header(LOCATION, location)
                .body(Body::empty())
                .ok()
        })
        .await;
        port.set(looping.port).expect("set once");
        let l = launch(config(Encoding::Protobuf), Some(looping.address()));
        let mut state = l.scheduler.watch_state();
        tokio::time::timeout(WAIT, async {
            while !matches!(&*state.borrow_and_update(), State::Disconnected { reason } if reason.contains("redirected more than"))
            {
                state.changed().await.expect("driver alive");
            }
        })
        .await
        .expect("the redirect loop is cut");
        assert!(looping.subscribes().len() > MAX_REDIRECTS);
    }

    #[tokio::test]
    async fn fake_master_silent_after_subscribed_resubscribes_with_the_same_framework_id() {
        let master = FakeMaster::on_subscribe(|_| subscribed_then_silent("F-7", 0.05)).await;
        let mut l = launch(
            SchedulerConfig {
                missed_heartbeats: 2,
                ..config(Encoding::Protobuf)
            },
            Some(master.address()),
        );

        match next(&mut l.events).await {
            SchedulerEvent::Subscribed {
                framework_id,
                heartbeat_interval,
                ..
            } => {
                assert_eq!(framework_id, fid("F-7"));
                assert_eq!(heartbeat_interval, Duration::from_millis(50));
            }
            other => panic!("expected Subscribed, got {other:?}"),
        }
        assert_eq!(l.scheduler.framework_id(), Some(fid("F-7")));
        let reason = expect_disconnected(&mut l.events).await;
        assert!(reason.contains("heartbeats missed"), "{reason}");
        let (id, _) = expect_subscribed(&mut l.events).await;
        assert_eq!(id, fid("F-7"));

        let subscribes = master.subscribes();
        assert!(subscribes.len() >= 2);
        let first = &subscribes[0].call;
        assert_eq!(first.framework_id, None);
        assert_eq!(
            first
                .subscribe
                .as_ref()
                .and_then(|s| s.framework_info.id.clone()),
            None
        );
        let second = &subscribes[1].call;
        assert_eq!(second.framework_id, Some(fid("F-7")));
        assert_eq!(
            second
                .subscribe
                .as_ref()
                .and_then(|s| s.framework_info.id.clone()),
            Some(fid("F-7"))
        );
    }

    #[tokio::test]
    async fn fake_master_heartbeats_keep_the_subscription_and_are_not_forwarded() {
        // Heartbeats every 20 ms against a 1 s watchdog: no resubscription.
        let master = FakeMaster::on_subscribe(|_| {
            let encoding = Encoding::Protobuf;
            let first = stream::iter(records(encoding, &[subscribed("F-2", 0.5)]));
            let beats = stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((
                    record(&of_type(event::Type::Heartbeat), Encoding::Protobuf),
                    (),
                ))
            });
            Response::builder()
                .status(StatusCode::OK)
                .header(CONTENT_TYPE, encoding.content_type())
                .header(STREAM_ID_HEADER, "stream-2")
                .body(Body::from_stream(
                    first.chain(beats).map(Ok::<_, Infallible>),
                ))
                .ok()
        })
        .await;
        let mut l = launch(
            SchedulerConfig {
                missed_heartbeats: 2,
                ..config(Encoding::Protobuf)
            },
            Some(master.address()),
        );
        expect_subscribed(&mut l.events).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            matches!(l.events.try_recv(), Err(mpsc::error::TryRecvError::Empty)),
            "no events: heartbeats are swallowed and the stream stays up"
        );
        assert_eq!(master.subscribes().len(), 1);
    }

    #[tokio::test]
    async fn fake_master_503_first_is_retried() {
        let master = FakeMaster::on_subscribe(|n| {
            if n == 0 {
                Some(
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Master has not finished recovery",
                    )
                        .into_response(),
                )
            } else {
                subscribed_then_silent("F-3", 15.0)
            }
        })
        .await;
        let mut l = launch(config(Encoding::Protobuf), Some(master.address()));
        let (id, _) = expect_subscribed(&mut l.events).await;
        assert_eq!(id, fid("F-3"));
        assert_eq!(master.subscribes().len(), 2);
    }

    #[tokio::test]
    async fn fake_master_hung_answers_are_timed_out() {
        // First no answer at all, then 200 without any event, then success.
        let master = FakeMaster::on_subscribe(|n| match n {
            0 => None,
            1 => event_stream(Encoding::Protobuf, "stream-x", vec![], true),
            _ => subscribed_then_silent("F-4", 15.0),
        })
        .await;
        let mut l = launch(
            SchedulerConfig {
                request_timeout: Duration::from_millis(200),
                ..config(Encoding::Protobuf)
            },
            Some(master.address()),
        );
        let (id, _) = expect_subscribed(&mut l.events).await;
        assert_eq!(id, fid("F-4"));
        assert_eq!(master.subscribes().len(), 3);
    }

    #[tokio::test]
    async fn fake_master_truncated_stream_resubscribes() {
        let master = FakeMaster::on_subscribe(|n| {
            let encoding = Encoding::Protobuf;
            let mut chunks = records(encoding, &[subscribed("F-5", 15.0)]);
            if n == 0 {
                // A record announcing 50 bytes, cut after 2, then EOF.
                chunks.push(Bytes::from_static(b"50\n\x08\x03"));
                event_stream(encoding, "stream-5", chunks, false)
            } else {
                event_stream(encoding, "stream-6", chunks, true)
            }
        })
        .await;
        let mut l = launch(config(Encoding::Protobuf), Some(master.address()));
        expect_subscribed(&mut l.events).await;
        let reason = expect_disconnected(&mut l.events).await;
        assert!(reason.contains("ended inside a record"), "{reason}");
        expect_subscribed(&mut l.events).await;
        let again = &master.subscribes()[1].call;
        assert_eq!(again.framework_id, Some(fid("F-5")));
    }

    #[tokio::test]
    async fn fake_master_refused_subscribe_framework_removed_is_final() {
        let master = FakeMaster::on_subscribe(|_| {
            let encoding = Encoding::Protobuf;
            let chunks = records(encoding, &[error("Framework has been removed")]);
            event_stream(encoding, "stream-r", chunks, false)
        })
        .await;
        let mut l = launch(config(Encoding::Protobuf), Some(master.address()));
        match next(&mut l.events).await {
            SchedulerEvent::Failed { message } => {
                assert!(message.contains("Framework has been removed"), "{message}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        expect_closed(&mut l.events).await;
        assert!(matches!(l.scheduler.state(), State::Failed { .. }));
        // Backoff is 10-50 ms: a retry would have happened by now.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(master.subscribes().len(), 1, "no resubscription");
        let err = l.scheduler.revive(vec![]).await.expect_err("ended");
        assert!(matches!(err, CallError::Stopped { .. }), "{err}");
    }

    #[tokio::test]
    async fn fake_master_refused_subscribe_other_error_is_reported_and_retried() {
        let master = FakeMaster::on_subscribe(|n| {
            if n == 0 {
                let encoding = Encoding::Protobuf;
                let chunks = records(encoding, &[error("Not authorized to use roles 'k8s'")]);
                event_stream(encoding, "stream-e", chunks, false)
            } else {
                subscribed_then_silent("F-6", 15.0)
            }
        })
        .await;
        let mut l = launch(config(Encoding::Protobuf), Some(master.address()));
        match next(&mut l.events).await {
            SchedulerEvent::Event(e) => assert_eq!(*e, error("Not authorized to use roles 'k8s'")),
            other => panic!("expected the ERROR event, got {other:?}"),
        }
        expect_subscribed(&mut l.events).await;
        assert_eq!(master.subscribes().len(), 2);
    }

    #[tokio::test]
    async fn fake_master_refusing_the_request_ends_the_client() {
        let master = FakeMaster::on_subscribe(|_| {
            Some((StatusCode::UNAUTHORIZED, "wrong credentials").into_response())
        })
        .await;
        let mut l = launch(config(Encoding::Protobuf), Some(master.address()));
        match next(&mut l.events).await {
            SchedulerEvent::Failed { message } => {
                assert!(message.contains("401"), "{message}");
                assert!(message.contains("principal and secret"), "{message}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        expect_closed(&mut l.events).await;
        assert_eq!(master.subscribes().len(), 1);
    }

    #[tokio::test]
    async fn fake_master_sees_exact_headers_stream_id_only_on_calls_and_framework_ids() {
        for encoding in [Encoding::Protobuf, Encoding::Json] {
            let master = FakeMaster::start(move |seen, n| {
                if seen.is_subscribe() {
                    let chunks = records(encoding, &[subscribed("F-9", 15.0), rescind("o1")]);
                    return event_stream(encoding, &format!("stream-{n}"), chunks, true);
                }
                if seen.call.r#type == Some(call::Type::Kill as i32) {
                    return Some(
                        (
                            StatusCode::BAD_REQUEST,
                            "Failed to validate scheduler::Call: boom",
                        )
                            .into_response(),
                    );
                }
                Some(StatusCode::ACCEPTED.into_response())
            })
            .await;
            let mut l = launch(
                SchedulerConfig {
                    credentials: Some(Credentials {
                        principal: "prin".into(),
                        secret: "sec".into(),
                    }),
                    ..config(encoding)
                },
                None,
            );
            let err = l
                .scheduler
                .decline(vec![], None)
                .await
                .expect_err("no master yet");
            assert!(matches!(err, CallError::NotSubscribed { .. }), "{err}");

            l.masters.send_replace(Some(master.address()));
            expect_subscribed(&mut l.events).await;
            match next(&mut l.events).await {
                SchedulerEvent::Event(e) => assert_eq!(*e, rescind("o1"), "{encoding:?}"),
                other => panic!("expected RESCIND, got {other:?}"),
            }
            l.scheduler
                .decline(vec![offer_id("o1")], None)
                .await
                .expect("declined");
            l.scheduler
                .acknowledge(&uuid_status(Some(vec![1; 16]), Some("S1")))
                .await
                .expect("acknowledged");
            let err = l
                .scheduler
                .kill(task_id("t1"), None, None)
                .await
                .expect_err("refused");
            match &err {
                CallError::Rejected {
                    call, status, body, ..
                } => {
                    assert_eq!((*call, *status), ("KILL", 400));
                    assert!(body.contains("boom"), "{body}");
                }
                other => panic!("expected Rejected, got {other:?}"),
            }

            let auth = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("prin:sec")
            );
            let seen = master.seen();
            assert_eq!(seen.len(), 4, "{encoding:?}");
            for s in &seen {
                assert_eq!(s.header("content-type"), Some(encoding.content_type()));
                assert_eq!(s.header("accept"), Some(encoding.content_type()));
                assert_eq!(s.header("authorization"), Some(auth.as_str()));
            }
            let subscribe = &seen[0];
            assert!(subscribe.is_subscribe());
            assert_eq!(subscribe.header(STREAM_ID_HEADER), None, "not on SUBSCRIBE");
            for c in &seen[1..] {
                assert_eq!(
                    c.header(STREAM_ID_HEADER),
                    Some("stream-0"),
                    "{:?}",
                    c.call.r#type
                );
                assert_eq!(c.call.framework_id, Some(fid("F-9")));
            }
            let types: Vec<_> = seen[1..].iter().map(|s| s.call.r#type).collect();
            assert_eq!(
                types,
                [
                    Some(call::Type::Decline as i32),
                    Some(call::Type::Acknowledge as i32),
                    Some(call::Type::Kill as i32),
                ]
            );

            l.scheduler.teardown().await.expect("torn down");
            expect_closed(&mut l.events).await;
            assert_eq!(l.scheduler.state(), State::Stopped);
            assert_eq!(master.calls().len(), 4);
        }
    }

    #[tokio::test]
    async fn fake_master_change_moves_the_subscription() {
        let a = FakeMaster::on_subscribe(|_| subscribed_then_silent("F-8", 15.0)).await;
        let b = FakeMaster::on_subscribe(|_| subscribed_then_silent("F-8", 15.0)).await;
        let mut l = launch(config(Encoding::Protobuf), Some(a.address()));
        let (_, master) = expect_subscribed(&mut l.events).await;
        assert_eq!(master.base, a.base);

        l.masters.send_replace(Some(b.address()));
        let reason = expect_disconnected(&mut l.events).await;
        assert!(reason.contains("no longer"), "{reason}");
        let (_, master) = expect_subscribed(&mut l.events).await;
        assert_eq!(master.base, b.base);
        let moved = &b.subscribes()[0].call;
        assert_eq!(moved.framework_id, Some(fid("F-8")));
        assert_eq!(a.subscribes().len(), 1);

        l.scheduler.revive(vec![]).await.expect("revived");
        assert_eq!(b.calls().len(), 1);
        assert_eq!(a.calls().len(), 0);
    }
}
