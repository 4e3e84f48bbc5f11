//! Object metadata, labels, annotations and label selectors.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::{FieldError, NameRule, Path, format, json, non_negative, raw};

/// The total size limit of all annotation keys and values.
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Finalizer names without a domain that are still accepted.
const STANDARD_FINALIZERS: [&str; 3] = ["kubernetes", "orphan", "foregroundDeletion"];

/// Validates `metadata` of an object on create: name (or generateName) and
/// its format, namespace presence, labels, annotations, owner references and
/// finalizers. Field paths start at `metadata`.
///
/// A missing `name` is accepted when `generateName` is set, since the name is
/// generated afterwards.
pub fn validate_object_meta(
    meta: &ObjectMeta,
    namespaced: bool,
    name_rule: NameRule,
) -> Vec<FieldError> {
    object_meta(meta, namespaced, name_rule, &Path::new("metadata"))
}

/// [`validate_object_meta`] at an arbitrary path.
pub(super) fn object_meta(
    meta: &ObjectMeta,
    namespaced: bool,
    rule: NameRule,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let generate_name = meta.generate_name.as_deref().unwrap_or("");
    if !generate_name.is_empty() {
        for msg in rule.check(generate_name, true) {
            errs.push(FieldError::invalid(
                &path.child("generateName"),
                generate_name,
                msg,
            ));
        }
    }
    match meta.name.as_deref() {
        Some(name) if !name.is_empty() => {
            for msg in rule.check(name, false) {
                errs.push(FieldError::invalid(&path.child("name"), name, msg));
            }
        }
        _ if !generate_name.is_empty() => {}
        _ => errs.push(FieldError::required(
            &path.child("name"),
            "name or generateName is required",
        )),
    }
    let namespace = meta.namespace.as_deref().unwrap_or("");
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required(&path.child("namespace"), ""));
        } else {
            for msg in format::dns1123_label(namespace) {
                errs.push(FieldError::invalid(
                    &path.child("namespace"),
                    namespace,
                    msg,
                ));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            &path.child("namespace"),
            "not allowed on this type",
        ));
    }
    common_meta(meta, path, &mut errs);
    errs
}

/// The checks shared by create and update.
fn common_meta(meta: &ObjectMeta, path: &Path, errs: &mut Vec<FieldError>) {
    non_negative(
        meta.generation.unwrap_or(0),
        &path.child("generation"),
        errs,
    );
    errs.extend(labels(meta.labels.as_ref(), &path.child("labels")));
    errs.extend(annotations(
        meta.annotations.as_ref(),
        &path.child("annotations"),
    ));
    owner_references(meta, &path.child("ownerReferences"), errs);
    finalizers(
        meta.finalizers.as_deref().unwrap_or(&[]),
        &path.child("finalizers"),
        errs,
    );
}

/// Validates `metadata` on update: identity fields are immutable and the new
/// labels, annotations and finalizers must be valid.
///
/// `uid` and `creationTimestamp` are only compared when the new object sets
/// them; the storage layer copies them from the old object otherwise.
pub(super) fn object_meta_update(
    new: &ObjectMeta,
    old: &ObjectMeta,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if old.deletion_timestamp.is_some() {
        let old_f = old.finalizers.as_deref().unwrap_or(&[]);
        let mut extra: Vec<&String> = new
            .finalizers
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .filter(|f| !old_f.contains(f))
            .collect();
        extra.sort();
        extra.dedup();
        if !extra.is_empty() {
            let list: Vec<String> = extra.iter().map(|s| crate::goquote::quote(s)).collect();
            errs.push(FieldError::forbidden(
                &path.child("finalizers"),
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    list.join(", ")
                ),
            ));
        }
    }
    if new.generation.unwrap_or(0) < old.generation.unwrap_or(0) {
        errs.push(FieldError::invalid(
            &path.child("generation"),
            new.generation.unwrap_or(0),
            "must not be decremented",
        ));
    }
    immutable_str(&new.name, &old.name, &path.child("name"), &mut errs);
    immutable_str(
        &new.namespace,
        &old.namespace,
        &path.child("namespace"),
        &mut errs,
    );
    if new.uid.is_some() {
        immutable_str(&new.uid, &old.uid, &path.child("uid"), &mut errs);
    }
    if new.creation_timestamp.is_some() && new.creation_timestamp != old.creation_timestamp {
        errs.push(FieldError::invalid(
            &path.child("creationTimestamp"),
            json(&new.creation_timestamp),
            "field is immutable",
        ));
    }
    if new.deletion_grace_period_seconds != old.deletion_grace_period_seconds
        && new.deletion_grace_period_seconds.is_some()
    {
        errs.push(FieldError::invalid(
            &path.child("deletionGracePeriodSeconds"),
            json(&new.deletion_grace_period_seconds),
            "field is immutable",
        ));
    }
    errs.extend(labels(new.labels.as_ref(), &path.child("labels")));
    errs.extend(annotations(
        new.annotations.as_ref(),
        &path.child("annotations"),
    ));
    owner_references(new, &path.child("ownerReferences"), &mut errs);
    finalizers(
        new.finalizers.as_deref().unwrap_or(&[]),
        &path.child("finalizers"),
        &mut errs,
    );
    errs
}

/// Upstream's `ValidateImmutableField` for optional strings.
pub(super) fn immutable_str(
    new: &Option<String>,
    old: &Option<String>,
    path: &Path,
    errs: &mut Vec<FieldError>,
) {
    if super::or_empty(new) != super::or_empty(old) {
        errs.push(FieldError::invalid(
            path,
            super::or_empty(new),
            "field is immutable",
        ));
    }
}

/// `ValidateLabels`: every key a qualified name, every value a label value.
/// Errors point at the map itself, as upstream does.
pub(super) fn labels(labels: Option<&BTreeMap<String, String>>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in labels.into_iter().flatten() {
        errs.extend(label_name(k, path));
        for msg in format::label_value(v) {
            errs.push(FieldError::invalid(path, v, msg));
        }
    }
    errs
}

/// `ValidateLabelName`.
pub(super) fn label_name(key: &str, path: &Path) -> Vec<FieldError> {
    format::qualified_name(key)
        .into_iter()
        .map(|msg| FieldError::invalid(path, key, msg))
        .collect()
}

/// `ValidateAnnotations`: keys are case-insensitive qualified names and the
/// total size is limited to 256 KiB.
pub(super) fn annotations(
    annotations: Option<&BTreeMap<String, String>>,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (k, v) in annotations.into_iter().flatten() {
        for msg in format::qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(path, k, msg));
        }
        total += k.len() + v.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

/// `ValidateOwnerReferences`.
fn owner_references(meta: &ObjectMeta, path: &Path, errs: &mut Vec<FieldError>) {
    let refs = meta.owner_references.as_deref().unwrap_or(&[]);
    let mut first_controller: Option<String> = None;
    for r in refs {
        let (group, version) = match r.api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", r.api_version.as_str()),
        };
        if version.is_empty() {
            errs.push(FieldError::invalid(
                &path.child("apiVersion"),
                &r.api_version,
                "version must not be empty",
            ));
        }
        if r.kind.is_empty() {
            errs.push(FieldError::invalid(
                &path.child("kind"),
                &r.kind,
                "must not be empty",
            ));
        }
        if r.name.is_empty() {
            errs.push(FieldError::invalid(
                &path.child("name"),
                &r.name,
                "must not be empty",
            ));
        }
        if r.uid.is_empty() {
            errs.push(FieldError::invalid(
                &path.child("uid"),
                &r.uid,
                "must not be empty",
            ));
        }
        if group.is_empty() && version == "v1" && r.kind == "Event" {
            errs.push(FieldError::invalid(
                path,
                json(r),
                "/v1, Kind=Event is disallowed from being an owner",
            ));
        }
        if r.controller == Some(true) {
            let current = format!("{}/{}", r.kind, r.name);
            match &first_controller {
                Some(first) => errs.push(FieldError::invalid(
                    path,
                    json(refs),
                    format!("Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"),
                )),
                None => first_controller = Some(current),
            }
        }
    }
}

/// `ValidateFinalizers` plus the core check for unqualified names.
fn finalizers(finalizers: &[String], path: &Path, errs: &mut Vec<FieldError>) {
    for (i, f) in finalizers.iter().enumerate() {
        errs.extend(finalizer_name(f, path, &path.index(i)));
    }
    let orphan = finalizers.iter().any(|f| f == "orphan");
    let foreground = finalizers.iter().any(|f| f == "foregroundDeletion");
    if orphan && foreground {
        errs.push(FieldError::invalid(
            path,
            json(finalizers),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

/// A finalizer name must be a qualified name; without a domain it must be a standard one.
/// `list_path` is used for the format check and `item_path` for the standard-name check,
/// as upstream does.
pub(super) fn finalizer_name(name: &str, list_path: &Path, item_path: &Path) -> Vec<FieldError> {
    let mut errs: Vec<FieldError> = format::qualified_name(name)
        .into_iter()
        .map(|msg| FieldError::invalid(list_path, name, msg))
        .collect();
    if !name.contains('/') && !STANDARD_FINALIZERS.contains(&name) {
        errs.push(FieldError::invalid(
            item_path,
            name,
            "name is neither a standard finalizer name nor is it fully qualified",
        ));
    }
    errs
}

/// `ValidateLabelSelector` with strict label-value checking.
pub(super) fn label_selector(sel: &LabelSelector, path: &Path) -> Vec<FieldError> {
    let mut errs = labels(sel.match_labels.as_ref(), &path.child("matchLabels"));
    for (i, expr) in sel.match_expressions.iter().flatten().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let values = expr.values.as_deref().unwrap_or(&[]);
        match expr.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        &p.child("values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        &p.child("values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => errs.push(FieldError::invalid(
                &p.child("operator"),
                other,
                "not a valid selector operator",
            )),
        }
        errs.extend(label_name(&expr.key, &p.child("key")));
        for (j, v) in values.iter().enumerate() {
            for msg in format::label_value(v) {
                errs.push(FieldError::invalid(&p.child("values").index(j), v, msg));
            }
        }
    }
    errs
}

/// Whether a selector has no requirements at all (it then matches everything).
pub(super) fn selector_is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && sel.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// Whether `sel` selects `labels`; `None` when the selector cannot be converted.
pub(super) fn selector_matches(
    sel: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Option<bool> {
    let mut matched = true;
    for (k, v) in sel.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            matched = false;
        }
    }
    for expr in sel.match_expressions.iter().flatten() {
        let values = expr.values.as_deref().unwrap_or(&[]);
        let actual = labels.get(&expr.key);
        let ok = match expr.operator.as_str() {
            "In" if !values.is_empty() => actual.is_some_and(|a| values.contains(a)),
            "NotIn" if !values.is_empty() => actual.is_none_or(|a| !values.contains(a)),
            "Exists" if values.is_empty() => actual.is_some(),
            "DoesNotExist" if values.is_empty() => actual.is_none(),
            _ => return None,
        };
        matched &= ok;
    }
    Some(matched)
}

/// Renders a Go `map[string]string` value as upstream prints it (JSON, sorted keys).
pub(super) fn map_value(map: Option<&BTreeMap<String, String>>) -> super::Bad {
    match map {
        Some(m) => json(m),
        None => raw("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelectorRequirement, OwnerReference,
    };

    fn meta(name: &str, ns: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: ns.map(str::to_string),
            ..Default::default()
        }
    }

    fn fields(errs: &[FieldError]) -> Vec<(String, super::super::ErrorKind)> {
        errs.iter().map(|e| (e.field.clone(), e.kind)).collect()
    }

    #[test]
    fn valid_meta_passes() {
        let mut m = meta("web-1", Some("default"));
        m.labels = Some(BTreeMap::from([("app".into(), "web".into())]));
        m.annotations = Some(BTreeMap::from([("Example.com/Note".into(), "x".into())]));
        assert!(validate_object_meta(&m, true, NameRule::Dns1123Subdomain).is_empty());
    }

    #[test]
    fn meta_rules() {
        use super::super::ErrorKind::*;
        let cases: Vec<(ObjectMeta, bool, NameRule, &str, super::super::ErrorKind)> = vec![
            (
                ObjectMeta::default(),
                false,
                NameRule::Dns1123Subdomain,
                "metadata.name",
                Required,
            ),
            (
                meta("Foo_1", None),
                false,
                NameRule::Dns1123Subdomain,
                "metadata.name",
                Invalid,
            ),
            (
                meta("a.b", None),
                false,
                NameRule::Dns1123Label,
                "metadata.name",
                Invalid,
            ),
            (
                meta("1abc", Some("d")),
                true,
                NameRule::Dns1035Label,
                "metadata.name",
                Invalid,
            ),
            (
                meta("a/b", Some("d")),
                true,
                NameRule::PathSegment,
                "metadata.name",
                Invalid,
            ),
            (
                meta("x", None),
                true,
                NameRule::Dns1123Subdomain,
                "metadata.namespace",
                Required,
            ),
            (
                meta("x", Some("Bad")),
                true,
                NameRule::Dns1123Subdomain,
                "metadata.namespace",
                Invalid,
            ),
            (
                meta("x", Some("d")),
                false,
                NameRule::Dns1123Subdomain,
                "metadata.namespace",
                Forbidden,
            ),
            (
                ObjectMeta {
                    labels: Some(BTreeMap::from([("bad key".into(), "v".into())])),
                    ..meta("x", None)
                },
                false,
                NameRule::Dns1123Subdomain,
                "metadata.labels",
                Invalid,
            ),
            (
                ObjectMeta {
                    labels: Some(BTreeMap::from([("k".into(), "-v".into())])),
                    ..meta("x", None)
                },
                false,
                NameRule::Dns1123Subdomain,
                "metadata.labels",
                Invalid,
            ),
            (
                ObjectMeta {
                    annotations: Some(BTreeMap::from([("a".into(), "x".repeat(300 * 1024))])),
                    ..meta("x", None)
                },
                false,
                NameRule::Dns1123Subdomain,
                "metadata.annotations",
                TooLong,
            ),
            (
                ObjectMeta {
                    finalizers: Some(vec!["custom".into()]),
                    ..meta("x", None)
                },
                false,
                NameRule::Dns1123Subdomain,
                "metadata.finalizers[0]",
                Invalid,
            ),
            (
                ObjectMeta {
                    generation: Some(-1),
                    ..meta("x", None)
                },
                false,
                NameRule::Dns1123Subdomain,
                "metadata.generation",
                Invalid,
            ),
        ];
        for (m, namespaced, rule, field, kind) in cases {
            let errs = validate_object_meta(&m, namespaced, rule);
            assert_eq!(fields(&errs), vec![(field.to_string(), kind)], "{m:?}");
        }
    }

    #[test]
    fn name_error_message_is_upstreams() {
        let errs = validate_object_meta(&meta("Foo_1", None), false, NameRule::Dns1123Subdomain);
        assert_eq!(
            errs[0].to_string(),
            "metadata.name: Invalid value: \"Foo_1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
    }

    #[test]
    fn generate_name_is_accepted_and_checked() {
        let m = ObjectMeta {
            generate_name: Some("web-".into()),
            ..Default::default()
        };
        assert!(validate_object_meta(&m, false, NameRule::Dns1123Subdomain).is_empty());
        let m = ObjectMeta {
            generate_name: Some("Web-".into()),
            ..Default::default()
        };
        assert_eq!(
            fields(&validate_object_meta(&m, false, NameRule::Dns1123Subdomain))[0].0,
            "metadata.generateName"
        );
    }

    #[test]
    fn owner_references_need_fields_and_one_controller() {
        let r = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "rs".into(),
            uid: "u1".into(),
            controller: Some(true),
            ..Default::default()
        };
        let mut m = meta("x", None);
        m.owner_references = Some(vec![
            r.clone(),
            OwnerReference {
                uid: String::new(),
                ..r
            },
        ]);
        let errs = validate_object_meta(&m, false, NameRule::Dns1123Subdomain);
        assert_eq!(fields(&errs).len(), 2);
        assert_eq!(errs[0].field, "metadata.ownerReferences.uid");
        assert!(
            errs[1]
                .detail
                .starts_with("Only one reference can have Controller set to true")
        );
    }

    #[test]
    fn update_rules() {
        let old = ObjectMeta {
            uid: Some("a".into()),
            generation: Some(2),
            ..meta("x", Some("d"))
        };
        let new = ObjectMeta {
            name: Some("y".into()),
            generation: Some(1),
            ..old.clone()
        };
        let errs = object_meta_update(&new, &old, &Path::new("metadata"));
        assert_eq!(
            errs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec![
                "metadata.generation: Invalid value: 1: must not be decremented",
                "metadata.name: Invalid value: \"y\": field is immutable",
            ]
        );
        let no_uid = ObjectMeta {
            uid: None,
            ..old.clone()
        };
        assert!(object_meta_update(&no_uid, &old, &Path::new("metadata")).is_empty());
    }

    #[test]
    fn selectors() {
        let sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["a".into(), "b".into()]),
            }]),
        };
        let l = BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "b".to_string()),
        ]);
        assert_eq!(selector_matches(&sel, &l), Some(true));
        let l2 = BTreeMap::from([("app".to_string(), "web".to_string())]);
        assert_eq!(selector_matches(&sel, &l2), Some(false));
        assert!(label_selector(&sel, &Path::new("spec").child("selector")).is_empty());
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "k".into(),
                operator: "Like".into(),
                values: None,
            }]),
            ..Default::default()
        };
        let errs = label_selector(&bad, &Path::new("spec").child("selector"));
        assert_eq!(errs[0].field, "spec.selector.matchExpressions[0].operator");
        assert_eq!(selector_matches(&bad, &l), None);
    }
}
