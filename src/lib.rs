//! km: Kubernetes on Apache Mesos.
//!
//! The shared library every role stands on: Mesos wire types ([`mesos`]),
//! resource arithmetic ([`resources`]), pod-to-task translation ([`podtask`])
//! and offer matching ([`offers`]). Roles live beside it and depend on it,
//! never on each other.

pub mod mesos;
