//! pymesos, an independent Mesos client from PyPI, drives a framework through
//! km dev-master (and dev-agent): offers, a launched command task, its states.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::support::{free_port, km};

/// Kills the child when the test ends, passed or not.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
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
