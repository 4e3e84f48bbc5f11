//! An operator's session with unmodified kubectl against km apiserver over
//! HTTPS, with the kubeconfig the server wrote.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::Server;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: nginx
    image: nginx:1.27
    ports:
    - containerPort: 80
      name: http
    env:
    - name: A
      value: "1"
  - name: sidecar
    image: busybox
    command: ["sleep", "3600"]
"#;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

#[test]
fn discovery_and_explain() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let out = s.ok(&["api-resources"]);
    for line in [
        "pods ",
        "po ",
        "deployments ",
        "deploy ",
        "leases ",
        "endpointslices ",
    ] {
        assert!(out.contains(line), "api-resources lacks {line:?}:\n{out}");
    }
    let out = s.ok(&["explain", "pod.spec.containers"]);
    assert!(out.contains("image"), "explain shows the fields:\n{out}");
    assert!(out.contains("FIELDS") || out.contains("FIELD"), "{out}");
    let out = s.ok(&["version", "-o", "json"]);
    assert_eq!(json(&out)["serverVersion"]["major"], "1");
    let out = s.ok(&["get", "namespaces"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(out.contains(ns), "{out}");
    }
    assert!(out.contains("Active"), "{out}");
    let out = s.ok(&["get", "svc", "kubernetes", "-o", "json"]);
    assert_eq!(json(&out)["spec"]["clusterIP"], "10.0.0.1");
}

#[test]
fn pod_lifecycle_with_every_patch_type() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let out = s.ok_stdin(&["create", "-f", "-"], POD);
    assert!(out.contains("pod/web created"), "{out}");
    // Creating it again conflicts, with upstream's message.
    let o = s.kubectl_stdin(&["create", "-f", "-"], Some(POD));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(r#"pods "web" already exists"#));

    let out = s.ok(&["get", "pods"]);
    let header = out.lines().next().unwrap();
    for col in ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] {
        assert!(header.contains(col), "{out}");
    }
    assert!(
        out.contains("web") && out.contains("0/2") && out.contains("Pending"),
        "{out}"
    );
    let wide = s.ok(&["get", "pods", "-o", "wide"]);
    assert!(wide.lines().next().unwrap().contains("NODE"), "{wide}");

    let pod = json(&s.ok(&["get", "pod", "web", "-o", "json"]));
    assert_eq!(pod["spec"]["restartPolicy"], "Always", "defaulted");
    assert_eq!(
        pod["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(pod["spec"]["containers"][1]["imagePullPolicy"], "Always");
    assert_eq!(pod["status"]["phase"], "Pending");
    assert!(pod["metadata"]["uid"].is_string());
    let yaml = s.ok(&["get", "pod", "web", "-o", "yaml"]);
    assert!(
        yaml.contains("name: web") && yaml.contains("image: nginx:1.27"),
        "{yaml}"
    );

    s.ok(&["label", "pod", "web", "tier=front"]);
    s.ok(&["annotate", "pod", "web", "note=hello"]);
    let out = s.ok(&[
        "get",
        "pods",
        "-l",
        "tier=front,app in (web,api)",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "pod/web");
    let out = s.ok(&["get", "pods", "-l", "tier!=front", "-o", "name"]);
    assert_eq!(out.trim(), "");
    let out = s.ok(&[
        "get",
        "pods",
        "--field-selector",
        "status.phase=Pending",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "pod/web");

    // Strategic merge: a container matched by name keeps its siblings.
    s.ok(&[
        "patch",
        "pod",
        "web",
        "-p",
        r#"{"spec":{"containers":[{"name":"nginx","image":"nginx:1.28"}]}}"#,
    ]);
    let pod = json(&s.ok(&["get", "pod", "web", "-o", "json"]));
    assert_eq!(pod["spec"]["containers"][0]["image"], "nginx:1.28");
    assert_eq!(pod["spec"]["containers"][1]["image"], "busybox");
    assert_eq!(pod["spec"]["containers"][0]["env"][0]["name"], "A");
    // Merge patch.
    s.ok(&[
        "patch",
        "pod",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"tier":null,"x":"y"}}}"#,
    ]);
    let pod = json(&s.ok(&["get", "pod", "web", "-o", "json"]));
    assert!(pod["metadata"]["labels"].get("tier").is_none());
    assert_eq!(pod["metadata"]["labels"]["x"], "y");
    // JSON patch.
    s.ok(&[
        "patch",
        "pod",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/containers/1/image","value":"busybox:1.36"}]"#,
    ]);
    let pod = json(&s.ok(&["get", "pod", "web", "-o", "json"]));
    assert_eq!(pod["spec"]["containers"][1]["image"], "busybox:1.36");
    // A forbidden spec change names the field.
    let err = s.fails(&[
        "patch",
        "pod",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"restartPolicy":"Never"}}"#,
    ]);
    assert!(err.contains("is invalid") && err.contains("spec"), "{err}");

    let out = s.ok(&["describe", "pod", "web"]);
    assert!(
        out.contains("Name:") && out.contains("web") && out.contains("nginx:1.28"),
        "{out}"
    );

    // Unbound pods go at once.
    let out = s.ok(&["delete", "pod", "web", "--grace-period", "5"]);
    assert!(out.contains(r#"pod "web" deleted"#), "{out}");
    let err = s.fails(&["get", "pod", "web"]);
    assert!(err.contains(r#"pods "web" not found"#), "{err}");
}

#[test]
fn apply_twice_and_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let deploy = |replicas: u32, image: &str| {
        format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: api}}
  template:
    metadata:
      labels: {{app: api}}
    spec:
      containers:
      - name: api
        image: {image}
"#
        )
    };
    let out = s.ok_stdin(&["apply", "-f", "-"], &deploy(2, "api:1"));
    assert!(out.contains("deployment.apps/api created"), "{out}");
    let out = s.ok_stdin(&["apply", "-f", "-"], &deploy(3, "api:2"));
    assert!(out.contains("deployment.apps/api configured"), "{out}");
    let d = json(&s.ok(&["get", "deploy", "api", "-o", "json"]));
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "api:2"
    );
    assert_eq!(
        d["metadata"]["generation"], 2,
        "spec change bumps generation"
    );
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%",
        "defaulted"
    );
    let out = s.ok_stdin(&["apply", "-f", "-"], &deploy(3, "api:2"));
    assert!(out.contains("unchanged"), "{out}");
    s.ok(&["scale", "deployment", "api", "--replicas", "5"]);
    let d = json(&s.ok(&["get", "deploy", "api", "-o", "json"]));
    assert_eq!(d["spec"]["replicas"], 5);
    let out = s.ok(&["get", "deploy"]);
    assert!(out.lines().next().unwrap().contains("UP-TO-DATE"), "{out}");

    // Invalid objects are refused with the field named.
    let bad =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  containers:\n  - name: c\n";
    let o = s.kubectl_stdin(&["create", "-f", "-"], Some(bad));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("spec.containers[0].image: Required value"),
        "{err}"
    );
    // Unknown fields are refused by kubectl's strict validation (server side).
    let unknown = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\nbogus: 1\n";
    let o = s.kubectl_stdin(&["create", "-f", "-"], Some(unknown));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("bogus"), "{err}");

    // Services get a ClusterIP and NodePort. kubectl's generators send
    // protobuf, which km apiserver refuses with a message naming the
    // workaround that it then takes.
    let err = s.fails(&["create", "service", "nodeport", "api", "--tcp", "80:8080"]);
    assert!(
        err.contains("--dry-run=client -o yaml | kubectl apply -f -"),
        "{err}"
    );
    let yaml = s.ok(&[
        "create",
        "service",
        "nodeport",
        "api",
        "--tcp",
        "80:8080",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    s.ok_stdin(&["apply", "-f", "-"], &yaml);
    let svc = json(&s.ok(&["get", "svc", "api", "-o", "json"]));
    let ip = svc["spec"]["clusterIP"].as_str().unwrap();
    assert!(ip.starts_with("10.0.0.") && ip != "10.0.0.1", "{ip}");
    let np = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&np));
    let out = s.ok(&["get", "svc", "api"]);
    assert!(out.contains(&format!("80:{np}/TCP")), "{out}");

    // A terminating namespace takes no new objects.
    s.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: doomed}\n",
    );
    s.ok(&["delete", "namespace", "doomed", "--wait=false"]);
    let out = s.ok(&["get", "ns", "doomed"]);
    assert!(out.contains("Terminating"), "{out}");
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n";
    let o = s.kubectl_stdin(&["-n", "doomed", "create", "-f", "-"], Some(cm));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("because it is being terminated"), "{err}");
    let o = s.kubectl_stdin(&["-n", "missing", "create", "-f", "-"], Some(cm));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(r#"namespaces "missing" not found"#), "{err}");
}

#[test]
fn get_watch_streams_changes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let cm = |name: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{a: '1'}}\n")
    };
    s.ok_stdin(&["create", "-f", "-"], &cm("one"));
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["get", "configmaps", "-w", "--request-timeout", "30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if lines.iter().any(|l: &String| l.contains(needle)) {
                return;
            }
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                lines.push(l);
            }
        }
        panic!("kubectl get -w never showed {needle:?}: {lines:?}");
    };
    wait_for("one");
    s.ok_stdin(&["create", "-f", "-"], &cm("two"));
    wait_for("two");
    let _ = watch.kill();
    let _ = watch.wait();
}
