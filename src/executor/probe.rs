//! Container probes (liveness, readiness, startup), run the way a kubelet
//! runs them.
//!
//! [`check`] makes one attempt with the probe's handler: `exec` in the
//! container (through an [`Exec`], so this module does not depend on
//! Docker), `httpGet` or `tcpSocket` against the pod's IP. [`run`] repeats
//! it every `periodSeconds` after `initialDelaySeconds` and reports each
//! change of verdict once `successThreshold` / `failureThreshold`
//! consecutive results agree ([`Thresholds`]).

use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::watch;

/// The `User-Agent` of HTTP probes unless the probe sets one: the kubelet's,
/// for the Kubernetes version km serves.
pub const USER_AGENT: &str = "kube-probe/1.35";

/// What `check` reports for gRPC probes.
pub const GRPC_UNSUPPORTED: &str = "grpc probes are not supported by km executor";

/// What runs a command inside a container (implemented on the Docker
/// runtime; this module stays independent of Docker).
pub trait Exec: Send + Sync {
    /// Runs `cmd` in the container with id `container_id`, giving up after
    /// `timeout`; returns the exit code and the combined output, or why the
    /// command could not be run (or timed out).
    fn exec<'a>(
        &'a self,
        container_id: &'a str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(i64, String), String>>;
}

/// Which probe of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// Failing restarts the container.
    Liveness,
    /// Decides the container's `ready`.
    Readiness,
    /// Holds the other probes until it succeeds once.
    Startup,
}

impl ProbeKind {
    /// The name the kubelet uses in events (`Liveness`, `Readiness`,
    /// `Startup`).
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }
}

/// The result of one probe attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The check passed.
    Success,
    /// The check failed, and why.
    Failure(String),
}

impl Outcome {
    /// True for [`Outcome::Success`].
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }
}

/// Where probes go: the pod's IP as seen from the host (the infra
/// container's bridge address), and the Docker id of the probed container.
#[derive(Clone)]
pub struct Target {
    /// The pod's IP, the default host of `httpGet` and `tcpSocket`.
    pub ip: IpAddr,
    /// The Docker id of the probed container, for `exec`.
    pub container_id: String,
    /// Runs `exec` probes.
    pub exec: Arc<dyn Exec>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("ip", &self.ip)
            .field("container_id", &self.container_id)
            .finish_non_exhaustive()
    }
}

/// `timeoutSeconds`, default 1 s.
fn timeout_of(probe: &Probe) -> Duration {
    seconds(probe.timeout_seconds, 1)
}

/// A positive number of seconds, or `default` when absent or not positive.
fn seconds(value: Option<i32>, default: u64) -> Duration {
    match value {
        Some(v) if v > 0 => Duration::from_secs(v.unsigned_abs().into()),
        _ => Duration::from_secs(default),
    }
}

/// One probe attempt: exec (exit 0 = success), httpGet (HTTP or HTTPS
/// without certificate checks, host defaulting to the target ip, named or
/// numeric port resolved against the container's ports, path, httpHeaders,
/// success for 200..400, redirects not followed, body ignored), tcpSocket
/// (connect within the timeout), grpc → failure (unsupported). Every
/// attempt is bounded by `timeoutSeconds` (default 1).
pub async fn check(probe: &Probe, container: &Container, target: &Target) -> Outcome {
    let timeout = timeout_of(probe);
    if let Some(exec) = &probe.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        return check_exec(cmd, timeout, target).await;
    }
    if let Some(http) = &probe.http_get {
        return check_http(http, container, target, timeout).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        return check_tcp(tcp, container, target, timeout).await;
    }
    if probe.grpc.is_some() {
        return Outcome::Failure(GRPC_UNSUPPORTED.to_owned());
    }
    Outcome::Failure("probe has no handler: set one of exec, httpGet, tcpSocket".to_owned())
}

async fn check_exec(cmd: Vec<String>, timeout: Duration, target: &Target) -> Outcome {
    if cmd.is_empty() {
        return Outcome::Failure("exec probe has an empty command".to_owned());
    }
    let shown = format!("{cmd:?}");
    // The runner honours the timeout; the extra second only guards against
    // one that does not.
    let run = target.exec.exec(&target.container_id, cmd, timeout);
    match tokio::time::timeout(timeout + Duration::from_secs(1), run).await {
        Err(_) => Outcome::Failure(format!(
            "command {shown} timed out after {}s",
            timeout.as_secs()
        )),
        Ok(Err(e)) => Outcome::Failure(format!("command {shown} could not run: {e}")),
        Ok(Ok((0, _))) => Outcome::Success,
        Ok(Ok((code, output))) => {
            let output = output.trim();
            if output.is_empty() {
                Outcome::Failure(format!("command {shown} exited with code {code}"))
            } else {
                Outcome::Failure(format!("command {shown} exited with code {code}: {output}"))
            }
        }
    }
}

/// Resolves a probe port: a number, or the name of one of the container's
/// ports (or a number written as a string); valid ports are 1..65535.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => {
            let named = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| i64::from(p.container_port));
            match named {
                Some(n) => n,
                None => name.parse::<i64>().map_err(|_| {
                    format!(
                        "port {name:?} is neither a number nor the name of a port of container {:?}",
                        container.name
                    )
                })?,
            }
        }
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

/// `host:port`, with brackets around IPv6 addresses.
fn host_port(host: &str, port: u16) -> String {
    if host.parse::<Ipv6Addr>().is_ok() {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn host_or_target(host: Option<&String>, target: &Target) -> String {
    host.filter(|h| !h.is_empty())
        .cloned()
        .unwrap_or_else(|| target.ip.to_string())
}

async fn check_tcp(
    tcp: &TCPSocketAction,
    container: &Container,
    target: &Target,
    timeout: Duration,
) -> Outcome {
    let port = match resolve_port(&tcp.port, container) {
        Ok(p) => p,
        Err(e) => return Outcome::Failure(e),
    };
    let host = host_or_target(tcp.host.as_ref(), target);
    let addr = host_port(&host, port);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr.as_str())).await {
        Ok(Ok(_stream)) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(format!("dial tcp {addr}: {e}")),
        Err(_) => Outcome::Failure(format!("dial tcp {addr}: i/o timeout")),
    }
}

async fn check_http(
    http: &HTTPGetAction,
    container: &Container,
    target: &Target,
    timeout: Duration,
) -> Outcome {
    let port = match resolve_port(&http.port, container) {
        Ok(p) => p,
        Err(e) => return Outcome::Failure(e),
    };
    let scheme = match http.scheme.as_deref() {
        None | Some("") => "http".to_owned(),
        Some(s) => s.to_ascii_lowercase(),
    };
    if scheme != "http" && scheme != "https" {
        return Outcome::Failure(format!(
            "unsupported httpGet scheme {scheme:?}: use HTTP or HTTPS"
        ));
    }
    let host = host_or_target(http.host.as_ref(), target);
    let path = http.path.as_deref().unwrap_or("");
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let url = format!("{scheme}://{}{path}", host_port(&host, port));

    let mut headers = reqwest::header::HeaderMap::new();
    for h in http.http_headers.iter().flatten() {
        let name = match reqwest::header::HeaderName::from_bytes(h.name.as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                return Outcome::Failure(format!("invalid httpGet header name {:?}", h.name));
            }
        };
        let value = match reqwest::header::HeaderValue::from_str(&h.value) {
            Ok(v) => v,
            Err(_) => {
                return Outcome::Failure(format!("invalid value for httpGet header {:?}", h.name));
            }
        };
        headers.append(name, value);
    }
    if !headers.contains_key(reqwest::header::USER_AGENT) {
        headers.insert(
            reqwest::header::USER_AGENT,
            reqwest::header::HeaderValue::from_static(USER_AGENT),
        );
    }
    if !headers.contains_key(reqwest::header::ACCEPT) {
        headers.insert(
            reqwest::header::ACCEPT,
            reqwest::header::HeaderValue::from_static("*/*"),
        );
    }

    let client = match http_client() {
        Ok(c) => c,
        Err(e) => return Outcome::Failure(e),
    };
    let request = client.get(&url).headers(headers).timeout(timeout);
    match request.send().await {
        Ok(response) => {
            let code = response.status().as_u16();
            if (200..400).contains(&code) {
                Outcome::Success
            } else {
                Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
            }
        }
        Err(e) if e.is_timeout() => Outcome::Failure(format!(
            "Get {url:?}: no response within {}s",
            timeout.as_secs()
        )),
        Err(e) => Outcome::Failure(format!("Get {url:?}: {}", error_chain(&e))),
    }
}

/// An error and its sources, joined with `: `.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// The HTTP client of all probes, built once: no proxies, no redirects,
/// no pooled connections (each probe opens its own, as the kubelet's do),
/// TLS on the ring provider accepting any server certificate.
fn http_client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(build_http_client)
        .as_ref()
        .map_err(Clone::clone)
}

fn build_http_client() -> Result<reqwest::Client, String> {
    let tls = crate::insecure_tls::client_config()
        .map_err(|e| format!("cannot configure TLS for HTTPS probes: {e}"))?;
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| {
            format!(
                "cannot build the HTTP client of probes: {}",
                error_chain(&e)
            )
        })
}

/// Pure threshold state, the heart of [`run`]: a verdict changes after
/// `successThreshold` (default 1) consecutive successes or
/// `failureThreshold` (default 3) consecutive failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thresholds {
    success_threshold: u32,
    failure_threshold: u32,
    /// The result of the current run of equal results, and its length.
    last: Option<bool>,
    run: u32,
    verdict: Option<bool>,
}

impl Thresholds {
    /// Thresholds of `probe` (absent or non-positive values take the
    /// defaults 1 and 3).
    pub fn new(probe: &Probe) -> Self {
        let positive = |v: Option<i32>, default: u32| match v {
            Some(v) if v > 0 => v.unsigned_abs(),
            _ => default,
        };
        Thresholds {
            success_threshold: positive(probe.success_threshold, 1),
            failure_threshold: positive(probe.failure_threshold, 3),
            last: None,
            run: 0,
            verdict: None,
        }
    }

    /// Counts one result; `Some(new verdict)` when the verdict changes
    /// (including the first one).
    pub fn step(&mut self, outcome: &Outcome) -> Option<bool> {
        let passed = outcome.is_success();
        if self.last == Some(passed) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(passed);
            self.run = 1;
        }
        let needed = if passed {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        if self.run < needed || self.verdict == Some(passed) {
            return None;
        }
        self.verdict = Some(passed);
        Some(passed)
    }

    /// The current verdict, `None` before the thresholds were first met.
    pub fn verdict(&self) -> Option<bool> {
        self.verdict
    }
}

/// Runs a probe for the container's lifetime: waits initialDelaySeconds,
/// then every periodSeconds (default 10) checks and applies the thresholds;
/// sends each *change* of verdict on `tx` (true = passing), the first once
/// the thresholds are first met. A startup probe stops probing once it has
/// passed. Never returns; the caller aborts the task when the container
/// stops.
pub async fn run(
    kind: ProbeKind,
    probe: Probe,
    container: Container,
    target: Target,
    tx: watch::Sender<Option<bool>>,
) {
    let initial_delay = match probe.initial_delay_seconds {
        Some(v) if v > 0 => Duration::from_secs(v.unsigned_abs().into()),
        _ => Duration::ZERO,
    };
    let period = seconds(probe.period_seconds, 10);
    run_every(
        kind,
        &probe,
        &container,
        &target,
        &tx,
        initial_delay,
        period,
    )
    .await
}

/// [`run`] with its delays given directly (tests use short ones).
async fn run_every(
    kind: ProbeKind,
    probe: &Probe,
    container: &Container,
    target: &Target,
    tx: &watch::Sender<Option<bool>>,
    initial_delay: Duration,
    period: Duration,
) {
    tokio::time::sleep(initial_delay).await;
    let mut thresholds = Thresholds::new(probe);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let outcome = check(probe, container, target).await;
        if let Outcome::Failure(why) = &outcome {
            tracing::debug!(
                probe = kind.name(),
                container = %container.name,
                reason = %why,
                "probe failed"
            );
        }
        if let Some(passing) = thresholds.step(&outcome) {
            tracing::info!(
                probe = kind.name(),
                container = %container.name,
                passing,
                "probe verdict changed"
            );
            tx.send_replace(Some(passing));
            if kind == ProbeKind::Startup && passing {
                // Startup probes stop once they pass.
                futures::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use axum::Router;
    use axum::http::{HeaderMap, StatusCode, Uri, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use k8s_openapi::api::core::v1::{ContainerPort, ExecAction, GRPCAction, HTTPHeader};
    use tokio::net::TcpListener;

    /// Runs probe commands as processes on the host, standing in for
    /// `docker exec`.
    struct ExecOnHost {
        calls: AtomicUsize,
    }

    impl ExecOnHost {
        fn new() -> Arc<Self> {
            Arc::new(ExecOnHost {
                calls: AtomicUsize::new(0),
            })
        }
    }

    impl Exec for ExecOnHost {
        fn exec<'a>(
            &'a self,
            _container_id: &'a str,
            cmd: Vec<String>,
            timeout: Duration,
        ) -> BoxFuture<'a, Result<(i64, String), String>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let (program, args) = cmd.split_first().ok_or("empty command")?;
                let mut command = tokio::process::Command::new(program);
                command.args(args).kill_on_drop(true);
                let out = tokio::time::timeout(timeout, command.output())
                    .await
                    .map_err(|_| format!("timed out after {timeout:?}"))?
                    .map_err(|e| e.to_string())?;
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                Ok((i64::from(out.status.code().unwrap_or(-1)), text))
            })
        }
    }

    fn target(exec: Arc<ExecOnHost>) -> Target {
        Target {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            container_id: "c0ffee".to_owned(),
            exec,
        }
    }

    fn app(ports: &[(&str, u16)]) -> Container {
        Container {
            name: "app".to_owned(),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| ContainerPort {
                        name: Some((*name).to_owned()),
                        container_port: i32::from(*port),
                        ..ContainerPort::default()
                    })
                    .collect(),
            ),
            ..Container::default()
        }
    }

    fn exec_probe(cmd: &[&str]) -> Probe {
        Probe {
            exec: Some(ExecAction {
                command: Some(cmd.iter().map(|s| (*s).to_owned()).collect()),
            }),
            ..Probe::default()
        }
    }

    fn http_probe(port: IntOrString, path: &str) -> Probe {
        Probe {
            http_get: Some(HTTPGetAction {
                port,
                path: Some(path.to_owned()),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        }
    }

    fn tcp_probe(port: IntOrString) -> Probe {
        Probe {
            tcp_socket: Some(TCPSocketAction { port, host: None }),
            ..Probe::default()
        }
    }

    fn failed(o: &Outcome) -> &str {
        match o {
            Outcome::Failure(why) => why,
            Outcome::Success => panic!("expected a failure"),
        }
    }

    /// A port nothing listens on (bound, then released).
    async fn closed_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").port()
    }

    fn router() -> Router {
        Router::new()
            .route("/ok", get(|| async { "fine" }))
            .route(
                "/redirect",
                get(|| async {
                    (
                        StatusCode::FOUND,
                        [(header::LOCATION, "http://redirect-target.invalid/fail")],
                    )
                }),
            )
            .route(
                "/fail",
                get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "broken") }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route(
                "/headers",
                get(|headers: HeaderMap| async move {
                    let h = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let want = (
                        h("x-probe").as_deref() == Some("yes"),
                        h("user-agent").as_deref() == Some(USER_AGENT),
                        h("accept").as_deref() == Some("*/*"),
                        h("host").as_deref() == Some("probe.example"),
                    );
                    if want == (true, true, true, true) {
                        StatusCode::OK.into_response()
                    } else {
                        (StatusCode::BAD_REQUEST, format!("{headers:?}")).into_response()
                    }
                }),
            )
            .route(
                "/agent",
                get(|headers: HeaderMap| async move {
                    match headers.get("user-agent").and_then(|v| v.to_str().ok()) {
                        Some("custom/1") => StatusCode::NO_CONTENT,
                        _ => StatusCode::BAD_REQUEST,
                    }
                }),
            )
            .route(
                "/query",
                get(|uri: Uri| async move {
                    if uri.query() == Some("x=1") {
                        StatusCode::OK
                    } else {
                        StatusCode::NOT_FOUND
                    }
                }),
            )
    }

    /// An HTTP server on 127.0.0.1; returns its port.
    async fn http_server() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router()).await;
        });
        port
    }

    /// An HTTPS server with a self-signed certificate on 127.0.0.1.
    async fn https_server() -> u16 {
        let cert = rcgen::generate_simple_self_signed(vec!["somewhere.else".to_owned()])
            .expect("certificate");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(router());
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn http_get_outcomes() {
        let port = http_server().await;
        let tgt = target(ExecOnHost::new());
        let c = app(&[("web", port)]);
        let numeric = IntOrString::Int(i32::from(port));

        let ok = check(&http_probe(numeric.clone(), "/ok"), &c, &tgt).await;
        assert_eq!(ok, Outcome::Success);
        // Redirects count as success and are not followed (the target
        // host does not resolve).
        let redirect = check(&http_probe(numeric.clone(), "/redirect"), &c, &tgt).await;
        assert_eq!(redirect, Outcome::Success);
        let fail = check(&http_probe(numeric.clone(), "/fail"), &c, &tgt).await;
        assert_eq!(failed(&fail), "HTTP probe failed with statuscode: 500");
        let missing = check(&http_probe(numeric.clone(), "/nowhere"), &c, &tgt).await;
        assert_eq!(failed(&missing), "HTTP probe failed with statuscode: 404");
        // Path without a leading slash, with a query.
        let query = check(&http_probe(numeric.clone(), "query?x=1"), &c, &tgt).await;
        assert_eq!(query, Outcome::Success);

        // Named port, and a number written as a string.
        let named = check(
            &http_probe(IntOrString::String("web".into()), "/ok"),
            &c,
            &tgt,
        )
        .await;
        assert_eq!(named, Outcome::Success);
        let text = check(
            &http_probe(IntOrString::String(port.to_string()), "/ok"),
            &c,
            &tgt,
        )
        .await;
        assert_eq!(text, Outcome::Success);
        let unknown = check(
            &http_probe(IntOrString::String("admin".into()), "/ok"),
            &c,
            &tgt,
        )
        .await;
        assert!(failed(&unknown).contains("\"admin\""), "{unknown:?}");
        let zero = check(&http_probe(IntOrString::Int(70000), "/ok"), &c, &tgt).await;
        assert_eq!(failed(&zero), "invalid port number: 70000");

        // Headers: defaults, custom ones, Host.
        let mut p = http_probe(numeric.clone(), "/headers");
        if let Some(h) = p.http_get.as_mut() {
            h.http_headers = Some(vec![
                HTTPHeader {
                    name: "X-Probe".into(),
                    value: "yes".into(),
                },
                HTTPHeader {
                    name: "Host".into(),
                    value: "probe.example".into(),
                },
            ]);
        }
        assert_eq!(check(&p, &c, &tgt).await, Outcome::Success);
        let mut p = http_probe(numeric.clone(), "/agent");
        if let Some(h) = p.http_get.as_mut() {
            h.http_headers = Some(vec![HTTPHeader {
                name: "User-Agent".into(),
                value: "custom/1".into(),
            }]);
        }
        assert_eq!(check(&p, &c, &tgt).await, Outcome::Success);

        // Explicit host.
        let mut p = http_probe(numeric.clone(), "/ok");
        if let Some(h) = p.http_get.as_mut() {
            h.host = Some("127.0.0.1".into());
        }
        let other_target = Target {
            ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            ..tgt.clone()
        };
        assert_eq!(check(&p, &c, &other_target).await, Outcome::Success);

        // Timeout (default 1 s).
        let started = Instant::now();
        let slow = check(&http_probe(numeric.clone(), "/slow"), &c, &tgt).await;
        assert!(failed(&slow).contains("no response within 1s"), "{slow:?}");
        assert!(started.elapsed() < Duration::from_secs(3));

        // Nothing listening.
        let closed = closed_port().await;
        let refused = check(
            &http_probe(IntOrString::Int(i32::from(closed)), "/ok"),
            &c,
            &tgt,
        )
        .await;
        assert!(
            failed(&refused).starts_with("Get \"http://127.0.0.1:"),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn https_without_certificate_checks() {
        let port = https_server().await;
        let tgt = target(ExecOnHost::new());
        let c = app(&[]);
        let mut p = http_probe(IntOrString::Int(i32::from(port)), "/ok");
        if let Some(h) = p.http_get.as_mut() {
            h.scheme = Some("HTTPS".into());
        }
        assert_eq!(check(&p, &c, &tgt).await, Outcome::Success);
        if let Some(h) = p.http_get.as_mut() {
            h.path = Some("/fail".into());
        }
        assert_eq!(
            failed(&check(&p, &c, &tgt).await),
            "HTTP probe failed with statuscode: 500"
        );
        // Plain HTTP against the TLS port fails.
        if let Some(h) = p.http_get.as_mut() {
            h.scheme = None;
            h.path = Some("/ok".into());
        }
        assert!(matches!(check(&p, &c, &tgt).await, Outcome::Failure(_)));
    }

    #[tokio::test]
    async fn tcp_socket_outcomes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let tgt = target(ExecOnHost::new());
        let c = app(&[("db", port)]);
        let open = check(&tcp_probe(IntOrString::Int(i32::from(port))), &c, &tgt).await;
        assert_eq!(open, Outcome::Success);
        let named = check(&tcp_probe(IntOrString::String("db".into())), &c, &tgt).await;
        assert_eq!(named, Outcome::Success);
        drop(listener);
        let closed = closed_port().await;
        let refused = check(&tcp_probe(IntOrString::Int(i32::from(closed))), &c, &tgt).await;
        assert!(
            failed(&refused).starts_with(&format!("dial tcp 127.0.0.1:{closed}: ")),
            "{refused:?}"
        );
        // Unroutable address: bounded by the timeout.
        let mut p = tcp_probe(IntOrString::Int(9));
        if let Some(t) = p.tcp_socket.as_mut() {
            t.host = Some("192.0.2.1".into());
        }
        let started = Instant::now();
        assert!(matches!(check(&p, &c, &tgt).await, Outcome::Failure(_)));
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn exec_outcomes() {
        let exec = ExecOnHost::new();
        let tgt = target(exec.clone());
        let c = app(&[]);
        assert_eq!(
            check(&exec_probe(&["sh", "-c", "exit 0"]), &c, &tgt).await,
            Outcome::Success
        );
        let bad = check(&exec_probe(&["sh", "-c", "echo not yet; exit 3"]), &c, &tgt).await;
        assert!(
            failed(&bad).contains("exited with code 3: not yet"),
            "{bad:?}"
        );
        let mut slow = exec_probe(&["sleep", "5"]);
        slow.timeout_seconds = Some(1);
        let started = Instant::now();
        let timed_out = check(&slow, &c, &tgt).await;
        assert!(failed(&timed_out).contains("timed out"), "{timed_out:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        let missing = check(&exec_probe(&["/no/such/program"]), &c, &tgt).await;
        assert!(failed(&missing).contains("could not run"), "{missing:?}");
        let empty = check(&exec_probe(&[]), &c, &tgt).await;
        assert!(failed(&empty).contains("empty command"));
        assert_eq!(exec.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn grpc_and_empty_probes_fail() {
        let tgt = target(ExecOnHost::new());
        let p = Probe {
            grpc: Some(GRPCAction {
                port: 9000,
                service: None,
            }),
            ..Probe::default()
        };
        assert_eq!(
            check(&p, &app(&[]), &tgt).await,
            Outcome::Failure(GRPC_UNSUPPORTED.to_owned())
        );
        assert!(matches!(
            check(&Probe::default(), &app(&[]), &tgt).await,
            Outcome::Failure(_)
        ));
    }

    fn steps(th: &mut Thresholds, results: &str) -> Vec<Option<bool>> {
        results
            .chars()
            .map(|c| {
                let o = if c == 'S' {
                    Outcome::Success
                } else {
                    Outcome::Failure("no".into())
                };
                th.step(&o)
            })
            .collect()
    }

    #[test]
    fn thresholds_defaults() {
        let mut th = Thresholds::new(&Probe::default());
        assert_eq!(th.verdict(), None);
        // First success passes at once (successThreshold 1).
        assert_eq!(steps(&mut th, "SS"), [Some(true), None]);
        // Three failures in a row to fail; interrupted runs start over.
        assert_eq!(
            steps(&mut th, "FFSFFF"),
            [None, None, None, None, None, Some(false)]
        );
        assert_eq!(th.verdict(), Some(false));
        assert_eq!(steps(&mut th, "FFS"), [None, None, Some(true)]);
    }

    #[test]
    fn thresholds_first_verdict_and_custom_values() {
        let probe = Probe {
            success_threshold: Some(2),
            failure_threshold: Some(1),
            ..Probe::default()
        };
        let mut th = Thresholds::new(&probe);
        // Nothing until a threshold is met; then failures count at once.
        assert_eq!(steps(&mut th, "SF"), [None, Some(false)]);
        assert_eq!(steps(&mut th, "SFSS"), [None, None, None, Some(true)]);
        assert_eq!(steps(&mut th, "SSF"), [None, None, Some(false)]);
        // Starting with failures under the default threshold of 3.
        let mut th = Thresholds::new(&Probe {
            failure_threshold: Some(0),
            ..Probe::default()
        });
        assert_eq!(steps(&mut th, "FFF"), [None, None, Some(false)]);
    }

    async fn next_verdict(rx: &mut watch::Receiver<Option<bool>>) -> Option<bool> {
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("a verdict within 10 s")
            .expect("sender alive");
        *rx.borrow_and_update()
    }

    #[tokio::test]
    async fn run_sends_verdict_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag = dir.path().join("ready");
        let flag_text = flag.to_string_lossy().into_owned();
        let mut probe = exec_probe(&["test", "-e", &flag_text]);
        probe.success_threshold = Some(2);
        probe.failure_threshold = Some(2);
        let exec = ExecOnHost::new();
        let tgt = target(exec.clone());
        let (tx, mut rx) = watch::channel(None);
        let c = app(&[]);
        let task = tokio::spawn(async move {
            run_every(
                ProbeKind::Readiness,
                &probe,
                &c,
                &tgt,
                &tx,
                Duration::ZERO,
                Duration::from_millis(30),
            )
            .await
        });
        assert_eq!(next_verdict(&mut rx).await, Some(false));
        assert!(exec.calls.load(Ordering::SeqCst) >= 2);
        // No repeats while the verdict holds.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!rx.has_changed().expect("sender alive"));
        std::fs::write(&flag, b"").expect("write flag");
        assert_eq!(next_verdict(&mut rx).await, Some(true));
        std::fs::remove_file(&flag).expect("remove flag");
        assert_eq!(next_verdict(&mut rx).await, Some(false));
        task.abort();
    }

    #[tokio::test]
    async fn run_waits_the_initial_delay() {
        let exec = ExecOnHost::new();
        let tgt = target(exec.clone());
        let (tx, mut rx) = watch::channel(None);
        let probe = exec_probe(&["true"]);
        let c = app(&[]);
        let started = Instant::now();
        let task = tokio::spawn(async move {
            run_every(
                ProbeKind::Liveness,
                &probe,
                &c,
                &tgt,
                &tx,
                Duration::from_millis(400),
                Duration::from_millis(30),
            )
            .await
        });
        assert_eq!(next_verdict(&mut rx).await, Some(true));
        assert!(started.elapsed() >= Duration::from_millis(400));
        task.abort();
    }

    #[tokio::test]
    async fn startup_probe_stops_once_passed() {
        let exec = ExecOnHost::new();
        let tgt = target(exec.clone());
        let (tx, mut rx) = watch::channel(None);
        let probe = exec_probe(&["true"]);
        let c = app(&[]);
        let task = tokio::spawn(async move {
            run_every(
                ProbeKind::Startup,
                &probe,
                &c,
                &tgt,
                &tx,
                Duration::ZERO,
                Duration::from_millis(20),
            )
            .await
        });
        assert_eq!(next_verdict(&mut rx).await, Some(true));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(exec.calls.load(Ordering::SeqCst), 1);
        task.abort();
    }

    #[tokio::test]
    async fn public_run_probes_at_once_and_fails_after_three() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, mut rx) = watch::channel(None);
        let task = tokio::spawn(run(
            ProbeKind::Readiness,
            tcp_probe(IntOrString::Int(i32::from(port))),
            app(&[]),
            target(ExecOnHost::new()),
            tx,
        ));
        assert_eq!(next_verdict(&mut rx).await, Some(true));
        task.abort();

        // Liveness failing with 1 s periods: the verdict needs 3 failures.
        let exec = ExecOnHost::new();
        let mut probe = exec_probe(&["false"]);
        probe.period_seconds = Some(1);
        let (tx, mut rx) = watch::channel(None);
        let started = Instant::now();
        let task = tokio::spawn(run(
            ProbeKind::Liveness,
            probe,
            app(&[]),
            target(exec.clone()),
            tx,
        ));
        assert_eq!(next_verdict(&mut rx).await, Some(false));
        assert_eq!(exec.calls.load(Ordering::SeqCst), 3);
        assert!(started.elapsed() >= Duration::from_secs(2));
        task.abort();
    }
}
