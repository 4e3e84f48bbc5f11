//! Defaulting and validation of the built-in objects `km apiserver` stores.
//!
//! The rules, field paths and messages follow the upstream Kubernetes API
//! server (`pkg/apis/core/validation`, `pkg/apis/apps/validation`, the
//! apimachinery `util/validation` helpers and the `v1` defaulting functions),
//! so that kubectl users see the errors they know, for example
//!
//! ```text
//! spec.containers[0].image: Required value
//! metadata.name: Invalid value: "Foo_1": a lowercase RFC 1123 subdomain must consist of ...
//! spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"
//! ```
//!
//! Validators expect objects that went through the matching `default_*`
//! function first, exactly like upstream runs defaulting before validation.
//! They return every problem found; an empty list means the object is valid.

mod apps;
mod format;
mod meta;
mod objects;
mod pod;
mod quantity;
mod service;

use std::fmt;

pub use apps::{
    default_daemon_set, default_deployment, default_replica_set, validate_daemon_set,
    validate_deployment, validate_replica_set,
};
pub use meta::validate_object_meta;
pub use objects::{
    default_endpoints, default_namespace, default_secret, validate_config_map, validate_endpoints,
    validate_namespace, validate_node, validate_secret,
};
pub use pod::{default_pod, validate_pod, validate_pod_update};
pub use service::{
    default_service, default_service_update, validate_service, validate_service_update,
};

/// The kind of a field error, mirroring apimachinery's `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A required value is missing (`Required value`).
    Required,
    /// The value is malformed (`Invalid value`).
    Invalid,
    /// The value is not one of an enumeration (`Unsupported value`).
    NotSupported,
    /// The value collides with another one that must be unique (`Duplicate value`).
    Duplicate,
    /// The value is valid in form but not allowed here (`Forbidden`).
    Forbidden,
    /// The value is too long (`Too long`).
    TooLong,
    /// A list has too many items (`Too many`).
    TooMany,
    /// A referenced item does not exist (`Not found`).
    NotFound,
}

impl ErrorKind {
    /// The human-readable prefix upstream prints for this kind.
    pub fn message(self) -> &'static str {
        match self {
            ErrorKind::Required => "Required value",
            ErrorKind::Invalid => "Invalid value",
            ErrorKind::NotSupported => "Unsupported value",
            ErrorKind::Duplicate => "Duplicate value",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::TooLong => "Too long",
            ErrorKind::TooMany => "Too many",
            ErrorKind::NotFound => "Not found",
        }
    }

    /// Whether upstream prints the offending value for this kind.
    fn shows_value(self) -> bool {
        matches!(
            self,
            ErrorKind::Invalid
                | ErrorKind::NotSupported
                | ErrorKind::Duplicate
                | ErrorKind::TooMany
                | ErrorKind::NotFound
        )
    }
}

/// One field error, formatted like apimachinery's `field.Error`.
///
/// `value` holds the offending value already rendered the way upstream
/// prints it: Go-quoted for strings (`"Foo_1"`), bare for numbers and JSON
/// for structured values. It is `None` for kinds that never show a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {}", self.body())]
pub struct FieldError {
    /// What kind of problem this is.
    pub kind: ErrorKind,
    /// The JSON path of the field, e.g. `spec.containers[0].image`.
    pub field: String,
    /// The rendered offending value, when upstream shows one.
    pub value: Option<String>,
    /// Extra explanation; may be empty.
    pub detail: String,
}

impl FieldError {
    /// The `metav1.CauseType` of this error, as used in `Status.details.causes[].reason`.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            ErrorKind::Required => "FieldValueRequired",
            ErrorKind::Invalid => "FieldValueInvalid",
            ErrorKind::NotSupported => "FieldValueNotSupported",
            ErrorKind::Duplicate => "FieldValueDuplicate",
            ErrorKind::Forbidden => "FieldValueForbidden",
            ErrorKind::TooLong => "FieldValueTooLong",
            ErrorKind::TooMany => "FieldValueTooMany",
            ErrorKind::NotFound => "FieldValueNotFound",
        }
    }

    /// The message without the field path (upstream's `ErrorBody`), used as
    /// `Status.details.causes[].message`.
    pub fn body(&self) -> String {
        let mut out = self.kind.message().to_string();
        if self.kind.shows_value()
            && let Some(value) = &self.value
        {
            out.push_str(": ");
            out.push_str(value);
        }
        if !self.detail.is_empty() {
            out.push_str(": ");
            out.push_str(&self.detail);
        }
        out
    }

    fn new(kind: ErrorKind, path: &Path, value: Option<String>, detail: impl Into<String>) -> Self {
        FieldError {
            kind,
            field: path.to_string(),
            value,
            detail: detail.into(),
        }
    }

    fn required(path: &Path, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Required, path, None, detail)
    }

    fn forbidden(path: &Path, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, path, None, detail)
    }

    fn invalid(path: &Path, value: impl Into<Bad>, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, path, Some(value.into().0), detail)
    }

    fn duplicate(path: &Path, value: impl Into<Bad>) -> Self {
        Self::new(ErrorKind::Duplicate, path, Some(value.into().0), "")
    }

    fn not_found(path: &Path, value: impl Into<Bad>) -> Self {
        Self::new(ErrorKind::NotFound, path, Some(value.into().0), "")
    }

    fn not_supported(path: &Path, value: impl Into<Bad>, supported: &[&str]) -> Self {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| crate::goquote::quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(ErrorKind::NotSupported, path, Some(value.into().0), detail)
    }

    fn too_long(path: &Path, max_bytes: usize) -> Self {
        let unit = if max_bytes == 1 { "byte" } else { "bytes" };
        Self::new(
            ErrorKind::TooLong,
            path,
            None,
            format!("may not be more than {max_bytes} {unit}"),
        )
    }
}

/// How `metadata.name` (and `generateName`) of a kind must look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// An RFC 1123 subdomain (pods, nodes, config maps, secrets, deployments, ...).
    Dns1123Subdomain,
    /// An RFC 1123 label (namespaces).
    Dns1123Label,
    /// An RFC 1035 label: like an RFC 1123 label but starting with a letter
    /// (services, as upstream's `ValidateServiceName`).
    Dns1035Label,
    /// Anything that can be a URL path segment (events, leases, ...).
    PathSegment,
}

impl NameRule {
    /// The problems with `name`; `prefix` is true when checking a `generateName`.
    fn check(self, name: &str, prefix: bool) -> Vec<String> {
        let masked;
        let name = if prefix && self != NameRule::PathSegment {
            masked = format::mask_trailing_dash(name);
            masked.as_str()
        } else {
            name
        };
        match self {
            NameRule::Dns1123Subdomain => format::dns1123_subdomain(name),
            NameRule::Dns1123Label => format::dns1123_label(name),
            NameRule::Dns1035Label => format::dns1035_label(name),
            NameRule::PathSegment => format::path_segment_name(name, prefix),
        }
    }
}

/// A field path under construction, printed like apimachinery's `field.Path`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Path(String);

impl Path {
    fn new(name: &str) -> Path {
        Path(name.to_string())
    }

    fn child(&self, name: &str) -> Path {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{}", self.0, name))
        }
    }

    fn index(&self, i: usize) -> Path {
        Path(format!("{}[{}]", self.0, i))
    }

    fn key(&self, k: &str) -> Path {
        Path(format!("{}[{}]", self.0, k))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An offending value rendered as upstream prints it.
struct Bad(String);

impl From<&str> for Bad {
    fn from(s: &str) -> Bad {
        Bad(crate::goquote::quote(s))
    }
}

impl From<&String> for Bad {
    fn from(s: &String) -> Bad {
        Bad(crate::goquote::quote(s))
    }
}

impl From<i64> for Bad {
    fn from(v: i64) -> Bad {
        Bad(v.to_string())
    }
}

impl From<i32> for Bad {
    fn from(v: i32) -> Bad {
        Bad(v.to_string())
    }
}

impl From<bool> for Bad {
    fn from(v: bool) -> Bad {
        Bad(v.to_string())
    }
}

impl From<serde_json::Value> for Bad {
    fn from(v: serde_json::Value) -> Bad {
        Bad(v.to_string())
    }
}

/// A value rendered as JSON, the way upstream prints structured values.
fn json<T: serde::Serialize + ?Sized>(value: &T) -> Bad {
    Bad(serde_json::to_string(value).unwrap_or_else(|_| "null".to_string()))
}

/// A value printed verbatim (used for Go `%#v` renderings).
fn raw(s: impl Into<String>) -> Bad {
    Bad(s.into())
}

/// `None` and the empty string both count as "not set", as in Go.
fn is_empty(s: &Option<String>) -> bool {
    s.as_deref().is_none_or(str::is_empty)
}

/// The string or `""`.
fn or_empty(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

/// Upstream's `ValidateNonnegativeField`.
fn non_negative(value: i64, path: &Path, errs: &mut Vec<FieldError>) {
    if value < 0 {
        errs.push(FieldError::invalid(
            path,
            value,
            "must be greater than or equal to 0",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_upstream_format() {
        let cases = [
            (
                FieldError::required(
                    &Path::new("spec")
                        .child("containers")
                        .index(0)
                        .child("image"),
                    "",
                ),
                "spec.containers[0].image: Required value",
            ),
            (
                FieldError::invalid(&Path::new("metadata").child("name"), "Foo_1", "bad"),
                "metadata.name: Invalid value: \"Foo_1\": bad",
            ),
            (
                FieldError::not_supported(
                    &Path::new("spec").child("restartPolicy"),
                    "Sometimes",
                    &["Always", "OnFailure", "Never"],
                ),
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            ),
            (
                FieldError::duplicate(
                    &Path::new("spec").child("ports").index(1).child("name"),
                    "http",
                ),
                "spec.ports[1].name: Duplicate value: \"http\"",
            ),
            (
                FieldError::forbidden(
                    &Path::new("metadata").child("namespace"),
                    "not allowed on this type",
                ),
                "metadata.namespace: Forbidden: not allowed on this type",
            ),
            (
                FieldError::too_long(&Path::new("metadata").child("annotations"), 262144),
                "metadata.annotations: Too long: may not be more than 262144 bytes",
            ),
            (
                FieldError::new(
                    ErrorKind::TooMany,
                    &Path::new("spec").child("x"),
                    Some("5".into()),
                    "must have at most 3 items",
                ),
                "spec.x: Too many: 5: must have at most 3 items",
            ),
            (
                FieldError::invalid(
                    &Path::new("spec").child("replicas"),
                    -1i64,
                    "must be greater than or equal to 0",
                ),
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            ),
            (
                FieldError::required(&Path::new("spec").child("x"), "must be set"),
                "spec.x: Required value: must be set",
            ),
            (
                FieldError::not_found(&Path::new("a").child("name"), "vol"),
                "a.name: Not found: \"vol\"",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn reasons_match_cause_types() {
        let p = Path::new("x");
        assert_eq!(FieldError::required(&p, "").reason(), "FieldValueRequired");
        assert_eq!(
            FieldError::invalid(&p, "v", "").reason(),
            "FieldValueInvalid"
        );
        assert_eq!(
            FieldError::not_supported(&p, "v", &[]).reason(),
            "FieldValueNotSupported"
        );
        assert_eq!(
            FieldError::duplicate(&p, "v").reason(),
            "FieldValueDuplicate"
        );
        assert_eq!(
            FieldError::forbidden(&p, "").reason(),
            "FieldValueForbidden"
        );
        assert_eq!(FieldError::too_long(&p, 1).reason(), "FieldValueTooLong");
        assert_eq!(
            FieldError::new(ErrorKind::TooMany, &p, None, "").reason(),
            "FieldValueTooMany"
        );
        assert_eq!(
            FieldError::not_found(&p, "v").reason(),
            "FieldValueNotFound"
        );
    }

    #[test]
    fn go_quote_escapes_like_strconv() {
        assert_eq!(crate::goquote::quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(crate::goquote::quote("tab\there\n"), "\"tab\\there\\n\"");
        assert_eq!(crate::goquote::quote("\u{1}"), "\"\\x01\"");
        assert_eq!(crate::goquote::quote("héllo"), "\"héllo\"");
    }

    #[test]
    fn paths_render_like_field_path() {
        let p = Path::new("metadata").child("annotations").key("a/b");
        assert_eq!(p.to_string(), "metadata.annotations[a/b]");
        assert_eq!(Path::new("").child("x").to_string(), "x");
    }

    #[test]
    fn name_rules_mask_trailing_dash_for_prefixes() {
        assert!(NameRule::Dns1123Subdomain.check("web-", true).is_empty());
        assert!(!NameRule::Dns1123Subdomain.check("web-", false).is_empty());
        assert!(NameRule::PathSegment.check("a b", false).is_empty());
        assert_eq!(
            NameRule::PathSegment.check("..", false),
            vec!["may not be '..'"]
        );
    }
}
