//! The controller manager's `/metrics` (Prometheus text format): the
//! depth, adds and retries of each controller's work queue, under
//! client-go's names (`workqueue_depth{name=...}`), and the outcome of
//! every sync (`km_controller_syncs_total{controller=...,result=...}`).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    controller: String,
    result: &'static str,
}

struct Inner {
    registry: Registry,
    depth: Family<QueueLabels, Gauge>,
    adds: Family<QueueLabels, Counter>,
    retries: Family<QueueLabels, Counter>,
    syncs: Family<SyncLabels, Counter>,
}

/// The controllers' metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        let (depth, adds, retries, syncs) = (
            Family::default(),
            Family::default(),
            Family::default(),
            Family::default(),
        );
        let mut registry = Registry::default();
        registry.register(
            "workqueue_depth",
            "Items waiting in a controller's work queue",
            Family::<QueueLabels, Gauge>::clone(&depth),
        );
        registry.register(
            "workqueue_adds",
            "Items added to a controller's work queue",
            Family::<QueueLabels, Counter>::clone(&adds),
        );
        registry.register(
            "workqueue_retries",
            "Items queued again after a failed sync",
            Family::<QueueLabels, Counter>::clone(&retries),
        );
        let km = registry.sub_registry_with_prefix("km_controller");
        km.register(
            "syncs",
            "Syncs of one object, by controller and result (success or error)",
            Family::<SyncLabels, Counter>::clone(&syncs),
        );
        Metrics(Arc::new(Inner {
            registry,
            depth,
            adds,
            retries,
            syncs,
        }))
    }
}

/// The metrics of one work queue.
#[derive(Clone)]
pub struct QueueMetrics {
    depth: Gauge,
    adds: Counter,
    retries: Counter,
}

impl QueueMetrics {
    /// The queue's length is now `n`.
    pub fn depth(&self, n: usize) {
        self.depth.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// An item was added.
    pub fn added(&self) {
        self.adds.inc();
    }

    /// A failed item will come back.
    pub fn retried(&self) {
        self.retries.inc();
    }
}

impl Metrics {
    /// The metrics of the work queue `name`.
    pub fn queue(&self, name: &str) -> QueueMetrics {
        let labels = QueueLabels { name: name.into() };
        QueueMetrics {
            depth: self.0.depth.get_or_create(&labels).clone(),
            adds: self.0.adds.get_or_create(&labels).clone(),
            retries: self.0.retries.get_or_create(&labels).clone(),
        }
    }

    /// One sync of `controller` ended, well or not.
    pub fn synced(&self, controller: &str, ok: bool) {
        self.0
            .syncs
            .get_or_create(&SyncLabels {
                controller: controller.into(),
                result: if ok { "success" } else { "error" },
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_and_sync_metrics_render_under_their_names() {
        let m = Metrics::default();
        let q = m.queue("endpoints");
        q.added();
        q.added();
        q.depth(1);
        q.retried();
        m.synced("endpoints", true);
        m.synced("endpoints", false);
        m.synced("endpoints", true);
        let text = m.render();
        for line in [
            "workqueue_depth{name=\"endpoints\"} 1",
            "workqueue_adds_total{name=\"endpoints\"} 2",
            "workqueue_retries_total{name=\"endpoints\"} 1",
            "km_controller_syncs_total{controller=\"endpoints\",result=\"success\"} 2",
            "km_controller_syncs_total{controller=\"endpoints\",result=\"error\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
    }
}
