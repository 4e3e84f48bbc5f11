//! Reliable status updates: one stream per task, as Mesos's task status
//! update manager keeps them.
//!
//! Every update (from an executor, the built-in command executor, or the
//! agent itself) enters its task's stream. The first pending update is sent
//! to the master and re-sent with exponential backoff ([`RETRY_MIN`]
//! doubling up to [`RETRY_MAX`]; Mesos uses 10 s to 10 min, a development
//! agent wants quicker healing) until the master relays the framework's
//! ACKNOWLEDGE for exactly its uuid; only then is the next update sent. A
//! uuid seen before is a duplicate and dropped. Acknowledgements for any
//! other uuid are ignored.
//!
//! As in Mesos, every send also carries the state of the stream's newest
//! update (`latest_state`), so the master knows a task's state while the
//! framework is away; and when the master says a framework subscribed again
//! (UPDATE_FRAMEWORK), that framework's updates in flight are sent at once
//! and their backoff starts over.
//!
//! The types here are pure state; the agent drives them with its clock.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::mesos::proto::v1;

/// First retry delay.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// Identifies a task's stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    /// The framework.
    pub framework_id: String,
    /// The task.
    pub task_id: String,
}

impl StreamKey {
    /// The stream of `status`'s task in `framework_id`.
    pub fn of(framework_id: &str, status: &v1::TaskStatus) -> StreamKey {
        StreamKey {
            framework_id: framework_id.to_owned(),
            task_id: status.task_id.value.clone(),
        }
    }
}

/// What became of a pushed update.
#[derive(Debug, Clone, PartialEq)]
pub enum Push {
    /// Its uuid was seen before; dropped.
    Duplicate,
    /// Queued behind an update still waiting for its acknowledgement.
    Queued,
    /// Nothing is in flight: send this now.
    Send(Box<v1::TaskStatus>),
}

/// What became of an acknowledgement.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    /// Not the uuid in flight; ignored.
    Ignored,
    /// The update in flight is done; `next` (if any) is to be sent now.
    Acked {
        /// The acknowledged update.
        acked: Box<v1::TaskStatus>,
        /// The next update of the stream, now in flight.
        next: Option<Box<v1::TaskStatus>>,
    },
}

/// One task's updates.
#[derive(Debug, Default, Clone)]
pub struct UpdateStream {
    pending: VecDeque<v1::TaskStatus>,
    /// When the front update is to be re-sent, and the delay after that.
    retry: Option<(Instant, Duration)>,
    seen: HashSet<Vec<u8>>,
    terminal_acked: bool,
}

fn is_terminal(s: &v1::TaskStatus) -> bool {
    use v1::TaskState::*;
    matches!(
        v1::TaskState::try_from(s.state),
        Ok(TaskFinished
            | TaskFailed
            | TaskKilled
            | TaskError
            | TaskLost
            | TaskDropped
            | TaskGone
            | TaskGoneByOperator)
    )
}

impl UpdateStream {
    /// Adds an update (which must carry a uuid).
    pub fn push(&mut self, status: v1::TaskStatus, now: Instant) -> Push {
        let uuid = status.uuid.clone().unwrap_or_default();
        if !self.seen.insert(uuid) {
            return Push::Duplicate;
        }
        self.pending.push_back(status);
        if self.pending.len() == 1 {
            self.retry = Some((now + RETRY_MIN, RETRY_MIN));
            Push::Send(Box::new(self.pending[0].clone()))
        } else {
            Push::Queued
        }
    }

    /// The framework acknowledged `uuid`.
    pub fn ack(&mut self, uuid: &[u8], now: Instant) -> Ack {
        match self.pending.front() {
            Some(front) if front.uuid.as_deref() == Some(uuid) => {}
            _ => return Ack::Ignored,
        }
        let Some(acked) = self.pending.pop_front() else {
            return Ack::Ignored;
        };
        self.terminal_acked = is_terminal(&acked);
        self.retry = None;
        let next = self.pending.front().cloned().map(Box::new);
        if next.is_some() {
            self.retry = Some((now + RETRY_MIN, RETRY_MIN));
        }
        Ack::Acked {
            acked: Box::new(acked),
            next,
        }
    }

    /// The update in flight, if its retry time has come; the next retry
    /// is then scheduled at twice the delay (capped).
    pub fn due(&mut self, now: Instant) -> Option<v1::TaskStatus> {
        let (at, delay) = self.retry?;
        if at > now {
            return None;
        }
        let next_delay = (delay * 2).min(RETRY_MAX);
        self.retry = Some((now + next_delay, next_delay));
        self.pending.front().cloned()
    }

    /// The update in flight, to be sent again right away (after the agent
    /// registered again); the backoff starts over.
    pub fn resend(&mut self, now: Instant) -> Option<v1::TaskStatus> {
        let front = self.pending.front().cloned()?;
        self.retry = Some((now + RETRY_MIN, RETRY_MIN));
        Some(front)
    }

    /// When [`UpdateStream::due`] has something next.
    pub fn deadline(&self) -> Option<Instant> {
        self.retry.map(|(at, _)| at)
    }

    /// Updates not yet acknowledged, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &v1::TaskStatus> {
        self.pending.iter()
    }

    /// Nothing is waiting for an acknowledgement.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// The last acknowledged update was terminal and nothing is pending:
    /// the stream is finished.
    pub fn is_finished(&self) -> bool {
        self.pending.is_empty() && self.terminal_acked
    }
}

/// All streams of the agent.
#[derive(Debug, Default)]
pub struct Updates {
    streams: BTreeMap<StreamKey, UpdateStream>,
}

impl Updates {
    /// Adds an update to its task's stream.
    pub fn push(&mut self, key: StreamKey, status: v1::TaskStatus, now: Instant) -> Push {
        self.streams.entry(key).or_default().push(status, now)
    }

    /// Applies an acknowledgement; a finished stream is dropped.
    pub fn ack(&mut self, key: &StreamKey, uuid: &[u8], now: Instant) -> Ack {
        let Some(stream) = self.streams.get_mut(key) else {
            return Ack::Ignored;
        };
        let out = stream.ack(uuid, now);
        if stream.is_finished() {
            self.streams.remove(key);
        }
        out
    }

    /// Every update whose retry time has come.
    pub fn due(&mut self, now: Instant) -> Vec<(StreamKey, v1::TaskStatus)> {
        self.streams
            .iter_mut()
            .filter_map(|(k, s)| s.due(now).map(|st| (k.clone(), st)))
            .collect()
    }

    /// Every update in flight, to be sent again now.
    pub fn resend_all(&mut self, now: Instant) -> Vec<(StreamKey, v1::TaskStatus)> {
        self.streams
            .iter_mut()
            .filter_map(|(k, s)| s.resend(now).map(|st| (k.clone(), st)))
            .collect()
    }

    /// Every update in flight of `framework_id`, to be sent again now (the
    /// framework subscribed again, as Mesos's agent does on
    /// UpdateFrameworkMessage).
    pub fn resend_framework(
        &mut self,
        framework_id: &str,
        now: Instant,
    ) -> Vec<(StreamKey, v1::TaskStatus)> {
        self.streams
            .iter_mut()
            .filter(|(k, _)| k.framework_id == framework_id)
            .filter_map(|(k, s)| s.resend(now).map(|st| (k.clone(), st)))
            .collect()
    }

    /// The state of the newest update of `key`'s stream (queued or in
    /// flight), if any is pending.
    pub fn latest_state(&self, key: &StreamKey) -> Option<i32> {
        self.streams.get(key)?.pending.back().map(|s| s.state)
    }

    /// The earliest retry time.
    pub fn deadline(&self) -> Option<Instant> {
        self.streams.values().filter_map(|s| s.deadline()).min()
    }

    /// A task's stream, if it has one.
    pub fn stream(&self, key: &StreamKey) -> Option<&UpdateStream> {
        self.streams.get(key)
    }

    /// Whether any stream of `framework_id` still waits for acknowledgements.
    pub fn framework_has_pending(&self, framework_id: &str) -> bool {
        self.streams
            .iter()
            .any(|(k, s)| k.framework_id == framework_id && !s.is_idle())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::TaskState;

    fn status(task: &str, state: TaskState, uuid: u8) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: v1::TaskId { value: task.into() },
            state: state as i32,
            uuid: Some(vec![uuid; 16]),
            ..Default::default()
        }
    }

    fn uuid(s: &v1::TaskStatus) -> Vec<u8> {
        s.uuid.clone().unwrap()
    }

    #[test]
    fn one_in_flight_in_order() {
        let t0 = Instant::now();
        let mut s = UpdateStream::default();
        let starting = status("t", TaskState::TaskStarting, 1);
        let running = status("t", TaskState::TaskRunning, 2);
        let finished = status("t", TaskState::TaskFinished, 3);
        assert_eq!(
            s.push(starting.clone(), t0),
            Push::Send(Box::new(starting.clone()))
        );
        assert_eq!(s.push(running.clone(), t0), Push::Queued);
        assert_eq!(s.push(finished.clone(), t0), Push::Queued);
        // Acknowledging anything but the update in flight does nothing.
        assert_eq!(s.ack(&uuid(&running), t0), Ack::Ignored);
        assert_eq!(s.ack(&[9; 16], t0), Ack::Ignored);
        match s.ack(&uuid(&starting), t0) {
            Ack::Acked { acked, next } => {
                assert_eq!(*acked, starting);
                assert_eq!(next.as_deref(), Some(&running));
            }
            other => panic!("{other:?}"),
        }
        match s.ack(&uuid(&running), t0) {
            Ack::Acked { next, .. } => assert_eq!(next.as_deref(), Some(&finished)),
            other => panic!("{other:?}"),
        }
        assert!(!s.is_finished());
        match s.ack(&uuid(&finished), t0) {
            Ack::Acked { next, .. } => assert_eq!(next, None),
            other => panic!("{other:?}"),
        }
        assert!(s.is_finished());
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn a_failover_resends_that_framework_s_updates_now_with_the_latest_state() {
        let t0 = Instant::now();
        let mut u = Updates::default();
        let key = |fw: &str, task: &str| StreamKey {
            framework_id: fw.into(),
            task_id: task.into(),
        };
        let starting = status("a", TaskState::TaskStarting, 1);
        let _ = u.push(key("f", "a"), starting.clone(), t0);
        let _ = u.push(key("f", "a"), status("a", TaskState::TaskRunning, 2), t0);
        let _ = u.push(key("g", "b"), status("b", TaskState::TaskRunning, 3), t0);
        assert_eq!(
            u.latest_state(&key("f", "a")),
            Some(TaskState::TaskRunning as i32),
            "the queued RUNNING is the task's latest state"
        );
        // Some retries later, the backoff has grown.
        let late = t0 + RETRY_MIN * 5;
        let _ = u.due(t0 + RETRY_MIN);
        let _ = u.due(t0 + RETRY_MIN * 3);
        assert!(u.stream(&key("f", "a")).unwrap().deadline().unwrap() > late + RETRY_MIN);
        let resent = u.resend_framework("f", late);
        assert_eq!(resent, vec![(key("f", "a"), starting)]);
        assert_eq!(
            u.stream(&key("f", "a")).unwrap().deadline(),
            Some(late + RETRY_MIN),
            "the backoff starts over"
        );
        assert!(u.resend_framework("h", late).is_empty());
        assert_eq!(u.latest_state(&key("h", "c")), None);
    }

    #[test]
    fn duplicates_are_dropped_even_after_ack() {
        let t0 = Instant::now();
        let mut s = UpdateStream::default();
        let running = status("t", TaskState::TaskRunning, 1);
        assert!(matches!(s.push(running.clone(), t0), Push::Send(_)));
        assert_eq!(s.push(running.clone(), t0), Push::Duplicate);
        assert!(matches!(s.ack(&uuid(&running), t0), Ack::Acked { .. }));
        assert_eq!(s.push(running, t0), Push::Duplicate);
        assert!(s.is_idle());
        assert!(!s.is_finished(), "RUNNING is not terminal");
    }

    #[test]
    fn retries_double_up_to_the_cap_until_acked() {
        let t0 = Instant::now();
        let mut s = UpdateStream::default();
        let running = status("t", TaskState::TaskRunning, 1);
        let _ = s.push(running.clone(), t0);
        assert_eq!(s.due(t0), None, "not before the first delay");
        assert_eq!(s.deadline(), Some(t0 + RETRY_MIN));
        let mut now = t0 + RETRY_MIN;
        let mut delays = Vec::new();
        for _ in 0..9 {
            assert_eq!(s.due(now), Some(running.clone()));
            let next = s.deadline().unwrap();
            delays.push((next - now).as_secs());
            now = next;
        }
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60, 60, 60]);
        assert!(matches!(s.ack(&uuid(&running), now), Ack::Acked { .. }));
        assert_eq!(s.due(now + RETRY_MAX), None);
    }

    #[test]
    fn resend_restarts_the_backoff() {
        let t0 = Instant::now();
        let mut s = UpdateStream::default();
        let running = status("t", TaskState::TaskRunning, 1);
        let _ = s.push(running.clone(), t0);
        let later = t0 + Duration::from_secs(100);
        let _ = s.due(later);
        assert_eq!(s.resend(later), Some(running));
        assert_eq!(s.deadline(), Some(later + RETRY_MIN));
    }

    #[test]
    fn streams_are_per_task_and_finished_ones_go() {
        let t0 = Instant::now();
        let mut all = Updates::default();
        let a = StreamKey {
            framework_id: "f".into(),
            task_id: "a".into(),
        };
        let b = StreamKey {
            framework_id: "f".into(),
            task_id: "b".into(),
        };
        let fa = status("a", TaskState::TaskFinished, 1);
        let rb = status("b", TaskState::TaskRunning, 2);
        assert!(matches!(all.push(a.clone(), fa.clone(), t0), Push::Send(_)));
        assert!(matches!(all.push(b.clone(), rb.clone(), t0), Push::Send(_)));
        assert_eq!(all.deadline(), Some(t0 + RETRY_MIN));
        assert_eq!(all.due(t0 + RETRY_MIN).len(), 2);
        assert!(all.framework_has_pending("f"));
        assert!(matches!(all.ack(&a, &uuid(&fa), t0), Ack::Acked { .. }));
        assert!(all.stream(&a).is_none(), "finished stream dropped");
        assert!(matches!(all.ack(&b, &uuid(&rb), t0), Ack::Acked { .. }));
        assert!(all.stream(&b).is_some(), "running task keeps its stream");
        assert!(!all.framework_has_pending("f"));
        assert_eq!(all.resend_all(t0).len(), 0);
    }
}
