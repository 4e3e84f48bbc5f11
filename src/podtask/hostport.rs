//! Host ports: which container ports need one, under the pod's strategy.
//!
//! Pods have no routable IP of their own; their containers are reached at
//! `hostIP:hostPort`, and host ports come from the agent's `ports` resource.
//!
//! * `fixed`: only ports with a non-zero `hostPort` take one, exactly that port.
//! * `wildcard`: ports with a `hostPort` take exactly it; every other declared
//!   container port takes the lowest free offered port (searched in the pod's
//!   role order).
//! * `hostNetwork: true` pods use each container port itself as host port.
//!
//! The strategy comes from the pod's label `k8s.mesosphere.io/portMapping`
//! and defaults to the scheduler's (`--host-port-endpoints`: wildcard when true).

use std::str::FromStr;

use k8s_openapi::api::core::v1::Pod;

/// How a pod's container ports map to host ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PortMapping {
    /// Only ports with an explicit `hostPort` use one.
    Fixed,
    /// Every declared container port gets a host port.
    #[default]
    Wildcard,
}

impl FromStr for PortMapping {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fixed" => Ok(PortMapping::Fixed),
            "wildcard" => Ok(PortMapping::Wildcard),
            other => Err(format!(
                "unknown port mapping {other:?}: expected fixed or wildcard"
            )),
        }
    }
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PortMapping::Fixed => "fixed",
            PortMapping::Wildcard => "wildcard",
        })
    }
}

/// One container port that needs a host port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRequest {
    /// Index of the container in `spec.containers`.
    pub container: usize,
    /// Index of the port in that container's `ports`.
    pub port: usize,
    /// The container's name.
    pub container_name: String,
    /// The container port.
    pub container_port: i32,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port's name, if it has one.
    pub name: Option<String>,
    /// The host port it must get, or `None` for any free one.
    pub host_port: Option<u16>,
}

/// A host port chosen for a container port.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HostPort {
    /// The container's name.
    pub container: String,
    /// The container port.
    pub container_port: i32,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The host port.
    pub host_port: u16,
    /// The port's name, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The Mesos role of the `ports` resource it came from.
    pub role: String,
    /// Index of the container in `spec.containers`.
    #[serde(skip)]
    pub container_index: usize,
    /// Index of the port in that container's `ports`.
    #[serde(skip)]
    pub port_index: usize,
}

/// The pod's ports cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPortError {
    /// Two container ports ask for the same host port.
    #[error(
        "host port {host_port} is requested twice: by container {first:?} and by container {second:?}; \
         give each container port its own hostPort"
    )]
    Duplicate {
        /// The port.
        host_port: u16,
        /// First container asking for it.
        first: String,
        /// Second container asking for it.
        second: String,
    },
    /// A port number outside 1-65535.
    #[error("{field}: {value} is not a valid port number (1-65535)")]
    Invalid {
        /// The field.
        field: String,
        /// The value.
        value: i32,
    },
}

/// The container ports of `pod` that need host ports under `mapping`.
pub fn requests(pod: &Pod, mapping: PortMapping) -> Result<Vec<PortRequest>, HostPortError> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Vec::new());
    };
    let host_network = spec.host_network.unwrap_or(false);
    let mut out: Vec<PortRequest> = Vec::new();
    for (ci, c) in spec.containers.iter().enumerate() {
        for (pi, p) in c.ports.iter().flatten().enumerate() {
            let field = |f: &str| format!("spec.containers[{ci}].ports[{pi}].{f}");
            let port = check_port(&field("containerPort"), p.container_port)?;
            let host = match p.host_port.unwrap_or(0) {
                0 if host_network => Some(port),
                0 => None,
                h => Some(check_port(&field("hostPort"), h)?),
            };
            if host.is_none() && mapping == PortMapping::Fixed {
                continue;
            }
            if let Some(h) = host
                && let Some(prev) = out.iter().find(|r| r.host_port == Some(h))
            {
                return Err(HostPortError::Duplicate {
                    host_port: h,
                    first: prev.container_name.clone(),
                    second: c.name.clone(),
                });
            }
            out.push(PortRequest {
                container: ci,
                port: pi,
                container_name: c.name.clone(),
                container_port: p.container_port,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                name: p.name.clone().filter(|n| !n.is_empty()),
                host_port: host,
            });
        }
    }
    Ok(out)
}

fn check_port(field: &str, value: i32) -> Result<u16, HostPortError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| HostPortError::Invalid {
            field: field.to_string(),
            value,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};

    /// (containerPort, hostPort, name)
    type Port<'a> = (i32, i32, Option<&'a str>);

    fn pod(containers: Vec<(&str, Vec<Port<'_>>)>, host_network: bool) -> Pod {
        Pod {
            spec: Some(PodSpec {
                host_network: Some(host_network),
                containers: containers
                    .into_iter()
                    .map(|(name, ports)| Container {
                        name: name.into(),
                        ports: Some(
                            ports
                                .into_iter()
                                .map(|(cp, hp, n)| ContainerPort {
                                    container_port: cp,
                                    host_port: Some(hp),
                                    name: n.map(String::from),
                                    ..Default::default()
                                })
                                .collect(),
                        ),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fixed_takes_only_explicit_host_ports() {
        let p = pod(
            vec![("a", vec![(80, 0, None), (443, 31443, Some("https"))])],
            false,
        );
        let r = requests(&p, PortMapping::Fixed).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].container_port, r[0].host_port), (443, Some(31443)));
        assert_eq!(r[0].name.as_deref(), Some("https"));
        assert_eq!(r[0].protocol, "TCP");
    }

    #[test]
    fn wildcard_takes_every_declared_port() {
        let p = pod(
            vec![("a", vec![(80, 0, None)]), ("b", vec![(90, 31000, None)])],
            false,
        );
        let r = requests(&p, PortMapping::Wildcard).unwrap();
        assert_eq!(
            r.iter().map(|x| x.host_port).collect::<Vec<_>>(),
            [None, Some(31000)]
        );
        assert_eq!((r[1].container, r[1].port), (1, 0));
    }

    #[test]
    fn host_network_uses_the_container_port() {
        let p = pod(vec![("a", vec![(8080, 0, None)])], true);
        let r = requests(&p, PortMapping::Fixed).unwrap();
        assert_eq!(r[0].host_port, Some(8080));
    }

    #[test]
    fn duplicate_host_ports_name_both_containers() {
        let p = pod(
            vec![
                ("a", vec![(80, 31000, None)]),
                ("b", vec![(81, 31000, None)]),
            ],
            false,
        );
        let e = requests(&p, PortMapping::Wildcard).unwrap_err();
        assert_eq!(
            e,
            HostPortError::Duplicate {
                host_port: 31000,
                first: "a".into(),
                second: "b".into()
            }
        );
    }

    #[test]
    fn invalid_port_numbers_are_rejected() {
        let p = pod(vec![("a", vec![(70000, 0, None)])], false);
        let e = requests(&p, PortMapping::Wildcard).unwrap_err();
        assert!(
            e.to_string()
                .contains("spec.containers[0].ports[0].containerPort"),
            "{e}"
        );
    }

    #[test]
    fn strategy_parses_from_the_label_values() {
        assert_eq!("fixed".parse::<PortMapping>(), Ok(PortMapping::Fixed));
        assert_eq!("wildcard".parse::<PortMapping>(), Ok(PortMapping::Wildcard));
        assert!("any".parse::<PortMapping>().is_err());
    }
}
