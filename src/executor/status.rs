//! Pod status the way a kubelet reports it: phase, conditions, container
//! statuses and QoS class, computed from what the executor knows of each
//! container.
//!
//! Everything here is pure: the executor keeps a [`ContainerRecord`] per
//! container of the pod spec, wraps them in a [`PodView`] and asks
//! [`pod_status`] for the status to write, then [`changed`] whether writing
//! it is needed.
//!
//! The rules follow the kubelet:
//!
//! * **Phase.** A regular init container that is running, or has not run
//!   yet, keeps the pod `Pending`; one that failed makes a `Never` pod
//!   `Failed` (other policies restart it, the pod stays `Pending`). An app
//!   container that never ran keeps the pod `Pending`. With every app
//!   container started, one running means `Running`. With all of them
//!   stopped (a container waiting to restart after a crash counts as
//!   stopped), `Always` stays `Running`, all exits 0 give `Succeeded`,
//!   `Never` with a failure gives `Failed` and `OnFailure` with a failure
//!   stays `Running`. Once the pod is being terminated nothing restarts, so
//!   stopped containers decide between `Succeeded` and `Failed` whatever the
//!   policy, and a terminated pod with nothing running never stays
//!   `Pending`/`Running`. A terminal phase, once reported, is kept.
//! * **Conditions** `Initialized`, `Ready`, `ContainersReady` and
//!   `PodScheduled`, in that order after conditions other components own
//!   (kept from the previous status). Their reasons are the kubelet's:
//!   `ContainersNotInitialized`, `ContainersNotReady`,
//!   `ReadinessGatesNotReady`, `PodCompleted` and `PodFailed`.
//! * **Container statuses**: init containers in spec order, app containers
//!   sorted by name; a container without a record waits with reason
//!   `PodInitializing` (pods with init containers) or `ContainerCreating`.
//! * **QoS class** from CPU and memory requests and limits, with pod-level
//!   resources taking precedence when the pod has them.
//!
//! Times are held to whole seconds, the precision of the API, so that a
//! status read back from the API server compares equal to the one written.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::resources::Quantity;

/// Phase: accepted, not every container has run yet.
pub const PHASE_PENDING: &str = "Pending";
/// Phase: every container has been started, at least one runs or restarts.
pub const PHASE_RUNNING: &str = "Running";
/// Phase: every container exited 0 and none will restart.
pub const PHASE_SUCCEEDED: &str = "Succeeded";
/// Phase: every container stopped, at least one failed, none will restart.
pub const PHASE_FAILED: &str = "Failed";

/// Waiting reason: the container is being created (image, volumes, create).
pub const CONTAINER_CREATING: &str = "ContainerCreating";
/// Waiting reason: the pod's init containers have not all succeeded.
pub const POD_INITIALIZING: &str = "PodInitializing";
/// Waiting reason: the container crashed and waits out its restart backoff.
pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
/// Waiting reason: the image could not be pulled.
pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
/// Waiting reason: the image is absent and `imagePullPolicy` is `Never`.
pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
/// Waiting reason: the container's configuration (env, mounts) is invalid.
pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
/// Waiting reason: the runtime refused to create the container.
pub const CREATE_CONTAINER_ERROR: &str = "CreateContainerError";
/// Waiting reason: the runtime refused to start the container.
pub const RUN_CONTAINER_ERROR: &str = "RunContainerError";

/// Terminated reason: exit code 0.
pub const COMPLETED: &str = "Completed";
/// Terminated reason: non-zero exit code.
pub const ERROR: &str = "Error";
/// Terminated reason: the kernel's OOM killer ended the container.
pub const OOM_KILLED: &str = "OOMKilled";
/// Terminated reason: the runtime could not start the process.
pub const CONTAINER_CANNOT_RUN: &str = "ContainerCannotRun";

/// Condition type: the pod is bound to a node.
pub const POD_SCHEDULED: &str = "PodScheduled";
/// Condition type: every init container succeeded.
pub const INITIALIZED: &str = "Initialized";
/// Condition type: every container is ready.
pub const CONTAINERS_READY: &str = "ContainersReady";
/// Condition type: the pod can serve (containers and readiness gates).
pub const READY: &str = "Ready";

/// Condition reason: init containers have not all succeeded.
pub const CONTAINERS_NOT_INITIALIZED: &str = "ContainersNotInitialized";
/// Condition reason: some containers are not ready.
pub const CONTAINERS_NOT_READY: &str = "ContainersNotReady";
/// Condition reason: a readiness gate's condition is missing or not true.
pub const READINESS_GATES_NOT_READY: &str = "ReadinessGatesNotReady";
/// Condition reason: the pod succeeded.
pub const POD_COMPLETED: &str = "PodCompleted";
/// Condition reason: the pod failed.
pub const POD_FAILED: &str = "PodFailed";

/// Condition types the kubelet owns: rebuilt on every status, never carried
/// over from the previous one.
const KUBELET_CONDITIONS: [&str; 7] = [
    POD_SCHEDULED,
    INITIALIZED,
    CONTAINERS_READY,
    READY,
    "PodReadyToStartContainers",
    "PodResizePending",
    "PodResizeInProgress",
];

/// How a container ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Terminated {
    /// Exit code of the process.
    pub exit_code: i32,
    /// Signal that ended the process, when known (Docker does not say).
    pub signal: Option<i32>,
    /// `Completed` (exit 0), `Error`, `OOMKilled` or `ContainerCannotRun`.
    pub reason: String,
    /// Details, such as the runtime's error.
    pub message: Option<String>,
    /// When the process started.
    pub started_at: Option<Time>,
    /// When the process ended.
    pub finished_at: Option<Time>,
    /// `docker://<id>` of the ended container.
    pub container_id: Option<String>,
}

/// Where a container is in its life.
#[derive(Clone, Debug, PartialEq)]
pub enum RecordState {
    /// Not running: being created, held by init containers, backing off
    /// after a crash or stuck on an error (see the reason constants).
    Waiting {
        /// `ContainerCreating`, `PodInitializing`, `CrashLoopBackOff`,
        /// `ErrImagePull`, `ErrImageNeverPull`, `CreateContainerConfigError`,
        /// `CreateContainerError` or `RunContainerError`.
        reason: String,
        /// Details for the user.
        message: Option<String>,
    },
    /// Running since `started_at`.
    Running {
        /// When the process started.
        started_at: Time,
    },
    /// Ended and not (yet) restarted.
    Terminated(Terminated),
}

/// What the executor knows of one container of the pod spec.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerRecord {
    /// Container name from the pod spec.
    pub name: String,
    /// Image as the runtime reports it (the spec's image when empty).
    pub image: String,
    /// `docker://sha256:...`, or empty before the image is known.
    pub image_id: String,
    /// `docker://<id>` of the current (or last) container.
    pub container_id: Option<String>,
    /// Current state.
    pub state: RecordState,
    /// How the previous instance ended, once the container restarted.
    pub last_termination: Option<Terminated>,
    /// Restarts so far.
    pub restart_count: i32,
    /// Readiness probe verdict (true when the container has no readiness
    /// probe and runs); only counts while the container runs.
    pub ready: bool,
    /// Startup probe verdict; `None` means "no startup probe", which counts
    /// as started while the container runs.
    pub started: Option<bool>,
}

impl ContainerRecord {
    /// A container that has not run yet, waiting for `reason`.
    pub fn waiting(name: &str, image: &str, reason: &str) -> Self {
        ContainerRecord {
            name: name.to_owned(),
            image: image.to_owned(),
            image_id: String::new(),
            container_id: None,
            state: RecordState::Waiting {
                reason: reason.to_owned(),
                message: None,
            },
            last_termination: None,
            restart_count: 0,
            ready: false,
            started: None,
        }
    }
}

/// Everything that decides a pod's status.
pub struct PodView<'a> {
    /// The pod's spec.
    pub spec: &'a PodSpec,
    /// Records of the init containers (matched to the spec by name).
    pub init: &'a [ContainerRecord],
    /// Records of the app containers (matched to the spec by name).
    pub app: &'a [ContainerRecord],
    /// The node's IP (empty when unknown).
    pub host_ip: &'a str,
    /// The pod's IP (empty before the pod's network exists).
    pub pod_ip: &'a str,
    /// When the executor accepted the pod.
    pub start_time: Option<Time>,
    /// All init containers succeeded (the pod has been initialized).
    pub initialized: bool,
    /// `Some(reason)` once the pod is being terminated; a non-empty reason
    /// becomes the status `reason` when the pod reaches a terminal phase.
    pub stopping: Option<&'a str>,
}

/// Pod phase by the Kubernetes rules (restartPolicy Always/OnFailure/Never;
/// init containers; Pending while any container has never run;
/// Succeeded/Failed when all terminated and none will restart; Running
/// otherwise).
pub fn phase(view: &PodView<'_>) -> &'static str {
    let (init, app) = container_statuses(view);
    phase_of(view, &init, &app)
}

/// The full status: phase, conditions PodScheduled/Initialized/
/// ContainersReady/Ready (lastTransitionTime carried over from `previous`
/// when a condition's status did not change), hostIP(s), podIP(s),
/// startTime, init and app container statuses and qosClass.
///
/// Conditions owned by other components (readiness gates,
/// `DisruptionTarget`) are kept from `previous`, and a terminal phase in
/// `previous` is never left (its reason and message stay while the phase
/// does). `startTime` is the previous one, else the view's, else `now`;
/// hostIP and podIP fall back to the previous ones when the view has none
/// (the pod's network is gone once it stopped).
pub fn pod_status(view: &PodView<'_>, previous: Option<&PodStatus>, now: Time) -> PodStatus {
    let now = whole_seconds(&now);
    let (init, app) = container_statuses(view);
    let mut phase = phase_of(view, &init, &app);
    let previous_phase = previous.and_then(|p| p.phase.as_deref());
    if let Some(p @ (PHASE_SUCCEEDED | PHASE_FAILED)) = previous_phase
        && phase != p
    {
        phase = if p == PHASE_SUCCEEDED {
            PHASE_SUCCEEDED
        } else {
            PHASE_FAILED
        };
    }

    // The reason and message describe the phase: kept while it lasts.
    let (mut reason, message) = match previous {
        Some(p) if previous_phase == Some(phase) => (p.reason.clone(), p.message.clone()),
        _ => (None, None),
    };
    if reason.is_none()
        && is_terminal(phase)
        && let Some(r) = view.stopping.filter(|r| !r.is_empty())
    {
        reason = Some(r.to_owned());
    }

    let conditions = conditions(view, previous, &init, &app, phase, &now);

    let host_ip = non_empty(view.host_ip).or_else(|| {
        previous
            .and_then(|p| p.host_ip.clone())
            .filter(|s| !s.is_empty())
    });
    let pod_ip = non_empty(view.pod_ip).or_else(|| {
        previous
            .and_then(|p| p.pod_ip.clone())
            .filter(|s| !s.is_empty())
    });
    let start_time = previous
        .and_then(|p| p.start_time.clone())
        .or_else(|| view.start_time.clone())
        .unwrap_or_else(|| now.clone());

    let status = PodStatus {
        phase: Some(phase.to_owned()),
        reason,
        message,
        conditions: Some(conditions),
        host_ips: host_ip.clone().map(|ip| vec![HostIP { ip }]),
        host_ip,
        pod_ips: pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        pod_ip,
        start_time: Some(start_time),
        init_container_statuses: (!init.is_empty()).then_some(init),
        container_statuses: (!app.is_empty()).then_some(app),
        qos_class: Some(qos_class(view.spec).to_owned()),
        ..PodStatus::default()
    };
    normalized(&status)
}

/// Whether a status write is needed: true when `next` differs from `last`
/// in anything but heartbeat-like fields (there are none today; this stays
/// the single place that decides). Times compare at whole seconds and an
/// empty list equals an absent one, as they do once through the API.
pub fn changed(last: Option<&PodStatus>, next: &PodStatus) -> bool {
    match last {
        None => true,
        Some(last) => normalized(last) != normalized(next),
    }
}

/// Restart decision for a terminated container of a pod with this
/// restartPolicy (`Always`, `OnFailure`, `Never`; default and unknown
/// values mean `Always`). Regular init containers are restarted by the
/// `OnFailure` rule whatever the pod's policy (except `Never`).
pub fn should_restart(restart_policy: Option<&str>, exit_code: i32) -> bool {
    match restart_policy {
        Some("Never") => false,
        Some("OnFailure") => exit_code != 0,
        _ => true,
    }
}

/// The Terminated record for a Docker exit: reason `OOMKilled` when the OOM
/// killer ended it, `Completed` for exit 0, `ContainerCannotRun` when Docker
/// reports an error (the error becomes the message), `Error` otherwise.
/// Times are Docker's RFC 3339 strings; Docker's zero time
/// (`0001-01-01T00:00:00Z`) and unparsable text give `None`.
pub fn terminated(
    exit_code: i64,
    oom_killed: bool,
    error: &str,
    started_at: Option<&str>,
    finished_at: Option<&str>,
    container_id: Option<&str>,
) -> Terminated {
    let exit_code =
        i32::try_from(exit_code).unwrap_or(if exit_code < 0 { i32::MIN } else { i32::MAX });
    let error = error.trim();
    let (reason, message) = if oom_killed {
        (OOM_KILLED, non_empty(error))
    } else if exit_code == 0 {
        (COMPLETED, None)
    } else if !error.is_empty() {
        (CONTAINER_CANNOT_RUN, Some(error.to_owned()))
    } else {
        (ERROR, None)
    };
    Terminated {
        exit_code,
        signal: None,
        reason: reason.to_owned(),
        message,
        started_at: started_at.and_then(docker_time),
        finished_at: finished_at.and_then(docker_time),
        container_id: container_id.filter(|s| !s.is_empty()).map(str::to_owned),
    }
}

/// Seconds since the epoch of Docker's zero time, `0001-01-01T00:00:00Z`.
const DOCKER_ZERO_SECONDS: i64 = -62_135_596_800;

fn docker_time(s: &str) -> Option<Time> {
    let ts: Timestamp = s.trim().parse().ok()?;
    if ts.as_second() <= DOCKER_ZERO_SECONDS {
        return None;
    }
    Some(whole_seconds(&Time(ts)))
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn is_terminal(phase: &str) -> bool {
    phase == PHASE_SUCCEEDED || phase == PHASE_FAILED
}

/// A sidecar: an init container with `restartPolicy: Always`.
fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn init_specs(spec: &PodSpec) -> &[Container] {
    spec.init_containers.as_deref().unwrap_or(&[])
}

// ---------------------------------------------------------------------------
// Container statuses

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    App,
    Init,
    Sidecar,
}

/// The API statuses of the init containers (spec order) and the app
/// containers (sorted by name).
fn container_statuses(view: &PodView<'_>) -> (Vec<ContainerStatus>, Vec<ContainerStatus>) {
    let default_reason = if init_specs(view.spec).is_empty() {
        CONTAINER_CREATING
    } else {
        POD_INITIALIZING
    };
    let init = init_specs(view.spec)
        .iter()
        .map(|c| {
            let kind = if is_sidecar(c) {
                Kind::Sidecar
            } else {
                Kind::Init
            };
            let rec = view.init.iter().find(|r| r.name == c.name);
            container_status(c, rec, default_reason, kind)
        })
        .collect();
    let mut app: Vec<ContainerStatus> = view
        .spec
        .containers
        .iter()
        .map(|c| {
            let rec = view.app.iter().find(|r| r.name == c.name);
            container_status(c, rec, default_reason, Kind::App)
        })
        .collect();
    app.sort_by(|a, b| a.name.cmp(&b.name));
    (init, app)
}

fn container_status(
    c: &Container,
    rec: Option<&ContainerRecord>,
    default_reason: &str,
    kind: Kind,
) -> ContainerStatus {
    let spec_image = c.image.clone().unwrap_or_default();
    let Some(rec) = rec else {
        return ContainerStatus {
            name: c.name.clone(),
            image: spec_image,
            image_id: String::new(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(default_reason.to_owned()),
                    message: None,
                }),
                ..ContainerState::default()
            }),
            last_state: Some(ContainerState::default()),
            ready: false,
            restart_count: 0,
            started: Some(false),
            ..ContainerStatus::default()
        };
    };
    let running = matches!(rec.state, RecordState::Running { .. });
    let started = running && rec.started.unwrap_or(true);
    let ready = match (kind, &rec.state) {
        (Kind::Init, RecordState::Terminated(t)) => t.exit_code == 0,
        (Kind::Init, _) => false,
        (Kind::App | Kind::Sidecar, _) => started && rec.ready,
    };
    ContainerStatus {
        name: c.name.clone(),
        image: if rec.image.is_empty() {
            spec_image
        } else {
            rec.image.clone()
        },
        image_id: rec.image_id.clone(),
        container_id: rec.container_id.clone().filter(|s| !s.is_empty()),
        state: Some(api_state(&rec.state)),
        last_state: Some(ContainerState {
            terminated: rec.last_termination.as_ref().map(api_terminated),
            ..ContainerState::default()
        }),
        ready,
        restart_count: rec.restart_count,
        started: Some(started),
        ..ContainerStatus::default()
    }
}

fn api_state(state: &RecordState) -> ContainerState {
    match state {
        RecordState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()).filter(|r| !r.is_empty()),
                message: message.clone().filter(|m| !m.is_empty()),
            }),
            ..ContainerState::default()
        },
        RecordState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(started_at.clone()),
            }),
            ..ContainerState::default()
        },
        RecordState::Terminated(t) => ContainerState {
            terminated: Some(api_terminated(t)),
            ..ContainerState::default()
        },
    }
}

fn api_terminated(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()).filter(|r| !r.is_empty()),
        message: t.message.clone().filter(|m| !m.is_empty()),
        started_at: t.started_at.clone(),
        finished_at: t.finished_at.clone(),
        container_id: t.container_id.clone().filter(|s| !s.is_empty()),
    }
}

fn state_of(s: &ContainerStatus) -> (bool, Option<i32>, bool, Option<i32>) {
    // (running, terminated exit code, waiting, last terminated exit code)
    let state = s.state.clone().unwrap_or_default();
    let last = s
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .map(|t| t.exit_code);
    (
        state.running.is_some(),
        state.terminated.as_ref().map(|t| t.exit_code),
        state.waiting.is_some() || (state.running.is_none() && state.terminated.is_none()),
        last,
    )
}

fn is_running(s: &ContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|st| st.running.is_some())
}

/// Whether any app container has run (running now or terminated).
fn any_regular_started(app: &[ContainerStatus]) -> bool {
    app.iter().any(|s| {
        s.state
            .as_ref()
            .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
    })
}

// ---------------------------------------------------------------------------
// Phase

fn phase_of(view: &PodView<'_>, init: &[ContainerStatus], app: &[ContainerStatus]) -> &'static str {
    let spec = view.spec;
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let terminating = view.stopping.is_some();

    let mut pending_init = 0;
    let mut failed_init = 0;
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);

    for (c, s) in init_specs(spec).iter().zip(init) {
        let (is_running, exit, is_waiting, last_exit) = state_of(s);
        if is_sidecar(c) {
            // A sidecar counts as running; one that has not started keeps
            // initialization pending; stopped sidecars do not count.
            if is_running {
                if s.started != Some(true) {
                    pending_init += 1;
                }
                running += 1;
            } else if exit.is_none() && is_waiting && last_exit.is_none() {
                pending_init += 1;
                waiting += 1;
            }
            continue;
        }
        match (is_running, exit, last_exit) {
            (true, _, _) => pending_init += 1,
            (false, Some(code), _) => {
                if code != 0 {
                    failed_init += 1;
                }
            }
            (false, None, Some(code)) => {
                if code != 0 {
                    failed_init += 1;
                }
            }
            (false, None, None) => pending_init += 1,
        }
    }

    for s in app {
        let (is_running, exit, _, last_exit) = state_of(s);
        match (is_running, exit, last_exit) {
            (true, _, _) => running += 1,
            (false, Some(code), _) => {
                stopped += 1;
                if code == 0 {
                    succeeded += 1;
                }
            }
            (false, None, Some(_)) => stopped += 1,
            (false, None, None) => waiting += 1,
        }
    }

    let computed = if failed_init > 0 && policy == "Never" {
        PHASE_FAILED
    } else if (pending_init > 0 && !(view.initialized || any_regular_started(app))) || waiting > 0 {
        PHASE_PENDING
    } else if running > 0 {
        PHASE_RUNNING
    } else if stopped > 0 {
        if terminating {
            if stopped == succeeded {
                PHASE_SUCCEEDED
            } else {
                PHASE_FAILED
            }
        } else if policy != "OnFailure" && policy != "Never" {
            PHASE_RUNNING
        } else if stopped == succeeded {
            PHASE_SUCCEEDED
        } else if policy == "Never" {
            PHASE_FAILED
        } else {
            PHASE_RUNNING
        }
    } else {
        PHASE_PENDING
    };

    // A terminated pod runs nothing more: it ends in a terminal phase even
    // when some container never ran.
    let anything_running = init.iter().chain(app).any(is_running);
    if terminating && !anything_running && !is_terminal(computed) {
        return PHASE_FAILED;
    }
    computed
}

// ---------------------------------------------------------------------------
// Conditions

fn names_list(names: &[&str]) -> String {
    format!("[{}]", names.join(" "))
}

struct Cond {
    type_: &'static str,
    status: &'static str,
    reason: Option<String>,
    message: Option<String>,
}

impl Cond {
    fn new(type_: &'static str, ok: bool) -> Self {
        Cond {
            type_,
            status: if ok { "True" } else { "False" },
            reason: None,
            message: None,
        }
    }

    fn because(mut self, reason: &str, message: Option<String>) -> Self {
        self.reason = Some(reason.to_owned());
        self.message = message;
        self
    }
}

fn initialized_condition(
    view: &PodView<'_>,
    init: &[ContainerStatus],
    app: &[ContainerStatus],
    phase: &str,
) -> Cond {
    if phase == PHASE_SUCCEEDED {
        return Cond::new(INITIALIZED, true).because(POD_COMPLETED, None);
    }
    if view.initialized || any_regular_started(app) {
        return Cond::new(INITIALIZED, true);
    }
    let incomplete: Vec<&str> = init_specs(view.spec)
        .iter()
        .zip(init)
        .filter(|(c, s)| {
            if is_sidecar(c) {
                s.started != Some(true)
            } else {
                !s.ready
            }
        })
        .map(|(c, _)| c.name.as_str())
        .collect();
    if incomplete.is_empty() {
        Cond::new(INITIALIZED, true)
    } else {
        Cond::new(INITIALIZED, false).because(
            CONTAINERS_NOT_INITIALIZED,
            Some(format!(
                "containers with incomplete status: {}",
                names_list(&incomplete)
            )),
        )
    }
}

fn containers_ready_condition(
    view: &PodView<'_>,
    init: &[ContainerStatus],
    app: &[ContainerStatus],
    phase: &str,
) -> Cond {
    match phase {
        PHASE_SUCCEEDED => return Cond::new(CONTAINERS_READY, false).because(POD_COMPLETED, None),
        PHASE_FAILED => return Cond::new(CONTAINERS_READY, false).because(POD_FAILED, None),
        _ => {}
    }
    let mut unready: Vec<&str> = init_specs(view.spec)
        .iter()
        .zip(init)
        .filter(|(c, s)| is_sidecar(c) && !s.ready)
        .map(|(c, _)| c.name.as_str())
        .collect();
    // Spec order, as the kubelet lists them.
    for c in &view.spec.containers {
        if app.iter().any(|s| s.name == c.name && !s.ready) {
            unready.push(c.name.as_str());
        }
    }
    if unready.is_empty() {
        Cond::new(CONTAINERS_READY, true)
    } else {
        Cond::new(CONTAINERS_READY, false).because(
            CONTAINERS_NOT_READY,
            Some(format!(
                "containers with unready status: {}",
                names_list(&unready)
            )),
        )
    }
}

fn ready_condition(view: &PodView<'_>, containers_ready: &Cond, others: &[PodCondition]) -> Cond {
    if containers_ready.status != "True" {
        return Cond {
            type_: READY,
            status: containers_ready.status,
            reason: containers_ready.reason.clone(),
            message: containers_ready.message.clone(),
        };
    }
    let gates = view.spec.readiness_gates.as_deref().unwrap_or(&[]);
    let unready: Vec<String> = gates
        .iter()
        .filter_map(
            |g| match others.iter().find(|c| c.type_ == g.condition_type) {
                None => Some(format!(
                    "corresponding condition of pod readiness gate {:?} does not exist.",
                    g.condition_type
                )),
                Some(c) if c.status != "True" => Some(format!(
                    "the status of pod readiness gate {:?} is not \"True\", but {}",
                    g.condition_type, c.status
                )),
                Some(_) => None,
            },
        )
        .collect();
    if unready.is_empty() {
        Cond::new(READY, true)
    } else {
        Cond::new(READY, false).because(READINESS_GATES_NOT_READY, Some(unready.join(", ")))
    }
}

fn conditions(
    view: &PodView<'_>,
    previous: Option<&PodStatus>,
    init: &[ContainerStatus],
    app: &[ContainerStatus],
    phase: &str,
    now: &Time,
) -> Vec<PodCondition> {
    let previous_conditions: &[PodCondition] = previous
        .and_then(|p| p.conditions.as_deref())
        .unwrap_or(&[]);
    let mut out: Vec<PodCondition> = previous_conditions
        .iter()
        .filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    let initialized = initialized_condition(view, init, app, phase);
    let containers_ready = containers_ready_condition(view, init, app, phase);
    let ready = ready_condition(view, &containers_ready, &out);
    let scheduled = Cond::new(POD_SCHEDULED, true);
    for cond in [initialized, ready, containers_ready, scheduled] {
        let since = previous_conditions
            .iter()
            .find(|p| p.type_ == cond.type_ && p.status == cond.status)
            .and_then(|p| p.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        out.push(PodCondition {
            type_: cond.type_.to_owned(),
            status: cond.status.to_owned(),
            reason: cond.reason,
            message: cond.message,
            last_transition_time: Some(since),
            last_probe_time: None,
            observed_generation: None,
        });
    }
    out
}

// ---------------------------------------------------------------------------
// QoS class

/// CPU and memory: the resources that decide the QoS class.
const QOS_RESOURCES: [&str; 2] = ["cpu", "memory"];

/// Adds the positive CPU and memory quantities of `list` to `sum`; returns
/// the names found.
fn add_positive(
    list: Option<&BTreeMap<String, K8sQuantity>>,
    sum: &mut BTreeMap<&'static str, Quantity>,
) -> Vec<&'static str> {
    let mut found = Vec::new();
    let Some(list) = list else {
        return found;
    };
    for name in QOS_RESOURCES {
        let Some(q) = list.get(name).and_then(|q| Quantity::from_k8s(q).ok()) else {
            continue;
        };
        if q > Quantity::ZERO {
            found.push(name);
            let entry = sum.entry(name).or_insert(Quantity::ZERO);
            *entry = entry.saturating_add(q);
        }
    }
    found
}

/// Requests as the API server defaults them: a resource with a limit and no
/// request requests its limit.
fn defaulted_requests(
    requests: Option<&BTreeMap<String, K8sQuantity>>,
    limits: Option<&BTreeMap<String, K8sQuantity>>,
) -> BTreeMap<String, K8sQuantity> {
    let mut out = requests.cloned().unwrap_or_default();
    for (name, q) in limits.into_iter().flatten() {
        out.entry(name.clone()).or_insert_with(|| q.clone());
    }
    out
}

/// The QoS class: `BestEffort` without any CPU or memory request or limit,
/// `Guaranteed` when every container (or the pod-level resources) limits
/// both CPU and memory and the summed requests equal the summed limits,
/// `Burstable` otherwise.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    let mut guaranteed = true;
    let pod_level = spec.resources.as_ref().filter(|r| {
        r.requests.as_ref().is_some_and(|m| !m.is_empty())
            || r.limits.as_ref().is_some_and(|m| !m.is_empty())
    });
    let per_container: Vec<_> = match pod_level {
        Some(r) => vec![(r.requests.as_ref(), r.limits.as_ref())],
        None => spec
            .containers
            .iter()
            .chain(init_specs(spec))
            .map(|c| {
                let r = c.resources.as_ref();
                (
                    r.and_then(|r| r.requests.as_ref()),
                    r.and_then(|r| r.limits.as_ref()),
                )
            })
            .collect(),
    };
    for (req, lim) in per_container {
        let req = defaulted_requests(req, lim);
        add_positive(Some(&req), &mut requests);
        let found = add_positive(lim, &mut limits);
        let has_limits = lim.is_some_and(|l| !l.is_empty());
        // Pod-level resources without limits are judged by the comparison
        // of requests and limits alone.
        if (pod_level.is_none() || has_limits) && !QOS_RESOURCES.iter().all(|r| found.contains(r)) {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed
        && requests.iter().all(|(name, q)| limits.get(name) == Some(q))
        && requests.len() == limits.len()
    {
        return "Guaranteed";
    }
    "Burstable"
}

// ---------------------------------------------------------------------------
// Normalization

fn whole_seconds(t: &Time) -> Time {
    Time(Timestamp::from_second(t.0.as_second()).unwrap_or(t.0))
}

fn seconds_opt(t: &mut Option<Time>) {
    if let Some(v) = t {
        *v = whole_seconds(v);
    }
}

fn normalize_state(state: &mut Option<ContainerState>) {
    let st = state.get_or_insert_with(ContainerState::default);
    if let Some(r) = &mut st.running {
        seconds_opt(&mut r.started_at);
    }
    if let Some(t) = &mut st.terminated {
        seconds_opt(&mut t.started_at);
        seconds_opt(&mut t.finished_at);
    }
}

fn normalize_statuses(list: &mut Option<Vec<ContainerStatus>>) {
    if list.as_ref().is_some_and(Vec::is_empty) {
        *list = None;
    }
    for s in list.iter_mut().flatten() {
        normalize_state(&mut s.state);
        normalize_state(&mut s.last_state);
    }
}

/// The status as it reads back from the API: whole-second times, empty
/// lists and strings absent, container states present.
fn normalized(status: &PodStatus) -> PodStatus {
    let mut s = status.clone();
    seconds_opt(&mut s.start_time);
    for c in s.conditions.iter_mut().flatten() {
        seconds_opt(&mut c.last_transition_time);
        seconds_opt(&mut c.last_probe_time);
    }
    if s.conditions.as_ref().is_some_and(Vec::is_empty) {
        s.conditions = None;
    }
    normalize_statuses(&mut s.init_container_statuses);
    normalize_statuses(&mut s.container_statuses);
    normalize_statuses(&mut s.ephemeral_container_statuses);
    for field in [
        &mut s.reason,
        &mut s.message,
        &mut s.host_ip,
        &mut s.pod_ip,
        &mut s.nominated_node_name,
    ] {
        if field.as_ref().is_some_and(String::is_empty) {
            *field = None;
        }
    }
    if s.host_ips.as_ref().is_some_and(Vec::is_empty) {
        s.host_ips = None;
    }
    if s.pod_ips.as_ref().is_some_and(Vec::is_empty) {
        s.pod_ips = None;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodReadinessGate, ResourceRequirements};

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(1_700_000_000 + secs).expect("valid time"))
    }

    fn container(name: &str) -> Container {
        Container {
            name: name.to_owned(),
            image: Some(format!("{name}-image")),
            ..Container::default()
        }
    }

    fn spec(policy: Option<&str>, init: &[&str], app: &[&str]) -> PodSpec {
        PodSpec {
            restart_policy: policy.map(str::to_owned),
            init_containers: (!init.is_empty())
                .then(|| init.iter().map(|n| container(n)).collect()),
            containers: app.iter().map(|n| container(n)).collect(),
            ..PodSpec::default()
        }
    }

    fn exit(code: i32) -> Terminated {
        Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { COMPLETED } else { ERROR }.to_owned(),
            message: None,
            started_at: Some(t(1)),
            finished_at: Some(t(2)),
            container_id: Some("docker://old".to_owned()),
        }
    }

    fn running(name: &str) -> ContainerRecord {
        ContainerRecord {
            image_id: "docker://sha256:abc".to_owned(),
            container_id: Some(format!("docker://{name}")),
            state: RecordState::Running { started_at: t(3) },
            ready: true,
            ..ContainerRecord::waiting(name, &format!("{name}-image"), CONTAINER_CREATING)
        }
    }

    fn exited(name: &str, code: i32) -> ContainerRecord {
        ContainerRecord {
            state: RecordState::Terminated(exit(code)),
            ..running(name)
        }
    }

    fn crash_looping(name: &str, last_code: i32) -> ContainerRecord {
        ContainerRecord {
            state: RecordState::Waiting {
                reason: CRASH_LOOP_BACK_OFF.to_owned(),
                message: Some("back-off 10s restarting failed container".to_owned()),
            },
            last_termination: Some(exit(last_code)),
            restart_count: 1,
            ready: false,
            ..running(name)
        }
    }

    fn waiting(name: &str) -> ContainerRecord {
        ContainerRecord::waiting(name, &format!("{name}-image"), CONTAINER_CREATING)
    }

    fn view<'a>(
        spec: &'a PodSpec,
        init: &'a [ContainerRecord],
        app: &'a [ContainerRecord],
    ) -> PodView<'a> {
        PodView {
            spec,
            init,
            app,
            host_ip: "10.0.0.1",
            pod_ip: "172.17.0.5",
            start_time: Some(t(0)),
            initialized: init.len() == spec.init_containers.as_ref().map_or(0, Vec::len)
                && init
                    .iter()
                    .all(|r| matches!(&r.state, RecordState::Terminated(x) if x.exit_code == 0)),
            stopping: None,
        }
    }

    fn phase_of_app(policy: Option<&str>, app: &[ContainerRecord]) -> &'static str {
        let names: Vec<&str> = app.iter().map(|r| r.name.as_str()).collect();
        let s = spec(policy, &[], &names);
        phase(&view(&s, &[], app))
    }

    fn cond<'a>(status: &'a PodStatus, type_: &str) -> &'a PodCondition {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition"))
    }

    fn summary(c: &PodCondition) -> (String, Option<String>, Option<String>) {
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    fn s(
        status: &str,
        reason: Option<&str>,
        message: Option<&str>,
    ) -> (String, Option<String>, Option<String>) {
        (
            status.to_owned(),
            reason.map(str::to_owned),
            message.map(str::to_owned),
        )
    }

    #[test]
    fn phase_of_app_containers_by_restart_policy() {
        let cases: Vec<(Option<&str>, Vec<ContainerRecord>, &str)> = vec![
            (None, vec![waiting("a")], PHASE_PENDING),
            (None, vec![running("a"), waiting("b")], PHASE_PENDING),
            (None, vec![running("a"), running("b")], PHASE_RUNNING),
            (None, vec![running("a"), exited("b", 1)], PHASE_RUNNING),
            (
                Some("Never"),
                vec![running("a"), exited("b", 1)],
                PHASE_RUNNING,
            ),
            // All stopped.
            (None, vec![exited("a", 0)], PHASE_RUNNING),
            (Some("Always"), vec![exited("a", 1)], PHASE_RUNNING),
            (
                Some("OnFailure"),
                vec![exited("a", 0), exited("b", 0)],
                PHASE_SUCCEEDED,
            ),
            (
                Some("OnFailure"),
                vec![exited("a", 0), exited("b", 2)],
                PHASE_RUNNING,
            ),
            (
                Some("Never"),
                vec![exited("a", 0), exited("b", 0)],
                PHASE_SUCCEEDED,
            ),
            (
                Some("Never"),
                vec![exited("a", 0), exited("b", 2)],
                PHASE_FAILED,
            ),
            // A container backing off after a crash counts as stopped.
            (None, vec![crash_looping("a", 1)], PHASE_RUNNING),
            (
                Some("OnFailure"),
                vec![crash_looping("a", 1), exited("b", 0)],
                PHASE_RUNNING,
            ),
            (
                None,
                vec![crash_looping("a", 1), waiting("b")],
                PHASE_PENDING,
            ),
            // Unknown policies behave as Always.
            (Some("Sometimes"), vec![exited("a", 0)], PHASE_RUNNING),
        ];
        for (policy, app, want) in cases {
            let names: Vec<&str> = app.iter().map(|r| r.name.as_str()).collect();
            assert_eq!(
                phase_of_app(policy, &app),
                want,
                "policy {policy:?} {names:?}"
            );
        }
    }

    #[test]
    fn phase_with_init_containers() {
        let sp = spec(Some("Always"), &["i1", "i2"], &["app"]);
        let nev = spec(Some("Never"), &["i1", "i2"], &["app"]);
        let onf = spec(Some("OnFailure"), &["i1", "i2"], &["app"]);
        let app_wait = [ContainerRecord::waiting(
            "app",
            "app-image",
            POD_INITIALIZING,
        )];
        // Nothing ran yet.
        assert_eq!(phase(&view(&sp, &[], &app_wait)), PHASE_PENDING);
        // First init container running.
        assert_eq!(
            phase(&view(&sp, &[running("i1")], &app_wait)),
            PHASE_PENDING
        );
        // First done, second not started.
        assert_eq!(
            phase(&view(&sp, &[exited("i1", 0)], &app_wait)),
            PHASE_PENDING
        );
        // Failed init container: Never fails the pod, others retry.
        let failed = [exited("i1", 0), exited("i2", 1)];
        assert_eq!(phase(&view(&nev, &failed, &app_wait)), PHASE_FAILED);
        assert_eq!(phase(&view(&onf, &failed, &app_wait)), PHASE_PENDING);
        let retrying = [exited("i1", 0), crash_looping("i2", 1)];
        assert_eq!(phase(&view(&onf, &retrying, &app_wait)), PHASE_PENDING);
        assert_eq!(phase(&view(&sp, &retrying, &app_wait)), PHASE_PENDING);
        assert_eq!(phase(&view(&nev, &retrying, &app_wait)), PHASE_FAILED);
        // Initialized, app running / finished.
        let done = [exited("i1", 0), exited("i2", 0)];
        assert_eq!(phase(&view(&sp, &done, &[running("app")])), PHASE_RUNNING);
        assert_eq!(
            phase(&view(&nev, &done, &[exited("app", 0)])),
            PHASE_SUCCEEDED
        );
        assert_eq!(phase(&view(&nev, &done, &[exited("app", 3)])), PHASE_FAILED);
        // Initialized but the app container not created yet.
        assert_eq!(phase(&view(&sp, &done, &app_wait)), PHASE_PENDING);
        // Init records lost after initialization (executor restart): the
        // initialized flag keeps the pod out of Pending.
        let app_running = [running("app")];
        let mut v = view(&sp, &[], &app_running);
        v.initialized = true;
        assert_eq!(phase(&v), PHASE_RUNNING);
    }

    #[test]
    fn phase_with_sidecars() {
        let mut sp = spec(None, &["side"], &["app"]);
        if let Some(c) = sp.init_containers.as_mut().and_then(|v| v.first_mut()) {
            c.restart_policy = Some("Always".to_owned());
        }
        let app_wait = [ContainerRecord::waiting(
            "app",
            "app-image",
            POD_INITIALIZING,
        )];
        let not_started = ContainerRecord {
            started: Some(false),
            ..running("side")
        };
        let mut v = view(&sp, std::slice::from_ref(&not_started), &app_wait);
        v.initialized = false;
        assert_eq!(phase(&v), PHASE_PENDING);
        let side = [running("side")];
        let app_running = [running("app")];
        let v = PodView {
            initialized: true,
            ..view(&sp, &side, &app_running)
        };
        assert_eq!(phase(&v), PHASE_RUNNING);
        // A restarting sidecar does not send a started pod back to Pending.
        let v = PodView {
            initialized: false,
            ..view(&sp, std::slice::from_ref(&not_started), &app_running)
        };
        assert_eq!(phase(&v), PHASE_RUNNING);
        let st = pod_status(&v, None, t(10));
        assert_eq!(summary(cond(&st, INITIALIZED)), s("True", None, None));
        assert_eq!(
            summary(cond(&st, CONTAINERS_READY)),
            s(
                "False",
                Some(CONTAINERS_NOT_READY),
                Some("containers with unready status: [side]")
            )
        );
    }

    #[test]
    fn phase_while_stopping() {
        let sp = spec(Some("Always"), &[], &["a", "b"]);
        let both = [running("a"), running("b")];
        let mut v = view(&sp, &[], &both);
        v.stopping = Some("");
        assert_eq!(phase(&v), PHASE_RUNNING);
        let killed = [exited("a", 137), exited("b", 0)];
        v.app = &killed;
        assert_eq!(phase(&v), PHASE_FAILED);
        let clean = [exited("a", 0), exited("b", 0)];
        v.app = &clean;
        assert_eq!(phase(&v), PHASE_SUCCEEDED);
        // A container that never ran: nothing runs, nothing will.
        let never = [exited("a", 0), waiting("b")];
        v.app = &never;
        assert_eq!(phase(&v), PHASE_FAILED);
        // Not stopping: the same pod is Pending.
        v.stopping = None;
        assert_eq!(phase(&v), PHASE_PENDING);
    }

    #[test]
    fn should_restart_by_policy() {
        for (policy, code, want) in [
            (None, 0, true),
            (None, 1, true),
            (Some("Always"), 0, true),
            (Some("OnFailure"), 0, false),
            (Some("OnFailure"), 137, true),
            (Some("Never"), 0, false),
            (Some("Never"), 1, false),
        ] {
            assert_eq!(should_restart(policy, code), want, "{policy:?} exit {code}");
        }
    }

    #[test]
    fn terminated_from_docker() {
        let ok = terminated(
            0,
            false,
            "",
            Some("2024-05-01T10:00:00.123456789Z"),
            Some("2024-05-01T10:00:05.9Z"),
            Some("docker://abc"),
        );
        assert_eq!(ok.reason, COMPLETED);
        assert_eq!(ok.exit_code, 0);
        assert_eq!(ok.message, None);
        assert_eq!(ok.container_id.as_deref(), Some("docker://abc"));
        let start: Timestamp = "2024-05-01T10:00:00Z".parse().expect("time");
        let end: Timestamp = "2024-05-01T10:00:05Z".parse().expect("time");
        assert_eq!(ok.started_at, Some(Time(start)));
        assert_eq!(ok.finished_at, Some(Time(end)));

        let err = terminated(2, false, "", None, Some("0001-01-01T00:00:00Z"), None);
        assert_eq!((err.reason.as_str(), err.exit_code), (ERROR, 2));
        assert_eq!(err.finished_at, None);
        assert_eq!(err.container_id, None);

        let oom = terminated(137, true, "", None, None, None);
        assert_eq!(oom.reason, OOM_KILLED);

        let cannot = terminated(
            127,
            false,
            "exec: \"nope\": executable file not found in $PATH",
            None,
            Some("garbage"),
            None,
        );
        assert_eq!(cannot.reason, CONTAINER_CANNOT_RUN);
        assert_eq!(
            cannot.message.as_deref(),
            Some("exec: \"nope\": executable file not found in $PATH")
        );
        assert_eq!(cannot.finished_at, None);
        assert_eq!(
            terminated(1 << 40, false, "", None, None, None).exit_code,
            i32::MAX
        );
    }

    #[test]
    fn status_of_a_pod_waiting_for_init_containers() {
        let sp = spec(Some("Always"), &["i1", "i2"], &["web", "db"]);
        let init = [exited("i1", 0), running("i2")];
        let v = view(&sp, &init, &[]);
        let st = pod_status(&v, None, t(10));
        assert_eq!(st.phase.as_deref(), Some(PHASE_PENDING));
        let types: Vec<&str> = st
            .conditions
            .iter()
            .flatten()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(types, [INITIALIZED, READY, CONTAINERS_READY, POD_SCHEDULED]);
        assert_eq!(
            summary(cond(&st, INITIALIZED)),
            s(
                "False",
                Some(CONTAINERS_NOT_INITIALIZED),
                Some("containers with incomplete status: [i2]")
            )
        );
        let unready = s(
            "False",
            Some(CONTAINERS_NOT_READY),
            Some("containers with unready status: [web db]"),
        );
        assert_eq!(summary(cond(&st, CONTAINERS_READY)), unready);
        assert_eq!(summary(cond(&st, READY)), unready);
        assert_eq!(summary(cond(&st, POD_SCHEDULED)), s("True", None, None));
        for c in st.conditions.iter().flatten() {
            assert_eq!(c.last_transition_time, Some(t(10)));
            assert_eq!(c.last_probe_time, None);
        }

        // Init statuses in spec order, app statuses by name, unrecorded
        // containers waiting with PodInitializing.
        let init_st = st.init_container_statuses.as_deref().unwrap_or(&[]);
        let names: Vec<&str> = init_st.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["i1", "i2"]);
        assert!(init_st[0].ready, "a succeeded init container is ready");
        assert_eq!(init_st[0].started, Some(false));
        assert!(!init_st[1].ready);
        assert_eq!(init_st[1].started, Some(true));
        let app_st = st.container_statuses.as_deref().unwrap_or(&[]);
        let names: Vec<&str> = app_st.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["db", "web"]);
        for c in app_st {
            let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
            assert_eq!(
                waiting.and_then(|w| w.reason.as_deref()),
                Some(POD_INITIALIZING)
            );
            assert_eq!(c.image, format!("{}-image", c.name));
            assert_eq!(c.image_id, "");
            assert_eq!(c.container_id, None);
            assert!(!c.ready);
            assert_eq!(c.started, Some(false));
            assert_eq!(c.restart_count, 0);
            assert_eq!(c.last_state, Some(ContainerState::default()));
        }
        assert_eq!(st.host_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(
            st.host_ips,
            Some(vec![HostIP {
                ip: "10.0.0.1".to_owned()
            }])
        );
        assert_eq!(st.pod_ip.as_deref(), Some("172.17.0.5"));
        assert_eq!(
            st.pod_ips,
            Some(vec![PodIP {
                ip: "172.17.0.5".to_owned()
            }])
        );
        assert_eq!(st.start_time, Some(t(0)));
        assert_eq!(st.qos_class.as_deref(), Some("BestEffort"));
    }

    #[test]
    fn container_status_fields() {
        let sp = spec(None, &[], &["app", "side"]);
        let mut rec = crash_looping("app", 2);
        rec.restart_count = 4;
        let mut run = running("side");
        run.state = RecordState::Running {
            started_at: Time(t(3).0 + std::time::Duration::from_millis(700)),
        };
        let app = [rec, run];
        let st = pod_status(&view(&sp, &[], &app), None, t(10));
        let cs = st.container_statuses.unwrap_or_default();
        let app_st = &cs[0];
        assert_eq!(app_st.name, "app");
        assert_eq!(app_st.restart_count, 4);
        assert_eq!(app_st.image_id, "docker://sha256:abc");
        assert_eq!(app_st.container_id.as_deref(), Some("docker://app"));
        assert!(!app_st.ready);
        assert_eq!(app_st.started, Some(false));
        let w = app_st
            .state
            .as_ref()
            .and_then(|s| s.waiting.clone())
            .unwrap_or_default();
        assert_eq!(w.reason.as_deref(), Some(CRASH_LOOP_BACK_OFF));
        assert!(w.message.is_some());
        let last = app_st
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.clone())
            .unwrap_or_default();
        assert_eq!(last.exit_code, 2);
        assert_eq!(last.reason.as_deref(), Some(ERROR));
        assert_eq!(last.started_at, Some(t(1)));
        assert_eq!(last.finished_at, Some(t(2)));
        assert_eq!(last.container_id.as_deref(), Some("docker://old"));

        let side = &cs[1];
        assert!(side.ready);
        assert_eq!(side.started, Some(true));
        let started = side
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.clone());
        assert_eq!(started, Some(t(3)), "times are held to whole seconds");

        // A running container whose startup probe has not passed is neither
        // started nor ready, whatever its readiness record says.
        let gated = [
            ContainerRecord {
                started: Some(false),
                ..running("app")
            },
            running("side"),
        ];
        let st = pod_status(&view(&sp, &[], &gated), None, t(10));
        let cs = st.container_statuses.unwrap_or_default();
        assert_eq!((cs[0].started, cs[0].ready), (Some(false), false));
        // No init containers: unrecorded containers are ContainerCreating.
        let st = pod_status(&view(&sp, &[], &[]), None, t(10));
        let reason = st.container_statuses.unwrap_or_default()[0]
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone());
        assert_eq!(reason.as_deref(), Some(CONTAINER_CREATING));
        assert_eq!(st.init_container_statuses, None);
    }

    #[test]
    fn ready_pod_and_transition_times() {
        let sp = spec(None, &["init"], &["a", "b"]);
        let init = [exited("init", 0)];
        let mut b_unready = running("b");
        b_unready.ready = false;
        let app1 = [running("a"), b_unready];
        let first = pod_status(&view(&sp, &init, &app1), None, t(10));
        assert_eq!(first.phase.as_deref(), Some(PHASE_RUNNING));
        assert_eq!(summary(cond(&first, INITIALIZED)), s("True", None, None));
        assert_eq!(
            summary(cond(&first, READY)),
            s(
                "False",
                Some(CONTAINERS_NOT_READY),
                Some("containers with unready status: [b]")
            )
        );

        // Same verdicts later: every transition time is kept.
        let again = pod_status(&view(&sp, &init, &app1), Some(&first), t(20));
        for c in again.conditions.iter().flatten() {
            assert_eq!(c.last_transition_time, Some(t(10)), "{}", c.type_);
        }
        assert!(!changed(Some(&first), &again));

        // b becomes ready: Ready and ContainersReady move, the rest stays.
        let app2 = [running("a"), running("b")];
        let ready = pod_status(&view(&sp, &init, &app2), Some(&again), t(30));
        assert!(changed(Some(&again), &ready));
        assert_eq!(summary(cond(&ready, READY)), s("True", None, None));
        assert_eq!(
            summary(cond(&ready, CONTAINERS_READY)),
            s("True", None, None)
        );
        assert_eq!(cond(&ready, READY).last_transition_time, Some(t(30)));
        assert_eq!(
            cond(&ready, CONTAINERS_READY).last_transition_time,
            Some(t(30))
        );
        assert_eq!(cond(&ready, INITIALIZED).last_transition_time, Some(t(10)));
        assert_eq!(
            cond(&ready, POD_SCHEDULED).last_transition_time,
            Some(t(10))
        );
        // The start time is the first one reported.
        let v = PodView {
            start_time: Some(t(25)),
            ..view(&sp, &init, &app2)
        };
        assert_eq!(pod_status(&v, Some(&ready), t(40)).start_time, Some(t(0)));
        let v = PodView {
            start_time: None,
            ..view(&sp, &init, &app2)
        };
        assert_eq!(pod_status(&v, None, t(40)).start_time, Some(t(40)));
    }

    #[test]
    fn terminal_pods() {
        let sp = spec(Some("Never"), &["init"], &["a"]);
        let init = [exited("init", 0)];
        let ok = pod_status(&view(&sp, &init, &[exited("a", 0)]), None, t(10));
        assert_eq!(ok.phase.as_deref(), Some(PHASE_SUCCEEDED));
        assert_eq!(
            summary(cond(&ok, INITIALIZED)),
            s("True", Some(POD_COMPLETED), None)
        );
        assert_eq!(
            summary(cond(&ok, CONTAINERS_READY)),
            s("False", Some(POD_COMPLETED), None)
        );
        assert_eq!(
            summary(cond(&ok, READY)),
            s("False", Some(POD_COMPLETED), None)
        );

        let bad = pod_status(&view(&sp, &init, &[exited("a", 1)]), None, t(10));
        assert_eq!(bad.phase.as_deref(), Some(PHASE_FAILED));
        assert_eq!(summary(cond(&bad, INITIALIZED)), s("True", None, None));
        assert_eq!(
            summary(cond(&bad, CONTAINERS_READY)),
            s("False", Some(POD_FAILED), None)
        );
        assert_eq!(
            summary(cond(&bad, READY)),
            s("False", Some(POD_FAILED), None)
        );

        // Failed init container on a Never pod.
        let failed_init = [exited("init", 1)];
        let app_wait = [ContainerRecord::waiting("a", "a-image", POD_INITIALIZING)];
        let st = pod_status(&view(&sp, &failed_init, &app_wait), None, t(10));
        assert_eq!(st.phase.as_deref(), Some(PHASE_FAILED));
        assert_eq!(
            summary(cond(&st, INITIALIZED)),
            s(
                "False",
                Some(CONTAINERS_NOT_INITIALIZED),
                Some("containers with incomplete status: [init]")
            )
        );

        // A terminal phase is never left, and its reason stays.
        let mut prev = bad.clone();
        prev.reason = Some("Evicted".to_owned());
        prev.message = Some("The node was low on resource: memory.".to_owned());
        let after = pod_status(&view(&sp, &init, &[running("a")]), Some(&prev), t(20));
        assert_eq!(after.phase.as_deref(), Some(PHASE_FAILED));
        assert_eq!(after.reason.as_deref(), Some("Evicted"));
        assert_eq!(
            summary(cond(&after, READY)),
            s("False", Some(POD_FAILED), None)
        );
    }

    #[test]
    fn stopping_reason_becomes_the_status_reason() {
        let sp = spec(None, &[], &["a"]);
        let app = [running("a")];
        let mut v = view(&sp, &[], &app);
        v.stopping = Some("DeadlineExceeded");
        let st = pod_status(&v, None, t(10));
        assert_eq!(st.phase.as_deref(), Some(PHASE_RUNNING));
        assert_eq!(st.reason, None);
        let killed = [exited("a", 143)];
        v.app = &killed;
        let st = pod_status(&v, Some(&st), t(20));
        assert_eq!(st.phase.as_deref(), Some(PHASE_FAILED));
        assert_eq!(st.reason.as_deref(), Some("DeadlineExceeded"));
        // A deletion (empty reason) sets none.
        v.stopping = Some("");
        assert_eq!(pod_status(&v, None, t(20)).reason, None);
    }

    #[test]
    fn foreign_conditions_and_readiness_gates() {
        let mut sp = spec(None, &[], &["a"]);
        sp.readiness_gates = Some(vec![
            PodReadinessGate {
                condition_type: "example.com/lb".to_owned(),
            },
            PodReadinessGate {
                condition_type: "example.com/dns".to_owned(),
            },
        ]);
        let app = [running("a")];
        let st = pod_status(&view(&sp, &[], &app), None, t(10));
        assert_eq!(
            summary(cond(&st, READY)),
            s(
                "False",
                Some(READINESS_GATES_NOT_READY),
                Some(
                    "corresponding condition of pod readiness gate \"example.com/lb\" does not exist., corresponding condition of pod readiness gate \"example.com/dns\" does not exist."
                )
            )
        );
        assert_eq!(summary(cond(&st, CONTAINERS_READY)), s("True", None, None));

        let mut prev = st.clone();
        let gate = |type_: &str, status: &str| PodCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            last_transition_time: Some(t(5)),
            ..PodCondition::default()
        };
        let mut conds = vec![
            gate("example.com/lb", "True"),
            gate("example.com/dns", "False"),
        ];
        conds.extend(prev.conditions.take().unwrap_or_default());
        prev.conditions = Some(conds);
        let st = pod_status(&view(&sp, &[], &app), Some(&prev), t(20));
        let types: Vec<&str> = st
            .conditions
            .iter()
            .flatten()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(
            types,
            [
                "example.com/lb",
                "example.com/dns",
                INITIALIZED,
                READY,
                CONTAINERS_READY,
                POD_SCHEDULED
            ]
        );
        assert_eq!(cond(&st, "example.com/lb").last_transition_time, Some(t(5)));
        assert_eq!(
            summary(cond(&st, READY)),
            s(
                "False",
                Some(READINESS_GATES_NOT_READY),
                Some(
                    "the status of pod readiness gate \"example.com/dns\" is not \"True\", but False"
                )
            )
        );
        // Kubelet-owned conditions of the previous status are rebuilt, not
        // duplicated.
        assert_eq!(
            st.conditions
                .iter()
                .flatten()
                .filter(|c| c.type_ == READY)
                .count(),
            1
        );
    }

    #[test]
    fn addresses_survive_the_pod_network() {
        let sp = spec(Some("Never"), &[], &["a"]);
        let app = [running("a")];
        let first = pod_status(&view(&sp, &[], &app), None, t(10));
        let done = [exited("a", 0)];
        let v = PodView {
            pod_ip: "",
            ..view(&sp, &[], &done)
        };
        let st = pod_status(&v, Some(&first), t(20));
        assert_eq!(st.pod_ip.as_deref(), Some("172.17.0.5"));
        let st = pod_status(&v, None, t(20));
        assert_eq!((st.pod_ip, st.pod_ips), (None, None));
    }

    #[test]
    fn changed_ignores_what_the_api_drops() {
        let sp = spec(None, &["i"], &["a", "b"]);
        let init = [exited("i", 0)];
        let mut a = running("a");
        a.state = RecordState::Running {
            started_at: Time(t(3).0 + std::time::Duration::from_millis(999)),
        };
        let app = [a, crash_looping("b", 1)];
        let st = pod_status(&view(&sp, &init, &app), None, t(10));
        assert!(changed(None, &st));
        assert!(!changed(Some(&st), &st));
        // Through JSON (the API server's view of it).
        let json = serde_json::to_string(&st).expect("serialize");
        let back: PodStatus = serde_json::from_str(&json).expect("deserialize");
        assert!(!changed(Some(&back), &st));
        let again = pod_status(&view(&sp, &init, &app), Some(&back), t(50));
        assert!(!changed(Some(&back), &again));
        // Sub-second differences do not count; real ones do.
        let mut nanos = st.clone();
        nanos.start_time = Some(Time(t(0).0 + std::time::Duration::from_millis(300)));
        assert!(!changed(Some(&st), &nanos));
        let mut other = st.clone();
        if let Some(cs) = other.container_statuses.as_mut() {
            cs[0].restart_count += 1;
        }
        assert!(changed(Some(&st), &other));
        let mut other = st.clone();
        other.phase = Some(PHASE_FAILED.to_owned());
        assert!(changed(Some(&st), &other));
    }

    fn resources(
        requests: &[(&str, &str)],
        limits: &[(&str, &str)],
    ) -> Option<ResourceRequirements> {
        let map = |list: &[(&str, &str)]| {
            (!list.is_empty()).then(|| {
                list.iter()
                    .map(|(k, v)| ((*k).to_owned(), K8sQuantity((*v).to_owned())))
                    .collect()
            })
        };
        Some(ResourceRequirements {
            requests: map(requests),
            limits: map(limits),
            ..ResourceRequirements::default()
        })
    }

    type Res<'a> = (&'a [(&'a str, &'a str)], &'a [(&'a str, &'a str)]);

    fn qos(app: &[Res<'_>], init: &[Res<'_>]) -> &'static str {
        let mk = |(i, (req, lim)): (usize, &Res<'_>)| Container {
            name: format!("c{i}"),
            resources: resources(req, lim),
            ..Container::default()
        };
        let sp = PodSpec {
            containers: app.iter().enumerate().map(mk).collect(),
            init_containers: Some(init.iter().enumerate().map(mk).collect()),
            ..PodSpec::default()
        };
        qos_class(&sp)
    }

    #[test]
    fn qos_classes() {
        let both: &[(&str, &str)] = &[("cpu", "500m"), ("memory", "64Mi")];
        let none: &[(&str, &str)] = &[];
        assert_eq!(qos(&[(none, none)], &[]), "BestEffort");
        assert_eq!(qos(&[(&[("cpu", "0")], none)], &[]), "BestEffort");
        assert_eq!(
            qos(
                &[(&[("nvidia.com/gpu", "1")], &[("nvidia.com/gpu", "1")])],
                &[]
            ),
            "BestEffort"
        );
        assert_eq!(qos(&[(&[("cpu", "100m")], none)], &[]), "Burstable");
        assert_eq!(qos(&[(both, both)], &[]), "Guaranteed");
        // Requests default to limits.
        assert_eq!(qos(&[(none, both)], &[]), "Guaranteed");
        // Equal values in other units.
        assert_eq!(
            qos(&[(&[("cpu", "0.5"), ("memory", "67108864")], both)], &[]),
            "Guaranteed"
        );
        assert_eq!(
            qos(&[(&[("cpu", "250m"), ("memory", "64Mi")], both)], &[]),
            "Burstable"
        );
        assert_eq!(qos(&[(none, &[("cpu", "1")])], &[]), "Burstable");
        assert_eq!(qos(&[(both, both), (none, none)], &[]), "Burstable");
        assert_eq!(qos(&[(both, both)], &[(both, both)]), "Guaranteed");
        assert_eq!(
            qos(&[(both, both)], &[(&[("cpu", "1m")], none)]),
            "Burstable"
        );
        assert_eq!(
            qos(&[(none, none)], &[(&[("memory", "1Mi")], none)]),
            "Burstable"
        );

        // Pod-level resources decide alone.
        let mut sp = PodSpec {
            containers: vec![container("a")],
            resources: resources(none, both),
            ..PodSpec::default()
        };
        assert_eq!(qos_class(&sp), "Guaranteed");
        sp.resources = resources(&[("cpu", "1")], none);
        assert_eq!(qos_class(&sp), "Burstable");
        sp.resources = resources(both, &[("cpu", "500m")]);
        assert_eq!(qos_class(&sp), "Burstable");
        sp.resources = Some(ResourceRequirements::default());
        assert_eq!(qos_class(&sp), "BestEffort");
    }
}
