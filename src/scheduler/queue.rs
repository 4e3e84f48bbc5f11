//! Pods waiting for an offer, by uid: per-pod exponential backoff with
//! jitter, and break-out when an offer that fits arrives.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::podtask::PodTask;

/// Backoff bounds.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay after the first failed attempt.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay after `attempts` failed attempts, ±20 % jitter.
    pub fn delay(&self, attempts: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(16))
            .min(self.max);
        base.mul_f64(0.8 + 0.4 * fastrand::f64())
    }
}

/// One waiting pod.
#[derive(Debug, Clone)]
pub struct Waiting {
    /// The pod as a task.
    pub task: PodTask,
    /// Failed placement attempts so far.
    pub attempts: u32,
    /// Not tried again before this.
    pub not_before: Instant,
    /// When it entered the queue.
    pub since: Instant,
    /// Why the last attempt failed.
    pub last_reason: Option<String>,
}

/// The queue.
#[derive(Debug)]
pub struct Queue {
    waiting: HashMap<String, Waiting>,
    backoff: Backoff,
}

impl Queue {
    /// An empty queue.
    pub fn new(backoff: Backoff) -> Self {
        Queue {
            waiting: HashMap::new(),
            backoff,
        }
    }

    /// Adds a pod, or replaces its task keeping its backoff (an update).
    pub fn upsert(&mut self, uid: &str, task: PodTask, now: Instant) {
        match self.waiting.get_mut(uid) {
            Some(w) => w.task = task,
            None => {
                self.waiting.insert(
                    uid.to_string(),
                    Waiting {
                        task,
                        attempts: 0,
                        not_before: now,
                        since: now,
                        last_reason: None,
                    },
                );
            }
        }
    }

    /// Removes a pod (placed, deleted, or no longer ours).
    pub fn remove(&mut self, uid: &str) -> Option<Waiting> {
        self.waiting.remove(uid)
    }

    /// Whether a pod is waiting.
    pub fn contains(&self, uid: &str) -> bool {
        self.waiting.contains_key(uid)
    }

    /// Uids of pods due for an attempt, oldest first.
    pub fn ready(&self, now: Instant) -> Vec<String> {
        let mut due: Vec<(&Instant, &String)> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.not_before <= now)
            .map(|(uid, w)| (&w.since, uid))
            .collect();
        due.sort();
        due.into_iter().map(|(_, uid)| uid.clone()).collect()
    }

    /// Uids of pods in backoff.
    pub fn backing_off(&self, now: Instant) -> Vec<String> {
        self.waiting
            .iter()
            .filter(|(_, w)| w.not_before > now)
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    /// A failed attempt: backs the pod off.
    pub fn failed(&mut self, uid: &str, reason: String, now: Instant) {
        if let Some(w) = self.waiting.get_mut(uid) {
            w.attempts += 1;
            w.not_before = now + self.backoff.delay(w.attempts);
            w.last_reason = Some(reason);
        }
    }

    /// Ends a pod's backoff (an offer that fits it arrived).
    pub fn break_out(&mut self, uid: &str, now: Instant) {
        if let Some(w) = self.waiting.get_mut(uid) {
            w.not_before = now;
        }
    }

    /// A waiting pod.
    pub fn get(&self, uid: &str) -> Option<&Waiting> {
        self.waiting.get(uid)
    }

    /// Every waiting pod.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Waiting)> {
        self.waiting.iter()
    }

    /// How many pods wait.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The earliest end of a backoff.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting.values().map(|w| w.not_before).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::podtask::PodTaskConfig;

    fn task(name: &str) -> PodTask {
        let pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": name},
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        }))
        .unwrap();
        PodTask::from_pod(pod, &PodTaskConfig::default()).unwrap()
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        for attempts in 1..20 {
            let d = b.delay(attempts);
            let base = (1u64 << (attempts - 1).min(16)).min(60) as f64;
            assert!(
                d.as_secs_f64() >= base * 0.8 - 1e-9 && d.as_secs_f64() <= base * 1.2 + 1e-9,
                "{attempts}: {d:?}"
            );
        }
    }

    #[test]
    fn failed_pods_wait_and_break_out() {
        let mut q = Queue::new(Backoff {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(60),
        });
        let now = Instant::now();
        q.upsert("a", task("a"), now);
        q.upsert("b", task("b"), now + Duration::from_millis(1));
        assert_eq!(
            q.ready(now + Duration::from_millis(2)),
            ["a", "b"],
            "oldest first"
        );
        q.failed("a", "no offers".into(), now);
        assert_eq!(q.ready(now + Duration::from_millis(2)), ["b"]);
        assert_eq!(q.backing_off(now + Duration::from_millis(2)), ["a"]);
        // An update keeps the backoff.
        q.upsert("a", task("a"), now);
        assert_eq!(q.get("a").unwrap().attempts, 1);
        q.break_out("a", now);
        assert_eq!(q.ready(now).len(), 1);
        assert!(q.remove("a").is_some() && !q.contains("a"));
    }
}
