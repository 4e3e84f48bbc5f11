//! Ctrl-C and a second start: SIGINT with pods running stops everything
//! (exit status 0, no process left, no container left), and `km local` on
//! the same data dir finds the same objects and runs the Deployment's pods
//! again. The pods take 4 s to finish after SIGTERM and have 8 s of grace,
//! more than a Mesos agent's default shutdown grace (5 s): they get their
//! time (each leaves a file in a hostPath when done), and their executor
//! removes their containers itself, within the grace the scheduler gives it.
//! Before that, a SIGUSR1 (a dev-agent's drain signal) leaves km local running.

use super::support::{
    Local, Setup, WAIT, alive, containers, eventually, exclusive, is_ready, phase, signal_pid,
};

const KEEP: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  greeting: hello again
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: keep
spec:
  replicas: 2
  selector:
    matchLabels:
      app: keep
  template:
    metadata:
      labels:
        app: keep
    spec:
      terminationGracePeriodSeconds: 8
      volumes:
      - name: out
        hostPath: {path: OUT, type: DirectoryOrCreate}
      containers:
      - name: sleeper
        image: km-test/busybox:1
        command: [sh, -c, 'trap "sleep 4; touch /out/$POD_NAME; exit 0" TERM; touch /tmp/trapped; while true; do sleep 1; done']
        readinessProbe:
          exec: {command: [cat, /tmp/trapped]}
          periodSeconds: 1
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        volumeMounts:
        - {name: out, mountPath: /out}
        resources:
          requests:
            cpu: 100m
            memory: 16Mi
"#;

/// Names of the Deployment's Running and Ready pods.
async fn running(local: &Local, ns: &str) -> Vec<String> {
    local
        .pods(ns)
        .list(&kube::api::ListParams::default().labels("app=keep"))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| phase(p) == "Running" && is_ready(p) && p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

#[tokio::test]
async fn ctrl_c_cleans_up_and_a_restart_keeps_the_objects() {
    let _one = exclusive().await;
    let local = Local::start(Setup::new(1)).await;
    let ns = local.namespace("keep").await;
    let out = tempfile::tempdir().unwrap();
    let keep = KEEP.replace("OUT", &out.path().display().to_string());
    local.apply(&ns, &keep).await;
    local.rolled_out(&ns, "keep").await;
    let running_before = running(&local, &ns).await;
    assert_eq!(running_before.len(), 2);
    let ours = [("io.kubernetes.pod.namespace", ns.as_str())];
    assert!(!containers(false, &ours).await.is_empty());

    // Everything that runs now, as km local and /proc know it.
    let parts = local.setup().part_pids();
    let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"scheduler"),
        "run/scheduler.pid: have {names:?}"
    );
    // The other roles run inside km local's process, each logging to its file.
    for part in [
        "apiserver",
        "dev-master",
        "agent-1",
        "controller-manager",
        "proxy",
    ] {
        assert!(!names.contains(&part), "{part} is no process: {names:?}");
        let log = local
            .setup()
            .data_dir
            .join("logs")
            .join(format!("{part}.log"));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!text.is_empty(), "{} holds {part}'s lines", log.display());
    }
    let executors = local.setup().executors();
    assert!(!executors.is_empty(), "an executor runs the pods");
    let mut pids: Vec<u32> = parts.iter().map(|(_, p)| *p).collect();
    pids.extend(&executors);
    pids.push(local.pid);
    // SIGUSR1, a dev-agent's drain signal, does not end km local: it says
    // which signals do.
    signal_pid(local.pid, "USR1").await;
    eventually("km local answers SIGUSR1", WAIT, || async {
        let said = local.setup().last_stderr();
        if said.contains("SIGUSR1 ignored") {
            Ok(())
        } else {
            Err(said)
        }
    })
    .await;
    for p in &pids {
        assert!(alive(*p), "pid {p} runs before Ctrl-C");
    }

    // Ctrl-C.
    let (status, setup) = local.stop("INT").await;
    assert!(status.success(), "km local exits 0 on SIGINT: {status}");
    let left: Vec<(u32, String)> = pids
        .iter()
        .filter(|p| alive(**p))
        .map(|p| (*p, super::support::cmdline(*p)))
        .collect();
    assert!(left.is_empty(), "processes left after Ctrl-C: {left:?}");
    let stray = setup.processes();
    assert!(
        stray.is_empty(),
        "km processes left after Ctrl-C: {stray:?}"
    );
    let left = containers(true, &ours).await;
    assert!(left.is_empty(), "containers left after Ctrl-C: {left:?}");
    let mut done: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    done.sort();
    let mut stopped = running_before.clone();
    stopped.sort();
    assert_eq!(
        done, stopped,
        "every pod finished its 4 s of cleanup after SIGTERM"
    );
    let said = setup.last_stderr();
    assert!(
        !said.contains("the executors left behind"),
        "the executors removed their pods' containers themselves:\n{said}"
    );

    // The same data dir again: the objects are there, the pods run again.
    let local = Local::start(setup).await;
    let greeting = local
        .kubectl(&[
            "-n",
            &ns,
            "get",
            "configmap",
            "settings",
            "-o",
            "jsonpath={.data.greeting}",
        ])
        .await;
    assert_eq!(greeting, "hello again");
    local
        .kubectl(&["-n", &ns, "get", "deployment", "keep"])
        .await;
    local.rolled_out(&ns, "keep").await;
    eventually("the Deployment's two pods Running again", WAIT, || async {
        let now = running(&local, &ns).await;
        let docker = containers(
            false,
            &[
                ("io.kubernetes.pod.namespace", ns.as_str()),
                ("io.kubernetes.docker.type", "container"),
            ],
        )
        .await;
        if now.len() == 2 && docker.len() == 2 {
            Ok(())
        } else {
            Err(format!("Running: {now:?}; containers: {docker:?}"))
        }
    })
    .await;

    let (status, setup) = local.stop("TERM").await;
    assert!(status.success(), "km local exits 0 on SIGTERM: {status}");
    assert!(setup.processes().is_empty());
    assert!(containers(true, &ours).await.is_empty());
}
