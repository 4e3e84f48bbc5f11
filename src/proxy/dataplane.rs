//! The running side of the proxy: one [`ServicePort`] per served service
//! port, its listeners (NodePort, and in iptables mode the ClusterIP
//! redirect target), the redirect rules derived from them, and in nftables
//! mode what the kernel data path should serve.
//!
//! [`Dataplane::set_service`] takes the [`PortSpec`]s computed for one
//! Service and makes the listeners and balancers match: endpoint changes
//! only update the balancer (new connections see them at once); a changed
//! NodePort rebinds; a removed port stops listening and its connections
//! wind down as if all its endpoints were removed. A listener that cannot
//! be bound (port in use) is logged and retried by [`Dataplane::retry`].
//! With a [`Kernel`], every port's ClusterIP and NodePort with its IPv4
//! endpoints is handed to it as well; the kernel DNATs that traffic itself.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::balancer::{Balancer, Pick};
use super::kernel::{Kernel, Wanted};
use super::metrics::{Metrics, PortMetrics};
use super::redirect::Rule;
use super::table::{Frontend, PortKey, PortSpec, Protocol, ServiceKey};
use super::{tcp, udp};

/// How the dataplane listens.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where ClusterIP traffic is redirected to, when it is (`Some`,
    /// iptables mode): the address the per-port redirect listeners bind.
    pub redirect_to: Option<Ipv4Addr>,
    /// The kernel data path (nftables mode), told about every port.
    pub kernel: Option<Kernel>,
    /// Addresses NodePorts are served on; `None` for every address.
    pub nodeport_addresses: Option<Vec<IpAddr>>,
    /// How long connections to a removed endpoint may drain.
    pub drain_timeout: Duration,
    /// How long an idle UDP session lives.
    pub udp_timeout: Duration,
}

/// One served service port: its balancer and metrics, shared with its
/// listeners and connections.
pub struct ServicePort {
    /// Which port of which Service.
    pub key: PortKey,
    balancer: Mutex<Balancer>,
    /// Its metric handles.
    pub metrics: PortMetrics,
    /// How long connections to a removed endpoint may drain.
    pub drain_timeout: Duration,
    /// How long an idle UDP session lives.
    pub udp_timeout: Duration,
}

impl ServicePort {
    fn balancer(&self) -> MutexGuard<'_, Balancer> {
        // A panic while holding the lock leaves a usable balancer.
        self.balancer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The endpoint for a new connection from `client`.
    pub fn pick(&self, client: IpAddr) -> Option<Pick> {
        self.balancer().pick(client, Instant::now())
    }

    /// Forgets `client`'s sticky endpoint.
    pub fn forget(&self, client: IpAddr) {
        self.balancer().forget(client);
    }

    /// How many ready endpoints there are.
    pub fn endpoints(&self) -> usize {
        self.balancer().len()
    }
}

/// Listeners of one kind (NodePort or redirect target) of a service port.
enum Listeners {
    /// Not wanted.
    None,
    /// Serving on `port` until `stop`.
    Bound { port: u16, stop: CancellationToken },
    /// Wanted on `port` (0: any) but binding failed; retried.
    Failed { port: u16 },
}

impl Listeners {
    fn stop(&self) {
        if let Listeners::Bound { stop, .. } = self {
            stop.cancel();
        }
    }
}

struct Running {
    port: Arc<ServicePort>,
    frontend: Frontend,
    node_port: Listeners,
    portal: Listeners,
}

/// All served service ports.
pub struct Dataplane {
    cfg: Config,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    ports: HashMap<PortKey, Running>,
    by_service: HashMap<ServiceKey, Vec<PortKey>>,
    rules: watch::Sender<Arc<Vec<Rule>>>,
    rules_dirty: bool,
    retrying: bool,
}

impl Dataplane {
    /// An empty dataplane. Its tasks are spawned on `tasks` and end with
    /// `shutdown`; the redirect rules it wants are published on
    /// [`Dataplane::rules`].
    pub fn new(
        cfg: Config,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Dataplane {
            cfg,
            metrics,
            shutdown,
            tasks,
            ports: HashMap::new(),
            by_service: HashMap::new(),
            rules: watch::channel(Arc::new(Vec::new())).0,
            rules_dirty: false,
            retrying: false,
        }
    }

    /// The redirect rules, updated whenever they change.
    pub fn rules(&self) -> watch::Receiver<Arc<Vec<Rule>>> {
        self.rules.subscribe()
    }

    /// Makes the ports of `svc` match `specs` (empty: the Service is gone).
    pub fn set_service(&mut self, svc: &ServiceKey, specs: Vec<PortSpec>) {
        let old = self.by_service.remove(svc).unwrap_or_default();
        let new: Vec<PortKey> = specs.iter().map(|s| s.key.clone()).collect();
        for key in old.iter().filter(|k| !new.contains(k)) {
            self.stop_port(key);
        }
        for spec in specs {
            self.set_port(spec);
        }
        if !new.is_empty() {
            self.by_service.insert(svc.clone(), new);
        }
        self.publish_rules();
    }

    /// Waits until the kernel data path, if there is one, has programmed
    /// every port handed to it so far (at most `patience`); returns whether
    /// it has.
    pub async fn kernel_programmed(&self, patience: Duration) -> bool {
        match &self.cfg.kernel {
            Some(k) => k.programmed(patience).await,
            None => true,
        }
    }

    /// Whether some listener could not be bound.
    pub fn has_failures(&self) -> bool {
        self.ports.values().any(|r| {
            matches!(r.node_port, Listeners::Failed { .. })
                || matches!(r.portal, Listeners::Failed { .. })
        })
    }

    /// Tries again to bind the listeners that failed.
    pub fn retry(&mut self) {
        let keys: Vec<PortKey> = self
            .ports
            .iter()
            .filter(|(_, r)| {
                matches!(r.node_port, Listeners::Failed { .. })
                    || matches!(r.portal, Listeners::Failed { .. })
            })
            .map(|(k, _)| k.clone())
            .collect();
        self.retrying = true;
        for key in keys {
            let Some(mut r) = self.ports.remove(&key) else {
                continue;
            };
            if let Listeners::Failed { port } = r.node_port {
                r.node_port = self.bind_node_port(&r.port, port);
            }
            if let Listeners::Failed { .. } = r.portal {
                r.portal = self.bind_portal(&r.port);
                self.rules_dirty = true;
            }
            self.ports.insert(key, r);
        }
        self.retrying = false;
        self.publish_rules();
    }

    /// Stops every port (the proxy is stopping).
    pub fn clear(&mut self) {
        let keys: Vec<PortKey> = self.ports.keys().cloned().collect();
        for key in keys {
            self.stop_port(&key);
        }
        self.by_service.clear();
        self.publish_rules();
    }

    fn set_port(&mut self, spec: PortSpec) {
        let Some(mut r) = self.ports.remove(&spec.key) else {
            self.start_port(spec);
            return;
        };
        self.tell_kernel(&spec, &r.port.metrics);
        let removed = r.port.balancer().update(&spec.endpoints, spec.affinity);
        if removed > 0 {
            tracing::debug!(port = %spec.key, removed, "endpoints removed; their connections wind down");
        }
        if r.frontend != spec.frontend {
            if r.frontend.node_port != spec.frontend.node_port {
                r.node_port.stop();
                r.node_port = match spec.frontend.node_port {
                    Some(p) => self.bind_node_port(&r.port, p),
                    None => Listeners::None,
                };
            }
            let wants_portal = self.wants_portal(&spec.frontend);
            if wants_portal == matches!(r.portal, Listeners::None) {
                r.portal.stop();
                r.portal = if wants_portal {
                    self.bind_portal(&r.port)
                } else {
                    Listeners::None
                };
            }
            r.frontend = spec.frontend;
            self.rules_dirty = true;
        }
        self.ports.insert(spec.key, r);
    }

    fn start_port(&mut self, spec: PortSpec) {
        let mut balancer = Balancer::new(spec.affinity);
        balancer.update(&spec.endpoints, spec.affinity);
        let port = Arc::new(ServicePort {
            key: spec.key.clone(),
            balancer: Mutex::new(balancer),
            metrics: self.metrics.port(&spec.key),
            drain_timeout: self.cfg.drain_timeout,
            udp_timeout: self.cfg.udp_timeout,
        });
        self.tell_kernel(&spec, &port.metrics);
        let node_port = match spec.frontend.node_port {
            Some(p) => self.bind_node_port(&port, p),
            None => Listeners::None,
        };
        let portal = if self.wants_portal(&spec.frontend) {
            self.bind_portal(&port)
        } else {
            Listeners::None
        };
        tracing::debug!(port = %spec.key, endpoints = spec.endpoints.len(), "serving service port");
        self.metrics.service_ports.inc();
        self.rules_dirty |= !matches!(portal, Listeners::None);
        self.ports.insert(
            spec.key,
            Running {
                port,
                frontend: spec.frontend,
                node_port,
                portal,
            },
        );
    }

    fn stop_port(&mut self, key: &PortKey) {
        let Some(r) = self.ports.remove(key) else {
            return;
        };
        r.node_port.stop();
        r.portal.stop();
        if let Some(k) = &self.cfg.kernel {
            k.set(key, None);
        }
        let affinity = super::table::Affinity::None;
        r.port.balancer().update(&[], affinity);
        self.metrics.forget(key);
        self.metrics.service_ports.dec();
        self.rules_dirty |= !matches!(r.portal, Listeners::None);
        tracing::debug!(port = %key, "service port no longer served");
    }

    /// Hands the kernel what it should serve of `spec`, if there is a kernel.
    fn tell_kernel(&self, spec: &PortSpec, metrics: &PortMetrics) {
        if let Some(k) = &self.cfg.kernel {
            let wanted = kernel_port(spec).map(|port| Wanted {
                port,
                metrics: metrics.clone(),
            });
            k.set(&spec.key, wanted);
        }
    }

    fn wants_portal(&self, f: &Frontend) -> bool {
        self.cfg.redirect_to.is_some() && matches!(f.cluster_ip, Some(IpAddr::V4(_)))
    }

    fn bind_node_port(&self, port: &Arc<ServicePort>, node_port: u16) -> Listeners {
        let addrs: Vec<IpAddr> = match &self.cfg.nodeport_addresses {
            None => vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
            Some(list) => list.clone(),
        };
        if addrs.is_empty() {
            return Listeners::None;
        }
        let stop = self.shutdown.child_token();
        for ip in addrs {
            if let Err(e) = self.listen(port, SocketAddr::new(ip, node_port), &stop) {
                stop.cancel();
                if self.retrying {
                    tracing::debug!(port = %port.key, node_port, address = %ip, error = %e, "cannot listen on the NodePort yet");
                } else {
                    tracing::warn!(port = %port.key, node_port, address = %ip, error = %e,
                        "cannot listen on the NodePort (in use by another program?); retrying");
                }
                return Listeners::Failed { port: node_port };
            }
        }
        Listeners::Bound {
            port: node_port,
            stop,
        }
    }

    fn bind_portal(&self, port: &Arc<ServicePort>) -> Listeners {
        let Some(ip) = self.cfg.redirect_to else {
            return Listeners::None;
        };
        let stop = self.shutdown.child_token();
        match self.listen(port, SocketAddr::from((ip, 0)), &stop) {
            Ok(bound) => Listeners::Bound { port: bound, stop },
            Err(e) => {
                if self.retrying {
                    tracing::debug!(port = %port.key, address = %ip, error = %e, "cannot listen for the ClusterIP redirect yet");
                } else {
                    tracing::warn!(port = %port.key, address = %ip, error = %e,
                        "cannot listen for the ClusterIP redirect; retrying");
                }
                Listeners::Failed { port: 0 }
            }
        }
    }

    /// Binds `addr` for the port's protocol and serves it until `stop`;
    /// returns the bound port.
    fn listen(
        &self,
        port: &Arc<ServicePort>,
        addr: SocketAddr,
        stop: &CancellationToken,
    ) -> std::io::Result<u16> {
        match port.key.protocol {
            Protocol::Tcp => {
                let l = bind_tcp(addr)?;
                let bound = l.local_addr()?.port();
                self.tasks.spawn(tcp::serve(
                    l,
                    port.clone(),
                    stop.clone(),
                    self.shutdown.clone(),
                    self.tasks.clone(),
                ));
                Ok(bound)
            }
            Protocol::Udp => {
                let s = bind_udp(addr)?;
                let bound = s.local_addr()?.port();
                self.tasks.spawn(udp::serve(
                    s,
                    port.clone(),
                    stop.clone(),
                    self.shutdown.clone(),
                    self.tasks.clone(),
                ));
                Ok(bound)
            }
        }
    }

    fn publish_rules(&mut self) {
        if !std::mem::take(&mut self.rules_dirty) {
            return;
        }
        let Some(to) = self.cfg.redirect_to else {
            return;
        };
        let mut rules: Vec<Rule> = self
            .ports
            .values()
            .filter_map(|r| match (r.frontend.cluster_ip, &r.portal) {
                (Some(IpAddr::V4(ip)), Listeners::Bound { port, .. }) => Some(Rule {
                    cluster_ip: ip,
                    port: r.frontend.port,
                    protocol: r.port.key.protocol,
                    target: SocketAddrV4::new(to, *port),
                }),
                _ => None,
            })
            .collect();
        rules.sort();
        self.rules.send_if_modified(|current| {
            if **current == rules {
                false
            } else {
                *current = Arc::new(rules);
                true
            }
        });
    }
}

/// What the kernel serves of `spec`: its IPv4 ClusterIP and its NodePort,
/// to its IPv4 endpoints; `None` when it has neither frontend.
pub fn kernel_port(spec: &PortSpec) -> Option<super::nft::Port> {
    let cluster_ip = match spec.frontend.cluster_ip {
        Some(IpAddr::V4(ip)) => Some((ip, spec.frontend.port)),
        _ => None,
    };
    if cluster_ip.is_none() && spec.frontend.node_port.is_none() {
        return None;
    }
    let endpoints = spec
        .endpoints
        .iter()
        .filter_map(|e| match e {
            SocketAddr::V4(a) => Some(*a),
            SocketAddr::V6(_) => None,
        })
        .collect();
    Some(super::nft::Port {
        protocol: spec.key.protocol,
        cluster_ip,
        node_port: spec.frontend.node_port,
        affinity: spec.affinity,
        endpoints,
    })
}

/// A TCP listener on `addr` (SO_REUSEADDR, so a restart finds its ports free).
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(1024)
}

/// A UDP socket on `addr`.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::table::Affinity;

    fn spec(
        name: &str,
        node_port: Option<u16>,
        cluster_ip: Option<&str>,
        eps: &[SocketAddr],
    ) -> PortSpec {
        PortSpec {
            key: PortKey {
                service: ServiceKey {
                    namespace: "ns".into(),
                    name: name.into(),
                },
                port_name: String::new(),
                protocol: Protocol::Tcp,
            },
            frontend: Frontend {
                cluster_ip: cluster_ip.map(|s| s.parse().unwrap()),
                port: 80,
                node_port,
            },
            affinity: Affinity::None,
            endpoints: eps.to_vec(),
        }
    }

    fn dataplane(redirect: bool) -> Dataplane {
        Dataplane::new(
            Config {
                redirect_to: redirect.then_some(Ipv4Addr::LOCALHOST),
                kernel: None,
                nodeport_addresses: Some(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
                drain_timeout: Duration::from_secs(1),
                udp_timeout: Duration::from_secs(1),
            },
            Arc::new(Metrics::default()),
            CancellationToken::new(),
            TaskTracker::new(),
        )
    }

    #[tokio::test]
    async fn redirect_rules_follow_the_cluster_ip_ports() {
        let mut dp = dataplane(true);
        let rules = dp.rules();
        let key = ServiceKey {
            namespace: "ns".into(),
            name: "a".into(),
        };
        dp.set_service(&key, vec![spec("a", None, Some("10.0.0.2"), &[])]);
        let r = rules.borrow().clone();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].cluster_ip, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(*r[0].target.ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(r[0].target.port(), 0);
        // An endpoints change alone does not touch the rules.
        let before = rules.borrow().clone();
        dp.set_service(
            &key,
            vec![spec(
                "a",
                None,
                Some("10.0.0.2"),
                &["127.0.0.1:1".parse().unwrap()],
            )],
        );
        assert!(Arc::ptr_eq(&before, &rules.borrow()));
        dp.set_service(&key, vec![]);
        assert!(rules.borrow().is_empty());
        assert!(dp.ports.is_empty());
    }

    #[test]
    fn the_kernel_serves_ipv4_cluster_ips_and_node_ports() {
        let eps: Vec<SocketAddr> = vec![
            "192.0.2.2:31000".parse().unwrap(),
            "[2001:db8::1]:31000".parse().unwrap(),
        ];
        let p = kernel_port(&spec("a", Some(30080), Some("10.0.0.2"), &eps)).unwrap();
        assert_eq!(p.cluster_ip, Some((Ipv4Addr::new(10, 0, 0, 2), 80)));
        assert_eq!(p.node_port, Some(30080));
        assert_eq!(
            p.endpoints,
            vec!["192.0.2.2:31000".parse().unwrap()],
            "IPv4 only"
        );
        let v6 = kernel_port(&spec("b", Some(30081), Some("2001:db8::7"), &eps)).unwrap();
        assert_eq!(v6.cluster_ip, None);
        assert!(kernel_port(&spec("c", None, Some("2001:db8::7"), &eps)).is_none());
    }

    #[tokio::test]
    async fn node_ports_in_use_are_retried() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = taken.local_addr().unwrap().port();
        let mut dp = dataplane(false);
        let key = ServiceKey {
            namespace: "ns".into(),
            name: "b".into(),
        };
        dp.set_service(&key, vec![spec("b", Some(p), Some("10.0.0.3"), &[])]);
        assert!(dp.has_failures());
        drop(taken);
        dp.retry();
        assert!(!dp.has_failures());
        assert!(
            dp.rules().borrow().is_empty(),
            "no redirect without the privilege"
        );
    }
}
