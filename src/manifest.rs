//! Reading Kubernetes manifests written by people: YAML or JSON.

use k8s_openapi::api::core::v1::Pod;

/// A manifest that is not a readable Pod.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not valid YAML/JSON for a Pod; the message names the line and field.
    #[error("not a valid Pod manifest: {0}")]
    Parse(String),
    /// Some other kind of object.
    #[error("expected kind: Pod, found kind: {0}")]
    Kind(String),
}

/// Parses one Pod from YAML or JSON text.
pub fn parse_pod(text: &str) -> Result<Pod, ManifestError> {
    let value: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| ManifestError::Parse(e.to_string()))?
    } else {
        serde_saphyr::from_str(text).map_err(|e| ManifestError::Parse(e.to_string()))?
    };
    if let Some(kind) = value.get("kind").and_then(|k| k.as_str())
        && kind != "Pod"
    {
        return Err(ManifestError::Kind(kind.to_string()));
    }
    serde_path_to_error::deserialize(value)
        .map_err(|e| ManifestError::Parse(format!("{}: {}", e.path(), e.inner())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_pods_parse() {
        let y = parse_pod("apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\nspec:\n  containers:\n  - name: c\n    image: busybox\n").unwrap();
        assert_eq!(y.metadata.name.as_deref(), Some("a"));
        let j = parse_pod(r#"{"kind":"Pod","metadata":{"name":"b"},"spec":{"containers":[]}}"#)
            .unwrap();
        assert_eq!(j.metadata.name.as_deref(), Some("b"));
    }

    #[test]
    fn errors_say_what_is_wrong_where() {
        let e = parse_pod("kind: Deployment\n").unwrap_err();
        assert_eq!(e.to_string(), "expected kind: Pod, found kind: Deployment");
        let e = parse_pod(
            "kind: Pod\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: http\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("spec.containers[0].ports[0].containerPort"),
            "{e}"
        );
        assert!(parse_pod("a: [").is_err());
    }
}
