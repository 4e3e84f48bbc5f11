//! km's development stand-ins for mesos-master and mesos-agent: `km
//! dev-master` and `km dev-agent`. They speak the Mesos v1 scheduler and
//! executor APIs so km's framework and executor (and other Mesos clients)
//! run on one machine; between themselves they use km's own agent protocol.

pub mod agent;
pub mod master;
