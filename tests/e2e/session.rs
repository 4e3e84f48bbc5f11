//! A user's first session with `km local`: the node shows up, a pod runs and
//! answers on its host port, a Deployment answers through a NodePort
//! Service, `kubectl logs` reads and follows, a deleted pod leaves no
//! container, and a pod that fits no agent says why.

use std::collections::BTreeSet;
use std::time::Duration;

use km::podtask::annotations;
use serde_json::Value;

use super::support::{
    Local, Setup, WAIT, annotation, containers, eventually, exclusive, free_port_in, http_get,
};

const WEB_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: km-test/busybox:1
    command: [sh, -c, 'mkdir -p /www && echo hello from $(POD_NAME) > /www/index.html && exec httpd -f -p 8080 -h /www']
    env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    ports:
    - containerPort: 8080
    readinessProbe:
      httpGet:
        path: /
        port: 8080
      periodSeconds: 1
    resources:
      requests:
        cpu: 10m
        memory: 16Mi
"#;

/// Three replicas that each answer with their own pod name, and a NodePort
/// Service in front (`NODE_PORT` is replaced by a free port).
const HELLO: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
spec:
  replicas: 3
  selector:
    matchLabels:
      app: hello
  template:
    metadata:
      labels:
        app: hello
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: km-test/busybox:1
        command: [sh, -c, 'mkdir -p /www && echo $(POD_NAME) > /www/index.html && exec httpd -f -p 8080 -h /www']
        env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        ports:
        - name: http
          containerPort: 8080
        readinessProbe:
          httpGet:
            path: /
            port: http
          periodSeconds: 1
        resources:
          requests:
            cpu: 10m
            memory: 16Mi
---
apiVersion: v1
kind: Service
metadata:
  name: hello
spec:
  type: NodePort
  selector:
    app: hello
  ports:
  - name: http
    port: 80
    targetPort: http
    nodePort: NODE_PORT
"#;

const TICKER: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: ticker
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: ticker
    image: km-test/busybox:1
    command: [sh, -c, 'for i in 1 2 3 4 5; do echo line $i; sleep 0.5; done; exec sleep 3600']
    resources:
      requests:
        cpu: 10m
        memory: 16Mi
"#;

const HUGE: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: huge
spec:
  containers:
  - name: huge
    image: km-test/busybox:1
    command: [sleep, '3600']
    resources:
      requests:
        cpu: "1000"
        memory: 16Mi
"#;

#[tokio::test]
async fn a_first_session_runs_pods_services_and_logs_and_explains_what_does_not_fit() {
    let _one = exclusive().await;
    let local = Local::start(Setup::new(1)).await;
    let kubeconfig = local.kubeconfig();

    // The summary says how to use the cluster.
    let export = format!("export KUBECONFIG={}", kubeconfig.display());
    eventually("km local's summary names the kubeconfig", WAIT, || async {
        let out = local.stdout();
        if out.iter().any(|l| l.contains(&export)) {
            Ok(())
        } else {
            Err(format!("stdout so far: {out:?}"))
        }
    })
    .await;

    // `kubectl get nodes` shows the agent's node, Ready.
    let node = local.setup().hostname.clone();
    eventually("the node is Ready", WAIT, || async {
        let out = local
            .kubectl_output(
                &[
                    "get",
                    "node",
                    &node,
                    "-o",
                    r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
                ],
                None,
            )
            .await;
        let status = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if status == "True" {
            Ok(())
        } else {
            Err(format!(
                "{status:?} {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    })
    .await;
    let ns = local.namespace("session").await;

    // 1. A pod goes Running and answers on its mapped host port, at the
    // machine's primary address.
    local.apply(&ns, WEB_POD).await;
    local
        .kubectl(&[
            "-n",
            &ns,
            "wait",
            "--for=condition=Ready",
            "pod/web",
            "--timeout=180s",
        ])
        .await;
    let web = local.pods(&ns).get("web").await.unwrap();
    let status = web.status.clone().unwrap();
    assert_eq!(
        web.spec.as_ref().unwrap().node_name.as_deref(),
        Some(&*node)
    );
    let host_ip = status.host_ip.expect("hostIP is set");
    assert_eq!(host_ip, km::hostaddr::primary_ipv4().to_string());
    let port: u16 = annotation(&web, &annotations::port_key("TCP", 8080))
        .expect("the container port is mapped to a host port")
        .parse()
        .unwrap();
    let body = eventually("the host port answers", WAIT, || async {
        http_get((host_ip.as_str(), port), "/")
            .await
            .ok_or_else(|| format!("no answer at {host_ip}:{port}"))
    })
    .await;
    assert_eq!(body.trim(), "hello from web");

    // 2. A Deployment of three replicas behind a NodePort Service: km proxy
    // spreads requests over the three pods.
    let node_port = free_port_in(30000..31000);
    local
        .apply(&ns, &HELLO.replace("NODE_PORT", &node_port.to_string()))
        .await;
    local.rolled_out(&ns, "hello").await;
    let names: BTreeSet<String> = local
        .kubectl(&[
            "-n",
            &ns,
            "get",
            "pods",
            "-l",
            "app=hello",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .await
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(names.len(), 3, "three Running replicas: {names:?}");
    let seen = eventually("the NodePort reaches the three replicas", WAIT, || async {
        let mut seen = BTreeSet::new();
        for _ in 0..12 {
            if let Some(body) = http_get(("127.0.0.1", node_port), "/").await {
                seen.insert(body.trim().to_string());
            }
        }
        if seen == names {
            Ok(seen)
        } else {
            Err(format!("answers from {seen:?}, replicas {names:?}"))
        }
    })
    .await;
    assert_eq!(seen.len(), 3);

    // 3. `kubectl logs -f` follows the lines as they are written; `kubectl
    // logs` reads them all, and --tail the last one.
    local.apply(&ns, TICKER).await;
    local
        .kubectl(&[
            "-n",
            &ns,
            "wait",
            "--for=condition=Ready",
            "pod/ticker",
            "--timeout=180s",
        ])
        .await;
    let followed = follow_logs(&local, &ns, "ticker", "line 5").await;
    let expected: Vec<String> = (1..=5).map(|i| format!("line {i}")).collect();
    assert_eq!(followed, expected);
    let all = local.kubectl(&["-n", &ns, "logs", "ticker"]).await;
    assert_eq!(all.lines().collect::<Vec<_>>(), expected);
    let last = local
        .kubectl(&["-n", &ns, "logs", "--tail=1", "ticker"])
        .await;
    assert_eq!(last.trim(), "line 5");

    // 4. Deleting a pod: once it is gone from the API, no container of it
    // is left, running or not.
    let uid = web.metadata.uid.clone().unwrap();
    assert!(
        !containers(true, &[("io.kubernetes.pod.uid", &uid)])
            .await
            .is_empty(),
        "the web pod's containers exist before the deletion"
    );
    local
        .kubectl(&["-n", &ns, "delete", "pod", "web", "--timeout=120s"])
        .await;
    assert!(
        local.pods(&ns).get_opt("web").await.unwrap().is_none(),
        "kubectl delete waits until the pod is gone"
    );
    let left = containers(true, &[("io.kubernetes.pod.uid", &uid)]).await;
    assert!(
        left.is_empty(),
        "containers left of the deleted pod: {left:?}"
    );

    // 5. A pod that fits no agent: a FailedScheduling Event gives the
    // reason, and the pod stays Pending, unbound.
    local.apply(&ns, HUGE).await;
    let message = eventually("a FailedScheduling event for huge", WAIT, || async {
        let events: Value = serde_json::from_str(
            &local
                .kubectl(&["-n", &ns, "get", "events", "-o", "json"])
                .await,
        )
        .unwrap();
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["involvedObject"]["name"] == "huge" && e["reason"] == "FailedScheduling")
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .ok_or_else(|| format!("events: {}", events["items"]))
    })
    .await;
    assert!(
        message.contains("insufficient cpus"),
        "the event gives the reason: {message}"
    );
    let describe = local.kubectl(&["-n", &ns, "describe", "pod", "huge"]).await;
    assert!(describe.contains("FailedScheduling"), "{describe}");
    let huge = local.pods(&ns).get("huge").await.unwrap();
    assert_eq!(super::support::phase(&huge), "Pending");
    assert_eq!(huge.spec.as_ref().unwrap().node_name, None);
    assert_eq!(annotation(&huge, annotations::BINDING_HOST), None);

    let (status, _setup) = local.stop("TERM").await;
    assert!(status.success(), "km local exits 0 on SIGTERM: {status}");
}

/// `kubectl logs -f` of `pod` until a line equals `last`: the lines read.
async fn follow_logs(local: &Local, ns: &str, pod: &str, last: &str) -> Vec<String> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(local.kubeconfig())
        .args(["-n", ns, "logs", "-f", pod])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let done = line == last;
            seen.push(line);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    let _ = child.start_kill();
    let output = child.wait_with_output().await.unwrap();
    assert!(
        read == Ok(true),
        "kubectl logs -f {pod} never showed {last:?}: read {seen:?}, stderr {}",
        String::from_utf8_lossy(&output.stderr)
    );
    seen
}
