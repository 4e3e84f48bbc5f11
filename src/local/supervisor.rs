//! Running the parts. A child part is `km <role> ...` in a process group of
//! its own (so the Ctrl-C meant for `km local` does not reach it and stop it
//! out of order), with its output appended to its log file and its pid in
//! its pid file. An in-process part is the role's run as a task of km local,
//! with stop and drain tokens of its own; its log lines are routed to its
//! log file by their target ([`crate::logging::route`]), an agent's by the
//! span its tasks carry ([`crate::logging::route_span`]), since several
//! agents share their targets. A part that ends while km local
//! runs is restarted with backoff; stopping stops the parts in reverse start
//! order (a signal, or the part's stop token) and waits for each.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::inproc;
use super::plan::{Host, Layout, Part, Ready, Stop};

/// How long a stopped part has before it is killed: agents get the time
/// their executors need to stop their pods.
const STOP_GRACE: Duration = Duration::from_secs(10);
const DRAIN_GRACE: Duration = Duration::from_secs(40);
/// First and longest pause before a crashed part is started again.
const RESTART_MIN: Duration = Duration::from_millis(250);
const RESTART_MAX: Duration = Duration::from_secs(30);
/// A part up this long is considered healthy again: its backoff resets.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// One part's exit.
#[derive(Debug)]
pub struct Exited {
    /// Index into the plan.
    pub index: usize,
    /// Which start of that part ended.
    pub generation: u64,
    /// How it ended.
    pub status: Ending,
}

/// How a part ended.
#[derive(Debug)]
pub enum Ending {
    /// A child process exited (None: its status could not be read).
    Process(Option<ExitStatus>),
    /// An in-process role returned: Ok, or its error (or panic) as text.
    Task(Result<(), String>),
}

/// How a started part is reached.
enum Handle {
    Child {
        pid: u32,
    },
    Task {
        stop: CancellationToken,
        drain: CancellationToken,
        abort: tokio::task::AbortHandle,
    },
}

/// A started part.
struct Running {
    handle: Handle,
    generation: u64,
    started: Instant,
}

/// The children of `km local`.
pub struct Supervisor {
    km: PathBuf,
    layout: Layout,
    parts: Vec<Part>,
    running: Vec<Option<Running>>,
    restarts: Vec<u32>,
    generation: u64,
    exits_tx: mpsc::UnboundedSender<Exited>,
    exits: mpsc::UnboundedReceiver<Exited>,
    http: reqwest::Client,
}

/// "exit status 1", "signal 9 (SIGKILL)" or "error: ...".
pub fn describe_exit(status: &Ending) -> String {
    match status {
        Ending::Task(Ok(())) => "no error".into(),
        Ending::Task(Err(e)) => format!("error: {e}"),
        Ending::Process(None) => "an unknown status".into(),
        Ending::Process(Some(s)) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (_, Some(9)) => "signal 9 (SIGKILL)".into(),
            (_, Some(15)) => "signal 15 (SIGTERM)".into(),
            (_, Some(n)) => format!("signal {n}"),
            _ => "an unknown status".into(),
        },
    }
}

impl Supervisor {
    /// A supervisor of `parts`, started as `km` subcommands of `km`.
    pub fn new(km: &Path, layout: Layout, parts: Vec<Part>) -> anyhow::Result<Supervisor> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (exits_tx, exits) = mpsc::unbounded_channel();
        let n = parts.len();
        Ok(Supervisor {
            km: km.to_path_buf(),
            layout,
            parts,
            running: (0..n).map(|_| None).collect(),
            restarts: vec![0; n],
            generation: 0,
            exits_tx,
            exits,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .no_proxy()
                .build()?,
        })
    }

    /// The plan.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Starts part `index` (its previous run must have ended).
    pub fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        self.generation += 1;
        let generation = self.generation;
        let handle = match self.parts[index].host {
            Host::Child => self.spawn_child(index, generation)?,
            Host::InProcess => self.spawn_task(index, generation)?,
        };
        self.running[index] = Some(Running {
            handle,
            generation,
            started: Instant::now(),
        });
        Ok(())
    }

    /// Part `name`'s log file, opened for appending.
    fn open_log(&self, name: &str) -> anyhow::Result<std::fs::File> {
        let path = self.layout.log(name);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))
    }

    fn spawn_child(&self, index: usize, generation: u64) -> anyhow::Result<Handle> {
        let part = &self.parts[index];
        let log = self.open_log(&part.name)?;
        let mut child = tokio::process::Command::new(&self.km)
            .args(&part.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .with_context(|| format!("cannot start {} {}", self.km.display(), part.args[0]))?;
        let pid = child.id().unwrap_or(0);
        let pid_file = self.layout.pid_file(&part.name);
        std::fs::write(&pid_file, format!("{pid}\n"))
            .with_context(|| format!("cannot write {}", pid_file.display()))?;
        let tx = self.exits_tx.clone();
        tokio::spawn(async move {
            let status = Ending::Process(child.wait().await.ok());
            let _ = tx.send(Exited {
                index,
                generation,
                status,
            });
        });
        Ok(Handle::Child { pid })
    }

    fn spawn_task(&self, index: usize, generation: u64) -> anyhow::Result<Handle> {
        let part = &self.parts[index];
        let stop = CancellationToken::new();
        let drain = CancellationToken::new();
        let run = inproc::role(&part.args, stop.clone(), drain.clone())?;
        let span = if part.stop == Stop::Drain {
            let span = tracing::info_span!("agent", part = %part.name);
            crate::logging::route_span(&span, self.open_log(&part.name)?);
            span
        } else {
            tracing::Span::none()
        };
        let task = tokio::spawn(run.instrument(span));
        let abort = task.abort_handle();
        let tx = self.exits_tx.clone();
        tokio::spawn(async move {
            let status = Ending::Task(match task.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(e) if e.is_panic() => Err(format!("panicked: {}", panic_text(e.into_panic()))),
                Err(_) => Err("cancelled".into()),
            });
            let _ = tx.send(Exited {
                index,
                generation,
                status,
            });
        });
        Ok(Handle::Task { stop, drain, abort })
    }

    /// Waits until part `index` is ready, or fails naming why (with the end
    /// of its log if it exited).
    pub async fn wait_ready(&mut self, index: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.is_ready(index).await {
                return Ok(());
            }
            // An exit of this part while waiting is fatal; others are kept for the loop.
            while let Ok(exit) = self.exits.try_recv() {
                if self.current(&exit) {
                    self.running[exit.index] = None;
                    let part = &self.parts[exit.index];
                    bail!(
                        "{} exited with {} before it was ready; the end of {}:\n{}",
                        part.name,
                        describe_exit(&exit.status),
                        self.layout.log(&part.name).display(),
                        tail(&self.layout.log(&part.name), 15)
                    );
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let part = &self.parts[index];
                bail!(
                    "{} is not ready after {}; the end of {}:\n{}",
                    part.name,
                    humantime::format_duration(timeout),
                    self.layout.log(&part.name).display(),
                    tail(&self.layout.log(&part.name), 15)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn is_ready(&self, index: usize) -> bool {
        match &self.parts[index].ready {
            Ready::ApiServer { addr } => {
                // Not before it listens: the client would log each refusal.
                let path = self.layout.kubeconfig();
                if !path.exists() || tokio::net::TcpStream::connect(addr.as_str()).await.is_err() {
                    return false;
                }
                let Ok(client) = crate::kubeclient::from_kubeconfig(Some(&path)).await else {
                    return false;
                };
                tokio::time::timeout(Duration::from_secs(2), client.apiserver_version())
                    .await
                    .is_ok_and(|r| r.is_ok())
            }
            Ready::Http(url) => self
                .http
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()),
            Ready::AgentRegistered {
                state_url,
                hostname,
            } => agent_registered(&self.http, state_url, hostname).await,
        }
    }

    fn current(&self, exit: &Exited) -> bool {
        self.running[exit.index]
            .as_ref()
            .is_some_and(|r| r.generation == exit.generation)
    }

    /// The next exit of a current part, to be handled by [`Self::restart_later`].
    pub async fn next_exit(&mut self) -> Exited {
        loop {
            let exit = self
                .exits
                .recv()
                .await
                .expect("the supervisor holds a sender");
            if self.current(&exit) {
                return exit;
            }
        }
    }

    /// Notes an exit and says how long to wait before starting it again.
    pub fn exited(&mut self, exit: &Exited) -> Duration {
        let up = self.running[exit.index]
            .take()
            .map(|r| r.started.elapsed())
            .unwrap_or_default();
        if up >= HEALTHY_AFTER {
            self.restarts[exit.index] = 0;
        }
        let n = self.restarts[exit.index];
        self.restarts[exit.index] = n.saturating_add(1);
        RESTART_MIN
            .saturating_mul(2u32.saturating_pow(n.min(10)))
            .min(RESTART_MAX)
    }

    /// How often part `index` was restarted since it was last healthy.
    pub fn restarts(&self, index: usize) -> u32 {
        self.restarts[index]
    }

    /// Whether part `index` runs now.
    pub fn is_running(&self, index: usize) -> bool {
        self.running[index].is_some()
    }

    /// Stops every running part in reverse start order; `progress` hears of each.
    pub async fn stop_all(&mut self, mut progress: impl FnMut(&str, Duration, bool)) {
        for index in (0..self.parts.len()).rev() {
            let Some(running) = self.running[index].as_ref() else {
                continue;
            };
            let began = Instant::now();
            let grace = match self.parts[index].stop {
                Stop::Term => STOP_GRACE,
                Stop::Drain => DRAIN_GRACE,
            };
            match &running.handle {
                Handle::Child { pid } => {
                    let signal = match self.parts[index].stop {
                        Stop::Term => "TERM",
                        Stop::Drain => "USR1",
                    };
                    send_signal(signal, &[pid.to_string()]);
                }
                Handle::Task { stop, drain, .. } => match self.parts[index].stop {
                    Stop::Term => stop.cancel(),
                    Stop::Drain => drain.cancel(),
                },
            }
            let clean = self.wait_exit(index, grace).await;
            if !clean {
                match self.running[index].as_ref().map(|r| &r.handle) {
                    Some(Handle::Child { pid }) => {
                        send_signal("KILL", &[format!("-{pid}"), pid.to_string()])
                    }
                    Some(Handle::Task { abort, .. }) => abort.abort(),
                    None => {}
                }
                self.wait_exit(index, Duration::from_secs(5)).await;
            }
            self.running[index] = None;
            if self.parts[index].host == Host::Child {
                let _ = std::fs::remove_file(self.layout.pid_file(&self.parts[index].name));
            }
            progress(&self.parts[index].name, began.elapsed(), clean);
        }
    }

    async fn wait_exit(&mut self, index: usize, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.exits.recv()).await {
                Ok(Some(exit)) if exit.index == index && self.current(&exit) => return true,
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return false,
            }
        }
    }
}

/// A panic's message, when it has one.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Whether the master's `/state` lists an agent named `hostname`.
pub async fn agent_registered(http: &reqwest::Client, state_url: &str, hostname: &str) -> bool {
    let Ok(resp) = http.get(state_url).send().await else {
        return false;
    };
    let Ok(state) = resp.json::<serde_json::Value>().await else {
        return false;
    };
    state["slaves"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["hostname"] == hostname && s["active"] != false)
}

/// Sends `signal` (a name such as TERM) to `targets` with the system `kill`
/// utility (the crate has no unsafe code and no syscall wrapper).
pub fn send_signal(signal: &str, targets: &[String]) {
    let _ = std::process::Command::new("kill")
        .arg("-s")
        .arg(signal)
        .arg("--")
        .args(targets)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last `lines` lines of a file (at most its last 64 KiB).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return "  (no log)".into();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut text = String::new();
    let mut bytes = Vec::new();
    if f.read_to_end(&mut bytes).is_ok() {
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_described_by_code_or_signal() {
        assert_eq!(
            describe_exit(&Ending::Process(Some(ExitStatus::from_raw(1 << 8)))),
            "exit status 1"
        );
        assert_eq!(
            describe_exit(&Ending::Process(Some(ExitStatus::from_raw(9)))),
            "signal 9 (SIGKILL)"
        );
        assert_eq!(describe_exit(&Ending::Process(None)), "an unknown status");
        assert_eq!(
            describe_exit(&Ending::Task(Err("port 6443 is taken".into()))),
            "error: port 6443 is taken"
        );
    }

    /// A dev-master run inside this process: ready on its port, stopped by
    /// its token, the port free again afterwards.
    #[tokio::test]
    async fn an_in_process_part_starts_answers_and_stops_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let part = Part {
            name: "dev-master".into(),
            args: [
                "dev-master",
                "--ip",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ]
            .map(String::from)
            .to_vec(),
            host: Host::InProcess,
            ready: Ready::Http(format!("http://127.0.0.1:{port}/health")),
            stop: Stop::Term,
            summary: String::new(),
        };
        let layout = Layout::new(dir.path());
        let mut sup =
            Supervisor::new(Path::new("/nonexistent/km"), layout.clone(), vec![part]).unwrap();
        sup.spawn(0).unwrap();
        sup.wait_ready(0, Duration::from_secs(20)).await.unwrap();
        assert!(sup.is_running(0));
        assert!(
            !layout.pid_file("dev-master").exists(),
            "no pid file for a task"
        );
        let mut stopped = Vec::new();
        sup.stop_all(|name, _, clean| stopped.push((name.to_string(), clean)))
            .await;
        assert_eq!(stopped, [("dev-master".to_string(), true)]);
        assert!(!sup.is_running(0));
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free again");
    }

    #[tokio::test]
    async fn an_in_process_part_with_bad_flags_does_not_start() {
        let dir = tempfile::tempdir().unwrap();
        let part = Part {
            name: "dev-master".into(),
            args: ["dev-master", "--bogus"].map(String::from).to_vec(),
            host: Host::InProcess,
            ready: Ready::Http("http://127.0.0.1:1/health".into()),
            stop: Stop::Term,
            summary: String::new(),
        };
        let mut sup = Supervisor::new(
            Path::new("/nonexistent/km"),
            Layout::new(dir.path()),
            vec![part],
        )
        .unwrap();
        let err = sup.spawn(0).expect_err("bad flags are refused");
        assert!(format!("{err:#}").contains("--bogus"), "{err:#}");
        assert!(!sup.is_running(0));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        std::fs::write(&p, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail(&p, 2), "  c\n  d");
        assert_eq!(tail(&dir.path().join("none"), 2), "  (no log)");
    }
}
