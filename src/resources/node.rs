//! A Kubernetes Node's capacity and allocatable from a Mesos agent's resources
//! (shared by the executor, which keeps its own Node, and the nodes controller,
//! which keeps Nodes for agents without one).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::Resources;
use crate::mesos::proto::v1;

/// Pods a node admits (the kubelet's default `--max-pods`).
pub const MAX_PODS: &str = "110";

/// Thousandths of the `SCALAR` resources called `name`, over all roles.
fn millis(resources: &[v1::Resource], name: &str) -> i128 {
    let v = Resources::from_vec(resources.to_vec()).scalar(name);
    (v * 1000.0).round() as i128
}

/// Cores in thousandths as a canonical decimal quantity (`4`, `1500m`).
pub fn cpu_quantity(millicores: i128) -> Quantity {
    Quantity(crate::resources::Quantity::from_nanos(millicores.max(0) * 1_000_000).to_string())
}

/// Megabytes in thousandths as bytes, in Kubernetes' canonical binary form:
/// the largest of `Ei Pi Ti Gi Mi Ki` that shows a whole number, else plain
/// bytes (`1000Mi`, `1Gi`, `1536`).
pub fn bytes_quantity(milli_mb: i128) -> Quantity {
    let bytes = milli_mb.max(0) * (1 << 20) / 1000;
    const SUFFIXES: [(&str, u32); 6] = [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ];
    if bytes >= 1024 {
        for (suffix, shift) in SUFFIXES {
            if bytes % (1i128 << shift) == 0 {
                return Quantity(format!("{}{suffix}", bytes >> shift));
            }
        }
    }
    Quantity(bytes.to_string())
}

/// capacity: cpu = Σ agent scalar `cpus` (all roles), memory = Σ `mem` MB
/// as bytes (`<n>Mi`), pods = `110`, ephemeral-storage from `disk` if
/// present; allocatable = capacity minus the executor's cpus/mem (never
/// below zero). Quantities in canonical k8s form.
pub fn capacity(
    agent: &[v1::Resource],
    executor: &[v1::Resource],
) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let cpus = millis(agent, "cpus");
    let mem = millis(agent, "mem");
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_string(), cpu_quantity(cpus));
    capacity.insert("memory".to_string(), bytes_quantity(mem));
    capacity.insert("pods".to_string(), Quantity(MAX_PODS.to_string()));
    if agent.iter().any(|r| r.name == "disk") {
        capacity.insert(
            "ephemeral-storage".to_string(),
            bytes_quantity(millis(agent, "disk")),
        );
    }
    let mut allocatable = capacity.clone();
    allocatable.insert(
        "cpu".to_string(),
        cpu_quantity(cpus - millis(executor, "cpus")),
    );
    allocatable.insert(
        "memory".to_string(),
        bytes_quantity(mem - millis(executor, "mem")),
    );
    (capacity, allocatable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(bytes_quantity(1000 * 1000), q("1000Mi"));
        assert_eq!(bytes_quantity(1), q("1048")); // 0.001 MB, rounded down to bytes
        assert_eq!(bytes_quantity(1_048_576_000), q("1Ti"));
        assert_eq!(cpu_quantity(2_000_000), q("2k"));
        assert_eq!(cpu_quantity(1500), q("1500m"));
    }
}
