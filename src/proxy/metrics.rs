//! `/metrics` of km proxy: per service port, connections, bytes and errors;
//! for the proxy, how long programming a change takes.
//!
//! For UDP a "connection" is a client session (one client address talking
//! to one endpoint until it is idle for `--udp-timeout`) on the user-space
//! path, and a conntrack flow on the kernel path.
//!
//! In nftables mode connections and `no_endpoint` errors also count what
//! the kernel DNATed or rejected: its counters are read on each scrape
//! ([`super::kernel::Kernel::read_counters`]). Bytes and open connections
//! are counted only for traffic through the user-space path.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::table::{PortKey, Protocol};

/// `protocol` label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ProtocolLabel {
    /// TCP.
    TCP,
    /// UDP.
    UDP,
}

/// Labels of a service port.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabels {
    namespace: String,
    service: String,
    port: String,
    protocol: ProtocolLabel,
}

impl From<&PortKey> for PortLabels {
    fn from(k: &PortKey) -> Self {
        PortLabels {
            namespace: k.service.namespace.clone(),
            service: k.service.name.clone(),
            port: k.port_name.clone(),
            protocol: match k.protocol {
                Protocol::Tcp => ProtocolLabel::TCP,
                Protocol::Udp => ProtocolLabel::UDP,
            },
        }
    }
}

/// Why a connection failed (`reason` label; variants spelled as the label values).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Reason {
    /// The service port had no ready endpoint.
    no_endpoint,
    /// Connecting to the chosen endpoint failed.
    dial,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    #[prometheus(flatten)]
    port: PortLabels,
    reason: Reason,
}

/// The proxy's metrics.
pub struct Metrics {
    registry: Registry,
    connections: Family<PortLabels, Counter>,
    active: Family<PortLabels, Gauge>,
    bytes_in: Family<PortLabels, Counter>,
    bytes_out: Family<PortLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    /// Service ports being served.
    pub service_ports: Gauge,
    /// Seconds to apply one watched change to the listeners and balancers.
    pub sync_seconds: Histogram,
    /// Failed attempts to program the kernel's rules (nftables data path or iptables redirect).
    pub redirect_failures: Counter,
}

/// The metric handles of one service port, taken once when it starts.
#[derive(Clone, Debug)]
pub struct PortMetrics {
    /// Connections (TCP) or sessions (UDP) accepted.
    pub connections: Counter,
    /// Connections or sessions open now.
    pub active: Gauge,
    /// Bytes from clients to endpoints.
    pub bytes_in: Counter,
    /// Bytes from endpoints to clients.
    pub bytes_out: Counter,
    /// Connections refused for want of a ready endpoint.
    pub no_endpoint: Counter,
    /// Failed connects to an endpoint.
    pub dial_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("km_proxy");
        let m = Metrics {
            registry: Registry::default(),
            connections: Family::default(),
            active: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            errors: Family::default(),
            service_ports: Gauge::default(),
            // 10 µs .. ~10 s.
            sync_seconds: Histogram::new(exponential_buckets(0.00001, 2.0, 20)),
            redirect_failures: Counter::default(),
        };
        registry.register(
            "connections",
            "Connections (TCP) or client sessions (UDP) accepted per service port",
            m.connections.clone(),
        );
        registry.register(
            "active_connections",
            "Connections or client sessions open per service port",
            m.active.clone(),
        );
        registry.register(
            "received_bytes",
            "Bytes from clients forwarded to endpoints per service port",
            m.bytes_in.clone(),
        );
        registry.register(
            "sent_bytes",
            "Bytes from endpoints forwarded to clients per service port",
            m.bytes_out.clone(),
        );
        registry.register(
            "errors",
            "Failed connections per service port: no_endpoint (none ready) or dial (connect failed)",
            m.errors.clone(),
        );
        registry.register(
            "service_ports",
            "Service ports served",
            m.service_ports.clone(),
        );
        registry.register(
            "sync_duration_seconds",
            "Time to apply one watched Service or Endpoints change",
            m.sync_seconds.clone(),
        );
        registry.register(
            "redirect_failures",
            "Failed attempts to program the kernel's rules (nftables data path or iptables redirect)",
            m.redirect_failures.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The handles of a service port (created at zero).
    pub fn port(&self, key: &PortKey) -> PortMetrics {
        let l = PortLabels::from(key);
        let error = |reason| {
            self.errors
                .get_or_create(&ErrorLabels {
                    port: l.clone(),
                    reason,
                })
                .clone()
        };
        PortMetrics {
            connections: self.connections.get_or_create(&l).clone(),
            active: self.active.get_or_create(&l).clone(),
            bytes_in: self.bytes_in.get_or_create(&l).clone(),
            bytes_out: self.bytes_out.get_or_create(&l).clone(),
            no_endpoint: error(Reason::no_endpoint),
            dial_errors: error(Reason::dial),
        }
    }

    /// Drops a removed service port's series.
    pub fn forget(&self, key: &PortKey) {
        let l = PortLabels::from(key);
        self.connections.remove(&l);
        self.active.remove(&l);
        self.bytes_in.remove(&l);
        self.bytes_out.remove(&l);
        for reason in [Reason::no_endpoint, Reason::dial] {
            self.errors.remove(&ErrorLabels {
                port: l.clone(),
                reason,
            });
        }
    }

    /// OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::table::ServiceKey;

    #[test]
    fn port_series_are_labelled_and_forgotten() {
        let m = Metrics::default();
        let key = PortKey {
            service: ServiceKey {
                namespace: "ns".into(),
                name: "web".into(),
            },
            port_name: "http".into(),
            protocol: Protocol::Tcp,
        };
        let p = m.port(&key);
        p.connections.inc();
        p.bytes_in.inc_by(10);
        p.no_endpoint.inc();
        let text = m.render();
        assert!(
            text.contains(r#"km_proxy_connections_total{namespace="ns",service="web",port="http",protocol="TCP"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"km_proxy_errors_total{namespace="ns",service="web",port="http",protocol="TCP",reason="no_endpoint"} 1"#),
            "{text}"
        );
        m.forget(&key);
        assert!(!m.render().contains("service=\"web\""));
    }
}
