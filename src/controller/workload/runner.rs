//! Driving a kube-runtime applier until the controller is stopped, and the
//! per-object backoff after failed reconciles.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::controller::{Action, Error};
use kube::runtime::reflector::ObjectRef;
use tokio_util::sync::CancellationToken;

use crate::controller::metrics::Metrics;

/// Consumes an applier's results, logging failures and counting syncs in
/// `metrics`, until `stop` or until the applier ends.
pub async fn drive<K, E, Q>(
    controller: &'static str,
    metrics: &Metrics,
    results: impl Stream<Item = Result<(ObjectRef<K>, Action), Error<E, Q>>>,
    stop: CancellationToken,
) where
    K: Resource,
    K::DynamicType: Debug,
    E: std::error::Error + 'static,
    Q: std::error::Error + 'static,
{
    let mut results = std::pin::pin!(results.take_until(stop.cancelled_owned()));
    while let Some(r) = results.next().await {
        match r {
            Ok((obj, _)) => {
                metrics.synced(controller, true);
                tracing::trace!(controller, object = %obj, "reconciled")
            }
            Err(Error::ObjectNotFound(obj)) => {
                tracing::debug!(controller, object = %obj, "gone before it was reconciled")
            }
            Err(Error::ReconcilerFailed(e, obj)) => {
                metrics.synced(controller, false);
                tracing::warn!(controller, object = %obj, error = %e, "reconcile failed; retrying with backoff")
            }
            Err(Error::QueueError(e)) => {
                tracing::warn!(controller, error = %e, "watch failed; retrying with backoff")
            }
            Err(Error::RunnerError(e)) => {
                tracing::error!(controller, error = %e, "controller runner failed")
            }
        }
    }
}

/// Consecutive failures per object, for the retry delay of an error policy.
#[derive(Debug, Default)]
pub struct Backoffs {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoffs {
    /// Another failure of `key`: how long to wait before retrying.
    pub fn failed(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key.to_string()).or_default();
        *n = n.saturating_add(1);
        crate::controller::workqueue::backoff(*n)
    }

    /// `key` reconciled: its next failure starts the backoff over.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_per_object_and_resets() {
        let b = Backoffs::default();
        assert_eq!(b.failed("a"), Duration::from_millis(100));
        assert_eq!(b.failed("a"), Duration::from_millis(200));
        assert_eq!(b.failed("b"), Duration::from_millis(100));
        b.succeeded("a");
        assert_eq!(b.failed("a"), Duration::from_millis(100));
    }
}
