//! pymesos, an independent Mesos client from PyPI, drives a framework through
//! km dev-master (and dev-agent): offers, a launched command task, its states.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::support::{free_port, km};

/// Stops the child when the test ends, passed or not: SIGTERM so it cleans
/// up (cgroups, executors), SIGKILL if it is still there after 5 s.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_http(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn dev_master(extra: &[&str]) -> (Guard, u16) {
    let port = free_port();
    let child = Command::new(km())
        .args(["dev-master", "--port", &port.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("km dev-master starts");
    wait_for_http(port);
    (Guard(child), port)
}

fn pymesos(master_port: u16, expect: &str) -> (bool, String) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/mesos/pymesos_framework.py"
    );
    let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .args([
            script,
            "--master",
            &format!("127.0.0.1:{master_port}"),
            "--expect",
            expect,
            "--timeout",
            "30",
        ])
        .output()
        .expect("python3 runs (scripts/test-deps.sh installs pymesos)");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn pymesos_launches_a_task_on_a_hollow_agent() {
    let (_master, port) = dev_master(&["--hollow-agents", "2", "--hollow-task-delay", "50ms"]);
    let (ok, out) = pymesos(port, "TASK_RUNNING");
    assert!(ok, "pymesos did not see TASK_RUNNING:\n{out}");
}

#[test]
fn pymesos_runs_a_command_task_on_a_dev_agent() {
    let (_master, port) = dev_master(&["--allocation-interval", "200ms"]);
    let work = tempfile::tempdir().unwrap();
    let agent_port = free_port();
    let agent = Command::new(km())
        .args([
            "dev-agent",
            "--master",
            &format!("127.0.0.1:{port}"),
            "--port",
            &agent_port.to_string(),
        ])
        .args([
            "--resources",
            "cpus:2;mem:1024;disk:1000;ports:[31000-31100]",
            "--attributes",
            "rack:a",
        ])
        .arg("--work-dir")
        .arg(work.path())
        .arg("--cgroups-root")
        .arg(format!("km-test-{agent_port}"))
        .stdout(Stdio::null())
        .spawn()
        .expect("km dev-agent starts");
    let _agent = Guard(agent);
    wait_for_http(agent_port);
    let (ok, out) = pymesos(port, "TASK_RUNNING,TASK_FINISHED");
    assert!(
        ok,
        "pymesos did not see TASK_RUNNING then TASK_FINISHED:\n{out}"
    );
    assert!(out.contains("Command exited with status 0"), "{out}");
}
