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

#[derive(clap::Parser)]
struct MasterCli {
    #[command(flatten)]
    args: km::devcluster::master::Args,
}

#[derive(clap::Parser)]
struct AgentCli {
    #[command(flatten)]
    args: km::devcluster::agent::Args,
}

/// `km dev-master` flags as an operator would write them.
pub fn master_args(flags: &[&str]) -> km::devcluster::master::Args {
    let argv = std::iter::once("km").chain(flags.iter().copied());
    <MasterCli as clap::Parser>::parse_from(argv).args
}

/// `km dev-agent` flags as an operator would write them.
pub fn agent_args<S: AsRef<std::ffi::OsStr>>(flags: &[S]) -> km::devcluster::agent::Args {
    let argv = std::iter::once(std::ffi::OsStr::new("km")).chain(flags.iter().map(AsRef::as_ref));
    <AgentCli as clap::Parser>::parse_from(argv).args
}

#[derive(clap::Parser)]
struct ApiCli {
    #[command(flatten)]
    args: km::apiserver::Args,
}

/// An in-process km apiserver (plain HTTP on loopback, store under `dir`)
/// running until `stop`: its kubeconfig (written to `dir/kubeconfig`) and a client.
pub async fn apiserver(
    dir: &std::path::Path,
    stop: tokio_util::sync::CancellationToken,
) -> (PathBuf, kube::Client) {
    let args = <ApiCli as clap::Parser>::parse_from([
        "km",
        "--data-dir",
        dir.join("api").to_str().unwrap(),
        "--no-tls",
        "--insecure-port",
        "0",
        // Room for the benchmarks' 1,000 Services (a /24 holds 254).
        "--service-cluster-ip-range",
        "10.96.0.0/16",
    ])
    .args;
    let api = km::apiserver::start(args, stop).await.unwrap();
    let url = format!("http://{}", api.insecure_addr.unwrap());
    tokio::spawn(api.wait());
    let kubeconfig = dir.join("kubeconfig");
    km::apiserver::kubeconfig::write_kubeconfig(&kubeconfig, &url, None, None).unwrap();
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    (kubeconfig, client)
}
