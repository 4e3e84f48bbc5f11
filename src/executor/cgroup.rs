//! Per-pod cgroups under the executor's own cgroup.
//!
//! Mesos isolates the executor in a cgroup whose limits grow and shrink with
//! its tasks (seed 000, "Resource Accounting"). For those limits to cover the
//! pods, each pod's containers must live *inside* that cgroup: the executor
//! creates `<own cgroup>/km-pod-<uid>` in the cpu and memory hierarchies with
//! the pod's totals, and hands that path to Docker as the containers'
//! `cgroup_parent`; Docker then makes one leaf cgroup per container below it.
//!
//! This layering needs Docker's `cgroupfs` cgroup driver. With the `systemd`
//! driver Docker only accepts systemd slices as parents, which cannot nest
//! under a Mesos container, so [`PodCgroups::new`] refuses it with the fix.

use std::path::PathBuf;

use cgroups_rs::fs::Cgroup;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::hierarchies;
use cgroups_rs::fs::memory::MemController;

/// The controllers a pod cgroup is created in.
const CONTROLLERS: [&str; 2] = ["cpu", "memory"];

/// Limits of a whole pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodLimits {
    /// `cpu.shares`.
    pub cpu_shares: u64,
    /// CFS quota in microseconds per 100 ms period, when every container has a cpu limit.
    pub cpu_quota_us: Option<i64>,
    /// `memory.limit_in_bytes`, when every container has a memory limit.
    pub memory_bytes: Option<i64>,
}

/// CFS period of pod cgroups, microseconds.
pub const CFS_PERIOD_US: u64 = 100_000;

/// A cgroup operation failed, or pods cannot be contained on this host.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Docker's cgroup driver cannot nest pods under the executor.
    #[error(
        "Docker uses the {driver} cgroup driver, which cannot place pods under the executor's cgroup: \
         configure dockerd with native.cgroupdriver=cgroupfs, or start km executor with \
         --contain-pod-resources=false (pods are then not covered by the Mesos limits)"
    )]
    Driver {
        /// The driver Docker reported.
        driver: String,
    },
    /// `/proc/self/cgroup` could not be read or parsed.
    #[error("cannot tell the executor's own cgroup from /proc/self/cgroup: {0}")]
    Own(String),
    /// Creating, writing or removing a cgroup failed.
    #[error("cgroup {path}: {what}: {message}")]
    Op {
        /// The cgroup, relative to the hierarchy roots.
        path: String,
        /// What was being done.
        what: &'static str,
        /// The cause.
        message: String,
    },
}

/// Where pod cgroups go, or that they are not used.
#[derive(Clone, Debug)]
pub struct PodCgroups {
    /// The executor's cgroup relative to the hierarchy roots ("" for the root);
    /// `None` when pods are not contained.
    parent: Option<String>,
}

impl PodCgroups {
    /// Pods contained under the executor's own cgroup (`contain`), given
    /// Docker's cgroup driver; or not contained at all.
    pub fn new(contain: bool, docker_driver: &str) -> Result<PodCgroups, CgroupError> {
        if !contain {
            return Ok(PodCgroups { parent: None });
        }
        if docker_driver != "cgroupfs" {
            return Err(CgroupError::Driver {
                driver: docker_driver.to_string(),
            });
        }
        let text = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| CgroupError::Own(e.to_string()))?;
        let own = own_cgroup(&text).ok_or_else(|| CgroupError::Own(text.clone()))?;
        Ok(PodCgroups { parent: Some(own) })
    }

    /// Pods are not contained (containers get Docker's default parent).
    pub fn disabled() -> PodCgroups {
        PodCgroups { parent: None }
    }

    /// The executor's own cgroup, when pods are contained.
    pub fn executor_cgroup(&self) -> Option<&str> {
        self.parent.as_deref()
    }

    /// The pod's cgroup path (absolute, as Docker's `cgroup_parent` takes it).
    pub fn pod_path(&self, uid: &str) -> Option<String> {
        let parent = self.parent.as_deref()?;
        let parent = parent.trim_matches('/');
        Some(if parent.is_empty() {
            format!("/km-pod-{uid}")
        } else {
            format!("/{parent}/km-pod-{uid}")
        })
    }

    /// Creates (or updates) the pod's cgroup with its limits; returns the path.
    pub fn create(&self, uid: &str, limits: &PodLimits) -> Result<Option<String>, CgroupError> {
        let Some(path) = self.pod_path(uid) else {
            return Ok(None);
        };
        let rel = path.trim_start_matches('/');
        let cg = load(rel);
        cg.create().map_err(|e| op(rel, "creating", e))?;
        let cpu: &CpuController = cg
            .controller_of()
            .ok_or_else(|| op(rel, "finding the cpu controller", "not mounted"))?;
        cpu.set_shares(limits.cpu_shares.max(2))
            .map_err(|e| op(rel, "writing cpu.shares", e))?;
        cpu.set_cfs_quota_and_period(Some(limits.cpu_quota_us.unwrap_or(-1)), Some(CFS_PERIOD_US))
            .map_err(|e| op(rel, "writing the CFS quota", e))?;
        let mem: &MemController = cg
            .controller_of()
            .ok_or_else(|| op(rel, "finding the memory controller", "not mounted"))?;
        mem.set_limit(limits.memory_bytes.unwrap_or(-1))
            .map_err(|e| op(rel, "writing memory.limit_in_bytes", e))?;
        Ok(Some(path))
    }

    /// Removes the pod's cgroup once its containers are gone (Docker removes
    /// their leaf cgroups). A cgroup already gone is fine.
    pub fn remove(&self, uid: &str) -> Result<(), CgroupError> {
        let Some(path) = self.pod_path(uid) else {
            return Ok(());
        };
        let rel = path.trim_start_matches('/');
        let cg = load(rel);
        if !cg.exists() {
            return Ok(());
        }
        cg.delete().map_err(|e| op(rel, "removing", e))
    }

    /// The directory of the pod's cgroup in a v1 controller hierarchy
    /// (`memory`, `cpu`), for reading its files.
    pub fn controller_dir(&self, uid: &str, controller: &str) -> Option<PathBuf> {
        let path = self.pod_path(uid)?;
        let rel = path.trim_start_matches('/');
        let cg = load(rel);
        cg.subsystems()
            .iter()
            .map(|s| s.to_controller().path().to_path_buf())
            .find(|p| {
                p.components().any(|c| {
                    c.as_os_str()
                        .to_string_lossy()
                        .split(',')
                        .any(|n| n == controller)
                })
            })
    }
}

fn load(path: &str) -> Cgroup {
    Cgroup::load_with_specified_controllers(
        hierarchies::auto(),
        path,
        CONTROLLERS.iter().map(|c| c.to_string()).collect(),
    )
}

fn op(path: &str, what: &'static str, e: impl std::fmt::Display) -> CgroupError {
    CgroupError::Op {
        path: path.to_string(),
        what,
        message: e.to_string(),
    }
}

/// The executor's cgroup from `/proc/self/cgroup`: the memory controller's
/// path on cgroup v1 (the one Mesos's memory isolation limits), else the cpu
/// controller's, else the unified (v2) path.
pub fn own_cgroup(proc_self_cgroup: &str) -> Option<String> {
    let mut unified = None;
    let mut cpu = None;
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.is_empty() {
            unified = Some(path.to_string());
            continue;
        }
        let names: Vec<&str> = controllers.split(',').collect();
        if names.contains(&"memory") {
            return Some(path.to_string());
        }
        if names.contains(&"cpu") {
            cpu = Some(path.to_string());
        }
    }
    cpu.or(unified)
}

/// Sums container limits into pod limits: shares add up; a quota or a
/// memory limit exists only when every container has one (one unlimited
/// container makes the pod unlimited). `init` containers run one at a time
/// before the others, so the pod needs the larger of the biggest init
/// container and the sum of the app containers.
pub fn pod_limits(app: &[PodLimits], init: &[PodLimits]) -> PodLimits {
    fn sum(cs: &[PodLimits]) -> PodLimits {
        let mut out = PodLimits {
            cpu_shares: 0,
            cpu_quota_us: Some(0),
            memory_bytes: Some(0),
        };
        for c in cs {
            out.cpu_shares += c.cpu_shares;
            out.cpu_quota_us = out.cpu_quota_us.zip(c.cpu_quota_us).map(|(a, b)| a + b);
            out.memory_bytes = out.memory_bytes.zip(c.memory_bytes).map(|(a, b)| a + b);
        }
        out
    }
    let mut total = sum(app);
    for i in init {
        total.cpu_shares = total.cpu_shares.max(i.cpu_shares);
        total.cpu_quota_us = total
            .cpu_quota_us
            .zip(i.cpu_quota_us)
            .map(|(a, b)| a.max(b));
        total.memory_bytes = total
            .memory_bytes
            .zip(i.memory_bytes)
            .map(|(a, b)| a.max(b));
    }
    if app.is_empty() && init.is_empty() {
        total.cpu_quota_us = None;
        total.memory_bytes = None;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroup_prefers_memory_then_cpu_then_unified() {
        let v1 = "9:name=systemd:/\n4:memory:/mesos/abc\n1:cpu,cpuacct:/mesos/abc-cpu\n0::/\n";
        assert_eq!(own_cgroup(v1).as_deref(), Some("/mesos/abc"));
        assert_eq!(
            own_cgroup("1:cpu,cpuacct:/x\n0::/y\n").as_deref(),
            Some("/x")
        );
        assert_eq!(
            own_cgroup("0::/system.slice/km\n").as_deref(),
            Some("/system.slice/km")
        );
        assert_eq!(own_cgroup(""), None);
    }

    #[test]
    fn pod_paths_nest_under_the_executor() {
        let c = PodCgroups {
            parent: Some("/km-dev/c1".into()),
        };
        assert_eq!(c.pod_path("u1").as_deref(), Some("/km-dev/c1/km-pod-u1"));
        let root = PodCgroups {
            parent: Some("/".into()),
        };
        assert_eq!(root.pod_path("u1").as_deref(), Some("/km-pod-u1"));
        assert_eq!(PodCgroups::disabled().pod_path("u1"), None);
    }

    #[test]
    fn the_systemd_driver_is_refused_with_the_fix() {
        let e = PodCgroups::new(true, "systemd").unwrap_err().to_string();
        assert!(e.contains("native.cgroupdriver=cgroupfs"), "{e}");
        assert!(e.contains("--contain-pod-resources=false"), "{e}");
        assert!(
            PodCgroups::new(false, "systemd")
                .unwrap()
                .pod_path("u")
                .is_none()
        );
    }

    #[test]
    fn pod_limits_add_up_and_one_unlimited_container_lifts_the_limit() {
        let a = PodLimits {
            cpu_shares: 512,
            cpu_quota_us: Some(50_000),
            memory_bytes: Some(64 << 20),
        };
        let b = PodLimits {
            cpu_shares: 256,
            cpu_quota_us: Some(25_000),
            memory_bytes: Some(32 << 20),
        };
        let both = pod_limits(&[a, b], &[]);
        assert_eq!(both.cpu_shares, 768);
        assert_eq!(both.cpu_quota_us, Some(75_000));
        assert_eq!(both.memory_bytes, Some(96 << 20));
        let unlimited = PodLimits {
            cpu_shares: 2,
            cpu_quota_us: None,
            memory_bytes: None,
        };
        let some = pod_limits(&[a, unlimited], &[]);
        assert_eq!((some.cpu_quota_us, some.memory_bytes), (None, None));
        let big_init = PodLimits {
            cpu_shares: 2048,
            cpu_quota_us: Some(200_000),
            memory_bytes: Some(256 << 20),
        };
        let with_init = pod_limits(&[a, b], &[big_init]);
        assert_eq!(with_init.cpu_shares, 2048);
        assert_eq!(with_init.memory_bytes, Some(256 << 20));
    }

    /// Real cgroups: the pod cgroup is created with its limits in the files
    /// and removed again.
    #[test]
    fn a_pod_cgroup_carries_its_limits_in_the_cgroup_files() {
        if !std::path::Path::new("/sys/fs/cgroup/memory").exists() {
            eprintln!("skipped: cgroup v1 memory hierarchy not mounted");
            return;
        }
        let parent = format!("km-test-{}", std::process::id());
        let c = PodCgroups {
            parent: Some(parent.clone()),
        };
        let limits = PodLimits {
            cpu_shares: 256,
            cpu_quota_us: Some(20_000),
            memory_bytes: Some(48 << 20),
        };
        let path = c.create("uid-1", &limits).unwrap().unwrap();
        assert_eq!(path, format!("/{parent}/km-pod-uid-1"));
        let mem = c.controller_dir("uid-1", "memory").unwrap();
        let read = |d: &PathBuf, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(
            read(&mem, "memory.limit_in_bytes").trim(),
            (48u64 << 20).to_string()
        );
        let cpu = c.controller_dir("uid-1", "cpu").unwrap();
        assert_eq!(read(&cpu, "cpu.shares").trim(), "256");
        assert_eq!(read(&cpu, "cpu.cfs_quota_us").trim(), "20000");
        c.remove("uid-1").unwrap();
        assert!(!mem.exists());
        let _ = load(&parent).delete();
    }
}
