//! Deployment facts without side effects (upstream's `deployment/util`):
//! annotation and label names, the strategy's surge and unavailability
//! arithmetic, revisions, orderings of ReplicaSets, and the comparison and
//! hash of pod templates.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

/// The revision of a ReplicaSet (and of its Deployment, for the newest).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had (it was rolled back to).
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when it last scaled this ReplicaSet.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's replicas plus its surge when it last scaled this ReplicaSet.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The label that tells apart the pods of each ReplicaSet of a Deployment.
pub const HASH_LABEL: &str = "pod-template-hash";
/// Longest `revision-history` annotation kept.
pub const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// Annotations of a Deployment that are not copied to its ReplicaSets.
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// `spec.replicas` of a Deployment (apps/v1 default 1).
pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `spec.replicas` of a ReplicaSet (apps/v1 default 1).
pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `status.replicas` of a ReplicaSet.
pub fn rs_actual(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)
}

/// `status.availableReplicas` of a ReplicaSet.
pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// `status.readyReplicas` of a ReplicaSet.
pub fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// How a Deployment replaces its pods.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// All old pods go before new ones come.
    Recreate,
    /// Old pods are replaced a few at a time.
    RollingUpdate {
        /// Pods above `replicas` allowed during the update.
        max_surge: IntOrString,
        /// Pods below `replicas` allowed during the update.
        max_unavailable: IntOrString,
    },
}

/// The Deployment's strategy, with the apps/v1 defaults (RollingUpdate,
/// 25% and 25%).
pub fn strategy(d: &Deployment) -> Strategy {
    let s = d.spec.as_ref().and_then(|s| s.strategy.as_ref());
    if s.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return Strategy::Recreate;
    }
    let ru = s.and_then(|s| s.rolling_update.as_ref());
    let quarter = || IntOrString::String("25%".into());
    Strategy::RollingUpdate {
        max_surge: ru.and_then(|r| r.max_surge.clone()).unwrap_or_else(quarter),
        max_unavailable: ru
            .and_then(|r| r.max_unavailable.clone())
            .unwrap_or_else(quarter),
    }
}

/// A maxSurge or maxUnavailable that is neither an integer nor a percentage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {0:?} for an int or percent: give an integer or a string like \"25%\"")]
pub struct BadIntOrPercent(pub String);

/// An int, or a percentage of `total` rounded up or down (upstream's
/// `GetScaledValueFromIntOrPercent`).
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, BadIntOrPercent> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| BadIntOrPercent(s.clone()))?;
            let product = pct * i64::from(total);
            let value = if round_up {
                -((-product).div_euclid(100))
            } else {
                product.div_euclid(100)
            };
            Ok(value.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
        }
    }
}

/// maxSurge (rounded up) and maxUnavailable (rounded down) of `desired`;
/// when both come to 0, maxUnavailable is 1 so that a rollout can proceed
/// (upstream's `ResolveFenceposts`).
pub fn fenceposts(
    max_surge: &IntOrString,
    max_unavailable: &IntOrString,
    desired: i32,
) -> Result<(i32, i32), BadIntOrPercent> {
    let surge = scaled_value(max_surge, desired, true)?;
    let unavailable = scaled_value(max_unavailable, desired, false)?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

/// Pods the Deployment may run above `replicas` (0 for Recreate).
pub fn max_surge(d: &Deployment) -> i32 {
    match strategy(d) {
        Strategy::Recreate => 0,
        Strategy::RollingUpdate {
            max_surge,
            max_unavailable,
        } => fenceposts(&max_surge, &max_unavailable, replicas(d))
            .map(|(s, _)| s)
            .unwrap_or(0),
    }
}

/// Pods the Deployment may miss below `replicas`, at most `replicas` (0
/// for Recreate and for 0 replicas).
pub fn max_unavailable(d: &Deployment) -> i32 {
    let want = replicas(d);
    match strategy(d) {
        Strategy::Recreate => 0,
        Strategy::RollingUpdate { .. } if want == 0 => 0,
        Strategy::RollingUpdate {
            max_surge,
            max_unavailable,
        } => fenceposts(&max_surge, &max_unavailable, want)
            .map(|(_, u)| u.min(want))
            .unwrap_or(0),
    }
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The revision annotation: 0 when absent, `None` when not a number.
pub fn revision(meta: &ObjectMeta) -> Option<i64> {
    match annotation(meta, REVISION) {
        None => Some(0),
        Some(v) => v.parse().ok(),
    }
}

/// The highest revision among `rss` (0 if none).
pub fn max_revision<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    rss.into_iter()
        .filter_map(|rs| revision(&rs.metadata))
        .max()
        .unwrap_or(0)
        .max(0)
}

/// The `max-replicas` annotation, if it is a number.
pub fn max_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(&rs.metadata, MAX_REPLICAS)?.parse().ok()
}

/// The `desired-replicas` annotation, if it is a number.
pub fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(&rs.metadata, DESIRED_REPLICAS)?.parse().ok()
}

/// Sets `desired-replicas` and `max-replicas`; whether anything changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if a.get(k) != Some(&v) {
            a.insert(k.to_string(), v);
            changed = true;
        }
    }
    changed
}

/// Copies the Deployment's annotations (but the ones it keeps to itself)
/// to the ReplicaSet; whether anything changed.
pub fn copy_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let mut changed = false;
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if NOT_COPIED.contains(&k.as_str()) || a.get(k) == Some(v) {
            continue;
        }
        a.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// Upstream's `SetNewReplicaSetAnnotations`: the Deployment's annotations,
/// the revision (raised to `new_revision`, the old one moved to the
/// revision history), and for a ReplicaSet about to be created the
/// replicas annotations. Whether anything changed.
pub fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = copy_annotations(d, rs);
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let old = a.get(REVISION).cloned();
    let old_number = match old.as_deref() {
        None | Some("") => 0,
        Some(v) => match v.parse::<i64>() {
            Ok(n) => n,
            Err(_) => return changed,
        },
    };
    if old_number < new_revision {
        a.insert(REVISION.to_string(), new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = a.get(REVISION_HISTORY).cloned().unwrap_or_default();
            if history.is_empty() {
                a.insert(REVISION_HISTORY.to_string(), old);
            } else {
                let mut entries: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REVISION_HISTORY_CHARS && start < entries.len() {
                    total -= entries[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REVISION_HISTORY_CHARS {
                    entries = entries.split_off(start);
                    entries.push(&old);
                    let joined = entries.join(",");
                    a.insert(REVISION_HISTORY.to_string(), joined);
                }
            }
        }
    }
    if !exists {
        let want = replicas(d);
        changed |= set_replicas_annotations(rs, want, want + max_surge(d));
    }
    changed
}

fn created(meta: &ObjectMeta) -> Option<k8s_openapi::jiff::Timestamp> {
    meta.creation_timestamp.as_ref().map(|t| t.0)
}

/// Oldest first; ties by name.
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    created(&a.metadata)
        .cmp(&created(&b.metadata))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Lowest revision first; ties oldest first.
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let r = |rs: &ReplicaSet| revision(&rs.metadata).unwrap_or(0);
    r(a).cmp(&r(b)).then_with(|| by_creation(a, b))
}

/// Largest first; ties oldest first (for scaling down).
pub fn by_size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation(a, b))
}

/// Largest first; ties newest first (for scaling up).
pub fn by_size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation(b, a))
}

/// The template as compared and hashed: without the hash label, and with
/// nulls and empty lists and maps dropped (unset and empty mean the same,
/// as in upstream's semantic equality).
fn normalized(t: &PodTemplateSpec) -> Value {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }
    let mut v = serde_json::to_value(&t).unwrap_or(Value::Null);
    prune(&mut v);
    v
}

fn prune(v: &mut Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(items) => {
            for i in items.iter_mut() {
                prune(i);
            }
            items.is_empty()
        }
        Value::Object(map) => {
            map.retain(|_, x| !prune(x));
            map.is_empty()
        }
        _ => false,
    }
}

/// Whether two templates are the same but for the `pod-template-hash`
/// label (upstream's `EqualIgnoreHash`).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    normalized(a) == normalized(b)
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                canonical(&map[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// FNV-1a, 32 bits.
fn fnv32a(data: &[u8], mut hash: u32) -> u32 {
    for b in data {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Upstream's `rand.SafeEncodeString`: each character mapped onto an
/// alphabet without vowels and look-alike digits.
fn safe_encode(s: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// The `pod-template-hash` of a template: FNV-1a over its canonical JSON
/// (keys sorted, hash label and empty values dropped), then the collision
/// count (little-endian) when set, written as upstream writes it.
pub fn template_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut text = String::new();
    canonical(&normalized(t), &mut text);
    let mut h = fnv32a(text.as_bytes(), 0x811c_9dc5);
    if let Some(c) = collision_count {
        h = fnv32a(&(c as u32).to_le_bytes(), h);
    }
    safe_encode(&h.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn surge_rounds_up_and_unavailable_rounds_down() {
        assert_eq!(scaled_value(&pct("25%"), 10, true), Ok(3));
        assert_eq!(scaled_value(&pct("25%"), 10, false), Ok(2));
        assert_eq!(scaled_value(&pct("25%"), 3, true), Ok(1));
        assert_eq!(scaled_value(&pct("25%"), 3, false), Ok(0));
        assert_eq!(scaled_value(&IntOrString::Int(2), 3, false), Ok(2));
        assert_eq!(scaled_value(&pct("0%"), 7, true), Ok(0));
        assert!(scaled_value(&pct("25"), 3, true).is_err());
        assert!(scaled_value(&pct("x%"), 3, true).is_err());
    }

    #[test]
    fn fenceposts_never_both_zero() {
        assert_eq!(fenceposts(&pct("25%"), &pct("25%"), 3), Ok((1, 0)));
        assert_eq!(fenceposts(&pct("0%"), &pct("25%"), 3), Ok((0, 1)));
        assert_eq!(
            fenceposts(&IntOrString::Int(0), &IntOrString::Int(0), 3),
            Ok((0, 1))
        );
        assert_eq!(fenceposts(&pct("50%"), &pct("50%"), 5), Ok((3, 2)));
    }

    #[test]
    fn deployment_surge_and_unavailability() {
        let d = deployment(3, pct("25%"), pct("25%"));
        assert_eq!((max_surge(&d), max_unavailable(&d)), (1, 0));
        let d = deployment(2, IntOrString::Int(0), IntOrString::Int(5));
        assert_eq!(max_unavailable(&d), 2, "never more than replicas");
        let d = deployment(0, IntOrString::Int(1), IntOrString::Int(1));
        assert_eq!(max_unavailable(&d), 0);
        let mut d = deployment(3, IntOrString::Int(1), IntOrString::Int(1));
        d.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        });
        assert_eq!((max_surge(&d), max_unavailable(&d)), (0, 0));
        // Defaults: 25% and 25%.
        let mut d = deployment(8, IntOrString::Int(1), IntOrString::Int(1));
        d.spec.as_mut().unwrap().strategy = None;
        assert_eq!((max_surge(&d), max_unavailable(&d)), (2, 2));
    }

    fn template(image: &str, hash: Option<&str>) -> PodTemplateSpec {
        let mut labels: BTreeMap<String, String> = [("app".into(), "web".into())].into();
        if let Some(h) = hash {
            labels.insert(HASH_LABEL.into(), h.into());
        }
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn template_hash_is_stable_and_ignores_the_hash_label() {
        let a = template("nginx:1", None);
        let h = template_hash(&a, None);
        assert_eq!(h, template_hash(&a.clone(), None));
        assert_eq!(h, template_hash(&template("nginx:1", Some("zzz")), None));
        assert_ne!(h, template_hash(&template("nginx:2", None), None));
        assert_ne!(h, template_hash(&a, Some(1)));
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert!(!h.is_empty() && h.len() <= 10);
        // Fixed input, fixed output: the hash must not change between
        // releases (FNV-1a of the canonical JSON is 3569820587).
        assert_eq!(h, "79bfd649dc");
        let mut empty = a.clone();
        empty.metadata.as_mut().unwrap().annotations = Some(BTreeMap::new());
        assert_eq!(
            h,
            template_hash(&empty, None),
            "an empty map is an unset one"
        );
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        assert!(equal_ignore_hash(
            &template("nginx:1", None),
            &template("nginx:1", Some("abc"))
        ));
        assert!(!equal_ignore_hash(
            &template("nginx:1", None),
            &template("nginx:2", Some("abc"))
        ));
    }

    fn rs_with(revision: Option<&str>) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                annotations: revision.map(|r| [(REVISION.to_string(), r.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn revisions_and_history() {
        assert_eq!(
            max_revision(&[rs_with(Some("3")), rs_with(None), rs_with(Some("x"))]),
            3
        );
        let mut d = deployment(3, pct("25%"), pct("25%"));
        d.metadata.annotations = Some(
            [
                ("team".to_string(), "a".to_string()),
                (REVISION.to_string(), "9".to_string()),
            ]
            .into(),
        );
        // A new ReplicaSet gets revision, replicas annotations and the
        // Deployment's own annotations, but not its revision.
        let mut fresh = rs_with(None);
        assert!(set_new_rs_annotations(&d, &mut fresh, 4, false));
        let a = fresh.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[REVISION], "4");
        assert_eq!(a["team"], "a");
        assert_eq!(a[DESIRED_REPLICAS], "3");
        assert_eq!(a[MAX_REPLICAS], "4");
        assert!(!a.contains_key(REVISION_HISTORY));
        assert!(!set_new_rs_annotations(&d, &mut fresh, 4, true));
        // Rolled back to: the old revision goes to the history.
        let mut old = rs_with(Some("1"));
        assert!(set_new_rs_annotations(&d, &mut old, 5, true));
        let a = old.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            (a[REVISION].as_str(), a[REVISION_HISTORY].as_str()),
            ("5", "1")
        );
        assert!(set_new_rs_annotations(&d, &mut old, 7, true));
        assert_eq!(
            old.metadata.annotations.as_ref().unwrap()[REVISION_HISTORY],
            "1,5"
        );
        // Never lowered.
        assert!(!set_new_rs_annotations(&d, &mut old, 6, true));
    }
}
