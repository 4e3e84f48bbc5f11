//! The garbage collector: objects go with their owners (ownerReferences,
//! by uid), as upstream's `GarbageCollector` does it.
//!
//! - An object all of whose owners are gone is deleted in the background
//!   (or with the propagation its own finalizers ask for). An owner
//!   reference to an object that exists under another uid counts as gone.
//!   Owners are looked up live (with a cache of uids known absent) before
//!   anything is deleted, so a lagging watch never deletes a live child.
//! - An object with some owners alive and others gone or waiting for their
//!   dependents loses the references to those.
//! - An owner deleted in the foreground (finalizer `foregroundDeletion`)
//!   has its dependents deleted (in the foreground themselves if they have
//!   dependents); once no dependent with `blockOwnerDeletion` is left the
//!   finalizer is removed and the API server deletes the owner.
//! - An owner deleted with orphaning (finalizer `orphan`) has the
//!   references to it removed from its dependents, then the finalizer.
//!
//! The kinds watched come from discovery (every resource that can be
//! listed, watched and deleted), else the kinds km apiserver serves;
//! owners of other kinds are resolved through discovery when met. Until
//! every kind has been listed once (or 30 s passed) nothing is collected.
//! Kinds added to the API after the start are picked up at the next start.

mod graph;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{
    DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::graph::{FOREGROUND, Graph, Node, ORPHAN, Work};
use super::Context;
use super::workload::kinds::{self, Kind, Resolver, UnknownKind};
use super::workload::{is_conflict, is_not_found};
use super::workqueue::WorkQueue;

/// How long to wait for every kind to be listed before collecting anyway.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the whole graph is checked again.
const RESCAN: Duration = Duration::from_secs(10 * 60);
/// Uids remembered as absent before the memory starts over.
const MAX_ABSENT: usize = 10_000;
/// Attempts of a read-modify-write that keeps meeting conflicts.
const WRITE_ATTEMPTS: usize = 5;

/// Why a work item failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{action} {kind} {object}: {source}")]
    Api {
        /// What was tried.
        action: &'static str,
        /// The object's resource.
        kind: String,
        /// namespace/name of the object.
        object: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },
    /// An owner's kind is served by no API (yet).
    #[error(transparent)]
    UnknownKind(#[from] UnknownKind),
    /// A write kept meeting concurrent changes.
    #[error("{kind} {object}: too many concurrent changes; will retry")]
    Contended {
        /// The object's resource.
        kind: String,
        /// namespace/name of the object.
        object: String,
    },
}

struct Gc {
    client: kube::Client,
    kinds: Vec<Kind>,
    resolver: Resolver,
    graph: Mutex<Graph>,
    queue: WorkQueue<Work>,
    absent: Mutex<HashSet<String>>,
}

/// Runs the garbage collector until `stop`.
pub async fn run(ctx: Context, stop: CancellationToken) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let kinds = kinds::discover_or_builtin(&client).await;
    tracing::info!(
        kinds = kinds.len(),
        "garbage collector watching {}",
        kinds
            .iter()
            .map(Kind::qualified)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let gc = Arc::new(Gc {
        resolver: Resolver::new(client.clone(), &kinds),
        client,
        kinds,
        graph: Mutex::default(),
        queue: WorkQueue::with_metrics(ctx.metrics.queue("garbagecollector")),
        absent: Mutex::default(),
    });

    let mut tasks = tokio::task::JoinSet::new();
    let (tx, rx) = mpsc::channel(1024);
    for (i, kind) in gc.kinds.iter().enumerate() {
        let api = kind.api(&gc.client, None);
        let tx = tx.clone();
        let name = kind.qualified();
        tasks.spawn(async move {
            let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
            let mut last_warning: Option<Instant> = None;
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(ev) => {
                        if tx.send((i, ev)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                            tracing::warn!(kind = %name, error = %e, "watch failed; retrying with backoff");
                            last_warning = Some(Instant::now());
                        }
                    }
                }
            }
        });
    }
    drop(tx);
    tasks.spawn(build_graph(gc.clone(), rx));
    for _ in 0..ctx.config.concurrent_syncs.max(1) {
        tasks.spawn(worker(gc.clone()));
    }
    stop.cancelled().await;
    tasks.shutdown().await;
    Ok(())
}

fn node_of(kind: usize, obj: &DynamicObject) -> Node {
    Node {
        kind,
        namespace: obj.namespace(),
        name: obj.name_any(),
        owners: obj.owner_references().to_vec(),
        deleting: obj.metadata.deletion_timestamp.is_some(),
        finalizers: obj.finalizers().to_vec(),
    }
}

/// Applies the watch events of every kind to the graph, in one task, and
/// queues the work they call for.
async fn build_graph(gc: Arc<Gc>, mut rx: mpsc::Receiver<(usize, watcher::Event<DynamicObject>)>) {
    let started = Instant::now();
    let mut listed: HashSet<usize> = HashSet::new();
    let mut relisting: Vec<Option<HashSet<String>>> = vec![None; gc.kinds.len()];
    let mut deadline = Box::pin(tokio::time::sleep(SYNC_TIMEOUT));
    let mut rescan = tokio::time::interval_at(tokio::time::Instant::now() + RESCAN, RESCAN);
    loop {
        let (kind, ev) = tokio::select! {
            got = rx.recv() => match got {
                Some(x) => x,
                None => return,
            },
            _ = &mut deadline, if !gc.graph().synced => {
                let missing: Vec<String> = (0..gc.kinds.len())
                    .filter(|i| !listed.contains(i))
                    .map(|i| gc.kinds[i].qualified())
                    .collect();
                tracing::warn!(unlisted = %missing.join(", "), "not every kind could be listed in {SYNC_TIMEOUT:?}; collecting garbage anyway");
                gc.start_collecting(started);
                continue;
            }
            _ = rescan.tick() => {
                let work = gc.graph().scan();
                for w in work {
                    gc.queue.add(w);
                }
                continue;
            }
        };
        let work = match ev {
            watcher::Event::Init => {
                relisting[kind] = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(obj) | watcher::Event::Apply(obj) => {
                let uid = obj.uid().unwrap_or_default();
                if let Some(seen) = relisting[kind].as_mut() {
                    seen.insert(uid.clone());
                }
                gc.graph().apply(&uid, node_of(kind, &obj))
            }
            watcher::Event::Delete(obj) => gc.graph().delete(&obj.uid().unwrap_or_default()),
            watcher::Event::InitDone => {
                let mut work = Vec::new();
                if let Some(seen) = relisting[kind].take() {
                    let mut g = gc.graph();
                    for uid in g.uids_of_kind(kind) {
                        if !seen.contains(&uid) {
                            work.extend(g.delete(&uid));
                        }
                    }
                }
                listed.insert(kind);
                if listed.len() == gc.kinds.len() && !gc.graph().synced {
                    gc.start_collecting(started);
                }
                work
            }
        };
        for w in work {
            gc.queue.add(w);
        }
    }
}

async fn worker(gc: Arc<Gc>) {
    loop {
        let item = gc.queue.next().await;
        let result = match &item {
            Work::AttemptToDelete(uid) => gc.attempt_to_delete(uid).await,
            Work::DeleteDependents(uid) => gc.delete_dependents(uid).await,
            Work::Orphan(uid) => gc.orphan_dependents(uid).await,
        };
        if let Err(e) = &result {
            tracing::warn!(work = ?item, error = %e, "garbage collection step failed; retrying with backoff");
        }
        gc.queue.done(item, result.is_ok());
    }
}

/// How an owner reference stands.
enum OwnerState {
    /// The owner exists and is not waiting for its dependents.
    Solid,
    /// The owner is gone (or exists under another uid).
    Dangling,
    /// The owner is being deleted in the foreground.
    Waiting,
}

impl Gc {
    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start_collecting(&self, started: Instant) {
        let work = {
            let mut g = self.graph();
            g.synced = true;
            g.scan()
        };
        tracing::info!(after = ?started.elapsed(), work = work.len(), "garbage collector synced; collecting");
        for w in work {
            self.queue.add(w);
        }
    }

    fn fail(&self, action: &'static str, kind: &Kind, node: &Node, source: kube::Error) -> Error {
        Error::Api {
            action,
            kind: kind.qualified(),
            object: object_name(node),
            source,
        }
    }

    /// Upstream's `attemptToDeleteItem`.
    async fn attempt_to_delete(&self, uid: &str) -> Result<(), Error> {
        let Some(node) = self.graph().get(uid).cloned() else {
            return Ok(());
        };
        if node.deleting_dependents() {
            return self.delete_dependents(uid).await;
        }
        if node.deleting {
            return Ok(());
        }
        let kind = &self.kinds[node.kind];
        let api = kind.api(&self.client, node.namespace.as_deref());
        let latest = match api.get_opt(&node.name).await {
            Ok(Some(o)) if o.uid().as_deref() == Some(uid) => o,
            Ok(_) => return Ok(()),
            Err(e) => return Err(self.fail("read", kind, &node, e)),
        };
        let owners = latest.owner_references().to_vec();
        if owners.is_empty() {
            return Ok(());
        }
        let mut solid = Vec::new();
        let mut dropped = Vec::new();
        let mut waiting = Vec::new();
        for r in &owners {
            match self.owner_state(r, node.namespace.as_deref()).await? {
                OwnerState::Solid => solid.push(r.uid.clone()),
                OwnerState::Dangling => dropped.push(r.uid.clone()),
                OwnerState::Waiting => waiting.push(r.uid.clone()),
            }
        }
        if !solid.is_empty() {
            dropped.extend(waiting);
            if dropped.is_empty() {
                return Ok(());
            }
            tracing::debug!(object = %object_name(&node), owners = ?dropped, "removing references to owners that are gone or going");
            return self
                .edit_owner_refs(kind, &node, uid, |refs| {
                    refs.retain(|r| !dropped.contains(&r.uid))
                })
                .await;
        }
        let has_dependents = !self.graph().dependents(uid).is_empty();
        if !waiting.is_empty() && has_dependents {
            let cycle = self
                .graph()
                .dependents(uid)
                .iter()
                .any(|(_, d)| d.deleting_dependents());
            if cycle {
                // A dependent waits for this object while this object's
                // owner waits for it: stop blocking the owner.
                self.edit_owner_refs(kind, &node, uid, |refs| {
                    for r in refs.iter_mut() {
                        if r.block_owner_deletion == Some(true) {
                            r.block_owner_deletion = Some(false);
                        }
                    }
                })
                .await?;
            }
            return self
                .delete(kind, &node, uid, PropagationPolicy::Foreground)
                .await;
        }
        let policy = if latest.finalizers().iter().any(|f| f == ORPHAN) {
            PropagationPolicy::Orphan
        } else if latest.finalizers().iter().any(|f| f == FOREGROUND) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        tracing::debug!(object = %object_name(&node), "deleting an object whose owners are all gone");
        self.delete(kind, &node, uid, policy).await
    }

    /// Looks the owner up live (upstream's `isDangling`).
    async fn owner_state(
        &self,
        r: &OwnerReference,
        namespace: Option<&str>,
    ) -> Result<OwnerState, Error> {
        if self
            .absent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&r.uid)
        {
            return Ok(OwnerState::Dangling);
        }
        let kind = self.resolver.resolve(&r.api_version, &r.kind).await?;
        if kind.namespaced && namespace.is_none() {
            tracing::warn!(owner = %r.name, kind = %r.kind, "a cluster-scoped object names a namespaced owner, which cannot exist; treating it as gone");
            return Ok(OwnerState::Dangling);
        }
        let api = kind.api(&self.client, namespace);
        let found = api.get_opt(&r.name).await.map_err(|source| Error::Api {
            action: "read owner",
            kind: kind.qualified(),
            object: format!("{}/{}", namespace.unwrap_or(""), r.name),
            source,
        })?;
        match found {
            Some(o) if o.uid().as_deref() == Some(r.uid.as_str()) => {
                if o.metadata.deletion_timestamp.is_some()
                    && o.finalizers().iter().any(|f| f == FOREGROUND)
                {
                    Ok(OwnerState::Waiting)
                } else {
                    Ok(OwnerState::Solid)
                }
            }
            _ => {
                let mut absent = self.absent.lock().unwrap_or_else(|p| p.into_inner());
                if absent.len() >= MAX_ABSENT {
                    absent.clear();
                }
                absent.insert(r.uid.clone());
                Ok(OwnerState::Dangling)
            }
        }
    }

    async fn delete(
        &self,
        kind: &Kind,
        node: &Node,
        uid: &str,
        policy: PropagationPolicy,
    ) -> Result<(), Error> {
        let params = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match kind
            .api(&self.client, node.namespace.as_deref())
            .delete(&node.name, &params)
            .await
        {
            Ok(_) => Ok(()),
            // Gone already, or replaced by another object of the same name.
            Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
            Err(e) => Err(self.fail("delete", kind, node, e)),
        }
    }

    /// Rewrites the ownerReferences of the object `uid` (a merge patch
    /// guarded by its resourceVersion, retried on conflicts).
    async fn edit_owner_refs(
        &self,
        kind: &Kind,
        node: &Node,
        uid: &str,
        edit: impl Fn(&mut Vec<OwnerReference>),
    ) -> Result<(), Error> {
        let api = kind.api(&self.client, node.namespace.as_deref());
        for _ in 0..WRITE_ATTEMPTS {
            let obj = match api.get_opt(&node.name).await {
                Ok(Some(o)) if o.uid().as_deref() == Some(uid) => o,
                Ok(_) => return Ok(()),
                Err(e) => return Err(self.fail("read", kind, node, e)),
            };
            let before = obj.owner_references().to_vec();
            let mut refs = before.clone();
            edit(&mut refs);
            if refs == before {
                return Ok(());
            }
            let refs = if refs.is_empty() {
                json!(null)
            } else {
                json!(refs)
            };
            let patch = json!({"metadata": {
                "ownerReferences": refs,
                "resourceVersion": obj.metadata.resource_version,
                "uid": uid,
            }});
            match api
                .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(self.fail("update ownerReferences of", kind, node, e)),
            }
        }
        Err(Error::Contended {
            kind: kind.qualified(),
            object: object_name(node),
        })
    }

    /// Removes `finalizer` from the object `uid` (retried on conflicts).
    async fn remove_finalizer(&self, uid: &str, node: &Node, finalizer: &str) -> Result<(), Error> {
        let kind = &self.kinds[node.kind];
        let api = kind.api(&self.client, node.namespace.as_deref());
        for _ in 0..WRITE_ATTEMPTS {
            let obj = match api.get_opt(&node.name).await {
                Ok(Some(o)) if o.uid().as_deref() == Some(uid) => o,
                Ok(_) => return Ok(()),
                Err(e) => return Err(self.fail("read", kind, node, e)),
            };
            if !obj.finalizers().iter().any(|f| f == finalizer) {
                return Ok(());
            }
            let rest: Vec<&String> = obj
                .finalizers()
                .iter()
                .filter(|f| *f != finalizer)
                .collect();
            let rest = if rest.is_empty() {
                json!(null)
            } else {
                json!(rest)
            };
            let patch = json!({"metadata": {
                "finalizers": rest,
                "resourceVersion": obj.metadata.resource_version,
            }});
            match api
                .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::debug!(object = %object_name(node), finalizer, "removed the finalizer");
                    return Ok(());
                }
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(self.fail("remove a finalizer of", kind, node, e)),
            }
        }
        Err(Error::Contended {
            kind: kind.qualified(),
            object: object_name(node),
        })
    }

    /// Upstream's `processDeletingDependentsItem`.
    async fn delete_dependents(&self, uid: &str) -> Result<(), Error> {
        let (node, blocking) = {
            let g = self.graph();
            let Some(node) = g.get(uid).cloned() else {
                return Ok(());
            };
            (node, g.blocking_dependents(uid))
        };
        if !node.deleting_dependents() {
            return Ok(());
        }
        if blocking.is_empty() {
            return self.remove_finalizer(uid, &node, FOREGROUND).await;
        }
        let g = self.graph();
        for dep in blocking {
            if g.get(&dep).is_some_and(|d| !d.deleting_dependents()) {
                self.queue.add(Work::AttemptToDelete(dep));
            }
        }
        Ok(())
    }

    /// Upstream's `orphanDependents` and the removal of `orphan`.
    async fn orphan_dependents(&self, uid: &str) -> Result<(), Error> {
        let (node, dependents) = {
            let g = self.graph();
            let Some(node) = g.get(uid).cloned() else {
                return Ok(());
            };
            let deps: Vec<(String, Node)> = g
                .dependents(uid)
                .into_iter()
                .map(|(u, n)| (u, n.clone()))
                .collect();
            (node, deps)
        };
        if !node.orphaning() {
            return Ok(());
        }
        for (dep_uid, dep) in &dependents {
            let kind = &self.kinds[dep.kind];
            self.edit_owner_refs(kind, dep, dep_uid, |refs| refs.retain(|r| r.uid != uid))
                .await?;
        }
        self.remove_finalizer(uid, &node, ORPHAN).await
    }
}

fn object_name(node: &Node) -> String {
    match &node.namespace {
        Some(ns) => format!("{ns}/{}", node.name),
        None => node.name.clone(),
    }
}
