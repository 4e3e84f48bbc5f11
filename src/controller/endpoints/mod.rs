//! The endpoints controller: for every Service with a selector, Endpoints
//! and EndpointSlices that list its pods at hostIP:hostPort (see
//! [`compute`] for the rules), written only when they change.
//!
//! Services, pods, Endpoints and km's EndpointSlices are mirrored by watches
//! into local stores; any change queues the Services it touches (a pod
//! queues the Services that select it now and those that selected it
//! before), and workers reconcile each queued Service against the stores.
//! Endpoints this controller wrote (label
//! `endpoints.kubernetes.io/managed-by: km-controller-manager`) and km's
//! slices are deleted when their Service is gone; others are left alone.

pub mod compute;
mod index;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use self::compute::{CONTAINER_PORT_PREFIX, Desired, MANAGED_BY, MANAGED_BY_LABEL, Problem};
use self::index::Index;
use super::events::Severity;
use super::workqueue::WorkQueue;
use super::{COMPONENT, Context};

/// `namespace/name` of a Service (and of its Endpoints).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    namespace: String,
    name: String,
}

impl Key {
    fn of<K: Resource>(obj: &K) -> Key {
        Key {
            namespace: obj.meta().namespace.clone().unwrap_or_default(),
            name: obj.meta().name.clone().unwrap_or_default(),
        }
    }
}

/// A write that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or failed a write.
    #[error("{action} {kind} {namespace}/{name}: {source}")]
    Api {
        /// create, replace or delete.
        action: &'static str,
        /// Endpoints or EndpointSlice.
        kind: &'static str,
        /// Namespace of the object.
        namespace: String,
        /// Name of the object.
        name: String,
        /// What the API said.
        #[source]
        source: kube::Error,
    },
}

/// The mirrored state the workers read.
#[derive(Clone)]
struct Stores {
    services: Store<Service>,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
    slices: Store<EndpointSlice>,
    /// Pods by label, Services by selector, slices by Service.
    index: Arc<Index>,
}

/// Runs the endpoints controller until `stop`.
pub async fn run(ctx: Context, stop: CancellationToken) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let queue = WorkQueue::<Key>::with_metrics(ctx.metrics.queue("endpoints"));
    let (services, w_services) = reflector::store::<Service>();
    let (pods, w_pods) = reflector::store::<Pod>();
    let (endpoints, w_endpoints) = reflector::store::<Endpoints>();
    let (slices, w_slices) = reflector::store::<EndpointSlice>();
    let stores = Stores {
        services: services.clone(),
        pods,
        endpoints,
        slices,
        index: Arc::default(),
    };

    // Each watch updates the index after its store, then queues the
    // Services it touched: a sync started after that sees both. The end of
    // a list (a watch that restarted: events may have been missed, deletions
    // among them) queues every Service and Endpoints.
    let feed = Feed {
        queue: queue.clone(),
        stop: stop.clone(),
        everything: Arc::new({
            let (services, endpoints) = (stores.services.clone(), stores.endpoints.clone());
            move || {
                let s = services.state().into_iter().map(|s| Key::of(s.as_ref()));
                let e = endpoints.state().into_iter().map(|e| Key::of(e.as_ref()));
                s.chain(e).collect()
            }
        }),
    };
    let index = stores.index.clone();
    let mut watchers = vec![feed.follow(
        w_services,
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        "services",
        move |s, exists| {
            let key = Key::of(&s);
            let selector = s.spec.as_ref().and_then(|sp| sp.selector.as_ref());
            index.service(&key, selector.filter(|_| exists));
            vec![key]
        },
    )];
    watchers.push(feed.follow(
        w_endpoints,
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default(),
        "endpoints",
        |e, _| vec![Key::of(&e)],
    ));
    let index = stores.index.clone();
    watchers.push(feed.follow(
        w_slices,
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
        "endpointslices",
        move |s, exists| {
            let namespace = s.namespace().unwrap_or_default();
            let service = s.labels().get(compute::SERVICE_NAME_LABEL).cloned();
            index.slice(
                &namespace,
                &s.name_any(),
                service.as_deref().filter(|_| exists),
            );
            service
                .map(|name| Key { namespace, name })
                .into_iter()
                .collect()
        },
    ));
    // A pod queues the Services selecting it now and those that did before.
    let index = stores.index.clone();
    watchers.push(feed.follow(
        w_pods,
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        "pods",
        move |pod, exists| {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            index.pod(
                &pod.namespace().unwrap_or_default(),
                &pod.name_any(),
                exists.then_some(&labels),
            )
        },
    ));

    // Work only on complete stores: a Service missing from a partial list
    // would look deleted.
    tokio::select! {
        r = async {
            stores.services.wait_until_ready().await?;
            stores.pods.wait_until_ready().await?;
            stores.endpoints.wait_until_ready().await?;
            stores.slices.wait_until_ready().await
        } => r?,
        _ = stop.cancelled() => return Ok(()),
    }
    for s in stores.services.state() {
        queue.add(Key::of(s.as_ref()));
    }
    for e in stores.endpoints.state() {
        queue.add(Key::of(e.as_ref()));
    }
    tracing::info!(
        services = stores.services.state().len(),
        pods = stores.pods.state().len(),
        "endpoints controller synced its caches"
    );

    let warned: Arc<Mutex<HashSet<Problem>>> = Arc::default();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..ctx.config.concurrent_syncs {
        let (ctx, stores, queue, warned, stop) = (
            ctx.clone(),
            stores.clone(),
            queue.clone(),
            warned.clone(),
            stop.clone(),
        );
        workers.spawn(async move {
            loop {
                let key = tokio::select! {
                    k = queue.next() => k,
                    _ = stop.cancelled() => return,
                };
                let result = reconcile(&ctx, &stores, &key, &warned).await;
                ctx.metrics.synced("endpoints", result.is_ok());
                if let Err(e) = &result {
                    tracing::warn!(error = %e, service = %format!("{}/{}", key.namespace, key.name), "endpoints sync failed; retrying with backoff");
                }
                queue.done(key, result.is_ok());
            }
        });
    }
    stop.cancelled().await;
    for w in watchers {
        w.abort();
    }
    workers.shutdown().await;
    Ok(())
}

/// Turns watch events into queued Services.
struct Feed {
    queue: WorkQueue<Key>,
    stop: CancellationToken,
    /// Every key, queued when a list ends.
    everything: Arc<dyn Fn() -> Vec<Key> + Send + Sync>,
}

impl Feed {
    /// Mirrors `api` into `writer`'s store until `stop`, queueing the keys
    /// `on` returns for each changed object (with whether it still exists)
    /// and every key when a list ends. Whether an object exists comes from
    /// the event, not the store: during a list the store fills only at the
    /// end. Watch errors are logged; the watch retries with backoff.
    fn follow<K>(
        &self,
        writer: Writer<K>,
        api: Api<K>,
        config: watcher::Config,
        what: &'static str,
        mut on: impl FnMut(K, bool) -> Vec<Key> + Send + 'static,
    ) -> tokio::task::JoinHandle<()>
    where
        K: Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let (queue, everything) = (self.queue.clone(), self.everything.clone());
        let events = reflector(writer, watcher(api, config))
            .default_backoff()
            .take_until(self.stop.clone().cancelled_owned());
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                let keys = match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => on(o, true),
                    Ok(watcher::Event::Delete(o)) => on(o, false),
                    Ok(watcher::Event::InitDone) => everything(),
                    Ok(watcher::Event::Init) => Vec::new(),
                    Err(e) => {
                        tracing::warn!(error = %e, "watching {what}; retrying");
                        Vec::new()
                    }
                };
                for key in keys {
                    queue.add(key);
                }
            }
        })
    }
}

/// Brings the Endpoints and slices of one Service to what they should be.
async fn reconcile(
    ctx: &Context,
    stores: &Stores,
    key: &Key,
    warned: &Mutex<HashSet<Problem>>,
) -> Result<(), Error> {
    let service = stores
        .services
        .get(&ObjectRef::new(&key.name).within(&key.namespace));
    let current = stores
        .endpoints
        .get(&ObjectRef::new(&key.name).within(&key.namespace));
    let current_slices: Vec<Arc<EndpointSlice>> = stores
        .index
        .slices_of(key)
        .iter()
        .filter_map(|name| {
            stores
                .slices
                .get(&ObjectRef::new(name).within(&key.namespace))
        })
        .filter(|s| s.labels().get(compute::SERVICE_NAME_LABEL) == Some(&key.name))
        .collect();
    let Some(service) = service else {
        // The Service is gone: so go its Endpoints and km's slices.
        if let Some(e) = current
            && e.labels()
                .get(compute::ENDPOINTS_MANAGED_BY_LABEL)
                .map(String::as_str)
                == Some(MANAGED_BY)
        {
            delete::<Endpoints>(ctx, key, &key.name).await?;
        }
        for s in current_slices {
            delete::<EndpointSlice>(ctx, key, &s.name_any()).await?;
        }
        return Ok(());
    };
    let selector = service.spec.as_ref().and_then(|s| s.selector.clone());
    let candidates: Vec<Arc<Pod>> = stores
        .index
        .pods_matching(&key.namespace, &selector.unwrap_or_default())
        .iter()
        .filter_map(|name| {
            stores
                .pods
                .get(&ObjectRef::new(name).within(&key.namespace))
        })
        .collect();
    let Some(desired) = compute::compute(
        &service,
        candidates.iter().map(|p| p.as_ref()),
        ctx.config.host_port_endpoints,
    ) else {
        return Ok(()); // selectorless: its Endpoints are someone else's
    };
    report(ctx, &service, &desired, warned);
    tokio::try_join!(
        write_endpoints(ctx, key, current.as_deref(), &desired),
        write_slices(ctx, key, &current_slices, &desired),
    )
    .map(drop)
}

/// Events and warnings for what kept endpoints out, once per problem.
fn report(ctx: &Context, service: &Service, desired: &Desired, warned: &Mutex<HashSet<Problem>>) {
    for problem in &desired.problems {
        match problem {
            Problem::UnknownTargetPort {
                service_port,
                target_port,
            } => ctx.events.record(
                service,
                Severity::Warning,
                "TargetPortNotFound",
                format!(
                    "port {service_port}: targetPort {target_port:?} names no container port (with the same protocol) of any selected pod; this port has no endpoints, the others are unaffected"
                ),
            ),
            Problem::UnusableAddress { pod, ip } => {
                let mut warned = warned.lock().unwrap_or_else(|p| p.into_inner());
                if warned.insert(problem.clone()) {
                    tracing::warn!(
                        pod,
                        ip,
                        "pod skipped: its address cannot be an endpoint (loopback, unspecified or link-local); give its Mesos agent a routable --ip"
                    );
                }
            }
            Problem::NoHostPort { pod, annotation } => {
                let mut warned = warned.lock().unwrap_or_else(|p| p.into_inner());
                if warned.len() > 10_000 {
                    warned.clear();
                }
                if warned.insert(problem.clone()) {
                    tracing::warn!(
                        pod,
                        service = %format!("{}/{}", service.namespace().unwrap_or_default(), service.name_any()),
                        "pod skipped: it has no host port mapping ({annotation}); was it placed by km scheduler? (--host-port-endpoints=false uses pod IPs instead)"
                    );
                }
            }
        }
    }
}

async fn write_endpoints(
    ctx: &Context,
    key: &Key,
    current: Option<&Endpoints>,
    desired: &Desired,
) -> Result<(), Error> {
    let mut wanted = match current {
        Some(e) => e.clone(),
        None => Endpoints {
            metadata: kube::api::ObjectMeta {
                name: Some(key.name.clone()),
                namespace: Some(key.namespace.clone()),
                ..Default::default()
            },
            subsets: None,
        },
    };
    wanted.subsets = desired.subsets.clone();
    wanted.metadata.labels = Some(desired.labels.clone()).filter(|l| !l.is_empty());
    let mut notes: BTreeMap<String, String> =
        wanted.metadata.annotations.take().unwrap_or_default();
    notes.retain(|k, _| !k.starts_with(CONTAINER_PORT_PREFIX));
    notes.extend(desired.annotations.clone());
    wanted.metadata.annotations = Some(notes).filter(|n| !n.is_empty());
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let params = PostParams {
        field_manager: Some(COMPONENT.into()),
        ..Default::default()
    };
    match current {
        None => api
            .create(&params, &wanted)
            .await
            .map(drop)
            .map_err(api_error("create", "Endpoints", key, &key.name)),
        Some(cur) if same_endpoints(cur, &wanted) => Ok(()),
        Some(_) => api
            .replace(&key.name, &params, &wanted)
            .await
            .map(drop)
            .map_err(api_error("replace", "Endpoints", key, &key.name)),
    }
}

fn empty_is_none<T: Clone>(v: &Option<Vec<T>>) -> Option<Vec<T>> {
    v.clone().filter(|v| !v.is_empty())
}

fn same_endpoints(a: &Endpoints, b: &Endpoints) -> bool {
    let norm = |e: &Endpoints| {
        e.subsets.as_ref().map(|ss| {
            ss.iter()
                .map(|s| {
                    let mut s = s.clone();
                    s.addresses = empty_is_none(&s.addresses);
                    s.not_ready_addresses = empty_is_none(&s.not_ready_addresses);
                    s
                })
                .collect::<Vec<_>>()
        })
    };
    norm(a).filter(|s| !s.is_empty()) == norm(b).filter(|s| !s.is_empty())
        && a.metadata.labels.clone().unwrap_or_default()
            == b.metadata.labels.clone().unwrap_or_default()
        && a.metadata.annotations.clone().unwrap_or_default()
            == b.metadata.annotations.clone().unwrap_or_default()
}

async fn write_slices(
    ctx: &Context,
    key: &Key,
    current: &[Arc<EndpointSlice>],
    desired: &Desired,
) -> Result<(), Error> {
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let params = PostParams {
        field_manager: Some(COMPONENT.into()),
        ..Default::default()
    };
    for (name, wanted) in &desired.slices {
        match current
            .iter()
            .find(|s| s.metadata.name.as_ref() == Some(name))
        {
            None => {
                api.create(&params, wanted)
                    .await
                    .map(drop)
                    .map_err(api_error("create", "EndpointSlice", key, name))?;
            }
            Some(cur) if same_slice(cur, wanted) => {}
            Some(cur) => {
                let mut next = wanted.clone();
                next.metadata.resource_version = cur.metadata.resource_version.clone();
                api.replace(name, &params, &next)
                    .await
                    .map(drop)
                    .map_err(api_error("replace", "EndpointSlice", key, name))?;
            }
        }
    }
    for stale in current {
        let name = stale.name_any();
        if !desired.slices.contains_key(&name) {
            delete::<EndpointSlice>(ctx, key, &name).await?;
        }
    }
    Ok(())
}

fn same_slice(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    a.address_type == b.address_type
        && a.endpoints == b.endpoints
        && empty_is_none(&a.ports) == empty_is_none(&b.ports)
        && a.metadata.labels == b.metadata.labels
        && a.metadata.owner_references == b.metadata.owner_references
}

async fn delete<K>(ctx: &Context, key: &Key, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &key.namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::Api {
            action: "delete",
            kind: <K as k8s_openapi::Resource>::KIND,
            namespace: key.namespace.clone(),
            name: name.to_string(),
            source,
        }),
    }
}

fn api_error(
    action: &'static str,
    kind: &'static str,
    key: &Key,
    name: &str,
) -> impl FnOnce(kube::Error) -> Error {
    let (namespace, name) = (key.namespace.clone(), name.to_string());
    move |source| Error::Api {
        action,
        kind,
        namespace,
        name,
        source,
    }
}
