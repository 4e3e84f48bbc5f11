//! Checks before anything starts, each failing with the fix: the data
//! directory is writable and not in use by another `km local`, the ports
//! are free, Docker answers. Also stops what an earlier `km local` that was
//! killed outright left running.

use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;

use anyhow::{Context, bail};

use super::plan::Layout;
use super::supervisor::send_signal;

/// Creates the data directory and its `logs/` and `run/`, proves it
/// writable, and takes its lock (held while the returned file is open).
pub fn data_dir(layout: &Layout) -> anyhow::Result<File> {
    let fix = |what: &str| {
        format!(
            "--data-dir {}: {what}; choose a directory you can write (e.g. --data-dir ~/.km/local) or fix its permissions",
            layout.root.display()
        )
    };
    for dir in [
        layout.root.clone(),
        layout.root.join("logs"),
        layout.root.join("run"),
    ] {
        std::fs::create_dir_all(&dir).with_context(|| fix("cannot create it"))?;
    }
    let probe = layout.root.join(".write-test");
    std::fs::write(&probe, b"ok").with_context(|| fix("not writable"))?;
    let _ = std::fs::remove_file(&probe);
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(layout.lock())
        .with_context(|| fix("cannot open its lock file"))?;
    if lock.try_lock().is_err() {
        let holder = std::fs::read_to_string(layout.lock()).unwrap_or_default();
        bail!(
            "--data-dir {}: another km local is using it{}; stop that one first (Ctrl-C), or pass another --data-dir",
            layout.root.display(),
            holder
                .trim()
                .parse::<u32>()
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default()
        );
    }
    std::fs::write(layout.lock(), format!("{}\n", std::process::id()))
        .with_context(|| fix("cannot write its lock file"))?;
    Ok(lock)
}

/// Stops processes an earlier `km local` with this data directory left
/// running (it was killed without its cleanup): those its pid files name
/// that are still `km` processes. Returns their names.
pub fn stop_leftovers(layout: &Layout) -> Vec<String> {
    let mut stopped = Vec::new();
    let Ok(dir) = std::fs::read_dir(layout.root.join("run")) else {
        return stopped;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pid"))
            .map(str::to_string)
        else {
            continue;
        };
        let pid = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) = pid.filter(|p| is_km(*p)) {
            // Agents leave their executors running on SIGTERM; the next
            // agent adopts them, as after a Mesos agent restart.
            send_signal("TERM", &[pid.to_string()]);
            for _ in 0..100 {
                if !is_km(pid) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            if is_km(pid) {
                send_signal("KILL", &[pid.to_string()]);
            }
            stopped.push(format!("{name} (pid {pid})"));
        }
        let _ = std::fs::remove_file(&path);
    }
    stopped.sort();
    stopped
}

/// Whether `pid` runs a km binary.
fn is_km(pid: u32) -> bool {
    let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let argv0 = cmd.split(|b| *b == 0).next().unwrap_or_default();
    Path::new(&*String::from_utf8_lossy(argv0))
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("km"))
}

/// Fails naming the first port (and its flag) that cannot be bound.
pub fn ports(ports: &[(&str, IpAddr, u16)]) -> anyhow::Result<()> {
    for (flag, ip, port) in ports {
        if *port == 0 {
            bail!("{flag} 0: km local needs fixed ports; give a free port number");
        }
        let addr = SocketAddr::new(*ip, *port);
        if let Err(e) = TcpListener::bind(addr) {
            bail!(
                "port {port} ({flag}) is not free on {ip}: {e}; stop what listens there (ss -ltnp 'sport = :{port}') or choose another with {flag}"
            );
        }
    }
    Ok(())
}

/// Fails with the fix when Docker does not answer.
pub async fn docker() -> anyhow::Result<String> {
    let runtime = crate::executor::runtime::Runtime::connect(None)
        .await
        .context("pods run on Docker")?;
    let info = runtime.host_info().await.ok();
    Ok(info
        .map(|i| format!("Docker {} at {}", i.server_version, runtime.endpoint()))
        .unwrap_or_else(|| format!("Docker at {}", runtime.endpoint())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_names_the_port_and_its_flag() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = ports(&[("--api-port", "127.0.0.1".parse().unwrap(), port)])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("port {port} (--api-port)")), "{err}");
        assert!(err.contains("choose another with --api-port"), "{err}");
        drop(taken);
        ports(&[("--api-port", "127.0.0.1".parse().unwrap(), port)]).unwrap();
    }

    #[test]
    fn a_second_km_local_on_the_same_data_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let first = data_dir(&layout).unwrap();
        let err = data_dir(&layout).unwrap_err().to_string();
        assert!(err.contains("another km local is using it"), "{err}");
        drop(first);
        data_dir(&layout).unwrap();
    }

    #[test]
    fn an_unwritable_data_dir_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let err = format!(
            "{:#}",
            data_dir(&Layout::new(&file.join("sub"))).unwrap_err()
        );
        assert!(err.contains("cannot create it"), "{err}");
        assert!(err.contains("--data-dir"), "{err}");
    }
}
