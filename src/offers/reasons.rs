//! Why a pod does not fit an offer, and the one-line summary over many offers
//! that operators read in `FailedScheduling` events and `km fit`.

use std::fmt;

/// Why a pod does not fit one agent's offers. The first failing check wins,
/// in this order: nodeName, nodeSelector, executor, cpus, mem, host ports.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// `spec.nodeName` names another agent.
    NodeName {
        /// The pod's nodeName.
        want: String,
    },
    /// A `nodeSelector` entry the agent's labels do not satisfy.
    NodeSelector {
        /// Label key.
        key: String,
        /// Wanted value.
        value: String,
    },
    /// Not enough of a scalar resource in the pod's roles.
    Insufficient {
        /// `cpus` or `mem`.
        resource: &'static str,
        /// What the pod needs (plus the new executor's share, if any).
        want: f64,
        /// What the offer holds in the pod's roles.
        have: f64,
        /// Part of `want` that is the new executor's own resources.
        executor: f64,
    },
    /// A fixed host port is not offered (or already given to another pod).
    HostPort {
        /// The port.
        port: u16,
    },
    /// Fewer free ports than the pod's wildcard ports.
    Ports {
        /// Ports needed.
        want: usize,
        /// Ports free in the pod's roles.
        have: u64,
    },
    /// km's executor runs on the agent but km does not know its
    /// `ExecutorInfo`, which every task must repeat exactly.
    ExecutorUnknown {
        /// The executor id.
        executor_id: String,
    },
}

impl Reason {
    /// Reasons with the same key are summarised together.
    fn key(&self) -> String {
        match self {
            Reason::NodeName { want } => format!("nodeName {want}"),
            Reason::NodeSelector { key, value } => format!("selector {key}={value}"),
            Reason::Insufficient {
                resource,
                want,
                executor,
                ..
            } => {
                format!("insufficient {resource} {want} {executor}")
            }
            Reason::HostPort { port } => format!("port {port}"),
            Reason::Ports { want, .. } => format!("ports {want}"),
            Reason::ExecutorUnknown { executor_id } => format!("executor {executor_id}"),
        }
    }

    fn merge(&mut self, other: &Reason) {
        match (self, other) {
            (Reason::Insufficient { have, .. }, Reason::Insufficient { have: h, .. }) => {
                *have = have.max(*h)
            }
            (Reason::Ports { have, .. }, Reason::Ports { have: h, .. }) => *have = (*have).max(*h),
            _ => {}
        }
    }

    /// The text for one offer (`have` reads "has").
    pub fn for_one(&self) -> String {
        self.text("has")
    }

    /// The text, with `have` introduced by `have_word` ("has" for one offer,
    /// "largest" over many).
    fn text(&self, have_word: &str) -> String {
        match self {
            Reason::NodeName { want } => format!("spec.nodeName is {want}"),
            Reason::NodeSelector { key, value } => format!("nodeSelector {key}={value}"),
            Reason::Insufficient {
                resource,
                want,
                have,
                executor,
            } if *executor > 0.0 => format!(
                "insufficient {resource} for the pod and a new km executor (want {} + {}, {have_word} {})",
                num(want - executor),
                num(*executor),
                num(*have)
            ),
            Reason::Insufficient {
                resource,
                want,
                have,
                ..
            } => {
                format!(
                    "insufficient {resource} (want {}, {have_word} {})",
                    num(*want),
                    num(*have)
                )
            }
            Reason::HostPort { port } => format!("host port {port} not offered"),
            Reason::Ports { want, have } => {
                format!("not enough free ports (want {want}, {have_word} {have})")
            }
            Reason::ExecutorUnknown { executor_id } => {
                format!("km executor {executor_id} runs there but its ExecutorInfo is unknown")
            }
        }
    }
}

impl fmt::Display for Reason {
    /// The text in a summary, where `have` is the largest over the offers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text("largest"))
    }
}

/// Formats a resource amount: `2.5`, `1.0`, `0.125`.
fn num(v: f64) -> String {
    let s = format!("{:.3}", crate::resources::round_scalar(v));
    let s = s.trim_end_matches('0');
    if s.ends_with('.') {
        format!("{s}0")
    } else {
        s.to_string()
    }
}

/// Summarises `(offer count, reason)` pairs: groups equal reasons, most
/// frequent first. No pairs at all reads `no offers`.
///
/// ```
/// use km::offers::{reasons::summarize, Reason};
/// let cpus = |have| Reason::Insufficient { resource: "cpus", want: 2.5, have, executor: 0.0 };
/// let rack = Reason::NodeSelector { key: "rack".into(), value: "b".into() };
/// let seen = [(1, cpus(1.0)), (2, cpus(0.5)), (1, rack)];
/// assert_eq!(
///     summarize(seen.iter().map(|(n, r)| (*n, r))),
///     "3 offers: insufficient cpus (want 2.5, largest 1.0); 1 offer: nodeSelector rack=b"
/// );
/// ```
pub fn summarize<'a>(reasons: impl IntoIterator<Item = (usize, &'a Reason)>) -> String {
    let mut groups: Vec<(String, usize, Reason)> = Vec::new();
    for (n, r) in reasons {
        let k = r.key();
        match groups.iter_mut().find(|g| g.0 == k) {
            Some(g) => {
                g.1 += n;
                g.2.merge(r);
            }
            None => groups.push((k, n, r.clone())),
        }
    }
    if groups.is_empty() {
        return "no offers".to_string();
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.1));
    groups
        .iter()
        .map(|(_, n, r)| format!("{n} offer{}: {r}", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(have: f64) -> Reason {
        Reason::Insufficient {
            resource: "cpus",
            want: 2.5,
            have,
            executor: 0.0,
        }
    }

    #[test]
    fn summary_groups_counts_and_keeps_the_largest() {
        let port = Reason::HostPort { port: 8080 };
        let sel = Reason::NodeSelector {
            key: "rack".into(),
            value: "b".into(),
        };
        let rs = [cpus(0.5), port.clone(), cpus(1.0), port, cpus(0.0), sel];
        let s = summarize(rs.iter().map(|r| (1, r)));
        assert_eq!(
            s,
            "3 offers: insufficient cpus (want 2.5, largest 1.0); 2 offers: host port 8080 not offered; \
             1 offer: nodeSelector rack=b"
        );
    }

    #[test]
    fn offers_of_one_agent_count_individually() {
        let r = cpus(1.0);
        assert_eq!(
            summarize([(2, &r)]),
            "2 offers: insufficient cpus (want 2.5, largest 1.0)"
        );
        assert_eq!(summarize([]), "no offers");
    }

    #[test]
    fn executor_share_is_spelled_out() {
        let r = Reason::Insufficient {
            resource: "mem",
            want: 192.0,
            have: 150.0,
            executor: 128.0,
        };
        assert_eq!(
            r.for_one(),
            "insufficient mem for the pod and a new km executor (want 64.0 + 128.0, has 150.0)"
        );
    }
}
