//! API machinery semantics over plain HTTP: conflicts, bindings, graceful
//! deletion, finalizers, pagination, watches across restarts, crashes, and
//! bad input.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::{Server, http};

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.expect("request");
    let code = r.status().as_u16();
    let body = r.bytes().await.expect("body");
    (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn two_writers_race_and_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let c = http();
    let url = format!("{}/api/v1/namespaces/default/configmaps", s.http);
    let (code, cm) = send(
        c.post(&url)
            .json(&json!({"metadata": {"name": "x"}, "data": {"v": "0"}})),
    )
    .await;
    assert_eq!(code, 201);
    let mut a = cm.clone();
    a["data"]["v"] = json!("a");
    let mut b = cm.clone();
    b["data"]["v"] = json!("b");
    let (ra, rb) = tokio::join!(
        send(c.put(format!("{url}/x")).json(&a)),
        send(c.put(format!("{url}/x")).json(&b))
    );
    let codes: BTreeSet<u16> = [ra.0, rb.0].into();
    assert_eq!(codes, BTreeSet::from([200, 409]), "{ra:?} {rb:?}");
    let loser = if ra.0 == 409 { ra.1 } else { rb.1 };
    assert_eq!(loser["reason"], "Conflict");
    assert_eq!(loser["kind"], "Status");
}

#[tokio::test]
async fn binding_graceful_deletion_and_finalizers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let c = http();
    let pods = format!("{}/api/v1/namespaces/default/pods", s.http);
    assert_eq!(send(c.post(&pods).json(&pod("p"))).await.0, 201);
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p", "annotations": {"k8s.mesosphere.io/bindingHost": "n1"}},
        "target": {"kind": "Node", "name": "n1"}});
    let (code, _) = send(c.post(format!("{pods}/p/binding")).json(&binding)).await;
    assert_eq!(code, 201);
    let (code, st) = send(c.post(format!("{pods}/p/binding")).json(&binding)).await;
    assert_eq!(code, 409, "bound exactly once: {st}");
    let (_, p) = send(c.get(format!("{pods}/p"))).await;
    assert_eq!(p["spec"]["nodeName"], "n1");
    assert_eq!(
        p["metadata"]["annotations"]["k8s.mesosphere.io/bindingHost"],
        "n1"
    );

    // A bound pod stays, terminating, until deleted with grace 0.
    let (code, p) = send(
        c.delete(format!("{pods}/p"))
            .json(&json!({"gracePeriodSeconds": 30})),
    )
    .await;
    assert_eq!(code, 200);
    assert!(p["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 30);
    assert_eq!(send(c.get(format!("{pods}/p"))).await.0, 200);
    let (code, _) = send(c.post(format!("{pods}/p/binding")).json(&binding)).await;
    assert_eq!(code, 409);
    assert_eq!(
        send(c.delete(format!("{pods}/p?gracePeriodSeconds=0")))
            .await
            .0,
        200
    );
    assert_eq!(send(c.get(format!("{pods}/p"))).await.0, 404);

    // Finalizers hold an object until removed.
    let cms = format!("{}/api/v1/namespaces/default/configmaps", s.http);
    send(
        c.post(&cms)
            .json(&json!({"metadata": {"name": "held", "finalizers": ["km.test/hold"]}})),
    )
    .await;
    let (_, held) = send(c.delete(format!("{cms}/held"))).await;
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(send(c.get(format!("{cms}/held"))).await.0, 200);
    let patch = c
        .patch(format!("{cms}/held"))
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"metadata":{"finalizers":null}}"#);
    assert_eq!(send(patch).await.0, 200);
    assert_eq!(send(c.get(format!("{cms}/held"))).await.0, 404);
}

#[tokio::test]
async fn lists_page_through_a_consistent_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let c = http();
    let cms = format!("{}/api/v1/namespaces/default/configmaps", s.http);
    for i in 0..25 {
        send(c.post(&cms).json(&json!({"metadata": {"name": format!("cm-{i:02}"), "labels": {"even": (i % 2 == 0).to_string()}}}))).await;
    }
    let mut names = Vec::new();
    let mut cont = String::new();
    let mut first_rv = None;
    loop {
        let (code, page) = send(c.get(format!(
            "{cms}?limit=4&labelSelector=even%3Dtrue&continue={cont}"
        )))
        .await;
        assert_eq!(code, 200, "{page}");
        first_rv.get_or_insert(page["metadata"]["resourceVersion"].clone());
        assert!(page["items"].as_array().unwrap().len() <= 4);
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        // Writes between pages do not show in the snapshot.
        send(
            c.post(&cms)
                .json(&json!({"metadata": {"generateName": "late-", "labels": {"even": "true"}}})),
        )
        .await;
        match page["metadata"]["continue"].as_str() {
            Some(t) if !t.is_empty() => cont = t.to_string(),
            _ => break,
        }
    }
    assert_eq!(names.len(), 13, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("cm-")));
    let (code, st) = send(c.get(format!("{cms}?limit=1&continue=garbage"))).await;
    assert_eq!((code, st["reason"].as_str()), (400, Some("BadRequest")));
}

async fn watch_lines(c: &reqwest::Client, url: &str, n: usize) -> Vec<Value> {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("watch events in time");
        let Some(chunk) = chunk else { break };
        buf.extend_from_slice(&chunk.unwrap());
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            out.push(serde_json::from_slice(&line).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn watches_resume_or_get_410_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path());
    let c = http();
    let cms = format!("{}/api/v1/namespaces/default/configmaps", s.http);
    let (_, a) = send(c.post(&cms).json(&json!({"metadata": {"name": "a"}}))).await;
    let rv_a: u64 = a["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    send(c.post(&cms).json(&json!({"metadata": {"name": "b"}}))).await;
    let events = watch_lines(&c, &format!("{cms}?watch=1&resourceVersion={rv_a}"), 1).await;
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "b");

    s.restart();
    // The history before the restart is gone: 410 as an ERROR event.
    let events = watch_lines(&c, &format!("{cms}?watch=1&resourceVersion={rv_a}"), 1).await;
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    // From the list's resourceVersion it resumes, and sees later writes.
    let (_, list) = send(c.get(&cms)).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{cms}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true");
    let watcher = tokio::spawn({
        let c = c.clone();
        async move { watch_lines(&c, &url, 1).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(c.post(&cms).json(&json!({"metadata": {"name": "c"}}))).await;
    let events = watcher.await.unwrap();
    assert_eq!(events[0]["object"]["metadata"]["name"], "c");
    assert!(
        events[0]["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > rv.parse().unwrap()
    );
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path());
    let c = http();
    let pods = format!("{}/api/v1/namespaces/default/pods", s.http);
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..16 {
        let (c, pods, acked) = (c.clone(), pods.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i}");
                match c.post(&pods).json(&pod(&name)).send().await {
                    Ok(r) if r.status() == 201 => acked.lock().unwrap().push(name),
                    _ => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "writes were acknowledged before the crash: {}",
        acked.len()
    );
    s.restart();
    let (_, list) = send(c.get(&pods)).await;
    let stored: BTreeSet<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
}

#[tokio::test]
async fn bad_input_gets_a_status_with_the_right_code() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let c = http();
    let pods = format!("{}/api/v1/namespaces/default/pods", s.http);
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (c.post(&pods).header("Content-Type", "application/json").body("{not json"), 400, "BadRequest"),
        (c.post(&pods).header("Content-Type", "application/vnd.kubernetes.protobuf").body("x"), 415, "UnsupportedMediaType"),
        (c.post(&pods).json(&json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})), 422, "Invalid"),
        (c.post(&pods).json(&json!({"metadata": {"name": "p"}, "spec": {"containers": "nope"}})), 400, "BadRequest"),
        (c.post(&pods).json(&vec![0u8; 4 << 20]), 413, "RequestEntityTooLarge"),
        (c.get(format!("{pods}/missing")), 404, "NotFound"),
        (c.get(format!("{}/api/v1/widgets", s.http)), 404, "NotFound"),
        (c.get(format!("{pods}?labelSelector=a%20in%20(")), 400, "BadRequest"),
        (c.get(format!("{pods}?fieldSelector=spec.containers=x")), 400, "BadRequest"),
        (c.patch(format!("{pods}/missing")).header("Content-Type", "text/plain").body("{}"), 415, "UnsupportedMediaType"),
    ];
    for (i, (req, code, reason)) in cases.into_iter().enumerate() {
        let (got, st) = send(req).await;
        assert_eq!(
            (got, st["reason"].as_str()),
            (code, Some(reason)),
            "case {i}: {st}"
        );
        assert_eq!(st["kind"], "Status", "case {i}");
        assert!(!st["message"].as_str().unwrap_or("").is_empty(), "case {i}");
    }
    let (_, st) = send(c.post(&pods).json(&json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}))).await;
    assert_eq!(st["details"]["causes"][0]["field"], "metadata.name");
    // The server is still healthy.
    assert_eq!(send(c.post(&pods).json(&pod("fine"))).await.0, 201);
}

#[tokio::test]
async fn https_requires_a_token_and_metrics_count_requests() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    km::mesos::scheduler::install_crypto_provider();
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(s.data_dir.join("ca.crt")).unwrap()).unwrap();
    let c = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let token = std::fs::read_to_string(s.data_dir.join("admin-token")).unwrap();
    let url = format!("{}/api/v1/namespaces", s.https);
    assert_eq!(c.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        c.get(&url)
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{}/healthz", s.https))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = http()
        .get(format!("{}/metrics", s.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains(r#"apiserver_request_total{verb="list",resource="namespaces",code="200"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("apiserver_storage_commit_duration_seconds"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sigterm_ends_open_watches_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path());
    let c = http();
    let r = c
        .get(format!("{}/api/v1/namespaces/default/pods?watch=1", s.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let reader = tokio::spawn(async move {
        let mut body = r.bytes_stream();
        while let Some(Ok(_)) = body.next().await {}
    });
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || s.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the watch stream ended")
        .unwrap();
}
