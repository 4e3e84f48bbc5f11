//! The HTTP router of km apiserver: discovery, health, metrics, OpenAPI and
//! the resource URLs.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::Value;

use super::discovery;
use super::openapi;
use super::resources::{RESOURCES, group_versions};
use super::rest::{self, Api};
use super::status::ApiError;

/// Shared by every route.
#[derive(Clone)]
pub struct AppState {
    /// The REST layer.
    pub api: Arc<Api>,
    /// The address clients reach the server at (`/api`'s serverAddress).
    pub advertise: String,
}

fn json(v: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

async fn ok_text() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response()
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(ok_text))
        .route("/livez", get(ok_text))
        .route("/readyz", get(ok_text))
        .route("/version", get(|| async { json(&discovery::version()) }))
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    super::metrics::render(),
                )
            }),
        )
        .route(
            "/api",
            get(|State(s): State<AppState>| async move {
                json(&discovery::core_versions(&s.advertise))
            }),
        )
        .route("/api/v1", get(|| async { core_list() }))
        .route("/apis", get(|| async { json(&discovery::groups()) }))
        .route("/apis/{group}", get(api_group))
        .route("/apis/{group}/{version}", get(group_version))
        .route("/api/v1/{*rest}", any(core_resource))
        .route("/apis/{group}/{version}/{*rest}", any(group_resource))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*path}", get(openapi_doc))
        .fallback(
            |req: Request| async move { ApiError::no_route(req.uri().path()).into_response() },
        )
        .with_state(state)
}

fn core_list() -> Response {
    match discovery::resource_list("", "v1") {
        Some(v) => json(&v),
        None => ApiError::no_route("/api/v1").into_response(),
    }
}

async fn api_group(Path(group): Path<String>) -> Response {
    match discovery::group(&group) {
        Some(v) => json(&v),
        None => ApiError::no_route(&format!("/apis/{group}")).into_response(),
    }
}

async fn group_version(Path((group, version)): Path<(String, String)>) -> Response {
    match discovery::resource_list(&group, &version) {
        Some(v) if !group.is_empty() => json(&v),
        _ => ApiError::no_route(&format!("/apis/{group}/{version}")).into_response(),
    }
}

async fn core_resource(
    State(s): State<AppState>,
    Path(rest): Path<String>,
    req: Request,
) -> Response {
    rest::serve(s.api, "", "v1", &rest, req).await
}

async fn group_resource(
    State(s): State<AppState>,
    Path((group, version, rest)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    rest::serve(s.api, &group, &version, &rest, req).await
}

/// The OpenAPI v3 documents, generated once.
struct OpenApi {
    index: Value,
    docs: HashMap<String, Value>,
}

fn openapi_docs() -> &'static OpenApi {
    static DOCS: OnceLock<OpenApi> = OnceLock::new();
    DOCS.get_or_init(|| {
        let strategies: Vec<(&str, &str, &str, Option<&str>)> =
            super::strategic::list_strategies().collect();
        let mut docs = HashMap::new();
        let mut hashes = Vec::new();
        for (group, version) in group_versions() {
            let resources: Vec<openapi::ResourceDoc> = RESOURCES
                .iter()
                .filter(|r| r.group == group && r.version == version)
                .map(|r| openapi::ResourceDoc {
                    group: r.group,
                    version: r.version,
                    kind: r.kind,
                    plural: r.plural,
                    namespaced: r.namespaced,
                    subresources: r.subresources,
                })
                .collect();
            let doc = openapi::v3_document(group, version, &resources, &strategies);
            let path = if group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{group}/{version}")
            };
            hashes.push((path.clone(), openapi::hash(&doc)));
            docs.insert(path, doc);
        }
        OpenApi {
            index: openapi::v3_index(&hashes),
            docs,
        }
    })
}

async fn openapi_index() -> Response {
    json(&openapi_docs().index)
}

async fn openapi_doc(Path(path): Path<String>) -> Response {
    match openapi_docs().docs.get(path.trim_matches('/')) {
        Some(d) => json(d),
        None => ApiError::no_route(&format!("/openapi/v3/{path}")).into_response(),
    }
}
