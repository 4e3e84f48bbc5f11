//! Integration tests of `km controller-manager` and `km proxy` against an
//! in-process km apiserver (pods, services and agents written straight into
//! the API and the dev-master). The end-to-end tests with the scheduler and
//! executors on Docker are in tests/mesos.

#[path = "../mesos/support.rs"]
mod support;

mod controllers;
mod proxy;
mod workloads;
