//! Indexes the endpoints controller keeps beside its stores, so that one
//! Service's sync reads only the pods its selector can match and only its
//! own slices, and one pod's change finds the Services selecting it,
//! without scanning every object of the cluster.
//!
//! The index may name objects its store no longer holds (a watch that
//! re-lists reports no deletions): readers resolve each name against the
//! store and check the selector on the object they get.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use super::Key;

/// Labels, or a Service's selector.
pub type Labels = BTreeMap<String, String>;

/// One `key=value` label in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Pair {
    namespace: String,
    key: String,
    value: String,
}

impl Pair {
    fn new(namespace: &str, key: &str, value: &str) -> Pair {
        Pair {
            namespace: namespace.to_string(),
            key: key.to_string(),
            value: value.to_string(),
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Pod names by each of their labels.
    pods: HashMap<Pair, HashSet<String>>,
    /// The labels each pod is indexed under, by (namespace, name).
    pod_labels: HashMap<(String, String), Labels>,
    /// Service names by each pair of their selectors.
    services: HashMap<Pair, HashSet<String>>,
    /// Each Service's selector (non-empty).
    selectors: HashMap<Key, Labels>,
    /// Slice names by the Service they belong to.
    slices: HashMap<Key, HashSet<String>>,
    /// The Service of each slice, by (namespace, slice name).
    slice_service: HashMap<(String, String), Key>,
}

/// Pods by label, Services by selector and slices by Service.
#[derive(Default)]
pub struct Index(Mutex<Inner>);

fn add(map: &mut HashMap<Pair, HashSet<String>>, pair: Pair, name: &str) {
    map.entry(pair).or_default().insert(name.to_string());
}

fn remove(map: &mut HashMap<Pair, HashSet<String>>, pair: Pair, name: &str) {
    if let Some(names) = map.get_mut(&pair) {
        names.remove(name);
        if names.is_empty() {
            map.remove(&pair);
        }
    }
}

fn is_subset(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Inner {
    /// The Services in `namespace` whose selectors `labels` satisfy.
    fn selecting(&self, namespace: &str, labels: &Labels, into: &mut Vec<Key>) {
        for (k, v) in labels {
            let Some(names) = self.services.get(&Pair::new(namespace, k, v)) else {
                continue;
            };
            for name in names {
                let key = Key {
                    namespace: namespace.to_string(),
                    name: name.clone(),
                };
                if !into.contains(&key)
                    && self
                        .selectors
                        .get(&key)
                        .is_some_and(|sel| is_subset(sel, labels))
                {
                    into.push(key);
                }
            }
        }
    }
}

impl Index {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a pod's labels (`None`: the pod is gone) and returns the
    /// Services it concerns: those that selected it before and those that
    /// select it now.
    pub fn pod(&self, namespace: &str, name: &str, labels: Option<&Labels>) -> Vec<Key> {
        let mut inner = self.lock();
        let id = (namespace.to_string(), name.to_string());
        let mut keys = Vec::new();
        let before = inner.pod_labels.get(&id).cloned();
        if let Some(old) = &before {
            inner.selecting(namespace, old, &mut keys);
        }
        if let Some(new) = labels {
            inner.selecting(namespace, new, &mut keys);
        }
        if before.as_ref() == labels {
            return keys;
        }
        for (k, v) in before.iter().flatten() {
            remove(&mut inner.pods, Pair::new(namespace, k, v), name);
        }
        match labels {
            Some(new) => {
                for (k, v) in new {
                    add(&mut inner.pods, Pair::new(namespace, k, v), name);
                }
                inner.pod_labels.insert(id, new.clone());
            }
            None => {
                inner.pod_labels.remove(&id);
            }
        }
        keys
    }

    /// Names of the pods in `namespace` that may carry every label of
    /// `selector` (a superset: check each pod). Empty for an empty selector.
    pub fn pods_matching(&self, namespace: &str, selector: &Labels) -> Vec<String> {
        let inner = self.lock();
        let mut smallest: Option<&HashSet<String>> = None;
        for (k, v) in selector {
            match inner.pods.get(&Pair::new(namespace, k, v)) {
                None => return Vec::new(),
                Some(names) if smallest.is_none_or(|s| names.len() < s.len()) => {
                    smallest = Some(names)
                }
                Some(_) => {}
            }
        }
        smallest
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Records a Service's selector (`None` or empty: the Service is gone
    /// or selects no pods).
    pub fn service(&self, key: &Key, selector: Option<&Labels>) {
        let mut inner = self.lock();
        let selector = selector.filter(|s| !s.is_empty());
        if inner.selectors.get(key) == selector {
            return;
        }
        if let Some(old) = inner.selectors.remove(key) {
            for (k, v) in &old {
                remove(
                    &mut inner.services,
                    Pair::new(&key.namespace, k, v),
                    &key.name,
                );
            }
        }
        if let Some(new) = selector {
            for (k, v) in new {
                add(
                    &mut inner.services,
                    Pair::new(&key.namespace, k, v),
                    &key.name,
                );
            }
            inner.selectors.insert(key.clone(), new.clone());
        }
    }

    /// Records which Service a slice belongs to (`None`: the slice is gone
    /// or names no Service).
    pub fn slice(&self, namespace: &str, name: &str, service: Option<&str>) {
        let mut inner = self.lock();
        let id = (namespace.to_string(), name.to_string());
        if let Some(old) = inner.slice_service.remove(&id)
            && let Some(names) = inner.slices.get_mut(&old)
        {
            names.remove(name);
            if names.is_empty() {
                inner.slices.remove(&old);
            }
        }
        if let Some(service) = service {
            let key = Key {
                namespace: namespace.to_string(),
                name: service.to_string(),
            };
            inner
                .slices
                .entry(key.clone())
                .or_default()
                .insert(name.to_string());
            inner.slice_service.insert(id, key);
        }
    }

    /// Names of the slices that belong to the Service `key`.
    pub fn slices_of(&self, key: &Key) -> Vec<String> {
        self.lock()
            .slices
            .get(key)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn key(ns: &str, name: &str) -> Key {
        Key {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn a_selector_finds_its_pods_in_its_namespace_only() {
        let ix = Index::default();
        ix.pod(
            "a",
            "web-1",
            Some(&labels(&[("app", "web"), ("tier", "1")])),
        );
        ix.pod(
            "a",
            "web-2",
            Some(&labels(&[("app", "web"), ("tier", "2")])),
        );
        ix.pod("b", "web-3", Some(&labels(&[("app", "web")])));
        ix.pod("a", "db", Some(&labels(&[("app", "db")])));
        assert_eq!(
            sorted(ix.pods_matching("a", &labels(&[("app", "web")]))),
            ["web-1", "web-2"]
        );
        // The smallest set of the selector's pairs: a superset to check.
        assert_eq!(
            ix.pods_matching("a", &labels(&[("app", "web"), ("tier", "2")])),
            ["web-2"]
        );
        assert!(
            ix.pods_matching("a", &labels(&[("app", "web"), ("tier", "9")]))
                .is_empty()
        );
        assert!(ix.pods_matching("a", &Labels::new()).is_empty());
    }

    #[test]
    fn a_pod_change_names_the_services_selecting_it_before_and_after() {
        let ix = Index::default();
        ix.service(&key("a", "web"), Some(&labels(&[("app", "web")])));
        ix.service(
            &key("a", "web-v2"),
            Some(&labels(&[("app", "web"), ("v", "2")])),
        );
        ix.service(&key("a", "db"), Some(&labels(&[("app", "db")])));
        ix.service(&key("b", "web"), Some(&labels(&[("app", "web")])));
        ix.service(&key("a", "bare"), None);

        let now = ix.pod("a", "p", Some(&labels(&[("app", "web")])));
        assert_eq!(now, [key("a", "web")]);
        let mut moved = ix.pod("a", "p", Some(&labels(&[("app", "db")])));
        moved.sort_by(|x, y| x.name.cmp(&y.name));
        assert_eq!(moved, [key("a", "db"), key("a", "web")]);
        assert!(ix.pods_matching("a", &labels(&[("app", "web")])).is_empty());
        assert_eq!(ix.pod("a", "p", None), [key("a", "db")]);
        assert!(ix.pods_matching("a", &labels(&[("app", "db")])).is_empty());
        assert!(ix.pod("a", "q", Some(&labels(&[("x", "y")]))).is_empty());
    }

    #[test]
    fn a_changed_selector_replaces_the_old_one() {
        let ix = Index::default();
        let svc = key("a", "s");
        ix.service(&svc, Some(&labels(&[("app", "old")])));
        ix.service(&svc, Some(&labels(&[("app", "new")])));
        assert!(
            ix.pod("a", "p", Some(&labels(&[("app", "old")])))
                .is_empty()
        );
        let now = ix.pod("a", "q", Some(&labels(&[("app", "new")])));
        assert_eq!(now, std::slice::from_ref(&svc));
        ix.service(&svc, None);
        assert!(
            ix.pod("a", "q", Some(&labels(&[("app", "new")])))
                .is_empty()
        );
    }

    #[test]
    fn slices_follow_their_service_label() {
        let ix = Index::default();
        ix.slice("a", "s-abc", Some("s"));
        ix.slice("a", "s-def", Some("s"));
        ix.slice("b", "s-xyz", Some("s"));
        assert_eq!(sorted(ix.slices_of(&key("a", "s"))), ["s-abc", "s-def"]);
        ix.slice("a", "s-abc", None);
        assert_eq!(ix.slices_of(&key("a", "s")), ["s-def"]);
        ix.slice("a", "s-def", Some("t"));
        assert!(ix.slices_of(&key("a", "s")).is_empty());
        assert_eq!(ix.slices_of(&key("a", "t")), ["s-def"]);
    }
}
