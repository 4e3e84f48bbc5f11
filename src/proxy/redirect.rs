//! ClusterIP redirection: kernel NAT rules that send traffic for
//! `ClusterIP:port` to the proxy's own listener for that service port.
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
//! Two backends, chosen by `--proxy-mode`:
//! * nftables (`nft`): km's own table `ip km-proxy`, holding a map
//!   `ClusterIP . protocol . port → node address . listener port` and two
//!   base chains that look it up. Every change rewrites the whole table in
//!   one `nft -f` transaction (the table is declared, deleted and
//!   re-created atomically), so a stale table from a crashed proxy is simply
//!   replaced at start.
//! * iptables (`iptables-restore --noflush`): a chain `KM-SERVICES` in the
//!   nat table, flushed and refilled in one restore, jumped to from OUTPUT
//!   and PREROUTING.
//!
//! The rules are removed when the proxy stops. Existing connections survive
//! a rewrite: conntrack keeps the NAT of flows already set up.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use super::table::Protocol;

/// km's nftables table (family ip).
pub const NFT_TABLE: &str = "km-proxy";
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

/// Why rules could not be programmed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// `nft`, `iptables`, ...
        program: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program failed.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// `nft`, `iptables`, ...
        program: &'static str,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// Which kernel interface programs the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `nft`, table `ip km-proxy`.
    Nftables,
    /// `iptables-restore`, chain `KM-SERVICES` of the nat table.
    Iptables,
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// The `nft -f` script that replaces km's table with one holding `rules`.
pub fn nft_script(rules: &[Rule]) -> String {
    let mut s = String::with_capacity(512 + rules.len() * 48);
    s.push_str(&format!(
        "table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n"
    ));
    s.push_str(&format!("table ip {NFT_TABLE} {{\n"));
    s.push_str("  map services {\n");
    s.push_str("    type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service\n");
    if !rules.is_empty() {
        s.push_str("    elements = {\n");
        for (i, r) in rules.iter().enumerate() {
            let sep = if i + 1 == rules.len() { "" } else { "," };
            s.push_str(&format!(
                "      {} . {} . {} : {} . {}{sep}\n",
                r.cluster_ip,
                proto(r.protocol),
                r.port,
                r.target.ip(),
                r.target.port()
            ));
        }
        s.push_str("    }\n");
    }
    s.push_str("  }\n");
    for hook in ["output", "prerouting"] {
        s.push_str(&format!(
            "  chain {hook} {{\n    type nat hook {hook} priority -100; policy accept;\n    meta l4proto {{ tcp, udp }} dnat ip to ip daddr . meta l4proto . th dport map @services\n  }}\n"
        ));
    }
    s.push_str("}\n");
    s
}

/// The `nft -f` script that removes km's table (whether or not it exists).
pub fn nft_delete_script() -> String {
    format!("table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n")
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
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Spawn { program, source })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|source| Error::Spawn { program, source })?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| Error::Spawn { program, source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Failed {
            program,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

impl Backend {
    /// `nftables` or `iptables`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::Iptables => "iptables",
        }
    }

    /// Replaces km's rules with `rules` in one transaction (creating the
    /// table or chain and its hooks when missing).
    pub async fn install(self, rules: &[Rule]) -> Result<(), Error> {
        match self {
            Backend::Nftables => command("nft", &["-f", "-"], Some(&nft_script(rules))).await,
            Backend::Iptables => {
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
        }
    }

    /// Removes km's rules, if there are any.
    pub async fn remove(self) -> Result<(), Error> {
        match self {
            Backend::Nftables => command("nft", &["-f", "-"], Some(&nft_delete_script())).await,
            Backend::Iptables => {
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
        }
    }
}

/// Keeps the kernel's rules equal to the latest set sent on `rules` until
/// `stop`, then removes them. Changes that arrive while a rewrite runs are
/// coalesced into the next one; a failed rewrite is retried every second.
pub async fn keep(
    backend: Backend,
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
        match backend.install(&current).await {
            Ok(()) => {
                if failing {
                    tracing::info!(backend = backend.name(), "ClusterIP rules programmed again");
                }
                failing = false;
                tracing::debug!(
                    backend = backend.name(),
                    rules = current.len(),
                    "ClusterIP rules programmed"
                );
            }
            Err(e) => {
                metrics.redirect_failures.inc();
                if !failing {
                    tracing::warn!(backend = backend.name(), error = %e, "cannot program the ClusterIP rules; retrying every second");
                }
                failing = true;
            }
        }
    }
    match backend.remove().await {
        Ok(()) => tracing::info!(backend = backend.name(), "ClusterIP rules removed"),
        Err(e) => {
            tracing::warn!(backend = backend.name(), error = %e, "cannot remove the ClusterIP rules")
        }
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
    fn nft_script_replaces_the_table_atomically() {
        let s = nft_script(&rules());
        assert!(
            s.starts_with("table ip km-proxy\ndelete table ip km-proxy\ntable ip km-proxy {\n"),
            "{s}"
        );
        assert!(
            s.contains("10.0.0.2 . tcp . 80 : 192.0.2.2 . 40000,\n"),
            "{s}"
        );
        assert!(
            s.contains("10.0.0.3 . udp . 53 : 192.0.2.2 . 40001\n"),
            "{s}"
        );
        assert!(s.contains("type nat hook output priority -100;"), "{s}");
        assert!(s.contains("type nat hook prerouting priority -100;"), "{s}");
        let empty = nft_script(&[]);
        assert!(
            !empty.contains("elements"),
            "nft rejects an empty element list: {empty}"
        );
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

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let e = command("km-no-such-program", &[], None).await.unwrap_err();
        assert!(
            e.to_string().starts_with("cannot run km-no-such-program"),
            "{e}"
        );
    }
}
