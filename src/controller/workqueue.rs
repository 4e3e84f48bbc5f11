//! A work queue in the manner of client-go's: an item waits in the queue at
//! most once, is handed to one worker at a time (added again while being
//! worked on, it is queued once that worker is done), and items that fail
//! come back after a per-item exponential backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::metrics::QueueMetrics;

struct State<T> {
    queue: VecDeque<T>,
    queued: HashSet<T>,
    active: HashSet<T>,
    again: HashSet<T>,
    failures: HashMap<T, u32>,
}

/// A deduplicating work queue; cheap to clone.
pub struct WorkQueue<T> {
    state: Arc<Mutex<State<T>>>,
    ready: Arc<Notify>,
    metrics: Option<QueueMetrics>,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        WorkQueue {
            state: self.state.clone(),
            ready: self.ready.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<T> Default for WorkQueue<T> {
    fn default() -> Self {
        WorkQueue {
            state: Arc::new(Mutex::new(State {
                queue: VecDeque::new(),
                queued: HashSet::new(),
                active: HashSet::new(),
                again: HashSet::new(),
                failures: HashMap::new(),
            })),
            ready: Arc::new(Notify::new()),
            metrics: None,
        }
    }
}

impl<T> WorkQueue<T> {
    /// An empty queue that reports its depth, adds and retries to `metrics`.
    pub fn with_metrics(metrics: QueueMetrics) -> Self {
        WorkQueue {
            metrics: Some(metrics),
            ..WorkQueue::default()
        }
    }
}

/// The backoff after `failures` consecutive failures: 100 ms doubling, at
/// most 60 s.
pub fn backoff(failures: u32) -> Duration {
    let ms = 100u64.saturating_mul(1u64 << failures.saturating_sub(1).min(20));
    Duration::from_millis(ms.min(60_000))
}

impl<T: Hash + Eq + Clone + Send + 'static> WorkQueue<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item` unless it is already waiting.
    pub fn add(&self, item: T) {
        let mut s = self.lock();
        if s.queued.contains(&item) {
            return;
        }
        if s.active.contains(&item) {
            s.again.insert(item);
            return;
        }
        s.queued.insert(item.clone());
        s.queue.push_back(item);
        if let Some(m) = &self.metrics {
            m.added();
            m.depth(s.queue.len());
        }
        drop(s);
        self.ready.notify_one();
    }

    /// Queues `item` after `delay`.
    pub fn add_after(&self, item: T, delay: Duration) {
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(item);
        });
    }

    /// The next item; the caller must call [`WorkQueue::done`] with it.
    pub async fn next(&self) -> T {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.lock();
                if let Some(item) = s.queue.pop_front() {
                    s.queued.remove(&item);
                    s.active.insert(item.clone());
                    if let Some(m) = &self.metrics {
                        m.depth(s.queue.len());
                    }
                    let more = !s.queue.is_empty();
                    drop(s);
                    if more {
                        self.ready.notify_one();
                    }
                    return item;
                }
            }
            notified.await;
        }
    }

    /// A worker finished `item`: it succeeded (`ok`), or comes back after
    /// its backoff.
    pub fn done(&self, item: T, ok: bool) {
        let mut s = self.lock();
        s.active.remove(&item);
        let retry = if ok {
            s.failures.remove(&item);
            None
        } else {
            let n = s.failures.entry(item.clone()).or_default();
            *n += 1;
            Some(backoff(*n))
        };
        let again = s.again.remove(&item);
        drop(s);
        match retry {
            Some(delay) => {
                if let Some(m) = &self.metrics {
                    m.retried();
                }
                self.add_after(item, delay)
            }
            None if again => self.add(item),
            None => {}
        }
    }

    /// Items waiting (not counting those being worked on).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_wait_once_and_one_worker_at_a_time() {
        let q = WorkQueue::default();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let a = q.next().await;
        assert_eq!(a, "a");
        q.add("a");
        assert_eq!(q.len(), 1, "a is being worked on: it waits for done");
        assert_eq!(q.next().await, "b");
        q.done("b", true);
        q.done("a", true);
        assert_eq!(q.next().await, "a");
        q.done("a", true);
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn failures_come_back_after_a_growing_backoff() {
        let q = WorkQueue::default();
        q.add(1);
        let i = q.next().await;
        q.done(i, false);
        assert!(q.is_empty(), "a failed item waits out its backoff");
        let again = tokio::time::timeout(Duration::from_secs(30), q.next()).await;
        assert_eq!(again.ok(), Some(1));
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(40), Duration::from_secs(60));
    }
}
