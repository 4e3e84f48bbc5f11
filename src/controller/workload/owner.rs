//! ownerReferences: the controller reference a workload controller puts on
//! what it creates, and claiming (upstream's `ControllerRefManager`): a
//! controller keeps what it owns and its selector matches, adopts matching
//! orphans, and releases what it owns but no longer matches.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::core::{Selector, SelectorExt};
use serde_json::{Value, json};

/// The controller reference to `owner`: `controller` and
/// `blockOwnerDeletion` true, as upstream's `NewControllerRef`.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    let meta = owner.meta();
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The ownerReference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The controller reference, if it points at a `K`.
pub fn controller_of_kind<K: Resource<DynamicType = ()>>(
    meta: &ObjectMeta,
) -> Option<&OwnerReference> {
    controller_of(meta).filter(|r| refers_to_kind::<K>(r))
}

/// Whether `r` points at a `K` (group and kind; the version may differ).
pub fn refers_to_kind<K: Resource<DynamicType = ()>>(r: &OwnerReference) -> bool {
    let group = |api_version: &str| match api_version.split_once('/') {
        Some((g, _)) => g.to_string(),
        None => String::new(),
    };
    r.kind == K::kind(&()) && group(&r.api_version) == K::group(&()).as_ref()
}

/// What a controller does with one candidate object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// It is ours and matches: count it.
    Keep,
    /// An orphan that matches: take it (then count it).
    Adopt,
    /// Ours but no longer matching: let it go.
    Release,
    /// Someone else's, or not for us: leave it alone.
    Ignore,
}

/// The owner side of a claim.
#[derive(Debug, Clone, Copy)]
pub struct Claimant<'a> {
    /// The owner's uid.
    pub uid: &'a str,
    /// The owner's namespace.
    pub namespace: &'a str,
    /// The owner is being deleted (it adopts and releases nothing then).
    pub deleting: bool,
    /// The owner's selector.
    pub selector: &'a Selector,
}

/// Decides what `owner` does with `child` (upstream's `ClaimObject`).
pub fn claim(owner: Claimant<'_>, child: &ObjectMeta) -> Claim {
    let matches = || {
        let empty = Default::default();
        owner
            .selector
            .matches(child.labels.as_ref().unwrap_or(&empty))
    };
    match controller_of(child) {
        Some(r) if r.uid != owner.uid => Claim::Ignore,
        Some(_) if matches() => Claim::Keep,
        Some(_) if owner.deleting => Claim::Ignore,
        Some(_) => Claim::Release,
        None => {
            if owner.deleting
                || !matches()
                || child.deletion_timestamp.is_some()
                || child.namespace.as_deref().unwrap_or_default() != owner.namespace
            {
                Claim::Ignore
            } else {
                Claim::Adopt
            }
        }
    }
}

/// Strategic merge patch that adds `controller` to a child's
/// ownerReferences; the child's uid guards against a recreated child.
pub fn adopt_patch(controller: &OwnerReference, child_uid: &str) -> Value {
    json!({"metadata": {"ownerReferences": [controller], "uid": child_uid}})
}

/// Strategic merge patch that removes the reference to `owner_uid`.
pub fn release_patch(owner_uid: &str, child_uid: &str) -> Value {
    json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner_uid}], "uid": child_uid}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn child(labels: &[(&str, &str)], owner: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            namespace: Some("ns".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            owner_references: owner.map(|uid| {
                vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: "rs".into(),
                    uid: uid.into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            ..Default::default()
        }
    }

    fn selector() -> Selector {
        [("app", "web")].into_iter().collect()
    }

    #[test]
    fn claims_follow_ownership_and_selector() {
        let sel = selector();
        let me = Claimant {
            uid: "u1",
            namespace: "ns",
            deleting: false,
            selector: &sel,
        };
        assert_eq!(
            claim(me, &child(&[("app", "web")], Some("u1"))),
            Claim::Keep
        );
        assert_eq!(
            claim(me, &child(&[("app", "db")], Some("u1"))),
            Claim::Release
        );
        assert_eq!(
            claim(me, &child(&[("app", "web")], Some("u2"))),
            Claim::Ignore
        );
        assert_eq!(claim(me, &child(&[("app", "web")], None)), Claim::Adopt);
        assert_eq!(claim(me, &child(&[("app", "db")], None)), Claim::Ignore);
        let mut gone = child(&[("app", "web")], None);
        gone.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(claim(me, &gone), Claim::Ignore);
        let mut elsewhere = child(&[("app", "web")], None);
        elsewhere.namespace = Some("other".into());
        assert_eq!(claim(me, &elsewhere), Claim::Ignore);
    }

    #[test]
    fn a_deleted_owner_keeps_but_neither_adopts_nor_releases() {
        let sel = selector();
        let me = Claimant {
            uid: "u1",
            namespace: "ns",
            deleting: true,
            selector: &sel,
        };
        assert_eq!(
            claim(me, &child(&[("app", "web")], Some("u1"))),
            Claim::Keep
        );
        assert_eq!(
            claim(me, &child(&[("app", "db")], Some("u1"))),
            Claim::Ignore
        );
        assert_eq!(claim(me, &child(&[("app", "web")], None)), Claim::Ignore);
    }

    #[test]
    fn controller_refs_name_their_kind() {
        let mut rs = ReplicaSet::default();
        rs.metadata.name = Some("web".into());
        rs.metadata.uid = Some("u1".into());
        let r = controller_ref(&rs);
        assert_eq!(r.api_version, "apps/v1");
        assert_eq!(r.kind, "ReplicaSet");
        assert_eq!(r.block_owner_deletion, Some(true));
        assert!(refers_to_kind::<ReplicaSet>(&r));
        let meta = child(&[], Some("u1"));
        assert_eq!(controller_of_kind::<ReplicaSet>(&meta).unwrap().uid, "u1");
        assert!(controller_of_kind::<k8s_openapi::api::apps::v1::Deployment>(&meta).is_none());
    }
}
