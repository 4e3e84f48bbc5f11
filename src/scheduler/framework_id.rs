//! Where the framework ID survives restarts, so a restarted or standby
//! scheduler fails over to the same framework and its tasks keep running:
//! a ConfigMap in the scheduler's namespace, or, when the masters are found
//! through ZooKeeper, a znode `<mesos path>/k8sm/<framework name>` in the
//! same ensemble (`--framework-store-uri` picks another place).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use zookeeper_client as zk;

/// Where the ID is kept.
pub enum Store {
    /// ConfigMap `name` (key [`KEY`]).
    ConfigMap {
        /// ConfigMaps of `namespace`.
        api: Box<Api<ConfigMap>>,
        /// The scheduler's namespace.
        namespace: String,
        /// See [`object_name`].
        name: String,
    },
    /// A znode holding the ID as its data.
    ZooKeeper {
        /// The ensemble, `h1:p1,h2:p2`.
        servers: String,
        /// The znode.
        path: String,
    },
}

/// A failed read or write of the stored ID.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The Kubernetes API refused or failed.
    #[error("ConfigMap {name}: {source}")]
    Kube {
        /// The ConfigMap.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// ZooKeeper refused or failed.
    #[error("ZooKeeper {servers} znode {path}: {source}")]
    ZooKeeper {
        /// The ensemble.
        servers: String,
        /// The znode.
        path: String,
        /// Why.
        #[source]
        source: zk::Error,
    },
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::ConfigMap {
                namespace, name, ..
            } => write!(f, "ConfigMap {namespace}/{name}"),
            Store::ZooKeeper { servers, path } => write!(f, "znode zk://{servers}{path}"),
        }
    }
}

impl Store {
    /// Reads the stored ID.
    pub async fn load(&self) -> Result<Option<String>, StoreError> {
        match self {
            Store::ConfigMap { api, name, .. } => {
                load(api, name).await.map_err(|source| StoreError::Kube {
                    name: name.clone(),
                    source,
                })
            }
            Store::ZooKeeper { servers, path } => {
                let c = zk_session(servers, path).await?;
                match c.get_data(path).await {
                    Ok((data, _)) => Ok(Some(String::from_utf8_lossy(&data).trim().to_string())
                        .filter(|s| !s.is_empty())),
                    Err(zk::Error::NoNode) => Ok(None),
                    Err(source) => Err(zk_error(servers, path, source)),
                }
            }
        }
    }

    /// Stores the ID.
    pub async fn save(&self, id: &str) -> Result<(), StoreError> {
        match self {
            Store::ConfigMap { api, name, .. } => {
                save(api, name, id)
                    .await
                    .map_err(|source| StoreError::Kube {
                        name: name.clone(),
                        source,
                    })
            }
            Store::ZooKeeper { servers, path } => {
                let c = zk_session(servers, path).await?;
                let err = |source| zk_error(servers, path, source);
                let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                if let Some((parent, _)) = path.rsplit_once('/')
                    && !parent.is_empty()
                {
                    c.mkdir(parent, &options).await.map_err(err)?;
                }
                match c.create(path, id.as_bytes(), &options).await {
                    Ok(_) => Ok(()),
                    Err(zk::Error::NodeExists) => c
                        .set_data(path, id.as_bytes(), None)
                        .await
                        .map(|_| ())
                        .map_err(err),
                    Err(e) => Err(err(e)),
                }
            }
        }
    }

    /// Forgets the stored ID (`--failover-timeout 0`).
    pub async fn remove(&self) -> Result<(), StoreError> {
        match self {
            Store::ConfigMap { api, name, .. } => {
                remove(api, name).await.map_err(|source| StoreError::Kube {
                    name: name.clone(),
                    source,
                })
            }
            Store::ZooKeeper { servers, path } => {
                let c = zk_session(servers, path).await?;
                match c.delete(path, None).await {
                    Ok(()) | Err(zk::Error::NoNode) => Ok(()),
                    Err(source) => Err(zk_error(servers, path, source)),
                }
            }
        }
    }
}

fn zk_error(servers: &str, path: &str, source: zk::Error) -> StoreError {
    StoreError::ZooKeeper {
        servers: servers.to_string(),
        path: path.to_string(),
        source,
    }
}

/// A session with the ensemble (failing at once when no server answers).
async fn zk_session(servers: &str, path: &str) -> Result<zk::Client, StoreError> {
    let connect = zk::Client::connector()
        .with_session_timeout(std::time::Duration::from_secs(10))
        .with_fail_eagerly()
        .connect(servers);
    match tokio::time::timeout(std::time::Duration::from_secs(20), connect).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(source)) => Err(zk_error(servers, path, source)),
        Err(_) => Err(zk_error(servers, path, zk::Error::Timeout)),
    }
}

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
