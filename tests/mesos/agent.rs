//! km dev-agent for real: in-process dev-master and dev-agent, a framework
//! through km's scheduler client, real processes, real cgroups (the tests run
//! as root; the cgroup checks are skipped with a note where cgroups are not
//! writable).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use km::mesos::detector::MasterAddress;
use km::mesos::proto::v1;
use km::mesos::proto::v1::scheduler::event;
use km::mesos::scheduler::{self, Scheduler, SchedulerConfig, SchedulerEvent};

use super::support::{agent_args, free_port, master_args};

const WAIT: Duration = Duration::from_secs(30);

/// A running in-process agent.
struct Agent {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Agent {
    fn start(master: &str, work: &Path, port: u16, cgroups_root: &str) -> Agent {
        let args = agent_args(&[
            "--master",
            master,
            "--port",
            &port.to_string(),
            "--work-dir",
            work.to_str().unwrap(),
            "--cgroups-root",
            cgroups_root,
            "--hostname",
            "agent-under-test",
            "--resources",
            "cpus:2;mem:1024;disk:1000;ports:[31000-31100]",
            "--executor-shutdown-grace-period",
            "2secs",
        ]);
        let stop = CancellationToken::new();
        let task = tokio::spawn(km::devcluster::agent::run(args, stop.clone()));
        Agent { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the agent stops")
            .expect("the agent task does not panic")
            .expect("the agent stops cleanly");
    }
}

struct Cluster {
    master: String,
    master_stop: CancellationToken,
    work: tempfile::TempDir,
    cgroups_root: String,
    agent_port: u16,
}

impl Cluster {
    async fn start() -> (Cluster, Agent) {
        let master_flags = master_args(&["--port", "0", "--allocation-interval", "100ms"]);
        let master_stop = CancellationToken::new();
        let running = km::devcluster::master::start(master_flags, master_stop.clone())
            .await
            .expect("dev-master starts");
        let cluster = Cluster {
            master: format!("127.0.0.1:{}", running.addr.port()),
            master_stop,
            work: tempfile::tempdir().unwrap(),
            cgroups_root: format!("km-agent-test-{}", uuid::Uuid::new_v4().simple()),
            agent_port: free_port(),
        };
        let agent = cluster.agent();
        (cluster, agent)
    }

    fn agent(&self) -> Agent {
        Agent::start(
            &self.master,
            self.work.path(),
            self.agent_port,
            &self.cgroups_root,
        )
    }

    /// `cpu.shares` and `memory.limit_in_bytes` of a container, if cgroups
    /// are in use on this machine.
    fn limits(&self, container: &str) -> Option<(u64, u64)> {
        let read = |ctl: &str, file: &str| {
            std::fs::read_to_string(format!(
                "/sys/fs/cgroup/{ctl}/{}/{container}/{file}",
                self.cgroups_root
            ))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        };
        Some((
            read("cpu", "cpu.shares")?,
            read("memory", "memory.limit_in_bytes")?,
        ))
    }

    fn cgroups_in_use(&self) -> bool {
        Path::new(&format!("/sys/fs/cgroup/cpu/{}", self.cgroups_root)).is_dir()
    }

    /// The sandbox of `executor`'s (only) run.
    fn sandbox(&self, executor: &str) -> PathBuf {
        let slaves = self.work.path().join("slaves");
        for agent in std::fs::read_dir(&slaves).unwrap().flatten() {
            for fw in std::fs::read_dir(agent.path().join("frameworks"))
                .unwrap()
                .flatten()
            {
                let runs = fw.path().join("executors").join(executor).join("runs");
                if let Ok(mut it) = std::fs::read_dir(&runs)
                    && let Some(Ok(run)) = it.next()
                {
                    return run.path();
                }
            }
        }
        panic!("no sandbox for {executor} under {}", slaves.display());
    }

    /// Stops the master and removes the (by now empty) root cgroups; the
    /// agent removes container cgroups in the background, so this retries.
    async fn stop(self) {
        self.master_stop.cancel();
        for ctl in ["cpu", "memory"] {
            let root = format!("/sys/fs/cgroup/{ctl}/{}", self.cgroups_root);
            eventually("the root cgroup can be removed", || {
                !Path::new(&root).exists() || std::fs::remove_dir(&root).is_ok()
            })
            .await;
        }
    }
}

/// A framework driven step by step.
struct Framework {
    sched: Scheduler,
    events: mpsc::Receiver<SchedulerEvent>,
    _masters: watch::Sender<Option<MasterAddress>>,
}

impl Framework {
    async fn subscribe(master: &str, checkpoint: bool) -> Framework {
        let info = v1::FrameworkInfo {
            user: "root".into(),
            name: "dev-agent test".into(),
            checkpoint: Some(checkpoint),
            failover_timeout: Some(600.0),
            ..Default::default()
        };
        let (tx, rx) = watch::channel(Some(MasterAddress {
            base: format!("http://{master}"),
            info: None,
        }));
        let (sched, events) = scheduler::start(SchedulerConfig::new(info), rx).unwrap();
        let mut fw = Framework {
            sched,
            events,
            _masters: tx,
        };
        fw.next(|e| matches!(e, SchedulerEvent::Subscribed { .. }).then_some(()))
            .await;
        fw
    }

    /// Waits for the first event `f` picks, acknowledging every update.
    async fn next<T>(&mut self, mut f: impl FnMut(&SchedulerEvent) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .expect("the expected event arrives in time")
                .expect("the scheduler runs");
            if let SchedulerEvent::Event(e) = &ev
                && let Some(u) = &e.update
            {
                self.sched.acknowledge(&u.status).await.unwrap();
            }
            if let Some(t) = f(&ev) {
                return t;
            }
        }
    }

    async fn offer(&mut self) -> v1::Offer {
        self.next(|e| match e {
            SchedulerEvent::Event(e) => e
                .offers
                .as_ref()
                .and_then(|o| o.offers.iter().find(|o| o.hostname == "agent-under-test"))
                .cloned(),
            _ => None,
        })
        .await
    }

    /// The next update of `task`.
    async fn update(&mut self, task: &str) -> v1::TaskStatus {
        self.next(|e| match e {
            SchedulerEvent::Event(e) => e
                .update
                .as_ref()
                .map(|u| u.status.clone())
                .filter(|s| s.task_id.value == task),
            _ => None,
        })
        .await
    }

    async fn launch(&mut self, task: v1::TaskInfo) {
        let offer = self.offer().await;
        let task = v1::TaskInfo {
            agent_id: offer.agent_id.clone(),
            resources: task
                .resources
                .iter()
                .map(|r| v1::Resource {
                    allocation_info: offer.resources[0].allocation_info.clone(),
                    ..r.clone()
                })
                .collect(),
            ..task
        };
        let op = v1::offer::Operation {
            r#type: Some(v1::offer::operation::Type::Launch as i32),
            launch: Some(v1::offer::operation::Launch {
                task_infos: vec![task],
            }),
            ..Default::default()
        };
        self.sched
            .accept(vec![offer.id], vec![op], None)
            .await
            .unwrap();
    }
}

fn state(s: &v1::TaskStatus) -> v1::TaskState {
    v1::TaskState::try_from(s.state).unwrap()
}

fn resources(cpus: f64, mem: f64) -> Vec<v1::Resource> {
    vec![
        km::resources::scalar("cpus", cpus),
        km::resources::scalar("mem", mem),
    ]
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_task_runs_in_its_sandbox_and_cgroup_and_reports_its_states() {
    let (cluster, agent) = Cluster::start().await;
    let mut fw = Framework::subscribe(&cluster.master, false).await;
    let task = v1::TaskInfo {
        name: "hello".into(),
        task_id: v1::TaskId {
            value: "hello-1".into(),
        },
        resources: resources(0.5, 64.0),
        command: Some(v1::CommandInfo {
            value: Some("env > env.txt; echo hi > out; sleep 1".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    fw.launch(task).await;

    let starting = fw.update("hello-1").await;
    assert_eq!(state(&starting), v1::TaskState::TaskStarting);
    let running = fw.update("hello-1").await;
    assert_eq!(state(&running), v1::TaskState::TaskRunning);
    let sandbox = cluster.sandbox("hello-1");
    let container = sandbox.file_name().unwrap().to_str().unwrap().to_owned();
    if cluster.cgroups_in_use() {
        // The task's 0.5 cpus / 64 MB plus the command executor's 0.1 / 32.
        assert_eq!(cluster.limits(&container), Some((614, 96 << 20)));
    } else {
        eprintln!("cgroups not writable here: limits not checked");
    }
    let finished = fw.update("hello-1").await;
    assert_eq!(state(&finished), v1::TaskState::TaskFinished);
    assert_eq!(
        finished.message.as_deref(),
        Some("Command exited with status 0")
    );
    for s in [&starting, &running, &finished] {
        assert_eq!(s.uuid.as_ref().map(Vec::len), Some(16), "{s:?}");
        assert_eq!(s.source, Some(v1::task_status::Source::Executor as i32));
        assert_eq!(s.executor_id.as_ref().unwrap().value, "hello-1");
    }
    assert_ne!(starting.uuid, running.uuid);

    assert_eq!(
        std::fs::read_to_string(sandbox.join("out")).unwrap(),
        "hi\n"
    );
    let env = std::fs::read_to_string(sandbox.join("env.txt")).unwrap();
    let sandbox_s = sandbox.to_str().unwrap();
    for want in [
        format!("MESOS_SANDBOX={sandbox_s}"),
        format!("MESOS_DIRECTORY={sandbox_s}"),
        "MESOS_EXECUTOR_ID=hello-1".to_owned(),
        format!("MESOS_AGENT_ENDPOINT=127.0.0.1:{}", cluster.agent_port),
        format!("MESOS_SLAVE_PID=slave(1)@127.0.0.1:{}", cluster.agent_port),
        "MESOS_CHECKPOINT=0".to_owned(),
        "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD=2secs".to_owned(),
    ] {
        assert!(env.lines().any(|l| l == want), "{want} missing from\n{env}");
    }
    assert!(!env.contains("MESOS_RECOVERY_TIMEOUT"), "{env}");
    let cpu_dir = format!("/sys/fs/cgroup/cpu/{}/{container}", cluster.cgroups_root);
    eventually("the container's cgroup is removed", || {
        !Path::new(&cpu_dir).exists()
    })
    .await;

    // A failing command and a killed one.
    let failing = v1::TaskInfo {
        name: "fail".into(),
        task_id: v1::TaskId {
            value: "fail-1".into(),
        },
        resources: resources(0.1, 32.0),
        command: Some(v1::CommandInfo {
            value: Some("exit 3".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    fw.launch(failing).await;
    let failed = fw
        .next(|e| match e {
            SchedulerEvent::Event(e) => {
                e.update.as_ref().map(|u| u.status.clone()).filter(|s| {
                    s.task_id.value == "fail-1" && state(s) == v1::TaskState::TaskFailed
                })
            }
            _ => None,
        })
        .await;
    assert_eq!(
        failed.message.as_deref(),
        Some("Command exited with status 3")
    );

    let sleeper = v1::TaskInfo {
        name: "sleep".into(),
        task_id: v1::TaskId {
            value: "sleep-1".into(),
        },
        resources: resources(0.1, 32.0),
        command: Some(v1::CommandInfo {
            value: Some("sleep 60".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    fw.launch(sleeper).await;
    loop {
        let s = fw.update("sleep-1").await;
        if state(&s) == v1::TaskState::TaskRunning {
            break;
        }
    }
    fw.sched
        .kill(
            v1::TaskId {
                value: "sleep-1".into(),
            },
            None,
            None,
        )
        .await
        .unwrap();
    let killed = fw.update("sleep-1").await;
    assert_eq!(state(&killed), v1::TaskState::TaskKilled, "{killed:?}");
    assert_eq!(
        killed.message.as_deref(),
        Some("Command terminated with signal Terminated")
    );

    agent.stop().await;
    fw.sched.stop();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_executor_grows_and_shrinks_and_survives_an_agent_restart() {
    let (cluster, agent) = Cluster::start().await;
    let mut fw = Framework::subscribe(&cluster.master, true).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mesos/agent_executor.py");
    let executor = v1::ExecutorInfo {
        r#type: Some(v1::executor_info::Type::Custom as i32),
        executor_id: v1::ExecutorId {
            value: "py-exec".into(),
        },
        command: Some(v1::CommandInfo {
            value: Some(format!("exec python3 {script}")),
            ..Default::default()
        }),
        resources: resources(0.1, 32.0),
        ..Default::default()
    };
    let task = |id: &str, cpus, mem| v1::TaskInfo {
        name: id.into(),
        task_id: v1::TaskId { value: id.into() },
        resources: resources(cpus, mem),
        executor: Some(executor.clone()),
        ..Default::default()
    };

    fw.launch(task("a", 0.5, 64.0)).await;
    let a = fw.update("a").await;
    assert_eq!(state(&a), v1::TaskState::TaskRunning, "{a:?}");
    assert_eq!(a.agent_id.as_ref().map(|i| i.value.is_empty()), Some(false));
    let sandbox = cluster.sandbox("py-exec");
    let container = sandbox.file_name().unwrap().to_str().unwrap().to_owned();
    let cgroups = cluster.cgroups_in_use();
    if cgroups {
        assert_eq!(cluster.limits(&container), Some((614, 96 << 20)));
    }

    fw.launch(task("b", 0.25, 32.0)).await;
    assert_eq!(state(&fw.update("b").await), v1::TaskState::TaskRunning);
    if cgroups {
        // Grown by b: 0.85 cpus, 128 MB.
        assert_eq!(cluster.limits(&container), Some((870, 128 << 20)));
    }

    fw.sched
        .kill(v1::TaskId { value: "a".into() }, None, None)
        .await
        .unwrap();
    assert_eq!(state(&fw.update("a").await), v1::TaskState::TaskKilled);
    if cgroups {
        // Shrunk by a: 0.35 cpus, 64 MB.
        eventually("the cgroup shrinks", || {
            cluster.limits(&container) == Some((358, 64 << 20))
        })
        .await;
    }

    // The agent restarts; the checkpointed executor keeps running and
    // subscribes again.
    agent.stop().await;
    let log = sandbox.join("events.log");
    let subscribed = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == "SUBSCRIBED")
            .count()
    };
    assert_eq!(subscribed(), 1);
    let agent = cluster.agent();
    let again = tokio::time::timeout(WAIT, async {
        while subscribed() < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        again.is_ok(),
        "the executor did not subscribe again; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    fw.sched
        .kill(v1::TaskId { value: "b".into() }, None, None)
        .await
        .unwrap();
    assert_eq!(state(&fw.update("b").await), v1::TaskState::TaskKilled);

    // SHUTDOWN: the executor exits, the framework hears of it, the cgroup goes.
    let agent_id = a.agent_id.clone().unwrap();
    fw.sched
        .shutdown(executor.executor_id.clone(), agent_id)
        .await
        .unwrap();
    let failure = fw
        .next(|e| match e {
            SchedulerEvent::Event(e) if e.r#type == Some(event::Type::Failure as i32) => {
                e.failure.clone()
            }
            _ => None,
        })
        .await;
    assert_eq!(
        failure.executor_id.map(|e| e.value).as_deref(),
        Some("py-exec")
    );
    if cgroups {
        let dir = format!("/sys/fs/cgroup/memory/{}/{container}", cluster.cgroups_root);
        eventually("the executor's cgroup is removed", || {
            !Path::new(&dir).exists()
        })
        .await;
    }
    assert!(std::fs::read_to_string(&log).unwrap().contains("SHUTDOWN"));

    agent.stop().await;
    fw.sched.stop();
    cluster.stop().await;
}
