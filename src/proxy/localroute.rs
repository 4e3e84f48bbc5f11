//! ClusterIPs routed to this host (`--cluster-ip-local-routes`, with the
//! nftables data path): each served ClusterIP gets a `/32` route of type
//! `local` on `lo` in the kernel's `local` table, as kube-proxy's IPVS mode
//! binds ClusterIPs to its `kube-ipvs0` device.
//!
//! Without it, a connection from this node to a ClusterIP is routed by the
//! default route before the nat hook DNATs it, so TCP sizes its segments
//! for that interface's MTU (1500) even when the endpoint is on this node
//! and the packets then cross loopback (MTU 65536): bulk transfers run at
//! about half the speed of a direct connection. With the route, the
//! connection takes loopback's MTU from the start; DNAT still sends it to
//! its endpoint, on this node or another (masqueraded when it leaves).
//!
//! Each route names this node's address as its preferred source, so that
//! a client on this node still talks from that address, as it would through
//! the default route: a reply sent from an endpoint's unconnected socket
//! (most UDP servers) goes back to that address and conntrack translates
//! it. With the ClusterIP itself as the source, such a reply would leave
//! from the ClusterIP, match no connection and be lost.
//!
//! The routes carry routing protocol [`PROTO`], so that km's own are told
//! from anyone else's: start and exit flush them all, a crashed proxy's
//! leftovers included.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::tool;

/// The routing protocol number that marks km proxy's routes (`ip route
/// show table local proto 173`).
pub const PROTO: u8 = 173;

/// The `ip -batch` script that adds the routes of `add` (preferred source
/// `src`) and removes those of `remove`.
pub fn script<'a>(
    add: impl IntoIterator<Item = &'a Ipv4Addr>,
    remove: impl IntoIterator<Item = &'a Ipv4Addr>,
    src: Ipv4Addr,
) -> String {
    let mut s = String::new();
    for ip in remove {
        let _ = writeln!(
            s,
            "route del local {ip}/32 dev lo table local proto {PROTO}"
        );
    }
    for ip in add {
        let _ = writeln!(
            s,
            "route replace local {ip}/32 dev lo table local proto {PROTO} scope host src {src}"
        );
    }
    s
}

/// The ClusterIPs routed to this host; keeps the kernel's routes equal to
/// what [`LocalRoutes::set`] is given.
#[derive(Debug)]
pub struct LocalRoutes {
    /// This node's address: the routes' preferred source.
    src: Ipv4Addr,
    routed: BTreeSet<Ipv4Addr>,
    /// The last attempt failed (warned once until one succeeds).
    failing: bool,
}

impl LocalRoutes {
    /// None yet; routes will prefer `src` (this node's address) as source.
    pub fn new(src: Ipv4Addr) -> LocalRoutes {
        LocalRoutes {
            src,
            routed: BTreeSet::new(),
            failing: false,
        }
    }

    /// Removes every route km's proxy added (leftovers of an earlier run).
    pub async fn flush() -> Result<(), tool::Error> {
        tool::run(
            "ip",
            &[
                "route",
                "flush",
                "table",
                "local",
                "proto",
                &PROTO.to_string(),
            ],
            None,
        )
        .await
        .map(drop)
    }

    /// Routes exactly the ClusterIPs `wanted` to this host. A failure is
    /// logged (once until it works again) and retried on the next call:
    /// without the routes, ClusterIPs still work, only slower from this node.
    pub async fn set(&mut self, wanted: BTreeSet<Ipv4Addr>) {
        if wanted == self.routed {
            return;
        }
        let text = script(
            wanted.difference(&self.routed),
            self.routed.difference(&wanted),
            self.src,
        );
        match tool::run("ip", &["-force", "-batch", "-"], Some(&text)).await {
            Ok(_) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("ClusterIP local routes programmed again");
                }
                self.routed = wanted;
            }
            Err(e) => {
                // Some commands may have worked (`-force` goes on after a
                // failure): start the next attempt from what is there.
                if let Ok(now) = Self::read().await {
                    self.routed = now;
                }
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(error = %e,
                        "cannot route ClusterIPs to this host (connections from this node to them still work, at the default route's MTU); retrying on the next change");
                }
            }
        }
    }

    /// The routes km's proxy has in the kernel now.
    async fn read() -> Result<BTreeSet<Ipv4Addr>, tool::Error> {
        let proto = PROTO.to_string();
        let args = ["-j", "route", "show", "table", "local", "proto", &proto];
        Ok(parse_routes(&tool::run("ip", &args, None).await?))
    }
}

/// The destinations in `ip -j route show` output.
fn parse_routes(json: &str) -> BTreeSet<Ipv4Addr> {
    let routes: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
    routes
        .iter()
        .filter_map(|r| r.get("dst")?.as_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_come_before_additions_and_every_route_is_marked() {
        let a: Ipv4Addr = "10.96.0.10".parse().unwrap();
        let b: Ipv4Addr = "10.96.0.11".parse().unwrap();
        let node = Ipv4Addr::new(192, 0, 2, 2);
        assert_eq!(
            script([&a], [&b], node),
            "route del local 10.96.0.11/32 dev lo table local proto 173\n\
             route replace local 10.96.0.10/32 dev lo table local proto 173 scope host src 192.0.2.2\n"
        );
        assert_eq!(script([], [], node), "");
    }

    #[test]
    fn routes_are_read_from_ip_json() {
        let json = r#"[{"type":"local","dst":"10.96.99.1","dev":"lo","scope":"host","flags":[]},
                       {"type":"local","dst":"default","dev":"lo"}]"#;
        assert_eq!(
            parse_routes(json).into_iter().collect::<Vec<_>>(),
            ["10.96.99.1".parse::<Ipv4Addr>().unwrap()]
        );
        assert!(parse_routes("").is_empty());
    }
}
