//! Leader election on a `coordination.k8s.io/v1` Lease, for roles that run
//! hot standbys (`km scheduler --ha`).
//!
//! The algorithm is the one Kubernetes components use: a candidate takes
//! the Lease when it is free, or when its holder has not renewed it for a
//! whole lease duration *as observed by this candidate's own clock* (so
//! clock skew between machines does not matter); every write carries the
//! resourceVersion it read, so of two racing candidates exactly one wins.
//! The leader renews every retry period and gives up when it could not
//! renew within the renew deadline, which is shorter than the lease
//! duration: a deposed leader stops before anybody else may start.
//!
//! kube-lease-manager was the first choice, but it arbitrates races with
//! server-side apply field ownership, which km apiserver does not keep.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;

/// Timing and identity of one candidate.
#[derive(Debug, Clone)]
pub struct Config {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This candidate, unique among the replicas.
    pub identity: String,
    /// How long a lease holds without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it steps down.
    pub renew_deadline: Duration,
    /// Pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

/// Timings that cannot work.
#[derive(Debug, thiserror::Error)]
#[error(
    "leader election needs retry period < renew deadline < lease duration (got {retry:?}, {renew:?}, {lease:?}); e.g. 2s, 10s, 15s"
)]
pub struct TimingError {
    retry: Duration,
    renew: Duration,
    lease: Duration,
}

impl Config {
    /// Checks the timings.
    pub fn validate(&self) -> Result<(), TimingError> {
        if self.retry_period.is_zero()
            || self.retry_period >= self.renew_deadline
            || self.renew_deadline >= self.lease_duration
        {
            return Err(TimingError {
                retry: self.retry_period,
                renew: self.renew_deadline,
                lease: self.lease_duration,
            });
        }
        Ok(())
    }
}

/// A unique identity: the host name and a random suffix.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "km".into());
    format!("{host}_{:08x}", fastrand::u32(..))
}

/// What the candidate last saw of somebody else's lease.
struct Observed {
    record: (Option<String>, Option<String>),
    at: Instant,
}

/// A candidate for one Lease.
pub struct Elector {
    api: Api<Lease>,
    cfg: Config,
    observed: Option<Observed>,
}

/// Held leadership: renewed in the background until released or lost.
pub struct Leadership {
    lost: CancellationToken,
    release: CancellationToken,
    renewer: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Cancelled when the lease could not be renewed within the renew deadline.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Stops renewing and frees the lease so a standby takes over at once.
    pub async fn release(self) {
        self.release.cancel();
        let _ = self.renewer.await;
    }
}

impl Elector {
    /// A candidate using `client`.
    pub fn new(client: kube::Client, cfg: Config) -> Self {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
        }
    }

    /// Waits until this candidate holds the lease, or `stop`.
    pub async fn acquire(mut self, stop: &CancellationToken) -> Option<Leadership> {
        let mut logged_holder = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Held) => break,
                Ok(Attempt::HeldBy(holder)) => {
                    if logged_holder.as_ref() != Some(&holder) {
                        tracing::info!(lease = %self.cfg.name, leader = %holder, "standing by");
                        logged_holder = Some(holder);
                    }
                }
                Err(e) => {
                    tracing::warn!(lease = %self.cfg.name, error = %e, "cannot read or take the lease")
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
            }
        }
        tracing::info!(lease = %self.cfg.name, identity = %self.cfg.identity, "became the leader");
        let lost = CancellationToken::new();
        let release = CancellationToken::new();
        let renewer = tokio::spawn(self.renew(lost.clone(), release.clone()));
        Some(Leadership {
            lost,
            release,
            renewer,
        })
    }

    async fn renew(mut self, lost: CancellationToken, release: CancellationToken) {
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = release.cancelled() => {
                    if let Err(e) = self.give_up().await {
                        tracing::warn!(lease = %self.cfg.name, error = %e, "cannot free the lease; standbys wait for it to expire");
                    }
                    return;
                }
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
            }
            let attempt =
                tokio::time::timeout(self.cfg.retry_period, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(Attempt::Held)) => renewed = Instant::now(),
                Ok(Ok(Attempt::HeldBy(other))) => {
                    tracing::error!(lease = %self.cfg.name, leader = %other, "another candidate holds the lease");
                    lost.cancel();
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.cfg.name, error = %e, "cannot renew the lease")
                }
                Err(_) => tracing::warn!(lease = %self.cfg.name, "renewing the lease timed out"),
            }
            if renewed.elapsed() >= self.cfg.renew_deadline {
                tracing::error!(lease = %self.cfg.name, deadline = ?self.cfg.renew_deadline, "could not renew the lease in time");
                lost.cancel();
                return;
            }
        }
    }

    fn spec(&self, now: MicroTime, acquired: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(self.cfg.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(acquired),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    Ok(Attempt::HeldBy("a candidate that was faster".into()))
                }
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.cfg.identity.as_str());
        if let Some(other) = holder.clone().filter(|_| !mine) {
            let record = (holder.clone(), lease.metadata.resource_version.clone());
            let fresh = match &self.observed {
                Some(o) if o.record == record => o.at.elapsed() < self.held_for(&spec),
                _ => {
                    self.observed = Some(Observed {
                        record,
                        at: Instant::now(),
                    });
                    true
                }
            };
            if fresh {
                return Ok(Attempt::HeldBy(other));
            }
            tracing::info!(lease = %self.cfg.name, expired = %other, "the leader stopped renewing; taking over");
        }
        let (acquired, transitions) = if mine {
            (
                spec.acquire_time.clone().unwrap_or_else(|| now.clone()),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            (now.clone(), spec.lease_transitions.unwrap_or(0) + 1)
        };
        lease.spec = Some(self.spec(now, acquired, transitions));
        // replace() sends the resourceVersion just read: a racing write wins
        // and this one gets 409.
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.observed = None;
                Ok(Attempt::Held)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                Ok(Attempt::HeldBy("a candidate that was faster".into()))
            }
            Err(e) => Err(e),
        }
    }

    /// How long the holder's lease lasts without renewal.
    fn held_for(&self, spec: &LeaseSpec) -> Duration {
        spec.lease_duration_seconds
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s as u64))
            .unwrap_or(self.cfg.lease_duration)
    }

    /// Frees the lease if this candidate holds it.
    async fn give_up(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        spec.lease_duration_seconds = Some(1);
        self.api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await?;
        tracing::info!(lease = %self.cfg.name, "released the lease");
        Ok(())
    }
}

/// The outcome of one attempt.
enum Attempt {
    /// This candidate holds the lease.
    Held,
    /// Somebody else does.
    HeldBy(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(retry: u64, renew: u64, lease: u64) -> Config {
        Config {
            namespace: "kube-system".into(),
            name: "l".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(lease),
            renew_deadline: Duration::from_secs(renew),
            retry_period: Duration::from_secs(retry),
        }
    }

    #[test]
    fn timings_must_nest() {
        assert!(cfg(2, 10, 15).validate().is_ok());
        assert!(cfg(2, 15, 15).validate().is_err());
        assert!(cfg(10, 10, 15).validate().is_err());
        let e = cfg(0, 10, 15).validate().unwrap_err().to_string();
        assert!(e.contains("e.g. 2s, 10s, 15s"), "{e}");
    }

    #[test]
    fn identities_differ_between_replicas_on_one_host() {
        assert_ne!(default_identity(), default_identity());
    }
}
