//! The REST layer: URL → resource, verbs → store operations, with
//! upstream's semantics for every verb.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::allocator::Allocator;
use super::kinds::{self, FieldValidation, Phase};
use super::objects::{self, UpdateKind, deleting, finalizers, name_of, timestamp};
use super::resources::{self, Resource};
use super::selector::{FieldSelector, LabelSelector};
use super::status::{ApiError, success};
use super::store::{
    Committed, EventType, Key, Object, Op, Precondition, Revision, Storage, StoreError, Write,
};
use super::table::{self, IncludeObject};

/// Largest request body accepted (upstream's limit for JSON bodies).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The state every request handler shares.
pub struct Api {
    /// Where objects live.
    pub store: Arc<dyn Storage>,
    /// ClusterIPs and NodePorts.
    pub allocator: Mutex<Allocator>,
    /// Cancelled on shutdown: open watches end.
    pub shutdown: CancellationToken,
    /// How often watches with allowWatchBookmarks get a BOOKMARK.
    pub bookmark_every: Duration,
}

/// The object a URL names.
#[derive(Debug, Clone)]
pub struct Target {
    /// Which resource.
    pub resource: &'static Resource,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Object name from the path.
    pub name: Option<String>,
    /// Subresource from the path.
    pub sub: Option<String>,
}

/// Parses the part of a URL after `/api/v1/` or `/apis/<g>/<v>/`.
pub fn parse_target(group: &str, version: &str, rest: &str) -> Result<Target, ApiError> {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let find = |plural: &str| {
        resources::find(group, version, plural).ok_or_else(|| {
            ApiError::no_route(&format!(
                "{}/{version}/{plural}",
                if group.is_empty() { "api" } else { group }
            ))
        })
    };
    let namespaced_at = |i: usize| {
        segs.len() > i
            && segs[0] == "namespaces"
            && resources::find(group, version, segs[2]).is_some_and(|r| r.namespaced)
    };
    let owned = |s: &str| Some(s.to_string());
    let t = if namespaced_at(2) {
        let resource = find(segs[2])?;
        if segs.len() > 5 {
            return Err(ApiError::no_route(rest));
        }
        Target {
            resource,
            namespace: owned(segs[1]),
            name: segs.get(3).and_then(|s| owned(s)),
            sub: segs.get(4).and_then(|s| owned(s)),
        }
    } else {
        let Some(first) = segs.first() else {
            return Err(ApiError::no_route(rest));
        };
        let resource = find(first)?;
        if segs.len() > 3 {
            return Err(ApiError::no_route(rest));
        }
        Target {
            resource,
            namespace: None,
            name: segs.get(1).and_then(|s| owned(s)),
            sub: segs.get(2).and_then(|s| owned(s)),
        }
    };
    if let Some(sub) = &t.sub
        && !t.resource.subresources.contains(&sub.as_str())
    {
        return Err(ApiError::no_route(rest));
    }
    Ok(t)
}

/// Query parameters, as given.
pub type Query = HashMap<String, String>;

fn flag(q: &Query, k: &str) -> bool {
    matches!(q.get(k).map(String::as_str), Some("1" | "true" | "True"))
}

/// How the client wants objects back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain JSON.
    Json,
    /// meta.k8s.io/v1 Table.
    Table(IncludeObject),
}

/// Reads the Accept header (and includeObject) into a [`Format`].
pub fn format(headers: &HeaderMap, q: &Query) -> Result<Format, ApiError> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut json_ok = accept.is_empty();
    for part in accept.split(',') {
        let mut params = part.split(';').map(str::trim);
        let media = params.next().unwrap_or("");
        let params: Vec<&str> = params.collect();
        let is_table = params.contains(&"as=Table");
        if is_table && (media == "application/json" || media == "*/*") {
            let include = IncludeObject::parse(q.get("includeObject").map(String::as_str))
                .map_err(ApiError::bad_request)?;
            return Ok(Format::Table(include));
        }
        if params.iter().any(|p| p.starts_with("as=")) {
            continue;
        }
        if matches!(media, "application/json" | "*/*" | "application/*" | "")
            || media.starts_with("application/yaml")
        {
            json_ok = true;
        }
    }
    if json_ok {
        Ok(Format::Json)
    } else {
        Err(ApiError::not_acceptable(accept))
    }
}

fn json_response(code: StatusCode, body: Bytes, warnings: &[String]) -> Response {
    let mut r = (code, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    for w in warnings {
        let text = format!("299 - {:?}", w);
        if let Ok(v) = HeaderValue::from_str(&text) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

fn value_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    json_response(
        code,
        Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
        warnings,
    )
}

fn store_error(resource: &Resource, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::AlreadyExists(_) => ApiError::already_exists(resource, name),
        StoreError::NotFound(_) => ApiError::not_found(resource, name),
        StoreError::Conflict { .. } => ApiError::stale(resource, name),
        StoreError::Gone { requested, oldest } => {
            ApiError::expired(format!("too old resource version: {requested} ({oldest})"))
        }
        StoreError::Closed => ApiError::unavailable("the server is shutting down"),
        StoreError::Backend(m) => ApiError::internal(format!("storage error: {m}")),
    }
}

/// Decodes a request body (JSON, or YAML for humans with curl).
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type(headers);
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    match ct.as_str() {
        "" | "application/json" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}"))),
        "application/yaml" => serde_saphyr::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}"))),
        "application/vnd.kubernetes.protobuf" => Err(ApiError {
            code: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            reason: "UnsupportedMediaType",
            message: "km apiserver accepts JSON and YAML bodies, not protobuf; kubectl's `create <generator>` subcommands send protobuf: run them as `kubectl create ... --dry-run=client -o yaml | kubectl apply -f -`".into(),
            details: None,
        }),
        other => Err(ApiError::unsupported_media(
            other,
            &["application/json", "application/yaml"],
        )),
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The list's `kind`.
fn list_kind(resource: &Resource) -> String {
    format!("{}List", resource.kind)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: Revision,
    start: String,
}

fn encode_continue(rv: Revision, key: &Key) -> String {
    let t = ContinueToken {
        rv,
        start: key.to_string(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&t).unwrap_or_default())
}

fn decode_continue(s: &str) -> Result<ContinueToken, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ApiError::bad_request(format!("invalid continue token {s:?}")))
}

/// Label and field selectors of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    /// `?labelSelector=`.
    pub labels: LabelSelector,
    /// `?fieldSelector=`.
    pub fields: FieldSelector,
}

impl Selectors {
    /// Parses and checks the selectors of a request.
    pub fn parse(resource: &Resource, q: &Query) -> Result<Self, ApiError> {
        let labels = match q.get("labelSelector") {
            Some(s) => {
                LabelSelector::from_str(s).map_err(|e| ApiError::bad_request(e.to_string()))?
            }
            None => LabelSelector::default(),
        };
        let fields = match q.get("fieldSelector") {
            Some(s) => {
                FieldSelector::from_str(s).map_err(|e| ApiError::bad_request(e.to_string()))?
            }
            None => FieldSelector::default(),
        };
        if let Some(f) = fields.fields().find(|f| !resource.supports_field(f)) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {f}"
            )));
        }
        Ok(Selectors { labels, fields })
    }

    /// Whether a stored object matches.
    pub fn matches(&self, o: &Object) -> bool {
        self.labels.matches(&o.meta.labels) && self.fields.matches(|f| o.meta.field(f))
    }

    /// Whether nothing is selected on.
    pub fn is_empty(&self) -> bool {
        self.labels.requirements.is_empty() && self.fields.requirements.is_empty()
    }
}

impl Api {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    /// Serves one request to a resource URL.
    pub async fn handle(
        self: &Arc<Self>,
        method: Method,
        target: Target,
        q: Query,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response, ApiError> {
        if method == Method::GET && target.sub.as_deref() == Some("log") {
            // Plain text from the kubelet, whatever the Accept header says.
            if let Some(name) = target.name.as_deref() {
                return super::podlog::serve(self, &target, name, &q).await;
            }
        }
        let fmt = format(&headers, &q)?;
        let t = &target;
        let r = t.resource;
        if r.create_only && (method != Method::POST || t.name.is_some()) {
            return Err(ApiError::method_not_allowed(&format!(
                "{method} {}",
                r.plural
            )));
        }
        match (&method, t.name.as_deref(), t.sub.as_deref()) {
            (&Method::GET, None, None) if flag(&q, "watch") => {
                super::watching::serve(self.clone(), t, &q, fmt).await
            }
            (&Method::GET, None, None) => self.list(t, &q, fmt),
            (&Method::POST, None, None) if r.kind == "Binding" => {
                let v = decode_body(&headers, &body)?;
                let pod = name_of(&v).to_string();
                self.bind(t, &pod, v).await
            }
            (&Method::POST, None, None) => self.create(t, &q, &headers, &body).await,
            (&Method::DELETE, None, None) => self.delete_collection(t, &q, &headers, &body).await,
            (&Method::GET, Some(name), None | Some("status")) => self.get(t, name, fmt),
            (&Method::PUT, Some(name), sub @ (None | Some("status"))) => {
                let kind = if sub.is_some() {
                    UpdateKind::Status
                } else {
                    UpdateKind::Main
                };
                let v = decode_body(&headers, &body)?;
                self.update(t, name, &q, kind, Edit::Replace(v)).await
            }
            (&Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
                let kind = if sub.is_some() {
                    UpdateKind::Status
                } else {
                    UpdateKind::Main
                };
                let edit = patch_edit(&headers, &body)?;
                self.update(t, name, &q, kind, edit).await
            }
            (&Method::DELETE, Some(name), None) => {
                let opts = DeleteOptions::parse(&q, &headers, &body)?;
                self.delete(t, name, opts).await
            }
            (&Method::POST, Some(name), Some("binding")) => {
                let v = decode_body(&headers, &body)?;
                self.bind(t, name, v).await
            }
            (&Method::GET, Some(name), Some("scale")) => {
                let o = self.current(t, name)?;
                Ok(value_response(StatusCode::OK, &scale_of(&o.value()), &[]))
            }
            (&Method::PUT | &Method::PATCH, Some(name), Some("scale")) => {
                let edit = if method == Method::PUT {
                    Edit::Replace(decode_body(&headers, &body)?)
                } else {
                    patch_edit(&headers, &body)?
                };
                self.scale(t, name, &q, edit).await
            }
            (&Method::PUT, Some(name), Some("finalize")) => {
                let v = decode_body(&headers, &body)?;
                self.finalize_namespace(t, name, v).await
            }
            _ => Err(ApiError::method_not_allowed(&format!(
                "{method} {}{}",
                r.plural,
                t.sub
                    .as_deref()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default()
            ))),
        }
    }

    fn key(&self, t: &Target, name: &str) -> Key {
        t.resource.key(t.namespace.as_deref(), name)
    }

    fn current(&self, t: &Target, name: &str) -> Result<Arc<Object>, ApiError> {
        self.store
            .get(&self.key(t, name))
            .ok_or_else(|| ApiError::not_found(t.resource, name))
    }

    fn get(&self, t: &Target, name: &str, fmt: Format) -> Result<Response, ApiError> {
        let o = self.current(t, name)?;
        match fmt {
            Format::Json => Ok(json_response(StatusCode::OK, o.json.clone(), &[])),
            Format::Table(include) => {
                let v = o.value();
                let tbl = table::table(
                    t.resource.group,
                    t.resource.plural,
                    &[&v],
                    include,
                    json!({"resourceVersion": o.revision.to_string()}),
                    self.now(),
                );
                Ok(value_response(StatusCode::OK, &tbl, &[]))
            }
        }
    }

    fn list(&self, t: &Target, q: &Query, fmt: Format) -> Result<Response, ApiError> {
        let r = t.resource;
        let sel = Selectors::parse(r, q)?;
        let limit: usize = match q.get("limit") {
            Some(l) => l
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
            None => 0,
        };
        let (at, after) = match q.get("continue").filter(|s| !s.is_empty()) {
            Some(c) => {
                let tok = decode_continue(c)?;
                (Some(tok.rv), Some(Key::new(tok.start)))
            }
            None => (None, None),
        };
        if let Some(rv) = q
            .get("resourceVersion")
            .filter(|s| !s.is_empty() && *s != "0")
            && at.is_none()
        {
            let want = objects::parse_rv(rv)?;
            if want > self.store.revision() {
                return Err(ApiError {
                    code: StatusCode::GATEWAY_TIMEOUT,
                    reason: "Timeout",
                    message: format!(
                        "Too large resource version: {want}, current: {}",
                        self.store.revision()
                    ),
                    details: None,
                });
            }
        }
        let prefix = r.namespace_prefix(t.namespace.as_deref());
        let listing = self
            .store
            .list(&prefix, after.as_ref(), at, limit > 0)
            .map_err(|e| match e {
                StoreError::Gone { .. } => ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                other => store_error(r, "", other),
            })?;
        let mut items: Vec<Arc<Object>> = Vec::new();
        let mut next = None;
        let mut matching = listing.items.filter(|o| sel.matches(o));
        for o in matching.by_ref() {
            if limit > 0 && items.len() == limit {
                next = items
                    .last()
                    .map(|l| encode_continue(listing.revision, &l.key));
                break;
            }
            items.push(o);
        }
        let mut meta = json!({"resourceVersion": listing.revision.to_string()});
        if let Some(c) = &next {
            meta["continue"] = Value::String(c.clone());
        }
        match fmt {
            Format::Json => {
                let mut out = BytesMut::with_capacity(
                    64 + items.iter().map(|o| o.json.len() + 1).sum::<usize>(),
                );
                out.put_slice(
                    format!(
                        r#"{{"kind":"{}","apiVersion":"{}","metadata":{},"items":["#,
                        list_kind(r),
                        r.api_version(),
                        meta
                    )
                    .as_bytes(),
                );
                for (i, o) in items.iter().enumerate() {
                    if i > 0 {
                        out.put_u8(b',');
                    }
                    out.put_slice(&o.json);
                }
                out.put_slice(b"]}");
                Ok(json_response(StatusCode::OK, out.freeze(), &[]))
            }
            Format::Table(include) => {
                let values: Vec<Value> = items.iter().map(|o| o.value()).collect();
                let refs: Vec<&Value> = values.iter().collect();
                let tbl = table::table(r.group, r.plural, &refs, include, meta, self.now());
                Ok(value_response(StatusCode::OK, &tbl, &[]))
            }
        }
    }

    /// Creates (unless `dryRun`) and answers 201 with the stored object.
    async fn create(
        &self,
        t: &Target,
        q: &Query,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let r = t.resource;
        let mode = FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?;
        let mut v = decode_body(headers, body)?;
        objects::prepare_create(r, &mut v, t.namespace.as_deref(), self.now())?;
        let decoded = kinds::prepare(r, v, mode, Phase::Create)?;
        let mut v = decoded.value;
        let name = name_of(&v).to_string();
        if name.is_empty() {
            return Err(ApiError::invalid(
                r,
                "",
                vec![super::status::Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value: name or generateName is required".into(),
                    field: "metadata.name".into(),
                }],
            ));
        }
        if r.namespaced {
            self.check_namespace(r, t.namespace.as_deref().unwrap_or_default(), &name)?;
        }
        self.on_create(r, &mut v)?;
        let allocated = Allocated::of(r, &v);
        if flag_dry_run(q)? {
            allocated.release(self);
            return Ok(value_response(StatusCode::CREATED, &v, &decoded.warnings));
        }
        let key = self.key(t, &name);
        match self
            .store
            .write(Write {
                key,
                precondition: Precondition::Absent,
                op: Op::Put(v),
            })
            .await
        {
            Ok(c) => Ok(json_response(
                StatusCode::CREATED,
                c.object.json.clone(),
                &decoded.warnings,
            )),
            Err(e) => {
                allocated.release(self);
                Err(store_error(r, &name, e))
            }
        }
    }

    fn check_namespace(&self, r: &Resource, ns: &str, name: &str) -> Result<(), ApiError> {
        let nsr = resources::find("", "v1", "namespaces").expect("namespaces are served");
        match self.store.get(&nsr.key(None, ns)) {
            None => Err(ApiError::not_found(nsr, ns)),
            Some(o) if deleting(&o.value()) => Err(ApiError::forbidden(
                r,
                name,
                &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Kind-specific work on create: Service addresses, Pod status,
    /// Namespace phase and finalizer.
    fn on_create(&self, r: &Resource, v: &mut Value) -> Result<(), ApiError> {
        match r.kind {
            "Service" => self.allocate_service(r, v, None),
            "Pod" => {
                let st = v["status"].as_object().cloned().unwrap_or_default();
                let mut status = json!({"phase": "Pending"});
                if let Some(q) = st.get("qosClass") {
                    status["qosClass"] = q.clone();
                }
                v["status"] = status;
                Ok(())
            }
            "Namespace" => {
                if v["spec"]["finalizers"].is_null() {
                    v["spec"]["finalizers"] = json!(["kubernetes"]);
                }
                v["status"] = json!({"phase": "Active"});
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn allocate_service(
        &self,
        r: &Resource,
        v: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let name = name_of(v).to_string();
        let ty = v["spec"]["type"]
            .as_str()
            .unwrap_or("ClusterIP")
            .to_string();
        let invalid = |field: &str, value: String, msg: String| {
            ApiError::invalid(
                r,
                &name,
                vec![super::status::Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!("Invalid value: {value:?}: {msg}"),
                    field: field.into(),
                }],
            )
        };
        let mut alloc = self.allocator.lock().unwrap_or_else(|e| e.into_inner());
        let old_ip = old
            .and_then(|o| o["spec"]["clusterIP"].as_str())
            .map(str::to_string);
        if ty != "ExternalName" {
            let want = v["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
            let ip = match (want.as_str(), &old_ip) {
                ("None", _) => "None".to_string(),
                ("", Some(o)) => o.clone(),
                (w, Some(o)) if w == o => o.clone(),
                ("", None) => alloc
                    .next_ip()
                    .map_err(|e| invalid("spec.clusterIPs", String::new(), e.to_string()))?
                    .to_string(),
                (w, _) => {
                    let ip: Ipv4Addr = w.parse().map_err(|_| {
                        invalid(
                            "spec.clusterIPs",
                            w.to_string(),
                            "must be a valid IP address".into(),
                        )
                    })?;
                    alloc.take_ip(ip).map_err(|e| {
                        invalid(
                            "spec.clusterIPs",
                            w.to_string(),
                            format!("failed to allocate IP {w}: {e}"),
                        )
                    })?;
                    w.to_string()
                }
            };
            v["spec"]["clusterIP"] = json!(ip);
            v["spec"]["clusterIPs"] = json!([ip]);
        }
        if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
            let old_ports: Vec<u64> = old
                .and_then(|o| o["spec"]["ports"].as_array())
                .map(|a| a.iter().filter_map(|p| p["nodePort"].as_u64()).collect())
                .unwrap_or_default();
            if let Some(ports) = v["spec"]["ports"].as_array_mut() {
                for (i, p) in ports.iter_mut().enumerate() {
                    let np = match p["nodePort"].as_u64() {
                        Some(n) if old_ports.contains(&n) => n as u16,
                        Some(n) => {
                            let port = u16::try_from(n).unwrap_or(0);
                            alloc.take_port(port).map_err(|e| {
                                invalid(
                                    &format!("spec.ports[{i}].nodePort"),
                                    n.to_string(),
                                    e.to_string(),
                                )
                            })?;
                            port
                        }
                        None => alloc.next_port().map_err(|e| {
                            invalid(
                                &format!("spec.ports[{i}].nodePort"),
                                String::new(),
                                e.to_string(),
                            )
                        })?,
                    };
                    p["nodePort"] = json!(np);
                }
            }
        }
        Ok(())
    }

    /// A read-modify-write loop: `edit` computes the next version from the
    /// current one; unconditional edits retry on a concurrent change.
    async fn guaranteed(
        &self,
        t: &Target,
        name: &str,
        mut edit: impl FnMut(&Value, Revision) -> Result<Next, ApiError>,
    ) -> Result<(Outcome, Vec<String>), ApiError> {
        let r = t.resource;
        let key = self.key(t, name);
        for _ in 0..32 {
            let cur = self
                .store
                .get(&key)
                .ok_or_else(|| ApiError::not_found(r, name))?;
            let cur_v = cur.value();
            let (op, warnings) = match edit(&cur_v, cur.revision)? {
                Next::Unchanged => return Ok((Outcome::Unchanged(cur), Vec::new())),
                Next::Put(v, w) => {
                    if objects::same_content(&v, &cur_v) {
                        return Ok((Outcome::Unchanged(cur), w));
                    }
                    (Op::Put(v), w)
                }
                Next::Delete => (Op::Delete, Vec::new()),
            };
            match self
                .store
                .write(Write {
                    key: key.clone(),
                    precondition: Precondition::Revision(cur.revision),
                    op,
                })
                .await
            {
                Ok(c) => return Ok((Outcome::Written(c), warnings)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(r, name, e)),
            }
        }
        Err(ApiError::conflict(
            r,
            name,
            "too many concurrent writers; retry",
        ))
    }

    async fn update(
        &self,
        t: &Target,
        name: &str,
        q: &Query,
        kind: UpdateKind,
        edit: Edit,
    ) -> Result<Response, ApiError> {
        let r = t.resource;
        let mode = FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?;
        let dry = flag_dry_run(q)?;
        let mut preview = None;
        let (outcome, warnings) = self
            .guaranteed(t, name, |cur, rev| {
                let mut new = edit.apply(r, cur)?;
                objects::prepare_update(r, &mut new, cur, rev, kind)?;
                let decoded = kinds::prepare(r, new, mode, Phase::Update(cur))?;
                let mut new = decoded.value;
                if r.kind == "Service" && kind == UpdateKind::Main {
                    self.allocate_service(r, &mut new, Some(cur))?;
                }
                if dry {
                    preview = Some(new);
                    return Ok(Next::Unchanged);
                }
                if finishes_deletion(r, &new) {
                    return Ok(Next::Delete);
                }
                Ok(Next::Put(new, decoded.warnings))
            })
            .await?;
        if let Some(p) = preview {
            return Ok(value_response(StatusCode::OK, &p, &warnings));
        }
        if let Outcome::Written(c) = &outcome {
            self.release_replaced(r, c);
        }
        Ok(json_response(StatusCode::OK, outcome.json(), &warnings))
    }

    /// Frees Service addresses that an update or delete gave up.
    fn release_replaced(&self, r: &Resource, c: &Committed) {
        if r.kind != "Service" {
            return;
        }
        let Some(prev) = &c.prev else { return };
        let before = Allocated::of(r, &prev.value());
        let after = if c.kind == EventType::Deleted {
            Allocated::default()
        } else {
            Allocated::of(r, &c.object.value())
        };
        let mut alloc = self.allocator.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ip) = before.ip
            && after.ip != Some(ip)
        {
            alloc.release_ip(ip);
        }
        for p in before.ports {
            if !after.ports.contains(&p) {
                alloc.release_port(p);
            }
        }
    }

    async fn delete(
        &self,
        t: &Target,
        name: &str,
        opts: DeleteOptions,
    ) -> Result<Response, ApiError> {
        let r = t.resource;
        let now = self.now();
        let (outcome, _) = self
            .guaranteed(t, name, |cur, rev| delete_step(r, cur, rev, &opts, now))
            .await?;
        if let Outcome::Written(c) = &outcome {
            self.release_replaced(r, c);
        }
        Ok(json_response(StatusCode::OK, outcome.json(), &[]))
    }

    async fn delete_collection(
        &self,
        t: &Target,
        q: &Query,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, ApiError> {
        let r = t.resource;
        let sel = Selectors::parse(r, q)?;
        let opts = DeleteOptions::parse(q, headers, body)?;
        let prefix = r.namespace_prefix(t.namespace.as_deref());
        let listing = self
            .store
            .list(&prefix, None, None, false)
            .map_err(|e| store_error(r, "", e))?;
        let mut items = Vec::new();
        for o in listing.items.filter(|o| sel.matches(o)) {
            let v = o.value();
            let ns = v["metadata"]["namespace"].as_str().map(str::to_string);
            let name = name_of(&v).to_string();
            let target = Target {
                namespace: ns.or_else(|| t.namespace.clone()),
                ..t.clone()
            };
            let now = self.now();
            match self
                .guaranteed(&target, &name, |cur, rev| {
                    delete_step(r, cur, rev, &opts, now)
                })
                .await
            {
                Ok((outcome, _)) => {
                    if let Outcome::Written(c) = &outcome {
                        self.release_replaced(r, c);
                    }
                    items.push(
                        serde_json::from_slice::<Value>(&outcome.json()).unwrap_or(Value::Null),
                    );
                }
                Err(e) if e.code == StatusCode::NOT_FOUND => {}
                Err(e) => return Err(e),
            }
        }
        let list = json!({
            "kind": list_kind(r),
            "apiVersion": r.api_version(),
            "metadata": {"resourceVersion": self.store.revision().to_string()},
            "items": items,
        });
        Ok(value_response(StatusCode::OK, &list, &[]))
    }

    async fn bind(&self, t: &Target, pod: &str, binding: Value) -> Result<Response, ApiError> {
        let pods = resources::find("", "v1", "pods").expect("pods are served");
        let bindings = resources::find("", "v1", "bindings").expect("bindings are served");
        let binding =
            kinds::prepare(bindings, binding, FieldValidation::Ignore, Phase::Create)?.value;
        let node = binding["target"]["name"].as_str().unwrap_or("").to_string();
        if node.is_empty() {
            return Err(ApiError::invalid(
                bindings,
                pod,
                vec![super::status::Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value".into(),
                    field: "target.name".into(),
                }],
            ));
        }
        let target = Target {
            resource: pods,
            namespace: t.namespace.clone(),
            name: Some(pod.to_string()),
            sub: None,
        };
        let uid = binding["metadata"]["uid"].as_str().map(str::to_string);
        let annotations = binding["metadata"]["annotations"].as_object().cloned();
        let now = timestamp(self.now());
        self.guaranteed(&target, pod, |cur, _| {
            if deleting(cur) {
                return Err(ApiError::conflict(
                    pods,
                    pod,
                    &format!("pod {pod} is being deleted, cannot be assigned to a host"),
                ));
            }
            if let Some(n) = cur["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                return Err(ApiError::conflict(
                    pods,
                    pod,
                    &format!("pod {pod} is already assigned to node {n:?}"),
                ));
            }
            if let Some(u) = &uid
                && cur["metadata"]["uid"].as_str() != Some(u.as_str())
            {
                return Err(ApiError::conflict(
                    pods,
                    pod,
                    &format!("Precondition failed: UID in precondition: {u}, UID in object meta: {}", cur["metadata"]["uid"].as_str().unwrap_or("")),
                ));
            }
            let mut new = cur.clone();
            new["spec"]["nodeName"] = json!(node);
            if let Some(a) = &annotations {
                let m = &mut new["metadata"]["annotations"];
                if !m.is_object() {
                    *m = json!({});
                }
                for (k, v) in a {
                    m[k] = v.clone();
                }
            }
            let conds = &mut new["status"]["conditions"];
            if !conds.is_array() {
                *conds = json!([]);
            }
            if let Some(list) = conds.as_array_mut() {
                list.retain(|c| c["type"] != "PodScheduled");
                list.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));
            }
            Ok(Next::Put(new, Vec::new()))
        })
        .await?;
        Ok(value_response(
            StatusCode::CREATED,
            &success(201, None),
            &[],
        ))
    }

    async fn scale(
        &self,
        t: &Target,
        name: &str,
        q: &Query,
        edit: Edit,
    ) -> Result<Response, ApiError> {
        let r = t.resource;
        let dry = flag_dry_run(q)?;
        let mut preview = None;
        let (outcome, _) = self
            .guaranteed(t, name, |cur, rev| {
                let scale = edit.apply_to_value(&scale_of(cur))?;
                if let Some(rv) = scale["metadata"]["resourceVersion"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    && objects::parse_rv(rv)? != rev
                {
                    return Err(ApiError::stale(r, name));
                }
                let replicas = scale["spec"]["replicas"].as_i64().unwrap_or(0);
                if replicas < 0 {
                    return Err(ApiError::invalid(
                        r,
                        name,
                        vec![super::status::Cause {
                            reason: "FieldValueInvalid".into(),
                            message: format!(
                                "Invalid value: {replicas}: must be greater than or equal to 0"
                            ),
                            field: "spec.replicas".into(),
                        }],
                    ));
                }
                let mut new = cur.clone();
                new["spec"]["replicas"] = json!(replicas);
                objects::prepare_update(r, &mut new, cur, rev, UpdateKind::Main)?;
                if dry {
                    preview = Some(new);
                    return Ok(Next::Unchanged);
                }
                Ok(Next::Put(new, Vec::new()))
            })
            .await?;
        let obj: Value = match preview {
            Some(p) => p,
            None => serde_json::from_slice(&outcome.json()).unwrap_or(Value::Null),
        };
        Ok(value_response(StatusCode::OK, &scale_of(&obj), &[]))
    }

    async fn finalize_namespace(
        &self,
        t: &Target,
        name: &str,
        body: Value,
    ) -> Result<Response, ApiError> {
        let r = t.resource;
        let fins = body["spec"]["finalizers"].clone();
        let (outcome, _) = self
            .guaranteed(t, name, |cur, _| {
                let mut new = cur.clone();
                new["spec"]["finalizers"] = if fins.is_null() {
                    json!([])
                } else {
                    fins.clone()
                };
                if finishes_deletion(r, &new) {
                    return Ok(Next::Delete);
                }
                Ok(Next::Put(new, Vec::new()))
            })
            .await?;
        Ok(json_response(StatusCode::OK, outcome.json(), &[]))
    }
}

fn flag_dry_run(q: &Query) -> Result<bool, ApiError> {
    match q.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "dryRun must be \"All\", not {other:?}"
        ))),
    }
}

/// The ClusterIP and NodePorts a Service holds.
#[derive(Default)]
struct Allocated {
    ip: Option<Ipv4Addr>,
    ports: Vec<u16>,
}

impl Allocated {
    fn of(r: &Resource, v: &Value) -> Self {
        if r.kind != "Service" {
            return Allocated::default();
        }
        Allocated {
            ip: v["spec"]["clusterIP"].as_str().and_then(|s| s.parse().ok()),
            ports: v["spec"]["ports"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p["nodePort"].as_u64())
                        .filter_map(|p| u16::try_from(p).ok())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn release(self, api: &Api) {
        let mut alloc = api.allocator.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ip) = self.ip {
            alloc.release_ip(ip);
        }
        for p in self.ports {
            alloc.release_port(p);
        }
    }
}

/// What an edit step decided.
enum Next {
    /// Write this version.
    Put(Value, Vec<String>),
    /// Remove the object.
    Delete,
    /// Nothing to write.
    Unchanged,
}

/// What a read-modify-write did.
enum Outcome {
    Written(Committed),
    Unchanged(Arc<Object>),
}

impl Outcome {
    fn json(&self) -> Bytes {
        match self {
            Outcome::Written(c) => c.object.json.clone(),
            Outcome::Unchanged(o) => o.json.clone(),
        }
    }
}

/// How a PUT or PATCH changes the current object.
pub enum Edit {
    /// PUT: the body is the next version.
    Replace(Value),
    /// RFC 6902 JSON Patch.
    Json(json_patch::Patch),
    /// RFC 7386 merge patch.
    Merge(Value),
    /// Kubernetes strategic merge patch.
    Strategic(Value),
}

fn patch_edit(headers: &HeaderMap, body: &[u8]) -> Result<Edit, ApiError> {
    let ct = content_type(headers);
    let parse = |b: &[u8]| {
        serde_json::from_slice::<Value>(b)
            .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))
    };
    match ct.as_str() {
        "application/json-patch+json" => serde_json::from_slice(body)
            .map(Edit::Json)
            .map_err(|e| ApiError::bad_request(format!("the JSON patch is not valid: {e}"))),
        "application/merge-patch+json" => Ok(Edit::Merge(parse(body)?)),
        "application/strategic-merge-patch+json" => Ok(Edit::Strategic(parse(body)?)),
        other => Err(ApiError::unsupported_media(
            other,
            &[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ],
        )),
    }
}

impl Edit {
    fn apply(&self, r: &Resource, cur: &Value) -> Result<Value, ApiError> {
        match self {
            Edit::Strategic(p) => super::strategic::apply(r.kind, cur, p).map_err(|e| {
                // Upstream answers some malformed patches with 500; they are
                // the client's mistake, so 400 or 422 here.
                if e.status_code() == 400 {
                    ApiError::bad_request(e.to_string())
                } else {
                    ApiError {
                        code: StatusCode::UNPROCESSABLE_ENTITY,
                        reason: "Invalid",
                        message: format!("the strategic merge patch could not be applied: {e}"),
                        details: None,
                    }
                }
            }),
            other => other.apply_to_value(cur),
        }
    }

    fn apply_to_value(&self, cur: &Value) -> Result<Value, ApiError> {
        match self {
            Edit::Replace(v) => Ok(v.clone()),
            Edit::Json(p) => {
                let mut doc = cur.clone();
                json_patch::patch(&mut doc, p).map_err(|e| ApiError {
                    code: StatusCode::UNPROCESSABLE_ENTITY,
                    reason: "Invalid",
                    message: format!("the JSON patch could not be applied: {e}"),
                    details: None,
                })?;
                Ok(doc)
            }
            Edit::Merge(p) | Edit::Strategic(p) => {
                let mut doc = cur.clone();
                json_patch::merge(&mut doc, p);
                Ok(doc)
            }
        }
    }
}

/// autoscaling/v1 Scale of a Deployment or ReplicaSet.
fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let selector = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// An object being deleted whose last finalizer is gone (and, for pods,
/// whose grace period is over) is removed.
fn finishes_deletion(r: &Resource, v: &Value) -> bool {
    if !deleting(v) || !finalizers(v).is_empty() {
        return false;
    }
    match r.kind {
        "Pod" => v["metadata"]["deletionGracePeriodSeconds"].as_i64() == Some(0),
        "Namespace" => v["spec"]["finalizers"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        _ => true,
    }
}

/// DELETE options from the body (DeleteOptions) and query.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    grace: Option<i64>,
    propagation: Option<String>,
    uid: Option<String>,
    rv: Option<Revision>,
    dry_run: bool,
}

impl DeleteOptions {
    fn parse(q: &Query, headers: &HeaderMap, body: &[u8]) -> Result<Self, ApiError> {
        let b: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            decode_body(headers, body)?
        };
        let grace =
            match q.get("gracePeriodSeconds") {
                Some(g) => Some(g.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}"))
                })?),
                None => b["gracePeriodSeconds"].as_i64(),
            };
        let propagation = q
            .get("propagationPolicy")
            .cloned()
            .or_else(|| b["propagationPolicy"].as_str().map(str::to_string));
        if let Some(p) = &propagation
            && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
        {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy must be one of Orphan, Background or Foreground, not {p:?}"
            )));
        }
        let rv = match b["preconditions"]["resourceVersion"].as_str() {
            Some(s) => Some(objects::parse_rv(s)?),
            None => None,
        };
        let dry_run = flag_dry_run(q)?
            || b["dryRun"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == "All"));
        Ok(DeleteOptions {
            grace: grace.map(|g| g.max(0)),
            propagation,
            uid: b["preconditions"]["uid"].as_str().map(str::to_string),
            rv,
            dry_run,
        })
    }
}

/// One step of a delete: graceful for pods, held by finalizers, or final.
fn delete_step(
    r: &Resource,
    cur: &Value,
    rev: Revision,
    opts: &DeleteOptions,
    now: SystemTime,
) -> Result<Next, ApiError> {
    let name = name_of(cur);
    if let Some(u) = &opts.uid
        && cur["metadata"]["uid"].as_str() != Some(u.as_str())
    {
        return Err(ApiError::conflict(
            r,
            name,
            &format!(
                "Precondition failed: UID in precondition: {u}, UID in object meta: {}",
                cur["metadata"]["uid"].as_str().unwrap_or("")
            ),
        ));
    }
    if let Some(want) = opts.rv
        && want != rev
    {
        return Err(ApiError::conflict(
            r,
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rev}"
            ),
        ));
    }
    if opts.dry_run {
        return Ok(Next::Unchanged);
    }
    let mut new = cur.clone();
    let mut fins = finalizers(cur);
    let wanted = match opts.propagation.as_deref() {
        Some("Orphan") => Some("orphan"),
        Some("Foreground") => Some("foregroundDeletion"),
        _ => None,
    };
    if let Some(f) = wanted
        && !deleting(cur)
        && !fins.iter().any(|x| x == f)
    {
        fins.push(f.to_string());
        new["metadata"]["finalizers"] = json!(fins);
    }
    let grace = match r.kind {
        "Pod" => {
            let bound = cur["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
            let terminal = matches!(
                cur["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            );
            if !bound || terminal {
                0
            } else {
                opts.grace
                    .or_else(|| cur["spec"]["terminationGracePeriodSeconds"].as_i64())
                    .unwrap_or(30)
            }
        }
        _ => 0,
    };
    let is_namespace = r.kind == "Namespace";
    let ns_fins = is_namespace
        && new["spec"]["finalizers"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
    if grace == 0 && fins.is_empty() && !ns_fins {
        return Ok(Next::Delete);
    }
    if deleting(cur) {
        // Only a shorter grace period changes anything.
        let current = cur["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(0);
        if grace >= current && new == *cur {
            return Ok(Next::Unchanged);
        }
    }
    let when = now + Duration::from_secs(grace as u64);
    new["metadata"]["deletionTimestamp"] = json!(timestamp(when));
    new["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    if is_namespace {
        new["status"]["phase"] = json!("Terminating");
    }
    Ok(Next::Put(new, Vec::new()))
}

/// Served at `/api/v1/...` and `/apis/<group>/<version>/...`.
pub async fn serve(
    api: Arc<Api>,
    group: &str,
    version: &str,
    rest: &str,
    req: axum::extract::Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let q: Query = axum::extract::Query::<Query>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let (method, headers) = (parts.method, parts.headers);
    let started = Instant::now();
    let target = parse_target(group, version, rest);
    let resource = target
        .as_ref()
        .map(|t| t.resource.plural)
        .unwrap_or("unknown");
    let verb = verb_of(&method, target.as_ref().ok(), &q);
    let result = async {
        let t = target?;
        let body = read_body(body).await?;
        api.handle(method, t, q, headers, body).await
    }
    .await;
    let response = result.unwrap_or_else(|e| {
        if e.code.is_server_error() {
            tracing::warn!(verb, resource, error = %e, "request failed");
        }
        e.into_response()
    });
    super::metrics::request(
        verb,
        resource,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Reads a request body of at most [`MAX_BODY`] bytes. A larger one is
/// read on (up to a bound) and dropped, so that the client gets its 413
/// rather than a connection reset in the middle of sending.
async fn read_body(body: axum::body::Body) -> Result<Bytes, ApiError> {
    use futures::StreamExt;
    const DRAIN_MAX: usize = 16 * MAX_BODY;
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        seen += chunk.len();
        if seen <= MAX_BODY {
            buf.put_slice(&chunk);
        } else if seen > DRAIN_MAX {
            break;
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::too_large(MAX_BODY));
    }
    Ok(buf.freeze())
}

fn verb_of(method: &Method, t: Option<&Target>, q: &Query) -> &'static str {
    let named = t.is_some_and(|t| t.name.is_some());
    match *method {
        Method::GET if !named && flag(q, "watch") => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_like_upstream_paths() {
        let t = parse_target("", "v1", "namespaces/ns/pods/p/status").unwrap();
        assert_eq!(
            (
                t.resource.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            ("pods", Some("ns"), Some("p"), Some("status"))
        );
        let t = parse_target("", "v1", "namespaces/ns").unwrap();
        assert_eq!(
            (t.resource.plural, t.name.as_deref()),
            ("namespaces", Some("ns"))
        );
        let t = parse_target("", "v1", "namespaces/ns/finalize").unwrap();
        assert_eq!(t.sub.as_deref(), Some("finalize"));
        let t = parse_target("", "v1", "pods").unwrap();
        assert!(t.namespace.is_none() && t.name.is_none());
        let t = parse_target("apps", "v1", "namespaces/x/deployments/d/scale").unwrap();
        assert_eq!(t.sub.as_deref(), Some("scale"));
        assert_eq!(parse_target("", "v1", "widgets").unwrap_err().code, 404);
        assert_eq!(
            parse_target("", "v1", "namespaces/ns/pods/p/exec")
                .unwrap_err()
                .code,
            404
        );
    }

    #[test]
    fn accept_headers_choose_the_format() {
        let mut h = HeaderMap::new();
        let q = Query::new();
        assert_eq!(format(&h, &q).unwrap(), Format::Json);
        h.insert(header::ACCEPT, HeaderValue::from_static(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"));
        assert_eq!(
            format(&h, &q).unwrap(),
            Format::Table(IncludeObject::Metadata)
        );
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.kubernetes.protobuf, */*"),
        );
        assert_eq!(format(&h, &q).unwrap(), Format::Json);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.kubernetes.protobuf"),
        );
        assert_eq!(format(&h, &q).unwrap_err().code, 406);
    }

    #[test]
    fn pods_delete_gracefully_only_when_bound() {
        let pods = resources::find("", "v1", "pods").unwrap();
        let now = SystemTime::now();
        let opts = DeleteOptions::default();
        let unbound = json!({"metadata": {"name": "p"}, "spec": {}});
        assert!(matches!(
            delete_step(pods, &unbound, 1, &opts, now).unwrap(),
            Next::Delete
        ));
        let bound = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 10}});
        let Next::Put(v, _) = delete_step(pods, &bound, 1, &opts, now).unwrap() else {
            panic!("graceful")
        };
        assert_eq!(v["metadata"]["deletionGracePeriodSeconds"], 10);
        let zero = DeleteOptions {
            grace: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            delete_step(pods, &v, 2, &zero, now).unwrap(),
            Next::Delete
        ));
        let held = json!({"metadata": {"name": "c", "finalizers": ["x"]}});
        let cms = resources::find("", "v1", "configmaps").unwrap();
        let Next::Put(v, _) = delete_step(cms, &held, 1, &opts, now).unwrap() else {
            panic!("held")
        };
        assert!(deleting(&v));
        let mut released = v.clone();
        released["metadata"]["finalizers"] = json!([]);
        assert!(finishes_deletion(cms, &released));
        let stale = DeleteOptions {
            rv: Some(5),
            ..Default::default()
        };
        assert_eq!(
            delete_step(cms, &held, 1, &stale, now).err().unwrap().code,
            409
        );
    }
}
