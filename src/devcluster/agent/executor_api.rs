//! The v1 executor HTTP API: `POST /api/v1/executor` (also
//! `/slave(1)/api/v1/executor`, the path the C++ executor library derives
//! from `MESOS_SLAVE_PID`).
//!
//! Checks and status codes are Mesos's (reference §1.5): a missing
//! `Content-Type` is 400, one that is not exactly `application/json` or
//! `application/x-protobuf` is 415; an unparsable body or a call failing
//! `validateExecutorCall` is 400 with the reason in the body; `UNKNOWN` is
//! 501; HEARTBEAT is 202 before any lookup. SUBSCRIBE negotiates the
//! stream's encoding from `Accept` (JSON first, then protobuf, else 406)
//! and answers 200 with a RecordIO stream, one record per chunk, with a
//! HEARTBEAT event every 30 minutes. The agent's own checks (unknown
//! framework or executor, not subscribed, recovering) come back from the
//! agent core.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::{mpsc, oneshot};

use crate::mesos::encoding::Encoding;
use crate::mesos::proto::v1::{self, executor};
use crate::mesos::stream::record;

/// Path of the executor API.
pub const PATH: &str = "/api/v1/executor";
/// The same, under the agent's libprocess id.
pub const PID_PATH: &str = "/slave(1)/api/v1/executor";
/// Interval of agent→executor HEARTBEAT events (Mesos's default).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30 * 60);

/// What the agent core answers to an executor call.
#[derive(Debug)]
pub enum Reply {
    /// 202.
    Accepted,
    /// 200 and this stream of events. The guard is dropped when the
    /// response body is (the executor went away, or the stream ended).
    Subscribed(mpsc::UnboundedReceiver<executor::Event>, Guard),
    /// An error status with its reason.
    Error(StatusCode, String),
}

/// Kept alive by a subscription's response body; dropped with it.
pub type Guard = Box<dyn std::any::Any + Send + Sync>;

/// A validated executor call on its way to the agent core.
#[derive(Debug)]
pub struct Request {
    /// The call.
    pub call: executor::Call,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Reply>,
}

/// The router of the executor API, handing calls to `core`.
pub fn router(core: mpsc::UnboundedSender<Request>) -> Router {
    Router::new()
        .route(PATH, post(handle))
        .route(PID_PATH, post(handle))
        .with_state(core)
}

fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    (status, reason.into()).into_response()
}

async fn handle(
    State(core): State<mpsc::UnboundedSender<Request>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Expecting 'Content-Type' to be present",
        );
    };
    let Some(encoding) = content_type
        .to_str()
        .ok()
        .and_then(Encoding::from_content_type)
    else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Expecting 'Content-Type' of application/json or application/x-protobuf",
        );
    };
    let call: executor::Call = match encoding.decode(&body) {
        Ok(c) => c,
        Err(e) => {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            return error(
                StatusCode::BAD_REQUEST,
                format!("Failed to parse body into Call: {e}{cause}"),
            );
        }
    };
    if let Err((status, reason)) = validate(&call) {
        return error(status, reason);
    }
    let ty = call
        .r#type
        .and_then(|t| executor::call::Type::try_from(t).ok());
    if ty == Some(executor::call::Type::Heartbeat) {
        return StatusCode::ACCEPTED.into_response();
    }
    let stream_encoding = if ty == Some(executor::call::Type::Subscribe) {
        match negotiate(&headers) {
            Some(e) => Some(e),
            None => {
                return error(
                    StatusCode::NOT_ACCEPTABLE,
                    "Expecting 'Accept' to allow application/json or application/x-protobuf",
                );
            }
        }
    } else {
        None
    };
    let (tx, rx) = oneshot::channel();
    if core.send(Request { call, reply: tx }).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "Agent is shutting down");
    }
    match rx.await {
        Ok(Reply::Accepted) => StatusCode::ACCEPTED.into_response(),
        Ok(Reply::Error(status, reason)) => error(status, reason),
        Ok(Reply::Subscribed(events, guard)) => {
            let encoding = stream_encoding.unwrap_or(Encoding::Json);
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, encoding.content_type())
                .body(event_body(events, guard, encoding))
                .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "Agent is shutting down"),
    }
}

/// The stream of one subscription: the core's events, and a HEARTBEAT
/// every [`HEARTBEAT_INTERVAL`]. It ends when the core drops its sender;
/// `guard` lives exactly as long as the body.
fn event_body(
    events: mpsc::UnboundedReceiver<executor::Event>,
    guard: Guard,
    encoding: Encoding,
) -> Body {
    let start = tokio::time::Instant::now() + HEARTBEAT_INTERVAL;
    let heartbeats = tokio::time::interval_at(start, HEARTBEAT_INTERVAL);
    let state = (events, heartbeats, guard);
    let stream = futures::stream::unfold(state, move |(mut rx, mut hb, guard)| async move {
        let event = tokio::select! {
            e = rx.recv() => e?,
            _ = hb.tick() => executor::Event {
                r#type: Some(executor::event::Type::Heartbeat as i32),
                ..Default::default()
            },
        };
        Some((
            Ok::<Bytes, Infallible>(record(&event, encoding)),
            (rx, hb, guard),
        ))
    });
    Body::from_stream(stream)
}

/// The stream encoding an `Accept` header asks for: JSON if acceptable,
/// else protobuf, else none (406). No header accepts everything.
pub fn negotiate(headers: &HeaderMap) -> Option<Encoding> {
    let values: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return Some(Encoding::Json);
    }
    let ranges: Vec<(String, f32)> = values
        .iter()
        .flat_map(|v| v.split(','))
        .filter_map(|r| {
            let mut parts = r.split(';');
            let media = parts.next()?.trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            Some((media, q))
        })
        .collect();
    // The most specific matching range decides (exact, then type/*, then
    // */*), so `application/json;q=0, */*` refuses JSON.
    let accepts = |media: &str| {
        let (ty, _) = media.split_once('/').unwrap_or((media, ""));
        let wildcard = format!("{ty}/*");
        let specificity = |r: &str| {
            if r == media {
                Some(3)
            } else if r == wildcard {
                Some(2)
            } else if r == "*/*" {
                Some(1)
            } else {
                None
            }
        };
        ranges
            .iter()
            .filter_map(|(r, q)| specificity(r).map(|s| (s, *q)))
            .max_by_key(|(s, _)| *s)
            .is_some_and(|(_, q)| q > 0.0)
    };
    [Encoding::Json, Encoding::Protobuf]
        .into_iter()
        .find(|e| accepts(e.content_type()))
}

/// Mesos's `validateExecutorCall`, plus 501 for UNKNOWN.
pub fn validate(call: &executor::Call) -> Result<(), (StatusCode, String)> {
    use executor::call::Type;
    let bad = |m: &str| Err((StatusCode::BAD_REQUEST, m.to_owned()));
    let Some(ty) = call.r#type else {
        return bad("Expecting 'type' to be present");
    };
    let Ok(ty) = Type::try_from(ty) else {
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            format!("Unknown call type {ty}"),
        ));
    };
    match ty {
        Type::Unknown => Err((
            StatusCode::NOT_IMPLEMENTED,
            "Received 'UNKNOWN' call".to_owned(),
        )),
        Type::Heartbeat => Ok(()),
        Type::Subscribe if call.subscribe.is_none() => bad("Expecting 'subscribe' to be present"),
        Type::Subscribe => Ok(()),
        Type::Update => {
            let Some(update) = &call.update else {
                return bad("Expecting 'update' to be present");
            };
            validate_status(&update.status, &call.executor_id)
        }
        Type::Message if call.message.is_none() => bad("Expecting 'message' to be present"),
        Type::Message => Ok(()),
    }
}

/// The checks on a status an executor sends.
pub fn validate_status(
    status: &v1::TaskStatus,
    executor_id: &v1::ExecutorId,
) -> Result<(), (StatusCode, String)> {
    let bad = |m: String| Err((StatusCode::BAD_REQUEST, m));
    match status.uuid.as_deref() {
        None => return bad("Expecting 'uuid' to be present".into()),
        Some(u) if uuid::Uuid::from_slice(u).is_err() => {
            return bad(format!(
                "'uuid' is not a valid 16-byte UUID ({} bytes)",
                u.len()
            ));
        }
        Some(_) => {}
    }
    if status.source != Some(v1::task_status::Source::Executor as i32) {
        return bad(
            "Received Call from executor with invalid source, expecting 'SOURCE_EXECUTOR'".into(),
        );
    }
    if status.state == v1::TaskState::TaskStaging as i32 {
        return bad("Received TASK_STAGING from executor which is not allowed".into());
    }
    if v1::TaskState::try_from(status.state).is_err() {
        return bad(format!("Unknown task state {}", status.state));
    }
    if let Some(e) = &status.executor_id
        && e != executor_id
    {
        return bad(format!(
            "ExecutorID in Call: {} does not match ExecutorID in TaskStatus: {}",
            executor_id.value, e.value
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use executor::call::Type;

    fn call(ty: Type) -> executor::Call {
        executor::Call {
            executor_id: v1::ExecutorId { value: "e".into() },
            framework_id: v1::FrameworkId { value: "f".into() },
            r#type: Some(ty as i32),
            ..Default::default()
        }
    }

    fn update(status: v1::TaskStatus) -> executor::Call {
        executor::Call {
            update: Some(executor::call::Update { status }),
            ..call(Type::Update)
        }
    }

    fn good_status() -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: v1::TaskId { value: "t".into() },
            state: v1::TaskState::TaskRunning as i32,
            source: Some(v1::task_status::Source::Executor as i32),
            uuid: Some(uuid::Uuid::new_v4().as_bytes().to_vec()),
            ..Default::default()
        }
    }

    fn status_of(c: &executor::Call) -> Option<StatusCode> {
        validate(c).err().map(|e| e.0)
    }

    #[test]
    fn calls_are_validated_like_mesos() {
        assert_eq!(status_of(&call(Type::Heartbeat)), None);
        assert_eq!(
            status_of(&call(Type::Subscribe)),
            Some(StatusCode::BAD_REQUEST)
        );
        let sub = executor::Call {
            subscribe: Some(Default::default()),
            ..call(Type::Subscribe)
        };
        assert_eq!(status_of(&sub), None);
        assert_eq!(
            status_of(&call(Type::Unknown)),
            Some(StatusCode::NOT_IMPLEMENTED)
        );
        let mut untyped = call(Type::Heartbeat);
        untyped.r#type = None;
        assert_eq!(status_of(&untyped), Some(StatusCode::BAD_REQUEST));
        assert_eq!(
            status_of(&call(Type::Message)),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status_of(&call(Type::Update)),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(status_of(&update(good_status())), None);
    }

    #[test]
    fn update_statuses_are_checked() {
        type Spoil = Box<dyn Fn(&mut v1::TaskStatus)>;
        let cases: Vec<(&str, Spoil)> = vec![
            ("uuid", Box::new(|s| s.uuid = None)),
            ("16-byte", Box::new(|s| s.uuid = Some(vec![1, 2, 3]))),
            (
                "SOURCE_EXECUTOR",
                Box::new(|s| s.source = Some(v1::task_status::Source::Agent as i32)),
            ),
            ("SOURCE_EXECUTOR", Box::new(|s| s.source = None)),
            (
                "TASK_STAGING",
                Box::new(|s| s.state = v1::TaskState::TaskStaging as i32),
            ),
            (
                "does not match",
                Box::new(|s| {
                    s.executor_id = Some(v1::ExecutorId {
                        value: "other".into(),
                    })
                }),
            ),
        ];
        for (says, spoil) in cases {
            let mut s = good_status();
            spoil(&mut s);
            let (code, reason) = validate(&update(s)).unwrap_err();
            assert_eq!(code, StatusCode::BAD_REQUEST);
            assert!(reason.contains(says), "{reason}");
        }
        let mut s = good_status();
        s.executor_id = Some(v1::ExecutorId { value: "e".into() });
        assert!(validate(&update(s)).is_ok());
    }

    #[test]
    fn accept_negotiation_prefers_json() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(negotiate(&HeaderMap::new()), Some(Encoding::Json));
        assert_eq!(negotiate(&h("*/*")), Some(Encoding::Json));
        assert_eq!(
            negotiate(&h("application/x-protobuf")),
            Some(Encoding::Protobuf)
        );
        assert_eq!(
            negotiate(&h("application/json;q=0, application/*")),
            Some(Encoding::Protobuf)
        );
        assert_eq!(negotiate(&h("application/recordio")), None);
        assert_eq!(negotiate(&h("text/plain")), None);
    }
}
