//! How many replicas each ReplicaSet of a Deployment gets: proportional
//! scaling of a Deployment resized in the middle of a rollout, and the size
//! of the new ReplicaSet (upstream's `scale`, `GetProportion`,
//! `NewRSNewReplicas`).

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::util::{
    Strategy, by_size_newer, by_size_older, desired_replicas_annotation, fenceposts,
    max_replicas_annotation, max_surge, replicas, rs_available, rs_replicas, strategy,
};

/// Whether `rs` runs all of the Deployment's replicas, and all available.
pub fn is_saturated(d: &Deployment, rs: Option<&ReplicaSet>) -> bool {
    let Some(rs) = rs else { return false };
    let want = replicas(d);
    desired_replicas_annotation(rs) == Some(want)
        && rs_replicas(rs) == want
        && rs_available(rs) == want
}

/// Index into `[new] ++ old`, for [`active_or_latest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The new ReplicaSet.
    New,
    /// `old[i]`.
    Old(usize),
}

/// The only ReplicaSet with replicas, or the newest (new first, else the
/// latest old one) when none has any; `None` when several have replicas.
pub fn active_or_latest(new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> Option<Which> {
    let mut active = Vec::new();
    if let Some(n) = new
        && rs_replicas(n) > 0
    {
        active.push(Which::New);
    }
    active.extend(
        old.iter()
            .enumerate()
            .filter(|(_, rs)| rs_replicas(rs) > 0)
            .map(|(i, _)| Which::Old(i)),
    );
    match active.len() {
        0 if new.is_some() => Some(Which::New),
        0 => old
            .iter()
            .enumerate()
            .max_by(|(_, a), (_, b)| super::util::by_creation(a, b))
            .map(|(i, _)| Which::Old(i)),
        1 => Some(active[0]),
        _ => None,
    }
}

/// The part of `to_add` that falls to `rs` (upstream's `GetProportion`).
fn proportion(d: &Deployment, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if replicas(d) == 0 {
        -rs_replicas(rs)
    } else {
        let total = f64::from(replicas(d) + max_surge(d));
        let annotated = max_replicas_annotation(rs)
            .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
        if annotated == 0 {
            0
        } else {
            let size = f64::from(rs_replicas(rs)) * total / f64::from(annotated);
            size.round() as i32 - rs_replicas(rs)
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// New sizes for the active ReplicaSets of a rolling Deployment whose size
/// changed mid-rollout: the change is shared in proportion to their sizes
/// (leftovers to the largest), bigger ones first; on equal sizes newer
/// ones grow first and older ones shrink first. Returns, in the order to
/// apply them, indices into `active` with their new sizes, and "up",
/// "down" or "" (nothing to share).
pub fn proportional(d: &Deployment, active: &[ReplicaSet]) -> (Vec<(usize, i32)>, &'static str) {
    let current: i32 = active.iter().map(rs_replicas).sum();
    let allowed = if replicas(d) > 0 {
        replicas(d) + max_surge(d)
    } else {
        0
    };
    let to_add = allowed - current;
    let mut order: Vec<usize> = (0..active.len()).collect();
    let op = match to_add {
        1.. => {
            order.sort_by(|a, b| by_size_newer(&active[*a], &active[*b]));
            "up"
        }
        ..0 => {
            order.sort_by(|a, b| by_size_older(&active[*a], &active[*b]));
            "down"
        }
        0 => "",
    };
    let mut added = 0;
    let mut sizes: Vec<(usize, i32)> = Vec::new();
    for &i in &order {
        let rs = &active[i];
        if to_add != 0 {
            let p = proportion(d, rs, to_add, added);
            sizes.push((i, rs_replicas(rs) + p));
            added += p;
        } else {
            sizes.push((i, rs_replicas(rs)));
        }
    }
    if to_add != 0
        && let Some(first) = sizes.first_mut()
    {
        first.1 = (first.1 + to_add - added).max(0);
    }
    (sizes, op)
}

/// The size the new ReplicaSet may have now: for RollingUpdate as many more
/// as the surge allows, never above `replicas`; for Recreate `replicas`.
pub fn new_rs_replicas(d: &Deployment, all_replicas: i32, new_replicas: i32) -> i32 {
    let want = replicas(d);
    match strategy(d) {
        Strategy::Recreate => want,
        Strategy::RollingUpdate {
            max_surge,
            max_unavailable,
        } => {
            let surge = fenceposts(&max_surge, &max_unavailable, want)
                .map(|(s, _)| s)
                .unwrap_or(0);
            let max_total = want + surge;
            if all_replicas >= max_total {
                return new_replicas;
            }
            new_replicas + (max_total - all_replicas).min(want - new_replicas)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::deployment::util::{DESIRED_REPLICAS, MAX_REPLICAS};
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, ReplicaSetStatus,
        RollingUpdateDeployment,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn dep(replicas: i32, surge: i32, unavailable: i32) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(surge)),
                        max_unavailable: Some(IntOrString::Int(unavailable)),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn rs(name: &str, created: i64, replicas: i32, max: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
                )),
                annotations: Some(
                    [
                        (MAX_REPLICAS.to_string(), max.to_string()),
                        (DESIRED_REPLICAS.to_string(), (max - 1).to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas,
                available_replicas: Some(replicas),
                ..Default::default()
            }),
        }
    }

    fn sizes(d: &Deployment, active: &[ReplicaSet]) -> (Vec<(String, i32)>, &'static str) {
        let (s, op) = proportional(d, active);
        (
            s.into_iter()
                .map(|(i, n)| (active[i].metadata.name.clone().unwrap(), n))
                .collect(),
            op,
        )
    }

    #[test]
    fn scaling_up_mid_rollout_shares_in_proportion() {
        // 10 replicas, surge 3: old 8 and new 5 (max 13). Scaled to 20
        // (max 23): each grows by 23/13 of itself, leftovers to the largest.
        let active = [rs("old", 1, 8, 13), rs("new", 2, 5, 13)];
        let (s, op) = sizes(&dep(20, 3, 2), &active);
        assert_eq!(op, "up");
        assert_eq!(s, [("old".into(), 14), ("new".into(), 9)]);
        assert_eq!(s.iter().map(|(_, n)| n).sum::<i32>(), 23);
    }

    #[test]
    fn scaling_down_mid_rollout_shares_in_proportion() {
        let active = [rs("old", 1, 8, 13), rs("new", 2, 5, 13)];
        let (s, op) = sizes(&dep(5, 1, 0), &active);
        assert_eq!(op, "down");
        assert_eq!(s.iter().map(|(_, n)| n).sum::<i32>(), 6);
        assert_eq!(s, [("old".into(), 4), ("new".into(), 2)]);
    }

    #[test]
    fn equal_sizes_grow_newest_first_and_shrink_oldest_first() {
        let active = [rs("a", 1, 1, 3), rs("b", 2, 1, 3)];
        let (s, _) = sizes(&dep(2, 0, 1), &active);
        // allowed 2, current 2: nothing to change.
        assert_eq!(s, [("a".into(), 1), ("b".into(), 1)]);
        let (s, op) = sizes(&dep(4, 1, 0), &active);
        assert_eq!(op, "up");
        assert_eq!(s[0].0, "b", "newest grows first");
        assert_eq!(s.iter().map(|(_, n)| n).sum::<i32>(), 5);
        let (s, op) = sizes(&dep(1, 0, 1), &active);
        assert_eq!(op, "down");
        assert_eq!(s[0].0, "a", "oldest shrinks first");
        assert_eq!(s.iter().map(|(_, n)| n).sum::<i32>(), 1);
    }

    #[test]
    fn scaling_to_zero_empties_everything() {
        let active = [rs("old", 1, 3, 4), rs("new", 2, 1, 4)];
        let (s, _) = sizes(&dep(0, 1, 0), &active);
        assert!(s.iter().all(|(_, n)| *n == 0));
    }

    #[test]
    fn the_new_replica_set_grows_within_the_surge() {
        let d = dep(3, 1, 0);
        assert_eq!(new_rs_replicas(&d, 3, 0), 1);
        assert_eq!(new_rs_replicas(&d, 4, 1), 1, "at max total: no growth");
        assert_eq!(new_rs_replicas(&d, 2, 1), 3);
        assert_eq!(new_rs_replicas(&d, 0, 0), 3, "never above replicas");
    }

    #[test]
    fn one_active_or_the_latest() {
        let old = [rs("a", 1, 0, 1), rs("b", 2, 0, 1)];
        assert_eq!(active_or_latest(None, &old), Some(Which::Old(1)));
        let new = rs("n", 3, 0, 1);
        assert_eq!(active_or_latest(Some(&new), &old), Some(Which::New));
        let old = [rs("a", 1, 2, 3), rs("b", 2, 0, 1)];
        assert_eq!(active_or_latest(Some(&new), &old), Some(Which::Old(0)));
        let busy = rs("n", 3, 1, 3);
        assert_eq!(active_or_latest(Some(&busy), &old), None);
        assert!(!is_saturated(&dep(3, 1, 0), Some(&old[0])));
        assert!(is_saturated(&dep(2, 1, 0), Some(&old[0])));
    }
}
