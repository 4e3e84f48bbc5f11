//! `km executor`: the Mesos executor that runs pods on Docker the way a
//! kubelet does (seed 000, "Scheduling" phase 2).
//!
//! The Mesos agent starts `km executor`. It binds each launched pod to its
//! node, runs the pod's containers on Docker inside a per-pod cgroup under
//! the executor's own, reports task status to Mesos and pod status to
//! Kubernetes, keeps the Node and its Lease, and serves container logs on a
//! kubelet-compatible endpoint.

pub mod backoff;
pub mod cgroup;
pub mod kubelet_api;
pub mod labels;
pub mod node;
pub mod pause;
pub mod pod;
pub mod probe;
pub mod runtime;
pub mod spec;
pub mod status;
pub mod supervise;
pub mod tasks;
pub mod volumes;

mod run;

pub use run::{Args, run};
