//! What the proxy serves, computed from one Service and its Endpoints.
//!
//! Pure functions: a Service (and the Endpoints of the same name, if any)
//! become one [`PortSpec`] per service port the proxy can serve, with the
//! ready endpoints of that port. Anything malformed is left out and
//! described in a warning that names the object, never an error: one bad
//! object must not stop the proxy from serving the others.
//!
//! Rules (upstream kube-proxy's, where they apply here):
//! * ExternalName and headless Services (`clusterIP: None`) are not proxied.
//! * ClusterIP, NodePort and LoadBalancer Services are; NodePorts are served
//!   for NodePort and LoadBalancer Services that have one.
//! * An Endpoints port belongs to a service port when its name and protocol
//!   match. A Service with a single unnamed port also takes the single port
//!   of an Endpoints subset whatever its name (hand-written Endpoints).
//! * Only `subsets[].addresses` (ready) are used; `notReadyAddresses` never.
//! * TCP and UDP are proxied; SCTP is left out with a warning.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Service, ServicePort};

/// Session affinity timeout when `sessionAffinityConfig` gives none (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10800);

/// A transport protocol the proxy forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP streams.
    Tcp,
    /// UDP datagrams.
    Udp,
}

impl Protocol {
    /// The Kubernetes spelling: `TCP`, `UDP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }

    /// The protocol of a Kubernetes `protocol` field (absent means TCP).
    fn parse(field: Option<&str>) -> Result<Self, String> {
        match field.unwrap_or("TCP") {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            other => Err(format!(
                "protocol {other} is not proxied (km proxy forwards TCP and UDP)"
            )),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Service by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceKey {
    /// The key of an object's metadata (an absent namespace is "default").
    pub fn of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Self {
        ServiceKey {
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One port of one Service: what connections and metrics are keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    /// The Service.
    pub service: ServiceKey,
    /// The service port's name ("" when unnamed).
    pub port_name: String,
    /// Its protocol.
    pub protocol: Protocol,
}

impl fmt::Display for PortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.service)?;
        if !self.port_name.is_empty() {
            write!(f, ":{}", self.port_name)?;
        }
        write!(f, "/{}", self.protocol)
    }
}

/// How a client's connections are spread over the endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    /// Round-robin, each connection on its own.
    None,
    /// A client IP keeps its endpoint until it has been idle this long.
    ClientIp(Duration),
}

/// Where a service port is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    /// The Service's ClusterIP, when it has one.
    pub cluster_ip: Option<IpAddr>,
    /// The service port (on the ClusterIP).
    pub port: u16,
    /// The NodePort, on every node.
    pub node_port: Option<u16>,
}

/// One service port to serve, with its ready endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Which port of which Service.
    pub key: PortKey,
    /// Where clients reach it.
    pub frontend: Frontend,
    /// Session affinity.
    pub affinity: Affinity,
    /// Ready endpoints (hostIP:hostPort in km), sorted, without duplicates.
    pub endpoints: Vec<SocketAddr>,
}

/// What one Service gives the proxy.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Computed {
    /// The ports to serve.
    pub ports: Vec<PortSpec>,
    /// Why something was left out, naming the object.
    pub warnings: Vec<String>,
}

/// The ports of `svc` to serve, with the ready endpoints from `endpoints`
/// (the Endpoints object of the same namespace and name, if there is one).
pub fn compute(svc: &Service, endpoints: Option<&Endpoints>) -> Computed {
    let mut out = Computed::default();
    let key = ServiceKey::of(&svc.metadata);
    let Some(spec) = &svc.spec else {
        return out;
    };
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    let node_ports = match type_ {
        "ClusterIP" => false,
        "NodePort" => true,
        "LoadBalancer" => spec.allocate_load_balancer_node_ports != Some(false),
        "ExternalName" => return out,
        other => {
            out.warnings.push(format!(
                "Service {key}: type {other} is unknown; not proxied (use ClusterIP, NodePort or LoadBalancer)"
            ));
            return out;
        }
    };
    let cluster_ip = match spec.cluster_ip.as_deref() {
        Some("None") => return out,
        None | Some("") => None,
        Some(ip) => match ip.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                out.warnings.push(format!(
                    "Service {key}: clusterIP {ip:?} is not an IP address; only its NodePorts are served"
                ));
                None
            }
        },
    };
    let affinity = match spec.session_affinity.as_deref() {
        Some("ClientIP") => {
            let seconds = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            match seconds {
                None => Affinity::ClientIp(DEFAULT_AFFINITY_TIMEOUT),
                Some(s) if s > 0 => Affinity::ClientIp(Duration::from_secs(s as u64)),
                Some(s) => {
                    out.warnings.push(format!(
                        "Service {key}: sessionAffinityConfig.clientIP.timeoutSeconds {s} is not positive; using {}",
                        DEFAULT_AFFINITY_TIMEOUT.as_secs()
                    ));
                    Affinity::ClientIp(DEFAULT_AFFINITY_TIMEOUT)
                }
            }
        }
        _ => Affinity::None,
    };
    let ports = spec.ports.as_deref().unwrap_or_default();
    let single_unnamed = ports.len() == 1 && ports[0].name.as_deref().unwrap_or("").is_empty();
    for sp in ports {
        let name = sp.name.clone().unwrap_or_default();
        let what = if name.is_empty() {
            format!("Service {key} port {}", sp.port)
        } else {
            format!("Service {key} port {name:?}")
        };
        let protocol = match Protocol::parse(sp.protocol.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                out.warnings.push(format!("{what}: {e}"));
                continue;
            }
        };
        let Some(port) = port_number(sp.port) else {
            out.warnings.push(format!(
                "{what}: port {} is out of range 1-65535; port skipped",
                sp.port
            ));
            continue;
        };
        let node_port = node_ports
            .then(|| node_port(sp, &what, &mut out.warnings))
            .flatten();
        if cluster_ip.is_none() && node_port.is_none() {
            continue;
        }
        let key = PortKey {
            service: key.clone(),
            port_name: name,
            protocol,
        };
        let endpoints = endpoints
            .map(|e| ready_endpoints(e, &key, single_unnamed, &mut out.warnings))
            .unwrap_or_default();
        out.ports.push(PortSpec {
            key,
            frontend: Frontend {
                cluster_ip,
                port,
                node_port,
            },
            affinity,
            endpoints,
        });
    }
    let mut seen = std::collections::HashSet::new();
    out.warnings.retain(|w| seen.insert(w.clone()));
    out
}

fn port_number(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

fn node_port(sp: &ServicePort, what: &str, warnings: &mut Vec<String>) -> Option<u16> {
    let n = sp.node_port?;
    let p = port_number(n);
    if p.is_none() {
        warnings.push(format!(
            "{what}: nodePort {n} is out of range 1-65535; served on its ClusterIP only"
        ));
    }
    p
}

/// The ready addresses × the matching port of every subset of `eps`.
fn ready_endpoints(
    eps: &Endpoints,
    key: &PortKey,
    single_unnamed: bool,
    warnings: &mut Vec<String>,
) -> Vec<SocketAddr> {
    let obj = ServiceKey::of(&eps.metadata);
    let mut out = Vec::new();
    for subset in eps.subsets.as_deref().unwrap_or_default() {
        let ports = subset.ports.as_deref().unwrap_or_default();
        let same_protocol = |p: &&k8s_openapi::api::core::v1::EndpointPort| {
            Protocol::parse(p.protocol.as_deref()) == Ok(key.protocol)
        };
        let by_name = ports
            .iter()
            .filter(same_protocol)
            .find(|p| p.name.as_deref().unwrap_or("") == key.port_name);
        let matched = by_name.or_else(|| {
            (single_unnamed && ports.len() == 1)
                .then(|| ports.iter().find(same_protocol))
                .flatten()
        });
        let Some(ep) = matched else {
            continue;
        };
        let Some(port) = port_number(ep.port) else {
            warnings.push(format!(
                "Endpoints {obj}: port {} ({}) is out of range 1-65535; skipped",
                ep.port,
                ep.name.as_deref().unwrap_or("unnamed")
            ));
            continue;
        };
        for addr in subset.addresses.as_deref().unwrap_or_default() {
            match addr.ip.parse::<IpAddr>() {
                Ok(ip) => out.push(SocketAddr::new(ip, port)),
                Err(_) => warnings.push(format!(
                    "Endpoints {obj}: address {:?} is not an IP address; skipped",
                    addr.ip
                )),
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn eps(v: serde_json::Value) -> Endpoints {
        serde_json::from_value(v).unwrap()
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn web() -> Service {
        svc(
            json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": {
            "type": "NodePort", "clusterIP": "10.0.0.7",
            "ports": [
                {"name": "http", "port": 80, "nodePort": 30080},
                {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"}
            ]}}),
        )
    }

    #[test]
    fn ports_match_endpoints_by_name_and_protocol() {
        let e = eps(
            json!({"metadata": {"name": "web", "namespace": "ns"}, "subsets": [
                {"addresses": [{"ip": "192.0.2.1"}, {"ip": "192.0.2.2"}],
                 "ports": [{"name": "http", "port": 31000}, {"name": "dns", "port": 31001, "protocol": "UDP"},
                           {"name": "dns-tcp", "port": 31002}]},
                {"addresses": [{"ip": "192.0.2.3"}],
                 "ports": [{"name": "http", "port": 31010}, {"name": "dns", "port": 31011, "protocol": "TCP"}]}
            ]}),
        );
        let c = compute(&web(), Some(&e));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.ports.len(), 3);
        let http = &c.ports[0];
        assert_eq!(http.key.to_string(), "ns/web:http/TCP");
        assert_eq!(
            http.frontend,
            Frontend {
                cluster_ip: Some("10.0.0.7".parse().unwrap()),
                port: 80,
                node_port: Some(30080)
            }
        );
        assert_eq!(
            http.endpoints,
            addrs(&["192.0.2.1:31000", "192.0.2.2:31000", "192.0.2.3:31010"])
        );
        let dns = &c.ports[1];
        assert_eq!(dns.key.protocol, Protocol::Udp);
        // The second subset names "dns" for TCP only: not a UDP endpoint.
        assert_eq!(
            dns.endpoints,
            addrs(&["192.0.2.1:31001", "192.0.2.2:31001"])
        );
        let dns_tcp = &c.ports[2];
        assert_eq!(dns_tcp.frontend.node_port, None);
        assert_eq!(
            dns_tcp.endpoints,
            addrs(&["192.0.2.1:31002", "192.0.2.2:31002"])
        );
    }

    #[test]
    fn only_ready_addresses_are_endpoints() {
        let e = eps(
            json!({"metadata": {"name": "web", "namespace": "ns"}, "subsets": [
                {"addresses": [{"ip": "192.0.2.1"}], "notReadyAddresses": [{"ip": "192.0.2.9"}],
                 "ports": [{"name": "http", "port": 31000}]},
                {"notReadyAddresses": [{"ip": "192.0.2.8"}], "ports": [{"name": "http", "port": 31000}]}
            ]}),
        );
        let c = compute(&web(), Some(&e));
        assert_eq!(c.ports[0].endpoints, addrs(&["192.0.2.1:31000"]));
        assert!(c.ports[1].endpoints.is_empty());
        let none = compute(&web(), None);
        assert!(none.ports.iter().all(|p| p.endpoints.is_empty()));
        assert_eq!(
            none.ports.len(),
            3,
            "ports without endpoints are still served"
        );
    }

    #[test]
    fn single_unnamed_port_takes_the_single_endpoint_port() {
        let s = svc(
            json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "10.0.0.9",
            "ports": [{"port": 5432}]}}),
        );
        let e = eps(json!({"metadata": {"name": "db"}, "subsets": [
            {"addresses": [{"ip": "192.0.2.1"}], "ports": [{"name": "pg", "port": 31432}]},
            {"addresses": [{"ip": "192.0.2.2"}], "ports": [{"port": 31433}]},
            {"addresses": [{"ip": "192.0.2.3"}], "ports": [{"name": "a", "port": 1}, {"name": "b", "port": 2}]}
        ]}));
        let c = compute(&s, Some(&e));
        assert_eq!(c.ports.len(), 1);
        assert_eq!(c.ports[0].key.to_string(), "default/db/TCP");
        assert_eq!(c.ports[0].frontend.node_port, None);
        assert_eq!(
            c.ports[0].endpoints,
            addrs(&["192.0.2.1:31432", "192.0.2.2:31433"])
        );
    }

    #[test]
    fn named_ports_do_not_take_unnamed_endpoint_ports() {
        let s = svc(
            json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "10.0.0.9",
            "ports": [{"name": "pg", "port": 5432}]}}),
        );
        let e = eps(json!({"metadata": {"name": "db"}, "subsets": [
            {"addresses": [{"ip": "192.0.2.1"}], "ports": [{"port": 31432}]}]}));
        assert!(compute(&s, Some(&e)).ports[0].endpoints.is_empty());
    }

    #[test]
    fn headless_external_name_and_cluster_ip_only_services() {
        let headless = svc(
            json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None",
            "ports": [{"port": 80}]}}),
        );
        assert_eq!(compute(&headless, None), Computed::default());
        let ext = svc(
            json!({"metadata": {"name": "x"}, "spec": {"type": "ExternalName",
            "externalName": "example.com"}}),
        );
        assert_eq!(compute(&ext, None), Computed::default());
        let cluster = svc(
            json!({"metadata": {"name": "c"}, "spec": {"clusterIP": "10.0.0.3",
            "ports": [{"port": 80, "nodePort": 30001}]}}),
        );
        let c = compute(&cluster, None);
        assert_eq!(
            c.ports[0].frontend.node_port, None,
            "ClusterIP type: no NodePort"
        );
        let lb = svc(
            json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer",
            "clusterIP": "10.0.0.4", "allocateLoadBalancerNodePorts": false,
            "ports": [{"port": 80}]}}),
        );
        assert_eq!(compute(&lb, None).ports[0].frontend.node_port, None);
        let lb = svc(
            json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer",
            "clusterIP": "10.0.0.4", "ports": [{"port": 80, "nodePort": 30002}]}}),
        );
        assert_eq!(compute(&lb, None).ports[0].frontend.node_port, Some(30002));
    }

    #[test]
    fn session_affinity_and_its_timeout() {
        let mut s = web();
        assert_eq!(compute(&s, None).ports[0].affinity, Affinity::None);
        let spec = s.spec.as_mut().unwrap();
        spec.session_affinity = Some("ClientIP".into());
        assert_eq!(
            compute(&s, None).ports[0].affinity,
            Affinity::ClientIp(DEFAULT_AFFINITY_TIMEOUT)
        );
        let s = svc(
            json!({"metadata": {"name": "a"}, "spec": {"clusterIP": "10.0.0.5",
            "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
            "ports": [{"port": 80}]}}),
        );
        assert_eq!(
            compute(&s, None).ports[0].affinity,
            Affinity::ClientIp(Duration::from_secs(60))
        );
    }

    #[test]
    fn malformed_parts_are_skipped_with_a_warning_naming_the_object() {
        let s = svc(
            json!({"metadata": {"name": "bad", "namespace": "ns"}, "spec": {
            "type": "NodePort", "clusterIP": "10.0.0.8",
            "ports": [{"name": "big", "port": 70000}, {"name": "sctp", "port": 9, "protocol": "SCTP"},
                      {"name": "np", "port": 81, "nodePort": -1}, {"name": "ok", "port": 82, "nodePort": 30082}]}}),
        );
        let e = eps(
            json!({"metadata": {"name": "bad", "namespace": "ns"}, "subsets": [
            {"addresses": [{"ip": "192.0.2.1"}, {"ip": "not-an-ip"}],
             "ports": [{"name": "ok", "port": 31000}, {"name": "np", "port": 0}]}]}),
        );
        let c = compute(&s, Some(&e));
        let names: Vec<_> = c.ports.iter().map(|p| p.key.port_name.as_str()).collect();
        assert_eq!(names, ["np", "ok"]);
        assert_eq!(c.ports[0].frontend.node_port, None);
        assert!(c.ports[0].endpoints.is_empty());
        assert_eq!(c.ports[1].endpoints, addrs(&["192.0.2.1:31000"]));
        let all = c.warnings.join("\n");
        assert_eq!(c.warnings.len(), 5, "{all}");
        assert!(
            all.contains("Service ns/bad port \"big\": port 70000 is out of range"),
            "{all}"
        );
        assert!(all.contains("protocol SCTP is not proxied"), "{all}");
        assert!(all.contains("nodePort -1 is out of range"), "{all}");
        assert!(
            all.contains("Endpoints ns/bad: port 0 (np) is out of range"),
            "{all}"
        );
        assert!(
            all.contains("Endpoints ns/bad: address \"not-an-ip\""),
            "{all}"
        );
        let unknown = svc(
            json!({"metadata": {"name": "u"}, "spec": {"type": "Weird", "ports": [{"port": 1}]}}),
        );
        assert!(compute(&unknown, None).warnings[0].contains("type Weird is unknown"));
    }
}
