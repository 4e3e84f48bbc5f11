//! The executor's Docker side: a thin layer over bollard that speaks in
//! the executor's terms (pull policies, container facts, exit codes) and
//! turns Docker's failures into [`RuntimeError`]s that say what to do.
//!
//! Decisions:
//! - The API version is always negotiated: bollard speaks a newer API than
//!   the Docker 20.10 (API 1.41) on km's machines.
//! - There is no registry on km's machines, so [`PullPolicy::Always`] falls
//!   back to a local copy when the pull fails; this is what makes images
//!   tagged `latest` (policy Always by Kubernetes' defaulting) usable.
//! - Pulls always name a tag or digest: Docker pulls *every* tag of a
//!   repository when asked for a bare name.
//! - A 404 is [`RuntimeError::NotFound`] for container operations; for
//!   `create` it means the image is missing and stays a
//!   [`RuntimeError::Docker`] carrying Docker's "No such image" message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::exec::StartExecResults;
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, EventMessage, ExecConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

use super::{labels, pause};

/// Where Docker listens when neither the caller nor `DOCKER_HOST` says.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// bollard's per-request timeout (until the response headers arrive).
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// How much of an exec's output is kept.
const MAX_EXEC_OUTPUT: usize = 10 * 1024;

/// Errors from the container runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Docker's endpoint cannot be reached.
    #[error("Docker unreachable at {endpoint}: start dockerd or set DOCKER_HOST ({message})")]
    Unreachable {
        /// The endpoint tried.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// Pulling an image failed (the pod shows ErrImagePull).
    #[error("cannot pull image {image}: {message}")]
    ImagePull {
        /// The image reference.
        image: String,
        /// Docker's message.
        message: String,
    },
    /// The image is missing and the policy forbids pulling (ErrImageNeverPull).
    #[error("image {image} is not present on this node and imagePullPolicy is Never")]
    ImageNeverPull {
        /// The image reference.
        image: String,
    },
    /// The container does not exist.
    #[error("no such container {id}")]
    NotFound {
        /// The container id or name asked for.
        id: String,
    },
    /// Any other Docker failure.
    #[error("docker {what}: {message}")]
    Docker {
        /// The operation.
        what: String,
        /// Docker's message.
        message: String,
    },
}

/// When to pull a container's image (Kubernetes' `imagePullPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull every time (falling back to a local copy, see the module docs).
    Always,
    /// Pull only when the image is missing.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The policy of a container: its `imagePullPolicy` when it names one,
    /// else Kubernetes' default: Always when the image's tag is `latest` or
    /// absent (and it has no digest), IfNotPresent otherwise.
    pub fn for_container(policy: Option<&str>, image: &str) -> PullPolicy {
        match policy {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            _ => {
                if image.contains('@') {
                    return PullPolicy::IfNotPresent;
                }
                match image_tag(image) {
                    None | Some("latest") => PullPolicy::Always,
                    Some(_) => PullPolicy::IfNotPresent,
                }
            }
        }
    }
}

/// The tag of an image reference without digest, if it has one. The tag
/// sits after a ':' in the last path component (a ':' earlier belongs to a
/// registry's port).
fn image_tag(image: &str) -> Option<&str> {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':').map(|(_, tag)| tag)
}

/// `image` with `:latest` added when it names neither tag nor digest.
fn with_default_tag(image: &str) -> String {
    if image.contains('@') || image_tag(image).is_some() {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// What the executor needs to know about a container.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerInfo {
    /// Full container id.
    pub id: String,
    /// Name, without Docker's leading '/'.
    pub name: String,
    /// The container's labels.
    pub labels: HashMap<String, String>,
    /// The image as configured at creation.
    pub image: String,
    /// The image's id, `sha256:...`.
    pub image_id: String,
    /// Whether it is running.
    pub running: bool,
    /// Docker's state: created, running, paused, restarting, removing, exited or dead.
    pub status: String,
    /// Exit code of the last run, when it has run.
    pub exit_code: Option<i64>,
    /// Whether the kernel's OOM killer ended it.
    pub oom_killed: bool,
    /// Docker's error starting or running it, "" when none.
    pub error: String,
    /// When it last started (RFC 3339).
    pub started_at: Option<String>,
    /// When it last finished (RFC 3339).
    pub finished_at: Option<String>,
    /// Its main process, while running.
    pub pid: Option<i64>,
    /// Its IP address on Docker's bridge (or its first network), if any.
    pub ip_address: Option<String>,
}

/// Facts about the Docker host.
#[derive(Clone, Debug, Default)]
pub struct HostInfo {
    /// Docker's cgroup driver: `cgroupfs` or `systemd`.
    pub cgroup_driver: String,
    /// The cgroup version: `1` or `2`.
    pub cgroup_version: String,
    /// Docker's version, e.g. `20.10.24+dfsg1`.
    pub server_version: String,
    /// The negotiated Engine API version, e.g. `1.41`.
    pub api_version: String,
}

/// The result of [`Runtime::exec`].
#[derive(Clone, Debug, Default)]
pub struct ExecOutput {
    /// The command's exit code.
    pub exit_code: i64,
    /// Its stdout and stderr, interleaved, at most 10 KiB (the start is kept).
    pub output: String,
}

/// Which part of a container's log to read.
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    /// Keep streaming until the container stops.
    pub follow: bool,
    /// Only the last this many lines.
    pub tail: Option<u64>,
    /// Only lines written at or after this time (unix seconds).
    pub since: Option<i64>,
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
}

/// A Docker event about a container of a pod.
#[derive(Clone, Debug)]
pub struct ContainerEvent {
    /// The container's id.
    pub id: String,
    /// What happened: `create`, `start`, `die`, `oom`, `kill`, `stop`, `destroy`, ...
    pub action: String,
    /// The event's attributes: the container's labels plus Docker's own
    /// `name`, `image` and (on `die`) `exitCode`.
    pub labels: HashMap<String, String>,
}

/// A connection to the Docker Engine. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    docker: Docker,
    endpoint: String,
    /// Removals in flight at once, shared by the clones: Docker removes a
    /// hundred containers faster eight at a time than all at once.
    removals: Arc<tokio::sync::Semaphore>,
}

/// How many containers a runtime removes at once (the `removals` field).
const CONCURRENT_REMOVALS: usize = 8;

impl Runtime {
    /// Connects to Docker at `docker_host` (None: `$DOCKER_HOST`, else
    /// `unix:///var/run/docker.sock`), which may be `unix://PATH`, a bare
    /// socket path, `tcp://HOST:PORT` or `http://HOST:PORT`. Negotiates the
    /// API version and pings; any failure is [`RuntimeError::Unreachable`].
    pub async fn connect(docker_host: Option<&str>) -> Result<Runtime, RuntimeError> {
        let endpoint = match docker_host {
            Some(host) => host.to_string(),
            None => std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| DEFAULT_HOST.to_string()),
        };
        let unreachable = |message: String| RuntimeError::Unreachable {
            endpoint: endpoint.clone(),
            message,
        };
        let docker = if let Some(path) = endpoint.strip_prefix("unix://") {
            Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
        } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
            Docker::connect_with_http(&endpoint, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
        } else if !endpoint.contains("://") {
            Docker::connect_with_unix(&endpoint, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
        } else {
            return Err(unreachable(
                "unsupported scheme: use unix://PATH, a socket path, tcp://HOST:PORT or http://HOST:PORT"
                    .to_string(),
            ));
        };
        let docker = docker.map_err(|e| unreachable(describe(&e)))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unreachable(describe(&e)))?;
        docker.ping().await.map_err(|e| unreachable(describe(&e)))?;
        Ok(Runtime {
            docker,
            endpoint,
            removals: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_REMOVALS)),
        })
    }

    /// The endpoint connected to, as given.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Docker's cgroup driver and version, its version and the negotiated API version.
    pub async fn host_info(&self) -> Result<HostInfo, RuntimeError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| self.error("info", e))?;
        Ok(HostInfo {
            cgroup_driver: info
                .cgroup_driver
                .map(|d| d.to_string())
                .unwrap_or_default(),
            cgroup_version: info
                .cgroup_version
                .map(|v| v.to_string())
                .unwrap_or_default(),
            server_version: info.server_version.unwrap_or_default(),
            api_version: self.docker.client_version().to_string(),
        })
    }

    /// Imports km's built-in pause image (see [`pause`]) unless it is
    /// present, and returns its reference. Concurrent calls may both import;
    /// that is harmless (the second import retags the same content).
    pub async fn ensure_pause_image(&self) -> Result<String, RuntimeError> {
        let reference = pause::pause_image();
        if self.local_image_id(&reference).await?.is_some() {
            return Ok(reference);
        }
        let what = "import of the pause image";
        let tar = pause::rootfs_tar().map_err(|e| RuntimeError::Docker {
            what: what.to_string(),
            message: e.to_string(),
        })?;
        let (repo, tag) = reference
            .rsplit_once(':')
            .unwrap_or((reference.as_str(), "latest"));
        let options = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(vec![r#"ENTRYPOINT ["/pause"]"#.to_string()])
            .build();
        let mut progress = self.docker.create_image(
            Some(options),
            Some(bollard::body_full(Bytes::from(tar))),
            None,
        );
        while let Some(item) = progress.next().await {
            item.map_err(|e| self.error(what, e))?;
        }
        tracing::info!(image = %reference, "imported the pause image");
        Ok(reference)
    }

    /// Makes `image` present according to `policy` and returns its id
    /// (`sha256:...`). Never: present or [`RuntimeError::ImageNeverPull`];
    /// IfNotPresent: present, else pulled; Always: pulled, or, when the pull
    /// fails and a local copy exists, the local copy (with a warning).
    pub async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
    ) -> Result<String, RuntimeError> {
        match policy {
            PullPolicy::Never => {
                self.local_image_id(image)
                    .await?
                    .ok_or_else(|| RuntimeError::ImageNeverPull {
                        image: image.to_string(),
                    })
            }
            PullPolicy::IfNotPresent => {
                if let Some(id) = self.local_image_id(image).await? {
                    return Ok(id);
                }
                self.pull(image).await?;
                self.pulled_image_id(image).await
            }
            PullPolicy::Always => match self.pull(image).await {
                Ok(()) => self.pulled_image_id(image).await,
                Err(e @ RuntimeError::Unreachable { .. }) => Err(e),
                Err(e) => match self.local_image_id(image).await? {
                    Some(id) => {
                        tracing::warn!(image, error = %e, "pull failed; using the local image");
                        Ok(id)
                    }
                    None => Err(e),
                },
            },
        }
    }

    /// The id of a local image, None when it is absent.
    async fn local_image_id(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(found) => Ok(Some(found.id.unwrap_or_default())),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.error("inspect image", e)),
        }
    }

    /// The id of an image just pulled.
    async fn pulled_image_id(&self, image: &str) -> Result<String, RuntimeError> {
        self.local_image_id(image)
            .await?
            .ok_or_else(|| RuntimeError::ImagePull {
                image: image.to_string(),
                message: "the pull succeeded but the image is not present".to_string(),
            })
    }

    /// Pulls `image` (with `:latest` when it names no tag or digest).
    async fn pull(&self, image: &str) -> Result<(), RuntimeError> {
        let reference = with_default_tag(image);
        let options = CreateImageOptionsBuilder::default()
            .from_image(&reference)
            .build();
        let mut progress = self.docker.create_image(Some(options), None, None);
        while let Some(item) = progress.next().await {
            item.map_err(|e| {
                if is_connection_error(&e) {
                    self.unreachable(&e)
                } else {
                    RuntimeError::ImagePull {
                        image: image.to_string(),
                        message: describe(&e),
                    }
                }
            })?;
        }
        Ok(())
    }

    /// Creates a container named `name`. When the name is taken by a stale
    /// container, removes that one and tries once more. Returns the id.
    pub async fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, RuntimeError> {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let first = self
            .docker
            .create_container(Some(options.clone()), body.clone())
            .await;
        let created = match first {
            Err(e) if status(&e) == Some(409) => {
                tracing::warn!(name, "container name in use: removing the stale container");
                self.remove(name).await?;
                self.docker.create_container(Some(options), body).await
            }
            other => other,
        };
        match created {
            Ok(response) => Ok(response.id),
            Err(e) if is_connection_error(&e) => Err(self.unreachable(&e)),
            Err(e) => Err(RuntimeError::Docker {
                what: "create".to_string(),
                message: describe(&e),
            }),
        }
    }

    /// Starts a created container (starting a running one is a no-op).
    pub async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| self.container_error("start", id, e))
    }

    /// Stops a container: SIGTERM (or its image's stop signal), then SIGKILL
    /// after `grace`, rounded up to whole seconds; `Duration::ZERO` kills
    /// at once. A container already stopped or gone is Ok.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let seconds = if grace.is_zero() {
            0
        } else {
            grace.as_secs() + u64::from(grace.subsec_nanos() > 0)
        };
        let t = i32::try_from(seconds).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(t).build();
        // Docker answers only once the container is down: give the request
        // the whole grace period plus the usual allowance.
        let docker = self.docker.clone().with_timeout(Duration::from_secs(
            REQUEST_TIMEOUT_SECS.saturating_add(seconds),
        ));
        match docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.container_error("stop", id, e)),
        }
    }

    /// Force-removes a container with its anonymous volumes. Gone already is Ok.
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let _turn = self.removals.acquire().await;
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            // "removal of container ... is already in progress": another
            // caller is removing it.
            Err(e) if status(&e) == Some(409) && describe(&e).contains("already in progress") => {
                Ok(())
            }
            Err(e) => Err(self.container_error("remove", id, e)),
        }
    }

    /// The container's state and identity.
    pub async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        let response = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| self.container_error("inspect", id, e))?;
        Ok(container_info(response))
    }

    /// All containers, running or not, that carry every given label; a
    /// value of "" asks only that the key be present.
    pub async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let selectors: Vec<String> = labels
            .iter()
            .map(|(key, value)| {
                if value.is_empty() {
                    key.to_string()
                } else {
                    format!("{key}={value}")
                }
            })
            .collect();
        let filters = HashMap::from([("label", selectors)]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.error("list", e))?;
        let mut infos = Vec::with_capacity(summaries.len());
        for id in summaries.into_iter().filter_map(|s| s.id) {
            match self.inspect(&id).await {
                Ok(info) => infos.push(info),
                // Removed since it was listed.
                Err(RuntimeError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(infos)
    }

    /// Waits until the container is not running and returns its exit code.
    pub async fn wait(&self, id: &str) -> Result<i64, RuntimeError> {
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut responses = self.docker.wait_container(id, Some(options));
        match responses.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // bollard reports a non-zero exit code as an error.
            Some(Err(DockerError::DockerContainerWaitError { error, code }))
                if error.is_empty() =>
            {
                Ok(code)
            }
            Some(Err(e)) => Err(self.container_error("wait", id, e)),
            None => Err(RuntimeError::Docker {
                what: "wait".to_string(),
                message: format!("Docker's answer for container {id} ended without an exit code"),
            }),
        }
    }

    /// Runs `cmd` in a running container and returns its exit code and
    /// output. Gives up after `timeout` with a [`RuntimeError::Docker`]
    /// (what `exec`); Docker has no way to kill an exec'd process, so it may
    /// go on running.
    pub async fn exec(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let run = async {
            let config = ExecConfig {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(cmd),
                ..Default::default()
            };
            let created = self
                .docker
                .create_exec(id, config)
                .await
                .map_err(|e| self.container_error("exec", id, e))?;
            let started = self
                .docker
                .start_exec(&created.id, None)
                .await
                .map_err(|e| self.container_error("exec", id, e))?;
            let mut output = Vec::new();
            if let StartExecResults::Attached {
                output: mut chunks, ..
            } = started
            {
                while let Some(chunk) = chunks.next().await {
                    let chunk = chunk.map_err(|e| self.container_error("exec", id, e))?;
                    let bytes = chunk.into_bytes();
                    let room = MAX_EXEC_OUTPUT.saturating_sub(output.len());
                    output.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
            }
            // The output ends when the process does; Docker records the exit
            // code a moment later at most.
            loop {
                let inspected = self
                    .docker
                    .inspect_exec(&created.id)
                    .await
                    .map_err(|e| self.container_error("exec", id, e))?;
                if inspected.running != Some(true)
                    && let Some(exit_code) = inspected.exit_code
                {
                    return Ok(ExecOutput {
                        exit_code,
                        output: String::from_utf8_lossy(&output).into_owned(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(timeout, run)
            .await
            .unwrap_or_else(|_| {
                Err(RuntimeError::Docker {
                    what: "exec".to_string(),
                    message: format!(
                        "the command in container {id} timed out after {}",
                        humantime::format_duration(timeout)
                    ),
                })
            })
    }

    /// The container's log, stdout and stderr interleaved as Docker returns
    /// them, as a stream of chunks. It ends with the log or, with `follow`,
    /// when the container stops; after an error it ends too.
    pub fn logs(
        &self,
        id: &str,
        opts: LogOptions,
    ) -> BoxStream<'static, Result<Bytes, RuntimeError>> {
        let tail = opts
            .tail
            .map_or_else(|| "all".to_string(), |n| n.to_string());
        let mut options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(opts.follow)
            .timestamps(opts.timestamps)
            .tail(&tail);
        if let Some(since) = opts.since {
            options = options.since(i32::try_from(since.max(0)).unwrap_or(i32::MAX));
        }
        let this = self.clone();
        let id = id.to_string();
        let chunks = self
            .docker
            .logs(&id, Some(options.build()))
            .map(move |item| {
                item.map(|chunk| chunk.into_bytes())
                    .map_err(|e| this.container_error("logs", &id, e))
            });
        until_first_error(chunks)
    }

    /// Docker's events about containers that carry the pod UID label (that
    /// is, km's containers), from now on. The stream ends after an error,
    /// e.g. when Docker restarts; subscribe again then.
    pub fn events(&self) -> BoxStream<'static, Result<ContainerEvent, RuntimeError>> {
        let filters = HashMap::from([
            ("type", vec!["container".to_string()]),
            ("label", vec![labels::POD_UID.to_string()]),
        ]);
        let options = EventsOptionsBuilder::default().filters(&filters).build();
        let this = self.clone();
        let events = self.docker.events(Some(options)).map(move |item| {
            item.map(container_event)
                .map_err(|e| this.error("events", e))
        });
        until_first_error(events)
    }

    /// An error of an operation on a container: 404 is NotFound.
    fn container_error(&self, what: &str, id: &str, e: DockerError) -> RuntimeError {
        if status(&e) == Some(404) {
            RuntimeError::NotFound { id: id.to_string() }
        } else {
            self.error(what, e)
        }
    }

    /// An error of any operation.
    fn error(&self, what: &str, e: DockerError) -> RuntimeError {
        if is_connection_error(&e) {
            self.unreachable(&e)
        } else {
            RuntimeError::Docker {
                what: what.to_string(),
                message: describe(&e),
            }
        }
    }

    fn unreachable(&self, e: &DockerError) -> RuntimeError {
        RuntimeError::Unreachable {
            endpoint: self.endpoint.clone(),
            message: describe(e),
        }
    }
}

/// Passes items through up to and including the first error, then ends.
fn until_first_error<T: Send + 'static>(
    stream: impl futures::Stream<Item = Result<T, RuntimeError>> + Send + 'static,
) -> BoxStream<'static, Result<T, RuntimeError>> {
    let mut failed = false;
    stream
        .take_while(move |item| {
            let go_on = !failed;
            failed = item.is_err();
            futures::future::ready(go_on)
        })
        .boxed()
}

/// The HTTP status of an error Docker answered with.
fn status(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Whether `e` means Docker could not be reached at all.
fn is_connection_error(e: &DockerError) -> bool {
    match e {
        DockerError::HyperLegacyError { err } => err.is_connect(),
        DockerError::SocketNotFoundError(_) => true,
        DockerError::IOError { err } => matches!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::NotFound
        ),
        _ => false,
    }
}

/// An error's message: Docker's own for an error response, else the whole
/// chain of causes (bollard's top-level messages alone say little).
fn describe(e: &DockerError) -> String {
    if let DockerError::DockerResponseServerError { message, .. } = e {
        return message.trim().to_string();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Docker's zero time, which it reports for "never".
fn docker_time(time: Option<String>) -> Option<String> {
    time.filter(|t| !t.is_empty() && !t.starts_with("0001-01-01"))
}

fn container_info(response: ContainerInspectResponse) -> ContainerInfo {
    let state = response.state.unwrap_or_default();
    let config = response.config.unwrap_or_default();
    let networks = response
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default();
    let ip_of = |name: &str| {
        networks
            .get(name)
            .and_then(|n| n.ip_address.clone())
            .filter(|ip| !ip.is_empty())
    };
    let ip_address = ip_of("bridge").or_else(|| {
        let mut names: Vec<&String> = networks.keys().collect();
        names.sort();
        names.into_iter().find_map(|name| ip_of(name))
    });
    let running = state.running.unwrap_or(false);
    ContainerInfo {
        id: response.id.unwrap_or_default(),
        name: response
            .name
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        labels: config.labels.unwrap_or_default(),
        image: config.image.unwrap_or_default(),
        image_id: response.image.unwrap_or_default(),
        running,
        status: state.status.map(|s| s.to_string()).unwrap_or_default(),
        exit_code: state.exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        error: state.error.unwrap_or_default(),
        started_at: docker_time(state.started_at),
        finished_at: docker_time(state.finished_at),
        pid: state.pid.filter(|&pid| pid > 0),
        ip_address,
    }
}

fn container_event(message: EventMessage) -> ContainerEvent {
    let actor = message.actor.unwrap_or_default();
    ContainerEvent {
        id: actor.id.unwrap_or_default(),
        action: message.action.unwrap_or_default(),
        labels: actor.attributes.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const BUSYBOX: &str = "km-test/busybox:latest";

    async fn runtime() -> Runtime {
        Runtime::connect(None)
            .await
            .expect("Docker is running on this machine")
    }

    fn unique(prefix: &str) -> String {
        format!("km-test-{prefix}-{}", uuid::Uuid::new_v4().simple())
    }

    fn busybox(cmd: &[&str], labels: &[(&str, &str)]) -> ContainerCreateBody {
        ContainerCreateBody {
            image: Some(BUSYBOX.to_string()),
            cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    /// Creates a container, runs `body` against it and removes it whatever happened.
    async fn with_container<F, Fut>(
        rt: &Runtime,
        prefix: &str,
        create: ContainerCreateBody,
        body: F,
    ) where
        F: FnOnce(Runtime, String) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let id = rt.create(&unique(prefix), create).await.expect("create");
        let outcome = tokio::spawn(body(rt.clone(), id.clone())).await;
        rt.remove(&id).await.expect("remove");
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic.into_panic());
        }
    }

    async fn collect_logs(rt: &Runtime, id: &str, opts: LogOptions) -> String {
        let mut text = Vec::new();
        let mut chunks = rt.logs(id, opts);
        while let Some(chunk) = chunks.next().await {
            text.extend_from_slice(&chunk.expect("log chunk"));
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    #[test]
    fn pull_policy_defaults() {
        use PullPolicy::*;
        let cases = [
            (Some("Never"), "busybox:latest", Never),
            (Some("IfNotPresent"), "busybox", IfNotPresent),
            (Some("Always"), "busybox:1.36", Always),
            (None, "busybox", Always),
            (None, "busybox:latest", Always),
            (None, "busybox:1.36", IfNotPresent),
            (None, "localhost:5000/team/app", Always),
            (None, "localhost:5000/team/app:v2", IfNotPresent),
            (None, "busybox@sha256:0123abcd", IfNotPresent),
            (None, "busybox:latest@sha256:0123abcd", IfNotPresent),
            (Some(""), "busybox:1.0", IfNotPresent),
        ];
        for (policy, image, want) in cases {
            assert_eq!(
                PullPolicy::for_container(policy, image),
                want,
                "{policy:?} {image}"
            );
        }
        assert_eq!(with_default_tag("busybox"), "busybox:latest");
        assert_eq!(
            with_default_tag("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(with_default_tag("app:v1"), "app:v1");
        assert_eq!(with_default_tag("app@sha256:ab"), "app@sha256:ab");
    }

    #[tokio::test]
    async fn connect_to_a_missing_socket_is_unreachable() {
        let err = Runtime::connect(Some("unix:///nonexistent/docker.sock"))
            .await
            .err()
            .expect("no daemon there");
        assert!(matches!(err, RuntimeError::Unreachable { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(
                "Docker unreachable at unix:///nonexistent/docker.sock: start dockerd or set DOCKER_HOST ("
            ),
            "{text}"
        );
        // A TCP port nobody listens on.
        let err = Runtime::connect(Some("tcp://127.0.0.1:1"))
            .await
            .err()
            .expect("no daemon there");
        assert!(matches!(err, RuntimeError::Unreachable { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn connect_and_host_info() {
        let rt = runtime().await;
        assert!(!rt.endpoint().is_empty());
        let host = rt.host_info().await.expect("info");
        assert!(
            ["cgroupfs", "systemd"].contains(&host.cgroup_driver.as_str()),
            "{host:?}"
        );
        assert!(
            ["1", "2"].contains(&host.cgroup_version.as_str()),
            "{host:?}"
        );
        assert!(!host.server_version.is_empty());
        assert!(host.api_version.starts_with("1."), "{host:?}");
        // A bare socket path works too.
        let bare = Runtime::connect(Some("/var/run/docker.sock"))
            .await
            .expect("bare path");
        assert_eq!(bare.endpoint(), "/var/run/docker.sock");
    }

    #[tokio::test]
    async fn create_start_inspect_exec() {
        let rt = runtime().await;
        let key = unique("label");
        let create = busybox(&["sleep", "300"], &[(labels::POD_NAME, key.as_str())]);
        with_container(&rt, "run", create, move |rt, id| async move {
            let created = rt.inspect(&id).await.expect("inspect");
            assert_eq!(created.status, "created");
            assert!(!created.running);
            assert_eq!(created.started_at, None, "Docker's zero time is None");
            assert_eq!(created.pid, None);
            rt.start(&id).await.expect("start");
            let info = rt.inspect(&id).await.expect("inspect");
            assert_eq!(info.id, id);
            assert!(info.name.starts_with("km-test-run-"), "{}", info.name);
            assert!(info.running);
            assert_eq!(info.status, "running");
            assert!(info.pid.is_some_and(|p| p > 0), "{info:?}");
            assert!(info.ip_address.as_deref().is_some_and(|ip| ip.contains('.')), "{info:?}");
            assert_eq!(info.image, BUSYBOX);
            assert!(info.image_id.starts_with("sha256:"), "{info:?}");
            assert_eq!(info.labels.get(labels::POD_NAME), Some(&key));
            assert!(info.started_at.is_some());
            assert_eq!(info.finished_at, None);

            let out = rt
                .exec(&id, vec!["sh".into(), "-c".into(), "echo out; echo err >&2; exit 7".into()], Duration::from_secs(10))
                .await
                .expect("exec");
            assert_eq!(out.exit_code, 7);
            assert!(out.output.contains("out\n") && out.output.contains("err\n"), "{out:?}");

            let big = rt
                .exec(&id, vec!["sh".into(), "-c".into(), "yes | head -c 50000".into()], Duration::from_secs(10))
                .await
                .expect("exec");
            assert_eq!(big.exit_code, 0);
            assert_eq!(big.output.len(), MAX_EXEC_OUTPUT);

            let started = Instant::now();
            let err = rt
                .exec(&id, vec!["sleep".into(), "30".into()], Duration::from_millis(500))
                .await
                .expect_err("times out");
            assert!(started.elapsed() < Duration::from_secs(5));
            assert!(
                matches!(&err, RuntimeError::Docker { what, message } if what == "exec" && message.contains("timed out")),
                "{err:?}"
            );

            let listed = rt.list(&[(labels::POD_NAME, key.as_str())]).await.expect("list");
            assert_eq!(listed.len(), 1);
            assert_eq!(listed[0].id, id);
            let by_key = rt.list(&[(labels::POD_NAME, "")]).await.expect("list");
            assert!(by_key.iter().any(|c| c.id == id));
            let none = rt
                .list(&[(labels::POD_NAME, key.as_str()), (labels::POD_UID, "")])
                .await
                .expect("list");
            assert!(none.is_empty());

            rt.stop(&id, Duration::ZERO).await.expect("stop");
            let stopped = rt.inspect(&id).await.expect("inspect");
            assert!(!stopped.running);
            assert_eq!(stopped.exit_code, Some(137), "SIGKILL: {stopped:?}");
            assert!(stopped.finished_at.is_some());
            // Stopping again is fine.
            rt.stop(&id, Duration::from_secs(1)).await.expect("stop again");
        })
        .await;
    }

    #[tokio::test]
    async fn missing_containers() {
        let rt = runtime().await;
        let ghost = unique("ghost");
        assert!(
            matches!(rt.inspect(&ghost).await, Err(RuntimeError::NotFound { id }) if id == ghost)
        );
        assert!(matches!(
            rt.start(&ghost).await,
            Err(RuntimeError::NotFound { .. })
        ));
        assert!(matches!(
            rt.wait(&ghost).await,
            Err(RuntimeError::NotFound { .. })
        ));
        rt.stop(&ghost, Duration::from_secs(1))
            .await
            .expect("stop of a gone container");
        rt.remove(&ghost).await.expect("remove of a gone container");
        let err = rt
            .exec(&ghost, vec!["true".into()], Duration::from_secs(5))
            .await
            .expect_err("no container");
        assert!(matches!(err, RuntimeError::NotFound { .. }), "{err:?}");
        let mut logs = rt.logs(&ghost, LogOptions::default());
        assert!(matches!(
            logs.next().await,
            Some(Err(RuntimeError::NotFound { .. }))
        ));
        assert!(logs.next().await.is_none(), "ends after the error");
    }

    #[tokio::test]
    async fn create_replaces_a_stale_container_of_the_same_name() {
        let rt = runtime().await;
        let name = unique("stale");
        let first = rt
            .create(&name, busybox(&["true"], &[]))
            .await
            .expect("create");
        let second = rt.create(&name, busybox(&["true"], &[])).await;
        let cleanup = rt.remove(&name).await;
        let second = second.expect("second create");
        cleanup.expect("remove");
        assert_ne!(first, second);
        assert!(matches!(
            rt.inspect(&first).await,
            Err(RuntimeError::NotFound { .. })
        ));
        // A missing image is not "no such container".
        let noimage = unique("noimage");
        let created = rt
            .create(
                &noimage,
                ContainerCreateBody {
                    image: Some("km-test/does-not-exist:v1".into()),
                    ..Default::default()
                },
            )
            .await;
        rt.remove(&noimage).await.expect("remove");
        let err = created.expect_err("no image");
        assert!(
            matches!(&err, RuntimeError::Docker { what, .. } if what == "create"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn wait_returns_the_exit_code() {
        let rt = runtime().await;
        with_container(
            &rt,
            "wait",
            busybox(&["sh", "-c", "sleep 0.3; exit 3"], &[]),
            |rt, id| async move {
                rt.start(&id).await.expect("start");
                assert_eq!(rt.wait(&id).await.expect("wait"), 3);
                // An exited container answers at once.
                assert_eq!(rt.wait(&id).await.expect("wait again"), 3);
                assert_eq!(rt.inspect(&id).await.expect("inspect").exit_code, Some(3));
            },
        )
        .await;
        with_container(&rt, "wait0", busybox(&["true"], &[]), |rt, id| async move {
            rt.start(&id).await.expect("start");
            assert_eq!(rt.wait(&id).await.expect("wait"), 0);
        })
        .await;
    }

    #[tokio::test]
    async fn logs_tail_timestamps_and_follow() {
        let rt = runtime().await;
        let script = "for i in 1 2 3 4 5; do echo line$i; done; sleep 0.3; echo oops >&2; sleep 1; echo late; sleep 1";
        with_container(
            &rt,
            "logs",
            busybox(&["sh", "-c", script], &[]),
            |rt, id| async move {
                rt.start(&id).await.expect("start");
                // Follow from the start: everything, ending when the container exits.
                let started = Instant::now();
                let followed = tokio::time::timeout(
                    Duration::from_secs(20),
                    collect_logs(
                        &rt,
                        &id,
                        LogOptions {
                            follow: true,
                            ..Default::default()
                        },
                    ),
                )
                .await
                .expect("follow ends when the container exits");
                assert!(
                    started.elapsed() >= Duration::from_millis(1500),
                    "followed until the end"
                );
                assert_eq!(followed, "line1\nline2\nline3\nline4\nline5\noops\nlate\n");
                rt.wait(&id).await.expect("wait");

                let tail = collect_logs(
                    &rt,
                    &id,
                    LogOptions {
                        tail: Some(2),
                        ..Default::default()
                    },
                )
                .await;
                assert_eq!(tail, "oops\nlate\n");

                let stamped = collect_logs(
                    &rt,
                    &id,
                    LogOptions {
                        tail: Some(1),
                        timestamps: true,
                        ..Default::default()
                    },
                )
                .await;
                let (stamp, rest) = stamped.split_once(' ').expect("timestamp then line");
                assert!(stamp.contains('T') && stamp.ends_with('Z'), "{stamped}");
                assert_eq!(rest, "late\n");

                let future = chrono_free_now() + 3600;
                let none = collect_logs(
                    &rt,
                    &id,
                    LogOptions {
                        since: Some(future),
                        ..Default::default()
                    },
                )
                .await;
                assert_eq!(none, "");
            },
        )
        .await;
    }

    fn chrono_free_now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn stop_kills_a_process_that_ignores_sigterm() {
        let rt = runtime().await;
        let script = r#"trap "" TERM; while true; do sleep 1; done"#;
        with_container(
            &rt,
            "stop",
            busybox(&["sh", "-c", script], &[]),
            |rt, id| async move {
                rt.start(&id).await.expect("start");
                tokio::time::sleep(Duration::from_millis(300)).await;
                let started = Instant::now();
                rt.stop(&id, Duration::from_millis(1000))
                    .await
                    .expect("stop");
                let took = started.elapsed();
                assert!(
                    took >= Duration::from_secs(1),
                    "waited the grace period: {took:?}"
                );
                assert!(took < Duration::from_secs(5), "then killed: {took:?}");
                let info = rt.inspect(&id).await.expect("inspect");
                assert!(!info.running);
                assert_eq!(info.exit_code, Some(137), "{info:?}");
            },
        )
        .await;
    }

    #[tokio::test]
    async fn events_report_the_death_of_a_pod_container() {
        let rt = runtime().await;
        let uid = unique("uid");
        let mut events = rt.events();
        // Docker subscribes when the request arrives; give it a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let create = busybox(&["sh", "-c", "exit 4"], &[(labels::POD_UID, uid.as_str())]);
        let uid2 = uid.clone();
        with_container(&rt, "events", create, move |rt, id| async move {
            rt.start(&id).await.expect("start");
            let die = tokio::time::timeout(Duration::from_secs(20), async {
                while let Some(event) = events.next().await {
                    let event = event.expect("event");
                    if event.id == id && event.action == "die" {
                        return event;
                    }
                }
                panic!("event stream ended");
            })
            .await
            .expect("a die event");
            assert_eq!(die.labels.get(labels::POD_UID), Some(&uid2));
            assert_eq!(die.labels.get("exitCode").map(String::as_str), Some("4"));
        })
        .await;
    }

    #[tokio::test]
    async fn ensure_image_policies() {
        let rt = runtime().await;
        let missing = format!("km-test/{}:v1", uuid::Uuid::new_v4().simple());
        let err = rt
            .ensure_image(&missing, PullPolicy::Never)
            .await
            .expect_err("never");
        assert!(
            matches!(&err, RuntimeError::ImageNeverPull { image } if *image == missing),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("image {missing} is not present on this node and imagePullPolicy is Never")
        );
        let err = rt
            .ensure_image(&missing, PullPolicy::IfNotPresent)
            .await
            .expect_err("no registry");
        assert!(
            matches!(&err, RuntimeError::ImagePull { image, .. } if *image == missing),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("cannot pull image {missing}: "))
        );

        let local = rt
            .ensure_image(BUSYBOX, PullPolicy::Never)
            .await
            .expect("present");
        assert!(local.starts_with("sha256:"), "{local}");
        assert_eq!(
            rt.ensure_image(BUSYBOX, PullPolicy::IfNotPresent)
                .await
                .expect("present"),
            local
        );
        // Always: the pull fails (no registry), the local image is used.
        assert_eq!(
            rt.ensure_image(BUSYBOX, PullPolicy::Always)
                .await
                .expect("fallback"),
            local
        );
    }
}
