//! `km apiserver`: a Kubernetes-compatible API server for single machines,
//! development and tests, that unmodified kubectl and kube-rs use.
//!
//! Layers, outside in: [`server`] (routes, discovery, OpenAPI, health,
//! metrics) → [`rest`] (verbs with upstream semantics, [`watching`] for
//! watches) → [`kinds`] and [`objects`] (decoding, defaulting, validation,
//! server-owned metadata) → [`store`] (the [`store::Storage`] trait and its
//! embedded redb implementation).

pub mod allocator;
pub mod auth;
pub mod discovery;
pub mod files;
pub mod kinds;
pub mod kubeconfig;
pub mod metrics;
pub mod objects;
pub mod openapi;
pub mod podlog;
pub mod resources;
pub mod rest;
pub mod selector;
pub mod server;
pub mod status;
pub mod store;
pub mod strategic;
pub mod table;
pub mod tls;
pub mod validation;
pub mod watching;

mod run;

pub use run::{Args, Running, run, start};
