//! Container cpu and memory limits: defaults for containers that state none,
//! the Mesos minimums, and the pod's total that its task asks Mesos for.
//!
//! Per resource and container (regular and init containers alike):
//! neither request nor limit → both take the default; only one of them → the
//! other copies it; each is then raised to the minimum (0.01 cpu, 32 MB). The
//! values are written back into the pod that travels to the executor, so
//! Docker enforces exactly what Mesos accounted for. The pod asks Mesos for
//! the larger of the sum of its regular containers' limits and the largest
//! init container's limit, as Kubernetes computes a pod's effective limit.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

use crate::resources::{Quantity, QuantityError};

/// Smallest cpu share Mesos accepts for a container.
pub const MIN_CPUS: f64 = 0.01;
/// Smallest memory (MB) Mesos accepts for a container.
pub const MIN_MEM_MB: f64 = 32.0;
/// `--default-container-cpu-limit` default.
pub const DEFAULT_CPUS: f64 = 0.25;
/// `--default-container-mem-limit` default (MB).
pub const DEFAULT_MEM_MB: f64 = 64.0;

/// Limits given to containers that state none.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ContainerDefaults {
    /// Cpus (`--default-container-cpu-limit`).
    pub cpus: f64,
    /// Memory in MB (`--default-container-mem-limit`).
    pub mem_mb: f64,
}

impl Default for ContainerDefaults {
    fn default() -> Self {
        ContainerDefaults {
            cpus: DEFAULT_CPUS,
            mem_mb: DEFAULT_MEM_MB,
        }
    }
}

/// What a pod asks Mesos for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PodLimits {
    /// Cpus.
    pub cpus: f64,
    /// Memory in MB.
    pub mem_mb: f64,
}

/// A container's resources could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {source}")]
pub struct LimitError {
    /// The offending field, e.g. `spec.containers[1].resources.limits.memory`.
    pub field: String,
    /// What was wrong with the quantity.
    #[source]
    pub source: QuantityError,
}

/// Writes default and minimum limits into every container of `spec` and
/// returns what the pod asks Mesos for.
pub fn apply(spec: &mut PodSpec, defaults: &ContainerDefaults) -> Result<PodLimits, LimitError> {
    let mut sum = PodLimits {
        cpus: 0.0,
        mem_mb: 0.0,
    };
    for (i, c) in spec.containers.iter_mut().enumerate() {
        let l = apply_container(c, defaults, &format!("spec.containers[{i}]"))?;
        sum.cpus += l.cpus;
        sum.mem_mb += l.mem_mb;
    }
    for (i, c) in spec.init_containers.iter_mut().flatten().enumerate() {
        let l = apply_container(c, defaults, &format!("spec.initContainers[{i}]"))?;
        sum.cpus = sum.cpus.max(l.cpus);
        sum.mem_mb = sum.mem_mb.max(l.mem_mb);
    }
    Ok(PodLimits {
        cpus: crate::resources::round_scalar(sum.cpus),
        mem_mb: crate::resources::round_scalar(sum.mem_mb),
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Cpu,
    Memory,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Cpu => "cpu",
            Kind::Memory => "memory",
        }
    }
    fn read(self, q: &K8sQuantity) -> Result<f64, QuantityError> {
        let q = Quantity::from_k8s(q)?;
        Ok(match self {
            Kind::Cpu => q.cpus(),
            Kind::Memory => q.megabytes(),
        })
    }
    fn min(self) -> f64 {
        match self {
            Kind::Cpu => MIN_CPUS,
            Kind::Memory => MIN_MEM_MB,
        }
    }
    fn default(self, d: &ContainerDefaults) -> f64 {
        match self {
            Kind::Cpu => d.cpus,
            Kind::Memory => d.mem_mb,
        }
    }
    fn format(self, v: f64) -> K8sQuantity {
        K8sQuantity(match self {
            Kind::Cpu => format!("{}m", (v * 1000.0).round() as i64),
            Kind::Memory => format_mb(v),
        })
    }
}

fn format_mb(mb: f64) -> String {
    if (mb - mb.round()).abs() < 1e-9 {
        format!("{}Mi", mb.round() as i64)
    } else {
        format!("{}", (mb * 1_048_576.0).ceil() as i64)
    }
}

fn apply_container(
    c: &mut Container,
    defaults: &ContainerDefaults,
    path: &str,
) -> Result<PodLimits, LimitError> {
    let res = c
        .resources
        .get_or_insert_with(ResourceRequirements::default);
    let cpus = settle(res, Kind::Cpu, defaults, path)?;
    let mem_mb = settle(res, Kind::Memory, defaults, path)?;
    Ok(PodLimits { cpus, mem_mb })
}

/// Settles one resource of one container; returns its limit.
fn settle(
    res: &mut ResourceRequirements,
    kind: Kind,
    defaults: &ContainerDefaults,
    path: &str,
) -> Result<f64, LimitError> {
    let read = |map: &Option<BTreeMap<String, K8sQuantity>>, which: &str| {
        map.as_ref()
            .and_then(|m| m.get(kind.key()))
            .map(|q| kind.read(q))
            .transpose()
            .map_err(|source| LimitError {
                field: format!("{path}.resources.{which}.{}", kind.key()),
                source,
            })
    };
    let req = read(&res.requests, "requests")?;
    let lim = read(&res.limits, "limits")?;
    let (req0, lim0) = (req, lim);
    let (req, lim) = match (req, lim) {
        (None, None) => (kind.default(defaults), kind.default(defaults)),
        (Some(r), None) => (r, r),
        (None, Some(l)) => (l, l),
        (Some(r), Some(l)) => (r, l),
    };
    let req = req.max(kind.min());
    let lim = lim.max(kind.min());
    if req0 != Some(req) {
        res.requests
            .get_or_insert_with(BTreeMap::new)
            .insert(kind.key().to_string(), kind.format(req));
    }
    if lim0 != Some(lim) {
        res.limits
            .get_or_insert_with(BTreeMap::new)
            .insert(kind.key().to_string(), kind.format(lim));
    }
    Ok(lim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let map = |kv: &[(&str, &str)]| {
            (!kv.is_empty()).then(|| {
                kv.iter()
                    .map(|(k, v)| (k.to_string(), K8sQuantity(v.to_string())))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: map(requests),
                limits: map(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn spec(containers: Vec<Container>) -> PodSpec {
        PodSpec {
            containers,
            ..Default::default()
        }
    }

    fn get(c: &Container, which: &str, key: &str) -> String {
        let r = c.resources.as_ref().unwrap();
        let m = if which == "limits" {
            &r.limits
        } else {
            &r.requests
        };
        m.as_ref().unwrap()[key].0.clone()
    }

    #[test]
    fn containers_without_limits_get_the_defaults() {
        let mut s = spec(vec![Container {
            name: "a".into(),
            ..Default::default()
        }]);
        let l = apply(&mut s, &ContainerDefaults::default()).unwrap();
        assert_eq!(
            l,
            PodLimits {
                cpus: 0.25,
                mem_mb: 64.0
            }
        );
        assert_eq!(get(&s.containers[0], "limits", "cpu"), "250m");
        assert_eq!(get(&s.containers[0], "limits", "memory"), "64Mi");
        assert_eq!(get(&s.containers[0], "requests", "cpu"), "250m");
        assert_eq!(get(&s.containers[0], "requests", "memory"), "64Mi");
    }

    #[test]
    fn custom_defaults_apply() {
        let mut s = spec(vec![container(&[], &[])]);
        let d = ContainerDefaults {
            cpus: 0.5,
            mem_mb: 100.0,
        };
        assert_eq!(
            apply(&mut s, &d).unwrap(),
            PodLimits {
                cpus: 0.5,
                mem_mb: 100.0
            }
        );
    }

    #[test]
    fn a_request_alone_becomes_the_limit_and_the_reverse() {
        let mut s = spec(vec![container(&[("cpu", "1")], &[("memory", "128Mi")])]);
        let l = apply(&mut s, &ContainerDefaults::default()).unwrap();
        assert_eq!(
            l,
            PodLimits {
                cpus: 1.0,
                mem_mb: 128.0
            }
        );
        assert_eq!(get(&s.containers[0], "limits", "cpu"), "1000m");
        assert_eq!(get(&s.containers[0], "requests", "memory"), "128Mi");
        // What the user wrote stays as written.
        assert_eq!(get(&s.containers[0], "requests", "cpu"), "1");
        assert_eq!(get(&s.containers[0], "limits", "memory"), "128Mi");
    }

    #[test]
    fn values_below_the_minimum_are_raised() {
        let mut s = spec(vec![container(
            &[("cpu", "1m")],
            &[("cpu", "5m"), ("memory", "4Mi")],
        )]);
        let l = apply(&mut s, &ContainerDefaults::default()).unwrap();
        assert_eq!(
            l,
            PodLimits {
                cpus: 0.01,
                mem_mb: 32.0
            }
        );
        assert_eq!(get(&s.containers[0], "requests", "cpu"), "10m");
        assert_eq!(get(&s.containers[0], "limits", "memory"), "32Mi");
    }

    #[test]
    fn pod_total_sums_containers_and_respects_init_containers() {
        let mut s = spec(vec![
            container(&[], &[("cpu", "500m"), ("memory", "100Mi")]),
            container(&[], &[("cpu", "250m"), ("memory", "50Mi")]),
        ]);
        s.init_containers = Some(vec![container(&[], &[("cpu", "2"), ("memory", "10Mi")])]);
        let l = apply(&mut s, &ContainerDefaults::default()).unwrap();
        assert_eq!(
            l,
            PodLimits {
                cpus: 2.0,
                mem_mb: 150.0
            }
        );
    }

    #[test]
    fn a_bad_quantity_names_the_field() {
        let mut s = spec(vec![
            container(&[], &[]),
            container(&[], &[("memory", "64MB")]),
        ]);
        let e = apply(&mut s, &ContainerDefaults::default()).unwrap_err();
        assert_eq!(e.field, "spec.containers[1].resources.limits.memory");
        assert!(e.to_string().contains("64MB"), "{e}");
    }
}
