//! OpenAPI v3 documents generated from the k8s-openapi types.
//!
//! kubectl reads `/openapi/v3` (an index of group-version documents) and then one document per
//! group version. It uses them for `kubectl explain` (schemas found through their
//! `x-kubernetes-group-version-kind` extension), for deciding whether the server honours
//! `fieldValidation` (a PATCH operation carrying the GVK extension and a query parameter of that
//! name), and for computing client-side apply patches (`x-kubernetes-patch-strategy` and
//! `x-kubernetes-patch-merge-key` on schema properties).
//!
//! Component schemas are never written by hand: they come from the schemars implementations
//! of the k8s-openapi types (whose `schema_name()` is the upstream definition name, e.g.
//! `io.k8s.api.core.v1.Pod`), generated with OpenAPI 3.0 settings so that references point to
//! `#/components/schemas/...`. Only the `...List` wrappers, which k8s-openapi has no schema for,
//! are assembled here from the item schema and `ListMeta`.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use k8s_openapi::api::{
    apps::v1 as apps, authentication::v1 as authentication, authorization::v1 as authorization,
    autoscaling::v1 as autoscaling, batch::v1 as batch, coordination::v1 as coordination,
    core::v1 as core, discovery::v1 as discovery, events::v1 as events,
    networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac,
    scheduling::v1 as scheduling, storage::v1 as storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

/// Where component schemas live inside a document.
const SCHEMA_REF_PREFIX: &str = "#/components/schemas/";

/// Kubernetes version reported in each document's `info` block.
const API_VERSION_INFO: &str = "v1.35.0";

/// One served resource of a group version, as described in its OpenAPI document.
#[derive(Clone, Copy, Debug)]
pub struct ResourceDoc<'a> {
    /// API group ("" for core).
    pub group: &'a str,
    /// API version, e.g. "v1".
    pub version: &'a str,
    /// Kind, e.g. "Pod".
    pub kind: &'a str,
    /// Plural resource name, e.g. "pods".
    pub plural: &'a str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Subresources served under the object path, e.g. "status", "binding", "scale".
    pub subresources: &'a [&'a str],
}

/// The `GET /openapi/v3` index: one entry per group-version document, pointing at
/// `/openapi/v3/<path>?hash=<hex>`.
///
/// `docs` pairs a path such as `"api/v1"` or `"apis/apps/v1"` with that document's [`hash`].
pub fn v3_index(docs: &[(String, String)]) -> Value {
    let paths: Map<String, Value> = docs
        .iter()
        .map(|(path, hash)| {
            (
                path.clone(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}") }),
            )
        })
        .collect();
    json!({ "paths": paths })
}

/// The index path of a group version: `api/v1` for core, `apis/<group>/<version>` otherwise.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The OpenAPI 3.0 document for one group version.
///
/// `components.schemas` holds the schemas of the resources' kinds and everything they
/// reference, their `...List` types, and meta/v1 `Status`, `DeleteOptions`, `Patch` and
/// `WatchEvent`; each kind and list schema carries `x-kubernetes-group-version-kind`. `paths`
/// holds list/create/deletecollection, get/replace/patch/delete, the watch paths and the
/// subresources, every operation tagged with `x-kubernetes-action` and
/// `x-kubernetes-group-version-kind` and carrying upstream's query parameters.
///
/// `list_strategies` adds `x-kubernetes-patch-strategy` (and `x-kubernetes-patch-merge-key`
/// when given) to named properties: `(schema name, field, strategy, merge key)`, e.g.
/// `("io.k8s.api.core.v1.PodSpec", "containers", "merge", Some("name"))`. Entries naming a
/// schema or field absent from this document are skipped.
///
/// Kinds without a k8s-openapi type (custom resources) get a permissive object schema named
/// after the reversed group (`com.example.v1.Widget`) so that every reference still resolves.
pub fn v3_document(
    group: &str,
    version: &str,
    resources: &[ResourceDoc],
    list_strategies: &[(&str, &str, &str, Option<&str>)],
) -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let status = ref_name(&generator.subschema_for::<meta::Status>());
    let delete_options = ref_name(&generator.subschema_for::<meta::DeleteOptions>());
    let patch = ref_name(&generator.subschema_for::<meta::Patch>());
    let watch_event = ref_name(&generator.subschema_for::<meta::WatchEvent<Value>>());
    let list_meta = ref_name(&generator.subschema_for::<meta::ListMeta>());
    let object_meta = ref_name(&generator.subschema_for::<meta::ObjectMeta>());

    // Every kind named in this document (resources and subresource kinds) with its schema name.
    let mut kinds: Vec<KindEntry> = Vec::new();
    let mut custom: Vec<KindEntry> = Vec::new();
    let mut register = |generator: &mut SchemaGenerator, g: &str, v: &str, k: &str| -> String {
        let entry = match kind_schema(g, v, k) {
            Some(schema_fn) => {
                let entry = KindEntry::new(g, v, k, ref_name(&schema_fn(generator)));
                if !kinds.contains(&entry) {
                    kinds.push(entry.clone());
                }
                entry
            }
            None => {
                let entry = KindEntry::new(g, v, k, custom_schema_name(g, v, k));
                if !custom.contains(&entry) {
                    custom.push(entry.clone());
                }
                entry
            }
        };
        entry.schema
    };

    let mut ops: Vec<PathEntry> = Vec::new();
    let mut listed: Vec<(String, String)> = Vec::new();
    for r in resources {
        let kind_schema_name = register(&mut generator, r.group, r.version, r.kind);
        let create_only = CREATE_ONLY_KINDS.contains(&r.kind);
        if !create_only {
            listed.push((kind_schema_name.clone(), r.kind.to_owned()));
        }
        let mut sub_kinds = Vec::new();
        for sub in r.subresources {
            let sub_kind = match SubresourceKind::of(sub) {
                SubresourceKind::Other(g, v, k) => Some(SubKind {
                    group: g,
                    version: v,
                    kind: k,
                    schema: register(&mut generator, g, v, k),
                }),
                _ => None,
            };
            sub_kinds.push((*sub, sub_kind));
        }
        ops.extend(resource_paths(
            r,
            &kind_schema_name,
            create_only,
            &sub_kinds,
            &Names {
                status: &status,
                delete_options: &delete_options,
                patch: &patch,
                watch_event: &watch_event,
            },
        ));
    }

    let mut schemas = generator.take_definitions(true);

    // Upstream's object schemas do not list `metadata` as required (k8s-openapi marks every
    // non-optional Rust field as required).
    for entry in &kinds {
        if let Some(Value::Object(schema)) = schemas.get_mut(&entry.schema) {
            drop_required(schema, "metadata");
            add_gvk(schema, &entry.group, &entry.version, &entry.kind);
        }
    }
    for entry in &custom {
        schemas.insert(
            entry.schema.clone(),
            custom_schema(&entry.kind, &object_meta, &entry.group, &entry.version),
        );
    }
    for (item_schema, kind) in &listed {
        let Some((group, version)) = kinds
            .iter()
            .chain(custom.iter())
            .find(|e| &e.schema == item_schema)
            .map(|e| (e.group.clone(), e.version.clone()))
        else {
            continue;
        };
        schemas.insert(
            format!("{item_schema}List"),
            list_schema(kind, item_schema, &list_meta, &group, &version),
        );
    }
    // Upstream publishes IntOrString as a string with format "int-or-string", which is what
    // kubectl explain shows; k8s-openapi only carries the extension.
    if let Some(Value::Object(s)) =
        schemas.get_mut("io.k8s.apimachinery.pkg.util.intstr.IntOrString")
    {
        s.entry("type").or_insert_with(|| "string".into());
        s.entry("format").or_insert_with(|| "int-or-string".into());
    }
    if let Some(Value::Object(s)) = schemas.get_mut(&status) {
        add_gvk(s, "", "v1", "Status");
    }
    for (name, kind) in [
        (&delete_options, "DeleteOptions"),
        (&watch_event, "WatchEvent"),
    ] {
        if let Some(Value::Object(s)) = schemas.get_mut(name) {
            add_gvk(s, group, version, kind);
        }
    }

    for (type_name, field, strategy, merge_key) in list_strategies {
        let Some(property) = schemas
            .get_mut(*type_name)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(*field))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        property.insert("x-kubernetes-patch-strategy".into(), (*strategy).into());
        if let Some(key) = merge_key {
            property.insert("x-kubernetes-patch-merge-key".into(), (*key).into());
        }
    }

    let mut names: Vec<String> = schemas.keys().cloned().collect();
    names.sort();
    let sorted: Map<String, Value> = names
        .into_iter()
        .filter_map(|n| schemas.remove(&n).map(|s| (n, s)))
        .collect();

    let mut paths = Map::new();
    for entry in ops {
        paths.insert(entry.path, entry.item);
    }

    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": API_VERSION_INFO },
        "paths": paths,
        "components": {
            "schemas": sorted,
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header",
                },
            },
        },
        "security": [{ "BearerToken": [] }],
    })
}

/// Stable content hash of a document (uppercase hex of a 128-bit FNV-1a over its JSON text),
/// used in `serverRelativeURL` so clients refetch when the document changes.
pub fn hash(doc: &Value) -> String {
    let mut hasher = Fnv128::default();
    // Serializing a `Value` into an infallible writer cannot fail: all its keys are strings.
    let _ = serde_json::to_writer(&mut hasher, doc);
    format!("{:032X}", hasher.state)
}

// ---------------------------------------------------------------------------------------------
// Kind → type mapping
// ---------------------------------------------------------------------------------------------

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn sub<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// The k8s-openapi type behind a (group, version, kind), as a schema-reference generator.
fn kind_schema(group: &str, version: &str, kind: &str) -> Option<SchemaFn> {
    let f: SchemaFn = match (group, version, kind) {
        ("", "v1", "Namespace") => sub::<core::Namespace>,
        ("", "v1", "Pod") => sub::<core::Pod>,
        ("", "v1", "Binding") => sub::<core::Binding>,
        ("", "v1", "Node") => sub::<core::Node>,
        ("", "v1", "Service") => sub::<core::Service>,
        ("", "v1", "Endpoints") => sub::<core::Endpoints>,
        ("", "v1", "Event") => sub::<core::Event>,
        ("", "v1", "ConfigMap") => sub::<core::ConfigMap>,
        ("", "v1", "Secret") => sub::<core::Secret>,
        ("", "v1", "ServiceAccount") => sub::<core::ServiceAccount>,
        ("", "v1", "PodTemplate") => sub::<core::PodTemplate>,
        ("", "v1", "ReplicationController") => sub::<core::ReplicationController>,
        ("", "v1", "PersistentVolume") => sub::<core::PersistentVolume>,
        ("", "v1", "PersistentVolumeClaim") => sub::<core::PersistentVolumeClaim>,
        ("", "v1", "LimitRange") => sub::<core::LimitRange>,
        ("", "v1", "ResourceQuota") => sub::<core::ResourceQuota>,
        ("apps", "v1", "Deployment") => sub::<apps::Deployment>,
        ("apps", "v1", "ReplicaSet") => sub::<apps::ReplicaSet>,
        ("apps", "v1", "DaemonSet") => sub::<apps::DaemonSet>,
        ("apps", "v1", "StatefulSet") => sub::<apps::StatefulSet>,
        ("apps", "v1", "ControllerRevision") => sub::<apps::ControllerRevision>,
        ("coordination.k8s.io", "v1", "Lease") => sub::<coordination::Lease>,
        ("discovery.k8s.io", "v1", "EndpointSlice") => sub::<discovery::EndpointSlice>,
        ("events.k8s.io", "v1", "Event") => sub::<events::Event>,
        ("autoscaling", "v1", "Scale") => sub::<autoscaling::Scale>,
        ("policy", "v1", "Eviction") => sub::<policy::Eviction>,
        ("policy", "v1", "PodDisruptionBudget") => sub::<policy::PodDisruptionBudget>,
        ("batch", "v1", "Job") => sub::<batch::Job>,
        ("batch", "v1", "CronJob") => sub::<batch::CronJob>,
        ("networking.k8s.io", "v1", "Ingress") => sub::<networking::Ingress>,
        ("networking.k8s.io", "v1", "NetworkPolicy") => sub::<networking::NetworkPolicy>,
        ("rbac.authorization.k8s.io", "v1", "Role") => sub::<rbac::Role>,
        ("rbac.authorization.k8s.io", "v1", "RoleBinding") => sub::<rbac::RoleBinding>,
        ("rbac.authorization.k8s.io", "v1", "ClusterRole") => sub::<rbac::ClusterRole>,
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => {
            sub::<rbac::ClusterRoleBinding>
        }
        ("scheduling.k8s.io", "v1", "PriorityClass") => sub::<scheduling::PriorityClass>,
        ("storage.k8s.io", "v1", "StorageClass") => sub::<storage::StorageClass>,
        ("authentication.k8s.io", "v1", "TokenReview") => sub::<authentication::TokenReview>,
        ("authorization.k8s.io", "v1", "SubjectAccessReview") => {
            sub::<authorization::SubjectAccessReview>
        }
        ("authorization.k8s.io", "v1", "SelfSubjectAccessReview") => {
            sub::<authorization::SelfSubjectAccessReview>
        }
        ("apiextensions.k8s.io", "v1", "CustomResourceDefinition") => {
            sub::<apiextensions::CustomResourceDefinition>
        }
        _ => return None,
    };
    Some(f)
}

/// Kinds whose resource only accepts POST (no list, get, update or watch).
const CREATE_ONLY_KINDS: &[&str] = &[
    "Binding",
    "TokenReview",
    "SubjectAccessReview",
    "SelfSubjectAccessReview",
    "LocalSubjectAccessReview",
    "SelfSubjectRulesReview",
];

/// How a subresource is served.
enum SubresourceKind {
    /// Same kind as the parent: get, put and patch (status, ephemeralcontainers, resize, ...).
    SameKind,
    /// POST of another kind (binding, eviction) or get/put/patch of another kind (scale).
    Other(&'static str, &'static str, &'static str),
    /// Plain-text read (log).
    Text,
    /// Streaming connection (exec, attach, portforward, proxy).
    Connect,
}

impl SubresourceKind {
    fn of(name: &str) -> Self {
        match name {
            "binding" => Self::Other("", "v1", "Binding"),
            "eviction" => Self::Other("policy", "v1", "Eviction"),
            "scale" => Self::Other("autoscaling", "v1", "Scale"),
            "log" => Self::Text,
            "exec" | "attach" | "portforward" | "proxy" => Self::Connect,
            _ => Self::SameKind,
        }
    }
}

/// The kind served by a subresource of another kind, with its component name.
struct SubKind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    schema: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct KindEntry {
    group: String,
    version: String,
    kind: String,
    schema: String,
}

impl KindEntry {
    fn new(group: &str, version: &str, kind: &str, schema: String) -> Self {
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            schema,
        }
    }
}

/// The component name a `$ref` schema points at.
fn ref_name(schema: &Schema) -> String {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(SCHEMA_REF_PREFIX))
        .unwrap_or_default()
        .to_owned()
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("{SCHEMA_REF_PREFIX}{name}") })
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}

/// Appends a GVK to a schema's `x-kubernetes-group-version-kind` list (no duplicates).
fn add_gvk(schema: &mut Map<String, Value>, group: &str, version: &str, kind: &str) {
    let entry = gvk(group, version, kind);
    let list = schema
        .entry("x-kubernetes-group-version-kind")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(items) = list
        && !items.contains(&entry)
    {
        items.push(entry);
    }
}

fn drop_required(schema: &mut Map<String, Value>, field: &str) {
    let now_empty = match schema.get_mut("required") {
        Some(Value::Array(required)) => {
            required.retain(|f| f.as_str() != Some(field));
            required.is_empty()
        }
        _ => false,
    };
    if now_empty {
        schema.remove("required");
    }
}

/// Component name for a kind without a k8s-openapi type: reversed group, version, kind.
fn custom_schema_name(group: &str, version: &str, kind: &str) -> String {
    let mut parts: Vec<&str> = if group.is_empty() {
        vec!["io", "k8s", "api", "core"]
    } else {
        group.split('.').rev().collect()
    };
    parts.push(version);
    parts.push(kind);
    parts.join(".")
}

fn custom_schema(kind: &str, object_meta: &str, group: &str, version: &str) -> Value {
    json!({
        "description": format!("{kind} is served by this API server without a published schema."),
        "type": "object",
        "properties": {
            "apiVersion": { "type": "string", "description": "Versioned schema of this representation of the object." },
            "kind": { "type": "string", "description": "REST resource this object represents." },
            "metadata": { "allOf": [schema_ref(object_meta)], "description": "Standard object metadata." },
        },
        "x-kubernetes-preserve-unknown-fields": true,
        "x-kubernetes-group-version-kind": [gvk(group, version, kind)],
    })
}

/// The `<Kind>List` schema: `items` of the kind plus list metadata.
fn list_schema(
    kind: &str,
    item_schema: &str,
    list_meta: &str,
    group: &str,
    version: &str,
) -> Value {
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "properties": {
            "apiVersion": { "type": "string", "description": "Versioned schema of this representation of the list." },
            "items": { "type": "array", "items": schema_ref(item_schema), "description": format!("The {kind} objects.") },
            "kind": { "type": "string", "description": "REST resource this object represents." },
            "metadata": { "allOf": [schema_ref(list_meta)], "description": "Standard list metadata." },
        },
        "required": ["items"],
        "x-kubernetes-group-version-kind": [gvk(group, version, &format!("{kind}List"))],
    })
}

// ---------------------------------------------------------------------------------------------
// Paths and operations
// ---------------------------------------------------------------------------------------------

/// Component names of the meta types operations refer to.
struct Names<'a> {
    status: &'a str,
    delete_options: &'a str,
    patch: &'a str,
    watch_event: &'a str,
}

struct PathEntry {
    path: String,
    item: Value,
}

/// What an operation does, which decides its parameters, body and responses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    List,
    Create,
    DeleteCollection,
    Get,
    Replace,
    Patch,
    Delete,
    Watch,
    WatchList,
    Log,
    Connect,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Self::List => "list",
            Self::Create => "post",
            Self::DeleteCollection => "deletecollection",
            Self::Get | Self::Log => "get",
            Self::Replace => "put",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::Watch => "watch",
            Self::WatchList => "watchlist",
            Self::Connect => "connect",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Self::List => "list",
            Self::Create => "create",
            Self::DeleteCollection | Self::Delete => "delete",
            Self::Get | Self::Log => "read",
            Self::Replace => "replace",
            Self::Patch => "patch",
            Self::Watch | Self::WatchList => "watch",
            Self::Connect => "connect",
        }
    }
}

/// Everything one operation needs to be rendered.
struct OpSpec {
    action: Action,
    /// Operation id without the verb prefix, e.g. "CoreV1NamespacedPod".
    id: String,
    /// Schema of request/response bodies for this kind.
    body_schema: String,
    gvk: Value,
    summary: String,
}

fn resource_paths(
    r: &ResourceDoc,
    kind_schema: &str,
    create_only: bool,
    sub_kinds: &[(&str, Option<SubKind>)],
    names: &Names,
) -> Vec<PathEntry> {
    let prefix = format!("/{}", gv_path(r.group, r.version));
    let gv_id = format!("{}{}", group_id(r.group), capitalize(r.version));
    let tag = format!("{}_{}", group_tag(r.group), r.version);
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let kind_gvk = gvk(r.group, r.version, r.kind);
    let (collection, item, watch_collection, watch_item) = if r.namespaced {
        (
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural),
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            format!("{prefix}/watch/namespaces/{{namespace}}/{}", r.plural),
            format!(
                "{prefix}/watch/namespaces/{{namespace}}/{}/{{name}}",
                r.plural
            ),
        )
    } else {
        (
            format!("{prefix}/{}", r.plural),
            format!("{prefix}/{}/{{name}}", r.plural),
            format!("{prefix}/watch/{}", r.plural),
            format!("{prefix}/watch/{}/{{name}}", r.plural),
        )
    };
    let list_schema = format!("{kind_schema}List");
    let base_id = format!("{gv_id}{scope}{}", r.kind);
    let op = |action: Action, id: String, body: &str, summary: String| OpSpec {
        action,
        id,
        body_schema: body.to_owned(),
        gvk: kind_gvk.clone(),
        summary,
    };
    let kind = r.kind;
    let mut out = Vec::new();

    let collection_params = path_params(r.namespaced, false, kind);
    if create_only {
        out.push(path_item(
            collection,
            &collection_params,
            &[op(
                Action::Create,
                base_id.clone(),
                kind_schema,
                format!("create a {kind}"),
            )],
            &tag,
            names,
        ));
        return out;
    }

    out.push(path_item(
        collection,
        &collection_params,
        &[
            op(
                Action::List,
                base_id.clone(),
                &list_schema,
                format!("list or watch objects of kind {kind}"),
            ),
            op(
                Action::Create,
                base_id.clone(),
                kind_schema,
                format!("create a {kind}"),
            ),
            op(
                Action::DeleteCollection,
                format!("{gv_id}Collection{scope}{kind}"),
                kind_schema,
                format!("delete a collection of {kind}"),
            ),
        ],
        &tag,
        names,
    ));
    let item_params = path_params(r.namespaced, true, kind);
    out.push(path_item(
        item.clone(),
        &item_params,
        &[
            op(
                Action::Get,
                base_id.clone(),
                kind_schema,
                format!("read the specified {kind}"),
            ),
            op(
                Action::Replace,
                base_id.clone(),
                kind_schema,
                format!("replace the specified {kind}"),
            ),
            op(
                Action::Patch,
                base_id.clone(),
                kind_schema,
                format!("partially update the specified {kind}"),
            ),
            op(
                Action::Delete,
                base_id.clone(),
                kind_schema,
                format!("delete a {kind}"),
            ),
        ],
        &tag,
        names,
    ));
    if r.namespaced {
        out.push(path_item(
            format!("{prefix}/{}", r.plural),
            &path_params(false, false, kind),
            &[op(
                Action::List,
                format!("{gv_id}{kind}ForAllNamespaces"),
                &list_schema,
                format!("list or watch objects of kind {kind}"),
            )],
            &tag,
            names,
        ));
        out.push(path_item(
            format!("{prefix}/watch/{}", r.plural),
            &path_params(false, false, kind),
            &[op(
                Action::WatchList,
                format!("{gv_id}{kind}ListForAllNamespaces"),
                names.watch_event,
                format!("watch individual changes to a list of {kind}"),
            )],
            &tag,
            names,
        ));
    }
    out.push(path_item(
        watch_collection,
        &collection_params,
        &[op(
            Action::WatchList,
            format!("{base_id}List"),
            names.watch_event,
            format!("watch individual changes to a list of {kind}"),
        )],
        &tag,
        names,
    ));
    out.push(path_item(
        watch_item,
        &item_params,
        &[op(
            Action::Watch,
            base_id.clone(),
            names.watch_event,
            format!("watch changes to an object of kind {kind}"),
        )],
        &tag,
        names,
    ));

    for (sub, other) in sub_kinds {
        let sub_path = format!("{item}/{sub}");
        let sub_id = format!("{base_id}{}", capitalize(sub));
        let ops: Vec<OpSpec> = match (SubresourceKind::of(sub), other) {
            (SubresourceKind::Other(_, _, _), Some(other)) if *sub == "scale" => {
                let g = gvk(other.group, other.version, other.kind);
                [Action::Get, Action::Replace, Action::Patch]
                    .into_iter()
                    .map(|a| OpSpec {
                        action: a,
                        id: sub_id.clone(),
                        body_schema: other.schema.clone(),
                        gvk: g.clone(),
                        summary: format!("{} scale of the specified {kind}", a.id_prefix()),
                    })
                    .collect()
            }
            (SubresourceKind::Other(_, _, _), Some(other)) => vec![OpSpec {
                action: Action::Create,
                id: sub_id.clone(),
                body_schema: other.schema.clone(),
                gvk: gvk(other.group, other.version, other.kind),
                summary: format!("create {} of a {kind}", other.kind),
            }],
            (SubresourceKind::Text, _) => vec![op(
                Action::Log,
                sub_id.clone(),
                kind_schema,
                format!("read {sub} of the specified {kind}"),
            )],
            (SubresourceKind::Connect, _) => vec![
                op(
                    Action::Connect,
                    format!("{gv_id}Get{scope}{kind}{}", capitalize(sub)),
                    kind_schema,
                    format!("connect GET requests to {sub} of {kind}"),
                ),
                op(
                    Action::Connect,
                    format!("{gv_id}Post{scope}{kind}{}", capitalize(sub)),
                    kind_schema,
                    format!("connect POST requests to {sub} of {kind}"),
                ),
            ],
            _ => [Action::Get, Action::Replace, Action::Patch]
                .into_iter()
                .map(|a| {
                    op(
                        a,
                        sub_id.clone(),
                        kind_schema,
                        format!("{} {sub} of the specified {kind}", a.id_prefix()),
                    )
                })
                .collect(),
        };
        out.push(path_item(sub_path, &item_params, &ops, &tag, names));
    }
    out
}

/// Path-level parameters: `name` and `namespace` path parameters as needed, and `pretty`.
fn path_params(namespaced: bool, named: bool, kind: &str) -> Vec<Value> {
    let mut params = Vec::new();
    if named {
        params.push(json!({
            "name": "name", "in": "path", "required": true,
            "description": format!("name of the {kind}"),
            "schema": { "type": "string" },
        }));
    }
    if namespaced {
        params.push(json!({
            "name": "namespace", "in": "path", "required": true,
            "description": "object name and auth scope, such as for teams and projects",
            "schema": { "type": "string" },
        }));
    }
    params.push(query(
        "pretty",
        "string",
        "If 'true', the output is pretty printed.",
    ));
    params
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": { "type": ty },
    })
}

/// Query parameters accepted by list and watch requests.
fn list_params(include_watch: bool) -> Vec<Value> {
    let mut params = vec![
        query(
            "allowWatchBookmarks",
            "boolean",
            "Ask for BOOKMARK watch events; servers may ignore this.",
        ),
        query(
            "continue",
            "string",
            "Continuation token from a previous paginated list response.",
        ),
        query(
            "fieldSelector",
            "string",
            "Restrict the returned objects by their fields.",
        ),
        query(
            "labelSelector",
            "string",
            "Restrict the returned objects by their labels.",
        ),
        query(
            "limit",
            "integer",
            "Maximum number of objects to return in one list response.",
        ),
        query(
            "resourceVersion",
            "string",
            "Resource version constraint for the request.",
        ),
        query(
            "resourceVersionMatch",
            "string",
            "How resourceVersion is applied to a list call.",
        ),
        query(
            "sendInitialEvents",
            "boolean",
            "Start a watch with synthetic events for the current state.",
        ),
        query(
            "timeoutSeconds",
            "integer",
            "Time limit for the list or watch call.",
        ),
    ];
    if include_watch {
        params.push(query(
            "watch",
            "boolean",
            "Watch for changes instead of listing.",
        ));
    }
    params
}

/// Query parameters of write requests (create, replace, patch).
fn write_params(patch: bool) -> Vec<Value> {
    let mut params = vec![
        query(
            "dryRun",
            "string",
            "When 'All', validate and admit the request without persisting it.",
        ),
        query(
            "fieldManager",
            "string",
            "Name of the actor making the change, recorded in managedFields.",
        ),
        query(
            "fieldValidation",
            "string",
            "How to treat unknown or duplicate fields: Ignore, Warn or Strict.",
        ),
    ];
    if patch {
        params.push(query(
            "force",
            "boolean",
            "Take ownership of conflicting fields on server-side apply.",
        ));
    }
    params
}

/// Query parameters of delete requests.
fn delete_params() -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "string",
            "When 'All', validate and admit the request without persisting it.",
        ),
        query(
            "gracePeriodSeconds",
            "integer",
            "Seconds to wait before the object is deleted.",
        ),
        query(
            "ignoreStoreReadErrorWithClusterBreakingPotential",
            "boolean",
            "Delete objects that cannot be read from storage.",
        ),
        query(
            "orphanDependents",
            "boolean",
            "Deprecated: orphan the dependents instead of deleting them.",
        ),
        query(
            "propagationPolicy",
            "string",
            "Garbage collection policy: Orphan, Background or Foreground.",
        ),
    ]
}

fn json_content(schema: &str, extra_types: &[&str]) -> Value {
    let mut content = Map::new();
    for ty in ["application/json", "application/yaml"]
        .iter()
        .chain(extra_types.iter())
    {
        content.insert((*ty).to_owned(), json!({ "schema": schema_ref(schema) }));
    }
    Value::Object(content)
}

fn response(description: &str, content: Value) -> Value {
    json!({ "description": description, "content": content })
}

fn operation(spec: &OpSpec, tag: &str, names: &Names) -> Value {
    let mut op = Map::new();
    op.insert("tags".into(), json!([tag]));
    op.insert("description".into(), spec.summary.clone().into());
    op.insert(
        "operationId".into(),
        format!("{}{}", spec.action.id_prefix(), spec.id).into(),
    );
    let ok = |schema: &str| response("OK", json_content(schema, &[]));
    let (params, body, responses): (Vec<Value>, Option<Value>, Value) = match spec.action {
        Action::List => (
            list_params(true),
            None,
            json!({
                "200": response("OK", json_content(&spec.body_schema, &["application/json;stream=watch"])),
                "401": { "description": "Unauthorized" },
            }),
        ),
        Action::Watch | Action::WatchList => (
            list_params(true),
            None,
            json!({
                "200": response("OK", json_content(&spec.body_schema, &["application/json;stream=watch"])),
                "401": { "description": "Unauthorized" },
            }),
        ),
        Action::Create => (
            write_params(false),
            Some(json!({
                "content": { "*/*": { "schema": schema_ref(&spec.body_schema) } },
                "required": true,
            })),
            json!({
                "200": ok(&spec.body_schema),
                "201": response("Created", json_content(&spec.body_schema, &[])),
                "202": response("Accepted", json_content(&spec.body_schema, &[])),
                "401": { "description": "Unauthorized" },
            }),
        ),
        Action::Get => (
            Vec::new(),
            None,
            json!({ "200": ok(&spec.body_schema), "401": { "description": "Unauthorized" } }),
        ),
        Action::Replace => (
            write_params(false),
            Some(json!({
                "content": { "*/*": { "schema": schema_ref(&spec.body_schema) } },
                "required": true,
            })),
            json!({
                "200": ok(&spec.body_schema),
                "201": response("Created", json_content(&spec.body_schema, &[])),
                "401": { "description": "Unauthorized" },
            }),
        ),
        Action::Patch => {
            let patch_body = json!({ "schema": schema_ref(names.patch) });
            (
                write_params(true),
                Some(json!({
                    "content": {
                        "application/apply-patch+yaml": patch_body,
                        "application/json-patch+json": patch_body,
                        "application/merge-patch+json": patch_body,
                        "application/strategic-merge-patch+json": patch_body,
                    },
                    "required": true,
                })),
                json!({
                    "200": ok(&spec.body_schema),
                    "201": response("Created", json_content(&spec.body_schema, &[])),
                    "401": { "description": "Unauthorized" },
                }),
            )
        }
        Action::Delete | Action::DeleteCollection => {
            let mut params = delete_params();
            if spec.action == Action::DeleteCollection {
                params.extend(list_params(false));
            }
            (
                params,
                Some(json!({
                    "content": { "*/*": { "schema": schema_ref(names.delete_options) } },
                })),
                json!({
                    "200": ok(names.status),
                    "202": response("Accepted", json_content(names.status, &[])),
                    "401": { "description": "Unauthorized" },
                }),
            )
        }
        Action::Log => (
            vec![
                query("container", "string", "The container to stream logs of."),
                query("follow", "boolean", "Keep streaming new log lines."),
                query(
                    "limitBytes",
                    "integer",
                    "Stop after this many bytes of output.",
                ),
                query(
                    "previous",
                    "boolean",
                    "Logs of the previous, terminated container instance.",
                ),
                query(
                    "sinceSeconds",
                    "integer",
                    "Only logs newer than this many seconds.",
                ),
                query(
                    "tailLines",
                    "integer",
                    "Number of lines from the end of the log to show.",
                ),
                query(
                    "timestamps",
                    "boolean",
                    "Prefix every line with its timestamp.",
                ),
            ],
            None,
            json!({
                "200": { "description": "OK", "content": { "text/plain": { "schema": { "type": "string" } } } },
                "401": { "description": "Unauthorized" },
            }),
        ),
        Action::Connect => (
            Vec::new(),
            None,
            json!({
                "200": { "description": "OK", "content": { "*/*": { "schema": { "type": "string" } } } },
                "401": { "description": "Unauthorized" },
            }),
        ),
    };
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if let Some(body) = body {
        op.insert("requestBody".into(), body);
    }
    op.insert("responses".into(), responses);
    op.insert("x-kubernetes-action".into(), spec.action.verb().into());
    op.insert("x-kubernetes-group-version-kind".into(), spec.gvk.clone());
    Value::Object(op)
}

/// HTTP method of an operation; connect operations alternate GET then POST.
fn method(action: Action, index: usize) -> &'static str {
    match action {
        Action::List | Action::Get | Action::Watch | Action::WatchList | Action::Log => "get",
        Action::Create => "post",
        Action::Replace => "put",
        Action::Patch => "patch",
        Action::Delete | Action::DeleteCollection => "delete",
        Action::Connect => {
            if index == 0 {
                "get"
            } else {
                "post"
            }
        }
    }
}

fn path_item(
    path: String,
    params: &[Value],
    ops: &[OpSpec],
    tag: &str,
    names: &Names,
) -> PathEntry {
    let mut item = Map::new();
    for (i, spec) in ops.iter().enumerate() {
        item.insert(
            method(spec.action, i).to_owned(),
            operation(spec, tag, names),
        );
    }
    item.insert("parameters".into(), Value::Array(params.to_vec()));
    PathEntry {
        path,
        item: Value::Object(item),
    }
}

/// Operation-id group segment: "Core" for the core group, otherwise the group without a
/// `.k8s.io` suffix in CamelCase ("Apps", "RbacAuthorization", "ExampleCom").
fn group_id(group: &str) -> String {
    if group.is_empty() {
        return "Core".to_owned();
    }
    group_words(group).iter().map(|w| capitalize(w)).collect()
}

/// Tag group segment: like [`group_id`] but starting lowercase ("core", "rbacAuthorization").
fn group_tag(group: &str) -> String {
    if group.is_empty() {
        return "core".to_owned();
    }
    group_words(group)
        .iter()
        .enumerate()
        .map(|(i, w)| if i == 0 { w.to_string() } else { capitalize(w) })
        .collect()
}

fn group_words(group: &str) -> Vec<&str> {
    group
        .strip_suffix(".k8s.io")
        .unwrap_or(group)
        .split(['.', '-'])
        .filter(|w| !w.is_empty())
        .collect()
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// 128-bit FNV-1a, fed through `io::Write` so documents hash without an intermediate buffer.
struct Fnv128 {
    state: u128,
}

impl Default for Fnv128 {
    fn default() -> Self {
        Self {
            state: 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d,
        }
    }
}

impl std::io::Write for Fnv128 {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
        for b in buf {
            self.state ^= u128::from(*b);
            self.state = self.state.wrapping_mul(PRIME);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD_SUBRESOURCES: &[&str] = &["status", "binding", "log", "exec", "eviction"];

    fn core_resources() -> Vec<ResourceDoc<'static>> {
        let r = |kind, plural, namespaced, subresources| ResourceDoc {
            group: "",
            version: "v1",
            kind,
            plural,
            namespaced,
            subresources,
        };
        vec![
            r("Namespace", "namespaces", false, &["status"]),
            r("Pod", "pods", true, POD_SUBRESOURCES),
            r("Binding", "bindings", true, &[]),
            r("Node", "nodes", false, &["status"]),
            r("Service", "services", true, &["status"]),
            r("Endpoints", "endpoints", true, &[]),
            r("Event", "events", true, &[]),
            r("ConfigMap", "configmaps", true, &[]),
            r("Secret", "secrets", true, &[]),
            r("ServiceAccount", "serviceaccounts", true, &[]),
        ]
    }

    const STRATEGIES: &[(&str, &str, &str, Option<&str>)] = &[
        (
            "io.k8s.api.core.v1.PodSpec",
            "containers",
            "merge",
            Some("name"),
        ),
        (
            "io.k8s.api.core.v1.PodSpec",
            "volumes",
            "merge,retainKeys",
            Some("name"),
        ),
        ("io.k8s.api.core.v1.NoSuchType", "x", "merge", None),
    ];

    fn core_doc() -> Value {
        v3_document("", "v1", &core_resources(), STRATEGIES)
    }

    fn schemas(doc: &Value) -> &Map<String, Value> {
        doc.pointer("/components/schemas")
            .and_then(Value::as_object)
            .expect("components.schemas")
    }

    /// kubectl's check (query_param_verifier_v3): the first PATCH carrying the GVK decides.
    fn supports_query_param(doc: &Value, gvk: (&str, &str, &str), param: &str) -> bool {
        let paths = doc["paths"].as_object().expect("paths");
        for item in paths.values() {
            let Some(patch) = item.get("patch") else {
                continue;
            };
            let ext = &patch["x-kubernetes-group-version-kind"];
            if ext["group"] != gvk.0 || ext["version"] != gvk.1 || ext["kind"] != gvk.2 {
                continue;
            }
            return patch["parameters"].as_array().is_some_and(|params| {
                params
                    .iter()
                    .any(|p| p["name"] == param && p["in"] == "query")
            });
        }
        false
    }

    fn collect_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "$ref" {
                        if let Some(r) = x.as_str() {
                            out.push(r);
                        }
                    } else {
                        collect_refs(x, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
            _ => {}
        }
    }

    fn assert_refs_resolve(doc: &Value) {
        let mut refs = Vec::new();
        collect_refs(doc, &mut refs);
        assert!(!refs.is_empty());
        let schemas = schemas(doc);
        for r in refs {
            let name = r
                .strip_prefix(SCHEMA_REF_PREFIX)
                .unwrap_or_else(|| panic!("ref outside components.schemas: {r}"));
            assert!(schemas.contains_key(name), "dangling ref {r}");
        }
    }

    #[test]
    fn pods_patch_supports_field_validation() {
        let doc = core_doc();
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-action"], "patch");
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            json!({"group": "", "kind": "Pod", "version": "v1"})
        );
        assert_eq!(patch["operationId"], "patchCoreV1NamespacedPod");
        for kind in ["Pod", "Node", "Service", "ConfigMap", "Namespace"] {
            assert!(
                supports_query_param(&doc, ("", "v1", kind), "fieldValidation"),
                "{kind}"
            );
        }
        assert!(!supports_query_param(
            &doc,
            ("apps", "v1", "Deployment"),
            "fieldValidation"
        ));
        let content = patch["requestBody"]["content"]
            .as_object()
            .expect("patch content");
        assert!(content.contains_key("application/strategic-merge-patch+json"));
        assert!(content.contains_key("application/apply-patch+yaml"));
    }

    #[test]
    fn every_ref_resolves() {
        assert_refs_resolve(&core_doc());
    }

    #[test]
    fn patch_strategies_are_attached() {
        let doc = core_doc();
        let containers = &schemas(&doc)["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["type"], "array");
        let volumes = &schemas(&doc)["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"];
        assert_eq!(volumes["x-kubernetes-patch-strategy"], "merge,retainKeys");
        let without = v3_document("", "v1", &core_resources(), &[]);
        assert!(
            schemas(&without)["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
                .get("x-kubernetes-patch-merge-key")
                .is_none()
        );
    }

    #[test]
    fn document_round_trips_through_serde_json() {
        let doc = core_doc();
        let text = serde_json::to_string(&doc).expect("serialize");
        let back: Value = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, doc);
        assert_eq!(hash(&back), hash(&doc));
    }

    #[test]
    fn kind_schemas_have_upstream_names_and_gvk() {
        let doc = core_doc();
        let s = schemas(&doc);
        let pod = &s["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "Pod", "version": "v1"}])
        );
        assert!(
            pod.get("required").is_none(),
            "metadata must not be required"
        );
        assert_eq!(
            pod["properties"]["spec"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.PodSpec"
        );
        assert!(pod["properties"]["spec"]["description"].is_string());
        let list = &s["io.k8s.api.core.v1.PodList"];
        assert_eq!(
            list["x-kubernetes-group-version-kind"][0]["kind"],
            "PodList"
        );
        assert_eq!(
            list["properties"]["items"]["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Pod"
        );
        // PodSpec keeps its genuinely required field.
        assert_eq!(
            s["io.k8s.api.core.v1.PodSpec"]["required"],
            json!(["containers"])
        );
        for name in [
            "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
            "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
            "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
            "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "io.k8s.api.core.v1.Binding",
            "io.k8s.api.policy.v1.Eviction",
            "io.k8s.api.core.v1.ServiceAccountList",
        ] {
            assert!(s.contains_key(name), "{name} missing");
        }
        assert!(!s.contains_key("io.k8s.api.core.v1.BindingList"));
        assert_eq!(
            s["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"],
            "int-or-string"
        );
        // Exactly one kind schema answers each GVK (what kubectl explain looks up).
        let pods_with_gvk = s
            .values()
            .filter(|v| {
                v["x-kubernetes-group-version-kind"]
                    .as_array()
                    .is_some_and(|l| {
                        l.contains(&json!({"group": "", "kind": "Pod", "version": "v1"}))
                    })
            })
            .count();
        assert_eq!(pods_with_gvk, 1);
    }

    #[test]
    fn paths_and_actions() {
        let doc = core_doc();
        let paths = &doc["paths"];
        let coll = &paths["/api/v1/namespaces/{namespace}/pods"];
        assert_eq!(coll["get"]["x-kubernetes-action"], "list");
        assert_eq!(coll["get"]["operationId"], "listCoreV1NamespacedPod");
        assert_eq!(coll["post"]["x-kubernetes-action"], "post");
        assert_eq!(coll["delete"]["x-kubernetes-action"], "deletecollection");
        assert_eq!(
            coll["delete"]["operationId"],
            "deleteCoreV1CollectionNamespacedPod"
        );
        let list_params: Vec<&str> = coll["get"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        for p in [
            "labelSelector",
            "fieldSelector",
            "limit",
            "continue",
            "resourceVersion",
            "watch",
        ] {
            assert!(list_params.contains(&p), "{p}");
        }
        for p in ["dryRun", "fieldManager", "fieldValidation"] {
            assert!(
                coll["post"]["parameters"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["name"] == p)),
                "create lacks {p}"
            );
        }
        let path_params = coll["parameters"].as_array().expect("path params");
        assert!(
            path_params
                .iter()
                .any(|p| p["name"] == "namespace" && p["in"] == "path" && p["required"] == true)
        );
        let item = &paths["/api/v1/namespaces/{namespace}/pods/{name}"];
        assert_eq!(item["get"]["x-kubernetes-action"], "get");
        assert_eq!(item["put"]["x-kubernetes-action"], "put");
        assert_eq!(item["delete"]["x-kubernetes-action"], "delete");
        assert_eq!(
            paths["/api/v1/pods"]["get"]["operationId"],
            "listCoreV1PodForAllNamespaces"
        );
        assert_eq!(
            paths["/api/v1/watch/namespaces/{namespace}/pods/{name}"]["get"]["x-kubernetes-action"],
            "watch"
        );
        assert_eq!(
            paths["/api/v1/watch/namespaces/{namespace}/pods"]["get"]["x-kubernetes-action"],
            "watchlist"
        );
        let status = &paths["/api/v1/namespaces/{namespace}/pods/{name}/status"];
        assert_eq!(
            status["patch"]["operationId"],
            "patchCoreV1NamespacedPodStatus"
        );
        let binding = &paths["/api/v1/namespaces/{namespace}/pods/{name}/binding"]["post"];
        assert_eq!(
            binding["x-kubernetes-group-version-kind"],
            json!({"group": "", "kind": "Binding", "version": "v1"})
        );
        let eviction = &paths["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]["post"];
        assert_eq!(
            eviction["x-kubernetes-group-version-kind"]["group"],
            "policy"
        );
        let exec = &paths["/api/v1/namespaces/{namespace}/pods/{name}/exec"];
        assert_eq!(exec["get"]["x-kubernetes-action"], "connect");
        assert_eq!(
            exec["post"]["operationId"],
            "connectCoreV1PostNamespacedPodExec"
        );
        // Create-only resources get nothing but POST.
        let bindings = &paths["/api/v1/namespaces/{namespace}/bindings"];
        assert!(bindings.get("post").is_some());
        assert!(bindings.get("get").is_none());
        assert!(
            paths
                .get("/api/v1/watch/namespaces/{namespace}/bindings")
                .is_none()
        );
        // Cluster-scoped resources have no namespace segment.
        let node = &paths["/api/v1/nodes/{name}"];
        assert_eq!(node["patch"]["operationId"], "patchCoreV1Node");
        assert!(
            node["parameters"]
                .as_array()
                .is_some_and(|a| a.iter().all(|p| p["name"] != "namespace"))
        );
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = core_doc();
        let mut seen = std::collections::BTreeSet::new();
        for item in doc["paths"].as_object().expect("paths").values() {
            for (method, op) in item.as_object().expect("path item") {
                if method == "parameters" {
                    continue;
                }
                let id = op["operationId"].as_str().expect("operationId");
                assert!(seen.insert(id.to_owned()), "duplicate {id}");
            }
        }
        assert!(seen.len() > 50);
    }

    #[test]
    fn apps_document_with_scale() {
        let r = |kind, plural| ResourceDoc {
            group: "apps",
            version: "v1",
            kind,
            plural,
            namespaced: true,
            subresources: &["status", "scale"],
        };
        let doc = v3_document(
            "apps",
            "v1",
            &[
                r("Deployment", "deployments"),
                r("ReplicaSet", "replicasets"),
                r("DaemonSet", "daemonsets"),
            ],
            &[],
        );
        assert_refs_resolve(&doc);
        assert!(supports_query_param(
            &doc,
            ("apps", "v1", "Deployment"),
            "fieldValidation"
        ));
        let scale = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            scale["patch"]["x-kubernetes-group-version-kind"],
            json!({"group": "autoscaling", "kind": "Scale", "version": "v1"})
        );
        assert_eq!(
            scale["get"]["operationId"],
            "readAppsV1NamespacedDeploymentScale"
        );
        assert_eq!(scale["get"]["tags"], json!(["apps_v1"]));
        let s = schemas(&doc);
        assert_eq!(
            s["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"][0]["group"],
            "apps"
        );
        assert_eq!(
            s["io.k8s.api.autoscaling.v1.Scale"]["x-kubernetes-group-version-kind"][0]["kind"],
            "Scale"
        );
        assert!(s.contains_key("io.k8s.api.apps.v1.DaemonSetList"));
    }

    #[test]
    fn other_groups_and_custom_kinds() {
        let lease = ResourceDoc {
            group: "coordination.k8s.io",
            version: "v1",
            kind: "Lease",
            plural: "leases",
            namespaced: true,
            subresources: &[],
        };
        let doc = v3_document("coordination.k8s.io", "v1", &[lease], &[]);
        assert_refs_resolve(&doc);
        let coll = &doc["paths"]["/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"];
        assert_eq!(
            coll["get"]["operationId"],
            "listCoordinationV1NamespacedLease"
        );
        assert_eq!(coll["get"]["tags"], json!(["coordination_v1"]));

        let slice = ResourceDoc {
            group: "discovery.k8s.io",
            version: "v1",
            kind: "EndpointSlice",
            plural: "endpointslices",
            namespaced: true,
            subresources: &[],
        };
        let doc = v3_document("discovery.k8s.io", "v1", &[slice], &[]);
        assert_refs_resolve(&doc);
        assert!(schemas(&doc).contains_key("io.k8s.api.discovery.v1.EndpointSliceList"));

        let widget = ResourceDoc {
            group: "stable.example.com",
            version: "v1",
            kind: "Widget",
            plural: "widgets",
            namespaced: false,
            subresources: &["status"],
        };
        let doc = v3_document("stable.example.com", "v1", &[widget], &[]);
        assert_refs_resolve(&doc);
        let s = schemas(&doc);
        let w = &s["com.example.stable.v1.Widget"];
        assert_eq!(w["x-kubernetes-preserve-unknown-fields"], true);
        assert_eq!(
            w["x-kubernetes-group-version-kind"],
            json!([{"group": "stable.example.com", "kind": "Widget", "version": "v1"}])
        );
        assert!(s.contains_key("com.example.stable.v1.WidgetList"));
        assert_eq!(
            doc["paths"]["/apis/stable.example.com/v1/widgets/{name}"]["patch"]["operationId"],
            "patchStableExampleComV1Widget"
        );
        assert!(supports_query_param(
            &doc,
            ("stable.example.com", "v1", "Widget"),
            "fieldValidation"
        ));
    }

    #[test]
    fn index_and_hash() {
        let core = core_doc();
        let core_hash = hash(&core);
        assert_eq!(core_hash.len(), 32);
        assert!(
            core_hash
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        );
        assert_eq!(hash(&core_doc()), core_hash, "generation is deterministic");
        let without = v3_document("", "v1", &core_resources(), &[]);
        assert_ne!(hash(&without), core_hash);
        assert_ne!(hash(&json!({"a": 1})), hash(&json!({"a": 2})));

        let index = v3_index(&[
            (gv_path("", "v1"), core_hash.clone()),
            (gv_path("apps", "v1"), "ABC".to_owned()),
        ]);
        assert_eq!(
            index,
            json!({"paths": {
                "api/v1": {"serverRelativeURL": format!("/openapi/v3/api/v1?hash={core_hash}")},
                "apis/apps/v1": {"serverRelativeURL": "/openapi/v3/apis/apps/v1?hash=ABC"},
            }})
        );
    }

    #[test]
    fn fnv_known_vector() {
        // FNV-1a 128 of the empty input is the offset basis; of "a" a published test vector.
        assert_eq!(hash(&Value::Null), {
            let mut h = Fnv128::default();
            let _ = std::io::Write::write(&mut h, b"null");
            format!("{:032X}", h.state)
        });
        let mut h = Fnv128::default();
        let _ = std::io::Write::write(&mut h, b"a");
        assert_eq!(
            format!("{:032x}", h.state),
            "d228cb696f1a8caf78912b704e4a8964"
        );
    }
}
