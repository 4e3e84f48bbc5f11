//! What the server owns in an object's metadata, as upstream's generic
//! registry does it: names, uid, timestamps, generation, resourceVersion
//! preconditions, and what a main-resource or status update may change.

use std::time::SystemTime;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::resources::Resource;
use super::status::ApiError;
use super::store::Revision;

/// RFC 3339 in UTC with second precision, as metav1.Time serialises.
pub fn timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Timestamp::from_second(secs as i64)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

/// Parses an RFC 3339 time as clients send it.
pub fn parse_timestamp(s: &str) -> Option<SystemTime> {
    s.parse::<Timestamp>().ok().map(SystemTime::from)
}

/// `generateName` suffix alphabet and length, as upstream's
/// `utilrand.String` (no vowels, no confusable digits).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn random_suffix() -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| SUFFIX_ALPHABET[*b as usize % SUFFIX_ALPHABET.len()] as char)
        .collect()
}

/// The metadata map of an object, created if missing.
pub fn meta_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let o = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    let m = o.entry("metadata").or_insert_with(|| json!({}));
    if m.is_null() {
        *m = json!({});
    }
    m.as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

/// metadata.name of an object ("" if absent).
pub fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

/// Parses a resourceVersion a client sent.
pub fn parse_rv(s: &str) -> Result<Revision, ApiError> {
    s.parse::<Revision>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version {s:?}")))
}

/// Checks kind and apiVersion of a body against the resource it is sent
/// to, and fills them in when absent.
pub fn check_type(resource: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    let api_version = resource.api_version();
    let o = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    match o.get("kind").and_then(Value::as_str) {
        Some(k) if k != resource.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind of the provided object ({k}) does not match the resource {} (kind {})",
                resource.qualified(),
                resource.kind
            )));
        }
        _ => {}
    }
    match o.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
        _ => {}
    }
    o.insert("kind".into(), Value::String(resource.kind.into()));
    o.insert("apiVersion".into(), Value::String(api_version));
    Ok(())
}

/// Fills in what the server owns on create: namespace, name from
/// generateName, uid, creationTimestamp, generation; clears what a client
/// may not set.
pub fn prepare_create(
    resource: &Resource,
    obj: &mut Value,
    namespace: Option<&str>,
    now: SystemTime,
) -> Result<(), ApiError> {
    check_type(resource, obj)?;
    let has_spec = obj.get("spec").is_some();
    let meta = meta_mut(obj)?;
    if resource.namespaced {
        let ns = namespace.unwrap_or_default();
        match meta.get("namespace").and_then(Value::as_str) {
            Some(given) if !given.is_empty() && given != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {}
        }
        meta.insert("namespace".into(), Value::String(ns.to_string()));
    } else {
        meta.remove("namespace");
    }
    let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty()
        && let Some(prefix) = meta.get("generateName").and_then(Value::as_str)
        && !prefix.is_empty()
    {
        let generated = format!("{prefix}{}", random_suffix());
        meta.insert("name".into(), Value::String(generated));
    }
    meta.insert(
        "uid".into(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    meta.insert("creationTimestamp".into(), Value::String(timestamp(now)));
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "managedFields",
    ] {
        meta.remove(k);
    }
    if has_spec {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    Ok(())
}

/// What kind of update a request makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// PUT/PATCH on the main resource: everything but status.
    Main,
    /// PUT/PATCH on `/status`: status only.
    Status,
}

/// Merges an update onto the current object the way upstream strategies
/// do, and checks the client's resourceVersion precondition.
pub fn prepare_update(
    resource: &Resource,
    new: &mut Value,
    old: &Value,
    old_revision: Revision,
    kind: UpdateKind,
) -> Result<(), ApiError> {
    check_type(resource, new)?;
    let name = name_of(old).to_string();
    match new["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() && parse_rv(rv)? != old_revision => {
            return Err(ApiError::stale(resource, &name));
        }
        _ => {}
    }
    let given_name = name_of(new);
    if !given_name.is_empty() && given_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({given_name}) does not match the name on the URL ({name})"
        )));
    }
    if kind == UpdateKind::Status {
        // Everything but status comes from the stored object.
        let status = new.get("status").cloned();
        *new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        return Ok(());
    }
    if resource.subresources.contains(&"status") {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    let spec_changed = new.get("spec") != old.get("spec");
    let old_meta = &old["metadata"];
    let meta = meta_mut(new)?;
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(k) {
            Some(v) => {
                meta.insert(k.into(), v.clone());
            }
            None => {
                meta.remove(k);
            }
        }
    }
    meta.remove("managedFields");
    meta.remove("selfLink");
    if spec_changed && let Some(g) = old_meta["generation"].as_i64() {
        meta.insert("generation".into(), json!(g + 1));
    }
    Ok(())
}

/// Whether two versions differ in anything but resourceVersion.
pub fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

/// metadata.finalizers.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether an object is being deleted.
pub fn deleting(obj: &Value) -> bool {
    obj["metadata"]["deletionTimestamp"].is_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::find;
    use std::time::Duration;

    #[test]
    fn timestamps_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_763_712_000);
        assert_eq!(timestamp(t), "2025-11-21T08:00:00Z");
        assert_eq!(parse_timestamp("2025-11-21T08:00:00Z"), Some(t));
        assert_eq!(timestamp(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            parse_timestamp("2024-02-29T23:59:59Z")
                .map(timestamp)
                .as_deref(),
            Some("2024-02-29T23:59:59Z")
        );
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn create_fills_server_fields() {
        let pods = find("", "v1", "pods").unwrap();
        let mut p =
            json!({"metadata": {"generateName": "web-", "resourceVersion": "9"}, "spec": {}});
        prepare_create(pods, &mut p, Some("ns"), SystemTime::now()).unwrap();
        let name = name_of(&p);
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_eq!(p["metadata"]["namespace"], "ns");
        assert_eq!(p["metadata"]["generation"], 1);
        assert_eq!(p["kind"], "Pod");
        assert!(p["metadata"]["uid"].is_string());
        assert!(p["metadata"].get("resourceVersion").is_none());
        let mut wrong = json!({"metadata": {"name": "a", "namespace": "other"}});
        assert_eq!(
            prepare_create(pods, &mut wrong, Some("ns"), SystemTime::now())
                .unwrap_err()
                .code,
            400
        );
        let mut wrong_kind = json!({"kind": "Service", "metadata": {"name": "a"}});
        assert!(prepare_create(pods, &mut wrong_kind, Some("ns"), SystemTime::now()).is_err());
    }

    #[test]
    fn updates_keep_owned_fields_and_bump_generation() {
        let deploy = find("apps", "v1", "deployments").unwrap();
        let old = json!({"kind": "Deployment", "apiVersion": "apps/v1",
            "metadata": {"name": "d", "namespace": "ns", "uid": "u1", "generation": 3, "resourceVersion": "7"},
            "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let mut new = json!({"metadata": {"name": "d", "uid": "forged", "resourceVersion": "7"},
            "spec": {"replicas": 2}, "status": {"replicas": 99}});
        prepare_update(deploy, &mut new, &old, 7, UpdateKind::Main).unwrap();
        assert_eq!(new["metadata"]["uid"], "u1");
        assert_eq!(new["metadata"]["generation"], 4);
        assert_eq!(
            new["status"]["replicas"], 1,
            "status comes from the stored object"
        );
        let mut status =
            json!({"metadata": {"name": "d"}, "spec": {"replicas": 5}, "status": {"replicas": 2}});
        prepare_update(deploy, &mut status, &old, 7, UpdateKind::Status).unwrap();
        assert_eq!(
            status["spec"]["replicas"], 1,
            "spec comes from the stored object"
        );
        assert_eq!(status["status"]["replicas"], 2);
        let mut stale = json!({"metadata": {"name": "d", "resourceVersion": "6"}, "spec": {}});
        assert_eq!(
            prepare_update(deploy, &mut stale, &old, 7, UpdateKind::Main)
                .unwrap_err()
                .code,
            409
        );
    }
}
