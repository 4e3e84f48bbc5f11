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

#[derive(clap::Parser)]
struct ApiCli {
    #[command(flatten)]
    args: km::apiserver::Args,
}

struct Cluster {
    _dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
    client: kube::Client,
    master: master::Running,
    stop: CancellationToken,
}

async fn cluster(hollow: &str) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let data = dir.path().join("api");
    let api_args = <ApiCli as clap::Parser>::parse_from([
        "km",
        "--data-dir",
        data.to_str().unwrap(),
        "--no-tls",
        "--insecure-port",
        "0",
    ])
    .args;
    let api = km::apiserver::start(api_args, stop.clone()).await.unwrap();
    let url = format!("http://{}", api.insecure_addr.unwrap());
    tokio::spawn(api.wait());
    let kubeconfig = dir.path().join("kubeconfig");
    km::apiserver::kubeconfig::write_kubeconfig(&kubeconfig, &url, None, None).unwrap();
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let master = master::start(
        master_args(&[
            "--ip",
            "127.0.0.1",
            "--port",
            "0",
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
        stop.clone(),
    )
    .await
    .unwrap();
    Cluster {
        _dir: dir,
        kubeconfig,
        client,
        master,
        stop,
    }
}

impl Cluster {
    fn scheduler(
        &self,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let args = <SchedulerCli as clap::Parser>::parse_from([
            "km",
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
        ])
        .args;
        let stop = self.stop.child_token();
        (stop.clone(), tokio::spawn(km::scheduler::run(args, stop)))
    }

    async fn state(&self) -> Value {
        reqwest::get(format!("http://{}/state", self.master.addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Task ids per task name (`<pod>.<ns>.pod`) in the master's view.
    async fn tasks_by_name(&self) -> std::collections::BTreeMap<String, Vec<String>> {
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

fn pod(name: &str, scheduler: &str, cpu: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"schedulerName": scheduler, "containers": [{"name": "c", "image": "busybox",
            "ports": [{"containerPort": 8080}],
            "resources": {"limits": {"cpu": cpu, "memory": "64Mi"}}}]}
    }))
    .unwrap()
}

async fn eventually<F, Fut>(what: &str, f: F)
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

fn annotation(p: &Pod, k: &str) -> Option<String> {
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
