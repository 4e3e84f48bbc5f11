//! What a Service's Endpoints and EndpointSlices should hold, computed from
//! the Service and the pods of its namespace (pure: no API calls).
//!
//! With host-port endpoints (km's default) an address is the pod's
//! `status.hostIP` and a port is the host port the scheduler mapped the
//! target container port to, read from the pod's
//! `k8s.mesosphere.io/port_<PROTO>_<containerPort>` or
//! `k8s.mesosphere.io/portName_<PROTO>_<name>` annotation. Without, they are
//! the pod's IP and the container port, as upstream.
//!
//! Pods being deleted and pods that ended are left out; pods that are not
//! Ready go to `notReadyAddresses` (unless the Service publishes not-ready
//! addresses). Pods offering the same ports share a subset, and a slice.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, ObjectReference, Pod, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::podtask::annotations;

/// Label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// km's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "km-controller-manager";
/// Label naming the controller that manages an Endpoints object.
pub const ENDPOINTS_MANAGED_BY_LABEL: &str = "endpoints.kubernetes.io/managed-by";
/// Label upstream puts on the Endpoints of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Prefix of the Endpoints annotations that give the container port
/// behind each hostIP:hostPort (`containerPort_<PROTO>_<hostIP>_<hostPort>`).
pub const CONTAINER_PORT_PREFIX: &str = "k8s.mesosphere.io/containerPort_";
/// Most endpoints in one slice (the API's limit).
const MAX_ENDPOINTS_PER_SLICE: usize = 1000;

/// Something about a Service or pod that keeps an endpoint out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Problem {
    /// A named targetPort that no selected pod declares.
    UnknownTargetPort {
        /// The service port (its name, or its number).
        service_port: String,
        /// The targetPort name.
        target_port: String,
    },
    /// A selected pod's address cannot be an endpoint (loopback,
    /// unspecified or link-local, which the API refuses in Endpoints).
    UnusableAddress {
        /// `namespace/name` of the pod.
        pod: String,
        /// The address.
        ip: String,
    },
    /// A selected pod has no host port mapping for a target port: it was
    /// not launched by km's scheduler, or not yet.
    NoHostPort {
        /// `namespace/name` of the pod.
        pod: String,
        /// The annotation that is missing.
        annotation: String,
    },
}

/// The desired state of one Service's endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// `subsets` of the Endpoints, canonical order.
    pub subsets: Option<Vec<EndpointSubset>>,
    /// km's `containerPort_*` annotations of the Endpoints.
    pub annotations: BTreeMap<String, String>,
    /// Labels of the Endpoints.
    pub labels: BTreeMap<String, String>,
    /// The EndpointSlices, by name.
    pub slices: BTreeMap<String, EndpointSlice>,
    /// Why some pods or ports were left out.
    pub problems: BTreeSet<Problem>,
}

/// Whether the Endpoints of `service` are this controller's to write: it
/// has a non-empty selector (selectorless Services have hand-written ones).
pub fn manages(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty())
}

/// Whether `pod` carries every label of `selector`.
pub fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// A pod that counts: not being deleted, not ended.
fn live(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// An address the API accepts in Endpoints: an IP that is not loopback,
/// unspecified or link-local.
fn usable(ip: &str) -> bool {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            !(v4.is_loopback() || v4.is_unspecified() || v4.is_link_local() || v4.is_multicast())
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
        Err(_) => false,
    }
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn protocol(port: &ServicePort) -> &str {
    port.protocol.as_deref().unwrap_or("TCP")
}

/// The container port called `name` with `protocol`, in any container.
fn named_container_port(pod: &Pod, name: &str, protocol: &str) -> Option<i32> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol
        })
        .map(|p| p.container_port)
}

/// How one service port resolves on one pod.
enum Resolved {
    /// (endpoint port, container port)
    Port(i32, i32),
    /// The pod declares no container port of that name.
    NoSuchName,
    /// No host port annotation.
    NoHostPort(String),
}

fn resolve(pod: &Pod, port: &ServicePort, host_ports: bool) -> Resolved {
    let proto = protocol(port);
    let notes = pod.metadata.annotations.as_ref();
    let note = |key: &str| -> Option<i32> {
        notes
            .and_then(|n| n.get(key))
            .and_then(|v| v.trim().parse::<u16>().ok())
            .filter(|p| *p > 0)
            .map(i32::from)
    };
    match port
        .target_port
        .clone()
        .unwrap_or(IntOrString::Int(port.port))
    {
        IntOrString::Int(n) => {
            let n = if n == 0 { port.port } else { n };
            if !host_ports {
                return Resolved::Port(n, n);
            }
            let key = annotations::port_key(proto, n);
            match note(&key) {
                Some(h) => Resolved::Port(h, n),
                None => Resolved::NoHostPort(key),
            }
        }
        IntOrString::String(name) => {
            let Some(cp) = named_container_port(pod, &name, proto) else {
                return Resolved::NoSuchName;
            };
            if !host_ports {
                return Resolved::Port(cp, cp);
            }
            let by_name = annotations::port_name_key(proto, &name);
            match note(&by_name).or_else(|| note(&annotations::port_key(proto, cp))) {
                Some(h) => Resolved::Port(h, cp),
                None => Resolved::NoHostPort(by_name),
            }
        }
    }
}

#[derive(Default)]
struct Group {
    ready: Vec<EndpointAddress>,
    not_ready: Vec<EndpointAddress>,
}

/// Computes the endpoints of `service` from `pods` (any pods: those of
/// other namespaces and those not selected are skipped). `None` when the
/// Service is not [managed](manages).
pub fn compute<'a>(
    service: &Service,
    pods: impl IntoIterator<Item = &'a Pod>,
    host_ports: bool,
) -> Option<Desired> {
    if !manages(service) {
        return None;
    }
    let spec = service.spec.as_ref()?;
    let selector = spec.selector.as_ref()?;
    let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
    let service_name = service.metadata.name.as_deref().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let ports = spec.ports.as_deref().unwrap_or_default();

    let mut groups: BTreeMap<Vec<PortKey>, Group> = BTreeMap::new();
    let mut notes = BTreeMap::new();
    let mut problems = BTreeSet::new();
    // Named target ports no selected pod knows.
    let mut unknown: BTreeSet<usize> = ports
        .iter()
        .enumerate()
        .filter(|(_, p)| matches!(p.target_port, Some(IntOrString::String(_))))
        .map(|(i, _)| i)
        .collect();
    let mut any_pod = false;

    for pod in pods {
        if pod.metadata.namespace.as_deref().unwrap_or("default") != namespace
            || !selects(selector, pod)
            || !live(pod)
        {
            continue;
        }
        any_pod = true;
        unknown.retain(|&i| match &ports[i].target_port {
            Some(IntOrString::String(name)) => {
                named_container_port(pod, name, protocol(&ports[i])).is_none()
            }
            _ => true,
        });
        let status = pod.status.as_ref();
        let ip = if host_ports {
            status.and_then(|s| s.host_ip.as_deref())
        } else {
            status.and_then(|s| s.pod_ip.as_deref())
        };
        let Some(ip) = ip.filter(|ip| !ip.is_empty()) else {
            continue;
        };
        if !usable(ip) {
            problems.insert(Problem::UnusableAddress {
                pod: format!(
                    "{namespace}/{}",
                    pod.metadata.name.as_deref().unwrap_or_default()
                ),
                ip: ip.to_string(),
            });
            continue;
        }
        let mut offered = Vec::new();
        for port in ports {
            match resolve(pod, port, host_ports) {
                Resolved::Port(endpoint_port, container_port) => {
                    offered.push(PortKey {
                        name: port.name.clone().unwrap_or_default(),
                        port: endpoint_port,
                        protocol: protocol(port).to_string(),
                        app_protocol: port.app_protocol.clone(),
                    });
                    if host_ports {
                        notes.insert(
                            format!(
                                "{CONTAINER_PORT_PREFIX}{}_{ip}_{endpoint_port}",
                                protocol(port)
                            ),
                            container_port.to_string(),
                        );
                    }
                }
                Resolved::NoSuchName => {}
                Resolved::NoHostPort(annotation) => {
                    problems.insert(Problem::NoHostPort {
                        pod: format!(
                            "{namespace}/{}",
                            pod.metadata.name.as_deref().unwrap_or_default()
                        ),
                        annotation,
                    });
                }
            }
        }
        if offered.is_empty() {
            continue;
        }
        offered.sort();
        let address = EndpointAddress {
            ip: ip.to_string(),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some(namespace.to_string()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            }),
            hostname: None,
        };
        let group = groups.entry(offered).or_default();
        if publish_not_ready || ready(pod) {
            group.ready.push(address);
        } else {
            group.not_ready.push(address);
        }
    }
    if any_pod {
        for i in unknown {
            let port = &ports[i];
            if let Some(IntOrString::String(target)) = &port.target_port {
                problems.insert(Problem::UnknownTargetPort {
                    service_port: port.name.clone().unwrap_or_else(|| port.port.to_string()),
                    target_port: target.clone(),
                });
            }
        }
    }

    let order = |a: &EndpointAddress, b: &EndpointAddress| {
        (
            a.ip.as_str(),
            a.target_ref.as_ref().and_then(|r| r.name.as_deref()),
        )
            .cmp(&(
                b.ip.as_str(),
                b.target_ref.as_ref().and_then(|r| r.name.as_deref()),
            ))
    };
    let mut subsets = Vec::new();
    let mut slices = BTreeMap::new();
    let owner = owner_of(service);
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.retain(|k, _| k != SERVICE_NAME_LABEL && k != MANAGED_BY_LABEL && k != HEADLESS_LABEL);
    labels.remove(ENDPOINTS_MANAGED_BY_LABEL);
    let mut slice_labels = labels.clone();
    labels.insert(ENDPOINTS_MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    slice_labels.insert(SERVICE_NAME_LABEL.into(), service_name.to_string());
    slice_labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    if spec.cluster_ip.as_deref() == Some("None") {
        labels.insert(HEADLESS_LABEL.into(), String::new());
        slice_labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    for (ports, mut group) in groups {
        group.ready.sort_by(order);
        group.not_ready.sort_by(order);
        let endpoint_ports: Vec<EndpointPort> = ports
            .iter()
            .map(|p| EndpointPort {
                name: Some(p.name.clone()).filter(|n| !n.is_empty()),
                port: p.port,
                protocol: Some(p.protocol.clone()),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let slice_ports: Vec<SlicePort> = ports
            .iter()
            .map(|p| SlicePort {
                name: Some(p.name.clone()),
                port: Some(p.port),
                protocol: Some(p.protocol.clone()),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let entries: Vec<(bool, &EndpointAddress)> = group
            .ready
            .iter()
            .map(|a| (true, a))
            .chain(group.not_ready.iter().map(|a| (false, a)))
            .collect();
        for family in ["IPv4", "IPv6"] {
            let members: Vec<Endpoint> = entries
                .iter()
                .filter(|(_, a)| (a.ip.contains(':')) == (family == "IPv6"))
                .map(|(ready, a)| Endpoint {
                    addresses: vec![a.ip.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        serving: Some(*ready),
                        terminating: Some(false),
                    }),
                    node_name: a.node_name.clone(),
                    target_ref: a.target_ref.clone(),
                    ..Default::default()
                })
                .collect();
            for (n, chunk) in members.chunks(MAX_ENDPOINTS_PER_SLICE).enumerate() {
                let name = slice_name(service_name, family, &ports, n);
                slices.insert(
                    name.clone(),
                    slice(
                        &name,
                        namespace,
                        &slice_labels,
                        &owner,
                        family,
                        chunk.to_vec(),
                        Some(slice_ports.clone()),
                    ),
                );
            }
        }
        subsets.push(EndpointSubset {
            addresses: Some(group.ready).filter(|a| !a.is_empty()),
            not_ready_addresses: Some(group.not_ready).filter(|a| !a.is_empty()),
            ports: Some(endpoint_ports),
        });
    }
    if slices.is_empty() {
        // Like upstream: an empty placeholder says "no endpoints" to slice readers.
        let name = slice_name(service_name, "IPv4", &[], 0);
        slices.insert(
            name.clone(),
            slice(
                &name,
                namespace,
                &slice_labels,
                &owner,
                "IPv4",
                Vec::new(),
                None,
            ),
        );
    }
    Some(Desired {
        subsets: Some(subsets).filter(|s| !s.is_empty()),
        annotations: notes,
        labels,
        slices,
        problems,
    })
}

/// One endpoint port, ordered for grouping.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PortKey {
    name: String,
    port: i32,
    protocol: String,
    app_protocol: Option<String>,
}

fn owner_of(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: service.metadata.name.clone().unwrap_or_default(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `<service>-<hash of family and ports>[-<n>]`: stable, so that a resync
/// rewrites the same slices instead of making new ones.
fn slice_name(service: &str, family: &str, ports: &[PortKey], n: usize) -> String {
    let mut hasher = Fnv::default();
    hasher.write(family.as_bytes());
    for p in ports {
        hasher.write(p.name.as_bytes());
        hasher.write(&p.port.to_be_bytes());
        hasher.write(p.protocol.as_bytes());
        hasher.write(p.app_protocol.as_deref().unwrap_or("").as_bytes());
    }
    let hash = format!("{:08x}", hasher.0 as u32);
    match n {
        0 => format!("{service}-{hash}"),
        n => format!("{service}-{hash}-{n}"),
    }
}

/// FNV-1a, stable across processes and versions (unlike std's hasher).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes.iter().chain([&0xffu8]) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn slice(
    name: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    owner: &OwnerReference,
    family: &str,
    endpoints: Vec<Endpoint>,
    ports: Option<Vec<SlicePort>>,
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        address_type: family.to_string(),
        endpoints,
        ports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"app": "web"}},
            "spec": {"selector": {"app": "web"}, "ports": ports, "clusterIP": "10.96.0.10"}
        }))
        .unwrap()
    }

    fn pod(name: &str, host_ip: &str, ready: bool, notes: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                         "labels": {"app": "web"}, "annotations": notes},
            "spec": {"nodeName": "agent-1", "containers": [{"name": "c", "image": "i", "ports": [
                {"name": "http", "containerPort": 8080},
                {"name": "dns", "containerPort": 53, "protocol": "UDP"}
            ]}]},
            "status": {"phase": "Running", "hostIP": host_ip, "podIP": "172.17.0.9",
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    fn http_notes(host_port: u16) -> serde_json::Value {
        json!({
            "k8s.mesosphere.io/port_TCP_8080": host_port.to_string(),
            "k8s.mesosphere.io/portName_TCP_http": host_port.to_string(),
            "k8s.mesosphere.io/port_UDP_53": "31053",
            "k8s.mesosphere.io/portName_UDP_dns": "31053",
        })
    }

    fn ips(addrs: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        addrs.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn named_and_numbered_target_ports_map_to_host_ports() {
        let svc = service(json!([
            {"name": "web", "port": 80, "targetPort": "http"},
            {"name": "alt", "port": 81, "targetPort": 8080},
        ]));
        let pods = [pod("a", "10.0.0.1", true, http_notes(31000))];
        let d = compute(&svc, &pods, true).unwrap();
        let subsets = d.subsets.unwrap();
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), ["10.0.0.1"]);
        let ports: Vec<_> = subsets[0]
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap(), p.port))
            .collect();
        assert_eq!(ports, [("alt".into(), 31000), ("web".into(), 31000)]);
        assert_eq!(
            d.annotations["k8s.mesosphere.io/containerPort_TCP_10.0.0.1_31000"],
            "8080"
        );
        assert!(d.problems.is_empty(), "{:?}", d.problems);
    }

    #[test]
    fn protocols_must_match() {
        let svc = service(json!([
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": "dns"},
        ]));
        let pods = [pod("a", "10.0.0.1", true, http_notes(31000))];
        let d = compute(&svc, &pods, true).unwrap();
        let subsets = d.subsets.unwrap();
        let ports: Vec<_> = subsets[0]
            .ports
            .iter()
            .flatten()
            .map(|p| (p.port, p.protocol.clone().unwrap()))
            .collect();
        assert_eq!(ports, [(31053, "UDP".to_string())]);
        assert_eq!(
            d.problems.into_iter().collect::<Vec<_>>(),
            [Problem::UnknownTargetPort {
                service_port: "dns-tcp".into(),
                target_port: "dns".into()
            }]
        );
    }

    #[test]
    fn readiness_and_termination() {
        let svc = service(json!([{"name": "web", "port": 80, "targetPort": "http"}]));
        let mut gone = pod("c", "10.0.0.3", true, http_notes(31002));
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let mut failed = pod("d", "10.0.0.4", false, http_notes(31003));
        failed.status.as_mut().unwrap().phase = Some("Failed".into());
        let pods = [
            pod("a", "10.0.0.1", true, http_notes(31000)),
            pod("b", "10.0.0.2", false, http_notes(31000)),
            gone,
            failed,
        ];
        let d = compute(&svc, &pods, true).unwrap();
        let subsets = d.subsets.unwrap();
        assert_eq!(subsets.len(), 1, "same host port: one subset");
        assert_eq!(ips(&subsets[0].addresses), ["10.0.0.1"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.0.0.2"]);
        let slice = d.slices.values().next().unwrap();
        let conds: Vec<_> = slice
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.addresses[0].as_str(),
                    e.conditions.as_ref().unwrap().ready.unwrap(),
                )
            })
            .collect();
        assert_eq!(conds, [("10.0.0.1", true), ("10.0.0.2", false)]);

        let mut publish = svc.clone();
        publish.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let d = compute(&publish, &pods, true).unwrap();
        assert_eq!(
            ips(&d.subsets.unwrap()[0].addresses),
            ["10.0.0.1", "10.0.0.2"]
        );
    }

    #[test]
    fn pods_with_other_host_ports_get_their_own_subset_and_slice() {
        let svc = service(json!([{"name": "web", "port": 80, "targetPort": "http"}]));
        let pods = [
            pod("b", "10.0.0.1", true, http_notes(31001)),
            pod("a", "10.0.0.1", true, http_notes(31000)),
        ];
        let d = compute(&svc, &pods, true).unwrap();
        let subsets = d.subsets.unwrap();
        let ports: Vec<i32> = subsets
            .iter()
            .map(|s| s.ports.as_ref().unwrap()[0].port)
            .collect();
        assert_eq!(ports, [31000, 31001]);
        assert_eq!(d.slices.len(), 2);
        assert!(d.slices.keys().all(|n| n.starts_with("web-")));
        let again = compute(&svc, pods.iter().rev(), true).unwrap();
        assert_eq!(
            again.slices.keys().collect::<Vec<_>>(),
            d.slices.keys().collect::<Vec<_>>(),
            "names are stable"
        );
    }

    #[test]
    fn pods_without_mapping_annotations_are_skipped_and_named() {
        let svc = service(json!([{"name": "web", "port": 80, "targetPort": 8080}]));
        let pods = [
            pod("a", "10.0.0.1", true, json!({})),
            pod("b", "10.0.0.2", true, http_notes(31000)),
        ];
        let d = compute(&svc, &pods, true).unwrap();
        assert_eq!(ips(&d.subsets.unwrap()[0].addresses), ["10.0.0.2"]);
        assert_eq!(
            d.problems.into_iter().collect::<Vec<_>>(),
            [Problem::NoHostPort {
                pod: "ns/a".into(),
                annotation: "k8s.mesosphere.io/port_TCP_8080".into()
            }]
        );
    }

    #[test]
    fn loopback_addresses_are_skipped_and_named() {
        let svc = service(json!([{"name": "web", "port": 80, "targetPort": "http"}]));
        let pods = [
            pod("a", "127.0.0.1", true, http_notes(31000)),
            pod("b", "10.0.0.2", true, http_notes(31000)),
        ];
        let d = compute(&svc, &pods, true).unwrap();
        assert_eq!(ips(&d.subsets.unwrap()[0].addresses), ["10.0.0.2"]);
        assert_eq!(
            d.problems.into_iter().collect::<Vec<_>>(),
            [Problem::UnusableAddress {
                pod: "ns/a".into(),
                ip: "127.0.0.1".into()
            }]
        );
    }

    #[test]
    fn pod_ip_mode_uses_container_ports() {
        let svc = service(json!([{"name": "web", "port": 80, "targetPort": "http"}]));
        let pods = [pod("a", "10.0.0.1", true, json!({}))];
        let d = compute(&svc, &pods, false).unwrap();
        let s = &d.subsets.unwrap()[0];
        assert_eq!(ips(&s.addresses), ["172.17.0.9"]);
        assert_eq!(s.ports.as_ref().unwrap()[0].port, 8080);
        assert!(d.annotations.is_empty());
    }

    #[test]
    fn no_pods_gives_no_subsets_and_a_placeholder_slice() {
        let svc = service(json!([{"name": "web", "port": 80, "targetPort": "http"}]));
        let d = compute(&svc, [], true).unwrap();
        assert_eq!(d.subsets, None);
        assert!(d.problems.is_empty(), "no pods: nothing to complain about");
        let slice = d.slices.values().next().unwrap();
        assert!(slice.endpoints.is_empty());
        assert_eq!(
            slice.metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL],
            "web"
        );
        assert_eq!(
            slice.metadata.owner_references.as_ref().unwrap()[0].uid,
            "svc-uid"
        );
    }

    #[test]
    fn selectorless_services_are_not_managed() {
        let mut svc = service(json!([{"port": 80}]));
        svc.spec.as_mut().unwrap().selector = None;
        assert!(compute(&svc, [], true).is_none());
    }

    #[test]
    fn other_namespaces_and_labels_are_not_selected() {
        let svc = service(json!([{"name": "web", "port": 80, "targetPort": "http"}]));
        let mut elsewhere = pod("a", "10.0.0.1", true, http_notes(31000));
        elsewhere.metadata.namespace = Some("other".into());
        let mut unlabelled = pod("b", "10.0.0.2", true, http_notes(31000));
        unlabelled.metadata.labels = None;
        let d = compute(&svc, &[elsewhere, unlabelled], true).unwrap();
        assert_eq!(d.subsets, None);
    }
}
