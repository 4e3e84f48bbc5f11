//! `?watch=1`: newline-delimited watch events over a chunked response.
//!
//! Starts from the client's resourceVersion (or, without one or with "0",
//! with synthetic ADDED events for the current state), applies label and
//! field selectors across changes the way upstream does (an object that
//! stops matching is DELETED for this watcher, one that starts matching is
//! ADDED), sends BOOKMARKs when asked, ends at timeoutSeconds or shutdown,
//! and answers a compacted resourceVersion with a 410 ERROR event.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use serde_json::json;
use tokio::time::Instant;

use super::objects::parse_rv;
use super::resources::Resource;
use super::rest::{Api, Format, Query, Selectors, Target};
use super::status::ApiError;
use super::store::{Event, EventType, Object, Revision, StoreError, Watch};
use super::table;

/// Most bytes sent in one write of a watch stream.
const BATCH_BYTES: usize = 256 * 1024;

/// Upstream's default watch timeout lies between 30 and 60 minutes.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

fn line(kind: &str, object: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(object.len() + 32);
    b.put_slice(br#"{"type":""#);
    b.put_slice(kind.as_bytes());
    b.put_slice(br#"","object":"#);
    b.put_slice(object);
    b.put_slice(b"}\n");
    b.freeze()
}

fn error_line(e: &ApiError) -> Bytes {
    line(
        "ERROR",
        &serde_json::to_vec(&e.status()).unwrap_or_default(),
    )
}

struct Watcher {
    api: Arc<Api>,
    resource: &'static Resource,
    selectors: Selectors,
    format: Format,
    initial: std::vec::IntoIter<Arc<Object>>,
    watch: Option<Watch>,
    deadline: Instant,
    bookmarks: bool,
    next_bookmark: Instant,
    done: bool,
    columns_sent: bool,
    _gauge: WatchGauge,
}

struct WatchGauge(&'static str);

impl WatchGauge {
    fn new(resource: &'static str) -> Self {
        super::metrics::watchers(resource, 1);
        WatchGauge(resource)
    }
}

impl Drop for WatchGauge {
    fn drop(&mut self) {
        super::metrics::watchers(self.0, -1);
    }
}

impl Watcher {
    fn encode(&mut self, kind: EventType, object: &Object, shared: Option<&Event>) -> Bytes {
        match self.format {
            Format::Json => match shared {
                Some(e) if e.kind == kind => e
                    .line
                    .get_or_init(|| line(kind.as_str(), &object.json))
                    .clone(),
                _ => line(kind.as_str(), &object.json),
            },
            Format::Table(include) => {
                let v = object.value();
                let mut t = table::table(
                    self.resource.group,
                    self.resource.plural,
                    &[&v],
                    include,
                    json!({"resourceVersion": object.revision.to_string()}),
                    SystemTime::now(),
                );
                // As upstream: column definitions with the first event only.
                if self.columns_sent {
                    table::omit_column_definitions(&mut t);
                }
                self.columns_sent = true;
                line(kind.as_str(), &serde_json::to_vec(&t).unwrap_or_default())
            }
        }
    }

    /// What this watcher sees of a change, after selectors.
    fn view(&self, e: &Event) -> Option<EventType> {
        let now = self.selectors.matches(&e.object);
        let before = e.prev.as_ref().is_some_and(|p| self.selectors.matches(p));
        match e.kind {
            EventType::Added => now.then_some(EventType::Added),
            EventType::Deleted => (before || now).then_some(EventType::Deleted),
            EventType::Modified => match (before, now) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            },
        }
    }

    fn bookmark(&self, rev: Revision) -> Bytes {
        let obj = json!({
            "kind": self.resource.kind,
            "apiVersion": self.resource.api_version(),
            "metadata": {"resourceVersion": rev.to_string()},
        });
        line("BOOKMARK", &serde_json::to_vec(&obj).unwrap_or_default())
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        while let Some(o) = self.initial.next() {
            if self.selectors.matches(&o) {
                return Some(self.encode(EventType::Added, &o, None));
            }
        }
        let shutdown = self.api.shutdown.clone();
        loop {
            let wake = if self.bookmarks {
                self.next_bookmark.min(self.deadline)
            } else {
                self.deadline
            };
            let watch = self.watch.as_mut()?;
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Step::Stop,
                next = watch.next() => Step::Next(next),
                _ = tokio::time::sleep_until(wake) => Step::Tick,
            };
            match step {
                Step::Stop => {
                    self.done = true;
                    return None;
                }
                Step::Next(Ok(e)) => {
                    if let Some(kind) = self.view(&e) {
                        return Some(self.encode(kind, &e.object, Some(&e)));
                    }
                }
                Step::Next(Err(err)) => {
                    self.done = true;
                    let e = match err {
                        StoreError::Gone { requested, oldest } => ApiError::expired(format!(
                            "too old resource version: {requested} ({oldest})"
                        )),
                        other => ApiError::unavailable(other.to_string()),
                    };
                    return Some(error_line(&e));
                }
                Step::Tick => {
                    if Instant::now() >= self.deadline {
                        self.done = true;
                        return None;
                    }
                    self.next_bookmark = Instant::now() + self.api.bookmark_every;
                    let rev = watch_progress(self.watch.as_ref());
                    return Some(self.bookmark(rev));
                }
            }
        }
    }
}

enum Step {
    Stop,
    Next(Result<Arc<Event>, StoreError>),
    Tick,
}

fn watch_progress(w: Option<&Watch>) -> Revision {
    w.map(Watch::progress).unwrap_or_default()
}

/// Starts a watch response.
pub async fn serve(
    api: Arc<Api>,
    t: &Target,
    q: &Query,
    format: Format,
) -> Result<Response, ApiError> {
    let r = t.resource;
    let selectors = Selectors::parse(r, q)?;
    let timeout = match q.get("timeoutSeconds") {
        Some(s) => Duration::from_secs(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))?,
        ),
        None => DEFAULT_TIMEOUT,
    };
    let prefix = r.namespace_prefix(t.namespace.as_deref());
    let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
    let (initial, watch, first) = if rv.is_empty() || rv == "0" {
        let listing = api
            .store
            .list(&prefix, None, None, false)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let items: Vec<Arc<Object>> = listing.items.collect();
        let watch = api.store.watch(&prefix, listing.revision);
        (items, watch, None)
    } else {
        let after = parse_rv(rv)?;
        (Vec::new(), api.store.watch(&prefix, after), None::<Bytes>)
    };
    let (watch, first) = match watch {
        Ok(w) => (Some(w), first),
        Err(StoreError::Gone { requested, oldest }) => (
            None,
            Some(error_line(&ApiError::expired(format!(
                "too old resource version: {requested} ({oldest})"
            )))),
        ),
        Err(e) => return Err(ApiError::unavailable(e.to_string())),
    };
    let now = Instant::now();
    let watcher = Watcher {
        api: api.clone(),
        resource: r,
        selectors,
        format,
        initial: initial.into_iter(),
        watch,
        deadline: now + timeout,
        bookmarks: matches!(
            q.get("allowWatchBookmarks").map(String::as_str),
            Some("true" | "1")
        ),
        next_bookmark: now + api.bookmark_every,
        done: false,
        columns_sent: false,
        _gauge: WatchGauge::new(r.plural),
    };
    let head = futures::stream::iter(first.map(Ok::<Bytes, std::io::Error>));
    let body = futures::stream::unfold(watcher, |mut w| async move {
        let first = w.next_chunk().await?;
        // Whatever else is ready goes out in the same write: a watcher that
        // fell behind catches up in few syscalls.
        let mut batch: Option<BytesMut> = None;
        while batch.as_ref().map_or(first.len(), BytesMut::len) < BATCH_BYTES {
            match futures::FutureExt::now_or_never(w.next_chunk()) {
                Some(Some(more)) => batch
                    .get_or_insert_with(|| BytesMut::from(&first[..]))
                    .put_slice(&more),
                _ => break,
            }
        }
        let chunk = batch.map_or(first, BytesMut::freeze);
        Some((Ok::<Bytes, std::io::Error>(chunk), w))
    });
    let stream = head.chain(body);
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
