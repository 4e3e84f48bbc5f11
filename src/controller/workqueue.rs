//! A work queue of object keys, as controllers use it: a key queued twice
//! is worked on once, a key is never worked on by two workers at once, and
//! a key queued while it is being worked on is worked on again afterwards.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

use tokio::sync::Notify;

struct State<K> {
    order: VecDeque<K>,
    queued: HashSet<K>,
    running: HashSet<K>,
    again: HashSet<K>,
}

/// Keys waiting to be reconciled.
pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    ready: Notify,
}

impl<K: Clone + Eq + Hash> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue {
            state: Mutex::new(State {
                order: VecDeque::new(),
                queued: HashSet::new(),
                running: HashSet::new(),
                again: HashSet::new(),
            }),
            ready: Notify::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> WorkQueue<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `key` (once, however often it is added before a worker takes it).
    pub fn add(&self, key: K) {
        let mut s = self.lock();
        if s.running.contains(&key) {
            s.again.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.order.push_back(key);
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Takes the next key, waiting for one; call [`WorkQueue::done`] after it.
    pub async fn next(&self) -> K {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.lock();
                if let Some(key) = s.order.pop_front() {
                    s.queued.remove(&key);
                    s.running.insert(key.clone());
                    if !s.order.is_empty() {
                        self.ready.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` as worked on; queues it again if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let mut s = self.lock();
        s.running.remove(key);
        if s.again.remove(key) && s.queued.insert(key.clone()) {
            s.order.push_back(key.clone());
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Keys queued or being worked on.
    pub fn len(&self) -> usize {
        let s = self.lock();
        s.order.len() + s.running.len()
    }

    /// Nothing queued and nothing being worked on.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_queued_twice_is_taken_once() {
        let q = WorkQueue::default();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.next().await, "a");
        assert_eq!(q.next().await, "b");
        assert_eq!(q.len(), 2, "both running");
        q.done(&"a");
        q.done(&"b");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_running_comes_back_after_done() {
        let q = WorkQueue::default();
        q.add(1);
        let k = q.next().await;
        q.add(1);
        assert_eq!(q.lock().order.len(), 0, "not handed to a second worker");
        q.done(&k);
        assert_eq!(q.next().await, 1);
    }

    #[tokio::test]
    async fn next_waits_for_an_add() {
        let q = std::sync::Arc::new(WorkQueue::default());
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.next().await }
        });
        tokio::task::yield_now().await;
        q.add(7);
        assert_eq!(waiter.await.unwrap(), 7);
    }
}
