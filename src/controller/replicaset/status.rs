//! A ReplicaSet's status from the pods it controls (upstream's
//! `calculateStatus`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::controller::workload::pods;

/// The condition set while pods cannot be created or deleted.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// The status of `rs` given the active pods it controls, the error of the
/// last attempt to create or delete pods (if it failed), and the time.
pub fn calculate(
    rs: &ReplicaSet,
    owned: &[&Pod],
    failure: Option<&str>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let spec = rs.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels: BTreeMap<String, String> = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = owned
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            template_labels
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let ready = owned.iter().filter(|p| pods::is_ready(p)).count();
    let available = owned
        .iter()
        .filter(|p| pods::is_available(p, min_ready, now))
        .count();

    let mut status = rs.status.clone().unwrap_or_default();
    let mut conditions = status.conditions.take().unwrap_or_default();
    let has_failure = conditions.iter().any(|c| c.type_ == REPLICA_FAILURE);
    match failure {
        Some(message) if !has_failure => {
            let want = spec.replicas.unwrap_or(1).max(0) as usize;
            let reason = if owned.len() < want {
                "FailedCreate"
            } else {
                "FailedDelete"
            };
            conditions.push(ReplicaSetCondition {
                type_: REPLICA_FAILURE.to_string(),
                status: "True".to_string(),
                reason: Some(reason.to_string()),
                message: Some(message.to_string()),
                last_transition_time: Some(Time(now)),
            });
        }
        None if has_failure => conditions.retain(|c| c.type_ != REPLICA_FAILURE),
        _ => {}
    }
    status.conditions = (!conditions.is_empty()).then_some(conditions);
    status.replicas = owned.len() as i32;
    status.fully_labeled_replicas = Some(fully_labeled as i32);
    status.ready_replicas = Some(ready as i32);
    status.available_replicas = Some(available as i32);
    status.observed_generation = rs.metadata.generation;
    status
}

/// Two statuses are the same, counting an unset number as 0 (a real API
/// server omits zeros).
pub fn same(a: &ReplicaSetStatus, b: &ReplicaSetStatus) -> bool {
    let norm = |s: &ReplicaSetStatus| {
        let z = |v: Option<i32>| v.filter(|x| *x != 0);
        ReplicaSetStatus {
            available_replicas: z(s.available_replicas),
            conditions: s.conditions.clone().filter(|c| !c.is_empty()),
            fully_labeled_replicas: z(s.fully_labeled_replicas),
            observed_generation: s.observed_generation.filter(|g| *g != 0),
            ready_replicas: z(s.ready_replicas),
            replicas: s.replicas,
            terminating_replicas: s.terminating_replicas,
        }
    };
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn rs(replicas: i32, min_ready: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                generation: Some(4),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: Some(min_ready),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(
                            [("app".into(), "web".into()), ("tier".into(), "fe".into())].into(),
                        ),
                        ..Default::default()
                    }),
                    spec: None,
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(labels: &[(&str, &str)], ready_at: Option<i64>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
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

    #[test]
    fn counts_labeled_ready_and_available_pods() {
        let full = [("app", "web"), ("tier", "fe")];
        let a = pod(&full, Some(100));
        let b = pod(&full, Some(195));
        let c = pod(&[("app", "web")], None);
        let s = calculate(&rs(3, 10), &[&a, &b, &c], None, ts(200));
        assert_eq!(s.replicas, 3);
        assert_eq!(s.fully_labeled_replicas, Some(2));
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(1));
        assert_eq!(s.observed_generation, Some(4));
        assert!(s.conditions.is_none());
    }

    #[test]
    fn a_failure_sets_and_clears_the_replica_failure_condition() {
        let mut r = rs(3, 0);
        let s = calculate(&r, &[], Some("quota exceeded"), ts(1));
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(c.type_, REPLICA_FAILURE);
        assert_eq!(c.reason.as_deref(), Some("FailedCreate"));
        r.status = Some(s);
        // A second failure keeps the first condition as it was.
        let again = calculate(&r, &[], Some("other"), ts(9));
        assert_eq!(again.conditions, r.status.as_ref().unwrap().conditions);
        let cleared = calculate(&r, &[], None, ts(10));
        assert!(cleared.conditions.is_none());
    }

    #[test]
    fn unset_counts_equal_zero() {
        let zeros = ReplicaSetStatus {
            ready_replicas: Some(0),
            available_replicas: Some(0),
            ..Default::default()
        };
        assert!(same(&zeros, &ReplicaSetStatus::default()));
        let one = ReplicaSetStatus {
            ready_replicas: Some(1),
            ..Default::default()
        };
        assert!(!same(&one, &zeros));
    }
}
