//! Namespaces, ConfigMaps, Secrets, Nodes and Endpoints.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMap, EndpointAddress, Endpoints, Namespace, NamespaceSpec, NamespaceStatus, Node, Secret,
};

use super::pod::{PROTOCOLS, taint_effect};
use super::quantity;
use super::service::non_special_ip;
use super::{FieldError, NameRule, Path, format, is_empty, json, meta, or_empty};

/// The size limit of a ConfigMap's or Secret's data (1 MiB).
const MAX_DATA_SIZE: usize = 1024 * 1024;

/// Applies what upstream sets on a new namespace: the
/// `kubernetes.io/metadata.name` label, the `kubernetes` finalizer and
/// `status.phase: Active`.
pub fn default_namespace(ns: &mut Namespace) {
    if let Some(name) = ns.metadata.name.clone().filter(|n| !n.is_empty()) {
        ns.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert("kubernetes.io/metadata.name".to_string(), name);
    }
    let spec = ns.spec.get_or_insert_with(NamespaceSpec::default);
    if spec.finalizers.as_ref().is_none_or(Vec::is_empty) {
        spec.finalizers = Some(vec!["kubernetes".to_string()]);
    }
    let status = ns.status.get_or_insert_with(NamespaceStatus::default);
    if is_empty(&status.phase) {
        status.phase = Some("Active".to_string());
    }
}

/// Validates a namespace: an RFC 1123 label name, no namespace of its own,
/// and valid `spec.finalizers`.
pub fn validate_namespace(ns: &Namespace) -> Vec<FieldError> {
    let mut errs = meta::object_meta(
        &ns.metadata,
        false,
        NameRule::Dns1123Label,
        &Path::new("metadata"),
    );
    let fp = Path::new("spec").child("finalizers");
    for f in ns.spec.iter().flat_map(|s| s.finalizers.iter().flatten()) {
        errs.extend(meta::finalizer_name(f, &fp, &fp));
    }
    errs
}

/// Validates a ConfigMap: key format (`[-._a-zA-Z0-9]+`), no key in both
/// `data` and `binaryData`, and at most 1 MiB of values.
pub fn validate_config_map(cm: &ConfigMap) -> Vec<FieldError> {
    let mut errs = meta::object_meta(
        &cm.metadata,
        true,
        NameRule::Dns1123Subdomain,
        &Path::new("metadata"),
    );
    let binary = cm.binary_data.as_ref();
    let mut total = 0usize;
    for (k, v) in cm.data.iter().flatten() {
        let p = Path::new("data").key(k);
        for msg in format::config_map_key(k) {
            errs.push(FieldError::invalid(&p, k, msg));
        }
        if binary.is_some_and(|b| b.contains_key(k)) {
            errs.push(FieldError::invalid(
                &p,
                k,
                "duplicate of key present in binaryData",
            ));
        }
        total += v.len();
    }
    for (k, v) in binary.into_iter().flatten() {
        for msg in format::config_map_key(k) {
            errs.push(FieldError::invalid(&Path::new("binaryData").key(k), k, msg));
        }
        total += v.0.len();
    }
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::too_long(&Path::new(""), MAX_DATA_SIZE));
    }
    errs
}

/// Applies the Secret defaults: `type: Opaque`, and folds `stringData` into
/// `data` the way upstream's conversion does before storing.
pub fn default_secret(s: &mut Secret) {
    if is_empty(&s.type_) {
        s.type_ = Some("Opaque".to_string());
    }
    if let Some(string_data) = s.string_data.take() {
        let data = s.data.get_or_insert_with(BTreeMap::new);
        for (k, v) in string_data {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
}

/// Validates a Secret: key format, at most 1 MiB of data, and the keys the
/// well-known secret types require.
pub fn validate_secret(s: &Secret) -> Vec<FieldError> {
    let mut errs = meta::object_meta(
        &s.metadata,
        true,
        NameRule::Dns1123Subdomain,
        &Path::new("metadata"),
    );
    let data_path = Path::new("data");
    let empty = BTreeMap::new();
    let data = s.data.as_ref().unwrap_or(&empty);
    let mut total = 0usize;
    for (k, v) in data {
        for msg in format::config_map_key(k) {
            errs.push(FieldError::invalid(&data_path.key(k), k, msg));
        }
        total += v.0.len();
    }
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::too_long(&data_path, MAX_DATA_SIZE));
    }
    let require = |key: &str, errs: &mut Vec<FieldError>| {
        if !data.contains_key(key) {
            errs.push(FieldError::required(&data_path.key(key), ""));
            false
        } else {
            true
        }
    };
    let json_object = |key: &str, errs: &mut Vec<FieldError>| {
        if let Some(v) = data.get(key)
            && let Err(e) =
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&v.0)
        {
            errs.push(FieldError::invalid(
                &data_path.key(key),
                "<secret contents redacted>",
                e.to_string(),
            ));
        }
    };
    match or_empty(&s.type_) {
        "kubernetes.io/service-account-token" => {
            let name = s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/service-account.name"));
            if name.is_none_or(String::is_empty) {
                errs.push(FieldError::required(
                    &Path::new("metadata")
                        .child("annotations")
                        .key("kubernetes.io/service-account.name"),
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" if require(".dockercfg", &mut errs) => {
            json_object(".dockercfg", &mut errs);
        }
        "kubernetes.io/dockerconfigjson" if require(".dockerconfigjson", &mut errs) => {
            json_object(".dockerconfigjson", &mut errs);
        }
        "kubernetes.io/basic-auth"
            if !data.contains_key("username") && !data.contains_key("password") =>
        {
            errs.push(FieldError::required(&data_path.key("username"), ""));
            errs.push(FieldError::required(&data_path.key("password"), ""));
        }
        "kubernetes.io/ssh-auth" if data.get("ssh-privatekey").is_none_or(|v| v.0.is_empty()) => {
            errs.push(FieldError::required(&data_path.key("ssh-privatekey"), ""));
        }
        "kubernetes.io/tls" => {
            require("tls.crt", &mut errs);
            require("tls.key", &mut errs);
        }
        _ => {}
    }
    errs
}

/// Validates a Node: an RFC 1123 subdomain name, taints, capacity and
/// allocatable quantities, and pod CIDRs.
pub fn validate_node(n: &Node) -> Vec<FieldError> {
    let meta_path = Path::new("metadata");
    let mut errs = meta::object_meta(&n.metadata, false, NameRule::Dns1123Subdomain, &meta_path);
    let spec = n.spec.as_ref();
    // Upstream reports taint errors under `metadata.taints`.
    let taints_path = meta_path.child("taints");
    let mut unique: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (i, t) in spec
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let p = taints_path.index(i);
        errs.extend(meta::label_name(&t.key, &p.child("key")));
        let value = or_empty(&t.value);
        let msgs = format::label_value(value);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(
                &p.child("value"),
                value,
                msgs.join(";"),
            ));
        }
        if t.effect.is_empty() {
            errs.push(FieldError::required(&p.child("effect"), ""));
        } else {
            taint_effect(&t.effect, &p.child("effect"), &mut errs);
        }
        if !unique.insert((t.effect.as_str(), t.key.as_str())) {
            let mut e = FieldError::duplicate(&p, json(t));
            e.detail = "taints must be unique by key and effect pair".to_string();
            errs.push(e);
        }
    }
    let status = n.status.as_ref();
    for (field, list) in [
        ("capacity", status.and_then(|s| s.capacity.as_ref())),
        ("allocatable", status.and_then(|s| s.allocatable.as_ref())),
    ] {
        for (k, v) in list.into_iter().flatten() {
            let p = Path::new("status").child(field).child(k);
            match quantity::parse(&v.0) {
                Err(e) => errs.push(FieldError::invalid(&p, &v.0, e.to_string())),
                Ok(q) if q.is_negative() => {
                    errs.push(FieldError::invalid(
                        &p,
                        &v.0,
                        "must be greater than or equal to 0",
                    ));
                }
                Ok(_) => {}
            }
        }
    }
    let cidrs = spec.and_then(|s| s.pod_cidrs.as_deref()).unwrap_or(&[]);
    let cp = Path::new("spec").child("podCIDRs");
    let mut parsed = Vec::new();
    for (i, c) in cidrs.iter().enumerate() {
        match format::parse_cidr(c) {
            Some(ip) => parsed.push(format::is_ipv4(&ip)),
            None => errs.push(FieldError::invalid(
                &cp.index(i),
                c,
                format::INVALID_CIDR_MSG,
            )),
        }
    }
    if cidrs.len() > 1 {
        let dual = parsed.len() == 2 && parsed[0] != parsed[1];
        if !dual || cidrs.len() > 2 {
            errs.push(FieldError::invalid(
                &cp,
                json(cidrs),
                "may specify no more than one CIDR for each IP family",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, c) in cidrs.iter().enumerate() {
            if !seen.insert(c) {
                errs.push(FieldError::duplicate(&cp.index(i), c));
            }
        }
    }
    errs
}

/// Applies the Endpoints defaults: port protocol `TCP`.
pub fn default_endpoints(e: &mut Endpoints) {
    for p in e
        .subsets
        .iter_mut()
        .flatten()
        .flat_map(|s| s.ports.iter_mut().flatten())
    {
        if is_empty(&p.protocol) {
            p.protocol = Some("TCP".to_string());
        }
    }
}

fn endpoint_address(a: &EndpointAddress, path: &Path, errs: &mut Vec<FieldError>) {
    let ip_path = path.child("ip");
    if format::parse_ip(&a.ip).is_none() {
        errs.push(FieldError::invalid(&ip_path, &a.ip, format::INVALID_IP_MSG));
    }
    if let Some(h) = a.hostname.as_deref().filter(|h| !h.is_empty()) {
        for msg in format::dns1123_label(h) {
            errs.push(FieldError::invalid(&path.child("hostname"), h, msg));
        }
    }
    if let Some(n) = &a.node_name {
        for msg in format::dns1123_subdomain(n) {
            errs.push(FieldError::invalid(&path.child("nodeName"), n, msg));
        }
    }
    errs.extend(non_special_ip(&a.ip, &ip_path));
}

/// Validates Endpoints: every subset has addresses, addresses are valid
/// non-special IPs, and ports are valid (named when there are several).
pub fn validate_endpoints(e: &Endpoints) -> Vec<FieldError> {
    let mut errs = meta::object_meta(
        &e.metadata,
        true,
        NameRule::Dns1123Subdomain,
        &Path::new("metadata"),
    );
    for (i, ss) in e.subsets.iter().flatten().enumerate() {
        let p = Path::new("subsets").index(i);
        let addresses = ss.addresses.as_deref().unwrap_or(&[]);
        let not_ready = ss.not_ready_addresses.as_deref().unwrap_or(&[]);
        if addresses.is_empty() && not_ready.is_empty() {
            errs.push(FieldError::required(
                &p,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for (j, a) in addresses.iter().enumerate() {
            endpoint_address(a, &p.child("addresses").index(j), &mut errs);
        }
        for (j, a) in not_ready.iter().enumerate() {
            endpoint_address(a, &p.child("notReadyAddresses").index(j), &mut errs);
        }
        let ports = ss.ports.as_deref().unwrap_or(&[]);
        for (j, port) in ports.iter().enumerate() {
            let pp = p.child("ports").index(j);
            let name = or_empty(&port.name);
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(&pp.child("name"), ""));
            } else if !name.is_empty() {
                for msg in format::dns1123_label(name) {
                    errs.push(FieldError::invalid(&pp.child("name"), name, msg));
                }
            }
            for msg in format::port_num(port.port.into()) {
                errs.push(FieldError::invalid(&pp.child("port"), port.port, msg));
            }
            let proto = or_empty(&port.protocol);
            if proto.is_empty() {
                errs.push(FieldError::required(&pp.child("protocol"), ""));
            } else if !PROTOCOLS.contains(&proto) {
                errs.push(FieldError::not_supported(
                    &pp.child("protocol"),
                    proto,
                    &PROTOCOLS,
                ));
            }
            if let Some(ap) = &port.app_protocol {
                errs.extend(meta::label_name(ap, &pp.child("appProtocol")));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::super::ErrorKind::{self, *};
    use super::*;
    use k8s_openapi::api::core::v1::{EndpointPort, EndpointSubset, NodeSpec, NodeStatus, Taint};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn kinds(errs: &[FieldError]) -> Vec<(String, ErrorKind)> {
        errs.iter().map(|e| (e.field.clone(), e.kind)).collect()
    }

    fn named(name: &str, ns: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn namespaces() {
        let mut ns = Namespace {
            metadata: named("team-a", None),
            ..Default::default()
        };
        default_namespace(&mut ns);
        assert_eq!(
            ns.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/metadata.name"))
                .map(String::as_str),
            Some("team-a")
        );
        assert_eq!(
            ns.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Active")
        );
        assert_eq!(validate_namespace(&ns), vec![]);
        let bad = Namespace {
            metadata: named("team.a", None),
            ..Default::default()
        };
        let errs = validate_namespace(&bad);
        assert_eq!(
            errs[0].to_string(),
            "metadata.name: Invalid value: \"team.a\": must not contain dots"
        );
        let mut fin = ns.clone();
        fin.spec = Some(NamespaceSpec {
            finalizers: Some(vec!["custom".into()]),
        });
        assert_eq!(
            kinds(&validate_namespace(&fin)),
            vec![("spec.finalizers".to_string(), Invalid)]
        );
        let with_ns = Namespace {
            metadata: named("a", Some("b")),
            ..Default::default()
        };
        assert_eq!(
            kinds(&validate_namespace(&with_ns)),
            vec![("metadata.namespace".to_string(), Forbidden)]
        );
    }

    #[test]
    fn config_maps() {
        let ok = ConfigMap {
            metadata: named("cfg", Some("default")),
            data: Some(BTreeMap::from([("game.properties".into(), "x".into())])),
            ..Default::default()
        };
        assert_eq!(validate_config_map(&ok), vec![]);
        let bad_key = ConfigMap {
            data: Some(BTreeMap::from([("a b".into(), "x".into())])),
            ..ok.clone()
        };
        assert_eq!(
            kinds(&validate_config_map(&bad_key)),
            vec![("data[a b]".to_string(), Invalid)]
        );
        let dup = ConfigMap {
            binary_data: Some(BTreeMap::from([(
                "game.properties".into(),
                ByteString(vec![1]),
            )])),
            ..ok.clone()
        };
        let errs = validate_config_map(&dup);
        assert_eq!(
            errs[0].to_string(),
            "data[game.properties]: Invalid value: \"game.properties\": duplicate of key present in binaryData"
        );
        let big = ConfigMap {
            data: Some(BTreeMap::from([(
                "k".into(),
                "x".repeat(MAX_DATA_SIZE + 1),
            )])),
            ..ok
        };
        assert_eq!(
            validate_config_map(&big)[0].to_string(),
            ": Too long: may not be more than 1048576 bytes"
        );
    }

    #[test]
    fn secrets() {
        let mut s = Secret {
            metadata: named("creds", Some("default")),
            string_data: Some(BTreeMap::from([("password".into(), "hunter2".into())])),
            ..Default::default()
        };
        default_secret(&mut s);
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(s.string_data, None);
        assert_eq!(
            s.data
                .as_ref()
                .and_then(|d| d.get("password"))
                .map(|b| b.0.clone()),
            Some(b"hunter2".to_vec())
        );
        assert_eq!(validate_secret(&s), vec![]);
        let tls = Secret {
            type_: Some("kubernetes.io/tls".into()),
            ..s.clone()
        };
        assert_eq!(
            kinds(&validate_secret(&tls)),
            vec![
                ("data[tls.crt]".to_string(), Required),
                ("data[tls.key]".to_string(), Required)
            ]
        );
        let docker = Secret {
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".into(),
                ByteString(b"nope".to_vec()),
            )])),
            ..s.clone()
        };
        assert_eq!(
            kinds(&validate_secret(&docker)),
            vec![("data[.dockerconfigjson]".to_string(), Invalid)]
        );
        let sa = Secret {
            type_: Some("kubernetes.io/service-account-token".into()),
            ..s.clone()
        };
        assert_eq!(
            kinds(&validate_secret(&sa)),
            vec![(
                "metadata.annotations[kubernetes.io/service-account.name]".to_string(),
                Required
            )]
        );
        let bad = Secret {
            data: Some(BTreeMap::from([("..x".into(), ByteString(vec![]))])),
            ..s
        };
        assert_eq!(
            kinds(&validate_secret(&bad)),
            vec![("data[..x]".to_string(), Invalid)]
        );
    }

    #[test]
    fn nodes() {
        let ok = Node {
            metadata: named("node-1.example", None),
            spec: Some(NodeSpec {
                pod_cidrs: Some(vec!["10.244.1.0/24".into()]),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                capacity: Some(BTreeMap::from([("cpu".into(), Quantity("4".into()))])),
                ..Default::default()
            }),
        };
        assert_eq!(validate_node(&ok), vec![]);
        let taint = |key: &str, effect: &str| Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        };
        let cases: Vec<(Node, Vec<(&str, ErrorKind)>)> = vec![
            (
                Node {
                    metadata: named("Node_1", None),
                    ..ok.clone()
                },
                vec![("metadata.name", Invalid)],
            ),
            (
                Node {
                    metadata: named("n", Some("x")),
                    ..ok.clone()
                },
                vec![("metadata.namespace", Forbidden)],
            ),
            (
                Node {
                    spec: Some(NodeSpec {
                        taints: Some(vec![taint("k", "Sometimes")]),
                        ..Default::default()
                    }),
                    ..ok.clone()
                },
                vec![("metadata.taints[0].effect", NotSupported)],
            ),
            (
                Node {
                    spec: Some(NodeSpec {
                        taints: Some(vec![taint("k", "NoSchedule"), taint("k", "NoSchedule")]),
                        ..Default::default()
                    }),
                    ..ok.clone()
                },
                vec![("metadata.taints[1]", Duplicate)],
            ),
            (
                Node {
                    spec: Some(NodeSpec {
                        pod_cidrs: Some(vec!["10.0.0.0/40".into()]),
                        ..Default::default()
                    }),
                    ..ok.clone()
                },
                vec![("spec.podCIDRs[0]", Invalid)],
            ),
            (
                Node {
                    status: Some(NodeStatus {
                        capacity: Some(BTreeMap::from([("cpu".into(), Quantity("-1".into()))])),
                        ..Default::default()
                    }),
                    ..ok.clone()
                },
                vec![("status.capacity.cpu", Invalid)],
            ),
        ];
        for (node, want) in cases {
            let want: Vec<(String, ErrorKind)> =
                want.into_iter().map(|(f, k)| (f.to_string(), k)).collect();
            assert_eq!(kinds(&validate_node(&node)), want);
        }
    }

    #[test]
    fn endpoints() {
        let addr = |ip: &str| EndpointAddress {
            ip: ip.into(),
            ..Default::default()
        };
        let mut ok = Endpoints {
            metadata: named("web", Some("default")),
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![addr("10.1.2.3")]),
                ports: Some(vec![EndpointPort {
                    port: 8080,
                    ..Default::default()
                }]),
                ..Default::default()
            }]),
        };
        default_endpoints(&mut ok);
        assert_eq!(validate_endpoints(&ok), vec![]);
        let with = |subset: EndpointSubset| Endpoints {
            subsets: Some(vec![subset]),
            ..ok.clone()
        };
        let base = ok
            .subsets
            .as_ref()
            .map(|s| s[0].clone())
            .unwrap_or_default();
        let cases: Vec<(Endpoints, Vec<(&str, ErrorKind)>)> = vec![
            (
                with(EndpointSubset {
                    addresses: None,
                    ..base.clone()
                }),
                vec![("subsets[0]", Required)],
            ),
            (
                with(EndpointSubset {
                    addresses: Some(vec![addr("nope")]),
                    ..base.clone()
                }),
                vec![
                    ("subsets[0].addresses[0].ip", Invalid),
                    ("subsets[0].addresses[0].ip", Invalid),
                ],
            ),
            (
                with(EndpointSubset {
                    addresses: Some(vec![addr("127.0.0.1")]),
                    ..base.clone()
                }),
                vec![("subsets[0].addresses[0].ip", Invalid)],
            ),
            (
                with(EndpointSubset {
                    ports: Some(vec![
                        EndpointPort {
                            port: 80,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        },
                        EndpointPort {
                            port: 0,
                            protocol: Some("TCP".into()),
                            name: Some("b".into()),
                            ..Default::default()
                        },
                    ]),
                    ..base.clone()
                }),
                vec![
                    ("subsets[0].ports[0].name", Required),
                    ("subsets[0].ports[1].port", Invalid),
                ],
            ),
        ];
        for (e, want) in cases {
            let want: Vec<(String, ErrorKind)> =
                want.into_iter().map(|(f, k)| (f.to_string(), k)).collect();
            assert_eq!(kinds(&validate_endpoints(&e)), want);
        }
    }
}
