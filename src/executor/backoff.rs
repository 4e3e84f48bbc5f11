//! Crash-loop backoff for restarting containers, as the kubelet does it.
//!
//! After a container crashes the kubelet waits before restarting it: 10 s
//! the first time, twice as long after each further crash, at most 5
//! minutes. A container that ran for 10 minutes before crashing starts over
//! at 10 s.

use std::time::Duration;

/// Crash-loop backoff per container, kubelet style: 10 s after the first
/// crash, doubling to 5 minutes; reset when the container ran 10 minutes
/// without crashing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    reset_after: Duration,
    /// The delay the next crash gets; `None` before the first crash or
    /// after a reset.
    current: Option<Duration>,
}

impl Backoff {
    /// A backoff starting at `initial`, doubling up to `max`, and starting
    /// over after a run of at least `reset_after`.
    pub fn new(initial: Duration, max: Duration, reset_after: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            reset_after,
            current: None,
        }
    }

    /// The kubelet's values: 10 s, at most 300 s, reset after 600 s.
    pub fn kubelet() -> Self {
        Backoff::new(
            Duration::from_secs(10),
            Duration::from_secs(300),
            Duration::from_secs(600),
        )
    }

    /// The delay before the next restart, given how long the last run
    /// lasted; each call counts one more crash.
    pub fn next(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.reset_after {
            self.reset();
        }
        let delay = match self.current {
            None => self.initial,
            Some(previous) => previous.saturating_mul(2).min(self.max),
        };
        self.current = Some(delay);
        delay
    }

    /// Forgets past crashes: the next delay is the initial one.
    pub fn reset(&mut self) {
        self.current = None;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::kubelet()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_secs(1);

    fn secs(d: Duration) -> u64 {
        d.as_secs()
    }

    #[test]
    fn doubles_from_ten_seconds_to_five_minutes() {
        let mut b = Backoff::kubelet();
        let seq: Vec<u64> = (0..9).map(|_| secs(b.next(SHORT))).collect();
        assert_eq!(seq, [10, 20, 40, 80, 160, 300, 300, 300, 300]);
    }

    #[test]
    fn a_long_run_starts_over() {
        let mut b = Backoff::kubelet();
        for _ in 0..4 {
            b.next(SHORT);
        }
        assert_eq!(secs(b.next(Duration::from_secs(599))), 160);
        assert_eq!(secs(b.next(Duration::from_secs(600))), 10);
        assert_eq!(secs(b.next(SHORT)), 20);
        assert_eq!(secs(b.next(Duration::from_secs(3600))), 10);
    }

    #[test]
    fn reset_forgets_crashes() {
        let mut b = Backoff::kubelet();
        b.next(SHORT);
        b.next(SHORT);
        b.reset();
        assert_eq!(secs(b.next(SHORT)), 10);
    }

    #[test]
    fn custom_values_and_cap_below_initial() {
        let mut b = Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(250),
            Duration::from_secs(1),
        );
        let seq: Vec<u128> = (0..4).map(|_| b.next(SHORT / 10).as_millis()).collect();
        assert_eq!(seq, [100, 200, 250, 250]);
        let mut odd = Backoff::new(Duration::from_secs(5), Duration::from_secs(1), SHORT);
        assert_eq!(secs(odd.next(Duration::ZERO)), 5);
        assert_eq!(secs(odd.next(Duration::ZERO)), 5);
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(Duration::MAX / 2, Duration::MAX, Duration::MAX);
        b.next(Duration::ZERO);
        b.next(Duration::ZERO);
        assert_eq!(b.next(Duration::ZERO), Duration::MAX);
    }
}
