//! The Mesos-facing controllers: endpoints and nodes.
