//! `km scheduler` against km apiserver and km dev-master with hollow
//! agents: pods become annotated Mesos tasks, several per offer; pods that
//! fit nowhere get a FailedScheduling event and stay Pending; deletion
//! kills; other schedulers' pods are left alone; a restart launches
//! nothing twice.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use km::devcluster::master;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::master_args;

#[derive(clap::Parser)]
struct SchedulerCli {
    #[command(flatten)]
    args: km::scheduler::Args,
}

pub(crate) struct Cluster {
    pub dir: tempfile::TempDir,
    pub kubeconfig: std::path::PathBuf,
    pub client: kube::Client,
    pub master: master::Running,
    pub master_stop: CancellationToken,
    pub hollow: String,
    pub stop: CancellationToken,
}

pub(crate) async fn cluster(hollow: &str) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (kubeconfig, client) = super::support::apiserver(dir.path(), stop.clone()).await;
    let master_stop = stop.child_token();
    let master = start_master(hollow, 0, master_stop.clone()).await;
    Cluster {
        dir,
        kubeconfig,
        client,
        master,
        master_stop,
        hollow: hollow.to_string(),
        stop,
    }
}

/// A dev-master with two hollow agents of `hollow` resources and attribute rack:a.
async fn start_master(hollow: &str, port: u16, stop: CancellationToken) -> master::Running {
    master::start(
        master_args(&[
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--allocation-interval",
            "100ms",
            "--hollow-agents",
            "2",
            "--hollow-resources",
            hollow,
            "--hollow-attributes",
            "rack:a",
            "--hollow-task-delay",
            "20ms",
        ]),
        stop,
    )
    .await
    .unwrap()
}

impl Cluster {
    /// The flags every test scheduler gets, then `extra`.
    pub fn scheduler_flags(&self, extra: &[&str]) -> Vec<String> {
        let mut flags: Vec<String> = [
            "--mesos-master",
            &format!("http://{}", self.master.addr),
            "--kubeconfig",
            self.kubeconfig.to_str().unwrap(),
            "--namespace",
            "kube-system",
            "--port",
            "0",
            "--km-path",
            "file:///usr/bin/km",
            "--initial-pod-backoff",
            "200ms",
            "--offer-refuse-seconds",
            "0.2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // A flag given in `extra` replaces the default.
        for pair in extra.chunks(2) {
            if let Some(i) = flags.iter().position(|f| f == pair[0]) {
                flags.drain(i..i + 2);
            }
        }
        flags.extend(extra.iter().map(|s| s.to_string()));
        flags
    }

    pub fn scheduler(
        &self,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        self.scheduler_with(&[])
    }

    /// An in-process scheduler with `extra` flags.
    pub fn scheduler_with(
        &self,
        extra: &[&str],
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let flags = self.scheduler_flags(extra);
        let argv = std::iter::once("km".to_string()).chain(flags);
        let args = <SchedulerCli as clap::Parser>::parse_from(argv).args;
        let stop = self.stop.child_token();
        (stop.clone(), tokio::spawn(km::scheduler::run(args, stop)))
    }

    /// Stops the dev-master and starts a new one, with no memory of the
    /// old one, on the same port.
    pub async fn restart_master(&mut self) {
        self.master_stop.cancel();
        let port = self.master.addr.port();
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.master_stop = self.stop.child_token();
        self.master = start_master(&self.hollow, port, self.master_stop.clone()).await;
    }

    pub async fn state(&self) -> Value {
        reqwest::get(format!("http://{}/state", self.master.addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Task ids per task name (`<pod>.<ns>.pod`) in the master's view.
    pub async fn tasks_by_name(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut out = std::collections::BTreeMap::<String, Vec<String>>::new();
        for f in self.state().await["frameworks"].as_array().unwrap() {
            for t in f["tasks"].as_array().unwrap() {
                out.entry(t["name"].as_str().unwrap().to_string())
                    .or_default()
                    .push(t["id"].as_str().unwrap().to_string());
            }
        }
        out
    }
}

pub(crate) fn pod(name: &str, scheduler: &str, cpu: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"schedulerName": scheduler, "containers": [{"name": "c", "image": "busybox",
            "ports": [{"containerPort": 8080}],
            "resources": {"limits": {"cpu": cpu, "memory": "64Mi"}}}]}
    }))
    .unwrap()
}

pub(crate) async fn eventually<F, Fut>(what: &str, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

pub(crate) fn annotation(p: &Pod, k: &str) -> Option<String> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(k))
        .cloned()
}

#[tokio::test]
async fn pods_become_annotated_tasks_and_deletion_kills() {
    let c = cluster("cpus:2;mem:4096;ports:[31000-31010]").await;
    let (_stop, _task) = c.scheduler();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    for i in 0..6 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("web-{i}"), "k8sm-scheduler", "250m"),
        )
        .await
        .unwrap();
    }
    pods.create(&PostParams::default(), &pod("huge", "k8sm-scheduler", "64"))
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("other", "default-scheduler", "100m"),
    )
    .await
    .unwrap();

    eventually("six pods annotated and running as tasks", || async {
        let tasks = c.tasks_by_name().await;
        (0..6).all(|i| {
            tasks
                .get(&format!("web-{i}.default.pod"))
                .is_some_and(|t| t.len() == 1)
        })
    })
    .await;
    for i in 0..6 {
        let p = pods.get(&format!("web-{i}")).await.unwrap();
        let task = annotation(&p, "k8s.mesosphere.io/taskId").expect("taskId annotation");
        assert_eq!(
            c.tasks_by_name().await[&format!("web-{i}.default.pod")],
            [task]
        );
        assert!(
            annotation(&p, "k8s.mesosphere.io/bindingHost")
                .unwrap()
                .starts_with("hollow-")
        );
        assert!(annotation(&p, "k8s.mesosphere.io/slaveId").is_some());
        assert!(annotation(&p, "k8s.mesosphere.io/offerId").is_some());
        assert!(annotation(&p, "k8s.mesosphere.io/executorId").is_some());
        assert!(
            annotation(&p, "k8s.mesosphere.io/port_TCP_8080")
                .unwrap()
                .parse::<u16>()
                .unwrap()
                >= 31000
        );
    }
    // The pod that fits nowhere stays Pending with a reason.
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    eventually("a FailedScheduling event for the huge pod", || async {
        events
            .list(&ListParams::default().fields("involvedObject.name=huge"))
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("FailedScheduling")
                    && e.message.as_deref().unwrap_or("").contains("cpus")
            })
    })
    .await;
    let huge = pods.get("huge").await.unwrap();
    assert!(annotation(&huge, "k8s.mesosphere.io/taskId").is_none());
    // Another scheduler's pod is never touched.
    let other = pods.get("other").await.unwrap();
    assert!(
        other
            .metadata
            .annotations
            .is_none_or(|a| !a.keys().any(|k| k.starts_with("k8s.mesosphere.io/")))
    );
    assert!(!c.tasks_by_name().await.contains_key("other.default.pod"));

    // Deleting a pod kills its task (bound pods wait for the executor; this one is unbound).
    pods.delete("web-0", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the deleted pod's task gone from the master", || async {
        let tasks = c.tasks_by_name().await;
        tasks.get("web-0.default.pod").is_none_or(|t| t.is_empty())
            || c.state().await["frameworks"][0]["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "web-0.default.pod" && t["state"] == "TASK_KILLED")
    })
    .await;
    c.stop.cancel();
}

#[tokio::test]
async fn a_restart_mid_burst_launches_nothing_twice() {
    let c = cluster("cpus:8;mem:16384;ports:[31000-31100]").await;
    let (stop, task) = c.scheduler();
    let mut task = Some(task);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    for i in 0..40 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("burst-{i}"), "k8sm-scheduler", "100m"),
        )
        .await
        .unwrap();
        if i == 20 {
            // Kill the scheduler in the middle of the burst, start a new one.
            stop.cancel();
            if let Some(t) = task.take() {
                let _ = t.await;
            }
        }
    }
    let (_stop2, _task2) = c.scheduler();
    for _ in 0..200 {
        let tasks = c.tasks_by_name().await;
        if (0..40).all(|i| tasks.contains_key(&format!("burst-{i}.default.pod"))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tasks = c.tasks_by_name().await;
    let missing: Vec<String> = (0..40)
        .map(|i| format!("burst-{i}.default.pod"))
        .filter(|n| !tasks.contains_key(n))
        .collect();
    assert!(
        missing.is_empty(),
        "not launched: {missing:?}; master state: {}",
        c.state().await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tasks = c.tasks_by_name().await;
    for i in 0..40 {
        let ids = &tasks[&format!("burst-{i}.default.pod")];
        assert_eq!(ids.len(), 1, "burst-{i} launched once: {ids:?}");
        let p = pods.get(&format!("burst-{i}")).await.unwrap();
        assert_eq!(
            annotation(&p, "k8s.mesosphere.io/taskId").as_ref(),
            Some(&ids[0])
        );
    }
    // One framework: the second scheduler failed over to the stored ID.
    assert_eq!(c.state().await["frameworks"].as_array().unwrap().len(), 1);
    c.stop.cancel();
}

/// Waits for a FailedScheduling event of `name` whose message contains `text`.
pub(crate) async fn failed_scheduling(client: &kube::Client, name: &str, text: &str) {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let field = format!("involvedObject.name={name}");
    eventually(
        &format!("FailedScheduling for {name} naming {text:?}"),
        || async {
            events
                .list(&ListParams::default().fields(&field))
                .await
                .unwrap()
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("FailedScheduling")
                        && e.message.as_deref().unwrap_or("").contains(text)
                })
        },
    )
    .await;
}

/// Waits until `name` carries a task id, and returns it.
pub(crate) async fn launched(pods: &Api<Pod>, name: &str) -> Pod {
    eventually(&format!("{name} annotated with a task"), || async {
        annotation(&pods.get(name).await.unwrap(), "k8s.mesosphere.io/taskId").is_some()
    })
    .await;
    pods.get(name).await.unwrap()
}

#[tokio::test]
async fn placement_honours_selectors_node_names_roles_and_host_ports() {
    let c = cluster("cpus:2;mem:2048;cpus(prod):1;mem(prod):1024;ports:[31000-31010]").await;
    let (_stop, _task) = c.scheduler_with(&[
        "--mesos-framework-roles",
        "*,prod",
        "--host-port-endpoints",
        "false",
    ]);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let create = |name: &str, patch: Value| {
        let mut v = serde_json::to_value(pod(name, "k8sm-scheduler", "100m")).unwrap();
        json_patch::merge(&mut v, &patch);
        let p: Pod = serde_json::from_value(v).unwrap();
        let pods = pods.clone();
        async move { pods.create(&PostParams::default(), &p).await.unwrap() }
    };
    // Agent attributes are node labels k8s.mesosphere.io/attribute-<name>.
    create(
        "rack-a",
        json!({"spec": {"nodeSelector": {"k8s.mesosphere.io/attribute-rack": "a"}}}),
    )
    .await;
    create(
        "rack-b",
        json!({"spec": {"nodeSelector": {"k8s.mesosphere.io/attribute-rack": "b"}}}),
    )
    .await;
    create(
        "by-host",
        json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": "hollow-00001"}}}),
    )
    .await;
    create("pinned", json!({"spec": {"nodeName": "hollow-00000"}})).await;
    create("pinned-nowhere", json!({"spec": {"nodeName": "elsewhere"}})).await;
    let host_port = |name: &str| {
        create(
            name,
            json!({"spec": {"containers": [{"name": "c", "image": "busybox",
                "ports": [{"containerPort": 80, "hostPort": 31005}],
                "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}}}]}}),
        )
    };
    host_port("port-1").await;
    host_port("port-2").await;
    host_port("port-3").await;
    let prod = |name: &str, cpu: &str| {
        create(
            name,
            json!({"metadata": {"annotations": {"k8s.mesosphere.io/roles": "prod"}},
                "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"limits": {"cpu": cpu, "memory": "64Mi"}}}]}}),
        )
    };
    prod("prod-small", "500m").await;
    prod("prod-big", "1500m").await;

    let host = |p: &Pod| annotation(p, "k8s.mesosphere.io/bindingHost").unwrap();
    launched(&pods, "rack-a").await;
    assert_eq!(host(&launched(&pods, "by-host").await), "hollow-00001");
    assert_eq!(host(&launched(&pods, "pinned").await), "hollow-00000");
    // A fixed host port is taken once per agent: two agents, two pods.
    let p1 = launched(&pods, "port-1").await;
    let p2 = launched(&pods, "port-2").await;
    for p in [&p1, &p2] {
        assert_eq!(
            annotation(p, "k8s.mesosphere.io/port_TCP_80").as_deref(),
            Some("31005")
        );
    }
    assert_ne!(host(&p1), host(&p2));
    // The prod pod runs on prod resources.
    let small = launched(&pods, "prod-small").await;
    let task = annotation(&small, "k8s.mesosphere.io/taskId").unwrap();
    let state = c.state().await;
    let t = state["frameworks"][0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == task.as_str())
        .cloned()
        .unwrap();
    assert!(
        t.to_string().contains("prod"),
        "prod-small's task uses role prod: {t}"
    );

    failed_scheduling(
        &c.client,
        "rack-b",
        "nodeSelector k8s.mesosphere.io/attribute-rack=b",
    )
    .await;
    failed_scheduling(&c.client, "pinned-nowhere", "spec.nodeName is elsewhere").await;
    failed_scheduling(&c.client, "port-3", "host port 31005").await;
    failed_scheduling(&c.client, "prod-big", "insufficient cpus").await;
    for name in ["rack-b", "pinned-nowhere", "port-3", "prod-big"] {
        let p = pods.get(name).await.unwrap();
        assert!(
            annotation(&p, "k8s.mesosphere.io/taskId").is_none(),
            "{name} stays unlaunched"
        );
        assert_eq!(
            p.status.and_then(|s| s.phase).as_deref(),
            Some("Pending"),
            "{name} stays Pending"
        );
    }
    c.stop.cancel();
}
