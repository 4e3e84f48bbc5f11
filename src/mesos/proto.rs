//! Wire types generated at build time from `proto/*.proto`. Modules mirror the
//! protobuf packages (`mesos.v1`, `km.devcluster.v1`) so generated paths resolve;
//! `v1` is re-exported for short paths.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

pub mod mesos {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/mesos.v1.rs"));

        pub mod scheduler {
            include!(concat!(env!("OUT_DIR"), "/mesos.v1.scheduler.rs"));
        }

        pub mod executor {
            include!(concat!(env!("OUT_DIR"), "/mesos.v1.executor.rs"));
        }
    }
}

pub mod km {
    pub mod devcluster {
        /// km's private dev-master ↔ dev-agent protocol (`proto/devcluster.proto`).
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/km.devcluster.v1.rs"));
        }
    }
}

pub use km::devcluster::v1 as devcluster;
pub use mesos::v1;

/// The encoded `FileDescriptorSet` of every message km knows.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mesos_descriptor.bin"));
