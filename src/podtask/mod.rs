//! Pod → Mesos task: everything km derives from a pod before and when it
//! launches it.
//!
//! [`PodTask::from_pod`] reads a pod once: default and minimum container
//! limits written in ([`limits`]), its Mesos roles ([`roles`]), the container
//! ports that need host ports ([`hostport`]) and its placement constraints.
//! After the matcher (`crate::offers`) picks an agent, [`launch::build`]
//! makes the `TaskInfo` and the annotated pod that travels in its `data`.

pub mod annotations;
pub mod executor;
pub mod hostport;
pub mod ids;
pub mod launch;
pub mod limits;
pub mod roles;
mod task;

pub use executor::{ExecutorConfig, ExecutorPrototype};
pub use hostport::{HostPort, PortMapping, PortRequest};
pub use ids::{ExecutorId, PodKey, TaskId};
pub use limits::{ContainerDefaults, PodLimits};
pub use task::{PodTask, PodTaskConfig, PodTaskError};
