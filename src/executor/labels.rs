//! The Docker labels km's executor puts on every container it creates.
//!
//! They are how a restarted executor finds its containers again (pod UID,
//! task id, container name) and how orphans are recognised. The
//! `io.kubernetes.*` keys are the ones the kubelet's Docker integration
//! used, so tools that read them (`docker ps` filters, log shippers) work
//! unchanged.

/// Pod name.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// Pod namespace.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Pod UID.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// Container name within the pod (`POD` for the infra container).
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// How many times this container was restarted before this instance.
pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
/// `podsandbox` for the infra container, `container` otherwise.
pub const CONTAINER_TYPE: &str = "io.kubernetes.docker.type";
/// `init` or `app` for containers (absent on the infra container).
pub const CONTAINER_KIND: &str = "k8s.mesosphere.io/containerKind";
/// The Mesos task id of the pod.
pub const TASK_ID: &str = "k8s.mesosphere.io/taskId";
/// The Mesos executor id that created the container.
pub const EXECUTOR_ID: &str = "k8s.mesosphere.io/executorId";
/// The Mesos framework id.
pub const FRAMEWORK_ID: &str = "k8s.mesosphere.io/frameworkId";
/// The Mesos agent id.
pub const AGENT_ID: &str = "k8s.mesosphere.io/agentId";

/// [`CONTAINER_TYPE`] of the infra container.
pub const TYPE_SANDBOX: &str = "podsandbox";
/// [`CONTAINER_TYPE`] of a pod's own containers.
pub const TYPE_CONTAINER: &str = "container";
/// [`CONTAINER_NAME`] of the infra container.
pub const INFRA_NAME: &str = "POD";
