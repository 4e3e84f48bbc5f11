//! The replicaset controller: every ReplicaSet keeps `spec.replicas` active
//! pods that match its selector and that it controls.
//!
//! It follows upstream's `ReplicaSetController`:
//! - it claims pods: keeps those it controls that match, adopts matching
//!   orphans (a controller ownerReference with `blockOwnerDeletion`),
//!   releases those it controls that no longer match; a ReplicaSet being
//!   deleted only keeps;
//! - Failed and Succeeded pods and pods being deleted do not count, so a
//!   pod the nodes controller marked Failed (its agent was lost) is
//!   replaced;
//! - it creates missing pods from the template (generateName `<rs>-`) in
//!   batches of 1, 2, 4, ... (a failing batch stops the rest), and deletes
//!   surplus pods in the order of [`super::workload::pods::deletion_order`];
//! - it waits until its watch has seen what it created and deleted
//!   ([`super::workload::expectations`]) before it counts again;
//! - it writes `status` (replicas, fullyLabeledReplicas, readyReplicas,
//!   availableReplicas after `minReadySeconds`, observedGeneration, and the
//!   ReplicaFailure condition) through the status subresource;
//! - Events: SuccessfulCreate, FailedCreate, SuccessfulDelete, FailedDelete.
//!
//! One watch of ReplicaSets and one of pods feed both the caches
//! (reflectors) and the triggers of a kube-runtime applier: a pod event
//! wakes its controlling ReplicaSet (and the one that controlled it
//! before), an orphan's event wakes every ReplicaSet whose selector
//! matches it.

mod status;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{self, Action, ReconcileRequest, applier, trigger_with};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use super::Context;
use super::events::Severity;
use super::workload::expectations::{Expectations, Readiness};
use super::workload::owner::{self, Claim, Claimant};
use super::workload::pods;
use super::workload::runner::{Backoffs, drive};
use super::workload::{is_namespace_terminating, is_not_found};

/// Most pods created or deleted in one sync (upstream's `burstReplicas`).
const BURST: usize = 500;
/// Every ReplicaSet is looked at again at least this often.
const RESYNC: Duration = Duration::from_secs(5 * 60);

/// Why a ReplicaSet could not be synced (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pod cache went away: the controller is stopping.
    #[error("the pod cache is gone (the controller is stopping)")]
    CacheGone,
    /// A pod could not be adopted, released, created or deleted.
    #[error("replicaset {rs}: cannot {action} pod {pod}: {source}")]
    Pod {
        /// namespace/name of the ReplicaSet.
        rs: String,
        /// What was tried.
        action: &'static str,
        /// The pod (or the prefix of a new one).
        pod: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },
    /// The status could not be written.
    #[error("replicaset {rs}: cannot update its status: {source}")]
    Status {
        /// namespace/name of the ReplicaSet.
        rs: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },
    /// There is no pod template to create pods from.
    #[error("replicaset {rs} has no spec.template to create pods from; give it one")]
    NoTemplate {
        /// namespace/name of the ReplicaSet.
        rs: String,
    },
}

/// Tracks which ReplicaSet controls each pod, to wake the previous one when
/// a pod changes hands and to notice pods that vanished during a relist.
#[derive(Default)]
struct PodTracker {
    owners: HashMap<String, Option<Owner>>,
    relisting: Option<HashSet<String>>,
}

#[derive(Clone, PartialEq, Eq)]
struct Owner {
    namespace: String,
    name: String,
    uid: String,
}

impl Owner {
    fn of(pod: &Pod) -> Option<Owner> {
        owner::controller_of_kind::<ReplicaSet>(&pod.metadata).map(|r| Owner {
            namespace: pod.namespace().unwrap_or_default(),
            name: r.name.clone(),
            uid: r.uid.clone(),
        })
    }

    fn object_ref(&self) -> ObjectRef<ReplicaSet> {
        ObjectRef::new(&self.name).within(&self.namespace)
    }
}

struct State {
    ctx: Context,
    replicasets: Store<ReplicaSet>,
    pods: Store<Pod>,
    expectations: Expectations,
    backoffs: Backoffs,
    tracker: Mutex<PodTracker>,
}

/// Runs the replicaset controller until `stop`.
pub async fn run(ctx: Context, stop: CancellationToken) -> anyhow::Result<()> {
    let metrics = ctx.metrics.clone();
    let client = ctx.client.clone();
    let concurrency = ctx.config.concurrent_syncs;
    let (rs_store, rs_writer) = reflector::store::<ReplicaSet>();
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let state = Arc::new(State {
        ctx,
        replicasets: rs_store.clone(),
        pods: pod_store,
        expectations: Expectations::default(),
        backoffs: Backoffs::default(),
        tracker: Mutex::default(),
    });

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

    let results = applier(
        |rs, st| Box::pin(reconcile(rs, st)),
        error_policy,
        state,
        rs_store,
        futures::stream::select(rs_triggers, pod_triggers),
        controller::Config::default().concurrency(concurrency),
    );
    tracing::info!("replicaset controller started");
    drive("replicaset", &metrics, results, stop).await;
    Ok(())
}

fn error_policy(rs: Arc<ReplicaSet>, _e: &Error, st: Arc<State>) -> Action {
    Action::requeue(st.backoffs.failed(&rs.uid().unwrap_or_default()))
}

impl State {
    fn on_replicaset_event(
        &self,
        ev: watcher::Event<ReplicaSet>,
    ) -> Vec<ReconcileRequest<ReplicaSet>> {
        match ev {
            watcher::Event::Apply(rs) | watcher::Event::InitApply(rs) => {
                vec![ObjectRef::from_obj(&rs).into()]
            }
            watcher::Event::Delete(rs) => {
                let uid = rs.uid().unwrap_or_default();
                self.expectations.forget(&uid);
                self.backoffs.succeeded(&uid);
                Vec::new()
            }
            watcher::Event::Init | watcher::Event::InitDone => Vec::new(),
        }
    }

    /// ReplicaSets in the pod's namespace whose selector matches it.
    fn matching(&self, pod: &Pod) -> Vec<ObjectRef<ReplicaSet>> {
        let ns = pod.namespace().unwrap_or_default();
        let labels = pod.labels();
        self.replicasets
            .state()
            .iter()
            .filter(|rs| rs.namespace().as_deref() == Some(ns.as_str()))
            .filter(|rs| {
                rs.spec
                    .as_ref()
                    .and_then(|s| Selector::try_from(s.selector.clone()).ok())
                    .is_some_and(|sel| !sel.selects_all() && sel.matches(labels))
            })
            .map(|rs| ObjectRef::from_obj(rs.as_ref()))
            .collect()
    }

    fn on_pod_event(&self, ev: watcher::Event<Pod>) -> Vec<ReconcileRequest<ReplicaSet>> {
        let mut wake = Vec::new();
        let mut t = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
        match ev {
            watcher::Event::Init => t.relisting = Some(HashSet::new()),
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                let uid = pod.uid().unwrap_or_default();
                if let Some(seen) = t.relisting.as_mut() {
                    seen.insert(uid.clone());
                }
                let owner = Owner::of(&pod);
                let before = t.owners.insert(uid.clone(), owner.clone());
                if let Some(o) = &owner {
                    if before.is_none() {
                        self.expectations.creation_observed(&o.uid);
                    }
                    if pod.metadata.deletion_timestamp.is_some() {
                        self.expectations.deletion_observed(&o.uid, &uid);
                    }
                }
                if let Some(Some(prev)) = before
                    && Some(&prev) != owner.as_ref()
                {
                    wake.push(prev.object_ref());
                }
                match owner {
                    Some(o) => wake.push(o.object_ref()),
                    None => wake.extend(self.matching(&pod)),
                }
            }
            watcher::Event::Delete(pod) => {
                let uid = pod.uid().unwrap_or_default();
                t.owners.remove(&uid);
                if let Some(o) = Owner::of(&pod) {
                    self.expectations.deletion_observed(&o.uid, &uid);
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
                            self.expectations.deletion_observed(&o.uid, &uid);
                            wake.push(o.object_ref());
                        }
                    }
                }
            }
        }
        wake.into_iter().map(Into::into).collect()
    }
}

fn key(rs: &ReplicaSet) -> String {
    format!("{}/{}", rs.namespace().unwrap_or_default(), rs.name_any())
}

async fn reconcile(rs: Arc<ReplicaSet>, st: Arc<State>) -> Result<Action, Error> {
    st.pods
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheGone)?;
    let uid = rs.uid().unwrap_or_default();
    let ns = rs.namespace().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let selector = match Selector::try_from(spec.selector.clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(rs = %key(&rs), error = %e, "invalid selector; fix spec.selector");
            return Ok(Action::await_change());
        }
    };
    let in_ns: Vec<Arc<Pod>> = st
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .collect();
    let active: Vec<Arc<Pod>> = in_ns
        .iter()
        .filter(|p| pods::is_active(p))
        .cloned()
        .collect();
    let owned = claim_pods(&st, &rs, &selector, active).await?;

    let by_uid: HashMap<String, &Arc<Pod>> = in_ns
        .iter()
        .map(|p| (p.uid().unwrap_or_default(), p))
        .collect();
    let readiness = st.expectations.readiness(&uid, |pod_uid| {
        by_uid
            .get(pod_uid)
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
    });
    let managed = if readiness == Readiness::Satisfied && rs.metadata.deletion_timestamp.is_none() {
        manage_replicas(&st, &rs, &owned).await
    } else {
        Ok(())
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let refs: Vec<&Pod> = owned.iter().map(|p| p.as_ref()).collect();
    let failure = managed.as_ref().err().map(|e| e.to_string());
    let new_status = status::calculate(&rs, &refs, failure.as_deref(), now);
    update_status(&st, &rs, new_status).await?;
    managed?;
    st.backoffs.succeeded(&uid);

    let mut next = RESYNC;
    if let Readiness::Waiting(d) = readiness {
        next = next.min(d);
    }
    if let Some(d) = pods::next_available_in(refs, spec.min_ready_seconds.unwrap_or(0), now) {
        next = next.min(d);
    }
    Ok(Action::requeue(next))
}

/// Upstream's `ClaimPods`: the active pods this ReplicaSet controls after
/// adopting and releasing.
async fn claim_pods(
    st: &State,
    rs: &ReplicaSet,
    selector: &Selector,
    active: Vec<Arc<Pod>>,
) -> Result<Vec<Arc<Pod>>, Error> {
    let uid = rs.uid().unwrap_or_default();
    let ns = rs.namespace().unwrap_or_default();
    let claimant = Claimant {
        uid: &uid,
        namespace: &ns,
        deleting: rs.metadata.deletion_timestamp.is_some(),
        selector,
    };
    let api: Api<Pod> = Api::namespaced(st.ctx.client.clone(), &ns);
    let mut owned = Vec::new();
    let mut may_adopt: Option<bool> = None;
    for pod in active {
        let pod_uid = pod.uid().unwrap_or_default();
        let name = pod.name_any();
        let fail = |action, source| Error::Pod {
            rs: key(rs),
            action,
            pod: name.clone(),
            source,
        };
        match owner::claim(claimant, &pod.metadata) {
            Claim::Keep => owned.push(pod),
            Claim::Ignore => {}
            Claim::Adopt => {
                if may_adopt.is_none() {
                    may_adopt = Some(still_current(st, rs).await);
                }
                if may_adopt != Some(true) {
                    continue;
                }
                let patch = owner::adopt_patch(&owner::controller_ref(rs), &pod_uid);
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await
                {
                    Ok(p) => owned.push(Arc::new(p)),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(fail("adopt", e)),
                }
            }
            Claim::Release => {
                let patch = owner::release_patch(&uid, &pod_uid);
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) || super::workload::api_code(&e) == Some(422) => {}
                    Err(e) => return Err(fail("release", e)),
                }
            }
        }
    }
    Ok(owned)
}

/// Before adopting, a fresh read shows the ReplicaSet is still the same one
/// and not being deleted (upstream's `RecheckDeletionTimestamp`).
async fn still_current(st: &State, rs: &ReplicaSet) -> bool {
    let api: Api<ReplicaSet> =
        Api::namespaced(st.ctx.client.clone(), &rs.namespace().unwrap_or_default());
    match api.get_opt(&rs.name_any()).await {
        Ok(Some(fresh)) => fresh.uid() == rs.uid() && fresh.metadata.deletion_timestamp.is_none(),
        Ok(None) => false,
        Err(e) => {
            tracing::debug!(rs = %key(rs), error = %e, "cannot re-read the replicaset before adopting");
            false
        }
    }
}

/// Creates or deletes pods so that `owned` becomes `spec.replicas`.
async fn manage_replicas(st: &State, rs: &ReplicaSet, owned: &[Arc<Pod>]) -> Result<(), Error> {
    let spec = rs.spec.clone().unwrap_or_default();
    let want = spec.replicas.unwrap_or(1).max(0) as usize;
    let uid = rs.uid().unwrap_or_default();
    if owned.len() < want {
        let count = (want - owned.len()).min(BURST);
        let template = spec
            .template
            .as_ref()
            .ok_or_else(|| Error::NoTemplate { rs: key(rs) })?;
        st.expectations.expect_creations(&uid, count);
        let (created, result) = slow_start(count, || create_pod(st, rs, template)).await;
        if created < count {
            st.expectations.creations_skipped(&uid, count - created);
        }
        return result;
    }
    if owned.len() > want {
        let count = (owned.len() - want).min(BURST);
        let mine: Vec<&Pod> = owned.iter().map(|p| p.as_ref()).collect();
        let family = related_pods(st, rs);
        let family: Vec<&Pod> = family.iter().map(|p| p.as_ref()).collect();
        let doomed = pods::to_delete(&mine, &family, count);
        st.expectations
            .expect_deletions(&uid, doomed.iter().map(|p| p.uid().unwrap_or_default()));
        let results = futures::future::join_all(doomed.iter().map(|p| delete_pod(st, rs, p))).await;
        return results.into_iter().find(Result::is_err).unwrap_or(Ok(()));
    }
    Ok(())
}

/// Active pods of every ReplicaSet with the same controller as `rs` (its
/// Deployment's family), or of `rs` alone.
fn related_pods(st: &State, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
    let ns = rs.namespace().unwrap_or_default();
    let mut family: HashSet<String> = HashSet::from([rs.uid().unwrap_or_default()]);
    if let Some(parent) = owner::controller_of(&rs.metadata) {
        family.extend(
            st.replicasets
                .state()
                .iter()
                .filter(|r| r.namespace().as_deref() == Some(ns.as_str()))
                .filter(|r| owner::controller_of(&r.metadata).is_some_and(|c| c.uid == parent.uid))
                .filter_map(|r| r.uid()),
        );
    }
    st.pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && pods::is_active(p))
        .filter(|p| owner::controller_of(&p.metadata).is_some_and(|c| family.contains(&c.uid)))
        .collect()
}

/// Runs `count` calls of `op` in batches of 1, 2, 4, ...; a batch with a
/// failure ends it. The number of successes, and the first failure.
async fn slow_start<F, Fut>(count: usize, op: F) -> (usize, Result<(), Error>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let mut done = 0;
    let mut batch = count.min(1);
    let mut remaining = count;
    while batch > 0 {
        let results = futures::future::join_all((0..batch).map(|_| op())).await;
        done += results.iter().filter(|r| r.is_ok()).count();
        if let Some(e) = results.into_iter().find(Result::is_err) {
            return (done, e);
        }
        remaining -= batch;
        batch = (batch * 2).min(remaining);
    }
    (done, Ok(()))
}

async fn create_pod(
    st: &State,
    rs: &ReplicaSet,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
) -> Result<(), Error> {
    let ns = rs.namespace().unwrap_or_default();
    let pod = pods::from_template(template, &ns, &rs.name_any(), owner::controller_ref(rs));
    let api: Api<Pod> = Api::namespaced(st.ctx.client.clone(), &ns);
    match api.create(&PostParams::default(), &pod).await {
        Ok(p) => {
            st.ctx.events.record(
                rs,
                Severity::Normal,
                "SuccessfulCreate",
                format!("Created pod: {}", p.name_any()),
            );
            Ok(())
        }
        // Nothing can be created in a namespace being deleted; not a failure.
        Err(e) if is_namespace_terminating(&e) => Ok(()),
        Err(e) => {
            st.ctx.events.record(
                rs,
                Severity::Warning,
                "FailedCreate",
                format!("Error creating: {e}"),
            );
            Err(Error::Pod {
                rs: key(rs),
                action: "create",
                pod: format!("{}-", rs.name_any()),
                source: e,
            })
        }
    }
}

async fn delete_pod(st: &State, rs: &ReplicaSet, pod: &Pod) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(st.ctx.client.clone(), &rs.namespace().unwrap_or_default());
    let name = pod.name_any();
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            st.ctx.events.record(
                rs,
                Severity::Normal,
                "SuccessfulDelete",
                format!("Deleted pod: {name}"),
            );
            Ok(())
        }
        Err(e) => {
            st.expectations.deletion_observed(
                &rs.uid().unwrap_or_default(),
                &pod.uid().unwrap_or_default(),
            );
            if is_not_found(&e) {
                return Ok(());
            }
            st.ctx.events.record(
                rs,
                Severity::Warning,
                "FailedDelete",
                format!("Error deleting: {e}"),
            );
            Err(Error::Pod {
                rs: key(rs),
                action: "delete",
                pod: name,
                source: e,
            })
        }
    }
}

/// Writes `new` as the status unless nothing changed; on a conflict reads
/// the ReplicaSet again and retries once (as upstream).
async fn update_status(
    st: &State,
    rs: &ReplicaSet,
    new: k8s_openapi::api::apps::v1::ReplicaSetStatus,
) -> Result<(), Error> {
    if rs.status.as_ref().is_some_and(|s| status::same(s, &new)) {
        return Ok(());
    }
    let api: Api<ReplicaSet> =
        Api::namespaced(st.ctx.client.clone(), &rs.namespace().unwrap_or_default());
    let mut current = rs.clone();
    for attempt in 0..2 {
        current.status = Some(new.clone());
        match api
            .replace_status(&current.name_any(), &PostParams::default(), &current)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) if attempt == 0 && super::workload::is_conflict(&e) => {
                current = match api.get_opt(&rs.name_any()).await {
                    Ok(Some(fresh)) if fresh.uid() == rs.uid() => fresh,
                    Ok(_) => return Ok(()),
                    Err(source) => {
                        return Err(Error::Status {
                            rs: key(rs),
                            source,
                        });
                    }
                };
            }
            Err(source) => {
                return Err(Error::Status {
                    rs: key(rs),
                    source,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn slow_start_doubles_batches_and_stops_at_a_failure() {
        let calls = AtomicUsize::new(0);
        let (done, r) = slow_start(10, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await;
        assert_eq!((done, calls.load(Ordering::SeqCst)), (10, 10));
        assert!(r.is_ok());

        // Batches 1, 2, 4: the fifth call fails, so the batch of 4 is the last.
        let calls = AtomicUsize::new(0);
        let (done, r) = slow_start(20, || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n == 4 {
                Err(Error::NoTemplate { rs: "x".into() })
            } else {
                Ok(())
            }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 7);
        assert_eq!(done, 6);
        assert!(r.is_err());
    }
}
