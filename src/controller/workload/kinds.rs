//! The kinds of objects the API serves, for the controllers that handle
//! every kind (garbage collection, namespace deletion): found by discovery
//! (each group at its preferred version, resources that can be listed,
//! watched and deleted), with the kinds km apiserver serves as the fallback
//! when discovery fails. The group `events.k8s.io` is left out: it serves
//! the same objects as core `events`.
//!
//! [`Resolver`] maps an ownerReference's apiVersion and kind to its
//! resource, asking discovery about kinds it does not know.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::{self, ApiCapabilities, Scope, verbs};

/// One kind of object the API serves.
#[derive(Debug, Clone)]
pub struct Kind {
    /// Group, version, kind and plural.
    pub resource: ApiResource,
    /// Whether its objects live in namespaces.
    pub namespaced: bool,
    /// Whether a whole collection can be deleted at once.
    pub delete_collection: bool,
}

impl Kind {
    fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Kind {
        Kind {
            resource: ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(group, version, kind),
                plural,
            ),
            namespaced,
            delete_collection: true,
        }
    }

    fn from_discovery(resource: ApiResource, caps: &ApiCapabilities) -> Kind {
        Kind {
            resource,
            namespaced: caps.scope == Scope::Namespaced,
            delete_collection: caps.supports_operation(verbs::DELETE_COLLECTION),
        }
    }

    /// Objects of this kind in `namespace` (all of them with `None`, or
    /// for a cluster-scoped kind).
    pub fn api(&self, client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) if self.namespaced => Api::namespaced_with(client.clone(), ns, &self.resource),
            _ => Api::all_with(client.clone(), &self.resource),
        }
    }

    /// `plural.group` (or `plural` for the core group), for logs.
    pub fn qualified(&self) -> String {
        if self.resource.group.is_empty() {
            self.resource.plural.clone()
        } else {
            format!("{}.{}", self.resource.plural, self.resource.group)
        }
    }
}

/// The kinds km apiserver serves that can be listed, watched and deleted.
pub fn builtin() -> Vec<Kind> {
    vec![
        Kind::builtin("", "v1", "Namespace", "namespaces", false),
        Kind::builtin("", "v1", "Node", "nodes", false),
        Kind::builtin("", "v1", "Pod", "pods", true),
        Kind::builtin("", "v1", "Service", "services", true),
        Kind::builtin("", "v1", "Endpoints", "endpoints", true),
        Kind::builtin("", "v1", "ConfigMap", "configmaps", true),
        Kind::builtin("", "v1", "Secret", "secrets", true),
        Kind::builtin("", "v1", "ServiceAccount", "serviceaccounts", true),
        Kind::builtin("", "v1", "Event", "events", true),
        Kind::builtin("apps", "v1", "Deployment", "deployments", true),
        Kind::builtin("apps", "v1", "ReplicaSet", "replicasets", true),
        Kind::builtin("apps", "v1", "DaemonSet", "daemonsets", true),
        Kind::builtin(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            true,
        ),
        Kind::builtin("coordination.k8s.io", "v1", "Lease", "leases", true),
    ]
}

fn usable(caps: &ApiCapabilities) -> bool {
    [verbs::LIST, verbs::WATCH, verbs::DELETE]
        .iter()
        .all(|v| caps.supports_operation(v))
}

/// Every kind the API serves that can be listed, watched and deleted.
/// A group whose discovery fails is left out (and logged); failing to
/// list the groups at all is an error.
pub async fn discover(client: &Client) -> Result<Vec<Kind>, kube::Error> {
    let mut kinds = Vec::new();
    let core = discovery::pinned_group(client, &kube::core::GroupVersion::gv("", "v1")).await?;
    for (ar, caps) in core.recommended_resources() {
        if usable(&caps) {
            kinds.push(Kind::from_discovery(ar, &caps));
        }
    }
    let groups = client.list_api_groups().await?;
    for g in groups.groups {
        if g.name == "events.k8s.io" {
            continue;
        }
        let version = g
            .preferred_version
            .as_ref()
            .map(|v| v.version.clone())
            .or_else(|| g.versions.first().map(|v| v.version.clone()));
        let Some(version) = version else { continue };
        let gv = kube::core::GroupVersion::gv(&g.name, &version);
        match discovery::pinned_group(client, &gv).await {
            Ok(group) => {
                for (ar, caps) in group.recommended_resources() {
                    if usable(&caps) {
                        kinds.push(Kind::from_discovery(ar, &caps));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(group = %g.name, %version, error = %e, "discovery of an API group failed; its objects are left out")
            }
        }
    }
    Ok(kinds)
}

/// [`discover`], or the [`builtin`] kinds when discovery fails.
pub async fn discover_or_builtin(client: &Client) -> Vec<Kind> {
    match discover(client).await {
        Ok(kinds) if !kinds.is_empty() => kinds,
        Ok(_) => builtin(),
        Err(e) => {
            tracing::warn!(error = %e, "API discovery failed; using the kinds km apiserver serves");
            builtin()
        }
    }
}

/// An ownerReference's kind that no API serves.
#[derive(Debug, thiserror::Error)]
#[error("no API serves kind {kind:?} of apiVersion {api_version:?}: {source}")]
pub struct UnknownKind {
    api_version: String,
    kind: String,
    #[source]
    source: kube::Error,
}

/// Maps apiVersion and kind to a [`Kind`], remembering the answers.
pub struct Resolver {
    client: Client,
    known: Mutex<HashMap<(String, String), Kind>>,
}

impl Resolver {
    /// A resolver that knows `kinds` and asks discovery about the rest.
    pub fn new(client: Client, kinds: &[Kind]) -> Self {
        let known = builtin()
            .into_iter()
            .chain(kinds.iter().cloned())
            .map(|k| ((k.resource.api_version.clone(), k.resource.kind.clone()), k))
            .collect();
        Resolver {
            client,
            known: Mutex::new(known),
        }
    }

    /// The kind `kind` of `api_version`.
    pub async fn resolve(&self, api_version: &str, kind: &str) -> Result<Kind, UnknownKind> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(k) = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(k.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|source| UnknownKind {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
                source,
            })?;
        let k = Kind::from_discovery(ar, &caps);
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, k.clone());
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_kinds_cover_what_km_apiserver_serves() {
        let kinds = builtin();
        let find = |k: &str| kinds.iter().find(|x| x.resource.kind == k).unwrap();
        assert_eq!(find("ReplicaSet").resource.api_version, "apps/v1");
        assert_eq!(find("ReplicaSet").resource.plural, "replicasets");
        assert!(!find("Namespace").namespaced);
        assert!(find("Lease").namespaced);
        assert_eq!(
            find("EndpointSlice").qualified(),
            "endpointslices.discovery.k8s.io"
        );
        assert_eq!(find("Pod").qualified(), "pods");
    }
}
