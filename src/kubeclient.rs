//! The Kubernetes client every role builds from `--kubeconfig`.

use std::path::Path;

use anyhow::Context;

/// A client from the kubeconfig at `path`, else from `$KUBECONFIG`,
/// `~/.kube/config` or the in-cluster service account. Errors name the flag.
pub async fn from_kubeconfig(path: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match path {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("--kubeconfig {}: cannot read it", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("--kubeconfig {}: not usable", p.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes API configured: give --kubeconfig FILE or set KUBECONFIG")?,
    };
    kube::Client::try_from(config).context("cannot build the Kubernetes client")
}
