//! `/metrics` of km scheduler.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    state: String,
    reason: String,
}

/// The scheduler's counters.
pub struct Metrics {
    registry: Registry,
    /// Pods waiting for an offer.
    pub queue_depth: Gauge,
    /// Pods that entered the queue.
    pub queued: Counter,
    /// Tasks launched.
    pub launched: Counter,
    /// Offers received.
    pub offers_received: Counter,
    /// Offers declined (unused, expired, or nothing waiting).
    pub offers_declined: Counter,
    /// Offers used by an ACCEPT.
    pub offers_used: Counter,
    /// Reconciliation requests sent.
    pub reconciliations: Counter,
    /// Outdated executors shut down after their last task.
    pub executors_shut_down: Counter,
    /// Seconds from a pod entering the queue to its launch.
    pub queue_wait: Histogram,
    /// Seconds from a launch to the task's first TASK_RUNNING.
    pub bind_latency: Histogram,
    statuses: Family<StatusLabels, Counter>,
}

fn seconds() -> Histogram {
    // 1 ms .. ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("km_scheduler");
        let m = Metrics {
            queue_depth: Gauge::default(),
            queued: Counter::default(),
            launched: Counter::default(),
            offers_received: Counter::default(),
            offers_declined: Counter::default(),
            offers_used: Counter::default(),
            reconciliations: Counter::default(),
            executors_shut_down: Counter::default(),
            queue_wait: seconds(),
            bind_latency: seconds(),
            statuses: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "queue_depth",
            "Pods waiting for an offer",
            m.queue_depth.clone(),
        );
        registry.register("queued", "Pods that entered the queue", m.queued.clone());
        registry.register("launched_tasks", "Tasks launched", m.launched.clone());
        registry.register(
            "offers_received",
            "Offers received",
            m.offers_received.clone(),
        );
        registry.register(
            "offers_declined",
            "Offers declined",
            m.offers_declined.clone(),
        );
        registry.register(
            "offers_used",
            "Offers used by an ACCEPT",
            m.offers_used.clone(),
        );
        registry.register(
            "reconciliations",
            "Reconciliation requests sent",
            m.reconciliations.clone(),
        );
        registry.register(
            "executors_shut_down",
            "Outdated executors shut down after their last task",
            m.executors_shut_down.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Time from a pod entering the queue to its launch",
            m.queue_wait.clone(),
        );
        registry.register(
            "bind_latency_seconds",
            "Time from a launch to the task's first TASK_RUNNING",
            m.bind_latency.clone(),
        );
        registry.register(
            "status_updates",
            "Task status updates by state and reason",
            m.statuses.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Counts a status update.
    pub fn status(&self, state: &str, reason: &str) {
        self.statuses
            .get_or_create(&StatusLabels {
                state: state.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
