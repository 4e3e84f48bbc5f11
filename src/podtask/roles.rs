//! Which Mesos roles' resources a pod may use, in preference order.
//!
//! The annotation `k8s.mesosphere.io/roles` lists them (`public,*`); entries
//! are trimmed, empty entries and repeats dropped, and roles the framework
//! does not hold are dropped. An annotation that leaves no role makes the pod
//! unschedulable (it says so, rather than silently using defaults). Without
//! the annotation the pod uses `--mesos-default-pod-roles`. `*` stands for
//! unreserved resources; any other role for resources reserved to it.

use std::collections::BTreeMap;

use super::annotations;

/// The pod's roles annotation leaves it no usable role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "annotation {key}={value:?} names no role this framework holds (framework roles: {framework}); \
     name at least one of them, or remove the annotation to use the default pod roles",
    key = annotations::ROLES,
    framework = framework_roles.join(",")
)]
pub struct NoUsableRole {
    /// The annotation's value.
    pub value: String,
    /// The framework's roles.
    pub framework_roles: Vec<String>,
}

/// The roles of a pod, from its annotations.
pub fn pod_roles(
    annotations: Option<&BTreeMap<String, String>>,
    framework_roles: &[String],
    default_pod_roles: &[String],
) -> Result<Vec<String>, NoUsableRole> {
    let Some(value) = annotations.and_then(|a| a.get(annotations::ROLES)) else {
        return Ok(default_pod_roles.to_vec());
    };
    let mut roles: Vec<String> = Vec::new();
    for r in value.split(',').map(str::trim) {
        if !r.is_empty() && framework_roles.iter().any(|f| f == r) && !roles.iter().any(|x| x == r)
        {
            roles.push(r.to_string());
        }
    }
    if roles.is_empty() {
        return Err(NoUsableRole {
            value: value.clone(),
            framework_roles: framework_roles.to_vec(),
        });
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn ann(value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(annotations::ROLES.to_string(), value.to_string())])
    }

    #[test]
    fn absent_annotation_uses_the_default_pod_roles() {
        let r = pod_roles(None, &v(&["*", "public"]), &v(&["public", "*"])).unwrap();
        assert_eq!(r, v(&["public", "*"]));
        let other = BTreeMap::from([("x".to_string(), "y".to_string())]);
        let r = pod_roles(Some(&other), &v(&["*"]), &v(&["*"])).unwrap();
        assert_eq!(r, v(&["*"]));
    }

    #[test]
    fn annotation_is_trimmed_deduplicated_and_filtered() {
        let fw = v(&["*", "public"]);
        let r = pod_roles(Some(&ann(" public , ,*,public, private")), &fw, &v(&["*"])).unwrap();
        assert_eq!(r, v(&["public", "*"]));
    }

    #[test]
    fn annotation_with_no_framework_role_is_an_error() {
        let fw = v(&["*"]);
        let e = pod_roles(Some(&ann("")), &fw, &fw).unwrap_err();
        assert_eq!(e.value, "");
        let e = pod_roles(Some(&ann("gpu")), &fw, &fw).unwrap_err();
        assert!(e.to_string().contains("framework roles: *"), "{e}");
    }
}
