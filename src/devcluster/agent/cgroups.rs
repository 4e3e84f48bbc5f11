//! Resource enforcement: each executor runs in its own cgroup
//! `<cgroups-root>/<container-id>` in the cpu and memory hierarchies, whose
//! limits follow the executor's resources plus those of its live tasks, so
//! the container grows when a task starts and shrinks when one ends (seed
//! 000, "Resource Accounting").
//!
//! The arithmetic follows Mesos's cgroups isolators: `cpu.shares` = 1024 per
//! CPU (at least 2), CFS quota = CPUs × the 100 ms period (at least 1 ms),
//! memory limit = MB × 2^20 (at least 32 MB). Shrinking memory below what
//! the container uses fails in the kernel; the agent then logs and keeps
//! the larger limit.
//!
//! [`CgroupManager`] is the seam: [`FsCgroups`] writes the real files
//! through cgroups-rs; [`NoCgroups`] does nothing, for machines where
//! cgroups are not writable and for unit tests.

use std::fmt;

use cgroups_rs::CgroupPid;
use cgroups_rs::fs::Cgroup;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::hierarchies;
use cgroups_rs::fs::memory::MemController;

use crate::mesos::proto::v1;
use crate::resources::Resources;

/// `cpu.shares` per CPU.
pub const CPU_SHARES_PER_CPU: u64 = 1024;
/// The smallest `cpu.shares` the kernel takes.
pub const MIN_CPU_SHARES: u64 = 2;
/// CFS period in microseconds.
pub const CFS_PERIOD_US: u64 = 100_000;
/// Smallest CFS quota in microseconds.
pub const MIN_CFS_QUOTA_US: i64 = 1_000;
/// Smallest memory limit, in MB.
pub const MIN_MEMORY_MB: f64 = 32.0;

/// The cpu and memory limits of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `cpu.shares`.
    pub cpu_shares: u64,
    /// `cpu.cfs_period_us`.
    pub cfs_period_us: u64,
    /// `cpu.cfs_quota_us`.
    pub cfs_quota_us: i64,
    /// `memory.limit_in_bytes`.
    pub memory_bytes: i64,
}

impl Limits {
    /// Limits for `cpus` CPUs and `mem_mb` MB.
    pub fn new(cpus: f64, mem_mb: f64) -> Limits {
        // Mesos scalars are fixed point with three decimals: work in
        // thousandths of a CPU so 0.29 CPUs is exactly 29 ms of quota.
        let milli_cpus = if cpus.is_finite() {
            (cpus.max(0.0) * 1000.0).round() as u64
        } else {
            0
        };
        let mem_mb = if mem_mb.is_finite() { mem_mb } else { 0.0 };
        let shares = milli_cpus * CPU_SHARES_PER_CPU / 1000;
        let quota = milli_cpus * CFS_PERIOD_US / 1000;
        Limits {
            cpu_shares: shares.max(MIN_CPU_SHARES),
            cfs_period_us: CFS_PERIOD_US,
            cfs_quota_us: i64::try_from(quota)
                .unwrap_or(i64::MAX)
                .max(MIN_CFS_QUOTA_US),
            memory_bytes: (mem_mb.max(MIN_MEMORY_MB) * 1024.0 * 1024.0) as i64,
        }
    }

    /// Limits for an executor's own resources plus its live tasks'.
    pub fn for_container<'a>(
        executor: &[v1::Resource],
        tasks: impl IntoIterator<Item = &'a [v1::Resource]>,
    ) -> Limits {
        let mut total = Resources::from_vec(executor.to_vec());
        for t in tasks {
            total.add_all(&Resources::from_vec(t.to_vec()));
        }
        Limits::new(total.scalar("cpus"), total.scalar("mem"))
    }
}

/// A cgroup operation failed.
#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: {what}: {message}")]
pub struct CgroupError {
    /// The cgroup, relative to the hierarchy roots.
    pub path: String,
    /// What was being done.
    pub what: &'static str,
    /// The cause as cgroups-rs reports it.
    pub message: String,
}

/// One container's cgroup.
pub trait ContainerCgroup: Send + Sync + fmt::Debug {
    /// The cgroup path relative to the hierarchy roots.
    fn path(&self) -> &str;
    /// Writes new limits.
    fn update(&self, limits: &Limits) -> Result<(), CgroupError>;
    /// Moves a process (all its threads) into the cgroup.
    fn add_process(&self, pid: u32) -> Result<(), CgroupError>;
    /// The processes in the cgroup.
    fn processes(&self) -> Vec<u32>;
    /// Removes the (empty) cgroup.
    fn destroy(&self) -> Result<(), CgroupError>;
}

/// Creates container cgroups.
pub trait CgroupManager: Send + Sync + fmt::Debug {
    /// Creates (or adopts) the cgroup of `container` with `limits`.
    fn create(
        &self,
        container: &str,
        limits: &Limits,
    ) -> Result<Box<dyn ContainerCgroup>, CgroupError>;
    /// Opens the existing cgroup of `container` (an executor adopted after
    /// a restart, or an orphan), leaving its limits as they are.
    fn open(&self, container: &str) -> Result<Box<dyn ContainerCgroup>, CgroupError>;
    /// The containers that have a cgroup under the root.
    fn containers(&self) -> Vec<String>;
    /// Removes the root cgroup when no container is left under it (a
    /// graceful stop); checkpointed executors that keep running keep it.
    fn release(&self) -> Result<(), CgroupError> {
        Ok(())
    }
}

/// Real cgroups (v1 or v2, whichever cgroups-rs detects), cpu and memory
/// controllers, under a root cgroup.
#[derive(Debug)]
pub struct FsCgroups {
    root: String,
}

const CONTROLLERS: [&str; 2] = ["cpu", "memory"];

fn load(path: &str) -> Cgroup {
    Cgroup::load_with_specified_controllers(
        hierarchies::auto(),
        path,
        CONTROLLERS.iter().map(|c| c.to_string()).collect(),
    )
}

fn err(path: &str, what: &'static str, e: impl fmt::Display) -> CgroupError {
    CgroupError {
        path: path.to_owned(),
        what,
        message: e.to_string(),
    }
}

impl FsCgroups {
    /// Creates the root cgroup, proving the hierarchies are writable.
    pub fn probe(root: &str) -> Result<FsCgroups, CgroupError> {
        let root = root.trim_matches('/').to_owned();
        let cg = load(&root);
        if cg.subsystems().len() < CONTROLLERS.len() {
            return Err(err(
                &root,
                "finding the cpu and memory hierarchies",
                "not mounted",
            ));
        }
        cg.create().map_err(|e| err(&root, "creating", e))?;
        Ok(FsCgroups { root })
    }
}

impl CgroupManager for FsCgroups {
    fn create(
        &self,
        container: &str,
        limits: &Limits,
    ) -> Result<Box<dyn ContainerCgroup>, CgroupError> {
        let path = format!("{}/{container}", self.root);
        let cg = load(&path);
        cg.create().map_err(|e| err(&path, "creating", e))?;
        let cg = FsCgroup { path, cg };
        cg.update(limits)?;
        Ok(Box::new(cg))
    }

    fn open(&self, container: &str) -> Result<Box<dyn ContainerCgroup>, CgroupError> {
        let path = format!("{}/{container}", self.root);
        let cg = load(&path);
        if !cg.exists() {
            return Err(err(&path, "opening", "no such cgroup"));
        }
        Ok(Box::new(FsCgroup { path, cg }))
    }

    fn release(&self) -> Result<(), CgroupError> {
        if !self.containers().is_empty() {
            return Ok(());
        }
        load(&self.root)
            .delete()
            .map_err(|e| err(&self.root, "removing", e))
    }

    fn containers(&self) -> Vec<String> {
        let root = load(&self.root);
        let mut out = Vec::new();
        for sub in root.subsystems() {
            let dir = sub.to_controller().path().to_path_buf();
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !out.contains(&name) {
                        out.push(name);
                    }
                }
            }
        }
        out
    }
}

struct FsCgroup {
    path: String,
    cg: Cgroup,
}

impl fmt::Debug for FsCgroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsCgroup")
            .field("path", &self.path)
            .finish()
    }
}

impl ContainerCgroup for FsCgroup {
    fn path(&self) -> &str {
        &self.path
    }

    fn update(&self, limits: &Limits) -> Result<(), CgroupError> {
        let p = &self.path;
        let cpu: &CpuController = self
            .cg
            .controller_of()
            .ok_or_else(|| err(p, "finding the cpu controller", "missing"))?;
        cpu.set_shares(limits.cpu_shares)
            .map_err(|e| err(p, "writing cpu.shares", e))?;
        cpu.set_cfs_quota_and_period(Some(limits.cfs_quota_us), Some(limits.cfs_period_us))
            .map_err(|e| err(p, "writing the CFS quota", e))?;
        let mem: &MemController = self
            .cg
            .controller_of()
            .ok_or_else(|| err(p, "finding the memory controller", "missing"))?;
        mem.set_limit(limits.memory_bytes)
            .map_err(|e| err(p, "writing the memory limit", e))?;
        Ok(())
    }

    fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        self.cg
            .add_task_by_tgid(CgroupPid::from(u64::from(pid)))
            .map_err(|e| err(&self.path, "adding a process", e))?;
        // The process may have started children before it was moved (the
        // move follows the spawn); they go too. Later children inherit.
        for child in descendants(pid) {
            let _ = self.cg.add_task_by_tgid(CgroupPid::from(u64::from(child)));
        }
        Ok(())
    }

    fn processes(&self) -> Vec<u32> {
        self.cg
            .procs()
            .into_iter()
            .filter_map(|p| u32::try_from(p.pid).ok())
            .collect()
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        self.cg.delete().map_err(|e| err(&self.path, "removing", e))
    }
}

/// The descendants of `pid`, from `/proc/<pid>/task/*/children`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                if !out.contains(&c) {
                    out.push(c);
                    todo.push(c);
                }
            }
        }
    }
    out
}

/// No cgroups: every operation succeeds and limits nothing.
#[derive(Debug, Default)]
pub struct NoCgroups;

#[derive(Debug)]
struct NoCgroup(String);

impl CgroupManager for NoCgroups {
    fn create(
        &self,
        container: &str,
        _limits: &Limits,
    ) -> Result<Box<dyn ContainerCgroup>, CgroupError> {
        Ok(Box::new(NoCgroup(container.to_owned())))
    }

    fn open(&self, container: &str) -> Result<Box<dyn ContainerCgroup>, CgroupError> {
        Ok(Box::new(NoCgroup(container.to_owned())))
    }

    fn containers(&self) -> Vec<String> {
        Vec::new()
    }
}

impl ContainerCgroup for NoCgroup {
    fn path(&self) -> &str {
        &self.0
    }
    fn update(&self, _limits: &Limits) -> Result<(), CgroupError> {
        Ok(())
    }
    fn add_process(&self, _pid: u32) -> Result<(), CgroupError> {
        Ok(())
    }
    fn processes(&self) -> Vec<u32> {
        Vec::new()
    }
    fn destroy(&self) -> Result<(), CgroupError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Ranges, ranges, scalar};

    #[test]
    fn mesos_arithmetic() {
        let l = Limits::new(1.5, 256.0);
        assert_eq!(l.cpu_shares, 1536);
        assert_eq!(l.cfs_period_us, 100_000);
        assert_eq!(l.cfs_quota_us, 150_000);
        assert_eq!(l.memory_bytes, 256 << 20);
    }

    #[test]
    fn minimums_apply() {
        let l = Limits::new(0.0, 0.0);
        assert_eq!(l.cpu_shares, MIN_CPU_SHARES);
        assert_eq!(l.cfs_quota_us, MIN_CFS_QUOTA_US);
        assert_eq!(l.memory_bytes, 32 << 20);
        let l = Limits::new(0.001, 1.0);
        assert_eq!(l.cpu_shares, 2);
        assert_eq!(l.cfs_quota_us, 1_000);
        assert_eq!(Limits::new(0.29, 64.0).cfs_quota_us, 29_000);
        assert_eq!(Limits::new(f64::NAN, f64::INFINITY), Limits::new(0.0, 0.0));
    }

    #[test]
    fn container_limits_grow_and_shrink_with_tasks() {
        let executor = vec![scalar("cpus", 0.1), scalar("mem", 32.0)];
        let web = vec![
            scalar("cpus", 1.0),
            scalar("mem", 128.0),
            ranges("ports", &Ranges::span(31000, 31000)),
        ];
        let db = vec![scalar("cpus", 0.5), scalar("mem", 64.0)];
        let alone = Limits::for_container(&executor, []);
        assert_eq!((alone.cpu_shares, alone.memory_bytes), (102, 32 << 20));
        let both = Limits::for_container(&executor, [web.as_slice(), db.as_slice()]);
        assert_eq!(both.cpu_shares, 1638);
        assert_eq!(both.cfs_quota_us, 160_000);
        assert_eq!(both.memory_bytes, 224 << 20);
        let one = Limits::for_container(&executor, [db.as_slice()]);
        assert_eq!(one.cpu_shares, 614);
        assert_eq!(one.memory_bytes, 96 << 20);
    }

    #[test]
    fn reserved_resources_count_too() {
        let mut reserved = scalar("cpus", 2.0);
        #[allow(deprecated)]
        {
            reserved.role = Some("web".into());
        }
        let l = Limits::for_container(&[scalar("cpus", 1.0), reserved], []);
        assert_eq!(l.cpu_shares, 3072);
    }
}
