//! The namespace controller: a namespace being deleted is emptied, then
//! released.
//!
//! For a Namespace with a deletionTimestamp and the finalizer `kubernetes`
//! in `spec.finalizers` (upstream's `NamespacedResourcesDeleter`):
//! every namespaced kind the API serves (discovery, else the kinds km
//! apiserver serves) is deleted in that namespace, as a collection where
//! the kind allows it, with background propagation; while objects remain
//! (pods terminating, finalizers pending) it looks again with a growing
//! delay; once nothing is left it removes `kubernetes` through the
//! `finalize` subresource, after which the API server deletes the
//! namespace. The conditions upstream sets on the namespace's status
//! (NamespaceDeletionContentFailure, NamespaceContentRemaining,
//! NamespaceFinalizersRemaining, ...) say how far it got.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, NamespaceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use super::Context;
use super::workload::kinds::{self, Kind};
use super::workload::runner::{Backoffs, drive};
use super::workload::{api_code, is_conflict, is_not_found};

/// The finalizer this controller owns.
pub const FINALIZER: &str = "kubernetes";

/// Why a namespace could not be finalized yet (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Some kinds could not be deleted.
    #[error("namespace {namespace}: cannot delete {failures}")]
    Content {
        /// The namespace.
        namespace: String,
        /// What failed, by kind.
        failures: String,
    },
    /// The finalize call kept meeting concurrent changes.
    #[error("namespace {namespace}: too many concurrent changes while finalizing; will retry")]
    Contended {
        /// The namespace.
        namespace: String,
    },
    /// The namespace itself could not be updated.
    #[error("namespace {namespace}: cannot {action}: {source}")]
    Namespace {
        /// The namespace.
        namespace: String,
        /// What was tried.
        action: &'static str,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },
}

struct State {
    client: kube::Client,
    kinds: Vec<Kind>,
    backoffs: Backoffs,
}

/// Runs the namespace controller until `stop`.
pub async fn run(ctx: Context, stop: CancellationToken) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let kinds: Vec<Kind> = kinds::discover_or_builtin(&client)
        .await
        .into_iter()
        .filter(|k| k.namespaced)
        .collect();
    let state = Arc::new(State {
        client: client.clone(),
        kinds,
        backoffs: Backoffs::default(),
    });
    let results = Controller::new(Api::<Namespace>::all(client), watcher::Config::default())
        .with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.config.concurrent_syncs),
        )
        .run(|ns, st| Box::pin(reconcile(ns, st)), error_policy, state);
    tracing::info!("namespace controller started");
    drive("namespace", &ctx.metrics, results, stop).await;
    Ok(())
}

fn error_policy(ns: Arc<Namespace>, _e: &Error, st: Arc<State>) -> Action {
    Action::requeue(st.backoffs.failed(&ns.name_any()))
}

/// What is left in a namespace after one pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Remaining {
    /// Objects left, by `plural.group`.
    objects: BTreeMap<String, usize>,
    /// Objects held by each finalizer.
    finalizers: BTreeMap<String, usize>,
    /// Kinds whose deletion failed, with the error.
    failures: BTreeMap<String, String>,
}

impl Remaining {
    fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.failures.is_empty()
    }
}

async fn reconcile(ns: Arc<Namespace>, st: Arc<State>) -> Result<Action, Error> {
    let name = ns.name_any();
    let ours = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER));
    if ns.metadata.deletion_timestamp.is_none() || !ours {
        st.backoffs.succeeded(&name);
        return Ok(Action::await_change());
    }
    let mut left = Remaining::default();
    for kind in &st.kinds {
        delete_all(&st.client, kind, &name, &mut left).await;
    }
    update_conditions(&st.client, &ns, &left).await?;
    if !left.failures.is_empty() {
        return Err(Error::Content {
            namespace: name,
            failures: left
                .failures
                .iter()
                .map(|(k, e)| format!("{k}: {e}"))
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    if !left.is_empty() {
        let delay = st.backoffs.failed(&name).max(Duration::from_millis(250));
        tracing::debug!(namespace = %name, remaining = ?left.objects, "namespace content remains; looking again in {delay:?}");
        return Ok(Action::requeue(delay.min(Duration::from_secs(15))));
    }
    finalize(&st.client, &name).await?;
    st.backoffs.succeeded(&name);
    tracing::info!(namespace = %name, "namespace emptied and finalized");
    Ok(Action::await_change())
}

/// Deletes every object of `kind` in `ns`, then counts what is left.
async fn delete_all(client: &kube::Client, kind: &Kind, ns: &str, left: &mut Remaining) {
    let api = kind.api(client, Some(ns));
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    let mut by_one = !kind.delete_collection;
    if kind.delete_collection {
        match api.delete_collection(&params, &ListParams::default()).await {
            Ok(_) => {}
            // Not allowed after all: one by one.
            Err(e) if matches!(api_code(&e), Some(405 | 403)) => by_one = true,
            Err(e) if is_not_found(&e) => return,
            Err(e) => {
                left.failures.insert(kind.qualified(), e.to_string());
                return;
            }
        }
    }
    let listed = match api.list(&ListParams::default()).await {
        Ok(l) => l,
        Err(e) if is_not_found(&e) => return,
        Err(e) => {
            left.failures.insert(kind.qualified(), e.to_string());
            return;
        }
    };
    for obj in &listed.items {
        if by_one && obj.metadata.deletion_timestamp.is_none() {
            match api.delete(&obj.name_any(), &params).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => continue,
                Err(e) => {
                    left.failures.insert(kind.qualified(), e.to_string());
                }
            }
        }
        for f in obj.finalizers() {
            *left.finalizers.entry(f.clone()).or_default() += 1;
        }
    }
    if !listed.items.is_empty() {
        left.objects.insert(kind.qualified(), listed.items.len());
    }
}

/// The deletion conditions upstream keeps on a terminating namespace.
fn conditions(left: &Remaining, now: Time) -> Vec<NamespaceCondition> {
    let cond = |type_: &str, on: bool, reason: &str, message: String| NamespaceCondition {
        type_: type_.to_string(),
        status: if on { "True" } else { "False" }.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_transition_time: Some(now.clone()),
    };
    let list = |m: &BTreeMap<String, usize>, what: &str| {
        m.iter()
            .map(|(k, n)| format!("{k} {what} {n} resource instances"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        cond(
            "NamespaceDeletionDiscoveryFailure",
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered".into(),
        ),
        cond(
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into(),
        ),
        if left.failures.is_empty() {
            cond(
                "NamespaceDeletionContentFailure",
                false,
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".into(),
            )
        } else {
            cond(
                "NamespaceDeletionContentFailure",
                true,
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    left.failures.len(),
                    left.failures
                        .iter()
                        .map(|(k, e)| format!("{k}: {e}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        },
        if left.objects.is_empty() {
            cond(
                "NamespaceContentRemaining",
                false,
                "ContentRemoved",
                "All content successfully removed".into(),
            )
        } else {
            cond(
                "NamespaceContentRemaining",
                true,
                "SomeResourcesRemain",
                format!(
                    "Some resources are remaining: {}",
                    list(&left.objects, "has")
                ),
            )
        },
        if left.finalizers.is_empty() {
            cond(
                "NamespaceFinalizersRemaining",
                false,
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".into(),
            )
        } else {
            cond(
                "NamespaceFinalizersRemaining",
                true,
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    list(&left.finalizers, "in")
                ),
            )
        },
    ]
}

/// Writes the conditions when their status, reason or message changed
/// (keeping the transition times of the others).
async fn update_conditions(
    client: &kube::Client,
    ns: &Namespace,
    left: &Remaining,
) -> Result<(), Error> {
    let now = Time(
        k8s_openapi::jiff::Timestamp::from_second(k8s_openapi::jiff::Timestamp::now().as_second())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    );
    let current = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    let mut merged = Vec::new();
    for mut c in conditions(left, now) {
        match current.iter().find(|x| x.type_ == c.type_) {
            Some(old)
                if old.status == c.status && old.reason == c.reason && old.message == c.message =>
            {
                c = old.clone();
            }
            Some(old) if old.status == c.status => {
                c.last_transition_time = old.last_transition_time.clone();
                changed = true;
            }
            _ => changed = true,
        }
        merged.push(c);
    }
    let others: Vec<NamespaceCondition> = current
        .iter()
        .filter(|c| !merged.iter().any(|m| m.type_ == c.type_))
        .cloned()
        .collect();
    merged.extend(others);
    if !changed {
        return Ok(());
    }
    let mut obj = ns.clone();
    obj.status.get_or_insert_with(Default::default).conditions = Some(merged);
    let api: Api<Namespace> = Api::all(client.clone());
    match api
        .replace_status(&ns.name_any(), &PostParams::default(), &obj)
        .await
    {
        Ok(_) => Ok(()),
        // A newer version is on its way; the next pass writes again.
        Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(()),
        Err(source) => Err(Error::Namespace {
            namespace: ns.name_any(),
            action: "update its conditions",
            source,
        }),
    }
}

/// Removes `kubernetes` from spec.finalizers through the finalize
/// subresource (re-reading on conflicts).
async fn finalize(client: &kube::Client, name: &str) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let fail = |action, source| Error::Namespace {
        namespace: name.to_string(),
        action,
        source,
    };
    for _ in 0..5 {
        let ns = match api.get_opt(name).await {
            Ok(Some(ns)) => ns,
            Ok(None) => return Ok(()),
            Err(e) => return Err(fail("read it", e)),
        };
        let mut obj = ns.clone();
        let spec = obj.spec.get_or_insert_with(NamespaceSpec::default);
        let rest: Vec<String> = spec
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        spec.finalizers = Some(rest);
        match api
            .replace_subresource("finalize", name, &PostParams::default(), &obj)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(fail("finalize it", e)),
        }
    }
    Err(Error::Contended {
        namespace: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_say_what_remains() {
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let done = conditions(&Remaining::default(), now.clone());
        assert_eq!(done.len(), 5);
        assert!(done.iter().all(|c| c.status == "False"));
        let mut left = Remaining::default();
        left.objects.insert("pods".into(), 2);
        left.finalizers.insert("foregroundDeletion".into(), 1);
        let c = conditions(&left, now);
        let remaining = c
            .iter()
            .find(|c| c.type_ == "NamespaceContentRemaining")
            .unwrap();
        assert_eq!(remaining.status, "True");
        assert_eq!(
            remaining.message.as_deref(),
            Some("Some resources are remaining: pods has 2 resource instances")
        );
        let fins = c
            .iter()
            .find(|c| c.type_ == "NamespaceFinalizersRemaining")
            .unwrap();
        assert_eq!(
            fins.message.as_deref(),
            Some(
                "Some content in the namespace has finalizers remaining: foregroundDeletion in 1 resource instances"
            )
        );
    }
}
