//! `/metrics` of km apiserver (OpenMetrics text): requests by verb,
//! resource and code, request latency, open watches, store commits.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    resource: String,
}

struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    watchers: Family<WatchLabels, Gauge>,
    commit: Histogram,
    batch: Histogram,
}

fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let mut registry = Registry::with_prefix("apiserver");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "request",
            "Requests by verb, resource and HTTP code",
            requests.clone(),
        );
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register(
            "request_duration_seconds",
            "Request latency by verb and resource (watches: until the stream starts)",
            latency.clone(),
        );
        let watchers = Family::<WatchLabels, Gauge>::default();
        registry.register(
            "registered_watchers",
            "Open watches by resource",
            watchers.clone(),
        );
        let commit = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "storage_commit_duration_seconds",
            "Time of one store transaction (validation, write, fsync)",
            commit.clone(),
        );
        let batch = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "storage_commit_batch_size",
            "Writes committed together in one transaction",
            batch.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            watchers,
            commit,
            batch,
        }
    })
}

/// Records one finished request.
pub fn request(verb: &str, resource: &str, code: u16, took: Duration) {
    let m = metrics();
    m.requests
        .get_or_create(&RequestLabels {
            verb: verb.to_string(),
            resource: resource.to_string(),
            code: code.to_string(),
        })
        .inc();
    m.latency
        .get_or_create(&LatencyLabels {
            verb: verb.to_string(),
            resource: resource.to_string(),
        })
        .observe(took.as_secs_f64());
}

/// Counts a watch open (+1) or closed (-1).
pub fn watchers(resource: &str, delta: i64) {
    metrics()
        .watchers
        .get_or_create(&WatchLabels {
            resource: resource.to_string(),
        })
        .inc_by(delta);
}

/// Records one store commit of `writes` writes.
pub fn store_commit(took: Duration, writes: usize) {
    let m = metrics();
    m.commit.observe(took.as_secs_f64());
    m.batch.observe(writes as f64);
}

/// The OpenMetrics text of every metric.
pub fn render() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &metrics().registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_text() {
        request("create", "pods", 201, Duration::from_millis(3));
        watchers("pods", 1);
        store_commit(Duration::from_millis(4), 12);
        let text = render();
        assert!(
            text.contains(r#"apiserver_request_total{verb="create",resource="pods",code="201"}"#),
            "{text}"
        );
        assert!(text.contains("apiserver_storage_commit_batch_size_count"));
        assert!(text.contains(r#"apiserver_registered_watchers{resource="pods"}"#));
    }
}
