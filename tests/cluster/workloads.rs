//! The workload controllers (replicaset, deployment, garbagecollector,
//! namespace) of `km controller-manager`, run in-process against an
//! in-process km apiserver. There is no scheduler and no kubelet: the test
//! plays the kubelet, marking every new Pending pod Running and Ready.
//! kubectl (the real one) drives rollouts and deletions where users would.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support;

/// Longest wait for a state the controllers should reach (a hang guard,
/// not a speed requirement).
const PATIENCE: Duration = Duration::from_secs(90);

/// Polls `$body` (an `Option`) until it is `Some`, and yields its value.
macro_rules! eventually {
    ($what:expr, $body:expr) => {{
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(v) = $body {
                break v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {}", $what);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }};
}

#[derive(clap::Parser)]
struct ControllerCli {
    #[command(flatten)]
    args: km::controller::Args,
}

/// An API server, the workload controllers and a pretend kubelet, all
/// stopped when dropped.
struct Cluster {
    _dir: tempfile::TempDir,
    stop: CancellationToken,
    kubeconfig: PathBuf,
    client: Client,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn cluster() -> Cluster {
    // Logs with RUST_LOG (e.g. RUST_LOG=km::controller=debug).
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (kubeconfig, client) = support::apiserver(dir.path(), stop.clone()).await;
    let args = <ControllerCli as clap::Parser>::parse_from([
        "km",
        "--controllers=replicaset,deployment,garbagecollector,namespace",
        "--leader-elect=false",
        "--port",
        "0",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ])
    .args;
    let s = stop.clone();
    tokio::spawn(async move {
        if let Err(e) = km::controller::run(args, s).await {
            panic!("controller-manager failed: {e:#}");
        }
    });
    tokio::spawn(kubelet(client.clone(), stop.clone()));
    Cluster {
        _dir: dir,
        stop,
        kubeconfig,
        client,
    }
}

/// A pod label that keeps the pretend kubelet away: the pod never starts.
const NEVER_READY: (&str, &str) = ("km.test/ready", "never");

/// Marks every Pending pod Running and Ready, as a kubelet would once its
/// containers started (but pods labelled [`NEVER_READY`]).
async fn kubelet(client: Client, stop: CancellationToken) {
    let all: Api<Pod> = Api::all(client.clone());
    let mut pods = watcher(all, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    loop {
        let pod = tokio::select! {
            _ = stop.cancelled() => return,
            p = pods.next() => match p {
                Some(Ok(p)) => p,
                Some(Err(_)) => continue,
                None => return,
            },
        };
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let held = pod.labels().get(NEVER_READY.0).map(String::as_str) == Some(NEVER_READY.1);
        if phase != Some("Pending") || pod.metadata.deletion_timestamp.is_some() || held {
            continue;
        }
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let status = json!({"status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        }});
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap());
        let _ = api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await;
    }
}

impl Cluster {
    fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    async fn kubectl(&self, args: &[&str]) -> Output {
        tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .await
            .expect("kubectl runs")
    }

    /// kubectl that must succeed; its stdout.
    async fn kubectl_ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args).await;
        assert!(
            o.status.success(),
            "kubectl {} failed ({}):\n{}{}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

fn container(image: &str) -> Value {
    json!({"name": "c", "image": image})
}

fn template(app: &str, image: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [container(image)], "terminationGracePeriodSeconds": 0},
    })
}

fn replicaset(name: &str, app: &str, replicas: i32) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": template(app, "km-test/busybox:1"),
        },
    }))
    .unwrap()
}

fn deployment(name: &str, replicas: i32, surge: Value, unavailable: Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
            "template": template(name, "km-test/busybox:1"),
        },
    }))
    .unwrap()
}

fn active(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Failed" | "Succeeded")) && p.metadata.deletion_timestamp.is_none()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn controller_uid(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

async fn pods_of(api: &Api<Pod>, app: &str) -> Vec<Pod> {
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

async fn active_ready_pods(api: &Api<Pod>, app: &str, owner: &str, n: usize) -> Option<Vec<Pod>> {
    let pods: Vec<Pod> = pods_of(api, app).await.into_iter().filter(active).collect();
    let ok = pods.len() == n
        && pods
            .iter()
            .all(|p| ready(p) && controller_uid(&p.metadata).as_deref() == Some(owner));
    ok.then_some(pods)
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

async fn rs_status_is(api: &Api<ReplicaSet>, name: &str, n: i32) -> Option<ReplicaSet> {
    let rs = api.get(name).await.ok()?;
    let s = rs.status.clone()?;
    let done = s.replicas == n
        && s.ready_replicas.unwrap_or(0) == n
        && s.available_replicas.unwrap_or(0) == n
        && s.fully_labeled_replicas.unwrap_or(0) == n
        && s.observed_generation == rs.metadata.generation;
    done.then_some(rs)
}

#[tokio::test]
async fn a_replicaset_keeps_its_pods() {
    let c = cluster().await;
    let rs_api: Api<ReplicaSet> = c.api("default");
    let pods: Api<Pod> = c.api("default");
    let rs = rs_api
        .create(&PostParams::default(), &replicaset("web", "rs-web", 3))
        .await
        .unwrap();
    let uid = rs.uid().unwrap();

    let three = eventually!(
        "3 ready pods of the replicaset",
        active_ready_pods(&pods, "rs-web", &uid, 3).await
    );
    for p in &three {
        assert!(p.name_any().starts_with("web-"), "{}", p.name_any());
        let r = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((r.kind.as_str(), r.name.as_str()), ("ReplicaSet", "web"));
        assert_eq!(r.block_owner_deletion, Some(true));
    }
    eventually!("status of 3", rs_status_is(&rs_api, "web", 3).await);

    let scale = |n: i32| json!({"spec": {"replicas": n}});
    rs_api
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(&scale(5)))
        .await
        .unwrap();
    eventually!("5 pods", active_ready_pods(&pods, "rs-web", &uid, 5).await);
    eventually!("status of 5", rs_status_is(&rs_api, "web", 5).await);

    rs_api
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(&scale(1)))
        .await
        .unwrap();
    let one = eventually!("1 pod", active_ready_pods(&pods, "rs-web", &uid, 1).await);
    eventually!("status of 1", rs_status_is(&rs_api, "web", 1).await);

    // A deleted pod is replaced.
    let first = one[0].clone();
    pods.delete(&first.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    let replaced = eventually!("a replacement for the deleted pod", {
        active_ready_pods(&pods, "rs-web", &uid, 1)
            .await
            .filter(|p| p[0].uid() != first.uid())
    });

    // A pod that failed (as the nodes controller marks the pods of a lost
    // agent) is replaced, and stays as it is.
    let failed = replaced[0].clone();
    pods.patch_status(
        &failed.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Failed", "reason": "NodeLost"}})),
    )
    .await
    .unwrap();
    eventually!("a replacement for the failed pod", {
        active_ready_pods(&pods, "rs-web", &uid, 1)
            .await
            .filter(|p| p[0].uid() != failed.uid())
    });
    let still = pods.get(&failed.name_any()).await.unwrap();
    assert_eq!(still.status.unwrap().phase.as_deref(), Some("Failed"));
    eventually!(
        "status of 1 after the failure",
        rs_status_is(&rs_api, "web", 1).await
    );

    // A matching orphan is adopted, and the surplus goes.
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stray", "labels": {"app": "rs-web"}},
        "spec": {"containers": [container("km-test/busybox:1")]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &orphan).await.unwrap();
    eventually!("the orphan adopted or deleted, one pod left", {
        let stray = pods.get_opt("stray").await.unwrap();
        let adopted = stray.as_ref().is_none_or(|p| {
            controller_uid(&p.metadata).as_deref() == Some(uid.as_str()) || !active(p)
        });
        let left = active_ready_pods(&pods, "rs-web", &uid, 1).await;
        (adopted && left.is_some()).then_some(())
    });

    // A pod relabelled away is released and replaced.
    let mine = active_ready_pods(&pods, "rs-web", &uid, 1).await.unwrap();
    let moved = mine[0].name_any();
    pods.patch(
        &moved,
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"app": "elsewhere"}}})),
    )
    .await
    .unwrap();
    eventually!("the relabelled pod released and replaced", {
        let released = pods
            .get(&moved)
            .await
            .ok()
            .is_some_and(|p| controller_uid(&p.metadata).is_none());
        let left = active_ready_pods(&pods, "rs-web", &uid, 1).await;
        (released && left.is_some_and(|l| l[0].name_any() != moved)).then_some(())
    });

    // Events name what happened, as upstream names them.
    let events: Api<Event> = c.api("default");
    let reasons = eventually!("SuccessfulCreate and SuccessfulDelete events", {
        let reasons: Vec<String> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some("web"))
            .filter_map(|e| e.reason)
            .collect();
        (reasons.iter().any(|r| r == "SuccessfulCreate")
            && reasons.iter().any(|r| r == "SuccessfulDelete"))
        .then_some(reasons)
    });
    assert!(
        reasons.iter().all(|r| r.starts_with("Successful")),
        "{reasons:?}"
    );
}

/// What an observer of a rollout saw: the most ReplicaSet replicas at
/// once, and the fewest available replicas the Deployment reported.
#[derive(Debug, Clone, Copy)]
struct Seen {
    most_replicas: i32,
    least_available: i32,
}

enum Change {
    ReplicaSet(watcher::Event<ReplicaSet>),
    Deployment(watcher::Event<Deployment>),
}

/// Watches the Deployment and its ReplicaSets until `done`, recording
/// after every event the sum of `spec.replicas` of the ReplicaSets and the
/// Deployment's `status.availableReplicas` (what upstream's e2e checks).
fn observe(client: Client, name: &str, done: CancellationToken) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen {
        most_replicas: 0,
        least_available: i32::MAX,
    }));
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let d_api: Api<Deployment> = Api::namespaced(client, "default");
    let rs_events = watcher(
        rs_api,
        watcher::Config::default().labels(&format!("app={name}")),
    )
    .default_backoff()
    .map(|e| e.map(Change::ReplicaSet));
    let fields = format!("metadata.name={name}");
    let d_events = watcher(d_api, watcher::Config::default().fields(&fields))
        .default_backoff()
        .map(|e| e.map(Change::Deployment));
    let mut events = futures::stream::select(rs_events, d_events).boxed();
    let out = seen.clone();
    tokio::spawn(async move {
        let mut sizes: BTreeMap<String, i32> = BTreeMap::new();
        let mut available: Option<i32> = None;
        loop {
            let ev = tokio::select! {
                _ = done.cancelled() => return,
                ev = events.next() => match ev {
                    Some(Ok(ev)) => ev,
                    _ => continue,
                },
            };
            match ev {
                Change::ReplicaSet(watcher::Event::Apply(rs) | watcher::Event::InitApply(rs)) => {
                    sizes.insert(rs.name_any(), rs.spec.and_then(|s| s.replicas).unwrap_or(0));
                }
                Change::ReplicaSet(watcher::Event::Delete(rs)) => {
                    sizes.remove(&rs.name_any());
                }
                Change::Deployment(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) => {
                    available = d.status.and_then(|s| s.available_replicas);
                }
                _ => continue,
            }
            let mut s = out.lock().unwrap();
            s.most_replicas = s.most_replicas.max(sizes.values().sum());
            if let Some(a) = available {
                s.least_available = s.least_available.min(a);
            }
        }
    });
    seen
}

async fn complete(api: &Api<Deployment>, name: &str, n: i32) -> Option<Deployment> {
    let d = api.get(name).await.ok()?;
    let s = d.status.clone()?;
    let done = s.updated_replicas == Some(n)
        && s.replicas == Some(n)
        && s.available_replicas == Some(n)
        && s.observed_generation == d.metadata.generation;
    done.then_some(d)
}

fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap()
}

fn condition(d: &Deployment, t: &str) -> (String, String) {
    let c = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == t))
        .unwrap_or_else(|| panic!("no {t} condition"));
    (c.status.clone(), c.reason.clone().unwrap_or_default())
}

async fn set_image(
    api: &Api<Deployment>,
    name: &str,
    image: &str,
    surge: Value,
    unavailable: Value,
) {
    let patch = json!({"spec": {
        "strategy": {"rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
        "template": {"spec": {"containers": [container(image)]}},
    }});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_deployment_rolls_out_rolls_back_and_reports_it() {
    let c = cluster().await;
    let d_api: Api<Deployment> = c.api("default");
    let rs_api: Api<ReplicaSet> = c.api("default");
    let pods: Api<Pod> = c.api("default");

    // A first Deployment while the controllers' caches fill, then the one
    // under test, timed (a figure, not an assertion).
    d_api
        .create(
            &PostParams::default(),
            &deployment("warm", 1, json!(1), json!(0)),
        )
        .await
        .unwrap();
    eventually!(
        "the warm-up Deployment complete",
        complete(&d_api, "warm", 1).await
    );
    let started = Instant::now();
    d_api
        .create(
            &PostParams::default(),
            &deployment("web", 3, json!(1), json!(0)),
        )
        .await
        .unwrap();
    let created = eventually!("3 pods created", {
        let n = pods_of(&pods, "web").await.len();
        (n == 3).then(|| started.elapsed())
    });
    let d = eventually!(
        "the first rollout complete",
        complete(&d_api, "web", 3).await
    );
    eprintln!(
        "figure: a 3-replica Deployment had its 3 pods created in {created:?} and all available in {:?} (polled every 50 ms)",
        started.elapsed()
    );
    assert_eq!(
        annotation(&d.metadata, "deployment.kubernetes.io/revision"),
        Some("1")
    );
    assert_eq!(
        condition(&d, "Available"),
        ("True".into(), "MinimumReplicasAvailable".into())
    );
    eventually!("Progressing: NewReplicaSetAvailable", {
        let d = d_api.get("web").await.unwrap();
        (condition(&d, "Progressing") == ("True".into(), "NewReplicaSetAvailable".into()))
            .then_some(())
    });

    // One ReplicaSet, named for its template's hash, which it adds to its
    // selector, its template and its pods.
    let web = ListParams::default().labels("app=web");
    let rss = rs_api.list(&web).await.unwrap().items;
    assert_eq!(rss.len(), 1);
    let first = &rss[0];
    let hash = first.labels()["pod-template-hash"].clone();
    assert_eq!(first.name_any(), format!("web-{hash}"));
    let spec = first.spec.as_ref().unwrap();
    assert_eq!(
        spec.selector.match_labels.as_ref().unwrap()["pod-template-hash"],
        hash
    );
    assert_eq!(
        spec.template
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap()["pod-template-hash"],
        hash
    );
    for p in pods_of(&pods, "web").await {
        assert_eq!(p.labels()["pod-template-hash"], hash);
    }
    assert_eq!(
        annotation(&first.metadata, "deployment.kubernetes.io/revision"),
        Some("1")
    );
    assert_eq!(
        annotation(&first.metadata, "deployment.kubernetes.io/desired-replicas"),
        Some("3")
    );
    assert_eq!(
        annotation(&first.metadata, "deployment.kubernetes.io/max-replicas"),
        Some("4")
    );

    // Rolling update with one pod of surge and none unavailable.
    let done = CancellationToken::new();
    let seen = observe(c.client.clone(), "web", done.clone());
    let started = Instant::now();
    set_image(&d_api, "web", "km-test/busybox:2", json!(1), json!(0)).await;
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await;
    let d = eventually!(
        "the second rollout complete",
        complete(&d_api, "web", 3).await
    );
    eprintln!(
        "figure: rolling 3 replicas to a new image (surge 1, unavailable 0) took {:?} up to kubectl rollout status",
        started.elapsed()
    );
    done.cancel();
    let s = *seen.lock().unwrap();
    assert!(s.most_replicas <= 4, "maxSurge 1 over 3 replicas: {s:?}");
    assert!(s.most_replicas >= 4, "the surge was used: {s:?}");
    assert!(s.least_available >= 3, "maxUnavailable 0: {s:?}");
    assert_eq!(image_of(&d), "km-test/busybox:2");
    assert_eq!(
        annotation(&d.metadata, "deployment.kubernetes.io/revision"),
        Some("2")
    );
    let rss = rs_api.list(&web).await.unwrap().items;
    assert_eq!(rss.len(), 2);
    for rs in &rss {
        let (rev, size) = match annotation(&rs.metadata, "deployment.kubernetes.io/revision") {
            Some("1") => ("1", 0),
            Some("2") => ("2", 3),
            other => panic!("unexpected revision {other:?}"),
        };
        assert_eq!(
            rs.spec.as_ref().unwrap().replicas,
            Some(size),
            "revision {rev}"
        );
    }

    // Rolling update with no surge and one pod unavailable.
    let done = CancellationToken::new();
    let seen = observe(c.client.clone(), "web", done.clone());
    set_image(&d_api, "web", "km-test/busybox:3", json!(0), json!(1)).await;
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await;
    eventually!(
        "the third rollout complete",
        complete(&d_api, "web", 3).await
    );
    done.cancel();
    let s = *seen.lock().unwrap();
    assert!(s.most_replicas <= 3, "maxSurge 0: {s:?}");
    assert!(s.least_available >= 2, "maxUnavailable 1 of 3: {s:?}");

    // kubectl rollout undo goes back to revision 2 by copying its
    // template: the controller revives that ReplicaSet as revision 4.
    c.kubectl_ok(&["rollout", "undo", "deployment/web"]).await;
    c.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await;
    let d = eventually!("the rollback complete", {
        complete(&d_api, "web", 3)
            .await
            .filter(|d| image_of(d) == "km-test/busybox:2")
    });
    assert_eq!(
        annotation(&d.metadata, "deployment.kubernetes.io/revision"),
        Some("4")
    );
    let rss = rs_api.list(&web).await.unwrap().items;
    assert_eq!(rss.len(), 3, "the old ReplicaSet was reused");
    let revived = rss
        .iter()
        .find(|rs| annotation(&rs.metadata, "deployment.kubernetes.io/revision") == Some("4"))
        .expect("a ReplicaSet at revision 4");
    assert_eq!(
        annotation(
            &revived.metadata,
            "deployment.kubernetes.io/revision-history"
        ),
        Some("2")
    );
    assert_eq!(revived.spec.as_ref().unwrap().replicas, Some(3));
    let history = c
        .kubectl_ok(&["rollout", "history", "deployment/web"])
        .await;
    assert!(history.contains('4'), "{history}");
}

#[tokio::test]
async fn kubectl_rollout_status_waits_for_a_rollout() {
    let c = cluster().await;
    let d_api: Api<Deployment> = c.api("default");
    d_api
        .create(
            &PostParams::default(),
            &deployment("api", 2, json!("25%"), json!("25%")),
        )
        .await
        .unwrap();
    // Started right after the create: it must wait for the rollout.
    let out = c
        .kubectl_ok(&["rollout", "status", "deployment/api", "--timeout=90s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let d = d_api.get("api").await.unwrap();
    let s = d.status.unwrap();
    assert_eq!(
        (s.updated_replicas, s.available_replicas),
        (Some(2), Some(2))
    );
}

#[tokio::test]
async fn deleting_a_deployment_takes_its_replicasets_and_pods() {
    let c = cluster().await;
    let d_api: Api<Deployment> = c.api("default");
    let rs_api: Api<ReplicaSet> = c.api("default");
    let pods: Api<Pod> = c.api("default");
    let by_app = |app: &str| ListParams::default().labels(&format!("app={app}"));

    // Background: kubectl's default.
    d_api
        .create(
            &PostParams::default(),
            &deployment("bg", 2, json!(1), json!(0)),
        )
        .await
        .unwrap();
    eventually!("bg available", complete(&d_api, "bg", 2).await);
    c.kubectl_ok(&["delete", "deployment", "bg", "--timeout=90s"])
        .await;
    eventually!("bg's replicasets and pods gone", {
        let rss = rs_api.list(&by_app("bg")).await.unwrap().items;
        let ps = pods_of(&pods, "bg").await;
        (rss.is_empty() && ps.is_empty()).then_some(())
    });

    // Foreground: the Deployment stays until its dependents are gone. The
    // pods carry a finalizer of the test's, which holds them (and so their
    // ReplicaSet, and so the Deployment) until the test lets go.
    let mut fg = deployment("fg", 2, json!(1), json!(0));
    fg.spec
        .as_mut()
        .unwrap()
        .template
        .metadata
        .as_mut()
        .unwrap()
        .finalizers = Some(vec!["km.test/hold".into()]);
    d_api.create(&PostParams::default(), &fg).await.unwrap();
    eventually!("fg available", complete(&d_api, "fg", 2).await);
    c.kubectl_ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ])
    .await;
    let held = eventually!("fg's pods and replicaset being deleted", {
        let ps = pods_of(&pods, "fg").await;
        let rss = rs_api.list(&by_app("fg")).await.unwrap().items;
        let pods_going =
            ps.len() == 2 && ps.iter().all(|p| p.metadata.deletion_timestamp.is_some());
        let rs_going = rss.len() == 1
            && rss[0].metadata.deletion_timestamp.is_some()
            && rss[0]
                .finalizers()
                .iter()
                .any(|f| f == "foregroundDeletion");
        (pods_going && rs_going).then_some(ps)
    });
    let d = d_api
        .get("fg")
        .await
        .expect("the Deployment waits for its dependents");
    assert!(d.metadata.deletion_timestamp.is_some());
    assert!(d.finalizers().iter().any(|f| f == "foregroundDeletion"));
    for p in held {
        pods.patch(
            &p.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    }
    eventually!("fg and its dependents gone", {
        let gone = d_api.get_opt("fg").await.unwrap().is_none();
        let rss = rs_api.list(&by_app("fg")).await.unwrap().items;
        let ps = pods_of(&pods, "fg").await;
        (gone && rss.is_empty() && ps.is_empty()).then_some(())
    });

    // Orphan: the ReplicaSet and its pods stay, without the owner.
    d_api
        .create(
            &PostParams::default(),
            &deployment("orph", 2, json!(1), json!(0)),
        )
        .await
        .unwrap();
    eventually!("orph available", complete(&d_api, "orph", 2).await);
    c.kubectl_ok(&[
        "delete",
        "deployment",
        "orph",
        "--cascade=orphan",
        "--timeout=90s",
    ])
    .await;
    assert!(d_api.get_opt("orph").await.unwrap().is_none());
    let rss = rs_api.list(&by_app("orph")).await.unwrap().items;
    assert_eq!(rss.len(), 1, "the ReplicaSet is kept");
    assert!(rss[0].owner_references().is_empty(), "and orphaned");
    let rs_uid = rss[0].uid().unwrap();
    eventually!(
        "its pods kept",
        active_ready_pods(&pods, "orph", &rs_uid, 2).await
    );
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_contents_then_the_namespace() {
    let c = cluster().await;
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let d_api: Api<Deployment> = c.api("doomed");
    let pods: Api<Pod> = c.api("doomed");
    d_api
        .create(
            &PostParams::default(),
            &deployment("app", 2, json!(1), json!(0)),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = c.api("doomed");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"a": "1"}}))
            .unwrap(),
    )
    .await
    .unwrap();
    let secrets: Api<Secret> = c.api("doomed");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "token"}, "stringData": {"t": "x"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let services: Api<Service> = c.api("doomed");
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "app"},
                "spec": {"selector": {"app": "app"}, "ports": [{"port": 80}]},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    eventually!("the app running", complete(&d_api, "app", 2).await);

    c.kubectl_ok(&["delete", "namespace", "doomed", "--timeout=90s"])
        .await;
    assert!(namespaces.get_opt("doomed").await.unwrap().is_none());
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        d_api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let rs_api: Api<ReplicaSet> = c.api("doomed");
    assert!(
        rs_api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        cms.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        secrets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        services
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn recreate_replaces_all_pods_at_once_and_history_is_limited() {
    let c = cluster().await;
    let d_api: Api<Deployment> = c.api("default");
    let rs_api: Api<ReplicaSet> = c.api("default");
    let mut d = deployment("rec", 2, json!(1), json!(0));
    let spec = d.spec.as_mut().unwrap();
    spec.strategy = Some(serde_json::from_value(json!({"type": "Recreate"})).unwrap());
    spec.revision_history_limit = Some(0);
    d_api.create(&PostParams::default(), &d).await.unwrap();
    eventually!("rec available", complete(&d_api, "rec", 2).await);

    // Watch the pods: old and new ones must never be active together.
    let pods: Api<Pod> = c.api("default");
    let mixed = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = CancellationToken::new();
    {
        let mixed = mixed.clone();
        let done = done.clone();
        let mut events = watcher(pods.clone(), watcher::Config::default().labels("app=rec"))
            .default_backoff()
            .boxed();
        tokio::spawn(async move {
            let mut live: BTreeMap<String, String> = BTreeMap::new();
            loop {
                let ev = tokio::select! {
                    _ = done.cancelled() => return,
                    ev = events.next() => match ev { Some(Ok(ev)) => ev, _ => continue },
                };
                match ev {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        if active(&p) {
                            live.insert(p.name_any(), p.labels()["pod-template-hash"].clone());
                        } else {
                            live.remove(&p.name_any());
                        }
                    }
                    watcher::Event::Delete(p) => {
                        live.remove(&p.name_any());
                    }
                    _ => continue,
                }
                let hashes: std::collections::BTreeSet<&String> = live.values().collect();
                if hashes.len() > 1 {
                    mixed.lock().unwrap().push(format!("{live:?}"));
                }
            }
        });
    }
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [container("km-test/busybox:2")]}}}});
    d_api
        .patch("rec", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually!("the recreate rollout complete", {
        complete(&d_api, "rec", 2)
            .await
            .filter(|d| annotation(&d.metadata, "deployment.kubernetes.io/revision") == Some("2"))
    });
    done.cancel();
    assert!(
        mixed.lock().unwrap().is_empty(),
        "old and new pods together: {:?}",
        mixed.lock().unwrap()
    );
    // revisionHistoryLimit 0: the old ReplicaSet goes once it runs nothing.
    eventually!("only the new ReplicaSet left", {
        let rss = rs_api
            .list(&ListParams::default().labels("app=rec"))
            .await
            .unwrap()
            .items;
        (rss.len() == 1).then_some(())
    });
}

#[tokio::test]
async fn a_paused_deployment_scales_but_does_not_roll_out() {
    let c = cluster().await;
    let d_api: Api<Deployment> = c.api("default");
    let rs_api: Api<ReplicaSet> = c.api("default");
    d_api
        .create(
            &PostParams::default(),
            &deployment("p", 2, json!(1), json!(0)),
        )
        .await
        .unwrap();
    eventually!("p available", complete(&d_api, "p", 2).await);
    c.kubectl_ok(&["rollout", "pause", "deployment/p"]).await;
    set_image(&d_api, "p", "km-test/busybox:2", json!(1), json!(0)).await;
    d_api
        .patch_scale(
            "p",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    let d = eventually!("the paused Deployment scaled", {
        d_api.get("p").await.ok().filter(|d| {
            let s = d.status.clone().unwrap_or_default();
            s.observed_generation == d.metadata.generation && s.available_replicas == Some(4)
        })
    });
    assert_eq!(
        condition(&d, "Progressing"),
        ("Unknown".into(), "DeploymentPaused".into())
    );
    let rss = rs_api
        .list(&ListParams::default().labels("app=p"))
        .await
        .unwrap()
        .items;
    assert_eq!(rss.len(), 1, "no rollout while paused");
    assert_eq!(rss[0].spec.as_ref().unwrap().replicas, Some(4));
    let template = rss[0].spec.as_ref().unwrap().template.as_ref().unwrap();
    assert_eq!(
        template.spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("km-test/busybox:1")
    );

    c.kubectl_ok(&["rollout", "resume", "deployment/p"]).await;
    c.kubectl_ok(&["rollout", "status", "deployment/p", "--timeout=90s"])
        .await;
    let d = eventually!(
        "the resumed rollout complete",
        complete(&d_api, "p", 4).await
    );
    assert_eq!(image_of(&d), "km-test/busybox:2");
}

#[tokio::test]
async fn a_stuck_rollout_exceeds_its_progress_deadline() {
    let c = cluster().await;
    let d_api: Api<Deployment> = c.api("default");
    let mut d = deployment("stuck", 1, json!(1), json!(0));
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(2);
    d.spec
        .as_mut()
        .unwrap()
        .template
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .as_mut()
        .unwrap()
        .insert(NEVER_READY.0.into(), NEVER_READY.1.into());
    d_api.create(&PostParams::default(), &d).await.unwrap();
    eventually!("Progressing: ProgressDeadlineExceeded", {
        let d = d_api.get("stuck").await.unwrap();
        let c = d.status.and_then(|s| s.conditions).unwrap_or_default();
        c.iter()
            .any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
            .then_some(())
    });
    let o = c
        .kubectl(&["rollout", "status", "deployment/stuck", "--timeout=60s"])
        .await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("exceeded its progress deadline"), "{err}");
}

fn config_map(name: &str, owners: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": owners}})).unwrap()
}

#[tokio::test]
async fn the_garbage_collector_follows_owner_references() {
    let c = cluster().await;
    let cms: Api<ConfigMap> = c.api("default");
    let owner = cms
        .create(&PostParams::default(), &config_map("owner", json!([])))
        .await
        .unwrap();
    let by = |name: &str, uid: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": uid});
    let owner_uid = owner.uid().unwrap();
    for (name, owners) in [
        ("child", json!([by("owner", &owner_uid)])),
        ("dangling", json!([by("ghost", "no-such-uid")])),
        ("impostor", json!([by("owner", "another-uid")])),
        (
            "two",
            json!([by("owner", &owner_uid), by("ghost", "no-such-uid")]),
        ),
    ] {
        cms.create(&PostParams::default(), &config_map(name, owners))
            .await
            .unwrap();
    }
    eventually!("dependents of absent owners collected", {
        let dangling = cms.get_opt("dangling").await.unwrap();
        let impostor = cms.get_opt("impostor").await.unwrap();
        let two = cms.get("two").await.unwrap();
        let refs: Vec<String> = two
            .owner_references()
            .iter()
            .map(|r| r.uid.clone())
            .collect();
        (dangling.is_none() && impostor.is_none() && refs == [owner_uid.clone()]).then_some(())
    });
    assert!(
        cms.get_opt("child").await.unwrap().is_some(),
        "its owner lives"
    );

    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    eventually!("the owner's dependents collected", {
        let child = cms.get_opt("child").await.unwrap();
        let two = cms.get_opt("two").await.unwrap();
        (child.is_none() && two.is_none()).then_some(())
    });

    // A cluster-scoped owner.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.client.clone());
    let node = nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap(),
        )
        .await
        .unwrap();
    let node_ref =
        json!([{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": node.uid().unwrap()}]);
    cms.create(&PostParams::default(), &config_map("on-node", node_ref))
        .await
        .unwrap();
    nodes.delete("n1", &DeleteParams::default()).await.unwrap();
    eventually!(
        "the node's dependent collected",
        cms.get_opt("on-node")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    );
}
