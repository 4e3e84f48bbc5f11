//! The Mesos v1 protocol: generated wire types and the two encodings Mesos speaks.

pub mod detector;
pub mod encoding;
pub mod executor;
pub mod json;
pub mod proto;
pub mod recordio;
pub mod scheduler;
pub mod stream;
pub mod validate;
