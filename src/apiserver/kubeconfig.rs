//! Writing a kubeconfig that points kubectl (and kube-rs) at `km apiserver`.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// Name of the cluster entry (and of the context).
pub const CLUSTER_NAME: &str = "km";
/// Name of the user entry.
pub const USER_NAME: &str = "km-admin";
/// Name of the context, which is also the current context.
pub const CONTEXT_NAME: &str = "km";

/// The subset of client-go's kubeconfig (`clientcmd/api/v1.Config`) that km writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    /// Always `v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Always `Config`.
    pub kind: String,
    /// Known clusters.
    pub clusters: Vec<NamedCluster>,
    /// Known users.
    pub users: Vec<NamedUser>,
    /// Known contexts.
    pub contexts: Vec<NamedContext>,
    /// Context used by default.
    pub current_context: String,
}

/// A named cluster entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCluster {
    /// Entry name.
    pub name: String,
    /// Connection details.
    pub cluster: Cluster,
}

/// How to reach and trust a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    /// API server URL.
    pub server: String,
    /// Base64 of the PEM CA bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
}

/// A named user entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedUser {
    /// Entry name.
    pub name: String,
    /// Credentials.
    pub user: AuthInfo,
}

/// Credentials of a user entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthInfo {
    /// Bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A named context entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedContext {
    /// Entry name.
    pub name: String,
    /// The cluster/user pair.
    pub context: Context,
}

/// A cluster/user pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// Cluster entry name.
    pub cluster: String,
    /// User entry name.
    pub user: String,
}

impl Kubeconfig {
    /// The km kubeconfig: cluster `km`, user `km-admin`, context `km` (current).
    pub fn new(server: &str, ca_pem: Option<&str>, token: Option<&str>) -> Self {
        Kubeconfig {
            api_version: "v1".to_string(),
            kind: "Config".to_string(),
            clusters: vec![NamedCluster {
                name: CLUSTER_NAME.to_string(),
                cluster: Cluster {
                    server: server.to_string(),
                    certificate_authority_data: ca_pem
                        .map(|pem| base64::engine::general_purpose::STANDARD.encode(pem)),
                },
            }],
            users: vec![NamedUser {
                name: USER_NAME.to_string(),
                user: AuthInfo {
                    token: token.map(str::to_string),
                },
            }],
            contexts: vec![NamedContext {
                name: CONTEXT_NAME.to_string(),
                context: Context {
                    cluster: CLUSTER_NAME.to_string(),
                    user: USER_NAME.to_string(),
                },
            }],
            current_context: CONTEXT_NAME.to_string(),
        }
    }
}

/// Writes a kubeconfig for `server` to `path` (YAML, mode 0600, parent directories created).
///
/// One cluster `km` (with `certificate-authority-data` when `ca_pem` is given), one user `km-admin`
/// (with `token` when given) and one context `km`, set as `current-context`. The file is replaced
/// atomically: written to a temporary file in the same directory, synced, then renamed over `path`.
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_pem: Option<&str>,
    token: Option<&str>,
) -> Result<(), io::Error> {
    let config = Kubeconfig::new(server, ca_pem, token);
    let yaml = serde_saphyr::to_string(&config).map_err(io::Error::other)?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    super::files::write_atomic(path, yaml.as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBdummy\n-----END CERTIFICATE-----\n";

    fn mode(path: &Path) -> u32 {
        fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    #[test]
    fn kubeconfig_round_trips_with_expected_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/dir/kubeconfig");
        // A token with characters that need YAML care.
        let token = "abc-_:#DEF 'x'";
        write_kubeconfig(&path, "https://127.0.0.1:6443", Some(CA), Some(token)).expect("write");
        assert_eq!(mode(&path), 0o600);

        let text = fs::read_to_string(&path).expect("read");
        let parsed: Kubeconfig = serde_saphyr::from_str(&text).expect("parse back");
        assert_eq!(
            parsed,
            Kubeconfig::new("https://127.0.0.1:6443", Some(CA), Some(token))
        );
        assert_eq!(parsed.current_context, "km");
        assert_eq!(parsed.clusters[0].name, "km");
        assert_eq!(parsed.clusters[0].cluster.server, "https://127.0.0.1:6443");
        let ca_data = parsed.clusters[0]
            .cluster
            .certificate_authority_data
            .as_deref()
            .expect("ca data");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(ca_data)
            .expect("base64");
        assert_eq!(decoded, CA.as_bytes());
        assert_eq!(parsed.users[0].name, "km-admin");
        assert_eq!(parsed.users[0].user.token.as_deref(), Some(token));
        assert_eq!(parsed.contexts[0].context.cluster, "km");
        assert_eq!(parsed.contexts[0].context.user, "km-admin");

        // Field names as client-go spells them.
        let generic: serde_json::Value = serde_saphyr::from_str(&text).expect("generic parse");
        assert_eq!(generic["apiVersion"], "v1");
        assert_eq!(generic["kind"], "Config");
        assert_eq!(generic["current-context"], "km");
        assert!(generic["clusters"][0]["cluster"]["certificate-authority-data"].is_string());

        // Rewriting replaces the file and keeps the mode; optional fields disappear.
        write_kubeconfig(&path, "https://[::1]:6443", None, None).expect("rewrite");
        assert_eq!(mode(&path), 0o600);
        let text = fs::read_to_string(&path).expect("read");
        let generic: serde_json::Value = serde_saphyr::from_str(&text).expect("generic parse");
        assert!(
            generic["clusters"][0]["cluster"]
                .get("certificate-authority-data")
                .is_none()
        );
        assert!(generic["users"][0]["user"].get("token").is_none());
        let leftovers: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left: {leftovers:?}");
    }

    #[test]
    fn kubectl_reads_the_kubeconfig() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubeconfig");
        let token = "tok-123_ABC";
        write_kubeconfig(&path, "https://127.0.0.1:6443", Some(CA), Some(token)).expect("write");
        let output = match std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&path)
            .args(["config", "view", "--raw", "-o", "json"])
            .output()
        {
            Ok(output) => output,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                println!("SKIPPED kubectl check: kubectl is not on PATH");
                return;
            }
            Err(err) => panic!("running kubectl: {err}"),
        };
        assert!(
            output.status.success(),
            "kubectl failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let view: serde_json::Value = serde_json::from_slice(&output.stdout).expect("kubectl json");
        assert_eq!(view["current-context"], "km");
        assert_eq!(view["clusters"][0]["name"], "km");
        assert_eq!(
            view["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            view["clusters"][0]["cluster"]["certificate-authority-data"],
            base64::engine::general_purpose::STANDARD.encode(CA)
        );
        assert_eq!(view["users"][0]["name"], "km-admin");
        assert_eq!(view["users"][0]["user"]["token"], token);
        assert_eq!(view["contexts"][0]["context"]["cluster"], "km");
        assert_eq!(view["contexts"][0]["context"]["user"], "km-admin");
    }
}
