//! The resources km apiserver serves: names, scope, discovery facts,
//! storage keys and the fields their field selectors support.

use serde_json::Value;

use super::store::{Key, ObjMeta};

/// One REST resource.
#[derive(Debug)]
pub struct Resource {
    /// API group ("" for core).
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Kind of its objects.
    pub kind: &'static str,
    /// Plural resource name (the URL segment).
    pub plural: &'static str,
    /// Singular name, as discovery reports it.
    pub singular: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// `kubectl get po` style aliases.
    pub short_names: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Subresources served.
    pub subresources: &'static [&'static str],
    /// Field selector fields beyond metadata.name and metadata.namespace,
    /// each with the JSON path it reads.
    pub fields: &'static [(&'static str, &'static [&'static str])],
    /// Only `create` is served (bindings).
    pub create_only: bool,
}

impl Resource {
    /// `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The resource as error messages name it: `pods`, `deployments.apps`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The key prefix of every object of this resource.
    pub fn prefix(&self) -> String {
        format!("/{}/", self.qualified())
    }

    /// The key prefix of one namespace's objects (or of all, with `None`).
    pub fn namespace_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/{}/{ns}/", self.qualified()),
            _ => self.prefix(),
        }
    }

    /// The storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> Key {
        match namespace {
            Some(ns) if self.namespaced => Key::new(format!("/{}/{ns}/{name}", self.qualified())),
            _ => Key::new(format!("/{}/{name}", self.qualified())),
        }
    }

    /// Whether a field selector may use `field`.
    pub fn supports_field(&self, field: &str) -> bool {
        field == "metadata.name"
            || (self.namespaced && field == "metadata.namespace")
            || self.fields.iter().any(|(f, _)| *f == field)
    }

    /// Labels and selectable fields of one object.
    pub fn index(&self, value: &Value) -> ObjMeta {
        let meta = &value["metadata"];
        let labels = meta["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let mut fields = vec![(
            "metadata.name",
            meta["name"].as_str().unwrap_or_default().to_string(),
        )];
        if self.namespaced {
            fields.push((
                "metadata.namespace",
                meta["namespace"].as_str().unwrap_or_default().to_string(),
            ));
        }
        for (field, path) in self.fields {
            let v = path.iter().fold(value, |v, p| &v[*p]);
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            // An absent field reads as "", so empty values need no room.
            if !text.is_empty() {
                fields.push((field, text));
            }
        }
        fields.shrink_to_fit();
        ObjMeta { labels, fields }
    }
}

const ALL: &[&str] = &["all"];
const EVERY: &[&str] = &[];

/// Every resource served.
pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: EVERY,
        subresources: &["status", "finalize"],
        fields: &[("status.phase", &["status", "phase"])],
        create_only: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        categories: ALL,
        subresources: &["status", "binding", "log"],
        fields: &[
            ("spec.nodeName", &["spec", "nodeName"]),
            ("spec.schedulerName", &["spec", "schedulerName"]),
            ("spec.restartPolicy", &["spec", "restartPolicy"]),
            ("spec.serviceAccountName", &["spec", "serviceAccountName"]),
            ("spec.hostNetwork", &["spec", "hostNetwork"]),
            ("status.phase", &["status", "phase"]),
            ("status.podIP", &["status", "podIP"]),
            ("status.nominatedNodeName", &["status", "nominatedNodeName"]),
        ],
        create_only: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Binding",
        plural: "bindings",
        singular: "binding",
        namespaced: true,
        short_names: EVERY,
        categories: EVERY,
        subresources: EVERY,
        fields: &[],
        create_only: true,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        categories: EVERY,
        subresources: &["status"],
        fields: &[("spec.unschedulable", &["spec", "unschedulable"])],
        create_only: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        namespaced: true,
        short_names: &["svc"],
        categories: ALL,
        subresources: &["status"],
        fields: &[
            ("spec.clusterIP", &["spec", "clusterIP"]),
            ("spec.type", &["spec", "type"]),
        ],
        create_only: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: EVERY,
        subresources: EVERY,
        fields: &[],
        create_only: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        categories: EVERY,
        subresources: EVERY,
        fields: &[
            ("involvedObject.kind", &["involvedObject", "kind"]),
            ("involvedObject.namespace", &["involvedObject", "namespace"]),
            ("involvedObject.name", &["involvedObject", "name"]),
            ("involvedObject.uid", &["involvedObject", "uid"]),
            (
                "involvedObject.apiVersion",
                &["involvedObject", "apiVersion"],
            ),
            (
                "involvedObject.resourceVersion",
                &["involvedObject", "resourceVersion"],
            ),
            ("involvedObject.fieldPath", &["involvedObject", "fieldPath"]),
            ("reason", &["reason"]),
            ("reportingComponent", &["reportingComponent"]),
            ("source", &["source", "component"]),
            ("type", &["type"]),
        ],
        create_only: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        namespaced: true,
        short_names: &["cm"],
        categories: EVERY,
        subresources: EVERY,
        fields: &[],
        create_only: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        namespaced: true,
        short_names: EVERY,
        categories: EVERY,
        subresources: EVERY,
        fields: &[("type", &["type"])],
        create_only: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        namespaced: true,
        short_names: &["sa"],
        categories: EVERY,
        subresources: EVERY,
        fields: &[],
        create_only: false,
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: ALL,
        subresources: &["status", "scale"],
        fields: &[],
        create_only: false,
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        namespaced: true,
        short_names: &["rs"],
        categories: ALL,
        subresources: &["status", "scale"],
        fields: &[("status.replicas", &["status", "replicas"])],
        create_only: false,
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "DaemonSet",
        plural: "daemonsets",
        singular: "daemonset",
        namespaced: true,
        short_names: &["ds"],
        categories: ALL,
        subresources: &["status"],
        fields: &[],
        create_only: false,
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        namespaced: true,
        short_names: EVERY,
        categories: EVERY,
        subresources: EVERY,
        fields: &[],
        create_only: false,
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        namespaced: true,
        short_names: EVERY,
        categories: EVERY,
        subresources: EVERY,
        fields: &[("addressType", &["addressType"])],
        create_only: false,
    },
];

/// The resource served at `group/version/plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource a storage key belongs to.
pub fn for_key(key: &Key) -> Option<&'static Resource> {
    let qualified = key.as_str().strip_prefix('/')?.split('/').next()?;
    RESOURCES.iter().find(|r| r.qualified() == qualified)
}

/// The (group, version) pairs served, core first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// Indexes any stored object by the resource its key names.
pub fn indexer() -> super::store::Indexer {
    std::sync::Arc::new(|key: &Key, value: &Value| {
        for_key(key).map(|r| r.index(value)).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_and_prefixes() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(pods.key(Some("ns"), "a").as_str(), "/pods/ns/a");
        assert!(
            pods.key(Some("ns"), "a")
                .as_str()
                .starts_with(&pods.namespace_prefix(Some("ns")))
        );
        let deploy = find("apps", "v1", "deployments").unwrap();
        assert_eq!(
            deploy.key(Some("ns"), "a").as_str(),
            "/deployments.apps/ns/a"
        );
        assert_eq!(
            for_key(&deploy.key(Some("x"), "y")).unwrap().kind,
            "Deployment"
        );
        let nodes = find("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key(Some("ignored"), "n1").as_str(), "/nodes/n1");
    }

    #[test]
    fn index_reads_labels_and_fields() {
        let pods = find("", "v1", "pods").unwrap();
        let m = pods.index(&json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "hostNetwork": true},
            "status": {"phase": "Running"}
        }));
        assert_eq!(m.labels["app"], "web");
        assert_eq!(m.field("spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(m.field("spec.hostNetwork").as_deref(), Some("true"));
        assert_eq!(
            m.field("spec.schedulerName"),
            None,
            "empty fields are not kept"
        );
        assert_eq!(m.field("status.phase").as_deref(), Some("Running"));
        assert!(pods.supports_field("metadata.namespace"));
        assert!(!pods.supports_field("spec.containers"));
    }
}
