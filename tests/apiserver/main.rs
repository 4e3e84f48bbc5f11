//! End-to-end tests of `km apiserver`: real processes, real kubectl,
//! kube-rs's runtime, crashes and restarts.

mod kube_rs;
mod kubectl;
mod semantics;
mod support;
