//! The dev-master's HTTP surface: the v1 scheduler API, the agent protocol,
//! and the read-only endpoints (`/version`, `/health`, `/state`,
//! `/metrics/snapshot`). Request checks follow Mesos's order and wording
//! (content type, body, call validation, stream id, subscription).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures::Stream;
use serde_json::json;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::App;
use super::state::{AgentKind, Conn, Refusal};
use crate::mesos::encoding::{DecodeError, Encoding};
use crate::mesos::proto::devcluster::{AgentCall, agent_call};
use crate::mesos::proto::v1::scheduler::{Call, call};
use crate::mesos::stream::STREAM_ID_HEADER;

/// Header naming the calling agent on the agent protocol.
pub const AGENT_ID_HEADER: &str = "Km-Agent-Id";

fn text(status: u16, body: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// An error and its causes, `outer: inner: innermost`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// Why a body did not decode, worded like Mesos where it has a wording.
fn decode_reason(e: &DecodeError) -> String {
    match e {
        DecodeError::Json(crate::mesos::json::JsonError::MissingRequired(f))
        | DecodeError::MissingRequired(f) => format!("Missing required fields: {}", f.join(", ")),
        DecodeError::Json(j) => chain(j),
        DecodeError::Protobuf(p) => chain(p),
    }
}

fn refused(r: Refusal) -> Response {
    text(r.status, r.message)
}

fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

/// Checks method and Content-Type like Mesos; returns the request encoding.
fn request_encoding(method: &Method, headers: &HeaderMap) -> Result<Encoding, Box<Response>> {
    if method != Method::POST {
        let mut r = text(
            405,
            format!(
                "405 Method Not Allowed. Expecting one of {{ 'POST' }}, but received '{method}'."
            ),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return Err(Box::new(r));
    }
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err(Box::new(text(
            400,
            "Expecting 'Content-Type' to be present",
        )));
    };
    ct.to_str()
        .ok()
        .and_then(Encoding::from_content_type)
        .ok_or_else(|| {
            Box::new(text(
                415,
                "Expecting 'Content-Type' of application/json or application/x-protobuf",
            ))
        })
}

/// Whether an `Accept` header allows `media` (`type/subtype`), with `*/*`,
/// `type/*` and `q=0`.
fn accepts(accept: Option<&str>, media: &str) -> bool {
    let Some(accept) = accept else { return true };
    let (ty, _) = media.split_once('/').unwrap_or((media, ""));
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let m = parts.next().unwrap_or("");
        let q_zero = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f64>().ok())
                .is_some_and(|q| q == 0.0)
        });
        !q_zero && (m == "*/*" || m == media || m == format!("{ty}/*"))
    })
}

/// The response encoding for a streaming answer: JSON first, as Mesos does.
fn response_encoding(headers: &HeaderMap) -> Option<Encoding> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if accepts(accept, "application/json") {
        Some(Encoding::Json)
    } else if accepts(accept, "application/x-protobuf") {
        Some(Encoding::Protobuf)
    } else {
        None
    }
}

fn authorized(app: &App, headers: &HeaderMap) -> bool {
    let Some(creds) = &app.credentials else {
        return true;
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(b64) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
        return false;
    };
    let raw = String::from_utf8_lossy(&raw);
    raw.split_once(':')
        .is_some_and(|(p, s)| creds.get(p).is_some_and(|want| want == s))
}

/// A response body fed by a channel; when the client goes away it tells the
/// master which connection closed.
struct EventBody {
    rx: UnboundedReceiver<Bytes>,
    on_close: Option<Box<dyn FnOnce() + Send>>,
}

impl Stream for EventBody {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|o| o.map(Ok))
    }
}

impl Drop for EventBody {
    fn drop(&mut self) {
        if let Some(f) = self.on_close.take() {
            f();
        }
    }
}

fn stream_response(
    encoding: Encoding,
    rx: UnboundedReceiver<Bytes>,
    stream_id: Option<&str>,
    on_close: Box<dyn FnOnce() + Send>,
) -> Response {
    let body = Body::from_stream(EventBody {
        rx,
        on_close: Some(on_close),
    });
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(encoding.content_type()),
    );
    if let Some(id) = stream_id
        && let Ok(v) = header::HeaderValue::from_str(id)
    {
        h.insert(STREAM_ID_HEADER, v);
    }
    r
}

/// `POST /api/v1/scheduler` (also `/master/api/v1/scheduler`).
pub async fn scheduler(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let enc = match request_encoding(&method, &headers) {
        Ok(e) => e,
        Err(r) => return *r,
    };
    if !authorized(&app, &headers) {
        let mut r = text(401, "Unauthorized");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"mesos-master-scheduler\""),
        );
        return r;
    }
    let call: Call = match enc.decode(&body) {
        Ok(c) => c,
        Err(e) => {
            let what = if enc == Encoding::Json {
                "JSON"
            } else {
                "protobuf"
            };
            return text(
                400,
                format!(
                    "Failed to convert {what} into Call protobuf: {}",
                    decode_reason(&e)
                ),
            );
        }
    };
    let Some(ty) = call.r#type.and_then(|t| call::Type::try_from(t).ok()) else {
        return text(
            400,
            "Failed to validate scheduler::Call: Expecting 'type' to be present",
        );
    };
    let stream_id = headers
        .get(STREAM_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if ty == call::Type::Subscribe {
        return subscribe(app, &headers, call, stream_id).await;
    }
    let framework_id = call.framework_id.as_ref().map(|f| f.value.clone());
    let now = Instant::now();
    let missing = |field: &str| {
        text(
            400,
            format!("Failed to validate scheduler::Call: Expecting '{field}' to be present"),
        )
    };
    let mut m = app.lock();
    if let Err(r) = m.check_call(framework_id.as_deref(), stream_id.as_deref()) {
        return refused(r);
    }
    let fid = framework_id.unwrap_or_default();
    let mut wake = false;
    match ty {
        call::Type::Unknown => return text(501, "Received an unknown call type"),
        call::Type::Subscribe => unreachable!("handled above"),
        call::Type::Teardown => m.remove_framework(&fid),
        call::Type::Accept => match call.accept {
            Some(a) => m.accept(&fid, a, now),
            None => return missing("accept"),
        },
        call::Type::Decline => match call.decline {
            Some(d) => m.decline(&fid, &d.offer_ids, d.filters.as_ref(), now),
            None => return missing("decline"),
        },
        call::Type::Revive => {
            m.revive(&fid, &call.revive.map(|r| r.roles).unwrap_or_default());
            wake = true;
        }
        call::Type::Suppress => {
            m.suppress(&fid, &call.suppress.map(|s| s.roles).unwrap_or_default())
        }
        call::Type::Kill => match call.kill {
            Some(k) => m.kill(&fid, &k),
            None => return missing("kill"),
        },
        call::Type::Shutdown => match call.shutdown {
            Some(s) => m.shutdown_executor(&fid, &s),
            None => return missing("shutdown"),
        },
        call::Type::Acknowledge => match call.acknowledge {
            Some(a) => {
                if let Err(r) = m.acknowledge(&fid, &a) {
                    return refused(r);
                }
            }
            None => return missing("acknowledge"),
        },
        call::Type::Reconcile => match call.reconcile {
            Some(r) => {
                let tasks: Vec<_> = r
                    .tasks
                    .into_iter()
                    .map(|t| (t.task_id, t.agent_id))
                    .collect();
                m.reconcile(&fid, &tasks);
            }
            None => return missing("reconcile"),
        },
        call::Type::Message => match call.message {
            Some(msg) => m.framework_message(&fid, &msg),
            None => return missing("message"),
        },
        call::Type::UpdateFramework => match call.update_framework {
            Some(u) => {
                if let Some(f) = m.frameworks.get_mut(&fid) {
                    let mut info = u.framework_info;
                    info.id = f.info.id.clone();
                    info.user = f.info.user.clone();
                    info.checkpoint = f.info.checkpoint;
                    f.info = info;
                }
                wake = true;
                drop(m);
                if wake {
                    app.wake.notify_one();
                }
                return StatusCode::OK.into_response();
            }
            None => return missing("update_framework"),
        },
        // Inverse offers, operation feedback and requests: accepted, nothing to do here.
        call::Type::AcceptInverseOffers
        | call::Type::DeclineInverseOffers
        | call::Type::Request
        | call::Type::AcknowledgeOperationStatus
        | call::Type::ReconcileOperations => {}
    }
    drop(m);
    app.after_change();
    if wake {
        app.wake.notify_one();
    }
    accepted()
}

async fn subscribe(
    app: Arc<App>,
    headers: &HeaderMap,
    call: Call,
    stream_id: Option<String>,
) -> Response {
    if stream_id.is_some() {
        return text(
            400,
            "Subscribe calls should not include the 'Mesos-Stream-Id' header",
        );
    }
    let Some(sub) = call.subscribe else {
        return text(
            400,
            "Failed to validate scheduler::Call: Expecting 'subscribe' to be present",
        );
    };
    let Some(out) = response_encoding(headers) else {
        return text(
            406,
            "Expecting 'Accept' to allow 'application/x-protobuf' or 'application/json'",
        );
    };
    let call_fid = call.framework_id.map(|f| f.value);
    if let (Some(a), Some(b)) = (&call_fid, &sub.framework_info.id)
        && *a != b.value
    {
        return text(
            400,
            "Failed to validate scheduler::Call: 'framework_id' differs from 'subscribe.framework_info.id'",
        );
    }
    let stream_id = uuid::Uuid::new_v4().to_string();
    let (tx, rx) = unbounded_channel();
    let conn = Conn {
        tx,
        encoding: out,
        stream_id: stream_id.clone(),
    };
    let fid = {
        let mut m = app.lock();
        let fid = m.subscribe(call_fid.as_deref(), sub.framework_info, conn);
        if let Some(f) = &fid {
            // A subscription states the whole suppressed set, failovers included.
            if let Some(fw) = m.frameworks.get_mut(f) {
                fw.suppressed.clear();
            }
            let roles = sub.suppressed_roles;
            if !roles.is_empty() {
                m.suppress(f, &roles);
            }
        }
        fid
    };
    app.wake.notify_one();
    let on_close: Box<dyn FnOnce() + Send> = match fid {
        Some(fid) => {
            let app2 = app.clone();
            let sid = stream_id.clone();
            Box::new(move || {
                app2.lock()
                    .framework_disconnected(&fid, &sid, Instant::now());
                app2.after_change();
            })
        }
        None => Box::new(|| {}),
    };
    stream_response(out, rx, Some(&stream_id), on_close)
}

/// `POST /api/v1/km/agent`: the dev-agent protocol.
pub async fn agent(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let enc = match request_encoding(&method, &headers) {
        Ok(e) => e,
        Err(r) => return *r,
    };
    let call: AgentCall = match enc.decode(&body) {
        Ok(c) => c,
        Err(e) => {
            return text(
                400,
                format!("Failed to parse the agent call: {}", chain(&e)),
            );
        }
    };
    let Some(ty) = call.r#type.and_then(|t| agent_call::Type::try_from(t).ok()) else {
        return text(400, "Expecting 'type' to be present");
    };
    if ty == agent_call::Type::Register {
        let Some(reg) = call.register else {
            return text(400, "Expecting 'register' to be present");
        };
        let out = if headers.contains_key(header::ACCEPT) {
            response_encoding(&headers).unwrap_or(enc)
        } else {
            enc
        };
        let (tx, rx) = unbounded_channel();
        let conn_id = uuid::Uuid::new_v4().to_string();
        let conn = Conn {
            tx,
            encoding: out,
            stream_id: conn_id.clone(),
        };
        let id =
            app.lock()
                .register_agent(reg.agent_info, reg.executors, Some(conn), AgentKind::Real);
        tracing::info!(agent = %id, "agent registered");
        app.wake.notify_one();
        let app2 = app.clone();
        let on_close: Box<dyn FnOnce() + Send> = Box::new(move || {
            tracing::info!(agent = %id, "agent disconnected");
            app2.lock()
                .agent_disconnected(&id, &conn_id, Instant::now());
        });
        return stream_response(out, rx, None, on_close);
    }
    let header_id = headers
        .get(AGENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let agent_id = call
        .agent_id
        .as_ref()
        .map(|a| a.value.as_str())
        .unwrap_or(header_id)
        .to_string();
    let mut m = app.lock();
    if agent_id.is_empty() || agent_id != header_id || !m.agents.contains_key(&agent_id) {
        return text(
            400,
            format!(
                "Agent '{agent_id}' is not registered (header {AGENT_ID_HEADER}: '{header_id}')"
            ),
        );
    }
    match ty {
        agent_call::Type::Update => match call.update {
            Some(u) => m.status_update(&u.framework_id.value, &agent_id, u.status, u.latest_state),
            None => return text(400, "Expecting 'update' to be present"),
        },
        agent_call::Type::ExecutorExited => match call.executor_exited {
            Some(x) => m.executor_exited(
                &agent_id,
                &x.framework_id.value,
                &x.executor_id.value,
                x.status,
            ),
            None => return text(400, "Expecting 'executor_exited' to be present"),
        },
        agent_call::Type::Message => match call.message {
            Some(x) => m.executor_message(&agent_id, &x.framework_id.value, &x.executor_id, x.data),
            None => return text(400, "Expecting 'message' to be present"),
        },
        agent_call::Type::Heartbeat => {}
        agent_call::Type::Register | agent_call::Type::Unknown => {
            return text(400, "Unexpected agent call");
        }
    }
    drop(m);
    app.after_change();
    accepted()
}

/// `GET /version`, as pymesos reads it.
pub async fn version() -> Response {
    axum::Json(json!({"build_date": "", "build_time": 0, "build_user": "", "version": super::MESOS_VERSION, "km_version": env!("CARGO_PKG_VERSION")}))
        .into_response()
}

/// `GET /health`.
pub async fn health() -> Response {
    StatusCode::OK.into_response()
}

/// `GET /state`: a subset of Mesos's master state, enough for operators and node sync.
pub async fn state(State(app): State<Arc<App>>) -> Response {
    let m = app.lock();
    let res_json = |rs: &crate::resources::Resources| {
        json!({"cpus": rs.scalar("cpus"), "mem": rs.scalar("mem"), "disk": rs.scalar("disk"),
               "ports": rs.ranges("ports").to_string()})
    };
    let available = m.available_by_agent();
    let agents: Vec<_> = m
        .agents
        .values()
        .map(|a| {
            let attributes: serde_json::Map<String, serde_json::Value> = a
                .info
                .attributes
                .iter()
                .map(|at| {
                    let v = at
                        .text
                        .as_ref()
                        .map(|t| json!(t.value))
                        .or_else(|| at.scalar.as_ref().map(|s| json!(s.value)))
                        .unwrap_or(json!(null));
                    (at.name.clone(), v)
                })
                .collect();
            json!({
                "id": a.id, "hostname": a.info.hostname, "port": a.info.port.unwrap_or(5051),
                "active": a.conn.is_some() || matches!(a.kind, AgentKind::Hollow{..}),
                "hollow": matches!(a.kind, AgentKind::Hollow{..}),
                "resources": res_json(&a.total),
                "unreserved_resources": res_json(available.get(&a.id).unwrap_or(&Default::default())),
                "attributes": attributes,
                "executors": a.executors.keys().map(|(f, e)| json!({"framework_id": f, "executor_id": e})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let frameworks: Vec<_> = m
        .frameworks
        .values()
        .map(|f| {
            let task_json = |t: &super::state::Task| {
                let state = t.state().as_str_name();
                json!({"id": t.info.task_id.value, "name": t.info.name, "agent_id": t.agent_id,
                       "executor_id": t.executor_id, "state": state})
            };
            let tasks: Vec<_> = m
                .tasks
                .values()
                .filter(|t| t.framework_id == f.id)
                .map(task_json)
                .collect();
            let completed: Vec<_> = m
                .completed
                .iter()
                .filter(|t| t.framework_id == f.id)
                .map(task_json)
                .collect();
            json!({"id": f.id, "name": f.info.name, "active": f.conn.is_some(), "roles": f.roles(),
                   "checkpoint": f.info.checkpoint.unwrap_or(false), "tasks": tasks,
                   "completed_tasks": completed})
        })
        .collect();
    axum::Json(json!({
        "version": super::MESOS_VERSION, "id": m.id, "hostname": m.info.hostname,
        "pid": m.info.pid, "leader": m.info.pid,
        "activated_slaves": m.agents.values().filter(|a| a.conn.is_some() || matches!(a.kind, AgentKind::Hollow{..})).count(),
        "slaves": agents, "frameworks": frameworks,
        "completed_frameworks": m.removed.iter().collect::<Vec<_>>(),
    }))
    .into_response()
}

/// `GET /metrics/snapshot`: gauges and counters, Mesos-style names.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let m = app.lock();
    let mut out = serde_json::Map::new();
    out.insert("master/elected".into(), json!(1.0));
    out.insert(
        "master/frameworks_active".into(),
        json!(m.frameworks.values().filter(|f| f.conn.is_some()).count() as f64),
    );
    out.insert(
        "master/frameworks_connected".into(),
        json!(m.frameworks.values().filter(|f| f.conn.is_some()).count() as f64),
    );
    out.insert("master/slaves_active".into(), json!(m.agents.len() as f64));
    out.insert(
        "master/outstanding_offers".into(),
        json!(m.offers.len() as f64),
    );
    out.insert("master/tasks_known".into(), json!(m.tasks.len() as f64));
    for (k, v) in &m.counters {
        out.insert(format!("km/{k}"), json!(*v as f64));
    }
    axum::Json(serde_json::Value::Object(out)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation_prefers_json() {
        assert!(accepts(None, "application/json"));
        assert!(accepts(Some("*/*"), "application/x-protobuf"));
        assert!(accepts(Some("application/*"), "application/json"));
        assert!(!accepts(Some("application/x-protobuf"), "application/json"));
        assert!(!accepts(
            Some("application/json;q=0, application/x-protobuf"),
            "application/json"
        ));
        assert!(!accepts(Some("text/html"), "application/json"));
        let mut h = HeaderMap::new();
        assert_eq!(response_encoding(&h), Some(Encoding::Json));
        h.insert(header::ACCEPT, "application/x-protobuf".parse().unwrap());
        assert_eq!(response_encoding(&h), Some(Encoding::Protobuf));
        h.insert(header::ACCEPT, "application/recordio".parse().unwrap());
        assert_eq!(response_encoding(&h), None);
    }
}
