//! Offers compiled for matching: one [`Slot`] per agent, holding every live
//! offer of that agent, its free resources per role in fixed-point
//! thousandths, its free ports, and its labels.
//!
//! Slots are kept in one deterministic order, which the placement policies
//! build on: agents already running km's executor first (a pod placed there
//! costs no executor overhead), then by hostname, then by agent id.

use std::collections::{BTreeMap, HashMap};

use crate::mesos::proto::v1;
use crate::podtask::ExecutorPrototype;
use crate::podtask::annotations;
use crate::resources::{self, Ranges};

/// Fixed-point thousandths, Mesos's own scalar precision.
pub(crate) fn milli(v: f64) -> i64 {
    (v * 1000.0).round() as i64
}

/// What km's executor looks like on an agent.
#[derive(Clone, Debug, PartialEq)]
pub enum ExecutorState {
    /// Not running: the first pod placed there also launches it.
    Absent,
    /// Running (or launched earlier in this round), with this `ExecutorInfo`.
    Running(Box<v1::ExecutorInfo>),
    /// The offer says it runs, but km does not know its `ExecutorInfo`.
    Unknown,
}

/// A pool of one scalar resource of one kind (role, reservation, allocation).
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    pub role: u16,
    pub avail: i64,
    pub template: usize,
}

/// Free ports of one kind.
#[derive(Clone, Debug)]
pub(crate) struct PortPool {
    pub role: u16,
    pub free: Ranges,
    pub template: usize,
}

/// One agent's live offers, compiled.
#[derive(Clone, Debug)]
pub struct Slot {
    /// The agent.
    pub agent_id: String,
    /// The agent's hostname.
    pub hostname: String,
    /// The offers combined in this slot, in arrival order.
    pub offer_ids: Vec<String>,
    /// Labels a nodeSelector is matched against: `kubernetes.io/hostname`
    /// and one `k8s.mesosphere.io/attribute-<name>` per agent attribute.
    pub labels: BTreeMap<String, String>,
    /// km's executor on this agent.
    pub executor: ExecutorState,
    pub(crate) cpus: Vec<Pool>,
    pub(crate) mem: Vec<Pool>,
    pub(crate) ports: Vec<PortPool>,
    pub(crate) templates: Vec<v1::Resource>,
    pub(crate) free_cpus: i64,
    pub(crate) free_mem: i64,
    pub(crate) free_ports: u64,
}

impl Slot {
    /// Free cpus over all roles.
    pub fn free_cpus(&self) -> f64 {
        self.free_cpus as f64 / 1000.0
    }

    /// Free memory (MB) over all roles.
    pub fn free_mem(&self) -> f64 {
        self.free_mem as f64 / 1000.0
    }

    /// Free ports over all roles.
    pub fn free_ports(&self) -> u64 {
        self.free_ports
    }

    pub(crate) fn recount(&mut self) {
        self.free_cpus = self.cpus.iter().map(|p| p.avail).sum();
        self.free_mem = self.mem.iter().map(|p| p.avail).sum();
        self.free_ports = self.ports.iter().map(|p| p.free.len()).sum();
    }
}

/// Interned role names.
#[derive(Clone, Debug, Default)]
pub(crate) struct Roles {
    names: Vec<String>,
    index: HashMap<String, u16>,
}

impl Roles {
    pub fn intern(&mut self, role: &str) -> u16 {
        if let Some(i) = self.index.get(role) {
            return *i;
        }
        let i = self.names.len() as u16;
        self.names.push(role.to_string());
        self.index.insert(role.to_string(), i);
        i
    }

    pub fn name(&self, i: u16) -> &str {
        &self.names[usize::from(i)]
    }
}

/// Live offers, compiled for matching.
#[derive(Clone, Debug)]
pub struct Inventory {
    pub(crate) slots: Vec<Slot>,
    pub(crate) roles: Roles,
    pub(crate) by_host: HashMap<String, Vec<usize>>,
}

impl Inventory {
    /// Compiles `offers`. `known` holds the `ExecutorInfo` of km executors
    /// known to run, by agent id; an agent whose offer lists km's executor id
    /// but is missing from `known` cannot take pods until it is known.
    pub fn build(
        offers: &[v1::Offer],
        executor: &ExecutorPrototype,
        known: &HashMap<String, v1::ExecutorInfo>,
    ) -> Self {
        let mut roles = Roles::default();
        let mut by_agent: BTreeMap<&str, Vec<&v1::Offer>> = BTreeMap::new();
        for o in offers {
            by_agent
                .entry(o.agent_id.value.as_str())
                .or_default()
                .push(o);
        }
        let mut slots: Vec<Slot> = by_agent
            .into_iter()
            .map(|(agent, offers)| compile(agent, &offers, executor, known, &mut roles))
            .collect();
        slots.sort_by(|a, b| {
            let running = |s: &Slot| !matches!(s.executor, ExecutorState::Running(_));
            (running(a), &a.hostname, &a.agent_id).cmp(&(running(b), &b.hostname, &b.agent_id))
        });
        let mut by_host: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in slots.iter().enumerate() {
            by_host.entry(s.hostname.clone()).or_default().push(i);
        }
        Inventory {
            slots,
            roles,
            by_host,
        }
    }

    /// The slots, in matching order.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }
}

fn compile(
    agent: &str,
    offers: &[&v1::Offer],
    executor: &ExecutorPrototype,
    known: &HashMap<String, v1::ExecutorInfo>,
    roles: &mut Roles,
) -> Slot {
    let first = offers[0];
    let mut slot = Slot {
        agent_id: agent.to_string(),
        hostname: first.hostname.clone(),
        offer_ids: offers.iter().map(|o| o.id.value.clone()).collect(),
        labels: labels(first),
        executor: ExecutorState::Absent,
        cpus: Vec::new(),
        mem: Vec::new(),
        ports: Vec::new(),
        templates: Vec::new(),
        free_cpus: 0,
        free_mem: 0,
        free_ports: 0,
    };
    let runs = offers.iter().any(|o| {
        o.executor_ids
            .iter()
            .any(|e| e.value == executor.id().as_str())
    });
    if runs {
        slot.executor = match known.get(agent) {
            Some(info) => ExecutorState::Running(Box::new(info.clone())),
            None => ExecutorState::Unknown,
        };
    }
    for o in offers {
        for r in &o.resources {
            // Revocable, shared and disk-backed resources are not for pods.
            if r.revocable.is_some()
                || r.shared.is_some()
                || r.disk.is_some()
                || r.provider_id.is_some()
            {
                continue;
            }
            let role = roles.intern(resources::reservation_role(r));
            match (r.name.as_str(), r.r#type) {
                (name @ ("cpus" | "mem"), t) if t == v1::value::Type::Scalar as i32 => {
                    let avail = milli(r.scalar.as_ref().map_or(0.0, |s| s.value));
                    if avail <= 0 {
                        continue;
                    }
                    slot.templates.push(r.clone());
                    let pool = Pool {
                        role,
                        avail,
                        template: slot.templates.len() - 1,
                    };
                    if name == "cpus" {
                        slot.cpus.push(pool)
                    } else {
                        slot.mem.push(pool)
                    }
                }
                ("ports", t) if t == v1::value::Type::Ranges as i32 => {
                    let free = r
                        .ranges
                        .as_ref()
                        .map(Ranges::from_proto)
                        .unwrap_or_default();
                    if free.is_empty() {
                        continue;
                    }
                    slot.templates.push(r.clone());
                    slot.ports.push(PortPool {
                        role,
                        free,
                        template: slot.templates.len() - 1,
                    });
                }
                _ => {}
            }
        }
    }
    slot.recount();
    slot
}

/// The labels an agent's offer gives it, as the Node object for it carries.
pub fn labels(offer: &v1::Offer) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert(
        annotations::HOSTNAME_LABEL.to_string(),
        offer.hostname.clone(),
    );
    for a in &offer.attributes {
        let value = match a.r#type {
            t if t == v1::value::Type::Text as i32 => a.text.as_ref().map(|t| t.value.clone()),
            t if t == v1::value::Type::Scalar as i32 => {
                a.scalar.as_ref().map(|s| format!("{}", s.value))
            }
            _ => Some(String::new()),
        };
        let key = annotations::attribute_label(&a.name);
        if let Some(v) = value.filter(|v| valid_label_value(v))
            && valid_label_name(&a.name)
        {
            l.insert(key, v);
        }
    }
    l
}

/// A Kubernetes label value: at most 63 characters of `[A-Za-z0-9._-]`,
/// starting and ending alphanumeric, or empty.
pub fn valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn valid_label_name(name: &str) -> bool {
    let full = annotations::attribute_label(name);
    let local = &full[annotations::PREFIX.len()..];
    !name.is_empty() && valid_label_value(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr_text(name: &str, v: &str) -> v1::Attribute {
        v1::Attribute {
            name: name.into(),
            r#type: v1::value::Type::Text as i32,
            text: Some(v1::value::Text { value: v.into() }),
            ..Default::default()
        }
    }

    #[test]
    fn offer_attributes_become_node_labels() {
        let o = v1::Offer {
            hostname: "node-1".into(),
            attributes: vec![
                attr_text("rack", "b"),
                attr_text("bad value", "x"),
                attr_text("note", "has spaces"),
                v1::Attribute {
                    name: "cores".into(),
                    r#type: v1::value::Type::Scalar as i32,
                    scalar: Some(v1::value::Scalar { value: 8.0 }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let l = labels(&o);
        assert_eq!(l["kubernetes.io/hostname"], "node-1");
        assert_eq!(l["k8s.mesosphere.io/attribute-rack"], "b");
        assert_eq!(l["k8s.mesosphere.io/attribute-cores"], "8");
        assert_eq!(l.len(), 3, "{l:?}");
    }
}
