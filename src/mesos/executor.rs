//! The executor side of the Mesos v1 executor HTTP API, as a client library.
//!
//! An executor is started by a Mesos agent, learns everything about itself from
//! its environment ([`ExecutorEnv`]), subscribes to the agent with
//! `POST http://$MESOS_AGENT_ENDPOINT/api/v1/executor`, and then receives
//! events on that long-lived response while it sends status updates and
//! messages as separate POSTs. [`start`] spawns the task that owns the
//! subscription and returns a cloneable [`Executor`] handle for the calls and
//! a channel of [`ExecutorEvent`]s.
//!
//! # Lifecycle
//!
//! The subscription task moves through these [`Phase`]s:
//!
//! * **Subscribing**: a SUBSCRIBE is in flight, carrying every launched task
//!   not yet acknowledged and every unacknowledged status update. The phase
//!   ends when the agent's `SUBSCRIBED` event arrives (→ Subscribed), when the
//!   attempt fails in a way worth retrying (connection refused or reset,
//!   timeout, 404, 5xx such as the 503 of a recovering agent, a stream that
//!   ends before `SUBSCRIBED`; → Backoff), or when the agent refuses for good
//!   (any other status, an unknown content type; → Stopped after
//!   [`ExecutorEvent::Shutdown`] with [`ShutdownReason::Rejected`]).
//! * **Subscribed**: events flow. Updates whose POST failed are retried every
//!   [`Options::resend_interval`]. When the stream ends, breaks, or stays
//!   silent longer than [`Options::idle_timeout`], the executor is
//!   disconnected: a checkpointing executor (`MESOS_CHECKPOINT=1`) emits
//!   [`ExecutorEvent::Disconnected`], starts a recovery timer of
//!   `MESOS_RECOVERY_TIMEOUT` and goes to Backoff; a non-checkpointing one
//!   emits [`ExecutorEvent::Shutdown`] with [`ShutdownReason::Disconnected`]
//!   (the agent kills it anyway) and stops. After the agent's own `SHUTDOWN` a
//!   lost stream simply stops the task.
//! * **Backoff**: waits a random delay of at most
//!   `MESOS_SUBSCRIPTION_BACKOFF_MAX` (growing from 50 ms), then → Subscribing.
//!   When the deadline passes (the recovery timer, or
//!   [`Options::registration_timeout`] for the very first subscription) it
//!   emits [`ExecutorEvent::RecoveryTimeout`] and stops.
//! * **Stopped**: the event channel closes after the last event. Dropping the
//!   event receiver also stops the task.
//!
//! # Status updates
//!
//! [`Executor::update`] stamps each status with a fresh random 16-byte uuid,
//! `SOURCE_EXECUTOR`, the executor id and a timestamp, keeps it until the
//! agent's `ACKNOWLEDGED` event names that uuid, and resends it in every
//! SUBSCRIBE until then. A launched task stays in SUBSCRIBE's
//! `unacknowledged_tasks` until the agent acknowledges any update for it, as
//! the Mesos executor API documentation prescribes (after that the agent knows
//! the task has reached the executor). An `ACKNOWLEDGED` is the agent's
//! receipt, not the scheduler's.
//!
//! Only plain `http://` is spoken; `MESOS_DOMAIN_SOCKET` is read but not used.

use std::fmt;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use super::encoding::Encoding;
use super::proto::v1::{self, executor};
use super::recordio::DEFAULT_MAX_RECORD;
use super::stream::events;

/// The path of the executor API on the agent.
pub const EXECUTOR_API_PATH: &str = "/api/v1/executor";

const FRAMEWORK_ID: &str = "MESOS_FRAMEWORK_ID";
const EXECUTOR_ID: &str = "MESOS_EXECUTOR_ID";
const AGENT_ID: &str = "MESOS_SLAVE_ID";
const AGENT_PID: &str = "MESOS_SLAVE_PID";
const AGENT_ENDPOINT: &str = "MESOS_AGENT_ENDPOINT";
const DIRECTORY: &str = "MESOS_DIRECTORY";
const SANDBOX: &str = "MESOS_SANDBOX";
const CHECKPOINT: &str = "MESOS_CHECKPOINT";
const HTTP_COMMAND_EXECUTOR: &str = "MESOS_HTTP_COMMAND_EXECUTOR";
const DOMAIN_SOCKET: &str = "MESOS_DOMAIN_SOCKET";
const SHUTDOWN_GRACE_PERIOD: &str = "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD";
const RECOVERY_TIMEOUT: &str = "MESOS_RECOVERY_TIMEOUT";
const SUBSCRIPTION_BACKOFF_MAX: &str = "MESOS_SUBSCRIPTION_BACKOFF_MAX";
const AUTH_TOKEN: &str = "MESOS_EXECUTOR_AUTHENTICATION_TOKEN";

/// The agent's `--executor_shutdown_grace_period` default.
pub const DEFAULT_SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(5);
/// The agent's `--recovery_timeout` default.
pub const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The agent's `--executor_reregistration_timeout` default.
pub const DEFAULT_SUBSCRIPTION_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The first reconnection delay cap; it doubles up to the backoff maximum.
const BACKOFF_BASE: Duration = Duration::from_millis(50);
/// No reconnection loop spins faster than this, even with a zero maximum.
const BACKOFF_FLOOR: Duration = Duration::from_millis(10);
/// How much of an error response body goes into an error message.
const ERROR_BODY_LIMIT: usize = 1024;

// ---------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------

/// Everything the agent tells an executor through its environment
/// (`executorEnvironment()` in the Mesos agent).
#[derive(Clone, PartialEq)]
pub struct ExecutorEnv {
    /// `MESOS_FRAMEWORK_ID` (required).
    pub framework_id: v1::FrameworkId,
    /// `MESOS_EXECUTOR_ID` (required). Equal to the task id for command tasks.
    pub executor_id: v1::ExecutorId,
    /// `MESOS_SLAVE_ID`, the agent's id.
    pub agent_id: Option<v1::AgentId>,
    /// `MESOS_SLAVE_PID`, the agent's libprocess id `slave(1)@ip:port`.
    pub agent_pid: Option<String>,
    /// `MESOS_AGENT_ENDPOINT` (required): `ip:port` of the agent, no scheme.
    pub agent_endpoint: String,
    /// `MESOS_DIRECTORY` (required): the sandbox path on the host.
    pub directory: PathBuf,
    /// `MESOS_SANDBOX`: the sandbox as seen inside the container; the same as
    /// `directory` when unset (a container without its own root filesystem).
    pub sandbox: PathBuf,
    /// `MESOS_CHECKPOINT` (`1` or `0`, unset is `0`): whether the framework
    /// checkpoints, so that the executor survives an agent restart.
    pub checkpoint: bool,
    /// `MESOS_HTTP_COMMAND_EXECUTOR` (`1` or `0`, unset is `0`).
    pub http_command_executor: bool,
    /// `MESOS_DOMAIN_SOCKET`, set when the agent also serves the executor API
    /// on a Unix socket. Not used by this library.
    pub domain_socket: Option<PathBuf>,
    /// `MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD`: how long the executor has,
    /// after SHUTDOWN, to kill its tasks and exit. Defaults to
    /// [`DEFAULT_SHUTDOWN_GRACE_PERIOD`] when unset.
    pub shutdown_grace_period: Duration,
    /// `MESOS_RECOVERY_TIMEOUT` (required when checkpointing): how long to
    /// keep resubscribing after a disconnection. [`DEFAULT_RECOVERY_TIMEOUT`]
    /// when not checkpointing (unused then).
    pub recovery_timeout: Duration,
    /// `MESOS_SUBSCRIPTION_BACKOFF_MAX` (required when checkpointing): the
    /// longest wait between two SUBSCRIBE attempts.
    /// [`DEFAULT_SUBSCRIPTION_BACKOFF_MAX`] when not checkpointing.
    pub subscription_backoff_max: Duration,
    /// `MESOS_EXECUTOR_AUTHENTICATION_TOKEN`, sent as `Authorization: Bearer`.
    pub auth_token: Option<String>,
}

impl fmt::Debug for ExecutorEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutorEnv")
            .field("framework_id", &self.framework_id.value)
            .field("executor_id", &self.executor_id.value)
            .field("agent_id", &self.agent_id.as_ref().map(|a| &a.value))
            .field("agent_pid", &self.agent_pid)
            .field("agent_endpoint", &self.agent_endpoint)
            .field("directory", &self.directory)
            .field("sandbox", &self.sandbox)
            .field("checkpoint", &self.checkpoint)
            .field("http_command_executor", &self.http_command_executor)
            .field("domain_socket", &self.domain_socket)
            .field("shutdown_grace_period", &self.shutdown_grace_period)
            .field("recovery_timeout", &self.recovery_timeout)
            .field("subscription_backoff_max", &self.subscription_backoff_max)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The executor's environment is incomplete or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A variable the agent always sets is missing.
    #[error(
        "{name} is not set{why}; the Mesos agent sets it for every executor it \
         launches, so run this as an executor of a Mesos agent (or km dev-agent), \
         or export {name} by hand"
    )]
    Missing {
        /// The variable.
        name: &'static str,
        /// Why it is needed, when that depends on another variable.
        why: &'static str,
    },
    /// A variable holds a value of the wrong form.
    #[error("{name}={value:?} is not {expected}")]
    Malformed {
        /// The variable.
        name: &'static str,
        /// What it holds.
        value: String,
        /// What it should hold.
        expected: &'static str,
    },
}

impl ExecutorEnv {
    /// Reads the process environment (never modifies it). A value that is not
    /// valid Unicode is read lossily.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_vars(|name| match std::env::var(name) {
            Ok(v) => Some(v),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(v)) => Some(v.to_string_lossy().into_owned()),
        })
    }

    /// Reads the variables through `get` (a map lookup in tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let required = |name: &'static str, why: &'static str| match get(name) {
            None => Err(EnvError::Missing { name, why }),
            Some(v) if v.is_empty() => Err(EnvError::Malformed {
                name,
                value: v,
                expected: "a non-empty value",
            }),
            Some(v) => Ok(v),
        };
        let optional = |name: &'static str| get(name).filter(|v| !v.is_empty());
        let flag = |name: &'static str| match get(name).as_deref() {
            None | Some("0") => Ok(false),
            Some("1") => Ok(true),
            Some(other) => Err(EnvError::Malformed {
                name,
                value: other.to_owned(),
                expected: "\"1\" or \"0\"",
            }),
        };
        let duration = |name: &'static str, value: String| {
            parse_mesos_duration(&value).ok_or(EnvError::Malformed {
                name,
                value,
                expected: "a Mesos duration such as 5secs, 15mins or 500ms \
                           (units ns, us, ms, secs, mins, hrs, days, weeks)",
            })
        };

        let framework_id = v1::FrameworkId {
            value: required(FRAMEWORK_ID, "")?,
        };
        let executor_id = v1::ExecutorId {
            value: required(EXECUTOR_ID, "")?,
        };
        let agent_endpoint = required(AGENT_ENDPOINT, "")?;
        if !is_host_port(&agent_endpoint) {
            return Err(EnvError::Malformed {
                name: AGENT_ENDPOINT,
                value: agent_endpoint,
                expected: "host:port without a scheme, such as 10.0.0.7:5051",
            });
        }
        let directory = PathBuf::from(required(DIRECTORY, "")?);
        let sandbox = optional(SANDBOX).map_or_else(|| directory.clone(), PathBuf::from);
        let checkpoint = flag(CHECKPOINT)?;
        let http_command_executor = flag(HTTP_COMMAND_EXECUTOR)?;
        let shutdown_grace_period = match optional(SHUTDOWN_GRACE_PERIOD) {
            Some(v) => duration(SHUTDOWN_GRACE_PERIOD, v)?,
            None => DEFAULT_SHUTDOWN_GRACE_PERIOD,
        };
        const WHY: &str = " although MESOS_CHECKPOINT=1";
        let (recovery_timeout, subscription_backoff_max) = if checkpoint {
            (
                duration(RECOVERY_TIMEOUT, required(RECOVERY_TIMEOUT, WHY)?)?,
                duration(
                    SUBSCRIPTION_BACKOFF_MAX,
                    required(SUBSCRIPTION_BACKOFF_MAX, WHY)?,
                )?,
            )
        } else {
            // Still validate values that are present: a typo should not hide.
            let recovery = optional(RECOVERY_TIMEOUT)
                .map(|v| duration(RECOVERY_TIMEOUT, v))
                .transpose()?;
            let backoff = optional(SUBSCRIPTION_BACKOFF_MAX)
                .map(|v| duration(SUBSCRIPTION_BACKOFF_MAX, v))
                .transpose()?;
            (
                recovery.unwrap_or(DEFAULT_RECOVERY_TIMEOUT),
                backoff.unwrap_or(DEFAULT_SUBSCRIPTION_BACKOFF_MAX),
            )
        };

        Ok(ExecutorEnv {
            framework_id,
            executor_id,
            agent_id: optional(AGENT_ID).map(|value| v1::AgentId { value }),
            agent_pid: optional(AGENT_PID),
            agent_endpoint,
            directory,
            sandbox,
            checkpoint,
            http_command_executor,
            domain_socket: optional(DOMAIN_SOCKET).map(PathBuf::from),
            shutdown_grace_period,
            recovery_timeout,
            subscription_backoff_max,
            auth_token: optional(AUTH_TOKEN),
        })
    }

    /// `http://<agent_endpoint>/api/v1/executor`.
    pub fn api_url(&self) -> String {
        format!("http://{}{EXECUTOR_API_PATH}", self.agent_endpoint)
    }
}

/// `host:port` with a non-empty host, a decimal port and no scheme or path.
fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && !host.contains('/')
        && !s.contains(char::is_whitespace)
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok()
}

/// Parses a duration as Mesos (stout) writes it: a non-negative integer or
/// decimal immediately followed by one of `ns`, `us`, `ms`, `secs`, `mins`,
/// `hrs`, `days`, `weeks` (`5secs`, `15mins`, `1.5hrs`). Returns `None` for
/// anything else, including values too large for a [`Duration`].
pub fn parse_mesos_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let unit_nanos: u128 = match unit {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "secs" => 1_000_000_000,
        "mins" => 60 * 1_000_000_000,
        "hrs" => 3_600 * 1_000_000_000,
        "days" => 86_400 * 1_000_000_000,
        "weeks" => 7 * 86_400 * 1_000_000_000,
        _ => return None,
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (number, None),
    };
    if whole.is_empty() || fraction.is_some_and(|f| f.is_empty() || f.contains('.')) {
        return None;
    }
    let whole: u128 = whole.parse().ok()?;
    let mut nanos = whole.checked_mul(unit_nanos)?;
    if let Some(fraction) = fraction {
        // Exact decimal arithmetic on at most 30 fractional digits, rounded
        // down to whole nanoseconds.
        let digits = &fraction[..fraction.len().min(30)];
        let scale = 10u128.checked_pow(u32::try_from(digits.len()).ok()?)?;
        let numerator: u128 = digits.parse().ok()?;
        let part = numerator
            .checked_mul(unit_nanos)
            .map(|n| n / scale)
            .or_else(|| (numerator / scale.max(1)).checked_mul(unit_nanos))?;
        nanos = nanos.checked_add(part)?;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    let sub = u32::try_from(nanos % 1_000_000_000).ok()?;
    Some(Duration::new(secs, sub))
}

// ---------------------------------------------------------------------------
// Options, events, errors
// ---------------------------------------------------------------------------

/// Tunables of the client that the agent does not dictate.
#[derive(Debug, Clone)]
pub struct Options {
    /// Encoding of requests and of the event stream (sent as `Accept`).
    pub encoding: Encoding,
    /// Bound on each UPDATE and MESSAGE, and on a SUBSCRIBE until the
    /// response headers arrive.
    pub request_timeout: Duration,
    /// A subscription that carries no event for this long is treated as
    /// broken. Mesos agents send a HEARTBEAT every 30 minutes.
    pub idle_timeout: Duration,
    /// How long the first subscription may take, retries included. Mesos
    /// agents kill executors that have not subscribed within
    /// `--executor_registration_timeout` (1 minute by default).
    pub registration_timeout: Duration,
    /// How often updates whose POST failed are sent again while subscribed.
    pub resend_interval: Duration,
    /// The largest event accepted on the stream.
    pub max_event_size: usize,
    /// The HTTP client to use; a plain-HTTP client without proxies is built
    /// when `None`.
    pub client: Option<reqwest::Client>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            encoding: Encoding::Protobuf,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(35 * 60),
            registration_timeout: Duration::from_secs(60),
            resend_interval: Duration::from_secs(10),
            max_event_size: DEFAULT_MAX_RECORD,
            client: None,
        }
    }
}

impl Options {
    /// The defaults with the given encoding.
    pub fn new(encoding: Encoding) -> Self {
        Options {
            encoding,
            ..Options::default()
        }
    }
}

/// What the executor learns from the agent, in order of arrival.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecutorEvent {
    /// The agent accepted the SUBSCRIBE (also after every resubscription).
    Subscribed(Box<executor::event::Subscribed>),
    /// Launch a task, then report it with [`Executor::update`].
    Launch(Box<v1::TaskInfo>),
    /// Launch a group of tasks; report each with [`Executor::update`].
    LaunchGroup(v1::TaskGroupInfo),
    /// Kill a task and report a terminal state. `kill_policy`, when given,
    /// overrides the task's own.
    Kill {
        /// The task to kill.
        task_id: v1::TaskId,
        /// Grace period to use instead of the task's.
        kill_policy: Option<v1::KillPolicy>,
    },
    /// The agent has taken over the status update with this uuid (it is no
    /// longer resent). The scheduler may not have seen it yet.
    Acknowledged {
        /// The task of the update.
        task_id: v1::TaskId,
        /// The update's uuid.
        uuid: Vec<u8>,
    },
    /// Data the scheduler sent with a MESSAGE call.
    Message(Vec<u8>),
    /// The agent reported an error (informational: the subscription stays).
    Error(String),
    /// Kill every task, send their terminal updates, and exit within
    /// [`ExecutorEnv::shutdown_grace_period`]. The channel closes after this
    /// event unless the reason is [`ShutdownReason::Requested`], in which case
    /// the subscription stays up so that the terminal updates can still be
    /// acknowledged.
    Shutdown(ShutdownReason),
    /// The subscription broke; resubscribing (checkpointing frameworks only).
    /// The tasks keep running.
    Disconnected,
    /// The agent could not be (re)subscribed to within the recovery timeout
    /// (or, for the first subscription, [`Options::registration_timeout`]).
    /// The executor should kill its tasks and exit. Last event.
    RecoveryTimeout,
}

/// Why the executor must shut down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShutdownReason {
    /// The agent sent SHUTDOWN.
    Requested,
    /// The subscription broke and the framework does not checkpoint, so the
    /// agent treats the executor as gone.
    Disconnected,
    /// The agent refused SUBSCRIBE in a way retrying cannot fix.
    Rejected {
        /// The HTTP status (200 if the stream itself was unusable).
        status: u16,
        /// What the agent said, or what was wrong with its answer.
        message: String,
    },
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShutdownReason::Requested => f.write_str("the agent requested shutdown"),
            ShutdownReason::Disconnected => {
                f.write_str("disconnected from the agent and the framework does not checkpoint")
            }
            ShutdownReason::Rejected { status, message } => {
                write!(f, "the agent rejected SUBSCRIBE ({status}): {message}")
            }
        }
    }
}

/// Where the subscription task is (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A SUBSCRIBE is in flight, or its stream has not yet said SUBSCRIBED.
    Subscribing,
    /// Events flow; calls can be made.
    Subscribed,
    /// Waiting before the next SUBSCRIBE.
    Backoff,
    /// Finished for good.
    Stopped,
}

/// [`start`] could not set up the client.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No tokio runtime to spawn on.
    #[error("executor::start must be called inside a tokio runtime")]
    NoRuntime,
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client for the agent at {endpoint}")]
    Client {
        /// The agent endpoint.
        endpoint: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The TLS configuration could not be built.
    #[error("could not configure TLS for the HTTP client")]
    Tls(#[source] rustls::Error),
    /// The agent endpoint does not make a valid URL.
    #[error(
        "MESOS_AGENT_ENDPOINT={endpoint:?} does not form a valid URL ({reason}); expected host:port"
    )]
    Url {
        /// The agent endpoint.
        endpoint: String,
        /// The parser's complaint.
        reason: String,
    },
}

/// A call (UPDATE or MESSAGE) did not reach the agent.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The executor is between subscriptions.
    #[error("not subscribed to the agent (subscribing or reconnecting); try again once subscribed")]
    NotSubscribed,
    /// The executor library has stopped for good.
    #[error("the executor has stopped (shut down or gave up on the agent)")]
    Stopped,
    /// The request did not complete in time.
    #[error("{call} to {url} got no answer within {timeout:?}; is the agent overloaded?")]
    Timeout {
        /// UPDATE or MESSAGE.
        call: &'static str,
        /// The agent URL.
        url: String,
        /// The bound.
        timeout: Duration,
    },
    /// The request failed below HTTP.
    #[error("{call} to {url} failed; is the agent running and reachable?")]
    Transport {
        /// UPDATE or MESSAGE.
        call: &'static str,
        /// The agent URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The agent answered with an error status.
    #[error("agent answered {call} with {status}: {body}")]
    Status {
        /// UPDATE or MESSAGE.
        call: &'static str,
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
}

/// A status update was refused, or not delivered yet.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// Executors may not send `TASK_STAGING` (the agent answers 400).
    #[error(
        "refusing to send TASK_STAGING for task {task_id}: only the agent uses it; \
         send TASK_STARTING or TASK_RUNNING"
    )]
    Staging {
        /// The task.
        task_id: String,
    },
    /// The status names another executor (the agent answers 400).
    #[error(
        "status for task {task_id} names executor {given}, but this is executor {ours}; \
         leave executor_id unset"
    )]
    ForeignExecutor {
        /// The task.
        task_id: String,
        /// The executor id in the status.
        given: String,
        /// This executor's id.
        ours: String,
    },
    /// The executor has stopped; nothing can be sent any more.
    #[error("cannot update task {task_id}: the executor has stopped")]
    Stopped {
        /// The task.
        task_id: String,
    },
    /// Not delivered now, but kept: it is sent again while subscribed and in
    /// every SUBSCRIBE until the agent acknowledges it.
    #[error(
        "status update {uuid} ({state}) for task {task_id} not delivered yet; \
         it is kept and sent again once the agent is reachable"
    )]
    NotDelivered {
        /// The task.
        task_id: String,
        /// The task state of the update.
        state: String,
        /// The update's uuid.
        uuid: String,
        /// Why it did not go through.
        #[source]
        source: Box<CallError>,
    },
}

impl UpdateError {
    /// Whether the update is kept for another delivery (so the caller need not
    /// retry it).
    pub fn is_kept(&self) -> bool {
        matches!(self, UpdateError::NotDelivered { .. })
    }
}

// ---------------------------------------------------------------------------
// Bookkeeping of unacknowledged tasks and updates
// ---------------------------------------------------------------------------

/// An update not yet acknowledged by the agent.
#[derive(Debug, Clone)]
struct Pending {
    status: v1::TaskStatus,
    /// Not known to have reached the agent: needs a POST (or a SUBSCRIBE).
    unsent: bool,
}

/// What must be resent to the agent on every SUBSCRIBE.
#[derive(Debug, Default)]
struct Book {
    /// In the order they were made.
    updates: Vec<Pending>,
    /// In launch order, one per task id.
    tasks: Vec<v1::TaskInfo>,
}

impl Book {
    /// A task arrived in LAUNCH or LAUNCH_GROUP.
    fn launched(&mut self, task: &v1::TaskInfo) {
        match self.tasks.iter_mut().find(|t| t.task_id == task.task_id) {
            Some(known) => *known = task.clone(),
            None => self.tasks.push(task.clone()),
        }
    }

    /// A new update (already stamped with its uuid), still to be sent.
    fn record(&mut self, status: v1::TaskStatus) {
        self.updates.push(Pending {
            status,
            unsent: true,
        });
    }

    /// The agent acknowledged `uuid` for `task_id`: drop exactly that update,
    /// and the task (the agent now knows it reached the executor). Returns
    /// whether an update matched.
    fn acknowledge(&mut self, task_id: &v1::TaskId, uuid: &[u8]) -> bool {
        let Some(i) = self
            .updates
            .iter()
            .position(|p| p.status.uuid.as_deref() == Some(uuid) && &p.status.task_id == task_id)
        else {
            return false;
        };
        self.updates.remove(i);
        self.tasks.retain(|t| &t.task_id != task_id);
        true
    }

    /// The SUBSCRIBE payload; every update in it counts as sent.
    fn subscribe(&mut self) -> executor::call::Subscribe {
        for p in &mut self.updates {
            p.unsent = false;
        }
        executor::call::Subscribe {
            unacknowledged_tasks: self.tasks.clone(),
            unacknowledged_updates: self
                .updates
                .iter()
                .map(|p| executor::call::Update {
                    status: p.status.clone(),
                })
                .collect(),
        }
    }

    /// The oldest update still to be POSTed, now marked as sent.
    fn next_unsent(&mut self) -> Option<v1::TaskStatus> {
        let p = self.updates.iter_mut().find(|p| p.unsent)?;
        p.unsent = false;
        Some(p.status.clone())
    }

    /// Its POST failed: send it again later (if it is still unacknowledged).
    fn mark_unsent(&mut self, uuid: &[u8]) {
        if let Some(p) = self.find_mut(uuid) {
            p.unsent = true;
        }
    }

    fn is_unsent(&self, uuid: &[u8]) -> bool {
        self.updates
            .iter()
            .any(|p| p.unsent && p.status.uuid.as_deref() == Some(uuid))
    }

    fn has_unsent(&self) -> bool {
        self.updates.iter().any(|p| p.unsent)
    }

    fn find_mut(&mut self, uuid: &[u8]) -> Option<&mut Pending> {
        self.updates
            .iter_mut()
            .find(|p| p.status.uuid.as_deref() == Some(uuid))
    }
}

// ---------------------------------------------------------------------------
// Call building
// ---------------------------------------------------------------------------

fn call(env: &ExecutorEnv, kind: executor::call::Type) -> executor::Call {
    executor::Call {
        executor_id: env.executor_id.clone(),
        framework_id: env.framework_id.clone(),
        r#type: Some(kind as i32),
        ..Default::default()
    }
}

/// SUBSCRIBE; the payload is present even when empty, as the agent requires.
fn subscribe_call(env: &ExecutorEnv, subscribe: executor::call::Subscribe) -> executor::Call {
    executor::Call {
        subscribe: Some(subscribe),
        ..call(env, executor::call::Type::Subscribe)
    }
}

fn update_call(env: &ExecutorEnv, status: v1::TaskStatus) -> executor::Call {
    executor::Call {
        update: Some(executor::call::Update { status }),
        ..call(env, executor::call::Type::Update)
    }
}

fn message_call(env: &ExecutorEnv, data: Vec<u8>) -> executor::Call {
    executor::Call {
        message: Some(executor::call::Message { data }),
        ..call(env, executor::call::Type::Message)
    }
}

/// Validates `status` as the agent would and stamps it: `uuid`, source
/// `SOURCE_EXECUTOR`, `executor_id`, and `timestamp` if unset.
fn prepare_status(
    env: &ExecutorEnv,
    mut status: v1::TaskStatus,
    uuid: [u8; 16],
    now: f64,
) -> Result<v1::TaskStatus, UpdateError> {
    if status.state == v1::TaskState::TaskStaging as i32 {
        return Err(UpdateError::Staging {
            task_id: status.task_id.value,
        });
    }
    if let Some(given) = &status.executor_id
        && given != &env.executor_id
    {
        return Err(UpdateError::ForeignExecutor {
            task_id: status.task_id.value,
            given: given.value.clone(),
            ours: env.executor_id.value.clone(),
        });
    }
    status.executor_id = Some(env.executor_id.clone());
    status.source = Some(v1::task_status::Source::Executor as i32);
    status.uuid = Some(uuid.to_vec());
    if status.timestamp.is_none() {
        status.timestamp = Some(now);
    }
    Ok(status)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn state_name(state: i32) -> String {
    v1::TaskState::try_from(state)
        .map_or_else(|_| format!("state {state}"), |s| s.as_str_name().to_owned())
}

fn uuid_text(uuid: &[u8]) -> String {
    uuid::Uuid::from_slice(uuid).map_or_else(
        |_| uuid.iter().map(|b| format!("{b:02x}")).collect(),
        |u| u.to_string(),
    )
}

/// The delay before SUBSCRIBE attempt `attempt + 1`: uniform in
/// `[0, min(max, 50ms·2^attempt)]`, but never below 10 ms.
fn backoff_delay(attempt: u32, max: Duration) -> Duration {
    let cap = BACKOFF_BASE
        .checked_mul(1u32 << attempt.min(20))
        .unwrap_or(max)
        .min(max);
    let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    let ms = random % cap_ms.saturating_add(1).max(1);
    Duration::from_millis(ms).max(BACKOFF_FLOOR)
}

// ---------------------------------------------------------------------------
// The handle
// ---------------------------------------------------------------------------

struct State {
    book: Book,
    phase: Phase,
}

struct Inner {
    env: ExecutorEnv,
    options: Options,
    client: reqwest::Client,
    url: reqwest::Url,
    state: Mutex<State>,
    /// Serialises update POSTs so that they reach the agent in order.
    send_lock: tokio::sync::Mutex<()>,
    /// Woken whenever an update is acknowledged.
    acked: Notify,
}

/// A cloneable handle for the calls an executor makes to its agent.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("executor_id", &self.inner.env.executor_id.value)
            .field("agent", &self.inner.env.agent_endpoint)
            .field("phase", &self.phase())
            .finish()
    }
}

/// Starts the subscription task on the current tokio runtime and returns the
/// handle and the event channel. The channel closes when the task stops
/// (see [`ExecutorEvent`] for the last events); dropping the receiver stops
/// the task.
pub fn start(
    env: ExecutorEnv,
    options: Options,
) -> Result<(Executor, mpsc::UnboundedReceiver<ExecutorEvent>), StartError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
    let url = reqwest::Url::parse(&env.api_url()).map_err(|e| StartError::Url {
        endpoint: env.agent_endpoint.clone(),
        reason: e.to_string(),
    })?;
    let client = match &options.client {
        Some(c) => c.clone(),
        None => build_client(&options).map_err(|e| match e {
            ClientBuildError::Tls(e) => StartError::Tls(e),
            ClientBuildError::Reqwest(source) => StartError::Client {
                endpoint: env.agent_endpoint.clone(),
                source,
            },
        })?,
    };
    let span = tracing::info_span!(
        "executor",
        executor_id = %env.executor_id.value,
        framework_id = %env.framework_id.value,
        agent = %env.agent_endpoint,
    );
    let inner = Arc::new(Inner {
        env,
        options,
        client,
        url,
        state: Mutex::new(State {
            book: Book::default(),
            phase: Phase::Subscribing,
        }),
        send_lock: tokio::sync::Mutex::new(()),
        acked: Notify::new(),
    });
    let (tx, rx) = mpsc::unbounded_channel();
    runtime.spawn(drive(inner.clone(), tx).instrument(span));
    Ok((Executor { inner }, rx))
}

enum ClientBuildError {
    Tls(rustls::Error),
    Reqwest(reqwest::Error),
}

/// A plain-HTTP client: no proxies (the agent is local), no redirects (an
/// agent never sends one, and a POST must not be replayed), TCP keepalive to
/// notice a vanished agent host, and a TLS backend on the ring provider that
/// does not depend on a process-wide default (never used for `http://`).
fn build_client(options: &Options) -> Result<reqwest::Client, ClientBuildError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ClientBuildError::Tls)?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_keepalive(Duration::from_secs(30))
        .connect_timeout(options.request_timeout)
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(ClientBuildError::Reqwest)
}

impl Executor {
    /// The environment this executor was started with.
    pub fn env(&self) -> &ExecutorEnv {
        &self.inner.env
    }

    /// Where the subscription task is.
    pub fn phase(&self) -> Phase {
        self.inner.lock().phase
    }

    /// Sends a status update. The status is stamped with a fresh uuid, source
    /// `SOURCE_EXECUTOR`, this executor's id and (if unset) the current time,
    /// and kept until the agent acknowledges it. `Ok` means the agent accepted
    /// it (202), or it went out inside a SUBSCRIBE being sent at that moment;
    /// [`UpdateError::is_kept`] errors mean it will be delivered later without
    /// the caller's help.
    pub async fn update(&self, status: v1::TaskStatus) -> Result<(), UpdateError> {
        let inner = &self.inner;
        let status = prepare_status(
            &inner.env,
            status,
            uuid::Uuid::new_v4().into_bytes(),
            unix_now(),
        )?;
        let uuid = status.uuid.clone().unwrap_or_default();
        let task_id = status.task_id.value.clone();
        let state = state_name(status.state);
        {
            let mut st = inner.lock();
            if st.phase == Phase::Stopped {
                return Err(UpdateError::Stopped { task_id });
            }
            st.book.record(status);
        }
        info!(task_id = %task_id, state = %state, uuid = %uuid_text(&uuid), "status update");
        let guard = inner.send_lock.lock().await;
        let result = inner.flush_locked().await;
        let pending = inner.lock().book.is_unsent(&uuid);
        drop(guard);
        if !pending {
            return Ok(());
        }
        Err(UpdateError::NotDelivered {
            task_id,
            state,
            uuid: uuid_text(&uuid),
            source: Box::new(result.err().unwrap_or(CallError::NotSubscribed)),
        })
    }

    /// Sends data to the scheduler (best effort, not retried).
    pub async fn message(&self, data: Vec<u8>) -> Result<(), CallError> {
        let inner = &self.inner;
        match inner.lock().phase {
            Phase::Subscribed => {}
            Phase::Stopped => return Err(CallError::Stopped),
            Phase::Subscribing | Phase::Backoff => return Err(CallError::NotSubscribed),
        }
        inner.post("MESSAGE", &message_call(&inner.env, data)).await
    }

    /// Status updates the agent has not acknowledged, oldest first.
    pub fn unacknowledged(&self) -> Vec<v1::TaskStatus> {
        let st = self.inner.lock();
        st.book.updates.iter().map(|p| p.status.clone()).collect()
    }

    /// Launched tasks the agent has not acknowledged an update for.
    pub fn unacknowledged_tasks(&self) -> Vec<v1::TaskInfo> {
        self.inner.lock().book.tasks.clone()
    }

    /// Waits until every status update is acknowledged, at most `timeout`.
    /// Returns whether they all were (use before exiting, so that terminal
    /// updates are not lost).
    pub async fn wait_acknowledged(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.inner.acked.notified();
            let mut notified = pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.inner.lock();
                if st.book.updates.is_empty() {
                    return true;
                }
                if st.phase == Phase::Stopped {
                    return false;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.inner.lock().book.updates.is_empty();
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_phase(&self, phase: Phase) {
        self.lock().phase = phase;
        self.acked.notify_waiters();
    }

    /// POSTs every unsent update in order while subscribed; stops at the first
    /// failure (which is marked for resending). The caller holds `send_lock`.
    async fn flush_locked(&self) -> Result<(), CallError> {
        loop {
            let status = {
                let mut st = self.lock();
                match st.phase {
                    Phase::Subscribed => {}
                    Phase::Stopped => return Err(CallError::Stopped),
                    Phase::Subscribing | Phase::Backoff => return Err(CallError::NotSubscribed),
                }
                match st.book.next_unsent() {
                    Some(s) => s,
                    None => return Ok(()),
                }
            };
            let uuid = status.uuid.clone().unwrap_or_default();
            let task_id = status.task_id.value.clone();
            if let Err(e) = self.post("UPDATE", &update_call(&self.env, status)).await {
                warn!(task_id = %task_id, uuid = %uuid_text(&uuid), error = %e, "UPDATE failed; will resend");
                self.lock().book.mark_unsent(&uuid);
                return Err(e);
            }
            debug!(task_id = %task_id, uuid = %uuid_text(&uuid), "UPDATE accepted");
        }
    }

    /// Resends failed updates in the background, if there are any.
    fn spawn_flush(self: &Arc<Self>) {
        if !self.lock().book.has_unsent() {
            return;
        }
        let inner = self.clone();
        tokio::spawn(
            async move {
                let _guard = inner.send_lock.lock().await;
                let _ = inner.flush_locked().await;
            }
            .in_current_span(),
        );
    }

    fn request(&self, body: Vec<u8>) -> reqwest::RequestBuilder {
        let enc = self.options.encoding;
        let req = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, enc.content_type())
            .body(body);
        match &self.env.auth_token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// One non-SUBSCRIBE call; success is any 2xx (the agent answers 202).
    async fn post(&self, what: &'static str, call: &executor::Call) -> Result<(), CallError> {
        let timeout = self.options.request_timeout;
        let body = self.options.encoding.encode(call);
        let response = self
            .request(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|source| {
                if source.is_timeout() {
                    CallError::Timeout {
                        call: what,
                        url: self.url.to_string(),
                        timeout,
                    }
                } else {
                    CallError::Transport {
                        call: what,
                        url: self.url.to_string(),
                        source,
                    }
                }
            })?;
        if response.status().is_success() {
            return Ok(());
        }
        let status = response.status().as_u16();
        Err(CallError::Status {
            call: what,
            status,
            body: error_body(response, timeout).await,
        })
    }
}

/// The start of an error response's body, as text, read within `timeout`.
async fn error_body(response: reqwest::Response, timeout: Duration) -> String {
    let mut body = Vec::new();
    let mut chunks = pin!(response.bytes_stream());
    let read = async {
        while let Some(Ok(chunk)) = chunks.next().await {
            body.extend_from_slice(&chunk);
            if body.len() >= ERROR_BODY_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(timeout, read).await;
    body.truncate(ERROR_BODY_LIMIT);
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        text
    }
}

// ---------------------------------------------------------------------------
// The subscription task
// ---------------------------------------------------------------------------

/// How one SUBSCRIBE attempt ended.
enum Attempt {
    /// Before SUBSCRIBED, in a way worth retrying.
    Failed(String),
    /// The agent refused for good.
    Rejected { status: u16, message: String },
    /// After SUBSCRIBED: the subscription broke.
    Lost(String),
    /// The event receiver is gone.
    ReceiverGone,
}

/// How the subscription task ended.
enum Finish {
    /// Emit this last event.
    Last(ExecutorEvent),
    /// Nothing more to say.
    Quiet,
}

async fn drive(inner: Arc<Inner>, tx: mpsc::UnboundedSender<ExecutorEvent>) {
    let finish = tokio::select! {
        finish = run(&inner, &tx) => finish,
        () = tx.closed() => {
            debug!("event receiver dropped; stopping");
            Finish::Quiet
        }
    };
    inner.set_phase(Phase::Stopped);
    if let Finish::Last(event) = finish {
        info!(event = ?event, "executor stopping");
        let _ = tx.send(event);
    }
}

async fn run(inner: &Arc<Inner>, tx: &mpsc::UnboundedSender<ExecutorEvent>) -> Finish {
    let env = &inner.env;
    let mut deadline = Instant::now() + inner.options.registration_timeout;
    let mut attempt: u32 = 0;
    let mut shutdown_requested = false;
    loop {
        if Instant::now() >= deadline {
            warn!(
                checkpoint = env.checkpoint,
                "could not subscribe to the agent in time; giving up"
            );
            return Finish::Last(ExecutorEvent::RecoveryTimeout);
        }
        inner.set_phase(Phase::Subscribing);
        match subscribe_once(inner, tx, deadline, &mut shutdown_requested).await {
            Attempt::ReceiverGone => return Finish::Quiet,
            Attempt::Rejected { status, message } => {
                warn!(status, message = %message, "agent rejected SUBSCRIBE");
                return Finish::Last(ExecutorEvent::Shutdown(ShutdownReason::Rejected {
                    status,
                    message,
                }));
            }
            Attempt::Failed(reason) => {
                warn!(attempt, reason = %reason, "SUBSCRIBE attempt failed");
            }
            Attempt::Lost(reason) => {
                if shutdown_requested {
                    info!(reason = %reason, "subscription ended after SHUTDOWN");
                    return Finish::Quiet;
                }
                if !env.checkpoint {
                    warn!(reason = %reason, "subscription lost and the framework does not checkpoint; shutting down");
                    return Finish::Last(ExecutorEvent::Shutdown(ShutdownReason::Disconnected));
                }
                warn!(
                    reason = %reason,
                    recovery_timeout_ms = env.recovery_timeout.as_millis(),
                    "subscription lost; resubscribing"
                );
                inner.set_phase(Phase::Backoff);
                if tx.send(ExecutorEvent::Disconnected).is_err() {
                    return Finish::Quiet;
                }
                deadline = Instant::now() + env.recovery_timeout;
                attempt = 0;
            }
        }
        inner.set_phase(Phase::Backoff);
        let now = Instant::now();
        let delay = backoff_delay(attempt, env.subscription_backoff_max)
            .min(deadline.saturating_duration_since(now));
        debug!(
            attempt,
            delay_ms = delay.as_millis(),
            "waiting before SUBSCRIBE"
        );
        tokio::time::sleep(delay).await;
        attempt = attempt.saturating_add(1);
    }
}

/// One SUBSCRIBE and, if it is accepted, the whole life of its stream.
async fn subscribe_once(
    inner: &Arc<Inner>,
    tx: &mpsc::UnboundedSender<ExecutorEvent>,
    deadline: Instant,
    shutdown_requested: &mut bool,
) -> Attempt {
    let options = &inner.options;
    let call = {
        let mut st = inner.lock();
        subscribe_call(&inner.env, st.book.subscribe())
    };
    if let Some(sub) = &call.subscribe {
        info!(
            unacknowledged_tasks = sub.unacknowledged_tasks.len(),
            unacknowledged_updates = sub.unacknowledged_updates.len(),
            "subscribing"
        );
    }
    let request = inner
        .request(options.encoding.encode(&call))
        .header(ACCEPT, options.encoding.content_type());
    let headers_by = deadline.min(Instant::now() + options.request_timeout);
    let response = match tokio::time::timeout_at(headers_by, request.send()).await {
        Err(_) => return Attempt::Failed("no response to SUBSCRIBE in time".into()),
        Ok(Err(e)) => return Attempt::Failed(format!("SUBSCRIBE failed: {e}")),
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        let code = status.as_u16();
        let body = error_body(response, options.request_timeout).await;
        return if code == 404 || status.is_server_error() {
            Attempt::Failed(format!("agent answered SUBSCRIBE with {code}: {body}"))
        } else {
            Attempt::Rejected {
                status: code,
                message: body,
            }
        };
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let Some(encoding) = Encoding::from_content_type(&content_type) else {
        return Attempt::Rejected {
            status: 200,
            message: format!(
                "event stream has Content-Type {content_type:?}; expected {}",
                options.encoding.content_type()
            ),
        };
    };
    if encoding != options.encoding {
        debug!(content_type = %content_type, "agent chose another encoding for the events");
    }

    let mut stream = pin!(events::<executor::Event, _, _, _>(
        response.bytes_stream(),
        encoding,
        options.max_event_size,
    ));
    let mut subscribed = false;
    let mut resend = tokio::time::interval(options.resend_interval);
    resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lost_or_failed = |subscribed: bool, reason: String| {
        if subscribed {
            Attempt::Lost(reason)
        } else {
            Attempt::Failed(reason)
        }
    };
    let mut last_event = Instant::now();
    loop {
        let idle_by = last_event + options.idle_timeout;
        let wait_until = if subscribed {
            idle_by
        } else {
            idle_by.min(deadline)
        };
        let next = tokio::select! {
            next = stream.next() => next,
            () = tokio::time::sleep_until(wait_until) => {
                let reason = if subscribed {
                    format!("no event from the agent for {:?}", options.idle_timeout)
                } else {
                    "no SUBSCRIBED event in time".to_owned()
                };
                return lost_or_failed(subscribed, reason);
            }
            _ = resend.tick(), if subscribed => {
                inner.spawn_flush();
                continue;
            }
        };
        let event = match next {
            None => return lost_or_failed(subscribed, "the agent closed the event stream".into()),
            Some(Err(e)) => {
                return lost_or_failed(subscribed, format!("broken event stream: {e}"));
            }
            Some(Ok(event)) => event,
        };
        last_event = Instant::now();
        let Some(out) = inner.on_event(event) else {
            continue;
        };
        match &out {
            ExecutorEvent::Subscribed(_) => {
                subscribed = true;
                inner.set_phase(Phase::Subscribed);
                resend.reset();
                // Updates made while SUBSCRIBE was in flight are not in it.
                inner.spawn_flush();
            }
            ExecutorEvent::Shutdown(_) => *shutdown_requested = true,
            _ => {}
        }
        if tx.send(out).is_err() {
            return Attempt::ReceiverGone;
        }
    }
}

impl Inner {
    /// Applies one agent event to the bookkeeping and translates it.
    fn on_event(&self, event: executor::Event) -> Option<ExecutorEvent> {
        use executor::event::Type;
        let Some(kind) = event.r#type.and_then(|t| Type::try_from(t).ok()) else {
            debug!(r#type = ?event.r#type, "ignoring event of unknown type");
            return None;
        };
        let missing = |what: &str| {
            warn!(
                event = kind.as_str_name(),
                "event lacks its {what} payload; ignored"
            );
            None
        };
        match kind {
            Type::Subscribed => {
                let Some(s) = event.subscribed else {
                    return missing("subscribed");
                };
                info!(
                    agent_id = %s.agent_info.id.as_ref().map_or("", |a| a.value.as_str()),
                    container_id = %s.container_id.as_ref().map_or("", |c| c.value.as_str()),
                    "subscribed"
                );
                Some(ExecutorEvent::Subscribed(Box::new(s)))
            }
            Type::Launch => {
                let Some(launch) = event.launch else {
                    return missing("launch");
                };
                info!(task_id = %launch.task.task_id.value, "LAUNCH");
                self.lock().book.launched(&launch.task);
                Some(ExecutorEvent::Launch(Box::new(launch.task)))
            }
            Type::LaunchGroup => {
                let Some(group) = event.launch_group else {
                    return missing("launch_group");
                };
                {
                    let mut st = self.lock();
                    for task in &group.task_group.tasks {
                        st.book.launched(task);
                    }
                }
                info!(tasks = group.task_group.tasks.len(), "LAUNCH_GROUP");
                Some(ExecutorEvent::LaunchGroup(group.task_group))
            }
            Type::Kill => {
                let Some(kill) = event.kill else {
                    return missing("kill");
                };
                info!(task_id = %kill.task_id.value, "KILL");
                Some(ExecutorEvent::Kill {
                    task_id: kill.task_id,
                    kill_policy: kill.kill_policy,
                })
            }
            Type::Acknowledged => {
                let Some(ack) = event.acknowledged else {
                    return missing("acknowledged");
                };
                let known = self.lock().book.acknowledge(&ack.task_id, &ack.uuid);
                if !known {
                    debug!(task_id = %ack.task_id.value, uuid = %uuid_text(&ack.uuid), "ACKNOWLEDGED for an unknown update");
                    return None;
                }
                debug!(task_id = %ack.task_id.value, uuid = %uuid_text(&ack.uuid), "ACKNOWLEDGED");
                self.acked.notify_waiters();
                Some(ExecutorEvent::Acknowledged {
                    task_id: ack.task_id,
                    uuid: ack.uuid,
                })
            }
            Type::Message => {
                let Some(message) = event.message else {
                    return missing("message");
                };
                Some(ExecutorEvent::Message(message.data))
            }
            Type::Error => {
                let Some(error) = event.error else {
                    return missing("error");
                };
                warn!(message = %error.message, "agent sent ERROR");
                Some(ExecutorEvent::Error(error.message))
            }
            Type::Shutdown => {
                info!("SHUTDOWN");
                Some(ExecutorEvent::Shutdown(ShutdownReason::Requested))
            }
            Type::Heartbeat => None,
            Type::Unknown => {
                debug!("ignoring UNKNOWN event");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};
    use std::convert::Infallible;
    use std::net::SocketAddr;

    use axum::body::{Body, Bytes};
    use axum::extract::State as AxState;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};

    use super::*;
    use crate::mesos::stream::record;

    // -- helpers ------------------------------------------------------------

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Every variable a Mesos agent sets, with distinct values.
    fn full_vars() -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            (FRAMEWORK_ID, "fw-1".to_owned()),
            (EXECUTOR_ID, "ex-1".to_owned()),
            (AGENT_ID, "agent-S0".to_owned()),
            (AGENT_PID, "slave(1)@10.0.0.7:5051".to_owned()),
            (AGENT_ENDPOINT, "10.0.0.7:5051".to_owned()),
            (DIRECTORY, "/var/lib/mesos/slaves/S0/runs/c1".to_owned()),
            (SANDBOX, "/mnt/mesos/sandbox".to_owned()),
            (CHECKPOINT, "1".to_owned()),
            (HTTP_COMMAND_EXECUTOR, "1".to_owned()),
            (DOMAIN_SOCKET, "/run/mesos/agent.sock".to_owned()),
            (SHUTDOWN_GRACE_PERIOD, "7secs".to_owned()),
            (RECOVERY_TIMEOUT, "15mins".to_owned()),
            (SUBSCRIPTION_BACKOFF_MAX, "2secs".to_owned()),
            (AUTH_TOKEN, "jwt.token.here".to_owned()),
        ])
    }

    fn env_of(vars: &BTreeMap<&'static str, String>) -> Result<ExecutorEnv, EnvError> {
        ExecutorEnv::from_vars(|name| vars.get(name).cloned())
    }

    fn minimal_vars() -> BTreeMap<&'static str, String> {
        let mut vars = full_vars();
        for optional in [
            AGENT_ID,
            AGENT_PID,
            SANDBOX,
            CHECKPOINT,
            HTTP_COMMAND_EXECUTOR,
            DOMAIN_SOCKET,
            SHUTDOWN_GRACE_PERIOD,
            RECOVERY_TIMEOUT,
            SUBSCRIPTION_BACKOFF_MAX,
            AUTH_TOKEN,
        ] {
            vars.remove(optional);
        }
        vars
    }

    fn task_id(id: &str) -> v1::TaskId {
        v1::TaskId { value: id.into() }
    }

    fn task(id: &str) -> v1::TaskInfo {
        v1::TaskInfo {
            name: format!("task {id}"),
            task_id: task_id(id),
            agent_id: v1::AgentId {
                value: "agent-S0".into(),
            },
            ..Default::default()
        }
    }

    fn status(id: &str, state: v1::TaskState) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: task_id(id),
            state: state as i32,
            ..Default::default()
        }
    }

    /// A stamped status with the given uuid byte, as `Executor::update` makes.
    fn stamped(env: &ExecutorEnv, id: &str, state: v1::TaskState, u: u8) -> v1::TaskStatus {
        prepare_status(env, status(id, state), [u; 16], 1.0).expect("valid status")
    }

    fn test_env() -> ExecutorEnv {
        env_of(&full_vars()).expect("full environment")
    }

    // -- environment --------------------------------------------------------

    #[test]
    fn env_reads_every_variable() {
        let env = test_env();
        assert_eq!(
            env,
            ExecutorEnv {
                framework_id: v1::FrameworkId {
                    value: "fw-1".into()
                },
                executor_id: v1::ExecutorId {
                    value: "ex-1".into()
                },
                agent_id: Some(v1::AgentId {
                    value: "agent-S0".into()
                }),
                agent_pid: Some("slave(1)@10.0.0.7:5051".into()),
                agent_endpoint: "10.0.0.7:5051".into(),
                directory: "/var/lib/mesos/slaves/S0/runs/c1".into(),
                sandbox: "/mnt/mesos/sandbox".into(),
                checkpoint: true,
                http_command_executor: true,
                domain_socket: Some("/run/mesos/agent.sock".into()),
                shutdown_grace_period: Duration::from_secs(7),
                recovery_timeout: Duration::from_secs(15 * 60),
                subscription_backoff_max: Duration::from_secs(2),
                auth_token: Some("jwt.token.here".into()),
            }
        );
        assert_eq!(env.api_url(), "http://10.0.0.7:5051/api/v1/executor");
    }

    #[test]
    fn env_defaults_when_optional_variables_are_absent() {
        let env = env_of(&minimal_vars()).expect("minimal environment");
        assert_eq!(env.agent_id, None);
        assert_eq!(env.agent_pid, None);
        assert_eq!(
            env.sandbox, env.directory,
            "sandbox falls back to MESOS_DIRECTORY"
        );
        assert!(!env.checkpoint);
        assert!(!env.http_command_executor);
        assert_eq!(env.domain_socket, None);
        assert_eq!(env.shutdown_grace_period, DEFAULT_SHUTDOWN_GRACE_PERIOD);
        assert_eq!(env.recovery_timeout, DEFAULT_RECOVERY_TIMEOUT);
        assert_eq!(
            env.subscription_backoff_max,
            DEFAULT_SUBSCRIPTION_BACKOFF_MAX
        );
        assert_eq!(env.auth_token, None);

        let mut vars = minimal_vars();
        vars.insert(CHECKPOINT, "0".into());
        assert!(!env_of(&vars).expect("checkpoint 0").checkpoint);
        // Recovery variables are still validated (and used) without checkpointing.
        vars.insert(RECOVERY_TIMEOUT, "3secs".into());
        assert_eq!(
            env_of(&vars).expect("valid").recovery_timeout,
            Duration::from_secs(3)
        );
    }

    #[test]
    fn env_names_each_missing_required_variable() {
        for name in [FRAMEWORK_ID, EXECUTOR_ID, AGENT_ENDPOINT, DIRECTORY] {
            let mut vars = full_vars();
            vars.remove(name);
            let err = env_of(&vars).expect_err(name);
            assert_eq!(err, EnvError::Missing { name, why: "" });
            assert!(
                err.to_string().starts_with(&format!("{name} is not set;")),
                "{err}"
            );
        }
    }

    #[test]
    fn env_checkpointing_requires_the_recovery_variables() {
        for name in [RECOVERY_TIMEOUT, SUBSCRIPTION_BACKOFF_MAX] {
            let mut vars = full_vars();
            vars.remove(name);
            let err = env_of(&vars).expect_err(name);
            assert!(
                matches!(err, EnvError::Missing { name: n, why } if n == name && !why.is_empty()),
                "{err:?}"
            );
            assert!(err.to_string().contains("MESOS_CHECKPOINT=1"), "{err}");
        }
    }

    #[test]
    fn env_rejects_malformed_values_naming_variable_and_value() {
        let cases = [
            (CHECKPOINT, "true"),
            (CHECKPOINT, "yes"),
            (HTTP_COMMAND_EXECUTOR, "2"),
            (RECOVERY_TIMEOUT, "15"),
            (RECOVERY_TIMEOUT, "15 mins"),
            (SUBSCRIPTION_BACKOFF_MAX, "-2secs"),
            (SUBSCRIPTION_BACKOFF_MAX, "2s"),
            (SHUTDOWN_GRACE_PERIOD, "5sec"),
            (AGENT_ENDPOINT, "http://10.0.0.7:5051"),
            (AGENT_ENDPOINT, "10.0.0.7"),
            (AGENT_ENDPOINT, "10.0.0.7:port"),
            (AGENT_ENDPOINT, "10.0.0.7:99999"),
            (AGENT_ENDPOINT, ":5051"),
            (FRAMEWORK_ID, ""),
            (EXECUTOR_ID, ""),
            (DIRECTORY, ""),
        ];
        for (name, value) in cases {
            let mut vars = full_vars();
            vars.insert(name, value.to_owned());
            let err = env_of(&vars).expect_err(&format!("{name}={value}"));
            assert!(
                matches!(&err, EnvError::Malformed { name: n, value: v, .. } if *n == name && v == value),
                "{name}={value}: {err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains(name) && text.contains(&format!("{value:?}")),
                "{text}"
            );
        }
    }

    #[test]
    fn env_accepts_bracketed_ipv6_endpoints() {
        let mut vars = full_vars();
        vars.insert(AGENT_ENDPOINT, "[::1]:5051".into());
        let env = env_of(&vars).expect("ipv6");
        assert_eq!(env.api_url(), "http://[::1]:5051/api/v1/executor");
    }

    #[test]
    fn durations_parse_as_mesos_writes_them() {
        let ok = [
            ("0ns", Duration::ZERO),
            ("10us", Duration::from_micros(10)),
            ("500ms", Duration::from_millis(500)),
            ("2secs", Duration::from_secs(2)),
            ("5secs", Duration::from_secs(5)),
            ("15mins", Duration::from_secs(900)),
            ("2hrs", Duration::from_secs(7200)),
            ("3days", Duration::from_secs(3 * 86_400)),
            ("1weeks", Duration::from_secs(7 * 86_400)),
            ("1.5secs", Duration::from_millis(1500)),
            ("0.1ms", Duration::from_micros(100)),
            ("2.25mins", Duration::from_secs(135)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_mesos_duration(text), Some(want), "{text}");
        }
        for bad in [
            "",
            "5",
            "secs",
            "5 secs",
            " 5secs",
            "5secs ",
            "-5secs",
            "+5secs",
            "5sec",
            "5s",
            "5Secs",
            "1e3secs",
            "1.secs",
            ".5secs",
            "1.2.3secs",
            "NaNsecs",
            "99999999999999999999999999weeks",
        ] {
            assert_eq!(parse_mesos_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn debug_output_hides_the_token() {
        let text = format!("{:?}", test_env());
        assert!(!text.contains("jwt.token.here"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    // -- bookkeeping --------------------------------------------------------

    #[test]
    fn acknowledged_removes_exactly_that_update() {
        let env = test_env();
        let mut book = Book::default();
        let first = stamped(&env, "t1", v1::TaskState::TaskStarting, 1);
        let second = stamped(&env, "t1", v1::TaskState::TaskRunning, 2);
        let other = stamped(&env, "t2", v1::TaskState::TaskRunning, 3);
        for s in [&first, &second, &other] {
            book.record(s.clone());
        }
        assert!(book.acknowledge(&task_id("t1"), &[2; 16]));
        let left: Vec<_> = book.updates.iter().map(|p| p.status.clone()).collect();
        assert_eq!(left, [first, other]);
    }

    #[test]
    fn unknown_or_mismatched_acknowledgements_change_nothing() {
        let env = test_env();
        let mut book = Book::default();
        book.launched(&task("t1"));
        book.record(stamped(&env, "t1", v1::TaskState::TaskRunning, 1));
        assert!(!book.acknowledge(&task_id("t1"), &[9; 16]), "unknown uuid");
        assert!(
            !book.acknowledge(&task_id("t2"), &[1; 16]),
            "uuid of another task"
        );
        assert!(!book.acknowledge(&task_id("t1"), &[]), "empty uuid");
        assert_eq!(book.updates.len(), 1);
        assert_eq!(book.tasks, [task("t1")]);
    }

    #[test]
    fn an_acknowledged_update_drops_its_task_from_unacknowledged_tasks() {
        let env = test_env();
        let mut book = Book::default();
        book.launched(&task("t1"));
        book.launched(&task("t2"));
        book.record(stamped(&env, "t1", v1::TaskState::TaskRunning, 1));
        book.record(stamped(&env, "t1", v1::TaskState::TaskFinished, 2));
        // Acknowledging the terminal update drops the task; the RUNNING update
        // is still pending and t2 is untouched.
        assert!(book.acknowledge(&task_id("t1"), &[2; 16]));
        assert_eq!(book.tasks, [task("t2")]);
        assert_eq!(book.updates.len(), 1);
        // Any acknowledged update, terminal or not, tells the agent has the task.
        book.record(stamped(&env, "t2", v1::TaskState::TaskRunning, 3));
        assert!(book.acknowledge(&task_id("t2"), &[3; 16]));
        assert!(book.tasks.is_empty());
    }

    #[test]
    fn launches_are_tracked_once_per_task_id() {
        let mut book = Book::default();
        book.launched(&task("t1"));
        let mut again = task("t1");
        again.name = "renamed".into();
        book.launched(&again);
        let group = v1::TaskGroupInfo {
            tasks: vec![task("g1"), task("g2")],
        };
        for t in &group.tasks {
            book.launched(t);
        }
        let ids: Vec<_> = book
            .tasks
            .iter()
            .map(|t| t.task_id.value.as_str())
            .collect();
        assert_eq!(ids, ["t1", "g1", "g2"]);
        assert_eq!(book.tasks[0].name, "renamed");
    }

    #[test]
    fn subscribe_carries_everything_unacknowledged_and_counts_it_sent() {
        let env = test_env();
        let mut book = Book::default();
        book.launched(&task("t1"));
        let a = stamped(&env, "t1", v1::TaskState::TaskStarting, 1);
        let b = stamped(&env, "t1", v1::TaskState::TaskRunning, 2);
        book.record(a.clone());
        book.record(b.clone());
        assert!(book.has_unsent());
        assert_eq!(book.next_unsent(), Some(a.clone()));
        book.mark_unsent(&[1; 16]);
        assert!(book.is_unsent(&[1; 16]) && book.is_unsent(&[2; 16]));
        let sub = book.subscribe();
        assert_eq!(sub.unacknowledged_tasks, [task("t1")]);
        let carried: Vec<_> = sub
            .unacknowledged_updates
            .into_iter()
            .map(|u| u.status)
            .collect();
        assert_eq!(carried, [a, b]);
        assert!(!book.has_unsent(), "updates in a SUBSCRIBE need no POST");
        assert_eq!(book.next_unsent(), None);
    }

    // -- call building ------------------------------------------------------

    #[test]
    fn empty_subscribe_matches_the_reference_vector() {
        let mut vars = full_vars();
        vars.insert(EXECUTOR_ID, "e1".into());
        vars.insert(FRAMEWORK_ID, "M-0000".into());
        let env = env_of(&vars).expect("env");
        let call = subscribe_call(&env, Book::default().subscribe());
        assert_eq!(
            hex(&Encoding::Protobuf.encode(&call)),
            "0a040a02653112080a064d2d3030303018012200"
        );
        let json = String::from_utf8(Encoding::Json.encode(&call)).expect("utf-8");
        assert!(json.contains(r#""type":"SUBSCRIBE""#), "{json}");
        assert!(json.contains(r#""subscribe":{}"#), "{json}");
    }

    #[test]
    fn message_call_puts_data_in_field_2() {
        let mut vars = full_vars();
        vars.insert(EXECUTOR_ID, "e1".into());
        vars.insert(FRAMEWORK_ID, "M-0000".into());
        let env = env_of(&vars).expect("env");
        let call = message_call(&env, b"hi".to_vec());
        // type MESSAGE (18 03), message (tag 6: 32) { data (tag 2: 12) "hi" }.
        assert_eq!(
            hex(&Encoding::Protobuf.encode(&call)),
            "0a040a02653112080a064d2d3030303018033204120268 69".replace(' ', "")
        );
    }

    #[test]
    fn updates_are_stamped_as_the_agent_requires() {
        let env = test_env();
        let s = prepare_status(
            &env,
            status("t1", v1::TaskState::TaskRunning),
            *b"0123456789abcdef",
            42.5,
        )
        .expect("valid");
        assert_eq!(s.uuid.as_deref(), Some(&b"0123456789abcdef"[..]));
        assert_eq!(s.source, Some(v1::task_status::Source::Executor as i32));
        assert_eq!(s.executor_id, Some(env.executor_id.clone()));
        assert_eq!(s.timestamp, Some(42.5));
        // A caller's timestamp and a matching executor id are kept.
        let mut own = status("t1", v1::TaskState::TaskFinished);
        own.timestamp = Some(7.0);
        own.executor_id = Some(env.executor_id.clone());
        let s = prepare_status(&env, own, [0; 16], 42.5).expect("valid");
        assert_eq!(s.timestamp, Some(7.0));
        let call = update_call(&env, s.clone());
        assert_eq!(call.r#type, Some(executor::call::Type::Update as i32));
        assert_eq!(call.update.map(|u| u.status), Some(s));
    }

    #[test]
    fn staging_and_foreign_executor_updates_are_refused() {
        let env = test_env();
        let err = prepare_status(&env, status("t1", v1::TaskState::TaskStaging), [0; 16], 0.0)
            .expect_err("staging");
        assert!(matches!(err, UpdateError::Staging { .. }), "{err:?}");
        assert!(!err.is_kept());
        let mut foreign = status("t1", v1::TaskState::TaskRunning);
        foreign.executor_id = Some(v1::ExecutorId {
            value: "someone-else".into(),
        });
        let err = prepare_status(&env, foreign, [0; 16], 0.0).expect_err("foreign");
        assert!(err.to_string().contains("someone-else"), "{err}");
    }

    #[test]
    fn backoff_stays_between_the_floor_and_the_maximum() {
        let max = Duration::from_millis(300);
        for attempt in [0, 1, 2, 5, 30, u32::MAX] {
            for _ in 0..50 {
                let d = backoff_delay(attempt, max);
                assert!(d >= BACKOFF_FLOOR && d <= max, "attempt {attempt}: {d:?}");
            }
        }
        for _ in 0..50 {
            assert!(backoff_delay(0, max) <= BACKOFF_BASE);
        }
        assert_eq!(backoff_delay(3, Duration::ZERO), BACKOFF_FLOOR);
    }

    // -- fake agents --------------------------------------------------------

    const WAIT: Duration = Duration::from_secs(5);

    /// A scripted answer to SUBSCRIBE.
    enum Reply {
        /// An error status with this body.
        Status(u16, &'static str),
        /// 200 and an event stream the test feeds through [`AgentStream`].
        Stream,
        /// 200 with this Content-Type and an empty body.
        ContentType(&'static str),
    }

    /// The open event stream of one SUBSCRIBE; dropping it ends the stream.
    struct AgentStream {
        tx: mpsc::UnboundedSender<Bytes>,
        encoding: Encoding,
    }

    impl AgentStream {
        fn send(&self, event: executor::Event) {
            let _ = self.tx.send(record(&event, self.encoding));
        }

        fn send_raw(&self, bytes: &'static [u8]) {
            let _ = self.tx.send(Bytes::from_static(bytes));
        }
    }

    /// One call the fake agent received.
    struct Seen {
        call: executor::Call,
        content_type: String,
        accept: Option<String>,
        authorization: Option<String>,
        stream: Option<AgentStream>,
    }

    impl Seen {
        fn kind(&self) -> Option<executor::call::Type> {
            self.call
                .r#type
                .and_then(|t| executor::call::Type::try_from(t).ok())
        }

        fn stream(&mut self) -> AgentStream {
            self.stream
                .take()
                .expect("a SUBSCRIBE answered with a stream")
        }
    }

    #[derive(Default)]
    struct Script {
        subscribe: VecDeque<Reply>,
        /// Statuses for UPDATE and MESSAGE, 202 when empty.
        calls: VecDeque<u16>,
    }

    struct FakeAgentShared {
        script: Mutex<Script>,
        seen: mpsc::UnboundedSender<Seen>,
    }

    /// An in-process agent speaking the executor API from a script, for
    /// faults a real agent does not produce on demand.
    struct FakeAgent {
        addr: SocketAddr,
        seen: mpsc::UnboundedReceiver<Seen>,
        server: tokio::task::JoinHandle<()>,
    }

    impl FakeAgent {
        async fn start(script: Script) -> FakeAgent {
            let (seen_tx, seen) = mpsc::unbounded_channel();
            let shared = Arc::new(FakeAgentShared {
                script: Mutex::new(script),
                seen: seen_tx,
            });
            let app = axum::Router::new()
                .route(EXECUTOR_API_PATH, axum::routing::post(fake_agent_handler))
                .with_state(shared);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("address");
            let server = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            FakeAgent { addr, seen, server }
        }

        /// The next call, waiting at most [`WAIT`].
        async fn next(&mut self) -> Seen {
            tokio::time::timeout(WAIT, self.seen.recv())
                .await
                .expect("the executor called the agent in time")
                .expect("fake agent running")
        }

        /// The next call of `kind`, skipping others.
        async fn next_of(&mut self, kind: executor::call::Type) -> Seen {
            loop {
                let seen = self.next().await;
                if seen.kind() == Some(kind) {
                    return seen;
                }
            }
        }

        /// Nothing called within `wait`.
        async fn assert_quiet(&mut self, wait: Duration) {
            if let Ok(Some(seen)) = tokio::time::timeout(wait, self.seen.recv()).await {
                panic!("unexpected call {:?}", seen.kind());
            }
        }

        /// Stops listening: later connections are refused.
        fn stop(&self) {
            self.server.abort();
        }
    }

    impl Drop for FakeAgent {
        fn drop(&mut self) {
            self.server.abort();
        }
    }

    /// What a Mesos agent checks before accepting a call (§3.3, §3.4).
    fn agent_validation(call: &executor::Call) -> Result<(), String> {
        use executor::call::Type;
        match call.r#type.and_then(|t| Type::try_from(t).ok()) {
            Some(Type::Subscribe) if call.subscribe.is_none() => {
                Err("Expecting 'subscribe' to be present".into())
            }
            Some(Type::Update) => {
                let Some(update) = &call.update else {
                    return Err("Expecting 'update' to be present".into());
                };
                let s = &update.status;
                if s.uuid.as_ref().map(Vec::len) != Some(16) {
                    return Err("'status.uuid' must be 16 bytes".into());
                }
                if s.source != Some(v1::task_status::Source::Executor as i32) {
                    return Err("'status.source' must be SOURCE_EXECUTOR".into());
                }
                if s.state == v1::TaskState::TaskStaging as i32 {
                    return Err("TASK_STAGING is not allowed".into());
                }
                if s.executor_id
                    .as_ref()
                    .is_some_and(|e| e != &call.executor_id)
                {
                    return Err("'status.executor_id' does not match".into());
                }
                Ok(())
            }
            Some(Type::Message) if call.message.is_none() => {
                Err("Expecting 'message' to be present".into())
            }
            Some(_) => Ok(()),
            None => Err("Expecting 'type' to be present".into()),
        }
    }

    async fn fake_agent_handler(
        AxState(shared): AxState<Arc<FakeAgentShared>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let header = |name: reqwest::header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(CONTENT_TYPE).unwrap_or_default();
        let Some(encoding) = Encoding::from_content_type(&content_type) else {
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "bad Content-Type").into_response();
        };
        let call: executor::Call = match encoding.decode(&body) {
            Ok(call) => call,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        };
        if let Err(e) = agent_validation(&call) {
            return (StatusCode::BAD_REQUEST, e).into_response();
        }
        let mut seen = Seen {
            call,
            content_type,
            accept: header(ACCEPT),
            authorization: header(reqwest::header::AUTHORIZATION),
            stream: None,
        };
        let status = |code: u16| StatusCode::from_u16(code).expect("valid status");
        let response = if seen.kind() == Some(executor::call::Type::Subscribe) {
            let reply = shared
                .script
                .lock()
                .expect("script")
                .subscribe
                .pop_front()
                .unwrap_or(Reply::Stream);
            match reply {
                Reply::Status(code, text) => (status(code), text).into_response(),
                Reply::ContentType(ct) => ([(CONTENT_TYPE, ct)], Body::empty()).into_response(),
                Reply::Stream => {
                    // Like the agent: protobuf only when asked for explicitly.
                    let events = if seen.accept.as_deref() == Some("application/x-protobuf") {
                        Encoding::Protobuf
                    } else {
                        Encoding::Json
                    };
                    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
                    seen.stream = Some(AgentStream {
                        tx,
                        encoding: events,
                    });
                    let body = futures::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
                    });
                    (
                        [(CONTENT_TYPE, events.content_type())],
                        Body::from_stream(body),
                    )
                        .into_response()
                }
            }
        } else {
            let code = shared
                .script
                .lock()
                .expect("script")
                .calls
                .pop_front()
                .unwrap_or(202);
            (
                status(code),
                if code == 202 { "" } else { "scripted failure" },
            )
                .into_response()
        };
        let _ = shared.seen.send(seen);
        response
    }

    fn event(kind: executor::event::Type) -> executor::Event {
        executor::Event {
            r#type: Some(kind as i32),
            ..Default::default()
        }
    }

    fn subscribed_event() -> executor::Event {
        executor::Event {
            subscribed: Some(executor::event::Subscribed {
                executor_info: v1::ExecutorInfo {
                    executor_id: v1::ExecutorId {
                        value: "ex-1".into(),
                    },
                    ..Default::default()
                },
                framework_info: v1::FrameworkInfo {
                    user: "root".into(),
                    name: "km".into(),
                    id: Some(v1::FrameworkId {
                        value: "fw-1".into(),
                    }),
                    ..Default::default()
                },
                agent_info: v1::AgentInfo {
                    hostname: "localhost".into(),
                    ..Default::default()
                },
                container_id: Some(v1::ContainerId {
                    value: "c1".into(),
                    ..Default::default()
                }),
            }),
            ..event(executor::event::Type::Subscribed)
        }
    }

    fn launch_event(id: &str) -> executor::Event {
        executor::Event {
            launch: Some(executor::event::Launch { task: task(id) }),
            ..event(executor::event::Type::Launch)
        }
    }

    fn ack_event(id: &str, uuid: &[u8]) -> executor::Event {
        executor::Event {
            acknowledged: Some(executor::event::Acknowledged {
                task_id: task_id(id),
                uuid: uuid.to_vec(),
            }),
            ..event(executor::event::Type::Acknowledged)
        }
    }

    /// An environment pointing at `addr`, with short recovery timings.
    fn env_for(addr: SocketAddr, checkpoint: bool, recovery: &str) -> ExecutorEnv {
        let mut vars = full_vars();
        vars.insert(AGENT_ENDPOINT, addr.to_string());
        vars.insert(CHECKPOINT, if checkpoint { "1" } else { "0" }.into());
        vars.insert(RECOVERY_TIMEOUT, recovery.into());
        vars.insert(SUBSCRIPTION_BACKOFF_MAX, "50ms".into());
        env_of(&vars).expect("test environment")
    }

    fn fast(encoding: Encoding) -> Options {
        Options {
            encoding,
            request_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            registration_timeout: Duration::from_secs(5),
            resend_interval: Duration::from_millis(100),
            ..Options::default()
        }
    }

    async fn next_event(rx: &mut mpsc::UnboundedReceiver<ExecutorEvent>) -> ExecutorEvent {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("an executor event in time")
            .expect("event channel open")
    }

    async fn assert_closed(rx: &mut mpsc::UnboundedReceiver<ExecutorEvent>) {
        let end = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("channel closes");
        assert_eq!(end, None, "no event after the last one");
    }

    /// Subscribes and answers SUBSCRIBED; returns the open stream.
    async fn subscribe(
        agent: &mut FakeAgent,
        rx: &mut mpsc::UnboundedReceiver<ExecutorEvent>,
    ) -> AgentStream {
        let stream = agent
            .next_of(executor::call::Type::Subscribe)
            .await
            .stream();
        stream.send(subscribed_event());
        assert!(
            matches!(next_event(rx).await, ExecutorEvent::Subscribed(_)),
            "SUBSCRIBED first"
        );
        stream
    }

    #[tokio::test]
    async fn fake_agent_full_conversation_in_both_encodings() {
        for encoding in [Encoding::Protobuf, Encoding::Json] {
            let mut agent = FakeAgent::start(Script::default()).await;
            let env = env_for(agent.addr, true, "2secs");
            let (exec, mut rx) = start(env, fast(encoding)).expect("start");

            let mut sub = agent.next().await;
            assert_eq!(sub.kind(), Some(executor::call::Type::Subscribe));
            assert_eq!(sub.content_type, encoding.content_type());
            assert_eq!(sub.accept.as_deref(), Some(encoding.content_type()));
            assert_eq!(sub.authorization.as_deref(), Some("Bearer jwt.token.here"));
            assert_eq!(sub.call.executor_id.value, "ex-1");
            assert_eq!(sub.call.framework_id.value, "fw-1");
            assert_eq!(
                sub.call.subscribe,
                Some(executor::call::Subscribe::default())
            );
            let stream = sub.stream();
            assert_eq!(
                stream.encoding, encoding,
                "the agent answers in the Accept encoding"
            );

            stream.send(event(executor::event::Type::Heartbeat));
            stream.send(subscribed_event());
            match next_event(&mut rx).await {
                ExecutorEvent::Subscribed(s) => {
                    assert_eq!(s.container_id.map(|c| c.value).as_deref(), Some("c1"));
                }
                other => panic!("expected Subscribed, got {other:?}"),
            }
            assert_eq!(exec.phase(), Phase::Subscribed);

            stream.send(launch_event("t1"));
            assert_eq!(
                next_event(&mut rx).await,
                ExecutorEvent::Launch(Box::new(task("t1")))
            );
            assert_eq!(exec.unacknowledged_tasks(), [task("t1")]);

            exec.update(status("t1", v1::TaskState::TaskRunning))
                .await
                .expect("agent accepts UPDATE");
            let update = agent.next().await;
            assert_eq!(update.kind(), Some(executor::call::Type::Update));
            assert_eq!(
                update.authorization.as_deref(),
                Some("Bearer jwt.token.here")
            );
            let sent = update.call.update.expect("update payload").status;
            assert_eq!(exec.unacknowledged(), std::slice::from_ref(&sent));
            let uuid = sent.uuid.clone().expect("uuid");
            assert!(!exec.wait_acknowledged(Duration::from_millis(50)).await);

            stream.send(ack_event("t1", &uuid));
            assert_eq!(
                next_event(&mut rx).await,
                ExecutorEvent::Acknowledged {
                    task_id: task_id("t1"),
                    uuid,
                }
            );
            assert!(exec.unacknowledged().is_empty());
            assert!(exec.unacknowledged_tasks().is_empty());
            assert!(exec.wait_acknowledged(Duration::from_millis(50)).await);

            exec.message(b"to the scheduler".to_vec())
                .await
                .expect("agent accepts MESSAGE");
            let message = agent.next().await;
            assert_eq!(
                message.call.message.map(|m| m.data).as_deref(),
                Some(&b"to the scheduler"[..])
            );

            stream.send(executor::Event {
                message: Some(executor::event::Message {
                    data: b"from the scheduler".to_vec(),
                }),
                ..event(executor::event::Type::Message)
            });
            assert_eq!(
                next_event(&mut rx).await,
                ExecutorEvent::Message(b"from the scheduler".to_vec())
            );
            stream.send(executor::Event {
                kill: Some(executor::event::Kill {
                    task_id: task_id("t1"),
                    kill_policy: None,
                }),
                ..event(executor::event::Type::Kill)
            });
            assert_eq!(
                next_event(&mut rx).await,
                ExecutorEvent::Kill {
                    task_id: task_id("t1"),
                    kill_policy: None,
                }
            );
            stream.send(executor::Event {
                error: Some(executor::event::Error {
                    message: "bad call".into(),
                }),
                ..event(executor::event::Type::Error)
            });
            assert_eq!(
                next_event(&mut rx).await,
                ExecutorEvent::Error("bad call".into())
            );
        }
    }

    #[tokio::test]
    async fn fake_agent_closing_the_stream_gets_a_resubscribe_with_unacknowledged_state() {
        let mut agent = FakeAgent::start(Script::default()).await;
        let (exec, mut rx) =
            start(env_for(agent.addr, true, "5secs"), fast(Encoding::Protobuf)).expect("start");
        let stream = subscribe(&mut agent, &mut rx).await;
        stream.send(launch_event("t1"));
        stream.send(launch_event("t2"));
        for _ in 0..2 {
            assert!(matches!(
                next_event(&mut rx).await,
                ExecutorEvent::Launch(_)
            ));
        }
        exec.update(status("t1", v1::TaskState::TaskRunning))
            .await
            .expect("delivered");
        let sent = agent.next().await.call.update.expect("update").status;

        drop(stream); // the agent closes the subscription
        assert_eq!(next_event(&mut rx).await, ExecutorEvent::Disconnected);

        let mut resub = agent.next_of(executor::call::Type::Subscribe).await;
        let carried = resub.call.subscribe.clone().expect("subscribe payload");
        assert_eq!(carried.unacknowledged_tasks, [task("t1"), task("t2")]);
        let updates: Vec<_> = carried
            .unacknowledged_updates
            .into_iter()
            .map(|u| u.status)
            .collect();
        assert_eq!(
            updates,
            std::slice::from_ref(&sent),
            "same update, same uuid"
        );

        let stream = resub.stream();
        stream.send(subscribed_event());
        assert!(matches!(
            next_event(&mut rx).await,
            ExecutorEvent::Subscribed(_)
        ));
        stream.send(ack_event("t1", sent.uuid.as_deref().expect("uuid")));
        assert!(matches!(
            next_event(&mut rx).await,
            ExecutorEvent::Acknowledged { .. }
        ));
        assert_eq!(exec.unacknowledged_tasks(), [task("t2")]);
        assert!(exec.unacknowledged().is_empty());
    }

    #[tokio::test]
    async fn fake_agent_update_made_while_disconnected_reaches_the_agent_after_resubscribe() {
        let mut agent = FakeAgent::start(Script::default()).await;
        let (exec, mut rx) =
            start(env_for(agent.addr, true, "5secs"), fast(Encoding::Protobuf)).expect("start");
        let stream = subscribe(&mut agent, &mut rx).await;
        drop(stream);
        assert_eq!(next_event(&mut rx).await, ExecutorEvent::Disconnected);

        let err = exec
            .update(status("t1", v1::TaskState::TaskFinished))
            .await
            .expect_err("not subscribed");
        assert!(err.is_kept(), "{err:?}");
        assert!(
            matches!(&err, UpdateError::NotDelivered { source, .. }
                if matches!(**source, CallError::NotSubscribed)),
            "{err:?}"
        );
        let kept = exec.unacknowledged();
        assert_eq!(kept.len(), 1);

        // Either the next SUBSCRIBE carries it, or it is POSTed right after
        // SUBSCRIBED (if it was made after that SUBSCRIBE was built).
        let mut resub = agent.next_of(executor::call::Type::Subscribe).await;
        let in_subscribe: Vec<_> = resub
            .call
            .subscribe
            .clone()
            .expect("payload")
            .unacknowledged_updates
            .into_iter()
            .map(|u| u.status)
            .collect();
        let stream = resub.stream();
        stream.send(subscribed_event());
        if in_subscribe.is_empty() {
            let posted = agent.next_of(executor::call::Type::Update).await;
            assert_eq!(posted.call.update.map(|u| u.status), Some(kept[0].clone()));
        } else {
            assert_eq!(in_subscribe, kept);
        }
    }

    #[tokio::test]
    async fn fake_agent_that_never_comes_back_ends_in_recovery_timeout() {
        let mut agent = FakeAgent::start(Script::default()).await;
        let (exec, mut rx) =
            start(env_for(agent.addr, true, "400ms"), fast(Encoding::Protobuf)).expect("start");
        let stream = subscribe(&mut agent, &mut rx).await;
        agent.stop();
        drop(stream);
        assert_eq!(next_event(&mut rx).await, ExecutorEvent::Disconnected);
        let lost_at = Instant::now();

        let err = exec
            .update(status("t1", v1::TaskState::TaskRunning))
            .await
            .expect_err("agent gone");
        assert!(err.is_kept(), "{err:?}");

        assert_eq!(next_event(&mut rx).await, ExecutorEvent::RecoveryTimeout);
        assert!(
            lost_at.elapsed() >= Duration::from_millis(350),
            "gave up before the recovery timeout: {:?}",
            lost_at.elapsed()
        );
        assert_closed(&mut rx).await;
        assert_eq!(exec.phase(), Phase::Stopped);
        let err = exec
            .update(status("t1", v1::TaskState::TaskKilled))
            .await
            .expect_err("stopped");
        assert!(matches!(err, UpdateError::Stopped { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn fake_agent_answering_503_then_404_is_retried_until_it_subscribes() {
        let script = Script {
            subscribe: VecDeque::from([
                Reply::Status(503, "Agent has not finished recovery"),
                Reply::Status(404, "not yet routed"),
            ]),
            ..Script::default()
        };
        let mut agent = FakeAgent::start(script).await;
        let (exec, mut rx) =
            start(env_for(agent.addr, false, "1secs"), fast(Encoding::Json)).expect("start");
        assert!(agent.next().await.stream.is_none(), "503");
        assert!(agent.next().await.stream.is_none(), "404");
        let stream = agent.next().await.stream();
        stream.send(subscribed_event());
        assert!(
            matches!(next_event(&mut rx).await, ExecutorEvent::Subscribed(_)),
            "retryable failures produce no events"
        );
        assert_eq!(exec.phase(), Phase::Subscribed);
    }

    #[tokio::test]
    async fn fake_agent_disconnect_without_checkpointing_means_shutdown() {
        let mut agent = FakeAgent::start(Script::default()).await;
        let (exec, mut rx) = start(
            env_for(agent.addr, false, "5secs"),
            fast(Encoding::Protobuf),
        )
        .expect("start");
        let stream = subscribe(&mut agent, &mut rx).await;
        drop(stream);
        assert_eq!(
            next_event(&mut rx).await,
            ExecutorEvent::Shutdown(ShutdownReason::Disconnected)
        );
        assert_closed(&mut rx).await;
        assert_eq!(exec.phase(), Phase::Stopped);
        agent.assert_quiet(Duration::from_millis(200)).await;
    }

    #[tokio::test]
    async fn fake_agent_rejecting_subscribe_shuts_the_executor_down() {
        let script = Script {
            subscribe: VecDeque::from([Reply::Status(401, "invalid token")]),
            ..Script::default()
        };
        let mut agent = FakeAgent::start(script).await;
        let (_exec, mut rx) =
            start(env_for(agent.addr, true, "5secs"), fast(Encoding::Protobuf)).expect("start");
        agent.next().await;
        match next_event(&mut rx).await {
            ExecutorEvent::Shutdown(ShutdownReason::Rejected { status, message }) => {
                assert_eq!(status, 401);
                assert!(message.contains("invalid token"), "{message}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert_closed(&mut rx).await;
        agent.assert_quiet(Duration::from_millis(200)).await;
    }

    #[tokio::test]
    async fn fake_agent_with_an_unknown_content_type_is_a_rejection() {
        let script = Script {
            subscribe: VecDeque::from([Reply::ContentType("application/recordio")]),
            ..Script::default()
        };
        let mut agent = FakeAgent::start(script).await;
        let (_exec, mut rx) =
            start(env_for(agent.addr, true, "5secs"), fast(Encoding::Protobuf)).expect("start");
        agent.next().await;
        match next_event(&mut rx).await {
            ExecutorEvent::Shutdown(ShutdownReason::Rejected { status, message }) => {
                assert_eq!(status, 200);
                assert!(message.contains("application/recordio"), "{message}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn fake_agent_failing_an_update_gets_it_again_with_the_same_uuid() {
        let script = Script {
            calls: VecDeque::from([503]),
            ..Script::default()
        };
        let mut agent = FakeAgent::start(script).await;
        let (exec, mut rx) =
            start(env_for(agent.addr, true, "5secs"), fast(Encoding::Protobuf)).expect("start");
        let _stream = subscribe(&mut agent, &mut rx).await;
        let err = exec
            .update(status("t1", v1::TaskState::TaskRunning))
            .await
            .expect_err("scripted 503");
        assert!(err.is_kept(), "{err:?}");
        assert!(
            matches!(&err, UpdateError::NotDelivered { source, .. }
                if matches!(**source, CallError::Status { status: 503, .. })),
            "{err:?}"
        );
        let first = agent.next().await.call.update.expect("update").status;
        let again = agent.next_of(executor::call::Type::Update).await;
        assert_eq!(again.call.update.map(|u| u.status), Some(first));
    }

    #[tokio::test]
    async fn fake_agent_that_never_says_subscribed_is_given_up_on() {
        let mut agent = FakeAgent::start(Script::default()).await;
        let options = Options {
            registration_timeout: Duration::from_millis(300),
            ..fast(Encoding::Protobuf)
        };
        let (exec, mut rx) = start(env_for(agent.addr, true, "5secs"), options).expect("start");
        let _held = agent.next().await.stream(); // open, but silent
        assert_eq!(next_event(&mut rx).await, ExecutorEvent::RecoveryTimeout);
        assert_closed(&mut rx).await;
        assert_eq!(exec.phase(), Phase::Stopped);
    }

    #[tokio::test]
    async fn fake_agent_sending_garbage_is_a_disconnection_not_a_panic() {
        let mut agent = FakeAgent::start(Script::default()).await;
        let (_exec, mut rx) =
            start(env_for(agent.addr, true, "5secs"), fast(Encoding::Protobuf)).expect("start");
        let stream = subscribe(&mut agent, &mut rx).await;
        stream.send_raw(b"4\n\xff\xff\xff\xff");
        assert_eq!(next_event(&mut rx).await, ExecutorEvent::Disconnected);
        let stream = agent
            .next_of(executor::call::Type::Subscribe)
            .await
            .stream();
        stream.send_raw(b"not a length\n");
        // Broken before SUBSCRIBED: retried quietly.
        let stream2 = agent
            .next_of(executor::call::Type::Subscribe)
            .await
            .stream();
        drop(stream);
        stream2.send(subscribed_event());
        assert!(matches!(
            next_event(&mut rx).await,
            ExecutorEvent::Subscribed(_)
        ));
    }

    #[tokio::test]
    async fn fake_agent_shutdown_keeps_the_subscription_for_terminal_updates() {
        let mut agent = FakeAgent::start(Script::default()).await;
        let (exec, mut rx) =
            start(env_for(agent.addr, true, "5secs"), fast(Encoding::Protobuf)).expect("start");
        let stream = subscribe(&mut agent, &mut rx).await;
        stream.send(launch_event("t1"));
        assert!(matches!(
            next_event(&mut rx).await,
            ExecutorEvent::Launch(_)
        ));
        stream.send(event(executor::event::Type::Shutdown));
        assert_eq!(
            next_event(&mut rx).await,
            ExecutorEvent::Shutdown(ShutdownReason::Requested)
        );
        exec.update(status("t1", v1::TaskState::TaskKilled))
            .await
            .expect("still subscribed");
        let uuid = agent
            .next_of(executor::call::Type::Update)
            .await
            .call
            .update
            .and_then(|u| u.status.uuid)
            .expect("uuid");
        stream.send(ack_event("t1", &uuid));
        assert!(exec.wait_acknowledged(WAIT).await);
        assert!(matches!(
            next_event(&mut rx).await,
            ExecutorEvent::Acknowledged { .. }
        ));
        drop(stream);
        assert_closed(&mut rx).await;
        agent.assert_quiet(Duration::from_millis(200)).await;
    }

    #[tokio::test]
    async fn fake_agent_silent_beyond_the_idle_timeout_is_a_disconnection() {
        let mut agent = FakeAgent::start(Script::default()).await;
        let options = Options {
            idle_timeout: Duration::from_millis(300),
            // Ticks more often than the idle timeout; they must not count as events.
            resend_interval: Duration::from_millis(50),
            ..fast(Encoding::Protobuf)
        };
        let (_exec, mut rx) = start(env_for(agent.addr, true, "5secs"), options).expect("start");
        let _silent = subscribe(&mut agent, &mut rx).await;
        assert_eq!(next_event(&mut rx).await, ExecutorEvent::Disconnected);
        let resub = agent.next_of(executor::call::Type::Subscribe).await;
        assert!(resub.stream.is_some());
    }

    #[tokio::test]
    async fn dropping_the_event_receiver_stops_the_executor() {
        let mut agent = FakeAgent::start(Script::default()).await;
        let (exec, mut rx) =
            start(env_for(agent.addr, true, "5secs"), fast(Encoding::Protobuf)).expect("start");
        let _stream = subscribe(&mut agent, &mut rx).await;
        drop(rx);
        let stopped = async {
            while exec.phase() != Phase::Stopped {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(WAIT, stopped)
            .await
            .expect("stopped after the receiver was dropped");
    }

    #[tokio::test]
    async fn call_futures_can_be_spawned() {
        fn assert_send<T: Send + 'static>(_: T) {}
        // Nothing listens there; the futures are only type-checked.
        let env = env_for(SocketAddr::from(([127, 0, 0, 1], 9)), false, "1secs");
        let (exec, _rx) = start(env, Options::default()).expect("start");
        let e = exec.clone();
        assert_send(async move { e.update(status("t1", v1::TaskState::TaskRunning)).await });
        let e = exec.clone();
        assert_send(async move { e.message(Vec::new()).await });
        assert_send(async move { exec.wait_acknowledged(Duration::ZERO).await });
    }

    #[test]
    fn start_outside_a_runtime_is_an_error() {
        let err = start(test_env(), Options::default()).expect_err("no runtime");
        assert!(matches!(err, StartError::NoRuntime), "{err:?}");
    }
}
