//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: container logs, read
//! from the kubelet of the pod's node, as kube-apiserver does.
//!
//! The pod decides the container: `?container=` must name one of its
//! containers (init and ephemeral ones included), and may be left out only
//! when the pod has exactly one. The pod must be bound (`spec.nodeName`).
//! The Node gives the kubelet's address (its `InternalIP`, else its
//! `Hostname`) and port (`status.daemonEndpoints.kubeletEndpoint.Port`,
//! 10250 when unset, like kube-apiserver's `--kubelet-port`). The request
//! goes to `https://<address>:<port>/containerLogs/<ns>/<pod>/<container>`
//! with the log options (`follow`, `tailLines`, `sinceSeconds`,
//! `sinceTime`, `timestamps`, `previous`, `limitBytes`, `stream`) passed
//! on as given; the kubelet checks them. Its answer is streamed back as
//! `text/plain`; an error from it becomes a `Status` with its HTTP code and
//! its message.
//!
//! The kubelet's certificate is not verified and km apiserver presents no
//! client certificate: this is kube-apiserver's behaviour without
//! `--kubelet-certificate-authority` and `--kubelet-client-certificate`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;

use super::resources;
use super::rest::{Api, Query, Target};
use super::status::ApiError;

/// kube-apiserver's default `--kubelet-port`, for Nodes that publish none.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;

/// Log options passed on to the kubelet, in this order.
const FORWARDED: &[&str] = &[
    "follow",
    "previous",
    "sinceSeconds",
    "sinceTime",
    "timestamps",
    "tailLines",
    "limitBytes",
    "stream",
];

/// Longest error body read from a kubelet.
const MAX_ERROR_BODY: usize = 50_000;

/// Errors building the HTTPS client for kubelets.
#[derive(Debug, thiserror::Error)]
pub enum KubeletClientError {
    /// rustls refused the configuration.
    #[error("building the kubelet client's TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// reqwest refused the configuration.
    #[error("building the kubelet client: {0}")]
    Client(#[from] reqwest::Error),
}

/// An HTTPS client for kubelet endpoints: ring provider, any server
/// certificate accepted, no proxies, no redirects, no overall timeout (log
/// streams may follow for hours).
pub fn kubelet_client() -> Result<reqwest::Client, KubeletClientError> {
    let tls = crate::insecure_tls::client_config()?;
    Ok(reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .tcp_keepalive(Duration::from_secs(30))
        .tls_backend_preconfigured(tls)
        .build()?)
}

fn shared_client() -> Result<&'static reqwest::Client, ApiError> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| kubelet_client().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| ApiError::internal(e.clone()))
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

/// The container the request is about, with upstream's messages.
fn container_of(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let spec = &pod["spec"];
    let containers = names(&spec["containers"]);
    match asked.filter(|c| !c.is_empty()) {
        Some(c) => {
            let known = containers
                .iter()
                .chain(names(&spec["initContainers"]).iter())
                .chain(names(&spec["ephemeralContainers"]).iter())
                .any(|n| *n == c);
            if known {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None => match containers.as_slice() {
            [only] => Ok(only.to_string()),
            [] => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}"
            ))),
            many => {
                let mut m = format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    many.join(" ")
                );
                let init = names(&spec["initContainers"]);
                if !init.is_empty() {
                    m.push_str(&format!(
                        " or one of the init containers: [{}]",
                        init.join(" ")
                    ));
                }
                Err(ApiError::bad_request(m))
            }
        },
    }
}

/// The kubelet's host (`InternalIP`, else `Hostname`) and port from a Node.
fn kubelet_of(node: &Value) -> Option<(String, u16)> {
    let addresses = node["status"]["addresses"].as_array()?;
    let find = |kind: &str| {
        addresses
            .iter()
            .find(|a| a["type"] == kind)
            .and_then(|a| a["address"].as_str())
            .filter(|a| !a.is_empty())
    };
    let host = find("InternalIP").or_else(|| find("Hostname"))?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Some((host, port))
}

/// `Status.reason` for an HTTP code a kubelet answered with.
fn reason_of(code: StatusCode) -> &'static str {
    match code.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Gone",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// Turns a kubelet's error answer into a `Status` with its code and message.
async fn kubelet_error(resp: reqwest::Response) -> ApiError {
    let code = resp.status();
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            body.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    let text = String::from_utf8_lossy(&body).trim().to_string();
    // A kubelet answers in plain text; one behind a Kubernetes-style proxy may send a Status.
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or(text);
    let message = if message.is_empty() {
        format!("the kubelet answered {code} without a message")
    } else {
        message
    };
    ApiError {
        code,
        reason: reason_of(code),
        message,
        details: None,
    }
}

/// Serves `GET .../pods/{name}/log` (see the module docs).
pub async fn serve(
    api: &Arc<Api>,
    t: &Target,
    name: &str,
    q: &Query,
) -> Result<Response, ApiError> {
    let pod = api
        .store
        .get(&t.resource.key(t.namespace.as_deref(), name))
        .ok_or_else(|| ApiError::not_found(t.resource, name))?
        .value();
    let container = container_of(&pod, name, q.get("container").map(String::as_str))?;
    let node_name = pod["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })?;
    let nodes = resources::find("", "v1", "nodes").expect("nodes are served");
    let node = api
        .store
        .get(&nodes.key(None, node_name))
        .ok_or_else(|| ApiError::not_found(nodes, node_name))?
        .value();
    let (host, port) = kubelet_of(&node).ok_or_else(|| {
        ApiError::unavailable(format!(
            "node {node_name} publishes no InternalIP or Hostname address, so its kubelet cannot be reached for the log of pod {name}"
        ))
    })?;
    let namespace = t.namespace.as_deref().unwrap_or("default");
    let mut url = reqwest::Url::parse(&format!("https://{host}:{port}/")).map_err(|e| {
        ApiError::internal(format!(
            "node {node_name}: bad kubelet address {host}:{port}: {e}"
        ))
    })?;
    url.path_segments_mut()
        .map_err(|()| {
            ApiError::internal(format!(
                "node {node_name}: bad kubelet address {host}:{port}"
            ))
        })?
        .extend(["containerLogs", namespace, name, &container]);
    {
        let mut pairs = url.query_pairs_mut();
        for key in FORWARDED {
            if let Some(v) = q.get(*key) {
                pairs.append_pair(key, v);
            }
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let resp = shared_client()?
        .get(url.clone())
        .send()
        .await
        .map_err(|e| {
            ApiError::unavailable(format!(
                "cannot reach the kubelet of node {node_name} at {url}: {e}"
            ))
        })?;
    if !resp.status().is_success() {
        return Err(kubelet_error(resp).await);
    }
    let (pod_label, stop) = (
        format!("{namespace}/{name}/{container}"),
        api.shutdown.clone(),
    );
    let body = resp
        .bytes_stream()
        .map(move |chunk| {
            chunk.map_err(|e| {
                tracing::debug!(container = %pod_label, error = %e, "kubelet log stream broke off");
                std::io::Error::other(e)
            })
        })
        .take_until(stop.cancelled_owned());
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::kubelet_api::{self, LogQuery, Logs, Tls};
    use crate::executor::node::{self, NodeConfig};
    use bytes::Bytes;
    use futures::AsyncBufReadExt;
    use futures::channel::mpsc;
    use futures::stream::BoxStream;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{LogParams, PostParams};
    use std::sync::Mutex;
    use tokio_util::sync::CancellationToken;

    /// Fixed logs per container; `follow` requests get a channel the test feeds.
    #[derive(Default)]
    struct TestLogs {
        followers: Mutex<Vec<mpsc::UnboundedSender<Result<Bytes, String>>>>,
        seen: Mutex<Vec<(String, LogQuery)>>,
    }

    impl Logs for TestLogs {
        fn logs(
            &self,
            namespace: &str,
            pod: &str,
            container: &str,
            query: &LogQuery,
        ) -> Result<BoxStream<'static, Result<Bytes, String>>, String> {
            self.seen
                .lock()
                .unwrap()
                .push((format!("{namespace}/{pod}/{container}"), query.clone()));
            if container == "gone" {
                return Err(format!(
                    "container {container:?} in pod {pod:?} is not running"
                ));
            }
            if query.follow {
                let (tx, rx) = mpsc::unbounded();
                self.followers.lock().unwrap().push(tx);
                return Ok(rx.boxed());
            }
            let text = format!("log of {namespace}/{pod}/{container}\n");
            Ok(futures::stream::iter([Ok(Bytes::from(text))]).boxed())
        }
    }

    impl TestLogs {
        /// The sender of the next follower (waits for its request to arrive).
        async fn follower(&self) -> mpsc::UnboundedSender<Result<Bytes, String>> {
            for _ in 0..200 {
                if let Some(tx) = self.followers.lock().unwrap().pop() {
                    return tx;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("no follow request reached the kubelet endpoint");
        }
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: crate::apiserver::Args,
    }

    fn pod(name: &str, containers: &[&str], node: Option<&str>) -> Pod {
        let containers: Vec<Value> = containers
            .iter()
            .map(|c| serde_json::json!({"name": c, "image": "busybox"}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"containers": containers, "nodeName": node},
        }))
        .unwrap()
    }

    fn api_error(e: kube::Error) -> (u16, String) {
        match e {
            kube::Error::Api(s) => (s.code, s.message),
            other => panic!("expected an API error, got {other}"),
        }
    }

    #[test]
    fn containers_and_kubelet_addresses_are_chosen_like_upstream() {
        let p = serde_json::json!({"spec": {
            "containers": [{"name": "a"}, {"name": "b"}],
            "initContainers": [{"name": "init"}],
            "ephemeralContainers": [{"name": "debug"}],
        }});
        assert_eq!(
            container_of(&p, "p", None).unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [init]"
        );
        assert_eq!(container_of(&p, "p", Some("init")).unwrap(), "init");
        assert_eq!(container_of(&p, "p", Some("debug")).unwrap(), "debug");
        assert_eq!(
            container_of(
                &serde_json::json!({"spec": {"containers": [{"name": "only"}]}}),
                "p",
                Some("")
            )
            .unwrap(),
            "only"
        );

        let node = |addresses: Value, port: Value| serde_json::json!({"status": {"addresses": addresses, "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
        assert_eq!(
            kubelet_of(&node(
                serde_json::json!([{"type": "Hostname", "address": "h"}, {"type": "InternalIP", "address": "10.0.0.1"}]),
                serde_json::json!(10255)
            )),
            Some(("10.0.0.1".to_string(), 10255))
        );
        assert_eq!(
            kubelet_of(&node(
                serde_json::json!([{"type": "Hostname", "address": "h"}]),
                Value::Null
            )),
            Some(("h".to_string(), DEFAULT_KUBELET_PORT))
        );
        assert_eq!(
            kubelet_of(&node(
                serde_json::json!([{"type": "InternalIP", "address": "fd00::1"}]),
                serde_json::json!(1)
            )),
            Some(("[fd00::1]".to_string(), 1))
        );
        assert_eq!(
            kubelet_of(&node(serde_json::json!([]), serde_json::json!(1))),
            None
        );
    }

    #[tokio::test]
    async fn logs_are_proxied_from_the_kubelet_of_the_pods_node() {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let cli = Cli::try_parse_from([
            "km",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--no-tls",
            "--insecure-port",
            "0",
        ])
        .unwrap();
        let stop = CancellationToken::new();
        let _guard = stop.clone().drop_guard();
        let running = crate::apiserver::start(cli.args, stop.clone())
            .await
            .unwrap();
        let url = format!("http://{}", running.insecure_addr.unwrap());
        tokio::spawn(running.wait());
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();

        let logs = Arc::new(TestLogs::default());
        let tls = Tls::self_signed(&["node-1".into()], &["127.0.0.1".parse().unwrap()]).unwrap();
        let kubelet = kubelet_api::serve(
            "127.0.0.1:0".parse().unwrap(),
            tls,
            logs.clone(),
            stop.clone(),
        )
        .await
        .unwrap();
        node::register(
            &client,
            &NodeConfig {
                name: "node-1".into(),
                host_ip: "127.0.0.1".into(),
                agent_resources: vec![],
                executor_resources: vec![],
                attributes: vec![],
                kubelet_port: kubelet.port(),
                executor_id: "e1".into(),
                runtime_version: "docker://20.10.24".into(),
            },
        )
        .await
        .unwrap();

        let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), "default");
        let pp = PostParams::default();
        pods.create(&pp, &pod("one", &["app"], Some("node-1")))
            .await
            .unwrap();
        pods.create(&pp, &pod("two", &["a", "b", "gone"], Some("node-1")))
            .await
            .unwrap();
        pods.create(&pp, &pod("pending", &["app"], None))
            .await
            .unwrap();

        // The only container is the default; options reach the kubelet.
        let got = pods
            .logs(
                "one",
                &LogParams {
                    tail_lines: Some(3),
                    timestamps: true,
                    ..LogParams::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(got, "log of default/one/app\n");
        let (which, query) = logs.seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(which, "default/one/app");
        assert_eq!(
            query,
            LogQuery {
                tail_lines: Some(3),
                timestamps: true,
                ..LogQuery::default()
            }
        );
        let named = LogParams {
            container: Some("b".into()),
            ..LogParams::default()
        };
        assert_eq!(
            pods.logs("two", &named).await.unwrap(),
            "log of default/two/b\n"
        );

        // The three errors of the API server itself.
        let (code, message) = api_error(pods.logs("two", &LogParams::default()).await.unwrap_err());
        assert_eq!(code, 400);
        assert_eq!(
            message,
            "a container name must be specified for pod two, choose one of: [a b gone]"
        );
        let other = LogParams {
            container: Some("zzz".into()),
            ..LogParams::default()
        };
        let (code, message) = api_error(pods.logs("two", &other).await.unwrap_err());
        assert_eq!(
            (code, message.as_str()),
            (400, "container zzz is not valid for pod two")
        );
        let (code, message) = api_error(
            pods.logs("pending", &LogParams::default())
                .await
                .unwrap_err(),
        );
        assert_eq!(
            (code, message.as_str()),
            (400, "pod pending does not have a host assigned")
        );
        let (code, _) = api_error(pods.logs("nope", &LogParams::default()).await.unwrap_err());
        assert_eq!(code, 404);

        // Errors of the kubelet come back with their code and message.
        let gone = LogParams {
            container: Some("gone".into()),
            ..LogParams::default()
        };
        let (code, message) = api_error(pods.logs("two", &gone).await.unwrap_err());
        assert_eq!(
            (code, message.as_str()),
            (404, "container \"gone\" in pod \"two\" is not running")
        );
        let bad = LogParams {
            tail_lines: Some(-2),
            ..LogParams::default()
        };
        let (code, message) = api_error(pods.logs("one", &bad).await.unwrap_err());
        assert_eq!(code, 400);
        assert!(message.starts_with("tailLines"), "{message}");

        // Follow: lines arrive as the kubelet sends them.
        let follow = LogParams {
            follow: true,
            ..LogParams::default()
        };
        let mut reader = pods.log_stream("one", &follow).await.unwrap();
        let tx = logs.follower().await;
        for line in ["first\n", "second\n"] {
            tx.unbounded_send(Ok(Bytes::from(line))).unwrap();
            let mut got = String::new();
            tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut got))
                .await
                .expect("a followed line arrives while the stream is open")
                .unwrap();
            assert_eq!(got, line);
        }
        drop(tx);
        let mut rest = String::new();
        tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut rest))
            .await
            .expect("the stream ends when the kubelet's does")
            .unwrap();
        assert_eq!(rest, "");

        if which_kubectl() {
            kubectl_logs(dir.path(), &url, &logs).await;
        }
    }

    fn which_kubectl() -> bool {
        std::process::Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    async fn kubectl_logs(dir: &std::path::Path, url: &str, logs: &TestLogs) {
        use tokio::io::AsyncBufReadExt as _;
        let kubeconfig = dir.join("kubeconfig");
        crate::apiserver::kubeconfig::write_kubeconfig(&kubeconfig, url, None, None).unwrap();
        let kubectl = |args: &[&str]| {
            let mut c = tokio::process::Command::new("kubectl");
            c.arg("--kubeconfig").arg(&kubeconfig).args(args);
            c
        };
        let out = kubectl(&["logs", "one"]).output().await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "log of default/one/app\n"
        );
        let out = kubectl(&["logs", "two", "-c", "a"]).output().await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "log of default/two/a\n"
        );
        // kubectl picks the first container itself when there are several.
        let out = kubectl(&["logs", "two"]).output().await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "log of default/two/a\n"
        );
        let out = kubectl(&["logs", "two", "-c", "zzz"])
            .output()
            .await
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("container zzz is not valid for pod two"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let mut child = kubectl(&["logs", "-f", "one"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let tx = logs.follower().await;
        for line in ["kubectl first\n", "kubectl second\n"] {
            tx.unbounded_send(Ok(Bytes::from(line))).unwrap();
            let mut got = String::new();
            tokio::time::timeout(Duration::from_secs(10), stdout.read_line(&mut got))
                .await
                .expect("kubectl logs -f prints each line as it comes")
                .unwrap();
            assert_eq!(got, line);
        }
        drop(tx);
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("kubectl logs -f ends when the log ends")
            .unwrap();
        assert!(status.success());
    }
}
