//! This node's addresses: the local IPv4 addresses NodePorts may be served
//! on (`--nodeport-addresses`), and the address ClusterIP traffic is
//! redirected to.
//!
//! Local addresses are read once at start from `/proc/net/fib_trie` (the
//! kernel's routing trie lists every local address as a `/32 host LOCAL`
//! leaf); addresses added later are not picked up until a restart.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

/// An IPv4 network such as `192.0.2.0/24` (`--nodeport-addresses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    bits: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, bits) = s.split_once('/').ok_or_else(|| {
            format!("{s:?} is not an IPv4 CIDR; write it like 192.0.2.0/24 or 127.0.0.1/32")
        })?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{s:?}: {ip:?} is not an IPv4 address"))?;
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| *b <= 32)
            .ok_or_else(|| format!("{s:?}: the prefix length must be 0-32"))?;
        Ok(Cidr {
            base: u32::from(ip) & mask(bits),
            bits,
        })
    }
}

fn mask(bits: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0)
}

impl Cidr {
    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.bits) == self.base
    }
}

/// The local IPv4 addresses listed in a `/proc/net/fib_trie` text.
pub fn parse_fib_trie(text: &str) -> BTreeSet<Ipv4Addr> {
    let mut out = BTreeSet::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(ip) = t.strip_prefix("|-- ") {
            last = ip.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL")
            && let Some(ip) = last
        {
            out.insert(ip);
        }
    }
    out
}

/// This host's local IPv4 addresses.
pub fn local_addresses() -> std::io::Result<BTreeSet<Ipv4Addr>> {
    Ok(parse_fib_trie(&std::fs::read_to_string(
        "/proc/net/fib_trie",
    )?))
}

/// The addresses NodePorts are served on: the local ones inside `filter`,
/// or `None` for every address (0.0.0.0) when there is no filter.
pub fn nodeport_addresses(filter: &[Cidr], local: &BTreeSet<Ipv4Addr>) -> Option<Vec<IpAddr>> {
    if filter.is_empty() {
        return None;
    }
    Some(
        local
            .iter()
            .filter(|ip| filter.iter().any(|c| c.contains(**ip)))
            .map(|ip| IpAddr::V4(*ip))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRIE: &str = "Main:
  +-- 0.0.0.0/0 3 0 4
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 4
           |-- 192.0.2.2
              /32 host LOCAL
";

    #[test]
    fn local_addresses_from_the_fib_trie() {
        let got: Vec<String> = parse_fib_trie(TRIE).iter().map(|i| i.to_string()).collect();
        assert_eq!(got, ["127.0.0.1", "192.0.2.2"]);
        assert!(local_addresses().unwrap().contains(&Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn cidrs_parse_and_filter() {
        let local = parse_fib_trie(TRIE);
        let c: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(c.contains(Ipv4Addr::new(127, 1, 2, 3)));
        assert!(!c.contains(Ipv4Addr::new(128, 0, 0, 1)));
        assert_eq!(
            nodeport_addresses(&[c], &local),
            Some(vec![IpAddr::from([127, 0, 0, 1])])
        );
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(nodeport_addresses(&[all], &local).unwrap().len(), 2);
        assert_eq!(nodeport_addresses(&[], &local), None);
        for bad in ["10.0.0.1", "10.0.0.0/33", "fe80::/64", "x/8"] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
