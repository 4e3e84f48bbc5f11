//! The kubelet-compatible HTTPS endpoint of `km executor`, for container logs.
//!
//! kube-apiserver (and km apiserver) answer `GET .../pods/NAME/log` by
//! calling the kubelet of the pod's node at
//! `https://<node address>:<status.daemonEndpoints.kubeletEndpoint.Port>/containerLogs/<namespace>/<pod>/<container>`
//! with the log options as query parameters, and streaming the answer back.
//! This module serves that URL, plus `/healthz`, over TLS: a self-signed
//! certificate for the node's name and address (kube-apiserver does not
//! verify the kubelet unless it is given `--kubelet-certificate-authority`)
//! or files given by flags.
//!
//! Query parameters have kubelet's names and meaning: `follow`, `tailLines`,
//! `sinceSeconds`, `sinceTime` (RFC 3339), `timestamps`, `previous`,
//! `limitBytes`. Booleans follow Kubernetes' query conversion (absent,
//! `false` or `0` is false; anything else is true). A value that is not a
//! number, a negative count, a malformed time or both `sinceSeconds` and
//! `sinceTime` is answered with 400 and a message naming the parameter.
//! The log itself comes from the executor's task manager through [`Logs`];
//! it is streamed as `text/plain`, chunk by chunk as it is produced, so
//! `kubectl logs -f` follows it.
//!
//! Clients are not authenticated: anyone who can reach the port can read
//! the logs of this node's containers. Bind it to an address only the API
//! server reaches, or put a firewall in front of it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::apiserver::tls::{self, TlsError};

/// How long open log streams may take to end once the endpoint stops.
const DRAIN: Duration = Duration::from_secs(5);

/// Query of `GET /containerLogs/{namespace}/{pod}/{container}` (kubelet
/// parameter names: `follow`, `tailLines`, `sinceSeconds`, `sinceTime` (RFC
/// 3339), `timestamps`, `previous`, `limitBytes`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogQuery {
    /// Keep the stream open and send new lines as they are written.
    pub follow: bool,
    /// Only the last this many lines.
    pub tail_lines: Option<u64>,
    /// Only lines written in the last this many seconds (at least 1).
    pub since_seconds: Option<u64>,
    /// Only lines written at or after this RFC 3339 time (as given, checked).
    pub since_time: Option<String>,
    /// Prefix every line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// The log of the previous (terminated) instance of the container.
    pub previous: bool,
    /// Stop after this many bytes (at least 1).
    pub limit_bytes: Option<u64>,
}

impl LogQuery {
    /// Parses a raw query string (`follow=true&tailLines=10`). Unknown
    /// parameters are ignored; a bad value gives a message naming the
    /// parameter. The last of repeated parameters wins.
    pub fn parse(raw: &str) -> Result<LogQuery, String> {
        let pairs: Vec<(String, String)> =
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
                &format!("/?{raw}")
                    .parse()
                    .map_err(|e| format!("the query {raw:?} is not valid: {e}"))?,
            )
            .map(|q| q.0)
            .map_err(|e| format!("the query {raw:?} is not valid: {e}"))?;
        let mut q = LogQuery::default();
        for (key, value) in &pairs {
            match key.as_str() {
                "follow" => q.follow = query_bool(value),
                "timestamps" => q.timestamps = query_bool(value),
                "previous" => q.previous = query_bool(value),
                "tailLines" => q.tail_lines = Some(count(key, value, 0)?),
                "sinceSeconds" => q.since_seconds = Some(count(key, value, 1)?),
                "limitBytes" => q.limit_bytes = Some(count(key, value, 1)?),
                "sinceTime" => {
                    value.parse::<k8s_openapi::jiff::Timestamp>().map_err(|_| {
                        format!(
                            "sinceTime: {value:?} is not an RFC 3339 time (e.g. 2024-01-02T15:04:05Z)"
                        )
                    })?;
                    q.since_time = Some(value.clone());
                }
                _ => {}
            }
        }
        if q.since_seconds.is_some() && q.since_time.is_some() {
            return Err(
                "sinceTime: at most one of sinceTime or sinceSeconds may be specified".to_string(),
            );
        }
        Ok(q)
    }
}

/// Kubernetes' query conversion of booleans: only `false` and `0` (any
/// case) are false.
fn query_bool(value: &str) -> bool {
    !matches!(value.to_ascii_lowercase().as_str(), "false" | "0")
}

/// A whole number of at least `min`.
fn count(key: &str, value: &str, min: u64) -> Result<u64, String> {
    let n: i64 = value
        .parse()
        .map_err(|_| format!("{key}: {value:?} is not an integer"))?;
    match u64::try_from(n) {
        Ok(n) if n >= min => Ok(n),
        _ if min == 0 => Err(format!(
            "{key}: must be greater than or equal to 0, not {n}"
        )),
        _ => Err(format!("{key}: must be greater than 0, not {n}")),
    }
}

/// What the executor's task manager provides (implemented by the lead).
pub trait Logs: Send + Sync + 'static {
    /// The log of that container (the previous instance with `previous`);
    /// Err(message) when there is none (404 with that message).
    fn logs(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        query: &LogQuery,
    ) -> Result<BoxStream<'static, Result<bytes::Bytes, String>>, String>;
}

/// Errors of the endpoint's set-up.
#[derive(Debug, thiserror::Error)]
pub enum KubeletApiError {
    /// The certificate could not be generated or the files could not be used.
    #[error("kubelet endpoint TLS: {0}")]
    Tls(#[from] TlsError),
    /// The address could not be bound.
    #[error("kubelet endpoint: cannot listen on {addr}: {source} (in use? pick another port)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

/// TLS material for the endpoint: a self-signed certificate (rcgen) for the
/// node name and host IP, or files given by flags.
pub struct Tls {
    config: Arc<rustls::ServerConfig>,
    origin: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// A fresh self-signed certificate (kept in memory only) covering
    /// `names` (DNS names, or IP addresses as text) and `ips`.
    pub fn self_signed(names: &[String], ips: &[IpAddr]) -> Result<Tls, KubeletApiError> {
        let cn = names.first().map_or("km-executor", String::as_str);
        Ok(Tls {
            config: tls::self_signed_config(cn, names, ips)?,
            origin: format!("self-signed for {names:?} {ips:?}"),
        })
    }

    /// A certificate chain (PEM, leaf first) and its private key (PEM).
    pub fn from_files(cert: &Path, key: &Path) -> Result<Tls, KubeletApiError> {
        Ok(Tls {
            config: tls::load_server_config(cert, key)?,
            origin: format!(
                "{} / {}",
                PathBuf::from(cert).display(),
                PathBuf::from(key).display()
            ),
        })
    }
}

#[derive(Clone)]
struct Shared {
    logs: Arc<dyn Logs>,
    stop: CancellationToken,
}

fn text(code: StatusCode, body: impl Into<String>) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { text(StatusCode::OK, "ok") }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .fallback(|req: axum::extract::Request| async move {
            text(
                StatusCode::NOT_FOUND,
                format!(
                    "{} {}: not served here (km executor serves /healthz and /containerLogs/NAMESPACE/POD/CONTAINER)",
                    req.method(),
                    req.uri().path()
                ),
            )
        })
        .with_state(shared)
}

async fn container_logs(
    State(s): State<Shared>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = match LogQuery::parse(raw.as_deref().unwrap_or("")) {
        Ok(q) => q,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let stream = match s.logs.logs(&namespace, &pod, &container, &query) {
        Ok(stream) => stream,
        Err(message) => return text(StatusCode::NOT_FOUND, message),
    };
    tracing::debug!(%namespace, %pod, %container, ?query, "serving container log");
    let (ns, p, c) = (namespace, pod, container);
    let body = stream
        .map(move |chunk| {
            chunk.map_err(|e| {
                tracing::warn!(namespace = %ns, pod = %p, container = %c, error = %e, "container log stream failed");
                std::io::Error::other(e)
            })
        })
        .take_until(s.stop.cancelled_owned());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(body),
    )
        .into_response()
}

/// Binds and serves until `stop`: `GET /healthz` → "ok",
/// `GET /containerLogs/...` streaming text/plain (chunked, flushed as it
/// comes so `kubectl logs -f` follows), bad query values → 400 with a
/// message naming the parameter. Returns the bound address (port 0 allowed)
/// once listening; the serving runs on a spawned task.
pub async fn serve(
    addr: SocketAddr,
    tls: Tls,
    logs: Arc<dyn Logs>,
    stop: CancellationToken,
) -> Result<SocketAddr, KubeletApiError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| KubeletApiError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| KubeletApiError::Bind { addr, source })?;
    let app = router(Shared {
        logs,
        stop: stop.clone(),
    });
    tracing::info!(address = %bound, tls = %tls.origin, "serving the kubelet endpoint (container logs), without client authentication");
    tokio::spawn(async move {
        if let Err(e) = tls::serve_tls(listener, tls.config, app, stop, DRAIN).await {
            tracing::warn!(error = %e, "kubelet endpoint stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::channel::mpsc;
    use std::sync::Mutex;

    /// Fixed logs for `ns/web/app`, a channel-fed stream for `ns/web/tail`.
    struct TestLogs {
        follow: Mutex<Option<mpsc::UnboundedReceiver<Result<Bytes, String>>>>,
        seen: Mutex<Vec<LogQuery>>,
    }

    impl Logs for TestLogs {
        fn logs(
            &self,
            namespace: &str,
            pod: &str,
            container: &str,
            query: &LogQuery,
        ) -> Result<BoxStream<'static, Result<Bytes, String>>, String> {
            self.seen.lock().unwrap().push(query.clone());
            match (namespace, pod, container) {
                ("ns", "web", "app") => {
                    let chunks: Vec<Result<Bytes, String>> = if query.previous {
                        vec![Ok(Bytes::from_static(b"old\n"))]
                    } else {
                        vec![
                            Ok(Bytes::from_static(b"one\n")),
                            Ok(Bytes::from_static(b"two\n")),
                        ]
                    };
                    Ok(futures::stream::iter(chunks).boxed())
                }
                ("ns", "web", "tail") => self
                    .follow
                    .lock()
                    .unwrap()
                    .take()
                    .map(|rx| rx.boxed())
                    .ok_or_else(|| "already followed".to_string()),
                _ => Err(format!(
                    "container {container:?} of pod {namespace}/{pod} not found"
                )),
            }
        }
    }

    fn client() -> reqwest::Client {
        crate::apiserver::podlog::kubelet_client().unwrap()
    }

    #[test]
    fn queries_parse_with_kubelet_names() {
        let q = LogQuery::parse(
            "follow=true&tailLines=10&timestamps=1&previous=false&limitBytes=5&sinceTime=2024-01-02T15:04:05Z&container=x",
        )
        .unwrap();
        assert_eq!(
            q,
            LogQuery {
                follow: true,
                tail_lines: Some(10),
                since_seconds: None,
                since_time: Some("2024-01-02T15:04:05Z".into()),
                timestamps: true,
                previous: false,
                limit_bytes: Some(5),
            }
        );
        assert_eq!(LogQuery::parse("").unwrap(), LogQuery::default());
        assert!(LogQuery::parse("follow=False").unwrap() == LogQuery::default());
        assert_eq!(
            LogQuery::parse("sinceSeconds=30").unwrap().since_seconds,
            Some(30)
        );
        for (raw, names) in [
            ("tailLines=abc", "tailLines"),
            ("tailLines=-1", "tailLines"),
            ("sinceSeconds=0", "sinceSeconds"),
            ("limitBytes=0", "limitBytes"),
            ("sinceTime=yesterday", "sinceTime"),
            ("sinceSeconds=5&sinceTime=2024-01-02T15:04:05Z", "sinceTime"),
        ] {
            let e = LogQuery::parse(raw).unwrap_err();
            assert!(e.starts_with(names), "{raw}: {e}");
        }
    }

    #[test]
    fn self_signed_rejects_names_that_are_no_dns_names() {
        assert!(Tls::self_signed(&["bad name!".into()], &[]).is_err());
        assert!(Tls::self_signed(&["node-1".into()], &["10.0.0.1".parse().unwrap()]).is_ok());
    }

    #[test]
    fn certificates_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["node-1".to_string()]).unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        assert!(Tls::from_files(&cert, &key).is_ok());
        let missing = dir.path().join("missing.crt");
        let e = Tls::from_files(&missing, &key).unwrap_err().to_string();
        assert!(e.contains("missing.crt"), "{e}");
    }

    #[tokio::test]
    async fn serves_logs_over_https_and_follows() {
        let (tx, rx) = mpsc::unbounded();
        let logs = Arc::new(TestLogs {
            follow: Mutex::new(Some(rx)),
            seen: Mutex::new(Vec::new()),
        });
        let stop = CancellationToken::new();
        let tls = Tls::self_signed(&["localhost".into()], &["127.0.0.1".parse().unwrap()]).unwrap();
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            tls,
            logs.clone(),
            stop.clone(),
        )
        .await
        .unwrap();
        assert_ne!(addr.port(), 0);
        let base = format!("https://{addr}");
        let c = client();

        let r = c.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");

        let r = c
            .get(format!(
                "{base}/containerLogs/ns/web/app?tailLines=5&timestamps=true"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain");
        assert_eq!(r.text().await.unwrap(), "one\ntwo\n");
        assert_eq!(
            logs.seen.lock().unwrap().last().cloned(),
            Some(LogQuery {
                tail_lines: Some(5),
                timestamps: true,
                ..LogQuery::default()
            })
        );

        let r = c
            .get(format!("{base}/containerLogs/ns/web/app?previous=true"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "old\n");

        let r = c
            .get(format!("{base}/containerLogs/ns/web/nope"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(
            r.text().await.unwrap(),
            "container \"nope\" of pod ns/web not found"
        );

        let r = c
            .get(format!("{base}/containerLogs/ns/web/app?tailLines=many"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("tailLines"));

        let r = c.get(format!("{base}/other")).send().await.unwrap();
        assert_eq!(r.status(), 404);

        // Follow: each chunk arrives while the stream is still open.
        let r = c
            .get(format!("{base}/containerLogs/ns/web/tail?follow=true"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut body = r.bytes_stream();
        for line in ["first\n", "second\n"] {
            tx.unbounded_send(Ok(Bytes::from(line))).unwrap();
            let got = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .expect("a followed chunk arrives before the stream ends")
                .unwrap()
                .unwrap();
            assert_eq!(got, line.as_bytes());
        }
        assert!(logs.seen.lock().unwrap().last().unwrap().follow);

        // Stopping the endpoint ends an open follow.
        stop.cancel();
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(_)) = body.next().await {}
        })
        .await;
        assert!(
            end.is_ok(),
            "the follow stream ends when the endpoint stops"
        );
        drop(tx);
    }
}
