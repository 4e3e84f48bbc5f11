//! Mesos v1 APIs end to end: km's clients, dev-master and dev-agent, ZooKeeper
//! master detection, and pymesos as an independent client. One test binary.

mod agent;
mod executor;
mod km_cluster;
mod km_executor;
mod km_scheduler;
mod km_scheduler_ops;
mod pymesos;
mod scheduler;
mod support;
mod zk;
