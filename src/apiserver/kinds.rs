//! Per-kind handling: every body is decoded into its k8s-openapi type (which
//! drops unknown fields, as upstream's decoder does, and reports them for
//! `fieldValidation`), defaulted and validated, then stored in that
//! canonical JSON form.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Binding, ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::resources::Resource;
use super::status::{ApiError, Cause};
use super::validation::{self as v, FieldError, NameRule};

/// How unknown or duplicate fields in a body are treated
/// (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Dropped silently.
    Ignore,
    /// Dropped, with a warning header (the server default).
    #[default]
    Warn,
    /// The request fails with 400.
    Strict,
}

impl FieldValidation {
    /// Parses the query parameter.
    pub fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn or Strict, not {other:?}"
            ))),
        }
    }
}

/// The result of decoding a body: canonical JSON and the unknown fields
/// that were dropped (for warnings).
pub struct Decoded {
    /// The object in canonical form.
    pub value: Value,
    /// `unknown field "spec.foo"` warnings.
    pub warnings: Vec<String>,
}

/// What the caller is doing with the object.
#[derive(Clone, Copy)]
pub enum Phase<'a> {
    /// A create.
    Create,
    /// An update of this stored version.
    Update(&'a Value),
}

fn decode<T: DeserializeOwned + Serialize>(
    resource: &Resource,
    value: Value,
    mode: FieldValidation,
    check: impl FnOnce(&mut T, Option<T>) -> Vec<FieldError>,
    old: Option<&Value>,
) -> Result<Decoded, ApiError> {
    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let typed: Result<T, _> = {
        let de = serde_path_to_error::Deserializer::new(value, &mut track);
        serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))
    };
    let mut typed = typed.map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: {e} at {}",
            resource.kind,
            resource.version,
            resource.kind,
            track.path()
        ))
    })?;
    let warnings: Vec<String> = unknown
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| format!("unknown field {p:?}"))
        .collect();
    if mode == FieldValidation::Strict && !warnings.is_empty() {
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            warnings.join(", ")
        )));
    }
    let old_typed = match old {
        Some(o) => Some(serde_json::from_value::<T>(o.clone()).map_err(|e| {
            ApiError::internal(format!("stored {} does not decode: {e}", resource.kind))
        })?),
        None => None,
    };
    let errors = check(&mut typed, old_typed);
    let value = serde_json::to_value(&typed)
        .map_err(|e| ApiError::internal(format!("cannot encode {}: {e}", resource.kind)))?;
    if !errors.is_empty() {
        let name = value["metadata"]["name"].as_str().unwrap_or_default();
        return Err(ApiError::invalid(
            resource,
            name,
            errors.iter().map(cause).collect(),
        ));
    }
    Ok(Decoded {
        value,
        warnings: if mode == FieldValidation::Warn {
            warnings
        } else {
            Vec::new()
        },
    })
}

fn cause(e: &FieldError) -> Cause {
    Cause {
        reason: e.reason().to_string(),
        message: e.body(),
        field: e.field.clone(),
    }
}

fn meta<
    K: k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
>(
    obj: &K,
    resource: &Resource,
    rule: NameRule,
) -> Vec<FieldError> {
    v::validate_object_meta(obj.metadata(), resource.namespaced, rule)
}

/// Decodes, defaults and validates a body for `resource`.
pub fn prepare(
    resource: &Resource,
    value: Value,
    mode: FieldValidation,
    phase: Phase<'_>,
) -> Result<Decoded, ApiError> {
    use NameRule::*;
    let old = match phase {
        Phase::Create => None,
        Phase::Update(o) => Some(o),
    };
    let r = resource;
    match r.kind {
        "Pod" => decode::<Pod>(
            r,
            value,
            mode,
            |p, old| {
                v::default_pod(p);
                let mut e = meta(p, r, Dns1123Subdomain);
                e.extend(match &old {
                    Some(o) => v::validate_pod_update(p, o),
                    None => v::validate_pod(p),
                });
                e
            },
            old,
        ),
        "Service" => decode::<Service>(
            r,
            value,
            mode,
            |s, old| {
                match &old {
                    Some(o) => v::default_service_update(s, o),
                    None => v::default_service(s),
                }
                let mut e = meta(s, r, Dns1035Label);
                e.extend(match &old {
                    Some(o) => v::validate_service_update(s, o),
                    None => v::validate_service(s),
                });
                e
            },
            old,
        ),
        "Deployment" => decode::<Deployment>(
            r,
            value,
            mode,
            |d, _| {
                v::default_deployment(d);
                let mut e = meta(d, r, Dns1123Subdomain);
                e.extend(v::validate_deployment(d));
                e
            },
            old,
        ),
        "ReplicaSet" => decode::<ReplicaSet>(
            r,
            value,
            mode,
            |d, _| {
                v::default_replica_set(d);
                let mut e = meta(d, r, Dns1123Subdomain);
                e.extend(v::validate_replica_set(d));
                e
            },
            old,
        ),
        "DaemonSet" => decode::<DaemonSet>(
            r,
            value,
            mode,
            |d, _| {
                v::default_daemon_set(d);
                let mut e = meta(d, r, Dns1123Subdomain);
                e.extend(v::validate_daemon_set(d));
                e
            },
            old,
        ),
        "Namespace" => decode::<Namespace>(
            r,
            value,
            mode,
            |n, _| {
                v::default_namespace(n);
                let mut e = meta(n, r, Dns1123Label);
                e.extend(v::validate_namespace(n));
                e
            },
            old,
        ),
        "Node" => decode::<Node>(
            r,
            value,
            mode,
            |n, _| {
                let mut e = meta(n, r, Dns1123Subdomain);
                e.extend(v::validate_node(n));
                e
            },
            old,
        ),
        "ConfigMap" => decode::<ConfigMap>(
            r,
            value,
            mode,
            |c, _| {
                let mut e = meta(c, r, Dns1123Subdomain);
                e.extend(v::validate_config_map(c));
                e
            },
            old,
        ),
        "Secret" => decode::<Secret>(
            r,
            value,
            mode,
            |s, _| {
                v::default_secret(s);
                let mut e = meta(s, r, Dns1123Subdomain);
                e.extend(v::validate_secret(s));
                e
            },
            old,
        ),
        "Endpoints" => decode::<Endpoints>(
            r,
            value,
            mode,
            |x, _| {
                v::default_endpoints(x);
                let mut e = meta(x, r, Dns1123Subdomain);
                e.extend(v::validate_endpoints(x));
                e
            },
            old,
        ),
        "ServiceAccount" => {
            decode::<ServiceAccount>(r, value, mode, |x, _| meta(x, r, Dns1123Subdomain), old)
        }
        "Event" => decode::<Event>(r, value, mode, |x, _| meta(x, r, PathSegment), old),
        "Lease" => decode::<Lease>(r, value, mode, |x, _| meta(x, r, Dns1123Subdomain), old),
        "EndpointSlice" => {
            decode::<EndpointSlice>(r, value, mode, |x, _| meta(x, r, Dns1123Subdomain), old)
        }
        "Binding" => decode::<Binding>(r, value, mode, |_, _| Vec::new(), old),
        other => Err(ApiError::internal(format!("no decoder for kind {other}"))),
    }
}
