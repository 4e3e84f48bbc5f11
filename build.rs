//! Compiles km's own Mesos v1 `.proto` files with a pure-Rust protobuf compiler
//! (protox), so a fresh machine needs no `protoc`, and records the git commit
//! for `km version`.

use std::path::PathBuf;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/mesos.proto",
        "proto/scheduler.proto",
        "proto/executor.proto",
        "proto/devcluster.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // The descriptor set drives the Mesos JSON codec at run time.
    std::fs::write(
        out.join("mesos_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    // Ordered maps keep encodings deterministic (executor identity hashes them).
    config.btree_map(["."]);
    config.compile_fds(fds)?;

    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=KM_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    // Read by scripts/km-link, the linker driver .cargo/config.toml names.
    println!("cargo:rerun-if-changed=layout/hot-functions.txt.gz");
    println!("cargo:rerun-if-changed=scripts/km-link");
    Ok(())
}
