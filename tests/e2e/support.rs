//! The harness of the end-to-end suite (also used by benches/e2e.rs): one
//! `km local` process, the real binary, driven through the machine's kubectl
//! and checked against Docker and /proc.
//!
//! * [`Setup`] is what outlives one `km local` process: a temporary
//!   directory holding the data dir, the ports, the node name and the test's
//!   namespaces. Dropping it kills whatever is left of its processes and
//!   removes the containers of its namespaces, so a failing test leaves the
//!   machine clean.
//! * [`Local`] is one running `km local`. Dropping it sends SIGTERM, waits,
//!   then kills it.
//! * Only one `km local` runs at a time in a test binary ([`exclusive`]):
//!   they all share the one Docker daemon and the machine's host ports.
//!
//! Ports are a block of consecutive free ports between 20000 and 30000,
//! checked by binding each: below the kernel's ephemeral range, so no
//! outgoing connection takes one between the check and km local's bind.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The busybox image scripts/test-deps.sh builds (`make test` runs it). A
/// versioned tag, so pods use it without a pull (there is no registry).
pub const IMAGE: &str = "km-test/busybox:1";

/// How long `km local` may take to print that it is ready.
pub const READY_WITHIN: Duration = Duration::from_secs(120);

/// Generous deadline for things a cluster does on its own.
pub const WAIT: Duration = Duration::from_secs(180);

/// The environment variable that marks the processes of one km local (its
/// children inherit it; executors do not: the agent gives them a clean
/// environment, and they are found by `MESOS_AGENT_ENDPOINT`).
const TAG_VAR: &str = "E2E_KM_LOCAL";

/// The km binary under test: cargo builds it for tests and benches alike
/// (`target/debug/km` for `cargo test`, `target/release/km` for `cargo bench`).
pub fn km_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_km"))
}

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds the right to run a km local in this process until dropped.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

/// The ports of one km local.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// `--api-port`.
    pub api: u16,
    /// `--master-port`.
    pub master: u16,
    /// `--agent-port` (agent i listens on `agent + i - 1`).
    pub agent: u16,
    /// `--scheduler-port`.
    pub scheduler: u16,
    /// `--controller-manager-port`.
    pub controller_manager: u16,
    /// `--proxy-healthz-port`.
    pub proxy_healthz: u16,
    /// `--proxy-metrics-port`.
    pub proxy_metrics: u16,
}

/// Whether `port` can be bound on every address (loopback included).
fn port_free(port: u16) -> bool {
    TcpListener::bind(("0.0.0.0", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A free port in `range`, checked by binding it.
pub fn free_port_in(range: std::ops::Range<u16>) -> u16 {
    for _ in 0..1000 {
        let p = fastrand::u16(range.clone());
        if port_free(p) {
            return p;
        }
    }
    panic!("no free port in {range:?}");
}

impl Ports {
    /// A block of consecutive free ports for a km local with `agents` agents.
    pub fn pick(agents: u16) -> Ports {
        let n = 6 + agents;
        for _ in 0..1000 {
            let base = fastrand::u16(20000..30000 - n);
            if (base..base + n).all(port_free) {
                return Ports {
                    api: base,
                    master: base + 1,
                    scheduler: base + 2,
                    controller_manager: base + 3,
                    proxy_healthz: base + 4,
                    proxy_metrics: base + 5,
                    agent: base + 6,
                };
            }
        }
        panic!("no block of {n} free ports between 20000 and 30000");
    }
}

/// What outlives one km local process: its data dir, ports, node name and
/// the namespaces whose containers are removed at the end.
pub struct Setup {
    root: tempfile::TempDir,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// The ports.
    pub ports: Ports,
    /// `--hostname`: the node name of agent 1.
    pub hostname: String,
    /// `--agents`.
    pub agents: u16,
    /// A short unique word for names.
    pub tag: String,
    /// `--agent-resources` (default `cpus:8;mem:16384`).
    pub agent_resources: String,
    /// Extra `km local` flags.
    pub extra: Vec<String>,
    namespaces: Mutex<BTreeSet<String>>,
    starts: u32,
}

impl Setup {
    /// A fresh data dir, ports and node name for a km local of `agents` agents.
    pub fn new(agents: u16) -> Setup {
        let image = std::process::Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", IMAGE])
            .output()
            .expect("the docker CLI runs");
        assert!(
            image.status.success(),
            "image {IMAGE} is missing: run scripts/test-deps.sh (`make test` does)"
        );
        let root = tempfile::Builder::new()
            .prefix("km-e2e-")
            .tempdir()
            .unwrap();
        let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        Setup {
            data_dir: root.path().join("data"),
            root,
            ports: Ports::pick(agents),
            hostname: format!("e2e-{tag}"),
            agents,
            tag,
            agent_resources: "cpus:8;mem:16384".into(),
            extra: Vec::new(),
            namespaces: Mutex::new(BTreeSet::new()),
            starts: 0,
        }
    }

    /// The admin kubeconfig km local writes.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// `host:port` of agent `i` (1-based), as in its executors' `MESOS_AGENT_ENDPOINT`.
    pub fn agent_endpoint(&self, i: u16) -> String {
        format!("127.0.0.1:{}", self.ports.agent + i - 1)
    }

    /// Node name of agent `i` (1-based).
    pub fn node_name(&self, i: u16) -> String {
        if i == 1 {
            self.hostname.clone()
        } else {
            format!("{}-{i}", self.hostname)
        }
    }

    /// What the latest `km local` of this setup wrote on stderr (its
    /// progress lines).
    pub fn last_stderr(&self) -> String {
        let path = self
            .root
            .path()
            .join(format!("km-local.{}.stderr", self.starts));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// The pid written in `DIR/run/<part>.pid`, if any.
    pub fn pid_of(&self, part: &str) -> Option<u32> {
        std::fs::read_to_string(self.data_dir.join("run").join(format!("{part}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Every pid in `DIR/run/*.pid`, by part.
    pub fn part_pids(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.data_dir.join("run"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(part) = name.strip_suffix(".pid")
                && let Some(pid) = self.pid_of(part)
            {
                out.push((part.to_string(), pid));
            }
        }
        out.sort();
        out
    }

    /// Executor processes (supervisors and workers) of this km local's agents.
    pub fn executors(&self) -> Vec<u32> {
        let endpoints: Vec<String> = (1..=self.agents)
            .map(|i| format!("MESOS_AGENT_ENDPOINT={}", self.agent_endpoint(i)))
            .collect();
        all_pids()
            .into_iter()
            .filter(|pid| cmdline(*pid).contains("executor"))
            .filter(|pid| {
                let env = environ(*pid);
                endpoints.iter().any(|e| env.iter().any(|v| v == e))
            })
            .collect()
    }

    /// Every live process of this km local: km local itself, its children
    /// (marked by the tag in their environment) and the executors.
    pub fn processes(&self) -> Vec<u32> {
        let mark = format!("{TAG_VAR}={}", self.tag);
        let mut out: BTreeSet<u32> = all_pids()
            .into_iter()
            .filter(|pid| environ(*pid).contains(&mark))
            .collect();
        out.extend(self.executors());
        out.into_iter().filter(|p| alive(*p)).collect()
    }

    /// Records `ns` as one of the test's namespaces: its containers are
    /// removed when the setup is dropped.
    pub fn track_namespace(&self, ns: &str) {
        self.namespaces.lock().unwrap().insert(ns.to_string());
    }

    /// The test's namespaces.
    pub fn namespaces(&self) -> Vec<String> {
        self.namespaces.lock().unwrap().iter().cloned().collect()
    }

    /// The last lines of km local's stderr and of its parts' logs, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.root.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "stderr"))
            .collect();
        files.sort();
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.data_dir.join("logs"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        logs.sort();
        files.extend(logs);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            out.push_str(&format!("--- {} (last lines)\n", f.display()));
            for l in tail {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Kills what is left of this km local and removes the containers of
    /// the test's namespaces (blocking: runs from `Drop`).
    fn cleanup(&self) {
        for pid in self.processes() {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let namespaces = self.namespaces();
        if namespaces.is_empty() {
            return;
        }
        let out = std::process::Command::new("docker")
            .args([
                "ps",
                "-a",
                "--filter",
                "label=io.kubernetes.pod.namespace",
                "--format",
                "{{.ID}} {{.Label \"io.kubernetes.pod.namespace\"}}",
            ])
            .output();
        let Ok(out) = out else { return };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (id, ns) = l.split_once(' ')?;
                namespaces.iter().any(|n| n == ns).then(|| id.to_string())
            })
            .collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .status();
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// One running `km local`.
pub struct Local {
    setup: Option<Setup>,
    child: Option<tokio::process::Child>,
    /// km local's pid.
    pub pid: u32,
    /// From spawning the process to its `km local is ready` line.
    pub ready_after: Duration,
    /// When the process was spawned.
    pub spawned: Instant,
    stdout: Arc<Mutex<Vec<String>>>,
    client: Option<kube::Client>,
}

impl Local {
    /// Starts `km local` on `setup` and waits for its ready line.
    pub async fn start(mut setup: Setup) -> Local {
        setup.starts += 1;
        let p = setup.ports;
        let stderr_path = setup
            .root
            .path()
            .join(format!("km-local.{}.stderr", setup.starts));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = tokio::process::Command::new(km_binary());
        cmd.arg("local")
            .arg("--data-dir")
            .arg(&setup.data_dir)
            .args(["--agents", &setup.agents.to_string()])
            .args(["--agent-resources", &setup.agent_resources])
            .args(["--hostname", &setup.hostname])
            .args(["--bind-address", "127.0.0.1"])
            .args(["--api-port", &p.api.to_string()])
            .args(["--master-port", &p.master.to_string()])
            .args(["--agent-port", &p.agent.to_string()])
            .args(["--scheduler-port", &p.scheduler.to_string()])
            .args([
                "--controller-manager-port",
                &p.controller_manager.to_string(),
            ])
            // Userspace: the tests do not program the machine's nftables.
            .args(["--proxy-mode", "userspace"])
            .args(["--proxy-healthz-port", &p.proxy_healthz.to_string()])
            .args(["--proxy-metrics-port", &p.proxy_metrics.to_string()])
            .args(&setup.extra)
            .env(TAG_VAR, &setup.tag)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(false);
        let spawned = Instant::now();
        let mut child = cmd.spawn().expect("km local starts");
        let pid = child.id().expect("km local has a pid");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let mut local = Local {
            setup: Some(setup),
            child: Some(child),
            pid,
            ready_after: Duration::ZERO,
            spawned,
            stdout: stdout.clone(),
            client: None,
        };
        let ready = tokio::time::timeout(READY_WITHIN, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let is_ready = line.starts_with("km local is ready");
                stdout.lock().unwrap().push(line);
                if is_ready {
                    return true;
                }
            }
            false
        })
        .await;
        local.ready_after = spawned.elapsed();
        match ready {
            Ok(true) => {}
            Ok(false) => {
                let status = local.child.as_mut().unwrap().wait().await;
                panic!(
                    "km local exited ({status:?}) before it was ready\n{}",
                    local.setup().diagnostics()
                );
            }
            Err(_) => panic!(
                "km local did not print `km local is ready` within {READY_WITHIN:?}\n{}",
                local.setup().diagnostics()
            ),
        }
        // The summary follows the ready line; keep reading so the pipe never fills.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                stdout.lock().unwrap().push(line);
            }
        });
        km::mesos::scheduler::install_crypto_provider();
        let client = km::kubeclient::from_kubeconfig(Some(&local.kubeconfig()))
            .await
            .expect("the kubeconfig km local wrote is usable");
        local.client = Some(client);
        local
    }

    /// The setup this km local runs on.
    pub fn setup(&self) -> &Setup {
        self.setup.as_ref().expect("running")
    }

    /// `DIR/kubeconfig`.
    pub fn kubeconfig(&self) -> PathBuf {
        self.setup().kubeconfig()
    }

    /// A kube-rs client from the kubeconfig.
    pub fn client(&self) -> kube::Client {
        self.client.clone().expect("ready")
    }

    /// The pods of `ns`.
    pub fn pods(&self, ns: &str) -> kube::Api<Pod> {
        kube::Api::namespaced(self.client(), ns)
    }

    /// What km local printed on stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// `http://127.0.0.1:<master-port>/state` as JSON.
    pub async fn mesos_state(&self) -> serde_json::Value {
        let body = http_get(("127.0.0.1", self.setup().ports.master), "/state")
            .await
            .expect("the dev-master serves /state");
        serde_json::from_str(&body).expect("/state is JSON")
    }

    /// Creates namespace `<prefix>-<tag>` with `kubectl apply` and tracks it for cleanup.
    pub async fn namespace(&self, prefix: &str) -> String {
        let ns = format!("{prefix}-{}", self.setup().tag);
        self.setup().track_namespace(&ns);
        // `kubectl create namespace` would send protobuf, which km apiserver
        // does not take (it says so); a manifest is JSON.
        let manifest = format!(
            r#"{{"apiVersion": "v1", "kind": "Namespace", "metadata": {{"name": "{ns}"}}}}"#
        );
        self.kubectl_stdin(&["apply", "-f", "-"], &manifest).await;
        ns
    }

    /// Runs kubectl with this km local's kubeconfig.
    pub async fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs (scripts/test-deps.sh installs it)");
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).await.unwrap();
        }
        drop(input);
        child.wait_with_output().await.unwrap()
    }

    /// kubectl that must succeed: its stdout.
    pub async fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args, None).await;
        self.succeeded(args, out)
    }

    /// kubectl with a manifest on stdin (`-f -`) that must succeed.
    pub async fn kubectl_stdin(&self, args: &[&str], manifest: &str) -> String {
        let out = self.kubectl_output(args, Some(manifest)).await;
        self.succeeded(args, out)
    }

    /// `kubectl apply -f -` of `manifest` in namespace `ns`.
    pub async fn apply(&self, ns: &str, manifest: &str) -> String {
        self.kubectl_stdin(&["-n", ns, "apply", "-f", "-"], manifest)
            .await
    }

    /// Waits for `kubectl rollout status` of `deployment` in `ns` (3 minutes at most).
    pub async fn rolled_out(&self, ns: &str, deployment: &str) {
        let target = format!("deployment/{deployment}");
        self.kubectl(&["-n", ns, "rollout", "status", &target, "--timeout=180s"])
            .await;
    }

    fn succeeded(&self, args: &[&str], out: Output) -> String {
        assert!(
            out.status.success(),
            "kubectl {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            self.setup().diagnostics()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends `signal` (e.g. `INT`, `TERM`) and waits for km local to exit:
    /// its exit status, and the setup for another start.
    pub async fn stop(mut self, signal: &str) -> (ExitStatus, Setup) {
        signal_pid(self.pid, signal).await;
        let mut child = self.child.take().unwrap();
        let status = match tokio::time::timeout(WAIT, child.wait()).await {
            Ok(s) => s.unwrap(),
            Err(_) => {
                self.child = Some(child);
                panic!(
                    "km local did not exit within {WAIT:?} of SIG{signal}\n{}",
                    self.setup().diagnostics()
                );
            }
        };
        (status, self.setup.take().unwrap())
    }
}

impl Drop for Local {
    /// SIGTERM, a wait, then SIGKILL; the setup's own drop removes leftovers.
    fn drop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.start_kill();
                let _ = std::process::Command::new("kill")
                    .args(["-9", &self.pid.to_string()])
                    .status();
            }
        }
    }
}

/// Polls `check` until it gives a value; panics with `what` and the last
/// reason after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(why) if Instant::now() >= deadline => {
                panic!("{what}: not within {within:?}; last: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// `kill -<signal> <pid>`.
pub async fn signal_pid(pid: u32, signal: &str) {
    let status = tokio::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// The docker CLI; its stdout, trimmed.
pub async fn docker(args: &[&str]) -> String {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Ids of the containers (running or not, with `all`) carrying every label of `labels`.
pub async fn containers(all: bool, labels: &[(&str, &str)]) -> Vec<String> {
    let mut args = vec!["ps".to_string(), "-q".into(), "--no-trunc".into()];
    if all {
        args.push("-a".into());
    }
    for (k, v) in labels {
        args.push("--filter".into());
        args.push(format!("label={k}={v}"));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&refs)
        .await
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// `GET path` over HTTP/1.0: the body when the answer is 200.
pub async fn http_get(addr: impl tokio::net::ToSocketAddrs, path: &str) -> Option<String> {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: e2e\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
}

/// A pod's phase.
pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Whether a pod's Ready condition is True.
pub fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A pod's annotation.
pub fn annotation<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Every pid in /proc.
pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

/// A process's command line, arguments joined by spaces.
pub fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A process's environment, one `NAME=value` per entry.
pub fn environ(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .unwrap_or("");
    !matches!(state, "Z" | "X" | "x")
}

/// A `kB` field of `/proc/<pid>/<file>` (`status`'s `VmRSS:`, `smaps_rollup`'s `Pss:`).
pub fn proc_kb(pid: u32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
