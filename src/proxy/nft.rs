//! The kernel data path's ruleset, as `nft -f` text (pure functions; the
//! [`super::kernel`] module runs them).
//!
//! Everything lives in km's own table `ip km-proxy`:
//!
//! ```text
//! map service-ips        ClusterIP . l4proto . port : goto svc-…
//! map service-nodeports  l4proto . NodePort         : goto svc-…
//! chain nat-prerouting   (nat, prerouting, dstnat)  jump services
//! chain nat-output       (nat, output, -100)        jump services
//! chain services         the two map lookups; NodePorts only for local,
//!                        non-127.0.0.0/8 destinations (`fib daddr type
//!                        local`, or the --nodeport-addresses)
//! chain nat-postrouting  (nat, postrouting, srcnat) masquerade what a
//!                        service chain marked, unless it stays on `lo`
//! chain svc-<id>         one per service port: count, mark, affinity,
//!                        then `numgen inc mod N` to an endpoint chain;
//!                        without endpoints: count and reject
//! chain ep-<id>-<ip>/<port>  one per endpoint: (affinity update) DNAT
//! set aff-<id>-<ip>/<port>   ClientIP affinity: sources that chose this
//!                        endpoint, each forgotten after timeoutSeconds idle
//! counter conn-<id>, rej-<id>  connections DNATed / rejected
//! ```
//!
//! The nat hooks see only the first packet of a connection (conntrack
//! carries the rest), so a counter's packets are connections, and a rule
//! change never disturbs established flows.
//!
//! Endpoints are picked round-robin (`numgen inc`), as the user-space path
//! does. A service port without ready endpoints rejects: a TCP reset, or
//! ICMP port unreachable for UDP (a client on this node sees its send fail).
//! DNATed traffic is marked ([`MASQUERADE_MARK`]) and masqueraded when it
//! leaves the node, so an endpoint on another host answers through this
//! one; traffic to an endpoint on this node is delivered locally and keeps
//! its source address.
//!
//! Loopback NodePorts (127.0.0.0/8) are not DNATed: that would need
//! `route_localnet`; the user-space NodePort listener serves them.
//!
//! [`replace`] is the whole table (start, or recovery after a failed
//! update): it declares, deletes and re-creates the table in one
//! transaction, so a stale table from a crashed proxy goes atomically.
//! [`change`] is the incremental update of one service port: only its own
//! chains, sets, counters and map elements are added, refilled or deleted.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::table::{Affinity, PortKey, Protocol};

/// km's nftables table (family ip).
pub const TABLE: &str = "km-proxy";

/// The packet mark bit that asks nat-postrouting to masquerade (the bit
/// kube-proxy uses for the same purpose).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// Which local destinations reach NodePorts in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// Every local address but 127.0.0.0/8 (`fib daddr type local`).
    Local,
    /// Only these (the non-loopback ones of `--nodeport-addresses`); none
    /// at all when empty.
    Only(Vec<Ipv4Addr>),
}

/// What the kernel serves for one service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The ClusterIP and the service port on it, when it has one.
    pub cluster_ip: Option<(Ipv4Addr, u16)>,
    /// The NodePort, when it has one.
    pub node_port: Option<u16>,
    /// Session affinity.
    pub affinity: Affinity,
    /// Ready endpoints, sorted, without duplicates.
    pub endpoints: Vec<SocketAddrV4>,
}

/// The names of one service port's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    hash: String,
    readable: String,
}

impl Names {
    /// The names for `key`: a hash of it (unique) and its parts (readable).
    pub fn of(key: &PortKey) -> Names {
        let proto = proto(key.protocol);
        let port = if key.port_name.is_empty() {
            "-"
        } else {
            &key.port_name
        };
        let readable = format!(
            "{}/{}/{proto}/{}",
            clean(&key.service.namespace),
            clean(&key.service.name),
            clean(port)
        );
        Names {
            hash: format!("{:016x}", fnv1a(key.to_string().as_bytes())),
            readable,
        }
    }

    /// The service port's chain.
    pub fn chain(&self) -> String {
        format!("svc-{}-{}", self.hash, self.readable)
    }

    /// The counter of connections DNATed to an endpoint.
    pub fn connections(&self) -> String {
        format!("conn-{}-{}", self.hash, self.readable)
    }

    /// The counter of connections rejected for want of an endpoint.
    pub fn rejected(&self) -> String {
        format!("rej-{}-{}", self.hash, self.readable)
    }

    /// The chain of one endpoint.
    pub fn endpoint(&self, ep: SocketAddrV4) -> String {
        format!("ep-{}-{}/{}", self.hash, ep.ip(), ep.port())
    }

    /// The ClientIP affinity set of one endpoint.
    pub fn affinity(&self, ep: SocketAddrV4) -> String {
        format!("aff-{}-{}/{}", self.hash, ep.ip(), ep.port())
    }
}

/// Characters nft takes in a bare name; anything else becomes `_` (the
/// hash keeps names unique).
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// 64-bit FNV-1a: stable across runs and builds.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// The script that replaces km's table with an empty one (base chains and
/// maps, no service port); follow it with [`change`]s from nothing.
pub fn replace(nodeports: &NodePortAddresses) -> String {
    let mut s = format!("table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n");
    s.push_str(
        "  map service-ips {\n    type ipv4_addr . inet_proto . inet_service : verdict\n  }\n",
    );
    s.push_str("  map service-nodeports {\n    type inet_proto . inet_service : verdict\n  }\n");
    s.push_str("  chain services {\n    ip daddr . meta l4proto . th dport vmap @service-ips\n");
    let local = match nodeports {
        NodePortAddresses::Local => {
            Some("fib daddr type local ip daddr != 127.0.0.0/8".to_string())
        }
        NodePortAddresses::Only(list) => {
            let list: Vec<String> = list
                .iter()
                .filter(|ip| !ip.is_loopback())
                .map(|ip| ip.to_string())
                .collect();
            (!list.is_empty()).then(|| format!("ip daddr {{ {} }}", list.join(", ")))
        }
    };
    if let Some(local) = local {
        let _ = writeln!(
            s,
            "    {local} meta l4proto . th dport vmap @service-nodeports"
        );
    }
    s.push_str("  }\n");
    s.push_str("  chain nat-prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    jump services\n  }\n");
    s.push_str("  chain nat-output {\n    type nat hook output priority -100; policy accept;\n    jump services\n  }\n");
    let _ = writeln!(
        s,
        "  chain nat-postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         meta mark & {MASQUERADE_MARK:#x} == {MASQUERADE_MARK:#x} oifname != \"lo\" meta mark set meta mark & {:#x} masquerade\n  }}",
        !MASQUERADE_MARK
    );
    s.push_str("}\n");
    s
}

/// The script that removes km's table, whether or not it exists.
pub fn delete() -> String {
    format!("table ip {TABLE}\ndelete table ip {TABLE}\n")
}

/// Appends to `s` the commands that turn service port `names` from `old`
/// into `new` (`None`: not programmed). Nothing when they are equal.
pub fn change(s: &mut String, names: &Names, old: Option<&Port>, new: Option<&Port>) {
    match (old, new) {
        (None, None) => {}
        (None, Some(new)) => add(s, names, new),
        (Some(old), None) => remove(s, names, old),
        (Some(old), Some(new)) => update(s, names, old, new),
    }
}

fn add(s: &mut String, n: &Names, port: &Port) {
    let _ = writeln!(s, "add counter ip {TABLE} {}", n.connections());
    let _ = writeln!(s, "add counter ip {TABLE} {}", n.rejected());
    let _ = writeln!(s, "add chain ip {TABLE} {}", n.chain());
    for &ep in &port.endpoints {
        add_endpoint(s, n, port, ep, true);
    }
    service_rules(s, n, port);
    elements(s, "add", n, port);
}

fn remove(s: &mut String, n: &Names, port: &Port) {
    elements(s, "delete", n, port);
    let _ = writeln!(s, "flush chain ip {TABLE} {}", n.chain());
    for &ep in &port.endpoints {
        remove_endpoint(s, n, port, ep);
    }
    let _ = writeln!(s, "delete chain ip {TABLE} {}", n.chain());
    let _ = writeln!(s, "delete counter ip {TABLE} {}", n.connections());
    let _ = writeln!(s, "delete counter ip {TABLE} {}", n.rejected());
}

fn update(s: &mut String, n: &Names, old: &Port, new: &Port) {
    if old.cluster_ip != new.cluster_ip {
        if let Some(f) = old.cluster_ip {
            cluster_ip_element(s, "delete", n, old.protocol, f);
        }
        if let Some(f) = new.cluster_ip {
            cluster_ip_element(s, "add", n, new.protocol, f);
        }
    }
    if old.node_port != new.node_port {
        if let Some(p) = old.node_port {
            node_port_element(s, "delete", n, old.protocol, p);
        }
        if let Some(p) = new.node_port {
            node_port_element(s, "add", n, new.protocol, p);
        }
    }
    if old.endpoints == new.endpoints && old.affinity == new.affinity {
        return;
    }
    // The service chain refers to the endpoint chains and sets: emptied
    // first, so that they may go; refilled last, once they exist.
    let _ = writeln!(s, "flush chain ip {TABLE} {}", n.chain());
    let redo = old.affinity != new.affinity;
    for &ep in &old.endpoints {
        if !new.endpoints.contains(&ep) {
            remove_endpoint(s, n, old, ep);
        } else if redo {
            let _ = writeln!(s, "flush chain ip {TABLE} {}", n.endpoint(ep));
            if sticky(old).is_some() {
                let _ = writeln!(s, "delete set ip {TABLE} {}", n.affinity(ep));
            }
        }
    }
    for &ep in &new.endpoints {
        if !old.endpoints.contains(&ep) {
            add_endpoint(s, n, new, ep, true);
        } else if redo {
            add_endpoint(s, n, new, ep, false);
        }
    }
    service_rules(s, n, new);
}

fn sticky(port: &Port) -> Option<u64> {
    match port.affinity {
        Affinity::ClientIp(t) => Some(t.as_secs().max(1)),
        Affinity::None => None,
    }
}

/// The endpoint's affinity set (if sticky) and chain rules; the chain
/// itself too when `new_chain`.
fn add_endpoint(s: &mut String, n: &Names, port: &Port, ep: SocketAddrV4, new_chain: bool) {
    let chain = n.endpoint(ep);
    if let Some(timeout) = sticky(port) {
        let _ = writeln!(
            s,
            "add set ip {TABLE} {} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}",
            n.affinity(ep)
        );
    }
    if new_chain {
        let _ = writeln!(s, "add chain ip {TABLE} {chain}");
    }
    if sticky(port).is_some() {
        let _ = writeln!(
            s,
            "add rule ip {TABLE} {chain} update @{} {{ ip saddr }}",
            n.affinity(ep)
        );
    }
    let _ = writeln!(
        s,
        "add rule ip {TABLE} {chain} meta l4proto {} dnat to {ep}",
        proto(port.protocol)
    );
}

fn remove_endpoint(s: &mut String, n: &Names, port: &Port, ep: SocketAddrV4) {
    let chain = n.endpoint(ep);
    let _ = writeln!(s, "flush chain ip {TABLE} {chain}");
    let _ = writeln!(s, "delete chain ip {TABLE} {chain}");
    if sticky(port).is_some() {
        let _ = writeln!(s, "delete set ip {TABLE} {}", n.affinity(ep));
    }
}

/// The rules of the (empty) service chain.
fn service_rules(s: &mut String, n: &Names, port: &Port) {
    let chain = n.chain();
    if port.endpoints.is_empty() {
        let _ = writeln!(
            s,
            "add rule ip {TABLE} {chain} counter name {}",
            n.rejected()
        );
        let reject = match port.protocol {
            Protocol::Tcp => "reject with tcp reset",
            Protocol::Udp => "reject",
        };
        let _ = writeln!(s, "add rule ip {TABLE} {chain} {reject}");
        return;
    }
    let _ = writeln!(
        s,
        "add rule ip {TABLE} {chain} counter name {}",
        n.connections()
    );
    let _ = writeln!(
        s,
        "add rule ip {TABLE} {chain} meta mark set meta mark | {MASQUERADE_MARK:#x}"
    );
    if sticky(port).is_some() {
        for &ep in &port.endpoints {
            let _ = writeln!(
                s,
                "add rule ip {TABLE} {chain} ip saddr @{} goto {}",
                n.affinity(ep),
                n.endpoint(ep)
            );
        }
    }
    let pick: Vec<String> = port
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, &ep)| format!("{i} : goto {}", n.endpoint(ep)))
        .collect();
    let _ = writeln!(
        s,
        "add rule ip {TABLE} {chain} numgen inc mod {} vmap {{ {} }}",
        port.endpoints.len(),
        pick.join(", ")
    );
}

fn elements(s: &mut String, verb: &str, n: &Names, port: &Port) {
    if let Some(f) = port.cluster_ip {
        cluster_ip_element(s, verb, n, port.protocol, f);
    }
    if let Some(p) = port.node_port {
        node_port_element(s, verb, n, port.protocol, p);
    }
}

fn cluster_ip_element(s: &mut String, verb: &str, n: &Names, p: Protocol, f: (Ipv4Addr, u16)) {
    let key = format!("{} . {} . {}", f.0, proto(p), f.1);
    element(s, verb, "service-ips", &key, n);
}

fn node_port_element(s: &mut String, verb: &str, n: &Names, p: Protocol, node_port: u16) {
    let key = format!("{} . {node_port}", proto(p));
    element(s, verb, "service-nodeports", &key, n);
}

fn element(s: &mut String, verb: &str, map: &str, key: &str, n: &Names) {
    if verb == "add" {
        let _ = writeln!(
            s,
            "add element ip {TABLE} {map} {{ {key} : goto {} }}",
            n.chain()
        );
    } else {
        let _ = writeln!(s, "{verb} element ip {TABLE} {map} {{ {key} }}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::table::ServiceKey;
    use std::time::Duration;

    fn key(name: &str, port: &str, protocol: Protocol) -> PortKey {
        PortKey {
            service: ServiceKey {
                namespace: "ns".into(),
                name: name.into(),
            },
            port_name: port.into(),
            protocol,
        }
    }

    fn port(eps: &[&str], affinity: Affinity) -> Port {
        Port {
            protocol: Protocol::Tcp,
            cluster_ip: Some((Ipv4Addr::new(10, 96, 0, 7), 80)),
            node_port: Some(30080),
            affinity,
            endpoints: eps.iter().map(|e| e.parse().unwrap()).collect(),
        }
    }

    fn script(names: &Names, old: Option<&Port>, new: Option<&Port>) -> String {
        let mut s = String::new();
        change(&mut s, names, old, new);
        s
    }

    #[test]
    fn names_are_unique_readable_and_safe() {
        let a = Names::of(&key("web", "http", Protocol::Tcp));
        assert!(a.chain().starts_with("svc-"));
        assert!(a.chain().ends_with("-ns/web/tcp/http"), "{}", a.chain());
        let b = Names::of(&key("web", "http", Protocol::Udp));
        let c = Names::of(&key("web", "", Protocol::Tcp));
        assert_ne!(a.hash, b.hash);
        assert!(c.chain().ends_with("/tcp/-"), "{}", c.chain());
        let odd = Names::of(&key("we b", "h:t", Protocol::Tcp));
        assert!(odd.chain().ends_with("/we_b/tcp/h_t"), "{}", odd.chain());
        let ep: SocketAddrV4 = "192.0.2.2:31000".parse().unwrap();
        assert_eq!(
            a.endpoint(ep),
            format!("ep-{}-192.0.2.2/31000", a.hash),
            "endpoint chains are named by their service port and address"
        );
        // nft's limit on chain and set names is 255 bytes.
        let long = "x".repeat(63);
        let l = Names::of(&PortKey {
            service: ServiceKey {
                namespace: long.clone(),
                name: long,
            },
            port_name: "y".repeat(15),
            protocol: Protocol::Udp,
        });
        assert!(l.connections().len() < 256);
    }

    #[test]
    fn the_table_is_replaced_with_its_base_chains() {
        let s = replace(&NodePortAddresses::Local);
        assert!(
            s.starts_with("table ip km-proxy\ndelete table ip km-proxy\ntable ip km-proxy {\n"),
            "{s}"
        );
        assert!(
            s.contains("type nat hook prerouting priority dstnat;"),
            "{s}"
        );
        assert!(s.contains("type nat hook output priority -100;"), "{s}");
        assert!(
            s.contains("fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports"),
            "{s}"
        );
        assert!(
            s.contains("meta mark & 0x4000 == 0x4000 oifname != \"lo\" meta mark set meta mark & 0xffffbfff masquerade"),
            "{s}"
        );
        let only = replace(&NodePortAddresses::Only(vec![
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::new(192, 0, 2, 2),
        ]));
        assert!(
            only.contains(
                "    ip daddr { 192.0.2.2 } meta l4proto . th dport vmap @service-nodeports"
            ),
            "{only}"
        );
        let none = replace(&NodePortAddresses::Only(vec![Ipv4Addr::LOCALHOST]));
        assert!(!none.contains("@service-nodeports"), "{none}");
    }

    #[test]
    fn a_new_port_gets_its_chains_and_map_elements() {
        let n = Names::of(&key("web", "http", Protocol::Tcp));
        let p = port(&["192.0.2.2:31000", "192.0.2.3:31000"], Affinity::None);
        let s = script(&n, None, Some(&p));
        let svc = n.chain();
        let ep0 = n.endpoint("192.0.2.2:31000".parse().unwrap());
        let ep1 = n.endpoint("192.0.2.3:31000".parse().unwrap());
        let want = format!(
            "add counter ip km-proxy {conn}\n\
             add counter ip km-proxy {rej}\n\
             add chain ip km-proxy {svc}\n\
             add chain ip km-proxy {ep0}\n\
             add rule ip km-proxy {ep0} meta l4proto tcp dnat to 192.0.2.2:31000\n\
             add chain ip km-proxy {ep1}\n\
             add rule ip km-proxy {ep1} meta l4proto tcp dnat to 192.0.2.3:31000\n\
             add rule ip km-proxy {svc} counter name {conn}\n\
             add rule ip km-proxy {svc} meta mark set meta mark | 0x4000\n\
             add rule ip km-proxy {svc} numgen inc mod 2 vmap {{ 0 : goto {ep0}, 1 : goto {ep1} }}\n\
             add element ip km-proxy service-ips {{ 10.96.0.7 . tcp . 80 : goto {svc} }}\n\
             add element ip km-proxy service-nodeports {{ tcp . 30080 : goto {svc} }}\n",
            conn = n.connections(),
            rej = n.rejected(),
        );
        assert_eq!(s, want);
        // And goes again without a trace.
        let gone = script(&n, Some(&p), None);
        assert!(gone.starts_with(&format!(
            "delete element ip km-proxy service-ips {{ 10.96.0.7 . tcp . 80 }}\n\
             delete element ip km-proxy service-nodeports {{ tcp . 30080 }}\n\
             flush chain ip km-proxy {svc}\n"
        )));
        for obj in [svc, ep0, ep1] {
            assert!(gone.contains(&format!("delete chain ip km-proxy {obj}\n")));
        }
        assert!(gone.ends_with(&format!(
            "delete counter ip km-proxy {}\ndelete counter ip km-proxy {}\n",
            n.connections(),
            n.rejected()
        )));
    }

    #[test]
    fn without_endpoints_the_port_rejects() {
        let n = Names::of(&key("dns", "dns", Protocol::Udp));
        let mut p = port(&[], Affinity::None);
        p.protocol = Protocol::Udp;
        let s = script(&n, None, Some(&p));
        assert!(s.contains(&format!("add rule ip km-proxy {} reject\n", n.chain())));
        assert!(s.contains(&format!("counter name {}\n", n.rejected())));
        let tcp = port(&[], Affinity::None);
        let s = script(&n, None, Some(&tcp));
        assert!(s.contains("reject with tcp reset\n"), "{s}");
    }

    #[test]
    fn an_endpoints_change_touches_only_that_port() {
        let n = Names::of(&key("web", "http", Protocol::Tcp));
        let old = port(&["192.0.2.2:31000", "192.0.2.3:31000"], Affinity::None);
        assert_eq!(
            script(&n, Some(&old), Some(&old)),
            "",
            "no change, no command"
        );
        let new = port(&["192.0.2.3:31000", "192.0.2.4:31000"], Affinity::None);
        let s = script(&n, Some(&old), Some(&new));
        let gone = n.endpoint("192.0.2.2:31000".parse().unwrap());
        let kept = n.endpoint("192.0.2.3:31000".parse().unwrap());
        let added = n.endpoint("192.0.2.4:31000".parse().unwrap());
        assert!(
            s.starts_with(&format!("flush chain ip km-proxy {}\n", n.chain())),
            "{s}"
        );
        assert!(s.contains(&format!("delete chain ip km-proxy {gone}\n")));
        assert!(s.contains(&format!("add chain ip km-proxy {added}\n")));
        assert!(!s.contains(&format!("chain ip km-proxy {kept}\n")), "{s}");
        assert!(!s.contains("element"), "the frontends stay: {s}");
        assert!(
            s.ends_with(&format!(
                "numgen inc mod 2 vmap {{ 0 : goto {kept}, 1 : goto {added} }}\n"
            )),
            "{s}"
        );
        // A new NodePort alone swaps the element.
        let mut moved = new.clone();
        moved.node_port = Some(30081);
        assert_eq!(
            script(&n, Some(&new), Some(&moved)),
            format!(
                "delete element ip km-proxy service-nodeports {{ tcp . 30080 }}\n\
                 add element ip km-proxy service-nodeports {{ tcp . 30081 : goto {} }}\n",
                n.chain()
            )
        );
    }

    #[test]
    fn affinity_checks_the_sets_before_the_pick() {
        let n = Names::of(&key("sticky", "", Protocol::Tcp));
        let p = port(
            &["192.0.2.2:31000", "192.0.2.3:31000"],
            Affinity::ClientIp(Duration::from_secs(600)),
        );
        let s = script(&n, None, Some(&p));
        let ep: SocketAddrV4 = "192.0.2.2:31000".parse().unwrap();
        let (set, chain) = (n.affinity(ep), n.endpoint(ep));
        assert!(s.contains(&format!(
            "add set ip km-proxy {set} {{ type ipv4_addr; flags dynamic,timeout; timeout 600s; }}\n"
        )));
        assert!(s.contains(&format!(
            "add rule ip km-proxy {chain} update @{set} {{ ip saddr }}\n"
        )));
        let check = s
            .find(&format!("ip saddr @{set} goto {chain}"))
            .expect("affinity check");
        assert!(check < s.find("numgen").unwrap(), "{s}");
        // A new timeout re-creates the sets (their timeout is fixed).
        let mut longer = p.clone();
        longer.affinity = Affinity::ClientIp(Duration::from_secs(900));
        let s = script(&n, Some(&p), Some(&longer));
        let del = s.find(&format!("delete set ip km-proxy {set}\n")).unwrap();
        let add = s.find(&format!("add set ip km-proxy {set} ")).unwrap();
        assert!(del < add && s.contains("timeout 900s"), "{s}");
        assert!(
            !s.contains(&format!("add chain ip km-proxy {chain}")),
            "{s}"
        );
        // Dropping affinity drops the sets and the checks.
        let mut plain = p.clone();
        plain.affinity = Affinity::None;
        let s = script(&n, Some(&p), Some(&plain));
        assert!(!s.contains("add set") && !s.contains("ip saddr @"), "{s}");
    }
}
