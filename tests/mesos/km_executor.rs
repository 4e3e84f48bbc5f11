//! `km executor` for real: km apiserver, km dev-master, a km dev-agent that
//! starts `km executor` as a real process in a real cgroup, km scheduler,
//! and Docker running the containers (image `km-test/busybox:latest`, built
//! locally by scripts/test-deps.sh: there is no registry).

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::support::{agent_args, free_port, km, master_args};

/// A versioned tag: pulled only if not present (there is no registry).
pub(crate) const IMAGE: &str = "km-test/busybox:1";

#[derive(clap::Parser)]
struct SchedulerCli {
    #[command(flatten)]
    args: km::scheduler::Args,
}

/// Everything one test needs, torn down on drop of `stop` (containers are
/// removed by the executor's shutdown; leftovers by [`Node::cleanup`]).
pub(crate) struct Node {
    pub _dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    /// The test's own namespace: its containers carry it as a label.
    pub ns: String,
    pub client: kube::Client,
    pub master: String,
    pub agent_port: u16,
    pub hostname: String,
    pub cgroups_root: String,
    pub stop: CancellationToken,
    agent_stop: CancellationToken,
    agent: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts the API server, master, agent and scheduler. `resources` are the
/// agent's; `extra` scheduler flags follow the defaults.
pub(crate) async fn node(resources: &str, extra: &[&str]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (kubeconfig, client) = super::support::apiserver(dir.path(), stop.clone()).await;
    let running = km::devcluster::master::start(
        master_args(&[
            "--ip",
            "127.0.0.1",
            "--port",
            "0",
            "--allocation-interval",
            "100ms",
        ]),
        stop.child_token(),
    )
    .await
    .unwrap();
    let master = format!("127.0.0.1:{}", running.addr.port());
    let agent_port = free_port();
    let hostname = format!("node-{agent_port}");
    let cgroups_root = format!("km-exec-test-{}", uuid::Uuid::new_v4().simple());
    let agent_stop = stop.child_token();
    let work = dir.path().join("agent");
    let agent = tokio::spawn(km::devcluster::agent::run(
        agent_args(&[
            "--master",
            &master,
            "--ip",
            "127.0.0.1",
            "--port",
            &agent_port.to_string(),
            "--work-dir",
            work.to_str().unwrap(),
            "--cgroups-root",
            &cgroups_root,
            "--hostname",
            &hostname,
            "--resources",
            resources,
            "--executor-shutdown-grace-period",
            "10secs",
        ]),
        agent_stop.clone(),
    ));
    let mut flags: Vec<String> = [
        "km",
        "--mesos-master",
        &format!("http://{master}"),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--namespace",
        "kube-system",
        "--port",
        "0",
        "--km-path",
        km().to_str().unwrap(),
        "--executor-kubelet-port",
        "0",
        "--initial-pod-backoff",
        "200ms",
        "--offer-refuse-seconds",
        "0.2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    flags.extend(extra.iter().map(|s| s.to_string()));
    let args = <SchedulerCli as clap::Parser>::parse_from(flags).args;
    tokio::spawn(km::scheduler::run(args, stop.child_token()));
    let ns = format!("t{agent_port}");
    let nsobj: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    Api::all(client.clone())
        .create(&PostParams::default(), &nsobj)
        .await
        .unwrap();
    Node {
        _dir: dir,
        kubeconfig,
        ns,
        client,
        master,
        agent_port,
        hostname,
        cgroups_root,
        stop,
        agent_stop,
        agent,
    }
}

/// Whatever happens to the test, neither its executors nor its containers
/// outlive it (a stopped dev-agent leaves checkpointed executors running,
/// as a Mesos agent does).
impl Drop for Node {
    fn drop(&mut self) {
        for worker in self.workers() {
            let supervisor = std::fs::read_to_string(format!("/proc/{worker}/stat"))
                .ok()
                .and_then(|s| {
                    s[s.rfind(')')? + 2..]
                        .split_whitespace()
                        .nth(1)
                        .map(str::to_string)
                });
            for pid in supervisor.into_iter().chain([worker.to_string()]) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid])
                    .status();
            }
        }
        let suffix = format!("-{}", self.hostname);
        let all = docker(&[
            "ps",
            "-a",
            "--filter",
            "label=io.kubernetes.pod.uid",
            "--format",
            "{{.ID}} {{.Label \"io.kubernetes.pod.namespace\"}} {{.Label \"io.kubernetes.pod.name\"}}",
        ]);
        for line in all.lines() {
            let mut f = line.split(' ');
            let (id, ns, name) = (
                f.next().unwrap_or(""),
                f.next().unwrap_or(""),
                f.next().unwrap_or(""),
            );
            if ns == self.ns || name.ends_with(&suffix) {
                docker(&["rm", "-f", id]);
            }
        }
    }
}

impl Node {
    /// Stops the agent (its executors shut down and remove their
    /// containers), then everything else.
    pub async fn shutdown(mut self) {
        self.agent_stop.cancel();
        let agent = std::mem::replace(&mut self.agent, tokio::spawn(async { Ok(()) }));
        let _ = tokio::time::timeout(Duration::from_secs(30), agent).await;
        self.stop.cancel();
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn create(&self, pod: Value) -> Pod {
        let p: Pod = serde_json::from_value(pod).unwrap();
        self.pods()
            .create(&PostParams::default(), &p)
            .await
            .unwrap()
    }

    /// The pod once `f` holds for it (30 s at most).
    pub async fn wait_pod(&self, name: &str, what: &str, f: impl Fn(&Pod) -> bool) -> Pod {
        for _ in 0..300 {
            if let Ok(Some(p)) = self.pods().get_opt(name).await
                && f(&p)
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let p = self.pods().get_opt(name).await.unwrap();
        panic!(
            "timed out waiting for pod {name} to be {what}; it is {}",
            serde_json::to_string_pretty(&p.map(|p| p.status)).unwrap()
        );
    }

    /// The master's tasks, by name, with their states.
    pub async fn task_states(&self) -> Vec<(String, String)> {
        let state: Value = reqwest::get(format!("http://{}/state", self.master))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut out = Vec::new();
        for f in state["frameworks"].as_array().into_iter().flatten() {
            for key in ["tasks", "completed_tasks"] {
                for t in f[key].as_array().into_iter().flatten() {
                    out.push((
                        t["name"].as_str().unwrap_or("").to_string(),
                        t["state"].as_str().unwrap_or("").to_string(),
                    ));
                }
            }
        }
        out
    }

    /// kubectl (the machine's, v1.32) against the test's API server, in
    /// its namespace (async: the API server runs on this test's runtime).
    pub async fn kubectl(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["-n", &self.ns])
            .args(args)
            .output()
            .await
            .expect("kubectl runs (scripts/test-deps.sh installs it)");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Pids of this agent's executor workers.
    pub fn workers(&self) -> Vec<u32> {
        let endpoint = format!("MESOS_AGENT_ENDPOINT=127.0.0.1:{}", self.agent_port);
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !String::from_utf8_lossy(&cmd).contains("--worker") {
                continue;
            }
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if env.split(|b| *b == 0).any(|v| v == endpoint.as_bytes()) {
                out.push(pid);
            }
        }
        out
    }
}

pub(crate) fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Docker ids of a pod's running containers.
pub(crate) fn containers_of(uid: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=io.kubernetes.pod.uid={uid}"),
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn container_status<'a>(
    p: &'a Pod,
    name: &str,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn read_cgroup(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

async fn http_get(url: &str) -> Option<String> {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    r.text().await.ok()
}

/// Two containers share localhost; the pod's host port answers; limits are
/// in the cgroup files under the executor's cgroup; logs go through the API
/// server; deletion stops the containers and removes the pod.
#[tokio::test]
async fn a_pod_runs_on_docker_shares_localhost_and_answers_on_its_host_port() {
    let n = node("cpus:4;mem:2048;ports:[31000-31100]", &[]).await;
    let pod = n
        .create(json!({
            "metadata": {"name": "web"},
            "spec": {
                "schedulerName": "k8sm-scheduler",
                "terminationGracePeriodSeconds": 5,
                "containers": [
                    {"name": "web", "image": IMAGE,
                     "command": ["sh", "-c", "mkdir -p /www && echo hello from $(POD_NAME) > /www/index.html && exec httpd -f -p 8080 -h /www"],
                     "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                     "ports": [{"containerPort": 8080, "hostPort": 31080}],
                     "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                     "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}},
                    {"name": "sidecar", "image": IMAGE,
                     "command": ["sh", "-c", "while ! wget -q -O- http://127.0.0.1:8080/; do sleep 0.2; done; echo sidecar-done; exec sleep 3600"],
                     "resources": {"limits": {"cpu": "250m", "memory": "32Mi"}}}
                ]
            }
        }))
        .await;
    let uid = pod.metadata.uid.clone().unwrap();
    let p = n
        .wait_pod("web", "Running and Ready", |p| {
            phase(p) == "Running" && ready(p)
        })
        .await;
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(n.hostname.as_str()));
    let st = p.status.as_ref().unwrap();
    // The agent listens on loopback: the node's address is the machine's own.
    let host = km::hostaddr::primary_ipv4().to_string();
    assert_eq!(st.pod_ip.as_deref(), Some(host.as_str()));
    assert_eq!(st.host_ip.as_deref(), Some(host.as_str()));
    let web = container_status(&p, "web").unwrap();
    assert!(web.ready);
    assert_eq!(web.restart_count, 0);
    assert!(
        web.container_id
            .as_deref()
            .unwrap()
            .starts_with("docker://")
    );
    assert!(
        web.image_id.starts_with("docker://sha256:"),
        "{}",
        web.image_id
    );
    // The host port answers, served by the web container.
    let body = http_get("http://127.0.0.1:31080/")
        .await
        .unwrap_or_default();
    assert_eq!(body.trim(), "hello from web");
    // The sidecar reached the web container on localhost: its log says so,
    // read through the API server's pods/log (proxied to the executor).
    let logs = n
        .pods()
        .logs(
            "web",
            &kube::api::LogParams {
                container: Some("sidecar".into()),
                ..Default::default()
            },
        )
        .await;
    let mut logs = logs.unwrap_or_default();
    for _ in 0..50 {
        if logs.contains("sidecar-done") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        logs = n
            .pods()
            .logs(
                "web",
                &kube::api::LogParams {
                    container: Some("sidecar".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_default();
    }
    assert!(logs.contains("hello from web"), "{logs}");
    assert!(logs.contains("sidecar-done"), "{logs}");
    // Limits, read from the cgroup files: the pod cgroup under the
    // executor's cgroup under the agent's root, and each container's leaf.
    let ids = containers_of(&uid);
    assert_eq!(ids.len(), 3, "infra + 2 containers: {ids:?}");
    let mem_root = PathBuf::from("/sys/fs/cgroup/memory").join(&n.cgroups_root);
    if mem_root.exists() {
        let pod_dirs: Vec<PathBuf> = std::fs::read_dir(&mem_root)
            .unwrap()
            .flatten()
            .map(|e| e.path().join(format!("km-pod-{uid}")))
            .filter(|p| p.exists())
            .collect();
        let web_id = web
            .container_id
            .as_deref()
            .unwrap()
            .trim_start_matches("docker://");
        assert_eq!(
            pod_dirs.len(),
            1,
            "one pod cgroup under the executor's cgroup {}; the container's parent is {}",
            mem_root.display(),
            docker(&["inspect", "-f", "{{.HostConfig.CgroupParent}}", web_id])
        );
        let pod_mem = &pod_dirs[0];
        assert_eq!(
            read_cgroup(pod_mem, "memory.limit_in_bytes"),
            (96u64 << 20).to_string()
        );
        assert_eq!(
            read_cgroup(&pod_mem.join(web_id), "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        let cpu_pod = PathBuf::from("/sys/fs/cgroup/cpu")
            .join(pod_mem.strip_prefix("/sys/fs/cgroup/memory").unwrap());
        assert_eq!(
            read_cgroup(&cpu_pod.join(web_id), "cpu.cfs_quota_us"),
            "50000"
        );
        assert_eq!(read_cgroup(&cpu_pod.join(web_id), "cpu.shares"), "512");
        assert_eq!(read_cgroup(&cpu_pod, "cpu.cfs_quota_us"), "75000");
    } else {
        eprintln!("cgroup v1 memory hierarchy not found: limits not checked");
    }
    // The Node is there, Ready, advertising the kubelet endpoint.
    let node: k8s_openapi::api::core::v1::Node =
        Api::all(n.client.clone()).get(&n.hostname).await.unwrap();
    let ns = node.status.unwrap();
    assert!(ns.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port > 0);
    assert!(
        ns.conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    // Deletion: containers stop, the executor removes the pod for good, the task is killed.
    n.pods()
        .delete("web", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    for _ in 0..200 {
        if n.pods().get_opt("web").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        n.pods().get_opt("web").await.unwrap().is_none(),
        "the pod is gone from the API"
    );
    assert!(
        containers_of(&uid).is_empty(),
        "no container of the pod runs"
    );
    let states = n.task_states().await;
    assert!(
        states
            .iter()
            .any(|(name, s)| name.starts_with("web.") && s == "TASK_KILLED"),
        "{states:?}"
    );
    n.shutdown().await;
}

/// Restart policies: OnFailure restarts with backoff, Never ends the pod
/// Failed (TASK_FAILED), a clean exit with Never is Succeeded (TASK_FINISHED).
#[tokio::test]
async fn restart_policies_and_crash_loop_backoff() {
    // Every executor also runs this static pod, mirrored in the API.
    let statics = tempfile::tempdir().unwrap();
    std::fs::write(
        statics.path().join("keeper.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: keeper, namespace: default}}\nspec:\n  containers:\n  - name: k\n    image: {IMAGE}\n    command: [sleep, '3600']\n    resources: {{limits: {{cpu: 50m, memory: 16Mi}}}}\n"
        ),
    )
    .unwrap();
    let n = node(
        "cpus:4;mem:2048;ports:[31000-31100]",
        &["--static-pods-config", statics.path().to_str().unwrap()],
    )
    .await;
    let mk = |name: &str, policy: &str, script: &str| {
        json!({
            "metadata": {"name": name},
            "spec": {"schedulerName": "k8sm-scheduler", "restartPolicy": policy,
                "containers": [{"name": "c", "image": IMAGE, "command": ["sh", "-c", script],
                    "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}}}]}
        })
    };
    n.create(mk("crash", "OnFailure", "echo crashing; exit 1"))
        .await;
    n.create(mk("fails", "Never", "exit 3")).await;
    n.create(mk("done", "Never", "echo ok")).await;
    let crash = n
        .wait_pod("crash", "restarted and backing off", |p| {
            container_status(p, "c").is_some_and(|c| {
                c.restart_count >= 1
                    && c.state
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
            })
        })
        .await;
    let c = container_status(&crash, "c").unwrap();
    let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(last.exit_code, 1);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    let fails = n
        .wait_pod("fails", "Failed", |p| phase(p) == "Failed")
        .await;
    let t = container_status(&fails, "c")
        .unwrap()
        .state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap()
        .clone();
    assert_eq!(t.exit_code, 3);
    n.wait_pod("done", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    // kubectl logs of a finished pod, and -f of a running one (it ends when
    // the container does).
    assert_eq!(n.kubectl(&["logs", "done"]).await.trim(), "ok");
    n.create(mk(
        "ticker",
        "Never",
        "for i in 1 2 3; do echo tick $i; sleep 1; done",
    ))
    .await;
    n.wait_pod("ticker", "Running", |p| phase(p) == "Running")
        .await;
    let followed = n.kubectl(&["logs", "-f", "ticker"]).await;
    assert_eq!(
        followed.lines().collect::<Vec<_>>(),
        ["tick 1", "tick 2", "tick 3"],
        "{followed}"
    );
    for _ in 0..100 {
        let s = n.task_states().await;
        if s.iter()
            .any(|(n, s)| n.starts_with("fails.") && s == "TASK_FAILED")
            && s.iter()
                .any(|(n, s)| n.starts_with("done.") && s == "TASK_FINISHED")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = n.task_states().await;
    assert!(
        s.iter()
            .any(|(n, s)| n.starts_with("fails.") && s == "TASK_FAILED"),
        "{s:?}"
    );
    assert!(
        s.iter()
            .any(|(n, s)| n.starts_with("done.") && s == "TASK_FINISHED"),
        "{s:?}"
    );
    // A failing pod keeps its pod Pending with the reason, never crashes the executor.
    n.create(json!({
        "metadata": {"name": "nopull"},
        "spec": {"schedulerName": "k8sm-scheduler", "containers": [{"name": "c", "image": "km-test/no-such-image:1.0",
            "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}}}]}
    }))
    .await;
    let p = n
        .wait_pod("nopull", "waiting with ErrImagePull", |p| {
            container_status(p, "c").is_some_and(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .is_some_and(|w| w.reason.as_deref() == Some("ErrImagePull"))
            })
        })
        .await;
    assert_eq!(phase(&p), "Pending");
    // The static pod runs beside the tasks, mirrored in the API.
    let mirrors: Api<Pod> = Api::namespaced(n.client.clone(), "default");
    let mirror_name = format!("keeper-{}", n.hostname);
    let mut mirror = None;
    for _ in 0..300 {
        mirror = mirrors.get_opt(&mirror_name).await.unwrap();
        if mirror.as_ref().is_some_and(|p| phase(p) == "Running") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mirror = mirror.expect("the mirror pod exists");
    assert_eq!(phase(&mirror), "Running");
    assert_eq!(
        mirror.metadata.annotations.as_ref().unwrap()["kubernetes.io/config.mirror"],
        "km-executor"
    );
    assert_eq!(
        mirror.spec.as_ref().unwrap().node_name.as_deref(),
        Some(n.hostname.as_str())
    );
    // The executor still serves: the crashing pod is still being restarted.
    n.wait_pod("crash", "restarted twice", |p| {
        container_status(p, "c").is_some_and(|c| c.restart_count >= 2)
    })
    .await;
    n.shutdown().await;
}

/// kill -9 of the executor worker: the supervisor starts a new one, which
/// re-adopts the running containers (same ids, no restart) and still
/// handles the pod's deletion.
#[tokio::test]
async fn a_killed_executor_worker_readopts_its_containers() {
    let n = node(
        "cpus:4;mem:2048;ports:[31000-31100]",
        &["--executor-suicide-timeout", "3s"],
    )
    .await;
    let pod = n
        .create(json!({
            "metadata": {"name": "steady"},
            "spec": {"schedulerName": "k8sm-scheduler", "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "c", "image": IMAGE, "command": ["sleep", "3600"],
                    "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}}}]}
        }))
        .await;
    let uid = pod.metadata.uid.clone().unwrap();
    let p = n
        .wait_pod("steady", "Running", |p| phase(p) == "Running")
        .await;
    let before = container_status(&p, "c")
        .unwrap()
        .container_id
        .clone()
        .unwrap();
    let running_before = containers_of(&uid);
    let workers = n.workers();
    assert_eq!(workers.len(), 1, "one executor worker: {workers:?}");
    std::process::Command::new("kill")
        .args(["-9", &workers[0].to_string()])
        .status()
        .unwrap();
    let mut new = Vec::new();
    for _ in 0..100 {
        new = n.workers();
        if !new.is_empty() && new != workers {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !new.is_empty() && new != workers,
        "a new worker started: {new:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        containers_of(&uid),
        running_before,
        "the same containers run"
    );
    let p = n
        .wait_pod("steady", "Running", |p| phase(p) == "Running")
        .await;
    let c = container_status(&p, "c").unwrap();
    assert_eq!(c.container_id.as_deref(), Some(before.as_str()));
    assert_eq!(c.restart_count, 0);
    // The new worker owns the pod: deleting it works end to end.
    n.pods()
        .delete("steady", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    for _ in 0..100 {
        if n.pods().get_opt("steady").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(n.pods().get_opt("steady").await.unwrap().is_none());
    assert!(containers_of(&uid).is_empty());
    // Idle now: the executor exits after --suicide-timeout (the scheduler's
    // --executor-suicide-timeout 3s), and the agent sees it gone.
    for _ in 0..300 {
        if n.workers().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(n.workers().is_empty(), "the idle executor exited");
    n.shutdown().await;
}
