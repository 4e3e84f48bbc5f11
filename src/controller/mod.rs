//! `km controller-manager`: controllers that keep Kubernetes true to what
//! Mesos runs.
//!
//! On by default (`--controllers=*`): [`endpoints`] (Endpoints and
//! EndpointSlices at hostIP:hostPort, since km pods share their host's
//! address) and [`nodes`] (Nodes mirror the Mesos agents; a lost agent's
//! Node goes NotReady and, after `--pod-eviction-timeout`, its pods fail so
//! their controllers replace them). For clusters without the upstream
//! kube-controller-manager (`km local`), the workload controllers are named
//! explicitly: [`replicaset`], [`deployment`], [`garbagecollector`] and
//! [`namespace`]. With `--leader-elect` (the default) only the replica
//! holding the Lease acts.

pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod garbagecollector;
pub mod metrics;
pub mod namespace;
pub mod nodes;
pub mod replicaset;
pub mod selection;
pub mod workload;
pub mod workqueue;

mod run;

pub use run::{Args, run};

use std::sync::Arc;
use std::time::Duration;

/// Who signs the controllers' Events and writes.
pub const COMPONENT: &str = "km-controller-manager";

/// What every controller is given.
#[derive(Clone)]
pub struct Context {
    /// The Kubernetes API.
    pub client: kube::Client,
    /// Events about the objects the controllers handle.
    pub events: events::Recorder,
    /// Settings from the command line.
    pub config: Arc<Config>,
    /// What `/metrics` shows.
    pub metrics: metrics::Metrics,
}

/// Controller settings from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// Endpoints at hostIP:hostPort (true) or podIP:containerPort (false).
    pub host_port_endpoints: bool,
    /// Objects each controller reconciles at once.
    pub concurrent_syncs: u16,
    /// The Mesos master the nodes controller reads.
    pub mesos_master: crate::mesos::detector::MasterSpec,
    /// How often the nodes controller reads the master's state.
    pub node_monitor_period: Duration,
    /// A Ready heartbeat older than this is stale (no executor keeps the Node).
    pub node_monitor_grace_period: Duration,
    /// How long a lost agent's pods are left before they are marked Failed.
    pub pod_eviction_timeout: Duration,
}
