//! kill -9 of the scheduler in the middle of a burst of 200 pods: km local
//! restarts it, it reconciles, and every pod ends Running exactly once. The
//! oracle compares three views: the API (every pod Running, bound, with one
//! task id), the dev-master's /state (exactly one live task per pod, the
//! annotated one, TASK_RUNNING, and no pod ever given a second task) and
//! `docker ps` (exactly one running container per pod, never restarted).
//! Then the pods are deleted and no container of them is left.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use km::podtask::annotations;

use super::support::{
    Local, Setup, WAIT, annotation, containers, docker, eventually, exclusive, phase, signal_pid,
};

const PODS: usize = 200;

/// Mesos task states of a task that still holds resources.
const LIVE: [&str; 5] = [
    "TASK_STAGING",
    "TASK_STARTING",
    "TASK_RUNNING",
    "TASK_KILLING",
    "TASK_UNREACHABLE",
];

/// One pod of the burst (`NAME` is replaced).
const BURST_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: NAME
  labels:
    app: burst
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sleeper
    image: km-test/busybox:1
    command: [sleep, '3600']
    resources:
      requests:
        cpu: 10m
        memory: 16Mi
"#;

/// The burst as one YAML stream for `kubectl create -f -`. (A `kind: List`
/// fails kubectl's client-side validation against km apiserver.)
fn burst() -> String {
    (0..PODS)
        .map(|i| BURST_POD.replace("NAME", &format!("burst-{i:03}")))
        .collect::<Vec<_>>()
        .join("---\n")
}

async fn pods(local: &Local, ns: &str) -> Vec<Pod> {
    local
        .pods(ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn every_pod_of_a_burst_runs_exactly_once_across_a_scheduler_crash() {
    let _one = exclusive().await;
    let local = Local::start(Setup::new(1)).await;
    let ns = local.namespace("burst").await;
    let scheduler = local
        .setup()
        .pid_of("scheduler")
        .expect("run/scheduler.pid");

    // Create the burst, and kill -9 the scheduler once it has launched some
    // of it but not all.
    let create = {
        let manifest = burst();
        let args = ["-n", ns.as_str(), "create", "-f", "-"];
        let local = &local;
        async move { local.kubectl_stdin(&args, &manifest).await }
    };
    let began = std::time::Instant::now();
    let kill = async {
        let launched = eventually("the scheduler launches part of the burst", WAIT, || async {
            let launched = pods(&local, &ns)
                .await
                .iter()
                .filter(|p| annotation(p, annotations::BINDING_HOST).is_some())
                .count();
            if launched >= 10 {
                Ok(launched)
            } else {
                Err(format!("{launched} launched"))
            }
        })
        .await;
        signal_pid(scheduler, "KILL").await;
        let at = began.elapsed();
        let all = pods(&local, &ns).await;
        let running = all.iter().filter(|p| phase(p) == "Running").count();
        (launched, running, all.len(), at)
    };
    let (_, (launched, running, created, at)) = tokio::join!(create, kill);
    assert!(
        running < PODS,
        "the scheduler was killed mid-burst ({launched} launched, {running} Running)"
    );
    eprintln!(
        "scheduler killed {:.1}s into the burst: {created} pods created, {launched} launched, {running} Running",
        at.as_secs_f64()
    );

    // km local starts a new scheduler.
    eventually("km local restarts the scheduler", WAIT, || async {
        match local.setup().pid_of("scheduler") {
            Some(p) if p != scheduler && super::support::alive(p) => Ok(()),
            other => Err(format!("run/scheduler.pid: {other:?}")),
        }
    })
    .await;

    // Every pod ends Running.
    let all = eventually(
        "every pod of the burst Running",
        Duration::from_secs(300),
        || async {
            let all = pods(&local, &ns).await;
            let running = all.iter().filter(|p| phase(p) == "Running").count();
            if all.len() == PODS && running == PODS {
                Ok(all)
            } else {
                Err(format!("{running} of {} Running", all.len()))
            }
        },
    )
    .await;
    eprintln!(
        "all {PODS} pods Running {:.1}s after the burst began",
        began.elapsed().as_secs_f64()
    );

    // The API: bound to the node, one task id each, no restart.
    let node = local.setup().hostname.clone();
    let mut task_of: BTreeMap<String, String> = BTreeMap::new();
    let mut uids: BTreeSet<String> = BTreeSet::new();
    for p in &all {
        let name = p.metadata.name.clone().unwrap();
        assert_eq!(
            p.spec.as_ref().unwrap().node_name.as_deref(),
            Some(node.as_str()),
            "{name} is bound to the node"
        );
        let task = annotation(p, annotations::TASK_ID)
            .unwrap_or_else(|| panic!("{name} has no task id annotation"));
        task_of.insert(name.clone(), task.to_string());
        let restarts: i32 = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .map(|c| c.restart_count)
            .sum();
        assert_eq!(restarts, 0, "{name} restarted");
        uids.insert(p.metadata.uid.clone().unwrap());
    }
    let distinct: BTreeSet<&String> = task_of.values().collect();
    assert_eq!(distinct.len(), PODS, "one distinct task id per pod");

    // The dev-master: exactly one live task per pod, the annotated one,
    // Running. The executor reports to the API and to Mesos independently,
    // so the master may be a moment behind the API: poll until it agrees.
    let state = eventually(
        "the dev-master's /state agrees with the API",
        WAIT,
        || async {
            let state = local.mesos_state().await;
            let mut live: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
            for f in state["frameworks"].as_array().into_iter().flatten() {
                for t in f["tasks"].as_array().into_iter().flatten() {
                    let (name, id, st) = (
                        t["name"].as_str().unwrap_or(""),
                        t["id"].as_str().unwrap_or(""),
                        t["state"].as_str().unwrap_or(""),
                    );
                    if LIVE.contains(&st) {
                        live.entry(name.to_string())
                            .or_default()
                            .push((id.to_string(), st.to_string()));
                    }
                }
            }
            for (name, task) in &task_of {
                let tasks = live
                    .get(&format!("{name}.{ns}.pod"))
                    .cloned()
                    .unwrap_or_default();
                if tasks != vec![(task.clone(), "TASK_RUNNING".to_string())] {
                    return Err(format!("{name} (task {task}): live tasks {tasks:?}"));
                }
            }
            let ours = live
                .keys()
                .filter(|n| n.ends_with(&format!(".{ns}.pod")))
                .count();
            if ours != PODS {
                return Err(format!("{ours} pods with live tasks, {PODS} pods"));
            }
            Ok(state)
        },
    )
    .await;
    // No pod ever had a second task, not even one that ended.
    let mut ever: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in state["frameworks"].as_array().into_iter().flatten() {
        for list in ["tasks", "completed_tasks"] {
            for t in f[list].as_array().into_iter().flatten() {
                let name = t["name"].as_str().unwrap_or("");
                if name.ends_with(&format!(".{ns}.pod")) {
                    ever.entry(name.to_string())
                        .or_default()
                        .insert(t["id"].as_str().unwrap_or("").to_string());
                }
            }
        }
    }
    let twice: Vec<_> = ever.iter().filter(|(_, ids)| ids.len() != 1).collect();
    assert!(twice.is_empty(), "pods launched more than once: {twice:?}");

    // Docker: exactly one running app container and one sandbox per pod,
    // never restarted.
    let ps = docker(&[
        "ps",
        "--filter",
        &format!("label=io.kubernetes.pod.namespace={ns}"),
        "--format",
        "{{.Label \"io.kubernetes.pod.uid\"}} {{.Label \"io.kubernetes.docker.type\"}} {{.Label \"io.kubernetes.container.restartCount\"}}",
    ])
    .await;
    let mut apps: BTreeMap<String, usize> = BTreeMap::new();
    let mut sandboxes: BTreeMap<String, usize> = BTreeMap::new();
    for line in ps.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            [uid, "container", restarts] => {
                assert_eq!(*restarts, "0", "pod {uid}'s container was restarted");
                *apps.entry(uid.to_string()).or_default() += 1;
            }
            [uid, "podsandbox", ..] => *sandboxes.entry(uid.to_string()).or_default() += 1,
            other => panic!("unexpected container labels {other:?}"),
        }
    }
    assert_eq!(
        apps.keys().cloned().collect::<BTreeSet<_>>(),
        uids,
        "running containers belong to exactly the API's pods"
    );
    assert!(
        apps.values().all(|n| *n == 1),
        "pods with several running containers: {:?}",
        apps.iter().filter(|(_, n)| **n != 1).collect::<Vec<_>>()
    );
    assert_eq!(
        sandboxes.keys().cloned().collect::<BTreeSet<_>>(),
        uids,
        "one sandbox per pod"
    );
    assert!(sandboxes.values().all(|n| *n == 1), "{sandboxes:?}");

    // Delete them all: nothing of them is left on Docker.
    let deleting = std::time::Instant::now();
    local
        .kubectl(&[
            "-n",
            &ns,
            "delete",
            "pods",
            "-l",
            "app=burst",
            "--timeout=300s",
        ])
        .await;
    assert!(pods(&local, &ns).await.is_empty());
    let left = containers(true, &[("io.kubernetes.pod.namespace", &ns)]).await;
    assert!(left.is_empty(), "containers left: {left:?}");
    eprintln!(
        "{PODS} pods deleted in {:.1}s",
        deleting.elapsed().as_secs_f64()
    );

    let (status, _setup) = local.stop("TERM").await;
    assert!(status.success(), "km local exits 0 on SIGTERM: {status}");
}
