//! Shared helpers for the Mesos integration tests.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The km binary under test.
pub fn km() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_km"))
}
