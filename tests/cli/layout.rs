//! scripts/km-link, the linker driver of optimised builds: it links a second
//! time with the functions layout/hot-functions.txt.gz names placed first, in
//! its order, and keeps the plain link when the linker cannot order.
//!
//! A small C program stands in for km (a release build takes too long for the
//! test suite); its output path has the shape of cargo's for km's release
//! binary, which is what km-link acts on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAM: &str = r#"
int cold_a(int x) { return x * 3 + 1; }
int hot_b(int x) { return x * 5 + 2; }
int hot_c(int x) { return x * 7 + 3; }
int main(int argc, char **argv) { (void)argv; return (cold_a(argc) + hot_b(argc) + hot_c(argc)) & 1; }
"#;

/// A scratch tree: `prog.c`, a gzipped list, and `release/deps/` for the output.
fn scratch(list: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("prog.c"), PROGRAM).expect("write prog.c");
    let gz = dir.path().join("hot.txt.gz");
    let mut gzip = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&gz).expect("create list"))
        .spawn()
        .expect("gzip runs");
    gzip.stdin
        .take()
        .expect("stdin")
        .write_all(list.as_bytes())
        .expect("write list");
    assert!(gzip.wait().expect("gzip").success());
    std::fs::create_dir_all(dir.path().join("release/deps")).expect("deps dir");
    let out = dir.path().join("release/deps/km-0123456789abcdef");
    (dir, gz, out)
}

/// Runs km-link as rustc would, with `extra` linker arguments.
fn link(dir: &Path, list: &Path, out: &Path, extra: &[String]) -> std::process::Output {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/km-link"))
        .env("KM_LAYOUT", list)
        .current_dir(dir)
        .args(["-O1", "-ffunction-sections", "prog.c", "-o"])
        .arg(out)
        .args(extra)
        .output()
        .expect("km-link runs")
}

/// Addresses of the program's functions, from `nm`.
fn address(bin: &Path, name: &str) -> u64 {
    let nm = Command::new("nm").arg(bin).output().expect("nm runs");
    String::from_utf8_lossy(&nm.stdout)
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[2] == name).then(|| u64::from_str_radix(f[0], 16).expect("hex"))
        })
        .unwrap_or_else(|| panic!("{name} not in {}", bin.display()))
}

/// The lld that rustc links with on this target (its `gcc-ld` shim directory).
fn rust_lld_args() -> Vec<String> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc runs");
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    let gcc_ld = Path::new(&sysroot).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld");
    assert!(gcc_ld.is_dir(), "no rust-lld at {}", gcc_ld.display());
    vec![format!("-B{}", gcc_ld.display()), "-fuse-ld=lld".into()]
}

#[test]
fn km_link_places_the_listed_functions_first_in_the_lists_order() {
    let (dir, list, out) = scratch("# a comment line\nhot_c\nhot_b\nnot_in_this_binary\n");
    let o = link(dir.path(), &list, &out, &rust_lld_args());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b, c) = (
        address(&out, "cold_a"),
        address(&out, "hot_b"),
        address(&out, "hot_c"),
    );
    assert!(c < b && b < a, "hot_c {c:#x}, hot_b {b:#x}, cold_a {a:#x}");
    assert_eq!(Command::new(&out).status().expect("runs").code(), Some(1));
}

#[test]
fn km_link_keeps_the_plain_link_when_the_linker_cannot_order() {
    // GNU ld has no --symbol-ordering-file: the first link must stand.
    let (dir, list, out) = scratch("hot_c\nhot_b\n");
    let o = link(dir.path(), &list, &out, &["-fuse-ld=bfd".into()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("layout was not applied"), "{err}");
    assert_eq!(Command::new(&out).status().expect("runs").code(), Some(1));
}

#[test]
fn km_link_leaves_other_outputs_alone() {
    let (dir, list, _) = scratch("hot_c\n");
    let out = dir.path().join("debug-km");
    let o = link(dir.path(), &list, &out, &rust_lld_args());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!Path::new(&format!("{}.order", out.display())).exists());
    assert!(address(&out, "cold_a") < address(&out, "hot_c"));
}
