//! A Deployment's status and conditions: counts from its ReplicaSets,
//! Available, and Progressing with its deadline (upstream's
//! `calculateStatus`, `syncRolloutStatus` and condition helpers).

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::util::{max_unavailable, replicas, rs_actual, rs_available, rs_ready, rs_replicas};

/// Condition type: enough pods are available.
pub const AVAILABLE: &str = "Available";
/// Condition type: the rollout moves (or finished, or is stuck).
pub const PROGRESSING: &str = "Progressing";
/// Condition type: a ReplicaSet cannot create or delete pods.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// Reasons, as upstream names them.
pub mod reason {
    /// A new ReplicaSet was created.
    pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
    /// The new ReplicaSet already existed.
    pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    /// The rollout made progress.
    pub const RS_UPDATED: &str = "ReplicaSetUpdated";
    /// The rollout is complete.
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// No progress within progressDeadlineSeconds.
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    /// The new ReplicaSet could not be created.
    pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
    /// spec.paused was set.
    pub const PAUSED: &str = "DeploymentPaused";
    /// spec.paused was cleared.
    pub const RESUMED: &str = "DeploymentResumed";
    /// Enough pods are available.
    pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// Too few pods are available.
    pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
}

/// The current time to the second, as the API stores times.
pub fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A condition stamped `now`.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// The condition of type `t`.
pub fn get<'a>(s: &'a DeploymentStatus, t: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.iter().flatten().find(|c| c.type_ == t)
}

/// Sets `c` unless a condition with the same status and reason is there;
/// keeps the transition time when only the reason changes.
pub fn set(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = get(s, &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove(s, &c.type_);
    s.conditions.get_or_insert_with(Vec::new).push(c);
}

/// Removes the condition of type `t`.
pub fn remove(s: &mut DeploymentStatus, t: &str) {
    if let Some(cs) = s.conditions.as_mut() {
        cs.retain(|c| c.type_ != t);
        if cs.is_empty() {
            s.conditions = None;
        }
    }
}

/// progressDeadlineSeconds, unless it is unset-forever (MaxInt32); the
/// apps/v1 default is 600.
pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    let s = d
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(600);
    (s != i32::MAX).then_some(s)
}

/// The counts and Available condition from the ReplicaSets.
pub fn calculate(
    d: &Deployment,
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    now: Timestamp,
) -> DeploymentStatus {
    let available: i32 = all.iter().map(|rs| rs_available(rs)).sum();
    let total: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
    let old = d.status.clone().unwrap_or_default();
    let mut s = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(|rs| rs_actual(rs)).sum()),
        updated_replicas: Some(new.map(rs_actual).unwrap_or(0)),
        ready_replicas: Some(all.iter().map(|rs| rs_ready(rs)).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: old.terminating_replicas,
    };
    if available >= replicas(d) - max_unavailable(d) {
        set(
            &mut s,
            condition(
                AVAILABLE,
                "True",
                reason::MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set(
            &mut s,
            condition(
                AVAILABLE,
                "False",
                reason::MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    s
}

fn n(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

/// Every replica is updated and available, and the spec was seen.
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = replicas(d);
    n(s.updated_replicas) == want
        && n(s.replicas) == want
        && n(s.available_replicas) == want
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Something moved since the stored status: more updated, fewer old, more
/// ready or more available replicas.
pub fn progressing(d: &Deployment, s: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(s.replicas) - n(s.updated_replicas);
    n(s.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(s.ready_replicas) > n(old.ready_replicas)
        || n(s.available_replicas) > n(old.available_replicas)
}

/// The Progressing condition was last updated longer than the deadline
/// ago (or already says so).
pub fn timed_out(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(c) = get(s, PROGRESSING) else {
        return false;
    };
    match c.reason.as_deref() {
        Some(reason::NEW_RS_AVAILABLE) => false,
        Some(reason::TIMED_OUT) => true,
        _ => c.last_update_time.as_ref().is_some_and(|t| {
            t.0.checked_add(SignedDuration::from_secs(deadline.into()))
                .is_ok_and(|end| end < now)
        }),
    }
}

/// The Progressing condition for a rollout in flight (upstream's
/// `syncRolloutStatus` minus the write), on top of [`calculate`]'s status.
pub fn rollout_conditions(
    d: &Deployment,
    s: &mut DeploymentStatus,
    new: Option<&ReplicaSet>,
    now: Timestamp,
) {
    if progress_deadline(d).is_none() {
        remove(s, PROGRESSING);
    }
    let current = d
        .status
        .as_ref()
        .and_then(|st| get(st, PROGRESSING))
        .cloned();
    let finished = n(s.replicas) == n(s.updated_replicas)
        && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(reason::NEW_RS_AVAILABLE);
    if progress_deadline(d).is_none() || finished {
        return;
    }
    let name = d.metadata.name.clone().unwrap_or_default();
    let subject = match new.and_then(|rs| rs.metadata.name.as_deref()) {
        Some(rs) => format!("ReplicaSet {rs:?}"),
        None => format!("Deployment {name:?}"),
    };
    if complete(d, s) {
        set(
            s,
            condition(
                PROGRESSING,
                "True",
                reason::NEW_RS_AVAILABLE,
                format!("{subject} has successfully progressed."),
                now,
            ),
        );
    } else if progressing(d, s) {
        let mut c = condition(
            PROGRESSING,
            "True",
            reason::RS_UPDATED,
            format!("{subject} is progressing."),
            now,
        );
        if let Some(cur) = &current {
            if cur.status == "True" {
                c.last_transition_time = cur.last_transition_time.clone();
            }
            remove(s, PROGRESSING);
        }
        set(s, c);
    } else if timed_out(d, s, now) {
        set(
            s,
            condition(
                PROGRESSING,
                "False",
                reason::TIMED_OUT,
                format!("{subject} has timed out progressing."),
                now,
            ),
        );
    }
}

/// The ReplicaFailure condition of the ReplicaSets, carried over to the
/// Deployment (the new ReplicaSet's first, else any old one's).
pub fn replica_failure(
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
) -> Option<DeploymentCondition> {
    let failure = |rs: &ReplicaSet| {
        rs.status
            .as_ref()?
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == REPLICA_FAILURE)
            .map(|c| DeploymentCondition {
                type_: REPLICA_FAILURE.to_string(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time.clone(),
            })
    };
    if let Some(c) = new.and_then(failure) {
        return Some(c);
    }
    all.iter()
        .filter(|rs| new.is_none_or(|n| n.metadata.uid != rs.metadata.uid))
        .find_map(|rs| failure(rs))
}

/// When a rollout still in flight should be looked at again to notice its
/// deadline (upstream's `requeueStuckDeployment`).
pub fn recheck_in(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> Option<Duration> {
    let deadline = progress_deadline(d)?;
    let c = get(s, PROGRESSING)?;
    if complete(d, s) || c.reason.as_deref() == Some(reason::TIMED_OUT) {
        return None;
    }
    let updated = c.last_update_time.as_ref()?.0;
    let end = updated
        .checked_add(SignedDuration::from_secs(deadline.into()))
        .ok()?;
    let left = end.duration_since(now);
    if left < SignedDuration::from_secs(1) {
        return Some(Duration::ZERO);
    }
    Some(Duration::from_secs(left.as_secs().max(0) as u64))
}

/// Two statuses are the same, counting an unset number as 0.
pub fn same(a: &DeploymentStatus, b: &DeploymentStatus) -> bool {
    let norm = |s: &DeploymentStatus| {
        let z = |v: Option<i32>| v.filter(|x| *x != 0);
        DeploymentStatus {
            available_replicas: z(s.available_replicas),
            collision_count: s.collision_count,
            conditions: s.conditions.clone().filter(|c| !c.is_empty()),
            observed_generation: s.observed_generation.filter(|g| *g != 0),
            ready_replicas: z(s.ready_replicas),
            replicas: z(s.replicas),
            terminating_replicas: s.terminating_replicas,
            unavailable_replicas: z(s.unavailable_replicas),
            updated_replicas: z(s.updated_replicas),
        }
    };
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, ReplicaSetSpec, ReplicaSetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn d(replicas: i32, generation: i64) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn rs(name: &str, spec: i32, actual: i32, ready: i32, available: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(spec),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas: actual,
                ready_replicas: Some(ready),
                available_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn status_sums_the_replica_sets() {
        let old = rs("old", 2, 2, 2, 2);
        let new = rs("new", 2, 2, 1, 0);
        let s = calculate(&d(3, 2), &[&old, &new], Some(&new), ts(1));
        assert_eq!(s.replicas, Some(4));
        assert_eq!(s.updated_replicas, Some(2));
        assert_eq!(s.ready_replicas, Some(3));
        assert_eq!(s.available_replicas, Some(2));
        assert_eq!(s.unavailable_replicas, Some(2));
        assert_eq!(s.observed_generation, Some(2));
        // 3 replicas with 25% unavailable (rounded down: 0): 2 is too few.
        assert_eq!(get(&s, AVAILABLE).unwrap().status, "False");
        let s = calculate(&d(2, 2), &[&old, &new], Some(&new), ts(1));
        assert_eq!(get(&s, AVAILABLE).unwrap().status, "True");
    }

    #[test]
    fn progressing_then_complete() {
        let mut dep = d(2, 1);
        let new = rs("new", 2, 2, 2, 1);
        let mut s = calculate(&dep, &[&new], Some(&new), ts(10));
        rollout_conditions(&dep, &mut s, Some(&new), ts(10));
        let c = get(&s, PROGRESSING).unwrap();
        assert_eq!(c.reason.as_deref(), Some(reason::RS_UPDATED));
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"new\" is progressing.")
        );
        dep.status = Some(s);
        let done = rs("new", 2, 2, 2, 2);
        let mut s = calculate(&dep, &[&done], Some(&done), ts(20));
        rollout_conditions(&dep, &mut s, Some(&done), ts(20));
        let c = get(&s, PROGRESSING).unwrap();
        assert_eq!(c.reason.as_deref(), Some(reason::NEW_RS_AVAILABLE));
        assert_eq!(
            c.last_transition_time,
            Some(Time(ts(10))),
            "still True since 10"
        );
        assert!(complete(&dep, &s));
        assert_eq!(recheck_in(&dep, &s, ts(20)), None);
    }

    #[test]
    fn a_stuck_rollout_times_out_after_its_deadline() {
        let mut dep = d(2, 1);
        dep.spec.as_mut().unwrap().progress_deadline_seconds = Some(30);
        let stuck = rs("new", 2, 2, 0, 0);
        let mut s = calculate(&dep, &[&stuck], Some(&stuck), ts(100));
        set(
            &mut s,
            condition(PROGRESSING, "True", reason::RS_UPDATED, "m".into(), ts(100)),
        );
        dep.status = Some(s.clone());
        assert_eq!(recheck_in(&dep, &s, ts(110)), Some(Duration::from_secs(20)));
        let mut later = calculate(&dep, &[&stuck], Some(&stuck), ts(131));
        rollout_conditions(&dep, &mut later, Some(&stuck), ts(131));
        let c = get(&later, PROGRESSING).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some(reason::TIMED_OUT))
        );
    }

    #[test]
    fn unset_counts_equal_zero() {
        let a = DeploymentStatus {
            replicas: Some(0),
            ..Default::default()
        };
        assert!(same(&a, &DeploymentStatus::default()));
        let b = DeploymentStatus {
            replicas: Some(1),
            ..Default::default()
        };
        assert!(!same(&a, &b));
    }
}
