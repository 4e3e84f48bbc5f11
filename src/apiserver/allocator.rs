//! Service ClusterIPs (from `--service-cluster-ip-range`) and NodePorts
//! (30000-32767): what is taken, rebuilt from the stored Services at start.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// An IPv4 CIDR such as `10.0.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    bits: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, bits) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR like 10.0.0.0/24"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{s:?}: {ip:?} is not an IPv4 address"))?;
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| (8..=30).contains(b))
            .ok_or_else(|| format!("{s:?}: the prefix length must be between 8 and 30"))?;
        let mask = u32::MAX << (32 - bits);
        Ok(Cidr {
            base: u32::from(ip) & mask,
            bits,
        })
    }
}

impl Cidr {
    fn size(&self) -> u32 {
        1 << (32 - self.bits)
    }

    /// Whether `ip` is a usable host address of this range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        n > self.base && n < self.base + self.size() - 1
    }

    /// The first host address (the `kubernetes` Service's).
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }
}

/// Why an address or port cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Outside the range.
    #[error("provided {what} {value} is not in the valid range {range}")]
    OutOfRange {
        /// "IP" or "port".
        what: &'static str,
        /// What was asked for.
        value: String,
        /// The range.
        range: String,
    },
    /// Taken by another Service.
    #[error("provided {what} {value} is already allocated")]
    Taken {
        /// "IP" or "port".
        what: &'static str,
        /// What was asked for.
        value: String,
    },
    /// Nothing left.
    #[error("range is full: no {what} left in {range}")]
    Full {
        /// "IP" or "port".
        what: &'static str,
        /// The range.
        range: String,
    },
}

/// Taken ClusterIPs and NodePorts.
#[derive(Debug)]
pub struct Allocator {
    cidr: Cidr,
    cidr_text: String,
    ips: BTreeSet<u32>,
    ports: BTreeSet<u16>,
    next_ip: u32,
    next_port: u16,
    node_ports: RangeInclusive<u16>,
}

/// The default NodePort range (`--service-node-port-range`).
pub const NODE_PORTS: RangeInclusive<u16> = 30000..=32767;

/// Parses a NodePort range, `FROM-TO` (both inclusive), as
/// `--service-node-port-range` takes it.
pub fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let bad = || format!("{text:?} is not a port range; expected FROM-TO, e.g. 30000-32767");
    let (a, b) = text.trim().split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

impl Allocator {
    /// An allocator over `cidr` with nothing taken.
    pub fn new(cidr: &str) -> Result<Self, String> {
        let parsed: Cidr = cidr.parse()?;
        Ok(Allocator {
            cidr: parsed,
            cidr_text: cidr.to_string(),
            ips: BTreeSet::new(),
            ports: BTreeSet::new(),
            next_ip: 1,
            next_port: *NODE_PORTS.start(),
            node_ports: NODE_PORTS,
        })
    }

    /// The same allocator handing out NodePorts from `range` instead.
    pub fn with_node_ports(mut self, range: RangeInclusive<u16>) -> Self {
        self.next_port = *range.start();
        self.node_ports = range;
        self
    }

    fn port_range_text(&self) -> String {
        format!("{}-{}", self.node_ports.start(), self.node_ports.end())
    }

    /// The service range.
    pub fn cidr(&self) -> Cidr {
        self.cidr
    }

    /// Takes a specific IP.
    pub fn take_ip(&mut self, ip: Ipv4Addr) -> Result<(), AllocError> {
        if !self.cidr.contains(ip) {
            return Err(AllocError::OutOfRange {
                what: "IP",
                value: ip.to_string(),
                range: self.cidr_text.clone(),
            });
        }
        if !self.ips.insert(u32::from(ip)) {
            return Err(AllocError::Taken {
                what: "IP",
                value: ip.to_string(),
            });
        }
        Ok(())
    }

    /// Takes the next free IP.
    pub fn next_ip(&mut self) -> Result<Ipv4Addr, AllocError> {
        let hosts = self.cidr.size() - 2;
        for i in 0..hosts {
            let offset = (self.next_ip - 1 + i) % hosts + 1;
            let n = self.cidr.base + offset;
            if self.ips.insert(n) {
                self.next_ip = offset % hosts + 1;
                return Ok(Ipv4Addr::from(n));
            }
        }
        Err(AllocError::Full {
            what: "IP",
            range: self.cidr_text.clone(),
        })
    }

    /// Returns an IP.
    pub fn release_ip(&mut self, ip: Ipv4Addr) {
        self.ips.remove(&u32::from(ip));
    }

    /// Takes a specific NodePort.
    pub fn take_port(&mut self, port: u16) -> Result<(), AllocError> {
        if !self.node_ports.contains(&port) {
            return Err(AllocError::OutOfRange {
                what: "port",
                value: port.to_string(),
                range: self.port_range_text(),
            });
        }
        if !self.ports.insert(port) {
            return Err(AllocError::Taken {
                what: "port",
                value: port.to_string(),
            });
        }
        Ok(())
    }

    /// Takes the next free NodePort.
    pub fn next_port(&mut self) -> Result<u16, AllocError> {
        let (lo, hi) = (*self.node_ports.start(), *self.node_ports.end());
        let n = hi - lo + 1;
        for i in 0..n {
            let p = lo + (self.next_port - lo + i) % n;
            if self.ports.insert(p) {
                self.next_port = if p == hi { lo } else { p + 1 };
                return Ok(p);
            }
        }
        Err(AllocError::Full {
            what: "port",
            range: self.port_range_text(),
        })
    }

    /// Returns a NodePort.
    pub fn release_port(&mut self, port: u16) {
        self.ports.remove(&port);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn node_ports_come_from_the_configured_range() {
        assert_eq!(parse_port_range("30000-30999"), Ok(30000..=30999));
        assert!(parse_port_range("30999-30000").is_err());
        assert!(parse_port_range("30000").unwrap_err().contains("FROM-TO"));
        let mut a = Allocator::new("10.0.0.0/24")
            .unwrap()
            .with_node_ports(30000..=30001);
        assert_eq!(a.next_port(), Ok(30000));
        assert_eq!(a.next_port(), Ok(30001));
        assert!(a.next_port().is_err());
        let err = a.take_port(31000).unwrap_err().to_string();
        assert!(err.contains("30000-30001"), "{err}");
    }
    use super::*;

    #[test]
    fn ips_are_unique_and_reusable() {
        let mut a = Allocator::new("10.0.0.0/29").unwrap();
        assert_eq!(a.cidr().first(), Ipv4Addr::new(10, 0, 0, 1));
        a.take_ip(Ipv4Addr::new(10, 0, 0, 1)).unwrap();
        let got: Vec<_> = (0..5).map(|_| a.next_ip().unwrap()).collect();
        assert_eq!(got[0], Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), 5);
        assert!(
            matches!(a.next_ip(), Err(AllocError::Full { .. })),
            "6 hosts in a /29"
        );
        a.release_ip(got[2]);
        assert_eq!(a.next_ip().unwrap(), got[2]);
        assert!(matches!(
            a.take_ip(Ipv4Addr::new(10, 0, 0, 2)),
            Err(AllocError::Taken { .. })
        ));
        assert!(
            matches!(
                a.take_ip(Ipv4Addr::new(10, 0, 0, 7)),
                Err(AllocError::OutOfRange { .. })
            ),
            "broadcast"
        );
        assert!("10.0.0.0".parse::<Cidr>().is_err());
    }

    #[test]
    fn ports_stay_in_range() {
        let mut a = Allocator::new("10.0.0.0/24").unwrap();
        a.take_port(30000).unwrap();
        assert_eq!(a.next_port().unwrap(), 30001);
        assert!(a.take_port(8080).is_err());
        assert!(a.take_port(30001).is_err());
        a.release_port(30001);
        a.take_port(30001).unwrap();
    }
}
