//! One sync of one Deployment (upstream's `syncDeployment` and the
//! functions of its strategies), on a private copy of the Deployment and
//! its ReplicaSets that follows every write, so that later steps of the
//! same sync see what earlier ones did.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::Selector;
use kube::runtime::controller::Action;
use serde_json::json;

use super::progress::{self, PROGRESSING, reason};
use super::scale::{self, Which};
use super::util::{self, Strategy, replicas, rs_actual, rs_available, rs_replicas};
use super::{Error, RESYNC, State, key};
use crate::controller::events::Severity;
use crate::controller::workload::owner::{self, Claim, Claimant};
use crate::controller::workload::{is_already_exists, is_namespace_terminating, is_not_found};

/// Syncs `d` once; the action says when to look again.
pub(super) async fn sync_deployment(st: &State, d: Deployment) -> Result<Action, Error> {
    let spec = d.spec.clone().unwrap_or_default();
    let sel = &spec.selector;
    let selects_all = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty());
    let mut s = Sync {
        st,
        d,
        rss: Vec::new(),
        now: progress::now(),
        recheck: None,
    };
    if selects_all {
        st.ctx.events.record(
            &s.d,
            Severity::Warning,
            "SelectingAll",
            "This deployment is selecting all pods. A non-empty selector is required.".into(),
        );
        let observed = s.d.status.as_ref().and_then(|st| st.observed_generation);
        if observed.unwrap_or(0) < s.d.metadata.generation.unwrap_or(0) {
            let mut status = s.d.status.clone().unwrap_or_default();
            status.observed_generation = s.d.metadata.generation;
            s.write_status(status).await?;
        }
        return Ok(Action::await_change());
    }
    let selector = match Selector::try_from(sel.clone()) {
        Ok(sel) => sel,
        Err(e) => {
            tracing::warn!(deployment = %key(&s.d), error = %e, "invalid selector; fix spec.selector");
            return Ok(Action::await_change());
        }
    };
    s.rss = claim_replicasets(st, &s.d, &selector).await?;
    if s.d.metadata.deletion_timestamp.is_some() {
        s.status_only().await?;
        return Ok(Action::requeue(RESYNC));
    }
    s.check_paused_conditions().await?;
    if spec.paused == Some(true) || s.is_scaling_event().await? {
        s.sync().await?;
    } else {
        match util::strategy(&s.d) {
            Strategy::Recreate => s.rollout_recreate(&selector).await?,
            Strategy::RollingUpdate { .. } => s.rollout_rolling().await?,
        }
    }
    Ok(Action::requeue(s.recheck.unwrap_or(RESYNC).min(RESYNC)))
}

/// Upstream's `ClaimReplicaSets`: the ReplicaSets this Deployment controls
/// after adopting and releasing.
async fn claim_replicasets(
    st: &State,
    d: &Deployment,
    selector: &Selector,
) -> Result<Vec<ReplicaSet>, Error> {
    let uid = d.uid().unwrap_or_default();
    let ns = d.namespace().unwrap_or_default();
    let claimant = Claimant {
        uid: &uid,
        namespace: &ns,
        deleting: d.metadata.deletion_timestamp.is_some(),
        selector,
    };
    let api: Api<ReplicaSet> = Api::namespaced(st.ctx.client.clone(), &ns);
    let mut owned = Vec::new();
    let mut may_adopt: Option<bool> = None;
    let candidates: Vec<_> = st
        .replicasets
        .state()
        .into_iter()
        .filter(|rs| rs.namespace().as_deref() == Some(ns.as_str()))
        .collect();
    for rs in candidates {
        let name = rs.name_any();
        let fail = |action: &str, source| Error::Api {
            deployment: key(d),
            action: format!("{action} replicaset {name}"),
            source,
        };
        match owner::claim(claimant, &rs.metadata) {
            Claim::Keep => owned.push((*rs).clone()),
            Claim::Ignore => {}
            Claim::Adopt => {
                if may_adopt.is_none() {
                    let fresh = Api::<Deployment>::namespaced(st.ctx.client.clone(), &ns)
                        .get_opt(&d.name_any())
                        .await;
                    may_adopt = Some(
                        matches!(fresh, Ok(Some(f)) if f.uid() == d.uid() && f.metadata.deletion_timestamp.is_none()),
                    );
                }
                if may_adopt != Some(true) {
                    continue;
                }
                let patch =
                    owner::adopt_patch(&owner::controller_ref(d), &rs.uid().unwrap_or_default());
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await
                {
                    Ok(adopted) => owned.push(adopted),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(fail("adopt", e)),
                }
            }
            Claim::Release => {
                let patch = owner::release_patch(&uid, &rs.uid().unwrap_or_default());
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(e)
                        if is_not_found(&e)
                            || crate::controller::workload::api_code(&e) == Some(422) => {}
                    Err(e) => return Err(fail("release", e)),
                }
            }
        }
    }
    Ok(owned)
}

struct Sync<'a> {
    st: &'a State,
    d: Deployment,
    rss: Vec<ReplicaSet>,
    now: Timestamp,
    recheck: Option<Duration>,
}

impl Sync<'_> {
    fn ns(&self) -> String {
        self.d.namespace().unwrap_or_default()
    }

    fn rs_api(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.st.ctx.client.clone(), &self.ns())
    }

    fn d_api(&self) -> Api<Deployment> {
        Api::namespaced(self.st.ctx.client.clone(), &self.ns())
    }

    fn fail(&self, action: impl Into<String>, source: kube::Error) -> Error {
        Error::Api {
            deployment: key(&self.d),
            action: action.into(),
            source,
        }
    }

    fn template(&self) -> k8s_openapi::api::core::v1::PodTemplateSpec {
        self.d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default()
    }

    /// The new ReplicaSet (the oldest whose template is the Deployment's)
    /// and the others, from the current copies.
    fn family(&self) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
        let template = self.template();
        let mut sorted = self.rss.clone();
        sorted.sort_by(util::by_creation);
        let new = sorted
            .iter()
            .find(|rs| {
                rs.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| util::equal_ignore_hash(t, &template))
            })
            .cloned();
        let new_uid = new.as_ref().and_then(|n| n.metadata.uid.clone());
        let old = self
            .rss
            .iter()
            .filter(|rs| new_uid.is_none() || rs.metadata.uid != new_uid)
            .cloned()
            .collect();
        (new, old)
    }

    fn current(&self, rs: &ReplicaSet) -> ReplicaSet {
        self.rss
            .iter()
            .find(|r| r.metadata.uid == rs.metadata.uid)
            .cloned()
            .unwrap_or_else(|| rs.clone())
    }

    fn remember(&mut self, rs: ReplicaSet) {
        match self
            .rss
            .iter_mut()
            .find(|r| r.metadata.uid == rs.metadata.uid)
        {
            Some(slot) => *slot = rs,
            None => self.rss.push(rs),
        }
    }

    async fn update_rs(&mut self, rs: ReplicaSet) -> Result<ReplicaSet, Error> {
        let name = rs.name_any();
        let updated = self
            .rs_api()
            .replace(&name, &PostParams::default(), &rs)
            .await
            .map_err(|e| self.fail(format!("update replicaset {name}"), e))?;
        self.remember(updated.clone());
        Ok(updated)
    }

    async fn write_status(&mut self, status: DeploymentStatus) -> Result<(), Error> {
        let mut obj = self.d.clone();
        obj.status = Some(status);
        match self
            .d_api()
            .replace_status(&obj.name_any(), &PostParams::default(), &obj)
            .await
        {
            Ok(d) => {
                self.d = d;
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.fail("update its status", e)),
        }
    }

    /// Sets the Deployment's revision annotation (a metadata patch, guarded
    /// by its resourceVersion).
    async fn set_revision(&mut self, revision: &str) -> Result<(), Error> {
        let current = self
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(util::REVISION));
        if current.map(String::as_str) == Some(revision) {
            return Ok(());
        }
        let patch = json!({"metadata": {
            "annotations": {util::REVISION: revision},
            "resourceVersion": self.d.metadata.resource_version,
        }});
        let d = self
            .d_api()
            .patch(
                &self.d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| self.fail("set its revision annotation", e))?;
        self.d = d;
        Ok(())
    }

    /// Upstream's `getAllReplicaSetsAndSyncRevision`: brings the new
    /// ReplicaSet's annotations and the Deployment's revision up to date,
    /// creating the new ReplicaSet when `create` and there is none.
    async fn new_and_old(
        &mut self,
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), Error> {
        let (existing, old) = self.family();
        let new_revision = util::max_revision(&old) + 1;
        let deadline = progress::progress_deadline(&self.d).is_some();
        let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        if let Some(existing) = existing {
            let mut copy = existing.clone();
            let changed = util::set_new_rs_annotations(&self.d, &mut copy, new_revision, true);
            let spec = copy.spec.get_or_insert_with(ReplicaSetSpec::default);
            if changed || spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0) {
                spec.min_ready_seconds = min_ready;
                let updated = self.update_rs(copy).await?;
                return Ok((Some(updated), old));
            }
            let revision = copy
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(util::REVISION))
                .cloned()
                .unwrap_or_default();
            self.set_revision(&revision).await?;
            let mut status = self.d.status.clone().unwrap_or_default();
            if deadline && progress::get(&status, PROGRESSING).is_none() {
                progress::set(
                    &mut status,
                    progress::condition(
                        PROGRESSING,
                        "True",
                        reason::FOUND_NEW_RS,
                        format!("Found new replica set {:?}", copy.name_any()),
                        self.now,
                    ),
                );
                self.write_status(status).await?;
            }
            return Ok((Some(copy), old));
        }
        if !create {
            return Ok((None, old));
        }

        let d = self.d.clone();
        let spec = d.spec.clone().unwrap_or_default();
        let collisions = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = util::template_hash(&spec.template, collisions);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(util::HASH_LABEL.to_string(), hash.clone());
        let mut selector: LabelSelector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(util::HASH_LABEL.to_string(), hash.clone());
        let name = format!("{}-{hash}", d.name_any());
        let all_replicas: i32 = old.iter().map(rs_replicas).sum();
        let count = scale::new_rs_replicas(&d, all_replicas, 0);
        let mut new_rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.ns()),
                owner_references: Some(vec![owner::controller_ref(&d)]),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(count),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        util::set_new_rs_annotations(&d, &mut new_rs, new_revision, false);
        let (created, existed) = match self.rs_api().create(&PostParams::default(), &new_rs).await {
            Ok(rs) => (rs, false),
            Err(e) if is_already_exists(&e) => {
                let found = self
                    .rs_api()
                    .get_opt(&name)
                    .await
                    .map_err(|e| self.fail(format!("read replicaset {name}"), e))?;
                match found {
                    Some(rs)
                        if owner::controller_of(&rs.metadata)
                            .is_some_and(|c| Some(&c.uid) == d.metadata.uid.as_ref())
                            && rs
                                .spec
                                .as_ref()
                                .and_then(|s| s.template.as_ref())
                                .is_some_and(|t| util::equal_ignore_hash(t, &spec.template)) =>
                    {
                        (rs, true)
                    }
                    _ => {
                        let mut status = d.status.clone().unwrap_or_default();
                        status.collision_count = Some(collisions.unwrap_or(0) + 1);
                        self.write_status(status).await?;
                        return Err(Error::HashCollision {
                            deployment: key(&d),
                            name,
                        });
                    }
                }
            }
            Err(e) if is_namespace_terminating(&e) => {
                return Err(self.fail(format!("create replicaset {name}"), e));
            }
            Err(e) => {
                let msg = format!("Failed to create new replica set {name:?}: {e}");
                if deadline {
                    let mut status = d.status.clone().unwrap_or_default();
                    progress::set(
                        &mut status,
                        progress::condition(
                            PROGRESSING,
                            "False",
                            reason::FAILED_RS_CREATE,
                            msg.clone(),
                            self.now,
                        ),
                    );
                    // The create failure is what gets reported.
                    let _ = self.write_status(status).await;
                }
                self.st
                    .ctx
                    .events
                    .record(&d, Severity::Warning, reason::FAILED_RS_CREATE, msg);
                return Err(self.fail(format!("create replicaset {name}"), e));
            }
        };
        if !existed && count > 0 {
            self.st.ctx.events.record(
                &d,
                Severity::Normal,
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {count}"),
            );
        }
        self.remember(created.clone());
        self.set_revision(&new_revision.to_string()).await?;
        if !existed && deadline {
            let mut status = self.d.status.clone().unwrap_or_default();
            progress::set(
                &mut status,
                progress::condition(
                    PROGRESSING,
                    "True",
                    reason::NEW_RS_CREATED,
                    format!("Created new replica set {name:?}"),
                    self.now,
                ),
            );
            self.write_status(status).await?;
        }
        Ok((Some(created), old))
    }

    /// Sets the size of `rs` (and its replicas annotations); whether the
    /// size changed.
    async fn scale_rs(&mut self, rs: &ReplicaSet, size: i32, op: &str) -> Result<bool, Error> {
        let rs = self.current(rs);
        let before = rs_replicas(&rs);
        let resize = before != size;
        let mut copy = rs.clone();
        let want = replicas(&self.d);
        let annotate =
            util::set_replicas_annotations(&mut copy, want, want + util::max_surge(&self.d));
        if !resize && !annotate {
            return Ok(false);
        }
        copy.spec
            .get_or_insert_with(ReplicaSetSpec::default)
            .replicas = Some(size);
        self.update_rs(copy).await?;
        if resize {
            self.st.ctx.events.record(
                &self.d,
                Severity::Normal,
                "ScalingReplicaSet",
                format!(
                    "Scaled {op} replica set {} from {before} to {size}",
                    rs.name_any()
                ),
            );
        }
        Ok(resize)
    }

    /// [`Sync::scale_rs`] when the size differs.
    async fn resize(&mut self, rs: &ReplicaSet, size: i32) -> Result<bool, Error> {
        let before = rs_replicas(&self.current(rs));
        if before == size {
            return Ok(false);
        }
        let op = if before < size { "up" } else { "down" };
        self.scale_rs(rs, size, op).await
    }

    /// Upstream's `isScalingEvent`: an active ReplicaSet was last sized for
    /// another number of replicas.
    async fn is_scaling_event(&mut self) -> Result<bool, Error> {
        let (new, old) = self.new_and_old(false).await?;
        let want = replicas(&self.d);
        Ok(new.iter().chain(old.iter()).any(|rs| {
            rs_replicas(rs) > 0
                && util::desired_replicas_annotation(rs).is_some_and(|desired| desired != want)
        }))
    }

    /// Upstream's `scale`: fits the ReplicaSets to a new size.
    async fn scale(&mut self, new: Option<ReplicaSet>, old: Vec<ReplicaSet>) -> Result<(), Error> {
        let want = replicas(&self.d);
        if let Some(which) = scale::active_or_latest(new.as_ref(), &old) {
            let rs = match which {
                Which::New => new.clone(),
                Which::Old(i) => old.get(i).cloned(),
            };
            if let Some(rs) = rs
                && rs_replicas(&rs) != want
            {
                self.resize(&rs, want).await?;
            }
            return Ok(());
        }
        if scale::is_saturated(&self.d, new.as_ref()) {
            for rs in old.iter().filter(|rs| rs_replicas(rs) > 0) {
                self.resize(rs, 0).await?;
            }
            return Ok(());
        }
        if matches!(util::strategy(&self.d), Strategy::RollingUpdate { .. }) {
            let active: Vec<ReplicaSet> = old
                .iter()
                .chain(new.iter())
                .filter(|rs| rs_replicas(rs) > 0)
                .cloned()
                .collect();
            let (sizes, op) = scale::proportional(&self.d, &active);
            for (i, size) in sizes {
                self.scale_rs(&active[i], size, op).await?;
            }
        }
        Ok(())
    }

    /// Upstream's `sync`: resizing (and history cleanup while paused).
    async fn sync(&mut self) -> Result<(), Error> {
        let (new, old) = self.new_and_old(false).await?;
        self.scale(new, old.clone()).await?;
        if self.d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
            self.cleanup(&old).await?;
        }
        self.sync_status().await
    }

    async fn status_only(&mut self) -> Result<(), Error> {
        self.new_and_old(false).await?;
        self.sync_status().await
    }

    /// Upstream's `syncDeploymentStatus`.
    async fn sync_status(&mut self) -> Result<(), Error> {
        let (new, old) = self.family();
        let all: Vec<&ReplicaSet> = old.iter().chain(new.iter()).collect();
        let status = progress::calculate(&self.d, &all, new.as_ref(), self.now);
        if self
            .d
            .status
            .as_ref()
            .is_some_and(|s| progress::same(s, &status))
        {
            return Ok(());
        }
        self.write_status(status).await
    }

    /// Upstream's `syncRolloutStatus`.
    async fn sync_rollout_status(&mut self) -> Result<(), Error> {
        let (new, old) = self.family();
        let all: Vec<&ReplicaSet> = old.iter().chain(new.iter()).collect();
        let mut status = progress::calculate(&self.d, &all, new.as_ref(), self.now);
        progress::rollout_conditions(&self.d, &mut status, new.as_ref(), self.now);
        match progress::replica_failure(&all, new.as_ref()) {
            Some(c) => progress::set(&mut status, c),
            None => progress::remove(&mut status, progress::REPLICA_FAILURE),
        }
        self.recheck = progress::recheck_in(&self.d, &status, self.now);
        if self
            .d
            .status
            .as_ref()
            .is_some_and(|s| progress::same(s, &status))
        {
            return Ok(());
        }
        self.write_status(status).await
    }

    /// Upstream's `checkPausedConditions`.
    async fn check_paused_conditions(&mut self) -> Result<(), Error> {
        if progress::progress_deadline(&self.d).is_none() {
            return Ok(());
        }
        let mut status = self.d.status.clone().unwrap_or_default();
        let cond = progress::get(&status, PROGRESSING);
        if cond.and_then(|c| c.reason.as_deref()) == Some(reason::TIMED_OUT) {
            return Ok(());
        }
        let paused_cond = cond.and_then(|c| c.reason.as_deref()) == Some(reason::PAUSED);
        let paused = self.d.spec.as_ref().and_then(|s| s.paused) == Some(true);
        let c = match (paused, paused_cond) {
            (true, false) => progress::condition(
                PROGRESSING,
                "Unknown",
                reason::PAUSED,
                "Deployment is paused".into(),
                self.now,
            ),
            (false, true) => progress::condition(
                PROGRESSING,
                "Unknown",
                reason::RESUMED,
                "Deployment is resumed".into(),
                self.now,
            ),
            _ => return Ok(()),
        };
        progress::set(&mut status, c);
        self.write_status(status).await
    }

    /// Upstream's `rolloutRolling`.
    async fn rollout_rolling(&mut self) -> Result<(), Error> {
        let (new, old) = self.new_and_old(true).await?;
        let Some(new) = new else {
            return self.sync_rollout_status().await;
        };
        if self.reconcile_new(&new).await? {
            return self.sync_rollout_status().await;
        }
        let active_old: Vec<ReplicaSet> = old
            .iter()
            .filter(|rs| rs_replicas(rs) > 0)
            .cloned()
            .collect();
        if self.reconcile_old(&new, &active_old).await? {
            return self.sync_rollout_status().await;
        }
        if self
            .d
            .status
            .as_ref()
            .is_some_and(|s| progress::complete(&self.d, s))
        {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status().await
    }

    /// Upstream's `reconcileNewReplicaSet`: grows the new ReplicaSet within
    /// the surge (or shrinks it to `replicas`).
    async fn reconcile_new(&mut self, new: &ReplicaSet) -> Result<bool, Error> {
        let want = replicas(&self.d);
        let new = self.current(new);
        let size = rs_replicas(&new);
        if size == want {
            return Ok(false);
        }
        if size > want {
            return self.resize(&new, want).await;
        }
        let all: i32 = self.rss.iter().map(rs_replicas).sum();
        let target = scale::new_rs_replicas(&self.d, all, size);
        self.resize(&new, target).await
    }

    /// Upstream's `reconcileOldReplicaSets`: shrinks old ReplicaSets while
    /// enough pods stay available, unhealthy ones first.
    async fn reconcile_old(&mut self, new: &ReplicaSet, old: &[ReplicaSet]) -> Result<bool, Error> {
        let old_pods: i32 = old.iter().map(rs_replicas).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let new = self.current(new);
        let all_pods: i32 = old_pods + rs_replicas(&new);
        let min_available = replicas(&self.d) - util::max_unavailable(&self.d);
        let new_unavailable = rs_replicas(&new) - rs_available(&new);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let mut sorted = old.to_vec();
        sorted.sort_by(util::by_creation);
        let mut cleaned = 0;
        for rs in &sorted {
            if cleaned >= max_scaled_down {
                break;
            }
            let rs = self.current(rs);
            let unhealthy = rs_replicas(&rs) - rs_available(&rs);
            if rs_replicas(&rs) == 0 || unhealthy <= 0 {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(unhealthy);
            self.resize(&rs, rs_replicas(&rs) - down).await?;
            cleaned += down;
        }
        let scaled = self.scale_down_old_for_rolling(&new, &sorted).await?;
        Ok(cleaned + scaled > 0)
    }

    /// Upstream's `scaleDownOldReplicaSetsForRollingUpdate`.
    async fn scale_down_old_for_rolling(
        &mut self,
        new: &ReplicaSet,
        old_sorted: &[ReplicaSet],
    ) -> Result<i32, Error> {
        let min_available = replicas(&self.d) - util::max_unavailable(&self.d);
        let available: i32 = old_sorted
            .iter()
            .chain(std::iter::once(new))
            .map(|rs| rs_available(&self.current(rs)))
            .sum();
        if available <= min_available {
            return Ok(0);
        }
        let to_scale = available - min_available;
        let mut scaled = 0;
        for rs in old_sorted {
            if scaled >= to_scale {
                break;
            }
            let rs = self.current(rs);
            if rs_replicas(&rs) == 0 {
                continue;
            }
            let down = rs_replicas(&rs).min(to_scale - scaled);
            self.resize(&rs, rs_replicas(&rs) - down).await?;
            scaled += down;
        }
        Ok(scaled)
    }

    /// Upstream's `rolloutRecreate`: old ReplicaSets to 0, wait until their
    /// pods are gone, then the new ReplicaSet to `replicas`.
    async fn rollout_recreate(&mut self, selector: &Selector) -> Result<(), Error> {
        let (new, old) = self.new_and_old(false).await?;
        let mut scaled_down = false;
        for rs in old.iter().filter(|rs| rs_replicas(rs) > 0) {
            scaled_down |= self.resize(rs, 0).await?;
        }
        if scaled_down || self.old_pods_running(new.as_ref(), &old, selector) {
            return self.sync_rollout_status().await;
        }
        let new = match new {
            Some(n) => Some(n),
            None => self.new_and_old(true).await?.0,
        };
        if let Some(new) = new {
            let want = replicas(&self.d);
            self.resize(&new, want).await?;
        }
        if self
            .d
            .status
            .as_ref()
            .is_some_and(|s| progress::complete(&self.d, s))
        {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status().await
    }

    /// Pods of old ReplicaSets that are not finished (upstream's
    /// `oldPodsRunning`).
    fn old_pods_running(
        &self,
        new: Option<&ReplicaSet>,
        old: &[ReplicaSet],
        selector: &Selector,
    ) -> bool {
        use kube::core::SelectorExt;
        if old
            .iter()
            .map(|rs| rs_actual(&self.current(rs)))
            .sum::<i32>()
            > 0
        {
            return true;
        }
        let ns = self.ns();
        let new_uid = new.and_then(|n| n.metadata.uid.clone());
        let family: Vec<String> = self
            .rss
            .iter()
            .filter_map(|rs| rs.metadata.uid.clone())
            .collect();
        self.st.pods.state().iter().any(|p| {
            p.namespace().as_deref() == Some(ns.as_str())
                && selector.matches(p.labels())
                && owner::controller_of(&p.metadata)
                    .is_some_and(|c| family.contains(&c.uid) && Some(&c.uid) != new_uid.as_ref())
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Failed" | "Succeeded")
                )
        })
    }

    /// Upstream's `cleanupDeployment`: old ReplicaSets beyond
    /// `revisionHistoryLimit` that run nothing are deleted, lowest revision
    /// first.
    async fn cleanup(&mut self, old: &[ReplicaSet]) -> Result<(), Error> {
        let limit = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10);
        if limit == i32::MAX {
            return Ok(());
        }
        let mut cleanable: Vec<ReplicaSet> = old
            .iter()
            .map(|rs| self.current(rs))
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = cleanable.len() as i64 - i64::from(limit.max(0));
        if excess <= 0 {
            return Ok(());
        }
        cleanable.sort_by(util::by_revision);
        for rs in cleanable.iter().take(excess as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_actual(rs) != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            let name = rs.name_any();
            tracing::debug!(deployment = %key(&self.d), replicaset = %name, "deleting an old replica set beyond revisionHistoryLimit");
            match self.rs_api().delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(self.fail(format!("delete old replicaset {name}"), e)),
            }
            self.rss.retain(|r| r.metadata.uid != rs.metadata.uid);
        }
        Ok(())
    }
}
