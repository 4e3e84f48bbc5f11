//! km: Kubernetes on Apache Mesos.
//!
//! The shared library every role stands on: Mesos wire types ([`mesos`]),
//! resource arithmetic ([`resources`]), pod-to-task translation ([`podtask`])
//! and offer matching ([`offers`]). Roles live beside it ([`fit`], ...) and
//! depend on it, never on each other.

pub mod apiserver;
pub mod clidoc;
pub mod controller;
pub mod devcluster;
pub mod dispatch;
pub mod election;
pub mod executor;
pub mod fit;
pub mod flags;
pub mod goquote;
pub mod hostaddr;
pub mod insecure_tls;
pub mod kubeclient;
pub mod local;
pub mod logging;
pub mod manifest;
pub mod mesos;
pub mod offers;
pub mod podtask;
pub mod proxy;
pub mod resources;
pub mod scheduler;
pub mod shutdown;
pub mod version;
