//! Every `k8s.mesosphere.io/*` annotation and label km reads or writes, in one place.
//!
//! | key | on | kind | written by | meaning |
//! | --- | --- | --- | --- | --- |
//! | `k8s.mesosphere.io/bindingHost` | pod | annotation | scheduler | agent hostname the pod was launched on; its presence marks the pod as launched |
//! | `k8s.mesosphere.io/taskId` | pod | annotation | scheduler | the Mesos task id (`pod.<uuid>`) |
//! | `k8s.mesosphere.io/slaveId` | pod | annotation | scheduler | the Mesos agent id (for reconciliation and recovery) |
//! | `k8s.mesosphere.io/offerId` | pod | annotation | scheduler | the offer the task was launched with (first one when several were combined) |
//! | `k8s.mesosphere.io/executorId` | pod, node | annotation | scheduler, executor | the km executor's id on that agent |
//! | `k8s.mesosphere.io/executorResources` | pod, node | annotation | scheduler, executor | the executor's resources: comma-separated standard base64 of protobuf `mesos.v1.Resource`s, so an identical `ExecutorInfo` can be rebuilt after a restart |
//! | `k8s.mesosphere.io/port_<PROTO>_<containerPort>` | pod | annotation | scheduler | host port chosen for that container port, e.g. `port_TCP_8080: "31000"` |
//! | `k8s.mesosphere.io/portName_<PROTO>_<name>` | pod | annotation | scheduler | host port chosen for a named container port |
//! | `k8s.mesosphere.io/staticPodFilename` | static pod | annotation | scheduler | the manifest file the static pod came from |
//! | `k8s.mesosphere.io/roles` | pod | annotation | user | Mesos roles whose resources the pod may use, in preference order, e.g. `public,*` |
//! | `k8s.mesosphere.io/portMapping` | pod | label | user | host-port strategy: `fixed` (only ports with a hostPort use one) or `wildcard` (every container port gets one) |
//! | `k8s.mesosphere.io/attribute-<name>` | node | label | scheduler, executor | one per Mesos agent attribute; match them with `nodeSelector` |
//! | `k8s.mesosphere.io/containerPort_<PROTO>_<hostIP>_<hostPort>` | endpoints | annotation | controller-manager | the container port behind a hostIP:hostPort endpoint |
//!
//! Other keys km reads: `scheduler.alpha.kubernetes.io/name` (legacy scheduler
//! name annotation), `kubernetes.io/hostname` (node label) and
//! `kubernetes.io/config.mirror` (mirror pods of static pods).

/// Prefix of every km key.
pub const PREFIX: &str = "k8s.mesosphere.io/";

/// Agent hostname the pod was launched on; marks the pod as launched.
pub const BINDING_HOST: &str = "k8s.mesosphere.io/bindingHost";
/// Mesos task id of the pod.
pub const TASK_ID: &str = "k8s.mesosphere.io/taskId";
/// Mesos agent id the task runs on.
pub const SLAVE_ID: &str = "k8s.mesosphere.io/slaveId";
/// Offer id the task was launched with.
pub const OFFER_ID: &str = "k8s.mesosphere.io/offerId";
/// km executor id on the agent.
pub const EXECUTOR_ID: &str = "k8s.mesosphere.io/executorId";
/// The executor's resources, base64 protobuf, comma separated.
pub const EXECUTOR_RESOURCES: &str = "k8s.mesosphere.io/executorResources";
/// Manifest file name of a static pod.
pub const STATIC_POD_FILENAME: &str = "k8s.mesosphere.io/staticPodFilename";
/// User-supplied Mesos roles of a pod (annotation).
pub const ROLES: &str = "k8s.mesosphere.io/roles";
/// User-supplied host-port strategy of a pod (label).
pub const PORT_MAPPING: &str = "k8s.mesosphere.io/portMapping";
/// Prefix of the node labels that mirror Mesos agent attributes.
pub const ATTRIBUTE_LABEL_PREFIX: &str = "k8s.mesosphere.io/attribute-";

/// Legacy annotation naming a pod's scheduler.
pub const SCHEDULER_NAME: &str = "scheduler.alpha.kubernetes.io/name";
/// Node label holding the node's hostname.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Annotation the kubelet puts on mirror pods.
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";

/// `k8s.mesosphere.io/port_<PROTO>_<containerPort>`.
pub fn port_key(protocol: &str, container_port: i32) -> String {
    format!("{PREFIX}port_{protocol}_{container_port}")
}

/// `k8s.mesosphere.io/portName_<PROTO>_<name>`.
pub fn port_name_key(protocol: &str, name: &str) -> String {
    format!("{PREFIX}portName_{protocol}_{name}")
}

/// `k8s.mesosphere.io/containerPort_<PROTO>_<hostIP>_<hostPort>`.
pub fn container_port_key(protocol: &str, host_ip: &str, host_port: u16) -> String {
    format!("{PREFIX}containerPort_{protocol}_{host_ip}_{host_port}")
}

/// `k8s.mesosphere.io/attribute-<name>`.
pub fn attribute_label(name: &str) -> String {
    format!("{ATTRIBUTE_LABEL_PREFIX}{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_original_spelling() {
        assert_eq!(port_key("TCP", 8080), "k8s.mesosphere.io/port_TCP_8080");
        assert_eq!(
            port_name_key("UDP", "dns"),
            "k8s.mesosphere.io/portName_UDP_dns"
        );
        assert_eq!(
            container_port_key("TCP", "10.0.0.1", 31000),
            "k8s.mesosphere.io/containerPort_TCP_10.0.0.1_31000"
        );
        assert_eq!(attribute_label("rack"), "k8s.mesosphere.io/attribute-rack");
        for key in [
            BINDING_HOST,
            TASK_ID,
            SLAVE_ID,
            OFFER_ID,
            EXECUTOR_ID,
            ROLES,
            PORT_MAPPING,
        ] {
            assert!(key.starts_with(PREFIX), "{key}");
        }
    }
}
