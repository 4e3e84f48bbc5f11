//! The offers a scheduler holds, with their lifetimes.
//!
//! * An offer is *live* for `ttl` after it arrives; then it expires and is
//!   handed back for declining, so resources km cannot use return to Mesos.
//! * A rescinded, expired, taken or invalidated offer *lingers* (its id only)
//!   for `linger`, so a late status update that names it is recognised.
//! * All of an agent's offers go at once when the agent is lost, and all
//!   offers go when the master connection drops (Mesos discards them).
//! * Declines carry `Filters{refuse_seconds}` from the configuration.
//!
//! Time is passed in, never read, so every rule is testable without sleeping.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::mesos::proto::v1;

/// Lifetimes and decline filters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RegistryConfig {
    /// How long an unused offer is kept before it is declined.
    pub ttl: Duration,
    /// How long an offer id is remembered after it stopped being live.
    pub linger: Duration,
    /// `refuse_seconds` of the filters sent with declines.
    pub refuse_seconds: f64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            ttl: Duration::from_secs(5),
            linger: Duration::from_secs(120),
            refuse_seconds: 5.0,
        }
    }
}

struct Live {
    offer: v1::Offer,
    expires: Instant,
}

/// Live offers by id, with lingering ids of past ones.
pub struct OfferRegistry {
    cfg: RegistryConfig,
    live: BTreeMap<String, Live>,
    lingering: HashMap<String, Instant>,
}

impl OfferRegistry {
    /// An empty registry.
    pub fn new(cfg: RegistryConfig) -> Self {
        OfferRegistry {
            cfg,
            live: BTreeMap::new(),
            lingering: HashMap::new(),
        }
    }

    /// The filters to send with a decline or an accept.
    pub fn filters(&self) -> v1::Filters {
        v1::Filters {
            refuse_seconds: Some(self.cfg.refuse_seconds),
        }
    }

    /// Adds an offer that just arrived.
    pub fn add(&mut self, offer: v1::Offer, now: Instant) {
        let expires = now + self.cfg.ttl;
        self.live
            .insert(offer.id.value.clone(), Live { offer, expires });
    }

    /// Live offers, by offer id.
    pub fn live(&self) -> impl Iterator<Item = &v1::Offer> {
        self.live.values().map(|l| &l.offer)
    }

    /// Number of live offers.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no offer is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Whether `id` is live or lingering.
    pub fn knows(&self, id: &str) -> bool {
        self.live.contains_key(id) || self.lingering.contains_key(id)
    }

    /// Whether `id` is live.
    pub fn is_live(&self, id: &str) -> bool {
        self.live.contains_key(id)
    }

    /// Mesos withdrew the offer. Returns whether it was live.
    pub fn rescind(&mut self, id: &str, now: Instant) -> bool {
        self.retire(id, now).is_some()
    }

    /// Takes offers out to use them (accept). Missing ids are skipped: the
    /// caller must re-plan when fewer come back than it asked for.
    pub fn take(&mut self, ids: &[String], now: Instant) -> Vec<v1::Offer> {
        ids.iter().filter_map(|id| self.retire(id, now)).collect()
    }

    /// Removes offers whose time to live has passed, and forgets lingering
    /// ids past their linger time. The returned offers are to be declined.
    pub fn expire(&mut self, now: Instant) -> Vec<v1::Offer> {
        let due: Vec<String> = self
            .live
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let out = due.iter().filter_map(|id| self.retire(id, now)).collect();
        self.lingering.retain(|_, until| *until > now);
        out
    }

    /// Drops every live offer of an agent (agent lost): nothing to decline.
    pub fn invalidate_agent(&mut self, agent_id: &str, now: Instant) -> usize {
        let ids: Vec<String> = self
            .live
            .iter()
            .filter(|(_, l)| l.offer.agent_id.value == agent_id)
            .map(|(k, _)| k.clone())
            .collect();
        for id in &ids {
            self.retire(id, now);
        }
        ids.len()
    }

    /// Drops every live offer (master connection lost).
    pub fn invalidate_all(&mut self, now: Instant) -> usize {
        let ids: Vec<String> = self.live.keys().cloned().collect();
        for id in &ids {
            self.retire(id, now);
        }
        ids.len()
    }

    /// The earliest time something expires, for the caller's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.live
            .values()
            .map(|l| l.expires)
            .chain(self.lingering.values().copied())
            .min()
    }

    fn retire(&mut self, id: &str, now: Instant) -> Option<v1::Offer> {
        let live = self.live.remove(id)?;
        if !self.cfg.linger.is_zero() {
            self.lingering.insert(id.to_string(), now + self.cfg.linger);
        }
        Some(live.offer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(id: &str, agent: &str) -> v1::Offer {
        v1::Offer {
            id: v1::OfferId { value: id.into() },
            agent_id: v1::AgentId {
                value: agent.into(),
            },
            hostname: format!("{agent}.host"),
            ..Default::default()
        }
    }

    fn cfg() -> RegistryConfig {
        RegistryConfig {
            ttl: Duration::from_secs(5),
            linger: Duration::from_secs(60),
            refuse_seconds: 30.0,
        }
    }

    #[test]
    fn offers_expire_after_their_ttl_and_then_linger() {
        let t0 = Instant::now();
        let mut r = OfferRegistry::new(cfg());
        r.add(offer("o1", "a"), t0);
        r.add(offer("o2", "a"), t0 + Duration::from_secs(3));
        assert!(r.expire(t0 + Duration::from_secs(4)).is_empty());
        let gone = r.expire(t0 + Duration::from_secs(5));
        assert_eq!(
            gone.iter().map(|o| o.id.value.as_str()).collect::<Vec<_>>(),
            ["o1"]
        );
        assert!(!r.is_live("o1") && r.knows("o1"));
        assert_eq!(r.len(), 1);
        r.expire(t0 + Duration::from_secs(66));
        assert!(!r.knows("o1"));
        // o2 was still live until this call, so it lingers from now on.
        assert!(r.knows("o2") && !r.is_live("o2"));
    }

    #[test]
    fn rescind_take_and_invalidate_remove_live_offers() {
        let t0 = Instant::now();
        let mut r = OfferRegistry::new(cfg());
        for (id, agent) in [("o1", "a"), ("o2", "a"), ("o3", "b"), ("o4", "c")] {
            r.add(offer(id, agent), t0);
        }
        assert!(r.rescind("o4", t0));
        assert!(!r.rescind("o4", t0));
        let taken = r.take(&["o3".into(), "nope".into()], t0);
        assert_eq!(taken.len(), 1);
        assert_eq!(r.invalidate_agent("a", t0), 2);
        assert!(r.is_empty());
        assert!(r.knows("o1") && r.knows("o3") && r.knows("o4"));
        assert!(
            r.expire(t0 + Duration::from_secs(10)).is_empty(),
            "retired offers are not declined"
        );
    }

    #[test]
    fn declines_carry_the_configured_filter() {
        let r = OfferRegistry::new(cfg());
        assert_eq!(r.filters().refuse_seconds, Some(30.0));
        let mut r2 = OfferRegistry::new(cfg());
        r2.add(offer("o1", "a"), Instant::now());
        assert_eq!(r2.invalidate_all(Instant::now()), 1);
    }

    #[test]
    fn next_deadline_is_the_earliest_expiry() {
        let t0 = Instant::now();
        let mut r = OfferRegistry::new(cfg());
        assert_eq!(r.next_deadline(), None);
        r.add(offer("o1", "a"), t0 + Duration::from_secs(2));
        r.add(offer("o2", "a"), t0);
        assert_eq!(r.next_deadline(), Some(t0 + Duration::from_secs(5)));
    }
}
