//! Which controllers run: the `--controllers` flag, in the syntax of the
//! upstream kube-controller-manager (`*` all on by default, `name` on,
//! `-name` off; later entries win).

use std::collections::BTreeSet;
use std::fmt;

/// One controller of `km controller-manager`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    /// Endpoints and EndpointSlices at hostIP:hostPort (or podIP:containerPort).
    Endpoints,
    /// Nodes that mirror the Mesos agents.
    Nodes,
    /// ReplicaSets keep their number of pods.
    ReplicaSet,
    /// Deployments roll ReplicaSets.
    Deployment,
    /// Dependents go with their owners (ownerReferences).
    GarbageCollector,
    /// A deleted namespace's contents are removed, then the namespace.
    Namespace,
}

impl Controller {
    /// Every controller, in start order.
    pub const ALL: [Controller; 6] = [
        Controller::Endpoints,
        Controller::Nodes,
        Controller::ReplicaSet,
        Controller::Deployment,
        Controller::GarbageCollector,
        Controller::Namespace,
    ];

    /// The name `--controllers` uses.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Endpoints => "endpoints",
            Controller::Nodes => "nodes",
            Controller::ReplicaSet => "replicaset",
            Controller::Deployment => "deployment",
            Controller::GarbageCollector => "garbagecollector",
            Controller::Namespace => "namespace",
        }
    }

    /// Other names accepted for it: the upstream controller names it stands in for.
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Controller::Endpoints => &[
                "endpoint",
                "endpoints-controller",
                "endpointslice",
                "endpointslice-controller",
            ],
            Controller::Nodes => &["node", "node-lifecycle-controller", "nodelifecycle"],
            Controller::ReplicaSet => &["replicasets", "replicaset-controller"],
            Controller::Deployment => &["deployments", "deployment-controller"],
            Controller::GarbageCollector => &["garbage-collector-controller"],
            Controller::Namespace => &["namespaces", "namespace-controller"],
        }
    }

    /// On with `*`: the Mesos-specific ones. The workload controllers are
    /// for clusters without the upstream controller manager, so they are
    /// named explicitly (as `km local` does).
    pub fn on_by_default(self) -> bool {
        matches!(self, Controller::Endpoints | Controller::Nodes)
    }

    /// The controller `name` (or one of its aliases) refers to.
    pub fn from_name(name: &str) -> Option<Controller> {
        Controller::ALL
            .into_iter()
            .find(|c| c.name() == name || c.aliases().contains(&name))
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--controllers` entry that names no controller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "--controllers: unknown controller {entry:?}; known: {known} (use '*' for the default set, 'name' to add one, '-name' to remove one)",
    known = Controller::ALL.map(Controller::name).join(", ")
)]
pub struct UnknownController {
    entry: String,
}

/// The controllers selected by the entries of `--controllers`.
///
/// ```
/// use km::controller::selection::{parse, Controller};
/// let on = parse(&["*".into(), "replicaset".into(), "-nodes".into()]).unwrap();
/// assert!(on.contains(&Controller::Endpoints));
/// assert!(on.contains(&Controller::ReplicaSet));
/// assert!(!on.contains(&Controller::Nodes));
/// ```
pub fn parse(entries: &[String]) -> Result<BTreeSet<Controller>, UnknownController> {
    let mut on = BTreeSet::new();
    for entry in entries.iter().flat_map(|e| e.split(',')) {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        if entry == "*" {
            on.extend(Controller::ALL.into_iter().filter(|c| c.on_by_default()));
            continue;
        }
        let (off, name) = match entry.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, entry),
        };
        let c = Controller::from_name(name).ok_or_else(|| UnknownController {
            entry: entry.to_string(),
        })?;
        if off {
            on.remove(&c);
        } else {
            on.insert(c);
        }
    }
    Ok(on)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(spec: &str) -> Vec<&'static str> {
        parse(&[spec.to_string()])
            .unwrap()
            .into_iter()
            .map(Controller::name)
            .collect()
    }

    #[test]
    fn star_is_the_mesos_set() {
        assert_eq!(on("*"), ["endpoints", "nodes"]);
    }

    #[test]
    fn names_add_and_dashes_remove_in_order() {
        assert_eq!(
            on("*,replicaset,deployment,-nodes"),
            ["endpoints", "replicaset", "deployment"]
        );
        assert_eq!(on("-endpoints,*"), ["endpoints", "nodes"]);
        assert_eq!(on("namespace"), ["namespace"]);
    }

    #[test]
    fn upstream_names_are_accepted() {
        assert_eq!(
            on("endpointslice-controller,garbage-collector-controller"),
            ["endpoints", "garbagecollector"]
        );
    }

    #[test]
    fn unknown_names_are_refused_with_the_list() {
        let e = parse(&["*,-bogus".into()]).unwrap_err().to_string();
        assert!(e.contains("\"-bogus\""), "{e}");
        assert!(e.contains("endpoints, nodes, replicaset"), "{e}");
    }
}
