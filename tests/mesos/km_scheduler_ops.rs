//! Operating `km scheduler`: a master restart, hot standbys (`--ha`) and an
//! upgrade that changes the executor.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::Value;

use crate::km_scheduler::{annotation, cluster, eventually, launched, pod};
use crate::support::{free_port, km};

#[tokio::test]
async fn a_restarted_master_gets_the_same_framework_back_and_pods_heal() {
    let mut c = cluster("cpus:4;mem:8192;ports:[31000-31100]").await;
    let (_stop, _task) = c.scheduler();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod("before", "k8sm-scheduler", "100m"),
    )
    .await
    .unwrap();
    let first = launched(&pods, "before").await;
    let framework = c.state().await["frameworks"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The new master knows nothing: the scheduler subscribes again with
    // its framework ID, reconciliation reports the old task gone, and the
    // (never bound) pod is launched again.
    c.restart_master().await;
    eventually("the scheduler subscribed to the new master", || async {
        c.state().await["frameworks"]
            .as_array()
            .is_some_and(|f| f.len() == 1 && f[0]["id"] == framework.as_str())
    })
    .await;
    let old_task = annotation(&first, "k8s.mesosphere.io/taskId").unwrap();
    eventually("the pod relaunched under a new task id", || async {
        let p = pods.get("before").await.unwrap();
        let Some(now) = annotation(&p, "k8s.mesosphere.io/taskId") else {
            return false;
        };
        now != old_task
            && c.tasks_by_name().await.get("before.default.pod") == Some(&vec![now.clone()])
    })
    .await;
    pods.create(
        &PostParams::default(),
        &pod("after", "k8sm-scheduler", "100m"),
    )
    .await
    .unwrap();
    launched(&pods, "after").await;
    c.stop.cancel();
}

/// A `km scheduler` process; killed (SIGKILL) when dropped.
struct Proc {
    child: Child,
    port: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    async fn state(&self) -> Option<Value> {
        let r = reqwest::get(format!("http://127.0.0.1:{}/debug/state", self.port))
            .await
            .ok()?;
        r.json().await.ok()
    }
}

fn spawn_scheduler(flags: &[String], log: std::path::PathBuf) -> Proc {
    let port = free_port();
    let mut args = flags.to_vec();
    if let Some(i) = args.iter().position(|a| a == "--port") {
        args[i + 1] = port.to_string();
    }
    let child = Command::new(km())
        .arg("scheduler")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Proc { child, port }
}

#[tokio::test]
async fn a_standby_takes_over_when_the_leader_dies() {
    let c = cluster("cpus:4;mem:8192;ports:[31000-31100]").await;
    let flags = c.scheduler_flags(&[
        "--ha",
        "--ha-lease-duration",
        "3s",
        "--ha-renew-deadline",
        "2s",
        "--ha-retry-period",
        "250ms",
    ]);
    let a = spawn_scheduler(&flags, c.dir.path().join("a.log"));
    eventually("replica a leads", || async {
        a.state().await.is_some_and(|s| s["leader"] == true)
    })
    .await;
    let b = spawn_scheduler(&flags, c.dir.path().join("b.log"));
    eventually("replica b serves while standing by", || async {
        b.state().await.is_some()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod("one", "k8sm-scheduler", "100m"),
    )
    .await
    .unwrap();
    launched(&pods, "one").await;
    let b_state = b.state().await.unwrap();
    assert_eq!(b_state["leader"], false, "one leader at a time: {b_state}");
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-system");
    let lease = leases.get("k8sm-kubernetes-scheduler").await.unwrap();
    let holder_a = lease.spec.unwrap().holder_identity.unwrap();

    // SIGKILL: the lease is not released; b waits for it to expire.
    let killed_at = std::time::Instant::now();
    drop(a);
    for _ in 0..100 {
        if b.state().await.is_some_and(|s| s["subscribed"] == true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed_at.elapsed();
    let b_state = b.state().await.unwrap();
    assert_eq!(b_state["leader"], true, "b took over: {b_state}");
    assert!(
        took < Duration::from_secs(8),
        "takeover within the lease duration and a retry: took {took:?}"
    );
    let lease = leases.get("k8sm-kubernetes-scheduler").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_ne!(spec.holder_identity.unwrap(), holder_a);
    assert_eq!(spec.lease_transitions, Some(1));
    // Same framework, and the new leader schedules.
    pods.create(
        &PostParams::default(),
        &pod("two", "k8sm-scheduler", "100m"),
    )
    .await
    .unwrap();
    launched(&pods, "two").await;
    let frameworks = c.state().await["frameworks"].as_array().unwrap().len();
    assert_eq!(frameworks, 1, "b failed over to a's framework");
    assert_eq!(
        c.tasks_by_name().await["one.default.pod"].len(),
        1,
        "the first pod was not launched again"
    );
    c.stop.cancel();
}

#[tokio::test]
async fn an_upgrade_starts_new_executors_and_retires_idle_old_ones() {
    let c = cluster("cpus:4;mem:8192;ports:[31000-31100]").await;
    let (old_stop, old_task) = c.scheduler();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod("old", "k8sm-scheduler", "100m"),
    )
    .await
    .unwrap();
    let old = launched(&pods, "old").await;
    let old_executor = annotation(&old, "k8s.mesosphere.io/executorId").unwrap();
    let agent = annotation(&old, "k8s.mesosphere.io/slaveId").unwrap();
    old_stop.cancel();
    let _ = old_task.await;

    // The new scheduler runs km from another path: another executor identity.
    let (_stop, _task) = c.scheduler_with(&["--km-path", "file:///usr/local/bin/km"]);
    pods.create(
        &PostParams::default(),
        &pod("new", "k8sm-scheduler", "100m"),
    )
    .await
    .unwrap();
    let new = launched(&pods, "new").await;
    let new_executor = annotation(&new, "k8s.mesosphere.io/executorId").unwrap();
    assert_ne!(new_executor, old_executor);
    let executors = |state: &Value| -> Vec<(String, String)> {
        state["slaves"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|a| {
                a["executors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        (
                            a["id"].as_str().unwrap().to_string(),
                            e["executor_id"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let before = executors(&c.state().await);
    assert!(
        before.contains(&(agent.clone(), old_executor.clone())),
        "the old executor still runs the old pod: {before:?}"
    );
    // The old pod's task ends: its executor has nothing left and is shut down.
    pods.delete("old", &DeleteParams::default()).await.unwrap();
    eventually("the old executor shut down", || async {
        !executors(&c.state().await).contains(&(agent.clone(), old_executor.clone()))
    })
    .await;
    let after = executors(&c.state().await);
    assert!(
        after.iter().any(|(_, e)| *e == new_executor),
        "the new executor stays: {after:?}"
    );
    assert_eq!(c.tasks_by_name().await["new.default.pod"].len(), 1);
    c.stop.cancel();
}
