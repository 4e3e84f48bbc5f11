//! km's executor client for real: this test binary, re-executed by a real
//! km dev-agent (registered with a real km dev-master), runs
//! [`km_executor_child`], a tiny executor built on `km::mesos::executor`;
//! the tests drive it with km's scheduler client. Everything but the
//! executor runs in-process.
//!
//! The child is selected by [`CHILD_VAR`], passed in the executor's
//! `CommandInfo.environment`: the dev-agent strips the `KM_*` variables it
//! inherits, but applies `CommandInfo.environment` after that (see
//! `src/devcluster/agent/env.rs`), so the variable does reach the child.
//! Its value is a per-test token, by which leftover executor processes are
//! found in `/proc` and killed when a test fails.
//!
//! The child appends every event it gets to `events.log` in its sandbox,
//! writes its pid (and start time) to `pid`, and logs to the sandbox's
//! `stderr`; failure messages show all three. With `RUST_LOG` set, the
//! in-process master's and agent's logs go to the captured test output too.
//!
//! Cleanup: a failing test's [`Cluster`] kills executor processes that carry
//! its token and removes its cgroups when dropped; an executor orphaned in
//! any other way (the test process killed) gives up by itself after
//! `MESOS_RECOVERY_TIMEOUT` (`--recovery-timeout 15secs`).
//!
//! `km_executor_is_not_disconnected_right_after_subscribing` guards a race
//! the dev-agent once had (see [`settle`]): an executor whose SUBSCRIBE was
//! handled before its process start lost its first subscription.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use km::devcluster::agent::checkpoint;
use km::devcluster::agent::process::{self, Signal};
use km::devcluster::agent::sandbox::Layout;
use km::mesos::detector::MasterAddress;
use km::mesos::executor::{self as executor_client, ExecutorEnv, ExecutorEvent};
use km::mesos::proto::v1;
use km::mesos::proto::v1::scheduler::event;
use km::mesos::scheduler::{self, Scheduler, SchedulerConfig, SchedulerEvent};

use super::support::{agent_args, free_port, master_args};

/// Set (to the test's token) in the executor's environment: run as the child.
const CHILD_VAR: &str = "KM_TEST_EXECUTOR_CHILD";
/// The child's test name in this binary.
const CHILD_TEST: &str = "executor::km_executor_child";
/// Every wait is bounded by this.
const WAIT: Duration = Duration::from_secs(15);
/// The hostname the test agents advertise.
const HOSTNAME: &str = "km-executor-test";
/// The child's event log, in its sandbox.
const EVENTS_LOG: &str = "events.log";
/// The child's pid file, in its sandbox: `<pid> <start time>`.
const PID_FILE: &str = "pid";

// ---------------------------------------------------------------------------
// The executor (child side)
// ---------------------------------------------------------------------------

/// The executor process. A no-op unless [`CHILD_VAR`] is set, i.e. unless
/// this binary was started by the dev-agent as an executor.
#[test]
fn km_executor_child() {
    if std::env::var_os(CHILD_VAR).is_none() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let code = runtime.block_on(child_main());
    eprintln!("km_executor_child: exiting with {code}");
    std::process::exit(code);
}

/// Appends lines to the child's event log (and echoes them to stderr).
struct ChildLog(PathBuf);

impl ChildLog {
    fn line(&self, line: &str) {
        use std::io::Write;
        eprintln!("km_executor_child: {line}");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.0);
        match file {
            Ok(mut f) => {
                let _ = writeln!(f, "{line}");
            }
            Err(e) => eprintln!("km_executor_child: cannot write {}: {e}", self.0.display()),
        }
    }
}

async fn child_report(
    ex: &executor_client::Executor,
    log: &ChildLog,
    task_id: &v1::TaskId,
    state: v1::TaskState,
) {
    let status = v1::TaskStatus {
        task_id: task_id.clone(),
        state: state as i32,
        message: Some(format!("km_executor_child: {}", state.as_str_name())),
        ..Default::default()
    };
    match ex.update(status).await {
        Ok(()) => log.line(&format!("UPDATE {} {}", task_id.value, state.as_str_name())),
        Err(e) => log.line(&format!(
            "UPDATE {} {} not delivered (kept: {}): {e}",
            task_id.value,
            state.as_str_name(),
            e.is_kept()
        )),
    }
}

async fn child_main() -> i32 {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "info,km::mesos::executor=debug",
        ))
        .try_init();
    let env = match ExecutorEnv::from_env() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("km_executor_child: bad environment: {e}");
            return 2;
        }
    };
    eprintln!("km_executor_child: {env:?}");
    let log = ChildLog(env.sandbox.join(EVENTS_LOG));
    let pid = std::process::id();
    let start = process::start_time(pid).unwrap_or(0);
    let tmp = env.sandbox.join("pid.tmp");
    if let Err(e) = std::fs::write(&tmp, format!("{pid} {start}"))
        .and_then(|()| std::fs::rename(&tmp, env.sandbox.join(PID_FILE)))
    {
        eprintln!("km_executor_child: cannot write the pid file: {e}");
    }
    let grace = env.shutdown_grace_period;
    // An executor orphaned before its first subscription gives up soon too.
    let options = executor_client::Options {
        registration_timeout: WAIT,
        ..executor_client::Options::default()
    };
    let (ex, mut events) = match executor_client::start(env, options) {
        Ok(started) => started,
        Err(e) => {
            log.line(&format!("START FAILED {e}"));
            return 2;
        }
    };
    let mut live: BTreeSet<String> = BTreeSet::new();
    while let Some(ev) = events.recv().await {
        match ev {
            ExecutorEvent::Subscribed(_) => log.line("SUBSCRIBED"),
            ExecutorEvent::Launch(task) => {
                log.line(&format!("LAUNCH {}", task.task_id.value));
                live.insert(task.task_id.value.clone());
                child_report(&ex, &log, &task.task_id, v1::TaskState::TaskRunning).await;
            }
            ExecutorEvent::LaunchGroup(group) => {
                for task in &group.tasks {
                    log.line(&format!("LAUNCH {}", task.task_id.value));
                    live.insert(task.task_id.value.clone());
                    child_report(&ex, &log, &task.task_id, v1::TaskState::TaskRunning).await;
                }
            }
            ExecutorEvent::Kill { task_id, .. } => {
                log.line(&format!("KILL {}", task_id.value));
                if live.remove(&task_id.value) {
                    child_report(&ex, &log, &task_id, v1::TaskState::TaskKilled).await;
                } else {
                    log.line(&format!("KILL of unknown task {}", task_id.value));
                }
            }
            ExecutorEvent::Acknowledged { task_id, .. } => {
                log.line(&format!("ACKNOWLEDGED {}", task_id.value));
            }
            ExecutorEvent::Message(data) => log.line(&format!("MESSAGE {} bytes", data.len())),
            ExecutorEvent::Error(message) => log.line(&format!("ERROR {message}")),
            ExecutorEvent::Disconnected => log.line("DISCONNECTED"),
            ExecutorEvent::Shutdown(reason) => {
                log.line(&format!("SHUTDOWN {reason}"));
                for task in std::mem::take(&mut live) {
                    let task_id = v1::TaskId { value: task };
                    child_report(&ex, &log, &task_id, v1::TaskState::TaskKilled).await;
                }
                let wait = (grace / 2).min(Duration::from_secs(3));
                let acked = ex.wait_acknowledged(wait).await;
                log.line(&format!("EXIT all updates acknowledged: {acked}"));
                return 0;
            }
            ExecutorEvent::RecoveryTimeout => {
                log.line("RECOVERY_TIMEOUT");
                return 1;
            }
        }
    }
    log.line("EVENTS CLOSED");
    1
}

// ---------------------------------------------------------------------------
// The cluster (test side)
// ---------------------------------------------------------------------------

/// A running in-process dev-agent.
struct Agent {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Agent {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the agent stops in time")
            .expect("the agent task does not panic")
            .expect("the agent stops cleanly");
    }
}

/// A dev-master, a dev-agent and everything to clean up after them. On drop
/// (a failed test) it cancels both and kills executor processes that carry
/// its token.
struct Cluster {
    master: String,
    app: Arc<km::devcluster::master::App>,
    master_stop: CancellationToken,
    agent: Option<Agent>,
    work: tempfile::TempDir,
    cgroups_root: String,
    agent_port: u16,
    /// The value of [`CHILD_VAR`] in this test's executors.
    token: String,
    /// Set by [`Cluster::stop`]; otherwise dropping cleans up.
    stopped: bool,
}

/// With `RUST_LOG` set, the in-process master's and agent's logs go to the
/// tests' captured output (shown for failing tests).
fn test_logging() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

impl Cluster {
    async fn start() -> Cluster {
        test_logging();
        let master_flags = master_args(&["--port", "0", "--allocation-interval", "100ms"]);
        let master_stop = CancellationToken::new();
        let running = km::devcluster::master::start(master_flags, master_stop.clone())
            .await
            .expect("dev-master starts");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut cluster = Cluster {
            master: format!("127.0.0.1:{}", running.addr.port()),
            app: running.app.clone(),
            master_stop,
            agent: None,
            work: tempfile::tempdir().unwrap(),
            cgroups_root: format!("km-executor-test-{id}"),
            agent_port: free_port(),
            token: id,
            stopped: false,
        };
        cluster.start_agent();
        cluster
    }

    /// Starts a dev-agent (again) with the same work dir, port and cgroups.
    fn start_agent(&mut self) {
        assert!(self.agent.is_none(), "an agent is already running");
        let args = agent_args(&[
            "--master",
            &self.master,
            "--port",
            &self.agent_port.to_string(),
            "--work-dir",
            self.work.path().to_str().unwrap(),
            "--cgroups-root",
            &self.cgroups_root,
            "--hostname",
            HOSTNAME,
            "--resources",
            "cpus:2;mem:1024;disk:1000;ports:[31000-31100]",
            "--executor-shutdown-grace-period",
            "3secs",
            "--executor-registration-timeout",
            "15secs",
            // Also MESOS_SUBSCRIPTION_BACKOFF_MAX.
            "--executor-reregistration-timeout",
            "2secs",
            // MESOS_RECOVERY_TIMEOUT: an orphaned executor gives up by itself.
            "--recovery-timeout",
            "15secs",
        ]);
        let stop = CancellationToken::new();
        let task = tokio::spawn(km::devcluster::agent::run(args, stop.clone()));
        self.agent = Some(Agent { stop, task });
    }

    async fn stop_agent(&mut self) {
        self.agent.take().expect("an agent runs").stop().await;
    }

    /// The stream id of the agent's connection to the master, if connected.
    fn agent_connection(&self) -> Option<String> {
        let master = self.app.lock();
        master
            .agents
            .values()
            .find(|a| a.info.hostname == HOSTNAME)
            .and_then(|a| a.conn.as_ref().map(|c| c.stream_id.clone()))
    }

    /// The sandbox of `executor`'s (only) run.
    fn sandbox(&self, executor: &str) -> PathBuf {
        sandboxes(self.work.path())
            .into_iter()
            .find(|(id, _)| id == executor)
            .map(|(_, path)| path)
            .unwrap_or_else(|| {
                panic!(
                    "no sandbox for {executor} under {}",
                    self.work.path().display()
                )
            })
    }

    /// Stops the agent (if running) and the master and removes the root
    /// cgroups; the agent removes container cgroups in the background, so
    /// this retries.
    async fn stop(mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop().await;
        }
        self.master_stop.cancel();
        for ctl in ["cpu", "memory"] {
            let root = format!("/sys/fs/cgroup/{ctl}/{}", self.cgroups_root);
            eventually("the root cgroup can be removed", || {
                !Path::new(&root).exists() || std::fs::remove_dir(&root).is_ok()
            })
            .await;
        }
        let left = token_processes(&self.token);
        assert!(left.is_empty(), "executor processes left: {left:?}");
        self.stopped = true;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(agent) = &self.agent {
            agent.stop.cancel();
        }
        self.master_stop.cancel();
        if self.stopped {
            return;
        }
        // The agent may still be starting an executor (its tasks run on until
        // the test's runtime goes), so look for a while.
        let mut quiet = 0;
        for _ in 0..40 {
            let left = token_processes(&self.token);
            if left.is_empty() {
                quiet += 1;
                if quiet >= 10 {
                    break;
                }
            } else {
                quiet = 0;
                eprintln!("killing leftover executor processes {left:?}");
                for pid in &left {
                    process::signal_group(*pid, Signal::Kill);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Best effort: cgroups a failed test left behind (after a successful
        // one there are none). A dying process may still hold one briefly.
        let roots = ["cpu", "memory"]
            .map(|ctl| PathBuf::from(format!("/sys/fs/cgroup/{ctl}/{}", self.cgroups_root)));
        for _ in 0..20 {
            for root in &roots {
                if let Ok(dirs) = std::fs::read_dir(root) {
                    for d in dirs.flatten().filter(|d| d.path().is_dir()) {
                        let _ = std::fs::remove_dir(d.path());
                    }
                }
                let _ = std::fs::remove_dir(root);
            }
            if roots.iter().all(|r| !r.exists()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `(executor id, run directory)` of every executor run under `work`.
fn sandboxes(work: &Path) -> Vec<(String, PathBuf)> {
    let dirs = |p: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .map(|it| it.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for agent in dirs(work.join("slaves")) {
        for fw in dirs(agent.join("frameworks")) {
            for exec in dirs(fw.join("executors")) {
                let id = exec.file_name().unwrap().to_string_lossy().into_owned();
                for run in dirs(exec.join("runs")) {
                    if run.is_dir() && !run.ends_with("latest") {
                        out.push((id.clone(), run));
                    }
                }
            }
        }
    }
    out
}

/// What the executors under `work` left behind: their sandboxes, event logs
/// and the end of their stderr.
fn diagnostics(work: &Path) -> String {
    let mut out = format!("work dir {}", work.display());
    for (id, run) in sandboxes(work) {
        let events = std::fs::read_to_string(run.join(EVENTS_LOG)).unwrap_or_default();
        let stderr = std::fs::read_to_string(run.join("stderr")).unwrap_or_default();
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        out.push_str(&format!(
            "\n--- executor {id}, sandbox {}\n--- {EVENTS_LOG}:\n{events}--- {} (last 60 lines):\n{tail}",
            run.display(),
            run.join("stderr").display(),
        ));
    }
    out
}

/// Pids of live processes whose environment holds `CHILD_VAR=token`.
fn token_processes(token: &str) -> Vec<u32> {
    let needle = format!("{CHILD_VAR}={token}");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
                && process::is_running(*pid, None)
        })
        .collect()
}

/// The executor's pid and start time, from its pid file.
async fn executor_pid(sandbox: &Path, work: &Path) -> (u32, u64) {
    let file = sandbox.join(PID_FILE);
    let mut found = None;
    eventually_or("the executor writes its pid file", work, || {
        found = std::fs::read_to_string(&file).ok().and_then(|s| {
            let (pid, start) = s.trim().split_once(' ')?;
            Some((pid.parse().ok()?, start.parse().ok()?))
        });
        found.is_some()
    })
    .await;
    found.unwrap()
}

fn event_lines(sandbox: &Path) -> Vec<String> {
    std::fs::read_to_string(sandbox.join(EVENTS_LOG))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn count(lines: &[String], line: &str) -> usize {
    lines.iter().filter(|l| *l == line).count()
}

/// Waits until the agent has taken note of the executor's process (its
/// checkpoint has the pid) and the executor is subscribed and stays so for
/// a moment; returns how many SUBSCRIBED it has logged by then.
///
/// Written for a dev-agent race, since fixed: an executor whose SUBSCRIBE
/// the agent handled before the start of its process lost that
/// subscription (`Agent::launched` reset the phase). Waiting for the
/// checkpointed pid keeps the tests independent of that ordering.
async fn settle(work: &Path, sandbox: &Path, pid: u32) -> usize {
    let layout = Layout::new(work);
    let container = sandbox.file_name().unwrap().to_str().unwrap().to_owned();
    eventually_or("the agent checkpoints the executor's pid", work, || {
        checkpoint::load_executors(&layout)
            .into_iter()
            .flatten()
            .any(|cp| cp.container_id == container && cp.pid == Some(pid))
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = None;
    loop {
        let lines = event_lines(sandbox);
        let subscribed = lines
            .iter()
            .rev()
            .find(|l| *l == "SUBSCRIBED" || *l == "DISCONNECTED")
            .is_some_and(|l| l == "SUBSCRIBED");
        let now = subscribed.then(|| count(&lines, "SUBSCRIBED"));
        if let Some(n) = now
            && last == now
        {
            return n;
        }
        last = now;
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: the executor stays subscribed\n{}",
            diagnostics(work)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`eventually`], with the executors' diagnostics in the failure message.
async fn eventually_or(what: &str, work: &Path, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {what}\n{}",
            diagnostics(work)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// The framework (test side)
// ---------------------------------------------------------------------------

/// A framework on km's scheduler client, driven step by step.
struct Framework {
    sched: Scheduler,
    events: mpsc::Receiver<SchedulerEvent>,
    _masters: watch::Sender<Option<MasterAddress>>,
    /// Every task status seen, in order.
    seen: Vec<v1::TaskStatus>,
    /// Offers received and not yet used or declined.
    held: Vec<v1::Offer>,
    /// For failure messages.
    work: PathBuf,
}

impl Framework {
    async fn subscribe(cluster: &Cluster, checkpoint: bool) -> Framework {
        let info = v1::FrameworkInfo {
            user: "root".into(),
            name: "km executor client test".into(),
            checkpoint: Some(checkpoint),
            failover_timeout: Some(60.0),
            ..Default::default()
        };
        let (tx, rx) = watch::channel(Some(MasterAddress {
            base: format!("http://{}", cluster.master),
            info: None,
        }));
        let (sched, events) = scheduler::start(SchedulerConfig::new(info), rx).unwrap();
        let mut fw = Framework {
            sched,
            events,
            _masters: tx,
            seen: Vec::new(),
            held: Vec::new(),
            work: cluster.work.path().to_owned(),
        };
        fw.next("SUBSCRIBED", |e| {
            matches!(e, SchedulerEvent::Subscribed { .. }).then_some(())
        })
        .await;
        fw
    }

    /// Waits (at most [`WAIT`]) for the first event `f` picks, acknowledging
    /// every update that has a uuid.
    async fn next<T>(&mut self, what: &str, mut f: impl FnMut(&SchedulerEvent) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ev = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) => ev,
                Ok(None) => panic!("the scheduler stopped while waiting for {what}"),
                Err(_) => panic!(
                    "timed out waiting for {what}; updates so far: {:?}\n{}",
                    self.seen
                        .iter()
                        .map(|s| (s.task_id.value.as_str(), state(s).as_str_name()))
                        .collect::<Vec<_>>(),
                    diagnostics(&self.work)
                ),
            };
            if let SchedulerEvent::Event(e) = &ev
                && let Some(u) = &e.update
            {
                self.seen.push(u.status.clone());
                self.sched
                    .acknowledge(&u.status)
                    .await
                    .expect("the update is acknowledged");
            }
            if let SchedulerEvent::Event(e) = &ev {
                if let Some(o) = &e.offers {
                    self.held.extend(o.offers.iter().cloned());
                }
                if let Some(r) = &e.rescind {
                    self.held.retain(|o| o.id != r.offer_id);
                }
            }
            if let SchedulerEvent::Subscribed { .. } = &ev {
                self.held.clear();
            }
            if let SchedulerEvent::Failed { message } = &ev {
                panic!("the framework failed: {message}");
            }
            if let Some(t) = f(&ev) {
                return t;
            }
        }
    }

    /// An offer from the dev-agent with at least `cpus`. Offers held that
    /// are too small are declined (without a filter, so that their resources
    /// come back together with those freed since).
    async fn offer(&mut self, cpus: f64) -> v1::Offer {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let offered = |o: &v1::Offer| -> f64 {
                o.resources
                    .iter()
                    .filter(|r| r.name == "cpus")
                    .filter_map(|r| r.scalar.map(|s| s.value))
                    .sum()
            };
            if let Some(i) = self
                .held
                .iter()
                .position(|o| o.hostname == HOSTNAME && offered(o) >= cpus - 1e-9)
            {
                return self.held.remove(i);
            }
            let small: Vec<v1::OfferId> = self.held.drain(..).map(|o| o.id).collect();
            if !small.is_empty() {
                let filters = v1::Filters {
                    refuse_seconds: Some(0.0),
                };
                self.sched.decline(small, Some(filters)).await.unwrap();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no offer of {cpus} cpus in time"
            );
            self.next(
                &format!("an offer of {cpus} cpus from the dev-agent"),
                |e| match e {
                    SchedulerEvent::Event(e) => e.offers.as_ref().map(|_| ()),
                    _ => None,
                },
            )
            .await;
        }
    }

    /// Launches `tasks` on one offer.
    async fn launch(&mut self, tasks: Vec<v1::TaskInfo>) -> v1::AgentId {
        // What the tasks need, counting the executor once per task (as the
        // dev-master does within one LAUNCH).
        let cpus = |rs: &[v1::Resource]| -> f64 {
            rs.iter()
                .filter(|r| r.name == "cpus")
                .filter_map(|r| r.scalar.map(|s| s.value))
                .sum()
        };
        let need = tasks
            .iter()
            .map(|t| cpus(&t.resources) + t.executor.as_ref().map_or(0.0, |e| cpus(&e.resources)))
            .sum();
        let offer = self.offer(need).await;
        let allocation = offer.resources[0].allocation_info.clone();
        let tasks = tasks
            .into_iter()
            .map(|t| v1::TaskInfo {
                agent_id: offer.agent_id.clone(),
                resources: t
                    .resources
                    .iter()
                    .map(|r| v1::Resource {
                        allocation_info: allocation.clone(),
                        ..r.clone()
                    })
                    .collect(),
                ..t
            })
            .collect();
        let op = v1::offer::Operation {
            r#type: Some(v1::offer::operation::Type::Launch as i32),
            launch: Some(v1::offer::operation::Launch { task_infos: tasks }),
            ..Default::default()
        };
        self.sched
            .accept(vec![offer.id], vec![op], None)
            .await
            .unwrap();
        offer.agent_id
    }

    /// The next update of `task`.
    async fn update(&mut self, task: &str) -> v1::TaskStatus {
        self.next(&format!("an update of {task}"), |e| match e {
            SchedulerEvent::Event(e) => e
                .update
                .as_ref()
                .map(|u| u.status.clone())
                .filter(|s| s.task_id.value == task),
            _ => None,
        })
        .await
    }

    /// Waits until every task of `tasks` is RUNNING; a terminal state first
    /// is a failure.
    async fn running(&mut self, tasks: &[&str]) {
        let mut waiting: BTreeSet<&str> = tasks.iter().copied().collect();
        while !waiting.is_empty() {
            let s = self
                .next(&format!("TASK_RUNNING of {waiting:?}"), |e| match e {
                    SchedulerEvent::Event(e) => e
                        .update
                        .as_ref()
                        .map(|u| u.status.clone())
                        .filter(|s| waiting.contains(s.task_id.value.as_str())),
                    _ => None,
                })
                .await;
            let st = state(&s);
            assert!(
                matches!(
                    st,
                    v1::TaskState::TaskRunning
                        | v1::TaskState::TaskStaging
                        | v1::TaskState::TaskStarting
                ),
                "{} went {} before running: {s:?}\n{}",
                s.task_id.value,
                st.as_str_name(),
                diagnostics(&self.work)
            );
            if st == v1::TaskState::TaskRunning {
                waiting.remove(s.task_id.value.as_str());
            }
        }
    }

    async fn kill(&self, task: &str) {
        let task_id = v1::TaskId { value: task.into() };
        self.sched.kill(task_id, None, None).await.unwrap();
    }
}

fn state(s: &v1::TaskStatus) -> v1::TaskState {
    v1::TaskState::try_from(s.state).unwrap_or(v1::TaskState::TaskUnknown)
}

fn resources(cpus: f64, mem: f64) -> Vec<v1::Resource> {
    vec![
        km::resources::scalar("cpus", cpus),
        km::resources::scalar("mem", mem),
    ]
}

/// A CUSTOM executor that is this test binary running [`km_executor_child`].
fn executor_info(id: &str, token: &str) -> v1::ExecutorInfo {
    let exe = std::env::current_exe()
        .expect("the test binary's path")
        .to_str()
        .expect("a UTF-8 path")
        .to_owned();
    v1::ExecutorInfo {
        r#type: Some(v1::executor_info::Type::Custom as i32),
        executor_id: v1::ExecutorId { value: id.into() },
        name: Some("km executor client under test".into()),
        command: Some(v1::CommandInfo {
            value: Some(exe.clone()),
            shell: Some(false),
            arguments: vec![
                exe,
                "--exact".into(),
                CHILD_TEST.into(),
                "--nocapture".into(),
                "--test-threads=1".into(),
            ],
            environment: Some(v1::Environment {
                variables: vec![v1::environment::Variable {
                    name: CHILD_VAR.into(),
                    r#type: Some(v1::environment::variable::Type::Value as i32),
                    value: Some(token.into()),
                    secret: None,
                }],
            }),
            ..Default::default()
        }),
        resources: resources(0.1, 32.0),
        ..Default::default()
    }
}

fn task(id: &str, executor: &v1::ExecutorInfo) -> v1::TaskInfo {
    v1::TaskInfo {
        name: id.into(),
        task_id: v1::TaskId { value: id.into() },
        resources: resources(0.25, 64.0),
        executor: Some(executor.clone()),
        ..Default::default()
    }
}

/// Waits for the FAILURE event of `executor`.
async fn executor_failure(fw: &mut Framework, executor: &str) -> event::Failure {
    fw.next(&format!("FAILURE of executor {executor}"), |e| match e {
        SchedulerEvent::Event(e) if e.r#type == Some(event::Type::Failure as i32) => e
            .failure
            .clone()
            .filter(|f| f.executor_id.as_ref().is_some_and(|i| i.value == executor)),
        _ => None,
    })
    .await
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn km_executor_runs_tasks_under_dev_agent() {
    let began = std::time::Instant::now();
    let cluster = Cluster::start().await;
    let work = cluster.work.path().to_owned();
    let mut fw = Framework::subscribe(&cluster, true).await;
    let executor = executor_info("km-exec-a", &cluster.token);

    // Two tasks on one offer, one executor.
    let agent_id = fw
        .launch(vec![task("a-1", &executor), task("a-2", &executor)])
        .await;
    fw.running(&["a-1", "a-2"]).await;
    for s in fw
        .seen
        .iter()
        .filter(|s| state(s) == v1::TaskState::TaskRunning)
    {
        assert_eq!(s.source, Some(v1::task_status::Source::Executor as i32));
        assert_eq!(s.executor_id.as_ref().unwrap().value, "km-exec-a");
        assert_eq!(s.uuid.as_ref().map(Vec::len), Some(16), "{s:?}");
        assert_eq!(s.agent_id.as_ref(), Some(&agent_id));
    }
    let sandbox = cluster.sandbox("km-exec-a");
    let (pid, start) = executor_pid(&sandbox, &work).await;
    assert!(process::is_running(pid, Some(start)));
    assert_eq!(
        token_processes(&cluster.token),
        [pid],
        "one executor process for both tasks"
    );
    settle(&work, &sandbox, pid).await;

    // KILL one task: the executor answers TASK_KILLED.
    fw.kill("a-1").await;
    let killed = fw.update("a-1").await;
    assert_eq!(
        state(&killed),
        v1::TaskState::TaskKilled,
        "{killed:?}\n{}",
        diagnostics(&work)
    );
    assert_eq!(
        killed.source,
        Some(v1::task_status::Source::Executor as i32)
    );

    // SHUTDOWN the executor: the other task ends, the framework hears of the
    // executor's end, the process is gone.
    fw.sched
        .shutdown(executor.executor_id.clone(), agent_id.clone())
        .await
        .unwrap();
    let mut last = None;
    let mut failure = None;
    while last.is_none() || failure.is_none() {
        let ev = fw
            .next(
                "a-2's terminal update and the executor's FAILURE",
                |e| match e {
                    SchedulerEvent::Event(e) => {
                        if let Some(u) = &e.update
                            && u.status.task_id.value == "a-2"
                        {
                            return Some(Err(u.status.clone()));
                        }
                        if e.r#type == Some(event::Type::Failure as i32) {
                            return e.failure.clone().map(Ok);
                        }
                        None
                    }
                    _ => None,
                },
            )
            .await;
        match ev {
            Err(status) => {
                let st = state(&status);
                assert!(
                    matches!(st, v1::TaskState::TaskKilled | v1::TaskState::TaskFailed),
                    "a-2 after SHUTDOWN: {status:?}\n{}",
                    diagnostics(&work)
                );
                assert!(last.is_none(), "a second terminal update: {status:?}");
                last = Some(status);
            }
            Ok(f) => failure = Some(f),
        }
    }
    // The executor reports TASK_KILLED before it exits; had that update
    // been lost, the agent would report TASK_FAILED for it.
    let last = last.unwrap();
    let killed_by_executor = state(&last) == v1::TaskState::TaskKilled;
    if killed_by_executor {
        assert_eq!(last.source, Some(v1::task_status::Source::Executor as i32));
    } else {
        eprintln!("note: a-2 ended {last:?} (from the agent)");
    }
    let failure = failure.unwrap();
    assert_eq!(
        failure.executor_id.as_ref().map(|e| e.value.as_str()),
        Some("km-exec-a")
    );
    assert_eq!(failure.agent_id.as_ref(), Some(&agent_id));
    assert_eq!(
        failure.status,
        Some(0),
        "the executor exits 0 after SHUTDOWN"
    );
    eventually_or("the executor process is gone", &work, || {
        !process::is_running(pid, Some(start))
    })
    .await;

    let lines = event_lines(&sandbox);
    for want in [
        "LAUNCH a-1",
        "LAUNCH a-2",
        "KILL a-1",
        "UPDATE a-1 TASK_KILLED",
    ] {
        assert_eq!(count(&lines, want), 1, "{want}\n{}", diagnostics(&work));
    }
    // Exactly one SUBSCRIBED, but for the dev-agent race described at
    // `settle`: then one DISCONNECTED and a second SUBSCRIBED.
    let subscribed = count(&lines, "SUBSCRIBED");
    assert!(
        (1..=2).contains(&subscribed) && count(&lines, "DISCONNECTED") == subscribed - 1,
        "{}",
        diagnostics(&work)
    );
    if subscribed > 1 {
        eprintln!(
            "note: the executor was disconnected once right after subscribing (dev-agent race)"
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with("SHUTDOWN ")),
        "{}",
        diagnostics(&work)
    );
    if killed_by_executor {
        assert_eq!(count(&lines, "UPDATE a-2 TASK_KILLED"), 1);
        assert_eq!(
            lines.last().map(String::as_str),
            Some("EXIT all updates acknowledged: true"),
            "{}",
            diagnostics(&work)
        );
    }
    assert!(
        fw.seen
            .iter()
            .all(|s| !matches!(state(s), v1::TaskState::TaskLost | v1::TaskState::TaskGone)),
        "{:?}",
        fw.seen
    );

    fw.sched.stop();
    cluster.stop().await;
    eprintln!(
        "km_executor_runs_tasks_under_dev_agent took {:?}",
        began.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn km_executor_survives_a_dev_agent_restart() {
    let began = std::time::Instant::now();
    let mut cluster = Cluster::start().await;
    let work = cluster.work.path().to_owned();
    let mut fw = Framework::subscribe(&cluster, true).await;
    let executor = executor_info("km-exec-b", &cluster.token);

    let agent_id = fw.launch(vec![task("b-1", &executor)]).await;
    fw.running(&["b-1"]).await;
    let sandbox = cluster.sandbox("km-exec-b");
    let (pid, start) = executor_pid(&sandbox, &work).await;
    let subscribed = settle(&work, &sandbox, pid).await;
    let disconnected = count(&event_lines(&sandbox), "DISCONNECTED");
    let before = cluster
        .agent_connection()
        .expect("the agent is connected to the master");

    // The agent stops; the executor of a checkpointing framework keeps
    // running and notices that its subscription is gone.
    cluster.stop_agent().await;
    assert!(
        process::is_running(pid, Some(start)),
        "the executor outlives the agent\n{}",
        diagnostics(&work)
    );
    eventually_or("the executor notices the disconnection", &work, || {
        count(&event_lines(&sandbox), "DISCONNECTED") > disconnected
    })
    .await;

    // A new agent on the same work dir, port and cgroups: the executor
    // subscribes again within its recovery timeout, and the agent is back
    // with the master.
    cluster.start_agent();
    eventually_or("the executor subscribes again", &work, || {
        count(&event_lines(&sandbox), "SUBSCRIBED") > subscribed
    })
    .await;
    eventually_or("the agent registers with the master again", &work, || {
        cluster.agent_connection().is_some_and(|now| now != before)
    })
    .await;
    assert!(process::is_running(pid, Some(start)), "the same process");

    // Nothing was lost: reconciliation reports the task RUNNING.
    fw.sched
        .reconcile(vec![(
            v1::TaskId {
                value: "b-1".into(),
            },
            Some(agent_id.clone()),
        )])
        .await
        .unwrap();
    let reconciled = fw
        .next("the reconciliation answer for b-1", |e| match e {
            SchedulerEvent::Event(e) => e.update.as_ref().map(|u| u.status.clone()).filter(|s| {
                s.task_id.value == "b-1"
                    && s.reason == Some(v1::task_status::Reason::Reconciliation as i32)
            }),
            _ => None,
        })
        .await;
    assert_eq!(
        state(&reconciled),
        v1::TaskState::TaskRunning,
        "{reconciled:?}"
    );
    assert_eq!(reconciled.agent_id.as_ref(), Some(&agent_id));

    // A KILL reaches the resubscribed executor.
    fw.kill("b-1").await;
    let killed = fw.update("b-1").await;
    assert_eq!(
        state(&killed),
        v1::TaskState::TaskKilled,
        "{killed:?}\n{}",
        diagnostics(&work)
    );
    assert_eq!(
        killed.source,
        Some(v1::task_status::Source::Executor as i32)
    );
    let lines = event_lines(&sandbox);
    assert_eq!(count(&lines, "KILL b-1"), 1, "{}", diagnostics(&work));
    assert_eq!(
        count(&lines, "SUBSCRIBED"),
        subscribed + 1,
        "one resubscription, to the new agent\n{}",
        diagnostics(&work)
    );
    assert!(
        fw.seen
            .iter()
            .filter(|s| s.task_id.value == "b-1")
            .all(|s| matches!(
                state(s),
                v1::TaskState::TaskRunning | v1::TaskState::TaskKilled
            )),
        "b-1 went only RUNNING and KILLED: {:?}",
        fw.seen
    );

    // Clean up: SHUTDOWN ends the (adopted) executor process.
    fw.sched
        .shutdown(executor.executor_id.clone(), agent_id.clone())
        .await
        .unwrap();
    let failure = executor_failure(&mut fw, "km-exec-b").await;
    assert_eq!(failure.agent_id.as_ref(), Some(&agent_id));
    eventually_or("the executor process is gone", &work, || {
        !process::is_running(pid, Some(start))
    })
    .await;
    assert!(
        event_lines(&sandbox)
            .iter()
            .any(|l| l.starts_with("SHUTDOWN ")),
        "{}",
        diagnostics(&work)
    );

    fw.sched.stop();
    cluster.stop().await;
    eprintln!(
        "km_executor_survives_a_dev_agent_restart took {:?}",
        began.elapsed()
    );
}

/// Guards against the dev-agent race described at [`settle`]: executors
/// disconnected right after their first SUBSCRIBE. (A checkpointing
/// executor subscribes again, as here; one of a framework that does not
/// checkpoint takes the disconnection for the end of its agent and shuts
/// down, failing its tasks.) The race depends on timing, so this launches
/// several rounds of executors and fails at the first disconnected one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn km_executor_is_not_disconnected_right_after_subscribing() {
    let cluster = Cluster::start().await;
    let work = cluster.work.path().to_owned();
    let mut fw = Framework::subscribe(&cluster, true).await;
    for round in 0..12 {
        // Three executors of two tasks each, as in the first test (where
        // the race shows more often than with one task per executor).
        let executors: Vec<v1::ExecutorInfo> = (0..3)
            .map(|i| executor_info(&format!("km-exec-r{round}-{i}"), &cluster.token))
            .collect();
        let ids: Vec<String> = (0..3)
            .flat_map(|i| [format!("r{round}-{i}a"), format!("r{round}-{i}b")])
            .collect();
        let tasks = ids
            .iter()
            .enumerate()
            .map(|(n, id)| v1::TaskInfo {
                resources: resources(0.2, 32.0),
                ..task(id, &executors[n / 2])
            })
            .collect();
        let agent_id = fw.launch(tasks).await;
        fw.running(&ids.iter().map(String::as_str).collect::<Vec<_>>())
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        for e in &executors {
            let run = cluster.sandbox(&e.executor_id.value);
            let lines = event_lines(&run);
            assert_eq!(
                count(&lines, "DISCONNECTED"),
                0,
                "round {round}\n{}",
                diagnostics(&work)
            );
        }

        for e in &executors {
            fw.sched
                .shutdown(e.executor_id.clone(), agent_id.clone())
                .await
                .unwrap();
        }
        let mut failed = BTreeSet::new();
        while failed.len() < executors.len() {
            let id = fw
                .next("the executors' FAILURE events", |e| match e {
                    SchedulerEvent::Event(e) if e.r#type == Some(event::Type::Failure as i32) => e
                        .failure
                        .as_ref()
                        .and_then(|f| f.executor_id.as_ref())
                        .map(|i| i.value.clone()),
                    _ => None,
                })
                .await;
            failed.insert(id);
        }
        eventually_or("the executor processes are gone", &work, || {
            token_processes(&cluster.token).is_empty()
        })
        .await;
    }
    fw.sched.stop();
    cluster.stop().await;
}
