//! ClusterIP redirection in iptables mode: kernel NAT rules that send
//! traffic for `ClusterIP:port` to the proxy's own listener for that service
//! port, which forwards it to an endpoint in user space. (nftables mode
//! DNATs straight to the endpoints instead: [`super::kernel`].)
//!
//! A ClusterIP belongs to no interface, so the proxy cannot listen on it.
//! Instead, each service port gets a listener on this node's address
//! (`--bind-address`, else the source address of the default route), and a
//! DNAT rule rewrites `ClusterIP:port` to it, in both the nat OUTPUT hook
//! (connections made on this node) and the nat PREROUTING hook (connections
//! routed through this node). DNAT to the node's own address rather than to
//! 127.0.0.1 keeps PREROUTING traffic working without
//! `net.ipv4.conf.all.route_localnet`, and gives UDP replies the source
//! address conntrack expects.
//!
//! The rules live in a chain `KM-SERVICES` of the nat table, flushed and
//! refilled in one `iptables-restore --noflush`, and jumped to from OUTPUT
//! and PREROUTING. They are removed when the proxy stops. Existing
//! connections survive a rewrite: conntrack keeps the NAT of flows already
//! set up.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use super::table::Protocol;
use super::tool::{self, Error};

/// km's iptables chain in the nat table.
pub const IPT_CHAIN: &str = "KM-SERVICES";

/// One redirection: traffic for `cluster_ip:port` goes to `target`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// The Service's ClusterIP.
    pub cluster_ip: Ipv4Addr,
    /// The service port.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
    /// The proxy's listener for the service port.
    pub target: SocketAddrV4,
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// The `iptables-restore --noflush` input that refills km's chain with `rules`.
pub fn iptables_script(rules: &[Rule]) -> String {
    let mut s = format!("*nat\n:{IPT_CHAIN} - [0:0]\n");
    for r in rules {
        let p = proto(r.protocol);
        s.push_str(&format!(
            "-A {IPT_CHAIN} -d {}/32 -p {p} -m {p} --dport {} -j DNAT --to-destination {}\n",
            r.cluster_ip, r.port, r.target
        ));
    }
    s.push_str("COMMIT\n");
    s
}

async fn command(program: &'static str, args: &[&str], stdin: Option<&str>) -> Result<(), Error> {
    tool::run(program, args, stdin).await.map(drop)
}

/// Replaces km's rules with `rules` in one `iptables-restore` (creating the
/// chain and its jumps when missing).
pub async fn install(rules: &[Rule]) -> Result<(), Error> {
    command(
        "iptables-restore",
        &["-w", "--noflush"],
        Some(&iptables_script(rules)),
    )
    .await?;
    for hook in ["OUTPUT", "PREROUTING"] {
        let check = ["-w", "-t", "nat", "-C", hook, "-j", IPT_CHAIN];
        if command("iptables", &check, None).await.is_err() {
            command(
                "iptables",
                &["-w", "-t", "nat", "-I", hook, "1", "-j", IPT_CHAIN],
                None,
            )
            .await?;
        }
    }
    Ok(())
}

/// Removes km's chain and its jumps, if there are any.
pub async fn remove() -> Result<(), Error> {
    let exists = ["-w", "-t", "nat", "-L", IPT_CHAIN, "-n"];
    if command("iptables", &exists, None).await.is_err() {
        return Ok(());
    }
    for hook in ["OUTPUT", "PREROUTING"] {
        let delete = ["-w", "-t", "nat", "-D", hook, "-j", IPT_CHAIN];
        // Once per jump; a crashed proxy may have left several.
        for _ in 0..16 {
            if command("iptables", &delete, None).await.is_err() {
                break;
            }
        }
    }
    command("iptables", &["-w", "-t", "nat", "-F", IPT_CHAIN], None).await?;
    command("iptables", &["-w", "-t", "nat", "-X", IPT_CHAIN], None).await
}

/// Keeps the kernel's rules equal to the latest set sent on `rules` until
/// `stop`, then removes them. Changes that arrive while a rewrite runs are
/// coalesced into the next one; a failed rewrite is retried every second.
pub async fn keep(
    mut rules: watch::Receiver<Arc<Vec<Rule>>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        let wait = async {
            if failing {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(())
            } else {
                rules.changed().await
            }
        };
        tokio::select! {
            r = wait => if r.is_err() { break },
            _ = stop.cancelled() => break,
        }
        let current = rules.borrow_and_update().clone();
        match install(&current).await {
            Ok(()) => {
                if failing {
                    tracing::info!("iptables ClusterIP rules programmed again");
                }
                failing = false;
                tracing::debug!(rules = current.len(), "iptables ClusterIP rules programmed");
            }
            Err(e) => {
                metrics.redirect_failures.inc();
                if !failing {
                    tracing::warn!(error = %e, "cannot program the iptables ClusterIP rules; retrying every second");
                }
                failing = true;
            }
        }
    }
    match remove().await {
        Ok(()) => tracing::info!("iptables ClusterIP rules removed"),
        Err(e) => tracing::warn!(error = %e, "cannot remove the iptables ClusterIP rules"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<Rule> {
        vec![
            Rule {
                cluster_ip: Ipv4Addr::new(10, 0, 0, 2),
                port: 80,
                protocol: Protocol::Tcp,
                target: "192.0.2.2:40000".parse().unwrap(),
            },
            Rule {
                cluster_ip: Ipv4Addr::new(10, 0, 0, 3),
                port: 53,
                protocol: Protocol::Udp,
                target: "192.0.2.2:40001".parse().unwrap(),
            },
        ]
    }

    #[test]
    fn iptables_script_refills_the_chain() {
        let s = iptables_script(&rules());
        assert_eq!(
            s,
            "*nat\n:KM-SERVICES - [0:0]\n\
             -A KM-SERVICES -d 10.0.0.2/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 192.0.2.2:40000\n\
             -A KM-SERVICES -d 10.0.0.3/32 -p udp -m udp --dport 53 -j DNAT --to-destination 192.0.2.2:40001\n\
             COMMIT\n"
        );
    }
}
