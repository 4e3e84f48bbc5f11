//! kube-rs's runtime (watcher, reflector, Controller) against km apiserver,
//! unmodified.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

use crate::support::Server;

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap()
}

async fn eventually<F: Fn() -> bool>(what: &str, f: F) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn reflector_follows_creates_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let pods: Api<Pod> = Api::namespaced(s.client(), "default");
    pods.create(&PostParams::default(), &pod("before", json!({"app": "a"})))
        .await
        .unwrap();

    let (reader, writer) = reflector::store::<Pod>();
    let stream = watcher(pods.clone(), watcher::Config::default().labels("app=a"))
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    reader.wait_until_ready().await.unwrap();
    assert_eq!(reader.state().len(), 1);

    pods.create(&PostParams::default(), &pod("after", json!({"app": "a"})))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("other", json!({"app": "b"})))
        .await
        .unwrap();
    eventually("the new pod in the cache", || reader.state().len() == 2).await;
    // Relabelling out of the selector removes it from the cache.
    pods.patch(
        "after",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "z"}}})),
    )
    .await
    .unwrap();
    eventually("the relabelled pod gone", || reader.state().len() == 1).await;
    pods.delete("before", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the deleted pod gone", || reader.state().is_empty()).await;
    task.abort();

    // Field selectors the scheduler uses.
    let unbound = pods
        .list(&ListParams::default().fields("spec.nodeName="))
        .await
        .unwrap();
    assert_eq!(unbound.items.len(), 2);
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ReconcileError(#[from] kube::Error);

#[tokio::test]
async fn a_small_controller_reconciles() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let client = s.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let ctx = Arc::new(cms.clone());
    let controller = Controller::new(cms.clone(), watcher::Config::default())
        .run(
            |cm: Arc<ConfigMap>, api: Arc<Api<ConfigMap>>| async move {
                let name = cm.metadata.name.clone().unwrap_or_default();
                if cm.data.as_ref().and_then(|d| d.get("seen")).is_none() {
                    api.patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"data": {"seen": "yes"}})),
                    )
                    .await?;
                }
                Ok::<_, ReconcileError>(Action::await_change())
            },
            |_, _: &ReconcileError, _| Action::requeue(Duration::from_secs(1)),
            ctx,
        )
        .for_each(|_| async {});
    let task = tokio::spawn(controller);
    for i in 0..5 {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": format!("cm-{i}")}, "data": {"k": "v"}}),
        )
        .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    for _ in 0..200 {
        let list = cms.list(&ListParams::default()).await.unwrap();
        let seen = list
            .items
            .iter()
            .filter(|c| c.data.as_ref().is_some_and(|d| d.contains_key("seen")))
            .count();
        if seen == 5 {
            task.abort();
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the controller did not reconcile every ConfigMap");
}
