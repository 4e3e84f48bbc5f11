//! The garbage collector's dependency graph: every object it watches, by
//! uid, with its ownerReferences, and the reverse index from an owner's uid
//! to its dependents (owners it has not seen included). Changes to the
//! graph say what work they call for ([`Work`]).

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// The finalizer of an owner deleted in the foreground.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an owner whose dependents are orphaned.
pub const ORPHAN: &str = "orphan";

/// One object as the graph keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Index of its kind in the collector's list of kinds.
    pub kind: usize,
    /// Its namespace (`None` for cluster-scoped objects).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Its ownerReferences.
    pub owners: Vec<OwnerReference>,
    /// It has a deletionTimestamp.
    pub deleting: bool,
    /// Its metadata.finalizers.
    pub finalizers: Vec<String>,
}

impl Node {
    /// Being deleted in the foreground: waits for its dependents.
    pub fn deleting_dependents(&self) -> bool {
        self.deleting && self.finalizers.iter().any(|f| f == FOREGROUND)
    }

    /// Being deleted with its dependents orphaned.
    pub fn orphaning(&self) -> bool {
        self.deleting && self.finalizers.iter().any(|f| f == ORPHAN)
    }
}

/// Work for the collector's workers, by object uid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Work {
    /// Check the object's owners; delete it if none is left (upstream's
    /// `attemptToDeleteItem`).
    AttemptToDelete(String),
    /// An owner deleted in the foreground: delete its dependents, and drop
    /// its finalizer once no blocking one is left.
    DeleteDependents(String),
    /// An owner deleted with orphaning: remove references to it from its
    /// dependents, then drop its finalizer.
    Orphan(String),
}

/// Objects by uid and dependents by owner uid.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
    /// Whether every kind was listed once; before, changes call for no
    /// work (a full [`Graph::scan`] follows).
    pub synced: bool,
}

impl Graph {
    /// The object `uid`.
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// Uids of the objects of kind `kind`.
    pub fn uids_of_kind(&self, kind: usize) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.kind == kind)
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Dependents of `owner` that the graph has seen.
    pub fn dependents(&self, owner: &str) -> Vec<(String, &Node)> {
        self.dependents
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|u| self.nodes.get(u).map(|n| (u.clone(), n)))
            .collect()
    }

    /// Dependents whose reference to `owner` blocks its deletion.
    pub fn blocking_dependents(&self, owner: &str) -> Vec<String> {
        self.dependents(owner)
            .into_iter()
            .filter(|(_, n)| {
                n.owners
                    .iter()
                    .any(|r| r.uid == owner && r.block_owner_deletion == Some(true))
            })
            .map(|(u, _)| u)
            .collect()
    }

    /// Whether an owner of `node` is unknown or waits for its dependents:
    /// then the node's owners need checking.
    fn suspicious(&self, node: &Node) -> bool {
        node.owners.iter().any(|r| match self.nodes.get(&r.uid) {
            None => true,
            Some(o) => o.deleting_dependents(),
        })
    }

    fn waiting_owners(&self, node: &Node) -> Vec<Work> {
        node.owners
            .iter()
            .filter(|r| {
                self.nodes
                    .get(&r.uid)
                    .is_some_and(Node::deleting_dependents)
            })
            .map(|r| Work::DeleteDependents(r.uid.clone()))
            .collect()
    }

    /// Adds or updates `uid`; the work this change calls for.
    pub fn apply(&mut self, uid: &str, node: Node) -> Vec<Work> {
        let old = self.nodes.insert(uid.to_string(), node.clone());
        if let Some(o) = &old {
            for r in &o.owners {
                if !node.owners.iter().any(|n| n.uid == r.uid)
                    && let Some(set) = self.dependents.get_mut(&r.uid)
                {
                    set.remove(uid);
                    if set.is_empty() {
                        self.dependents.remove(&r.uid);
                    }
                }
            }
        }
        for r in &node.owners {
            self.dependents
                .entry(r.uid.clone())
                .or_default()
                .insert(uid.to_string());
        }
        if !self.synced {
            return Vec::new();
        }
        let mut work = Vec::new();
        let owners_changed = old.as_ref().is_none_or(|o| o.owners != node.owners);
        if owners_changed && !node.owners.is_empty() && self.suspicious(&node) {
            work.push(Work::AttemptToDelete(uid.to_string()));
        }
        if let Some(o) = &old
            && owners_changed
        {
            // References dropped or unblocked may free an owner that waits.
            work.extend(self.waiting_owners(o));
        }
        if node.orphaning() {
            work.push(Work::Orphan(uid.to_string()));
        }
        if node.deleting_dependents() {
            work.push(Work::DeleteDependents(uid.to_string()));
            if !old.as_ref().is_some_and(Node::deleting_dependents) {
                work.extend(
                    self.dependents(uid)
                        .into_iter()
                        .map(|(u, _)| Work::AttemptToDelete(u)),
                );
            }
        }
        work
    }

    /// Removes `uid`; the work this calls for.
    pub fn delete(&mut self, uid: &str) -> Vec<Work> {
        let Some(node) = self.nodes.remove(uid) else {
            return Vec::new();
        };
        for r in &node.owners {
            if let Some(set) = self.dependents.get_mut(&r.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
        }
        if !self.synced {
            return Vec::new();
        }
        let mut work: Vec<Work> = self
            .dependents
            .get(uid)
            .into_iter()
            .flatten()
            .map(|d| Work::AttemptToDelete(d.clone()))
            .collect();
        work.extend(self.waiting_owners(&node));
        work
    }

    /// Work for the whole graph (after the first listing, and from time to
    /// time to catch what events missed).
    pub fn scan(&self) -> Vec<Work> {
        let mut work = Vec::new();
        for (uid, node) in &self.nodes {
            if !node.owners.is_empty() && self.suspicious(node) {
                work.push(Work::AttemptToDelete(uid.clone()));
            }
            if node.orphaning() {
                work.push(Work::Orphan(uid.clone()));
            }
            if node.deleting_dependents() {
                work.push(Work::DeleteDependents(uid.clone()));
            }
        }
        work.sort();
        work
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_ref(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("n-{uid}"),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn node(owners: Vec<OwnerReference>) -> Node {
        Node {
            kind: 0,
            namespace: Some("ns".into()),
            name: "x".into(),
            owners,
            deleting: false,
            finalizers: Vec::new(),
        }
    }

    fn synced() -> Graph {
        Graph {
            synced: true,
            ..Default::default()
        }
    }

    #[test]
    fn an_unknown_owner_makes_the_dependent_suspect() {
        let mut g = synced();
        assert_eq!(
            g.apply("pod", node(vec![owner_ref("rs", true)])),
            [Work::AttemptToDelete("pod".into())]
        );
        // Known owner: nothing to do; an unrelated update neither.
        let mut g = synced();
        assert!(g.apply("rs", node(vec![])).is_empty());
        assert!(g.apply("pod", node(vec![owner_ref("rs", true)])).is_empty());
        let mut n = node(vec![owner_ref("rs", true)]);
        n.name = "renamed".into();
        assert!(g.apply("pod", n).is_empty());
    }

    #[test]
    fn an_owner_gone_wakes_its_dependents() {
        let mut g = synced();
        g.apply("rs", node(vec![]));
        g.apply("pod", node(vec![owner_ref("rs", true)]));
        assert_eq!(g.delete("rs"), [Work::AttemptToDelete("pod".into())]);
        assert_eq!(g.dependents("rs").len(), 1, "the pod still points at it");
    }

    #[test]
    fn foreground_deletion_deletes_dependents_and_waits_for_blockers() {
        let mut g = synced();
        g.apply("rs", node(vec![]));
        g.apply("a", node(vec![owner_ref("rs", true)]));
        g.apply("b", node(vec![owner_ref("rs", false)]));
        let mut deleting = node(vec![]);
        deleting.deleting = true;
        deleting.finalizers = vec![FOREGROUND.into()];
        let mut work = g.apply("rs", deleting.clone());
        work.sort();
        assert_eq!(
            work,
            [
                Work::AttemptToDelete("a".into()),
                Work::AttemptToDelete("b".into()),
                Work::DeleteDependents("rs".into()),
            ]
        );
        assert_eq!(g.blocking_dependents("rs"), ["a".to_string()]);
        // A second update of the waiting owner does not delete again.
        assert_eq!(
            g.apply("rs", deleting),
            [Work::DeleteDependents("rs".into())]
        );
        // The blocker going away wakes the owner.
        assert_eq!(g.delete("a"), [Work::DeleteDependents("rs".into())]);
        assert!(g.blocking_dependents("rs").is_empty());
    }

    #[test]
    fn orphaning_owners_and_scans() {
        let mut g = Graph::default();
        let mut o = node(vec![]);
        o.deleting = true;
        o.finalizers = vec![ORPHAN.into()];
        assert!(
            g.apply("d", o).is_empty(),
            "no work before the first listing"
        );
        g.apply("pod", node(vec![owner_ref("gone", true)]));
        g.synced = true;
        assert_eq!(
            g.scan(),
            [
                Work::AttemptToDelete("pod".into()),
                Work::Orphan("d".into())
            ]
        );
        assert_eq!(g.uids_of_kind(0).len(), 2);
    }
}
