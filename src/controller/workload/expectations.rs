//! Expectations (upstream's `UIDTrackingControllerExpectations`): after a
//! controller creates or deletes pods it waits until its watch has seen
//! them before it counts pods again, so a lagging cache never makes it
//! create or delete twice.
//!
//! Creations are counted: raised before the creates, lowered once per new
//! pod the watch delivers (and once per create that failed or was never
//! tried). Deletions are tracked by pod uid and are done once the pod is
//! gone or marked for deletion, which the caller checks against its store.
//! Expectations older than [`Expectations::TIMEOUT`] are given up, so a
//! lost event delays a controller but never blocks it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Entry {
    creations: i64,
    deletions: HashSet<String>,
    set_at: Instant,
}

/// What one controller expects to see, per controlling object (by uid).
#[derive(Debug, Default)]
pub struct Expectations {
    entries: Mutex<HashMap<String, Entry>>,
}

/// Whether a controller may act on what its store shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Nothing outstanding: act.
    Satisfied,
    /// Still waiting for the watch; try again within this long at the latest.
    Waiting(Duration),
}

impl Expectations {
    /// How long expectations are kept before they are given up.
    pub const TIMEOUT: Duration = Duration::from_secs(5 * 60);

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `owner` is about to create `count` pods.
    pub fn expect_creations(&self, owner: &str, count: usize) {
        let mut entries = self.lock();
        let e = entries.entry(owner.to_string()).or_insert_with(|| Entry {
            creations: 0,
            deletions: HashSet::new(),
            set_at: Instant::now(),
        });
        e.creations = count as i64;
        e.set_at = Instant::now();
    }

    /// The watch delivered a new pod of `owner` (or a create was not made).
    pub fn creation_observed(&self, owner: &str) {
        if let Some(e) = self.lock().get_mut(owner) {
            e.creations -= 1;
        }
    }

    /// `count` of the expected creates will never be seen.
    pub fn creations_skipped(&self, owner: &str, count: usize) {
        if let Some(e) = self.lock().get_mut(owner) {
            e.creations -= count as i64;
        }
    }

    /// `owner` is about to delete the pods with these uids.
    pub fn expect_deletions(&self, owner: &str, uids: impl IntoIterator<Item = String>) {
        let mut entries = self.lock();
        let e = entries.entry(owner.to_string()).or_insert_with(|| Entry {
            creations: 0,
            deletions: HashSet::new(),
            set_at: Instant::now(),
        });
        e.deletions = uids.into_iter().collect();
        e.set_at = Instant::now();
    }

    /// The pod `uid` of `owner` is gone or going (or its delete failed).
    pub fn deletion_observed(&self, owner: &str, uid: &str) {
        if let Some(e) = self.lock().get_mut(owner) {
            e.deletions.remove(uid);
        }
    }

    /// Whether `owner` may act; `pending(uid)` tells whether a pod it
    /// deleted is still in the store and not marked for deletion.
    pub fn readiness(&self, owner: &str, pending: impl Fn(&str) -> bool) -> Readiness {
        let mut entries = self.lock();
        let Some(e) = entries.get_mut(owner) else {
            return Readiness::Satisfied;
        };
        e.deletions.retain(|uid| pending(uid));
        let age = e.set_at.elapsed();
        if (e.creations <= 0 && e.deletions.is_empty()) || age >= Self::TIMEOUT {
            if age >= Self::TIMEOUT {
                tracing::info!(
                    owner,
                    creations = e.creations,
                    deletions = e.deletions.len(),
                    "giving up expectations the watch never met"
                );
            }
            entries.remove(owner);
            return Readiness::Satisfied;
        }
        Readiness::Waiting(Self::TIMEOUT - age)
    }

    /// `owner` is gone: forget what it expected.
    pub fn forget(&self, owner: &str) {
        self.lock().remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creations_wait_for_every_pod() {
        let e = Expectations::default();
        assert_eq!(e.readiness("rs", |_| true), Readiness::Satisfied);
        e.expect_creations("rs", 3);
        e.creation_observed("rs");
        assert!(matches!(e.readiness("rs", |_| true), Readiness::Waiting(_)));
        e.creations_skipped("rs", 1);
        e.creation_observed("rs");
        assert_eq!(e.readiness("rs", |_| true), Readiness::Satisfied);
        // Met expectations are dropped; later observations change nothing.
        e.creation_observed("rs");
        assert_eq!(e.readiness("rs", |_| true), Readiness::Satisfied);
    }

    #[test]
    fn deletions_are_met_by_observation_or_by_the_store() {
        let e = Expectations::default();
        e.expect_deletions("rs", ["a".to_string(), "b".to_string()]);
        e.deletion_observed("rs", "a");
        assert!(matches!(e.readiness("rs", |_| true), Readiness::Waiting(_)));
        assert_eq!(e.readiness("rs", |uid| uid != "b"), Readiness::Satisfied);
    }

    #[test]
    fn owners_are_independent_and_forgettable() {
        let e = Expectations::default();
        e.expect_creations("a", 1);
        assert_eq!(e.readiness("b", |_| true), Readiness::Satisfied);
        e.forget("a");
        assert_eq!(e.readiness("a", |_| true), Readiness::Satisfied);
    }
}
