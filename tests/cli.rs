//! The `km` binary as an operator uses it: dispatch, help, errors, `km fit`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "cli/deb.rs"]
mod deb;
#[path = "cli/layout.rs"]
mod layout;

fn km() -> Command {
    Command::new(env!("CARGO_BIN_EXE_km"))
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let o = cmd.output().expect("km runs");
    let (out, err) = text(&o);
    (o.status.code().unwrap_or(-1), out, err)
}

#[test]
fn help_lists_the_roles_one_line_each() {
    let (code, out, _) = run(km().arg("--help"));
    assert_eq!(code, 0);
    assert!(out.contains("Roles:"), "{out}");
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("fit ")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("version ")),
        "{out}"
    );
    let (code, out, _) = run(km().args(["fit", "--help"]));
    assert_eq!(code, 0);
    assert!(out.contains("--default-container-cpu-limit"), "{out}");
    assert!(out.contains("--offers"), "{out}");
}

#[test]
fn version_names_the_commit() {
    let (code, out, _) = run(km().arg("version"));
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("km {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
}

#[test]
fn unknown_role_names_the_known_ones() {
    let (code, _, err) = run(km().arg("schedule"));
    assert_eq!(code, 2);
    assert!(err.contains("unknown role schedule"), "{err}");
    assert!(
        err.contains(
            "known roles: fit, dev-master, dev-agent, apiserver, scheduler, executor, controller-manager, proxy, local, version, completion"
        ),
        "{err}"
    );
}

#[test]
fn unknown_flag_names_the_known_ones() {
    let (code, _, err) = run(km().args(["fit", "--pods", "x"]));
    assert_eq!(code, 2);
    assert!(err.contains("--pods"), "{err}");
    assert!(
        err.contains("Known flags of 'km fit'") && err.contains("--pod,"),
        "{err}"
    );
}

#[test]
fn argv0_selects_the_role() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("km-fit");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_km"), &link).unwrap();
    let (code, out, _) = run(Command::new(&link).arg("--help"));
    assert_eq!(code, 0);
    assert!(out.contains("--offers"), "{out}");
    let link = dir.path().join("km-version");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_km"), &link).unwrap();
    let (code, out, _) = run(&mut Command::new(&link));
    assert_eq!(code, 0);
    assert!(out.starts_with("km "), "{out}");
}

/// `km fit --pod POD --offers OFFERS`.
fn fit(pod: &Path, offers: &Path) -> Command {
    let mut c = km();
    c.arg("fit")
        .arg("--pod")
        .arg(pod)
        .arg("--offers")
        .arg(offers);
    c
}

fn fit_json(pod: &Path, offers: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let (code, out, err) = run(fit(pod, offers).args(["-o", "json"]).args(extra));
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}\n{err}"));
    (code, v)
}

#[test]
fn fit_picks_the_offer_that_fits_and_explains_the_others() {
    let (code, v) = fit_json(&data("web-pod.yaml"), &data("offers-event.json"), &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["fits"], true);
    assert_eq!(v["offer_id"], "O-good");
    assert_eq!(v["hostname"], "node-3");
    // 1 cpu + the sidecar's default 0.25; the new executor is charged separately.
    let task = &v["task"];
    assert_eq!(task["name"], "web.shop.pod");
    assert_eq!(task["agent_id"]["value"], "S3");
    let res = task["resources"].as_array().unwrap();
    let cpus = res.iter().find(|r| r["name"] == "cpus").unwrap();
    assert_eq!(cpus["scalar"]["value"], 1.25);
    let mem = res.iter().find(|r| r["name"] == "mem").unwrap();
    assert_eq!(mem["scalar"]["value"], 320.0);
    let ports = res.iter().find(|r| r["name"] == "ports").unwrap();
    assert_eq!(ports["ranges"]["range"][0]["begin"], 31000);
    assert_eq!(
        v["executor"]["executor_id"]["value"],
        task["executor"]["executor_id"]["value"]
    );
    assert_eq!(
        v["host_ports"],
        serde_json::json!([{"container": "nginx", "container_port": 80, "protocol": "TCP", "host_port": 31000}])
    );
    let ann = &v["pod"]["metadata"]["annotations"];
    assert_eq!(ann["k8s.mesosphere.io/bindingHost"], "node-3");
    assert_eq!(ann["k8s.mesosphere.io/port_TCP_80"], "31000");
    assert_eq!(ann["k8s.mesosphere.io/portName_TCP_http"], "31000");
    assert_eq!(
        v["pod"]["spec"]["containers"][1]["resources"]["limits"]["cpu"],
        "250m"
    );
    let reasons = v["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0]["offer_id"], "O-small");
    assert!(
        reasons[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("insufficient cpus"),
        "{reasons:?}"
    );
    assert_eq!(reasons[1]["offer_id"], "O-rack-a");
    assert_eq!(
        reasons[1]["reason"],
        "nodeSelector k8s.mesosphere.io/attribute-rack=b"
    );
}

#[test]
fn fit_says_why_nothing_fits() {
    let (code, v) = fit_json(
        &data("web-pod.yaml"),
        &data("offers-event.json"),
        &["--default-container-cpu-limit", "4"],
    );
    assert_eq!(code, 1);
    assert_eq!(v["fits"], false);
    assert_eq!(v["task"], serde_json::Value::Null);
    assert_eq!(
        v["summary"],
        "2 offers: insufficient cpus for the pod and a new km executor (want 5.0 + 0.25, largest 4.0); \
         1 offer: nodeSelector k8s.mesosphere.io/attribute-rack=b"
    );
    let (code, out, _) = run(fit(&data("web-pod.yaml"), &data("offers-event.json"))
        .args(["--default-container-cpu-limit", "4"]));
    assert_eq!(code, 1);
    assert!(
        out.contains("offer O-rack-a on node-2 (agent S2): nodeSelector"),
        "{out}"
    );
    assert!(out.contains("does not fit: 2 offers"), "{out}");
}

#[test]
fn fit_rejects_bad_input_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let pod = dir.path().join("pod.yaml");
    std::fs::write(&pod, "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    resources: {limits: {memory: 64MB}}\n").unwrap();
    let (code, _, err) = run(&mut fit(&pod, &data("offers-event.json")));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("pod.yaml") && err.contains("spec.containers[0].resources.limits.memory"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let offers = dir.path().join("offers.json");
    std::fs::write(&offers, r#"[{"id":{"value":"O"},"framework_id":{"value":"F"},"agent_id":{"value":"S"},"hostname":"h","resources":[{"name":"cpus","type":"SCALER","scalar":{"value":1}}]}]"#).unwrap();
    let (code, _, err) = run(&mut fit(&data("web-pod.yaml"), &offers));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("offers.json") && err.contains("[0].resources[0].type"),
        "{err}"
    );

    std::fs::write(&offers, r#"{"id":{"value":"O"},"hostname":"h"}"#).unwrap();
    let (code, _, err) = run(&mut fit(&data("web-pod.yaml"), &offers));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("agent_id"), "{err}");

    let (code, _, err) = run(fit(&data("web-pod.yaml"), &data("offers-event.json"))
        .args(["--mesos-default-pod-roles", "gpu"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--mesos-default-pod-roles") && err.contains("--mesos-framework-roles"),
        "{err}"
    );
}

#[test]
fn scheduler_refuses_bad_setups_naming_the_flag_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    // A static pod without limits: refused before anything is contacted.
    std::fs::write(
        dir.path().join("logger.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: logger}\nspec: {containers: [{name: c, image: busybox}]}\n",
    )
    .unwrap();
    let (code, _, err) = run(km().args([
        "scheduler",
        "--static-pods-config",
        dir.path().to_str().unwrap(),
    ]));
    assert_ne!(code, 0);
    assert!(err.contains("--static-pods-config"), "{err}");
    assert!(err.contains("logger.yaml"), "{err}");
    assert!(err.contains("resources.limits.cpu"), "{err}");

    let (code, _, err) = run(km().args(["scheduler", "--kubeconfig", "/nonexistent/kubeconfig"]));
    assert_ne!(code, 0);
    assert!(
        err.contains("--kubeconfig /nonexistent/kubeconfig"),
        "{err}"
    );

    let (code, _, err) = run(km().args([
        "scheduler",
        "--ha",
        "--ha-renew-deadline",
        "20s",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
    ]));
    assert_ne!(code, 0);
    assert!(err.contains("--ha-renew-deadline"), "{err}");
    assert!(err.contains("e.g. 2s, 10s, 15s"), "{err}");

    let (code, _, err) = run(km().args(["scheduler", "--mesos-master", "zk://"]));
    assert_ne!(code, 0);
    assert!(err.contains("--mesos-master zk://"), "{err}");
}

#[test]
fn km_local_names_the_port_in_use_and_its_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(km()
        .args(["local", "--data-dir"])
        .arg(dir.path())
        .args(["--master-port", &port]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("port {port} (--master-port) is not free")),
        "{err}"
    );
    assert!(err.contains("choose another with --master-port"), "{err}");
}

#[test]
fn km_local_refuses_a_data_dir_it_cannot_create() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let (code, _, err) = run(km().args(["local", "--data-dir"]).arg(file.join("state")));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--data-dir"), "{err}");
    assert!(err.contains("cannot create it"), "{err}");
}

/// Under an agent's environment, a flag the executor does not know ends the
/// supervisor at once with exit status 2, the flag named; the worker is not
/// started again and again.
#[test]
fn a_bad_executor_flag_is_named_and_not_retried() {
    let sandbox = tempfile::tempdir().unwrap();
    let (code, _, err) = run(km()
        .args(["executor", "--no-such-flag"])
        .env("MESOS_FRAMEWORK_ID", "f")
        .env("MESOS_EXECUTOR_ID", "e")
        .env("MESOS_AGENT_ENDPOINT", "127.0.0.1:1")
        .env("MESOS_DIRECTORY", sandbox.path()));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");
    assert!(err.contains("rejected its command line"), "{err}");
    assert_eq!(
        err.matches("executor worker started").count(),
        1,
        "started once: {err}"
    );
}
