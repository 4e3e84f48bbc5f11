//! Watches Services and Endpoints and applies each change to the dataplane.
//!
//! Both are watched across all namespaces (kube-runtime watchers with
//! backoff). The latest objects are kept by namespace/name; a change to a
//! Service or to the Endpoints of the same name recomputes that one
//! Service ([`super::table::compute`]) and hands the result to the
//! [`Dataplane`], so an Endpoints change reaches the balancers as soon as
//! its watch event arrives. A re-list (after a watch expired) replaces the
//! kept objects and recomputes every Service that was or is there.
//! Readiness (`/healthz`) waits for the first lists, and in nftables mode
//! for the kernel to have programmed them.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::dataplane::Dataplane;
use super::metrics::Metrics;
use super::table::{self, ServiceKey};

/// Objects of one kind by namespace/name, with the re-list in progress.
struct Store<K> {
    objects: HashMap<ServiceKey, K>,
    relist: Option<HashMap<ServiceKey, K>>,
    listed: bool,
}

impl<K: kube::Resource> Store<K> {
    fn new() -> Self {
        Store {
            objects: HashMap::new(),
            relist: None,
            listed: false,
        }
    }

    /// Applies one watch event; returns the keys whose object changed.
    fn apply(&mut self, ev: watcher::Event<K>) -> Vec<ServiceKey> {
        match ev {
            watcher::Event::Init => {
                self.relist = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(o) => {
                let key = ServiceKey::of(o.meta());
                self.relist.get_or_insert_with(HashMap::new).insert(key, o);
                Vec::new()
            }
            watcher::Event::InitDone => {
                let new = self.relist.take().unwrap_or_default();
                let old = std::mem::replace(&mut self.objects, new);
                self.listed = true;
                let keys: HashSet<ServiceKey> = old
                    .into_keys()
                    .chain(self.objects.keys().cloned())
                    .collect();
                keys.into_iter().collect()
            }
            watcher::Event::Apply(o) => {
                let key = ServiceKey::of(o.meta());
                self.objects.insert(key.clone(), o);
                vec![key]
            }
            watcher::Event::Delete(o) => {
                let key = ServiceKey::of(o.meta());
                self.objects.remove(&key);
                vec![key]
            }
        }
    }
}

enum Change {
    Service(Box<Result<watcher::Event<Service>, watcher::Error>>),
    Endpoints(Box<Result<watcher::Event<Endpoints>, watcher::Error>>),
}

/// Runs until `stop`: watches, and keeps `dp` equal to what they say.
/// `ready` turns true once both initial lists have been applied.
pub async fn run(
    client: kube::Client,
    dp: &mut Dataplane,
    metrics: &Metrics,
    ready: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let services = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|c| Change::Service(Box::new(c)));
    let endpoints = watcher(Api::<Endpoints>::all(client), watcher::Config::default())
        .default_backoff()
        .map(|c| Change::Endpoints(Box::new(c)));
    let mut changes = std::pin::pin!(futures::stream::select(services, endpoints));
    let mut svcs: Store<Service> = Store::new();
    let mut eps: Store<Endpoints> = Store::new();
    let mut warned: HashMap<ServiceKey, Vec<String>> = HashMap::new();
    let mut retry_in = RETRY_MIN;
    loop {
        let retry = async {
            if dp.has_failures() {
                tokio::time::sleep(retry_in).await
            } else {
                std::future::pending().await
            }
        };
        let change = tokio::select! {
            c = changes.next() => match c {
                Some(c) => c,
                None => break,
            },
            _ = retry => {
                dp.retry();
                retry_in = if dp.has_failures() { (retry_in * 2).min(RETRY_MAX) } else { RETRY_MIN };
                continue;
            }
            _ = stop.cancelled() => break,
        };
        let keys = match change {
            Change::Service(c) => match *c {
                Ok(ev) => svcs.apply(ev),
                Err(e) => {
                    tracing::warn!(error = %e, "watching Services failed; retrying");
                    continue;
                }
            },
            Change::Endpoints(c) => match *c {
                Ok(ev) => eps.apply(ev),
                Err(e) => {
                    tracing::warn!(error = %e, "watching Endpoints failed; retrying");
                    continue;
                }
            },
        };
        // Until both kinds are listed, a Service would be served without
        // its endpoints (or endpoints looked up for no Service): wait.
        if !(svcs.listed && eps.listed) {
            continue;
        }
        let started = Instant::now();
        let all: Vec<ServiceKey>;
        let keys = if !*ready.borrow() {
            all = svcs.objects.keys().cloned().collect();
            &all
        } else {
            &keys
        };
        for key in keys {
            let computed = match svcs.objects.get(key) {
                Some(svc) => table::compute(svc, eps.objects.get(key)),
                None => table::Computed::default(),
            };
            if computed.warnings.is_empty() {
                warned.remove(key);
            } else if warned.get(key) != Some(&computed.warnings) {
                for w in &computed.warnings {
                    tracing::warn!("{w}");
                }
                warned.insert(key.clone(), computed.warnings);
            }
            dp.set_service(key, computed.ports);
        }
        metrics
            .sync_seconds
            .observe(started.elapsed().as_secs_f64());
        if !*ready.borrow() {
            if !dp.kernel_programmed(KERNEL_PATIENCE).await {
                tracing::warn!(
                    "the initial nftables rules are not programmed after {KERNEL_PATIENCE:?}; reporting ready anyway (NodePorts on 127.0.0.1 are served)"
                );
            }
            tracing::info!(
                services = svcs.objects.len(),
                "initial Services and Endpoints applied"
            );
            let _ = ready.send(true);
        }
    }
}

/// How long readiness waits for the kernel data path to program the
/// initial Services.
const KERNEL_PATIENCE: Duration = Duration::from_secs(30);

/// First pause before binding a failed listener again (a NodePort freed
/// by a Service deleted just before is free a moment later).
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest pause between attempts.
const RETRY_MAX: Duration = Duration::from_secs(5);
