//! Pods as the workload controllers see them: active or not, ready,
//! available after `minReadySeconds`, which to delete first when scaling
//! down, and a new pod from a template.

use std::cmp::Ordering;
use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The annotation that makes a pod cheaper (lower) or dearer to delete.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Neither finished (Succeeded, Failed) nor being deleted: it counts
/// towards its controller's replicas.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// Since when the pod's Ready condition is True, if it is.
fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// The pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// When a ready pod becomes available: `None` if not ready, `Some(None)` if
/// it already counts as available whatever the time (no `minReadySeconds`,
/// or no transition time to measure from would make it never available, so
/// upstream counts it only with `minReadySeconds` 0).
fn available_from(pod: &Pod, min_ready_seconds: i32) -> Option<Option<Timestamp>> {
    let since = ready_since(pod)?;
    if min_ready_seconds <= 0 {
        return Some(None);
    }
    Some(Some(match since {
        Some(t) => t
            .saturating_add(SignedDuration::from_secs(min_ready_seconds.into()))
            .unwrap_or(Timestamp::MAX),
        None => Timestamp::MAX,
    }))
}

/// Ready for at least `min_ready_seconds` at `now` (upstream's
/// `IsPodAvailable`: the Ready transition plus the delay is before now).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match available_from(pod, min_ready_seconds) {
        None => false,
        Some(None) => true,
        Some(Some(t)) => t < now,
    }
}

/// How long until the next ready pod of `pods` becomes available, if any
/// is waiting out its `minReadySeconds`.
pub fn next_available_in<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<std::time::Duration> {
    pods.into_iter()
        .filter_map(|p| available_from(p, min_ready_seconds).flatten())
        .filter(|t| *t >= now && *t != Timestamp::MAX)
        .min()
        .map(|t| {
            let d = t.duration_since(now);
            std::time::Duration::from_millis(d.as_millis().max(0) as u64 + 100)
        })
}

fn phase_rank(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The most restarts of a regular container, then of a sidecar (an init
/// container that restarts always).
fn restarts(pod: &Pod) -> (i32, i32) {
    let Some(status) = pod.status.as_ref() else {
        return (0, 0);
    };
    let regular = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    let sidecars: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    let sidecar = status
        .init_container_statuses
        .iter()
        .flatten()
        .filter(|c| sidecars.contains(&c.name.as_str()))
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    (regular, sidecar)
}

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// `a` before `b` when `a` is the later time; a missing time comes first
/// (upstream's `afterOrZero`).
fn later_first(a: Option<Timestamp>, b: Option<Timestamp>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(&a),
    }
}

/// The order in which to delete pods, the first deleted first (upstream's
/// `ActivePodsWithRanks`): unscheduled before scheduled; Pending before
/// Unknown before Running; not ready before ready; lower deletion cost
/// first; more pods of the same family on its node first (`rank`); ready
/// for less time first; more restarts first; newer first.
pub fn deletion_order(a: &Pod, rank_a: usize, b: &Pod, rank_b: usize) -> Ordering {
    let (na, nb) = (node_of(a), node_of(b));
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return nb.is_empty().cmp(&na.is_empty());
    }
    phase_rank(a)
        .cmp(&phase_rank(b))
        .then_with(|| is_ready(a).cmp(&is_ready(b)))
        .then_with(|| deletion_cost(a).cmp(&deletion_cost(b)))
        .then_with(|| rank_b.cmp(&rank_a))
        .then_with(|| match (ready_since(a), ready_since(b)) {
            (Some(ta), Some(tb)) => later_first(ta, tb),
            _ => Ordering::Equal,
        })
        .then_with(|| {
            let (ra, rb) = (restarts(a), restarts(b));
            rb.0.cmp(&ra.0).then(rb.1.cmp(&ra.1))
        })
        .then_with(|| {
            later_first(
                a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        })
}

/// The `count` pods of `pods` to delete first; `related` are the active
/// pods of the whole family (every ReplicaSet of the same Deployment), whose
/// spread over nodes breaks ties (a node with more of them gives first).
pub fn to_delete<'a>(pods: &[&'a Pod], related: &[&Pod], count: usize) -> Vec<&'a Pod> {
    if count >= pods.len() {
        return pods.to_vec();
    }
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in related.iter().filter(|p| is_active(p)) {
        *on_node.entry(node_of(p)).or_default() += 1;
    }
    let mut ranked: Vec<(&Pod, usize)> = pods
        .iter()
        .map(|p| (*p, on_node.get(node_of(p)).copied().unwrap_or(0)))
        .collect();
    ranked.sort_by(|(a, ra), (b, rb)| deletion_order(a, *ra, b, *rb));
    ranked.into_iter().take(count).map(|(p, _)| p).collect()
}

/// A new pod from `template`, named `<prefix>-<random>` by the API server,
/// controlled by `controller` (upstream's `GetPodFromTemplate`).
pub fn from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    prefix: &str,
    controller: OwnerReference,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            namespace: Some(namespace.to_string()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn pod(name: &str, node: &str, phase: &str, ready_at: Option<i64>, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(ts(created))),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_string()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(ts(t))),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    fn names(pods: Vec<&Pod>) -> Vec<&str> {
        pods.iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect()
    }

    #[test]
    fn deletion_prefers_unscheduled_pending_unready_then_newest() {
        let ready_old = pod("ready-old", "n1", "Running", Some(100), 10);
        let ready_new = pod("ready-new", "n1", "Running", Some(200), 20);
        let unready = pod("unready", "n1", "Running", None, 5);
        let pending = pod("pending", "n1", "Pending", None, 1);
        let unscheduled = pod("unscheduled", "", "Pending", None, 0);
        let all = [&ready_old, &ready_new, &unready, &pending, &unscheduled];
        let order = to_delete(&all, &all, 4);
        assert_eq!(
            names(order),
            ["unscheduled", "pending", "unready", "ready-new"]
        );
    }

    #[test]
    fn among_equals_the_newest_goes_first_and_crowded_nodes_give_first() {
        let a = pod("a", "n1", "Running", None, 10);
        let b = pod("b", "n1", "Running", None, 30);
        let c = pod("c", "n2", "Running", None, 20);
        assert_eq!(names(to_delete(&[&a, &b, &c], &[], 1)), ["b"]);
        // n2 has more of the family: its pod goes first despite being older.
        let family = [&a, &b, &c, &c, &c];
        assert_eq!(names(to_delete(&[&a, &c], &family, 1)), ["c"]);
    }

    #[test]
    fn deletion_cost_and_restarts_break_ties() {
        let mut cheap = pod("cheap", "n1", "Running", None, 10);
        cheap.metadata.annotations = Some([(DELETION_COST.to_string(), "-5".to_string())].into());
        let plain = pod("plain", "n1", "Running", None, 20);
        assert_eq!(names(to_delete(&[&plain, &cheap], &[], 1)), ["cheap"]);
        let mut crashy = pod("crashy", "n1", "Running", None, 10);
        crashy.status.as_mut().unwrap().container_statuses =
            Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
                name: "c".into(),
                restart_count: 3,
                ..Default::default()
            }]);
        assert_eq!(names(to_delete(&[&plain, &crashy], &[], 1)), ["crashy"]);
    }

    #[test]
    fn deleting_all_keeps_the_order_given() {
        let a = pod("a", "n1", "Running", Some(1), 1);
        let b = pod("b", "", "Pending", None, 2);
        assert_eq!(names(to_delete(&[&a, &b], &[], 2)), ["a", "b"]);
    }

    #[test]
    fn availability_waits_out_min_ready_seconds() {
        let p = pod("p", "n1", "Running", Some(100), 1);
        assert!(is_available(&p, 0, ts(100)));
        assert!(!is_available(&p, 10, ts(110)));
        assert!(is_available(&p, 10, ts(111)));
        assert_eq!(
            next_available_in([&p], 10, ts(105)),
            Some(std::time::Duration::from_millis(5100))
        );
        assert_eq!(next_available_in([&p], 10, ts(120)), None);
        let unready = pod("u", "n1", "Running", None, 1);
        assert!(!is_available(&unready, 0, ts(100)));
    }

    #[test]
    fn finished_and_deleted_pods_are_inactive() {
        assert!(is_active(&pod("p", "", "Pending", None, 1)));
        assert!(!is_active(&pod("p", "", "Failed", None, 1)));
        assert!(!is_active(&pod("p", "", "Succeeded", None, 1)));
        let mut gone = pod("p", "", "Running", None, 1);
        gone.metadata.deletion_timestamp = Some(Time(ts(5)));
        assert!(!is_active(&gone));
    }

    #[test]
    fn pods_from_templates_carry_labels_and_controller() {
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec::default()),
        };
        let owner = OwnerReference {
            uid: "u".into(),
            controller: Some(true),
            ..Default::default()
        };
        let p = from_template(&template, "ns", "web-abc", owner);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-abc-"));
        assert_eq!(p.metadata.labels.unwrap()["app"], "web");
        assert_eq!(p.metadata.owner_references.unwrap()[0].uid, "u");
        assert_eq!(p.metadata.namespace.as_deref(), Some("ns"));
    }
}
