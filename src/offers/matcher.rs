//! Placing pods on offers: several pods per agent, each using what the
//! previous ones left, in a deterministic order under a placement policy.
//!
//! * [`Policy::BinPack`]: first fit over the slots in inventory order
//!   (agents running km's executor first, then by hostname). Fills agents one
//!   after another and leaves whole agents free for other frameworks.
//! * [`Policy::Spread`]: the fitting slot with the most free cpus, then the
//!   most free memory, then the earliest in inventory order.
//!
//! Pods are placed in the order given. A pod takes its cpus and memory from
//! the pods' roles in preference order, its host ports from the `ports`
//! resources of those roles, and — on an agent without km's executor — the
//! executor's resources from the framework's roles. A segment tree over the
//! slots' free cpus, memory and ports skips agents that cannot hold the pod,
//! so a placement costs about log(agents) slot checks, not one per agent.

use std::collections::HashMap;
use std::str::FromStr;

use super::inventory::{ExecutorState, Inventory, Pool, Slot, milli};
use super::reasons::{self, Reason};
use crate::mesos::proto::v1;
use crate::podtask::{ExecutorPrototype, HostPort, PodTask};
use crate::resources::{self, Ranges};

/// How to choose among the offers a pod fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    /// First fit in inventory order: pack agents one after another.
    #[default]
    BinPack,
    /// The agent with the most free cpus: spread pods over agents.
    Spread,
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "binpack" => Ok(Policy::BinPack),
            "spread" => Ok(Policy::Spread),
            other => Err(format!(
                "unknown placement policy {other:?}: expected binpack or spread"
            )),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::BinPack => "binpack",
            Policy::Spread => "spread",
        })
    }
}

/// A pod placed on a slot.
#[derive(Clone, Debug)]
pub struct Assignment {
    /// Index of the slot in [`Inventory::slots`].
    pub slot: usize,
    /// The task's resources, with the offers' role and reservation metadata.
    pub resources: Vec<v1::Resource>,
    /// Host ports chosen for container ports.
    pub host_ports: Vec<HostPort>,
    /// The `ExecutorInfo` the task must carry.
    pub executor: v1::ExecutorInfo,
    /// Whether this task starts the executor on the agent.
    pub launches_executor: bool,
}

/// A pod that fits nowhere, and why.
#[derive(Clone, Debug)]
pub struct Unplaced {
    /// Per slot (index in [`Inventory::slots`]) the first check that failed;
    /// empty unless explanations were asked for.
    pub reasons: Vec<(usize, Reason)>,
    /// One line over all offers, e.g. `3 offers: insufficient cpus (want
    /// 2.5, largest 1.0); 1 offer: nodeSelector rack=b`.
    pub summary: String,
}

/// The result of placing one pod.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Placed.
    Placed(Box<Assignment>),
    /// Not placed.
    Unplaced(Unplaced),
}

/// Places pods on an [`Inventory`].
pub struct Matcher<'a> {
    executor: &'a ExecutorPrototype,
    framework_roles: Vec<u16>,
    policy: Policy,
    index: Index,
}

/// A pod compiled against an inventory's role table.
struct Demand<'p> {
    pod: &'p PodTask,
    cpus: i64,
    mem: i64,
    roles: Vec<u16>,
}

/// What a pod would take from a slot.
#[derive(Default)]
struct Plan {
    cpus: Vec<(usize, i64)>,
    mem: Vec<(usize, i64)>,
    exec_cpus: Vec<(usize, i64)>,
    exec_mem: Vec<(usize, i64)>,
    /// (port request index, port, port pool index)
    ports: Vec<(usize, u16, usize)>,
    new_executor: bool,
}

impl<'a> Matcher<'a> {
    /// A matcher over `inv` for pods launched with `executor`.
    pub fn new(
        inv: &mut Inventory,
        executor: &'a ExecutorPrototype,
        framework_roles: &[String],
        policy: Policy,
    ) -> Self {
        let framework_roles = framework_roles
            .iter()
            .map(|r| inv.roles.intern(r))
            .collect();
        let index = Index::new(&inv.slots);
        Matcher {
            executor,
            framework_roles,
            policy,
            index,
        }
    }

    /// Places `pods` in order, each on what the ones before it left.
    /// With `explain`, an unplaced pod gets one reason per slot.
    pub fn place(&mut self, inv: &mut Inventory, pods: &[&PodTask], explain: bool) -> Vec<Outcome> {
        pods.iter()
            .map(|p| self.place_one(inv, p, explain))
            .collect()
    }

    /// Places one pod.
    pub fn place_one(&mut self, inv: &mut Inventory, pod: &PodTask, explain: bool) -> Outcome {
        let d = demand(inv, pod);
        let found = match &pod.node_name {
            Some(host) => inv
                .by_host
                .get(host)
                .into_iter()
                .flatten()
                .copied()
                .filter_map(|i| self.plan(inv, &inv.slots[i], &d).ok().map(|p| (i, p)))
                .next(),
            None => self.search(inv, &d),
        };
        match found {
            Some((slot, plan)) => Outcome::Placed(Box::new(self.commit(inv, slot, &d, plan))),
            None => Outcome::Unplaced(self.explain(inv, &d, explain)),
        }
    }

    /// Whether `pod` fits slot `slot` as it is now; the reason if not.
    pub fn evaluate(&self, inv: &mut Inventory, slot: usize, pod: &PodTask) -> Result<(), Reason> {
        let d = demand(inv, pod);
        self.plan(inv, &inv.slots[slot], &d).map(|_| ())
    }

    fn explain(&self, inv: &Inventory, d: &Demand<'_>, keep: bool) -> Unplaced {
        let reasons: Vec<(usize, Reason)> = (0..inv.slots.len())
            .filter_map(|i| self.plan(inv, &inv.slots[i], d).err().map(|r| (i, r)))
            .collect();
        let summary = reasons::summarize(
            reasons
                .iter()
                .map(|(i, r)| (inv.slots[*i].offer_ids.len(), r)),
        );
        Unplaced {
            reasons: if keep { reasons } else { Vec::new() },
            summary,
        }
    }

    fn search(&self, inv: &Inventory, d: &Demand<'_>) -> Option<(usize, Plan)> {
        let need = (d.cpus, d.mem, d.pod.ports.len() as u64);
        let mut best: Option<(usize, Plan)> = None;
        match self.policy {
            Policy::BinPack => {
                self.index.first_fit(1, need, &mut |i| {
                    self.plan(inv, &inv.slots[i], d)
                        .ok()
                        .map(|p| best = Some((i, p)))
                        .is_some()
                });
            }
            Policy::Spread => {
                let mut best_key = (i64::MIN, i64::MIN);
                self.index.best_fit(1, need, &mut best_key, &mut |i| {
                    let s = &inv.slots[i];
                    match self.plan(inv, s, d) {
                        Ok(p) => {
                            best = Some((i, p));
                            Some((s.free_cpus, s.free_mem))
                        }
                        Err(_) => None,
                    }
                });
            }
        }
        best
    }

    /// Checks every constraint and works out what the pod would take.
    fn plan(&self, inv: &Inventory, s: &Slot, d: &Demand<'_>) -> Result<Plan, Reason> {
        let pod = d.pod;
        if let Some(want) = &pod.node_name
            && *want != s.hostname
        {
            return Err(Reason::NodeName { want: want.clone() });
        }
        for (k, v) in &pod.node_selector {
            if s.labels.get(k) != Some(v) {
                return Err(Reason::NodeSelector {
                    key: k.clone(),
                    value: v.clone(),
                });
            }
        }
        let mut plan = Plan::default();
        let (exec_cpus, exec_mem) = match &s.executor {
            ExecutorState::Absent => {
                plan.new_executor = true;
                (milli(self.executor.cpus()), milli(self.executor.mem_mb()))
            }
            ExecutorState::Running(_) => (0, 0),
            ExecutorState::Unknown => {
                return Err(Reason::ExecutorUnknown {
                    executor_id: self.executor.id().to_string(),
                });
            }
        };
        plan.cpus = take(&s.cpus, &d.roles, d.cpus, &[])
            .map_err(|have| insufficient("cpus", d.cpus, exec_cpus, have))?;
        if exec_cpus > 0 {
            plan.exec_cpus = take(&s.cpus, &self.framework_roles, exec_cpus, &plan.cpus)
                .map_err(|have| insufficient("cpus", d.cpus, exec_cpus, have + d.cpus))?;
        }
        plan.mem = take(&s.mem, &d.roles, d.mem, &[])
            .map_err(|have| insufficient("mem", d.mem, exec_mem, have))?;
        if exec_mem > 0 {
            plan.exec_mem = take(&s.mem, &self.framework_roles, exec_mem, &plan.mem)
                .map_err(|have| insufficient("mem", d.mem, exec_mem, have + d.mem))?;
        }
        self.plan_ports(inv, s, d, &mut plan)?;
        Ok(plan)
    }

    fn plan_ports(
        &self,
        _inv: &Inventory,
        s: &Slot,
        d: &Demand<'_>,
        plan: &mut Plan,
    ) -> Result<(), Reason> {
        let reqs = &d.pod.ports;
        if reqs.is_empty() {
            return Ok(());
        }
        let used = |plan: &Plan, port: u16| plan.ports.iter().any(|(_, p, _)| *p == port);
        for (ri, r) in reqs.iter().enumerate() {
            let Some(port) = r.host_port else { continue };
            let pool = d.roles.iter().find_map(|role| {
                s.ports
                    .iter()
                    .position(|pp| pp.role == *role && pp.free.contains(u64::from(port)))
            });
            match pool {
                Some(pi) if !used(plan, port) => plan.ports.push((ri, port, pi)),
                _ => return Err(Reason::HostPort { port }),
            }
        }
        let wild: Vec<usize> = (0..reqs.len())
            .filter(|i| reqs[*i].host_port.is_none())
            .collect();
        if wild.is_empty() {
            return Ok(());
        }
        let mut next = wild.iter();
        let mut pending = next.next();
        'roles: for role in &d.roles {
            for (pi, pp) in s
                .ports
                .iter()
                .enumerate()
                .filter(|(_, pp)| pp.role == *role)
            {
                for v in pp.free.values() {
                    let Some(ri) = pending else { break 'roles };
                    let Ok(port) = u16::try_from(v) else { break };
                    if !used(plan, port) {
                        plan.ports.push((*ri, port, pi));
                        pending = next.next();
                    }
                }
            }
        }
        if pending.is_some() {
            let have: u64 = s
                .ports
                .iter()
                .filter(|pp| d.roles.contains(&pp.role))
                .map(|pp| pp.free.len())
                .sum();
            let fixed = reqs.len() - wild.len();
            return Err(Reason::Ports {
                want: wild.len(),
                have: have.saturating_sub(fixed as u64),
            });
        }
        Ok(())
    }

    /// Takes the planned resources out of the slot and builds the assignment.
    fn commit(&mut self, inv: &mut Inventory, si: usize, d: &Demand<'_>, plan: Plan) -> Assignment {
        let roles_of = |inv: &Inventory, role: u16| inv.roles.name(role).to_string();
        let s = &mut inv.slots[si];
        let mut task_res = Vec::new();
        let scalars = |pools: &mut Vec<Pool>,
                       takes: &[(usize, i64)],
                       out: &mut Vec<v1::Resource>,
                       tmpl: &[v1::Resource]| {
            for (pi, amount) in takes {
                pools[*pi].avail -= amount;
                out.push(resources::with_scalar(
                    &tmpl[pools[*pi].template],
                    *amount as f64 / 1000.0,
                ));
            }
        };
        scalars(&mut s.cpus, &plan.cpus, &mut task_res, &s.templates);
        scalars(&mut s.mem, &plan.mem, &mut task_res, &s.templates);
        let mut exec_res = Vec::new();
        scalars(&mut s.cpus, &plan.exec_cpus, &mut exec_res, &s.templates);
        scalars(&mut s.mem, &plan.exec_mem, &mut exec_res, &s.templates);
        let mut by_pool: Vec<(usize, Ranges)> = Vec::new();
        let mut host_ports = Vec::with_capacity(plan.ports.len());
        let pod = d.pod;
        for (ri, port, pi) in &plan.ports {
            s.ports[*pi].free.remove(u64::from(*port));
            match by_pool.iter_mut().find(|(p, _)| p == pi) {
                Some((_, r)) => r.insert(u64::from(*port)),
                None => {
                    let mut r = Ranges::new();
                    r.insert(u64::from(*port));
                    by_pool.push((*pi, r));
                }
            }
            let req = &pod.ports[*ri];
            host_ports.push(HostPort {
                container: req.container_name.clone(),
                container_port: req.container_port,
                protocol: req.protocol.clone(),
                host_port: *port,
                name: req.name.clone(),
                role: String::new(),
                container_index: req.container,
                port_index: req.port,
            });
        }
        let port_roles: Vec<u16> = plan
            .ports
            .iter()
            .map(|(_, _, pi)| s.ports[*pi].role)
            .collect();
        for (pi, r) in by_pool {
            task_res.push(resources::with_ranges(
                &s.templates[s.ports[pi].template],
                &r,
            ));
        }
        let executor = match &s.executor {
            ExecutorState::Running(info) => (**info).clone(),
            _ => self.executor.info_with(exec_res),
        };
        if plan.new_executor {
            s.executor = ExecutorState::Running(Box::new(executor.clone()));
        }
        s.recount();
        let (c, m, p) = (s.free_cpus, s.free_mem, s.free_ports);
        self.index.update(si, (c, m, p));
        for (hp, role) in host_ports.iter_mut().zip(port_roles) {
            hp.role = roles_of(inv, role);
        }
        Assignment {
            slot: si,
            resources: task_res,
            host_ports,
            executor,
            launches_executor: plan.new_executor,
        }
    }
}

fn demand<'p>(inv: &mut Inventory, pod: &'p PodTask) -> Demand<'p> {
    Demand {
        pod,
        cpus: milli(pod.limits.cpus),
        mem: milli(pod.limits.mem_mb),
        roles: pod.roles.iter().map(|r| inv.roles.intern(r)).collect(),
    }
}

fn insufficient(resource: &'static str, pod: i64, exec: i64, have: i64) -> Reason {
    Reason::Insufficient {
        resource,
        want: (pod + exec) as f64 / 1000.0,
        have: have as f64 / 1000.0,
        executor: exec as f64 / 1000.0,
    }
}

/// Takes `want` from `pools` of `roles`, in role preference order, after
/// `already` was taken. Returns the takes, or the amount available.
fn take(
    pools: &[Pool],
    roles: &[u16],
    want: i64,
    already: &[(usize, i64)],
) -> Result<Vec<(usize, i64)>, i64> {
    let mut left = want;
    let mut out = Vec::new();
    for role in roles {
        for (i, p) in pools.iter().enumerate().filter(|(_, p)| p.role == *role) {
            if left <= 0 {
                break;
            }
            let avail = p.avail
                - already
                    .iter()
                    .filter(|(j, _)| *j == i)
                    .map(|(_, a)| a)
                    .sum::<i64>();
            let t = avail.min(left);
            if t > 0 {
                out.push((i, t));
                left -= t;
            }
        }
    }
    if left > 0 {
        let have = roles
            .iter()
            .flat_map(|r| pools.iter().enumerate().filter(move |(_, p)| p.role == *r))
            .map(|(i, p)| {
                p.avail
                    - already
                        .iter()
                        .filter(|(j, _)| *j == i)
                        .map(|(_, a)| a)
                        .sum::<i64>()
            })
            .sum();
        return Err(have);
    }
    Ok(out)
}

/// A max segment tree over the slots' free (cpus, mem, ports): a subtree whose
/// maxima cannot hold a pod is skipped whole.
struct Index {
    size: usize,
    len: usize,
    max: Vec<(i64, i64, u64)>,
}

impl Index {
    fn new(slots: &[Slot]) -> Self {
        let size = slots.len().next_power_of_two().max(1);
        let mut max = vec![(i64::MIN, i64::MIN, 0); 2 * size];
        for (i, s) in slots.iter().enumerate() {
            max[size + i] = (s.free_cpus, s.free_mem, s.free_ports);
        }
        for n in (1..size).rev() {
            max[n] = join(max[2 * n], max[2 * n + 1]);
        }
        Index {
            size,
            len: slots.len(),
            max,
        }
    }

    fn update(&mut self, i: usize, v: (i64, i64, u64)) {
        let mut n = self.size + i;
        self.max[n] = v;
        while n > 1 {
            n /= 2;
            self.max[n] = join(self.max[2 * n], self.max[2 * n + 1]);
        }
    }

    fn can_hold(&self, n: usize, need: (i64, i64, u64)) -> bool {
        let m = self.max[n];
        m.0 >= need.0 && m.1 >= need.1 && m.2 >= need.2
    }

    /// Visits candidate leaves left to right until `try_leaf` accepts one.
    fn first_fit(
        &self,
        n: usize,
        need: (i64, i64, u64),
        try_leaf: &mut dyn FnMut(usize) -> bool,
    ) -> bool {
        if !self.can_hold(n, need) {
            return false;
        }
        if n >= self.size {
            let i = n - self.size;
            return i < self.len && try_leaf(i);
        }
        self.first_fit(2 * n, need, try_leaf) || self.first_fit(2 * n + 1, need, try_leaf)
    }

    /// Branch and bound for the leaf with the largest (cpus, mem) that
    /// `try_leaf` accepts; ties go to the leftmost.
    fn best_fit(
        &self,
        n: usize,
        need: (i64, i64, u64),
        best: &mut (i64, i64),
        try_leaf: &mut dyn FnMut(usize) -> Option<(i64, i64)>,
    ) {
        let m = self.max[n];
        if !self.can_hold(n, need) || (m.0, m.1) <= *best {
            return;
        }
        if n >= self.size {
            let i = n - self.size;
            if i < self.len
                && let Some(key) = try_leaf(i)
                && key > *best
            {
                *best = key;
            }
            return;
        }
        let (l, r) = (2 * n, 2 * n + 1);
        let (first, second) = if (self.max[r].0, self.max[r].1) > (self.max[l].0, self.max[l].1) {
            (r, l)
        } else {
            (l, r)
        };
        self.best_fit(first, need, best, try_leaf);
        self.best_fit(second, need, best, try_leaf);
    }
}

fn join(a: (i64, i64, u64), b: (i64, i64, u64)) -> (i64, i64, u64) {
    (a.0.max(b.0), a.1.max(b.1), a.2.max(b.2))
}

/// Places pods on offers in one call: builds the inventory, places `pods` in
/// order, and returns the inventory (for slot details) with the outcomes.
pub fn place_all(
    offers: &[v1::Offer],
    pods: &[&PodTask],
    executor: &ExecutorPrototype,
    known: &HashMap<String, v1::ExecutorInfo>,
    framework_roles: &[String],
    policy: Policy,
    explain: bool,
) -> (Inventory, Vec<Outcome>) {
    let mut inv = Inventory::build(offers, executor, known);
    let mut m = Matcher::new(&mut inv, executor, framework_roles, policy);
    let out = m.place(&mut inv, pods, explain);
    (inv, out)
}

#[cfg(test)]
#[path = "matcher_tests.rs"]
mod tests;
