//! kill -9 of an agent's km executor, supervisor and worker alike: Mesos
//! reports its tasks gone, and the Deployment's pods are replaced by new
//! ones that run on a new executor.

use std::collections::{BTreeMap, BTreeSet};

use super::support::{Local, Setup, WAIT, containers, eventually, exclusive, is_ready, phase};

const STEADY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: steady
spec:
  replicas: 3
  selector:
    matchLabels:
      app: steady
  template:
    metadata:
      labels:
        app: steady
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

/// Name → uid of the Deployment's Running and Ready pods.
async fn running(local: &Local, ns: &str) -> BTreeMap<String, String> {
    let list = local
        .pods(ns)
        .list(&kube::api::ListParams::default().labels("app=steady"))
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|p| phase(p) == "Running" && is_ready(p) && p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            (
                p.metadata.name.clone().unwrap(),
                p.metadata.uid.clone().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_killed_executor_s_pods_are_replaced() {
    let _one = exclusive().await;
    let local = Local::start(Setup::new(1)).await;
    let ns = local.namespace("exec-loss").await;
    local.apply(&ns, STEADY).await;
    local.rolled_out(&ns, "steady").await;
    let before = running(&local, &ns).await;
    assert_eq!(before.len(), 3, "{before:?}");

    let executors = local.setup().executors();
    assert!(
        !executors.is_empty(),
        "the agent's km executor is found by its MESOS_AGENT_ENDPOINT"
    );
    for pid in &executors {
        super::support::signal_pid(*pid, "KILL").await;
    }

    // Three Running pods again, none of them an old one, on a new executor.
    let after = eventually("three new Running replicas", WAIT, || async {
        let now = running(&local, &ns).await;
        let old: Vec<&String> = now.keys().filter(|n| before.contains_key(*n)).collect();
        if now.len() == 3 && old.is_empty() {
            Ok(now)
        } else {
            Err(format!("Running: {now:?}; old ones among them: {old:?}"))
        }
    })
    .await;
    let new_executors = local.setup().executors();
    assert!(
        !new_executors.is_empty() && new_executors.iter().all(|p| !executors.contains(p)),
        "a new executor runs the new pods: before {executors:?}, now {new_executors:?}"
    );
    for uid in after.values() {
        let running = containers(
            false,
            &[
                ("io.kubernetes.pod.uid", uid),
                ("io.kubernetes.docker.type", "container"),
            ],
        )
        .await;
        assert_eq!(running.len(), 1, "pod {uid}: {running:?}");
    }
    // The old pods no longer run anywhere: not in the API, not on Docker.
    let api: BTreeSet<String> = local
        .pods(&ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| phase(p) == "Running")
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    for name in before.keys() {
        assert!(!api.contains(name), "old pod {name} is still Running");
    }
    for (name, uid) in &before {
        eventually(
            &format!("the old pod {name}'s containers are stopped"),
            WAIT,
            || async {
                let left = containers(false, &[("io.kubernetes.pod.uid", uid)]).await;
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("running: {left:?}"))
                }
            },
        )
        .await;
    }

    let (status, _setup) = local.stop("TERM").await;
    assert!(status.success(), "km local exits 0 on SIGTERM: {status}");
}
