//! Wire types generated at build time from `proto/*.proto` (package `mesos.v1`).

#![allow(missing_docs, clippy::all, clippy::pedantic)]

pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/mesos.v1.rs"));

    pub mod scheduler {
        include!(concat!(env!("OUT_DIR"), "/mesos.v1.scheduler.rs"));
    }

    pub mod executor {
        include!(concat!(env!("OUT_DIR"), "/mesos.v1.executor.rs"));
    }
}

/// The encoded `FileDescriptorSet` of every Mesos type km knows.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mesos_descriptor.bin"));
