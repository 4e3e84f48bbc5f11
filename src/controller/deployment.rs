//! The deployment controller: a Deployment rolls its pod template out
//! through ReplicaSets.
//!
//! It follows upstream's `DeploymentController`:
//! - the ReplicaSet of the current template is `<deployment>-<hash>`
//!   ([`util::template_hash`]) with the label `pod-template-hash` added to
//!   its selector, template and pods; an existing ReplicaSet whose template
//!   equals the Deployment's but for that label is reused (so a rollback,
//!   which `kubectl rollout undo` does by copying an old template into the
//!   Deployment, revives the old ReplicaSet under a new revision);
//! - `deployment.kubernetes.io/revision` on the ReplicaSets and the
//!   Deployment, `desired-replicas` and `max-replicas` on the ReplicaSets;
//! - RollingUpdate within maxSurge and maxUnavailable (percentages: surge
//!   rounded up, unavailability down; both 0 makes unavailability 1), or
//!   Recreate (old pods gone before new ones are made);
//! - a Deployment resized mid-rollout is resized across its ReplicaSets in
//!   proportion (`scale::proportional`); `spec.paused` stops rollouts
//!   but not resizing; `revisionHistoryLimit` (default 10) old ReplicaSets
//!   with no replicas are kept, older ones deleted;
//! - status: replicas, updatedReplicas, readyReplicas, availableReplicas,
//!   unavailableReplicas, observedGeneration, and the conditions Available
//!   and Progressing (NewReplicaSetCreated, FoundNewReplicaSet,
//!   ReplicaSetUpdated, NewReplicaSetAvailable, ProgressDeadlineExceeded
//!   after `progressDeadlineSeconds`, default 600), which `kubectl rollout
//!   status` reads;
//! - Events: ScalingReplicaSet (and SelectingAll, ReplicaSetCreateError).
//!
//! Where upstream writes the revision annotation of the Deployment through
//! the status subresource, this controller patches the Deployment's
//! metadata (km apiserver keeps only `status` from a status write).

mod progress;
mod scale;
mod sync;
pub mod util;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{self, Action, ReconcileRequest, applier, trigger_with};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use super::Context;
use super::workload::owner;
use super::workload::runner::{Backoffs, drive};

/// Every Deployment is looked at again at least this often.
const RESYNC: Duration = Duration::from_secs(5 * 60);

/// Why a Deployment could not be synced (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A cache went away: the controller is stopping.
    #[error("the replicaset or pod cache is gone (the controller is stopping)")]
    CacheGone,
    /// A write to the API server failed.
    #[error("deployment {deployment}: cannot {action}: {source}")]
    Api {
        /// namespace/name of the Deployment.
        deployment: String,
        /// What was tried.
        action: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },
    /// The new ReplicaSet's name is taken by another ReplicaSet; the
    /// collision count was raised and the next sync uses another name.
    #[error(
        "deployment {deployment}: replicaset {name} exists with another template (hash collision); retrying with a new name"
    )]
    HashCollision {
        /// namespace/name of the Deployment.
        deployment: String,
        /// The name that was taken.
        name: String,
    },
}

#[derive(Clone, PartialEq, Eq)]
struct Owner {
    namespace: String,
    name: String,
}

impl Owner {
    fn object_ref(&self) -> ObjectRef<Deployment> {
        ObjectRef::new(&self.name).within(&self.namespace)
    }
}

/// Which Deployment controls each ReplicaSet, to wake the previous one
/// when a ReplicaSet changes hands and to notice ReplicaSets that vanished
/// during a relist.
#[derive(Default)]
struct Tracker {
    owners: HashMap<String, Option<Owner>>,
    relisting: Option<HashSet<String>>,
}

struct State {
    ctx: Context,
    deployments: Store<Deployment>,
    replicasets: Store<ReplicaSet>,
    pods: Store<Pod>,
    backoffs: Backoffs,
    tracker: Mutex<Tracker>,
}

/// Runs the deployment controller until `stop`.
pub async fn run(ctx: Context, stop: CancellationToken) -> anyhow::Result<()> {
    let metrics = ctx.metrics.clone();
    let client = ctx.client.clone();
    let concurrency = ctx.config.concurrent_syncs;
    let (d_store, d_writer) = reflector::store::<Deployment>();
    let (rs_store, rs_writer) = reflector::store::<ReplicaSet>();
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let state = Arc::new(State {
        ctx,
        deployments: d_store.clone(),
        replicasets: rs_store,
        pods: pod_store,
        backoffs: Backoffs::default(),
        tracker: Mutex::default(),
    });

    let d_events = watcher(Api::<Deployment>::all(client.clone()), Default::default())
        .default_backoff()
        .reflect(d_writer);
    let st = state.clone();
    let d_triggers = trigger_with(d_events, move |ev| st.on_deployment_event(ev));
    let rs_events = watcher(Api::<ReplicaSet>::all(client.clone()), Default::default())
        .default_backoff()
        .reflect(rs_writer);
    let st = state.clone();
    let rs_triggers = trigger_with(rs_events, move |ev| st.on_replicaset_event(ev));
    let pod_events = watcher(Api::<Pod>::all(client), Default::default())
        .default_backoff()
        .reflect(pod_writer);
    let st = state.clone();
    let pod_triggers = trigger_with(pod_events, move |ev| st.on_pod_event(ev));

    let queue = futures::stream::select(
        futures::stream::select(d_triggers, rs_triggers),
        pod_triggers,
    );
    let results = applier(
        |d, st| Box::pin(reconcile(d, st)),
        error_policy,
        state,
        d_store,
        queue,
        controller::Config::default().concurrency(concurrency),
    );
    tracing::info!("deployment controller started");
    drive("deployment", &metrics, results, stop).await;
    Ok(())
}

fn error_policy(d: Arc<Deployment>, _e: &Error, st: Arc<State>) -> Action {
    Action::requeue(st.backoffs.failed(&d.uid().unwrap_or_default()))
}

impl State {
    fn on_deployment_event(
        &self,
        ev: watcher::Event<Deployment>,
    ) -> Vec<ReconcileRequest<Deployment>> {
        match ev {
            watcher::Event::Apply(d) | watcher::Event::InitApply(d) => {
                vec![ObjectRef::from_obj(&d).into()]
            }
            watcher::Event::Delete(d) => {
                self.backoffs.succeeded(&d.uid().unwrap_or_default());
                Vec::new()
            }
            watcher::Event::Init | watcher::Event::InitDone => Vec::new(),
        }
    }

    /// Deployments in the namespace whose selector matches `labels`.
    fn matching(
        &self,
        namespace: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Vec<ObjectRef<Deployment>> {
        self.deployments
            .state()
            .iter()
            .filter(|d| d.namespace().as_deref() == Some(namespace))
            .filter(|d| {
                d.spec
                    .as_ref()
                    .and_then(|s| Selector::try_from(s.selector.clone()).ok())
                    .is_some_and(|sel| !sel.selects_all() && sel.matches(labels))
            })
            .map(|d| ObjectRef::from_obj(d.as_ref()))
            .collect()
    }

    fn on_replicaset_event(
        &self,
        ev: watcher::Event<ReplicaSet>,
    ) -> Vec<ReconcileRequest<Deployment>> {
        let mut wake = Vec::new();
        let mut t = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
        let owner_of = |rs: &ReplicaSet| {
            owner::controller_of_kind::<Deployment>(&rs.metadata).map(|r| Owner {
                namespace: rs.namespace().unwrap_or_default(),
                name: r.name.clone(),
            })
        };
        match ev {
            watcher::Event::Init => t.relisting = Some(HashSet::new()),
            watcher::Event::Apply(rs) | watcher::Event::InitApply(rs) => {
                let uid = rs.uid().unwrap_or_default();
                if let Some(seen) = t.relisting.as_mut() {
                    seen.insert(uid.clone());
                }
                let owner = owner_of(&rs);
                let before = t.owners.insert(uid, owner.clone());
                if let Some(Some(prev)) = before
                    && Some(&prev) != owner.as_ref()
                {
                    wake.push(prev.object_ref());
                }
                match owner {
                    Some(o) => wake.push(o.object_ref()),
                    None => {
                        wake.extend(self.matching(&rs.namespace().unwrap_or_default(), rs.labels()))
                    }
                }
            }
            watcher::Event::Delete(rs) => {
                t.owners.remove(&rs.uid().unwrap_or_default());
                if let Some(o) = owner_of(&rs) {
                    wake.push(o.object_ref());
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = t.relisting.take() {
                    let gone: Vec<String> = t
                        .owners
                        .keys()
                        .filter(|uid| !seen.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in gone {
                        if let Some(Some(o)) = t.owners.remove(&uid) {
                            wake.push(o.object_ref());
                        }
                    }
                }
            }
        }
        wake.into_iter().map(Into::into).collect()
    }

    /// A pod change matters to a Recreate Deployment waiting for its old
    /// pods to go.
    fn on_pod_event(&self, ev: watcher::Event<Pod>) -> Vec<ReconcileRequest<Deployment>> {
        let pod = match ev {
            watcher::Event::Apply(p) | watcher::Event::Delete(p) => p,
            _ => return Vec::new(),
        };
        let ns = pod.namespace().unwrap_or_default();
        let Some(rs_ref) = owner::controller_of_kind::<ReplicaSet>(&pod.metadata) else {
            return Vec::new();
        };
        let Some(rs) = self
            .replicasets
            .get(&ObjectRef::new(&rs_ref.name).within(&ns))
        else {
            return Vec::new();
        };
        let Some(d_ref) = owner::controller_of_kind::<Deployment>(&rs.metadata) else {
            return Vec::new();
        };
        let d = ObjectRef::<Deployment>::new(&d_ref.name).within(&ns);
        match self.deployments.get(&d) {
            Some(dep) if util::strategy(&dep) == util::Strategy::Recreate => vec![d.into()],
            _ => Vec::new(),
        }
    }
}

fn key(d: &Deployment) -> String {
    format!("{}/{}", d.namespace().unwrap_or_default(), d.name_any())
}

async fn reconcile(d: Arc<Deployment>, st: Arc<State>) -> Result<Action, Error> {
    st.replicasets
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheGone)?;
    st.pods
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheGone)?;
    let uid = d.uid().unwrap_or_default();
    let action = sync::sync_deployment(&st, (*d).clone()).await?;
    st.backoffs.succeeded(&uid);
    Ok(action)
}
