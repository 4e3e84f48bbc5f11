//! The choice of an endpoint for each new connection of one service port:
//! round-robin, or sticky per client IP under `sessionAffinity: ClientIP`.
//!
//! Every endpoint carries a [`CancellationToken`] that is cancelled when the
//! endpoint leaves the set; connections to it watch that token and wind down
//! (see [`super::tcp`]). Time is passed in, so the choice is testable alone.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::table::Affinity;

/// An endpoint picked for a connection.
#[derive(Debug, Clone)]
pub struct Pick {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Cancelled when the endpoint is removed from the service port.
    pub removed: CancellationToken,
}

#[derive(Debug)]
struct Backend {
    addr: SocketAddr,
    removed: CancellationToken,
}

#[derive(Debug, Clone, Copy)]
struct Sticky {
    addr: SocketAddr,
    last: Instant,
}

/// The endpoints of one service port and the state of the choice among them.
#[derive(Debug)]
pub struct Balancer {
    backends: Vec<Backend>,
    next: usize,
    affinity: Affinity,
    sticky: HashMap<IpAddr, Sticky>,
    prune_at: usize,
}

/// Sticky entries kept before expired ones are looked for.
const PRUNE_MIN: usize = 256;

impl Balancer {
    /// A balancer with no endpoints.
    pub fn new(affinity: Affinity) -> Self {
        Balancer {
            backends: Vec::new(),
            next: 0,
            affinity,
            sticky: HashMap::new(),
            prune_at: PRUNE_MIN,
        }
    }

    /// Replaces the endpoint set and the affinity. Endpoints that stay keep
    /// their token; removed ones have theirs cancelled. Returns how many
    /// endpoints were removed.
    pub fn update(&mut self, endpoints: &[SocketAddr], affinity: Affinity) -> usize {
        let mut old: HashMap<SocketAddr, CancellationToken> = self
            .backends
            .drain(..)
            .map(|b| (b.addr, b.removed))
            .collect();
        self.backends = endpoints
            .iter()
            .map(|&addr| Backend {
                addr,
                removed: old.remove(&addr).unwrap_or_default(),
            })
            .collect();
        let removed = old.len();
        for token in old.into_values() {
            token.cancel();
        }
        if affinity != self.affinity {
            self.sticky.clear();
            self.affinity = affinity;
        } else if removed > 0 {
            let live: std::collections::HashSet<SocketAddr> = endpoints.iter().copied().collect();
            self.sticky.retain(|_, s| live.contains(&s.addr));
        }
        if !self.backends.is_empty() {
            self.next %= self.backends.len();
        }
        removed
    }

    /// The endpoint for a new connection from `client`, or `None` when the
    /// port has no ready endpoint.
    pub fn pick(&mut self, client: IpAddr, now: Instant) -> Option<Pick> {
        if self.backends.is_empty() {
            return None;
        }
        let Affinity::ClientIp(timeout) = self.affinity else {
            return Some(self.round_robin());
        };
        if let Some(s) = self.sticky.get_mut(&client)
            && now.saturating_duration_since(s.last) <= timeout
            && let Some(b) = self.backends.iter().find(|b| b.addr == s.addr)
        {
            s.last = now;
            return Some(Pick {
                addr: b.addr,
                removed: b.removed.clone(),
            });
        }
        let pick = self.round_robin();
        self.sticky.insert(
            client,
            Sticky {
                addr: pick.addr,
                last: now,
            },
        );
        if self.sticky.len() >= self.prune_at {
            self.sticky
                .retain(|_, s| now.saturating_duration_since(s.last) <= timeout);
            self.prune_at = (self.sticky.len() * 2).max(PRUNE_MIN);
        }
        Some(pick)
    }

    /// Forgets `client`'s sticky endpoint (its connection failed).
    pub fn forget(&mut self, client: IpAddr) {
        self.sticky.remove(&client);
    }

    /// How many endpoints there are.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// Whether there is no endpoint.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    fn round_robin(&mut self) -> Pick {
        let b = &self.backends[self.next % self.backends.len()];
        self.next = (self.next + 1) % self.backends.len();
        Pick {
            addr: b.addr,
            removed: b.removed.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn addrs(ports: &[u16]) -> Vec<SocketAddr> {
        ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect()
    }

    fn client(n: u8) -> IpAddr {
        IpAddr::from([10, 1, 0, n])
    }

    #[test]
    fn round_robin_visits_every_endpoint_in_turn() {
        let mut b = Balancer::new(Affinity::None);
        let now = Instant::now();
        assert!(b.pick(client(1), now).is_none(), "no endpoint, no pick");
        b.update(&addrs(&[1, 2, 3]), Affinity::None);
        let got: Vec<u16> = (0..6)
            .map(|_| b.pick(client(1), now).unwrap().addr.port())
            .collect();
        assert_eq!(got, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn removed_endpoints_are_not_picked_and_their_token_is_cancelled() {
        let mut b = Balancer::new(Affinity::None);
        let now = Instant::now();
        b.update(&addrs(&[1, 2, 3]), Affinity::None);
        let picks: Vec<Pick> = (0..3).map(|_| b.pick(client(1), now).unwrap()).collect();
        assert_eq!(b.update(&addrs(&[1, 3]), Affinity::None), 1);
        assert!(picks[1].removed.is_cancelled());
        assert!(!picks[0].removed.is_cancelled() && !picks[2].removed.is_cancelled());
        for _ in 0..4 {
            assert_ne!(b.pick(client(1), now).unwrap().addr.port(), 2);
        }
        // Coming back gives a fresh token.
        b.update(&addrs(&[1, 2, 3]), Affinity::None);
        let two = (0..3)
            .map(|_| b.pick(client(1), now).unwrap())
            .find(|p| p.addr.port() == 2)
            .unwrap();
        assert!(!two.removed.is_cancelled());
        assert_eq!(b.update(&[], Affinity::None), 3);
        assert!(two.removed.is_cancelled());
        assert!(b.is_empty());
    }

    #[test]
    fn client_ip_affinity_sticks_until_idle_for_the_timeout() {
        let timeout = Duration::from_secs(60);
        let mut b = Balancer::new(Affinity::ClientIp(timeout));
        b.update(&addrs(&[1, 2, 3]), Affinity::ClientIp(timeout));
        let t0 = Instant::now();
        let first = b.pick(client(1), t0).unwrap().addr;
        let other = b.pick(client(2), t0).unwrap().addr;
        assert_ne!(first, other, "different clients are spread");
        for i in 1..=5 {
            let t = t0 + Duration::from_secs(50 * i);
            assert_eq!(
                b.pick(client(1), t).unwrap().addr,
                first,
                "used within the timeout"
            );
        }
        // Idle for longer than the timeout: a fresh round-robin choice.
        let late = t0 + Duration::from_secs(250 + 61);
        let picks: Vec<_> = (0..3)
            .map(|i| {
                let p = b.pick(client(1), late).unwrap().addr;
                b.forget(client(1));
                (i, p)
            })
            .collect();
        assert!(picks.iter().any(|(_, p)| *p != first));
    }

    #[test]
    fn affinity_moves_when_its_endpoint_goes_or_the_client_is_forgotten() {
        let aff = Affinity::ClientIp(Duration::from_secs(60));
        let mut b = Balancer::new(aff);
        b.update(&addrs(&[1, 2]), aff);
        let now = Instant::now();
        let first = b.pick(client(1), now).unwrap().addr;
        let remaining: Vec<_> = addrs(&[1, 2]).into_iter().filter(|a| *a != first).collect();
        b.update(&remaining, aff);
        assert_eq!(b.pick(client(1), now).unwrap().addr, remaining[0]);
        b.update(&addrs(&[1, 2]), aff);
        assert_eq!(
            b.pick(client(1), now).unwrap().addr,
            remaining[0],
            "still sticky"
        );
        b.forget(client(1));
        b.pick(client(9), now);
        let again = b.pick(client(1), now).unwrap().addr;
        assert_eq!(b.pick(client(1), now).unwrap().addr, again);
    }

    #[test]
    fn turning_affinity_off_returns_to_round_robin() {
        let aff = Affinity::ClientIp(Duration::from_secs(60));
        let mut b = Balancer::new(aff);
        b.update(&addrs(&[1, 2]), aff);
        let now = Instant::now();
        b.pick(client(1), now);
        b.update(&addrs(&[1, 2]), Affinity::None);
        let a = b.pick(client(1), now).unwrap().addr;
        let c = b.pick(client(1), now).unwrap().addr;
        assert_ne!(a, c);
    }

    #[test]
    fn expired_sticky_entries_are_pruned() {
        let aff = Affinity::ClientIp(Duration::from_secs(1));
        let mut b = Balancer::new(aff);
        b.update(&addrs(&[1]), aff);
        let t0 = Instant::now();
        for i in 0..255u8 {
            b.pick(client(i), t0);
        }
        assert_eq!(b.sticky.len(), 255);
        b.pick(IpAddr::from([10, 2, 0, 0]), t0 + Duration::from_secs(5));
        assert_eq!(b.sticky.len(), 1, "only the live entry is kept");
    }
}
