//! Where the framework ID survives restarts: a ConfigMap in the scheduler's
//! namespace, so a restarted or standby scheduler fails over to the same
//! framework and its tasks keep running.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

/// The ConfigMap key holding the ID.
pub const KEY: &str = "framework-id";

/// The ConfigMap of one framework name.
pub fn object_name(framework_name: &str) -> String {
    let slug: String = framework_name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("k8sm-{}-framework", slug.trim_matches('-'))
}

/// Reads the stored framework ID.
pub async fn load(api: &Api<ConfigMap>, name: &str) -> Result<Option<String>, kube::Error> {
    Ok(api
        .get_opt(name)
        .await?
        .and_then(|cm| cm.data)
        .and_then(|d| d.get(KEY).cloned())
        .filter(|id| !id.is_empty()))
}

/// Stores the framework ID (create, or update when it differs).
pub async fn save(api: &Api<ConfigMap>, name: &str, id: &str) -> Result<(), kube::Error> {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "k8sm-scheduler".to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(KEY.to_string(), id.to_string())])),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &cm).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = json!({"data": {KEY: id}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Forgets the stored ID (`--failover-timeout 0`).
pub async fn remove(api: &Api<ConfigMap>, name: &str) -> Result<(), kube::Error> {
    match api.delete(name, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_object_names() {
        assert_eq!(object_name("Kubernetes"), "k8sm-kubernetes-framework");
        assert_eq!(
            object_name("My K8s_Framework"),
            "k8sm-my-k8s-framework-framework"
        );
    }
}
