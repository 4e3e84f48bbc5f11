//! What the workload controllers ([`super::replicaset`],
//! [`super::deployment`], [`super::garbagecollector`], [`super::namespace`])
//! share: ownerReferences and claiming ([`owner`]), pods as controllers see
//! them ([`pods`]), expectations that keep a controller from acting twice
//! while its watches lag ([`expectations`]), the kinds of objects the API
//! serves ([`kinds`]), a work queue with per-item backoff ([`queue`]) and
//! the loop that drives a kube-runtime applier ([`runner`]).
//!
//! The replicaset and deployment controllers drive kube-runtime's
//! `applier` (what `Controller` runs on) with triggers of their own rather
//! than `Controller::owns`: one watch per kind feeds both the reflector the
//! reconciler reads and the triggers, so a reconcile never sees a cache
//! older than the event that woke it, and orphans wake every owner whose
//! selector matches them (sharing a stream with `Controller` needs
//! kube-runtime's unstable features).
//!
//! These controllers stand in for the upstream kube-controller-manager's
//! in clusters that have none (`km local`), so they follow the upstream
//! semantics and Kubernetes API conventions, and work against km apiserver
//! as well as a real kube-apiserver.

pub mod expectations;
pub mod kinds;
pub mod owner;
pub mod pods;
pub mod runner;

/// An API error's HTTP code, if the error came from the API server.
pub fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// The object is gone (404).
pub fn is_not_found(e: &kube::Error) -> bool {
    api_code(e) == Some(404)
}

/// Someone else changed the object first (409).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason != "AlreadyExists")
}

/// The object already exists (409 AlreadyExists).
pub fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.reason == "AlreadyExists")
}

/// The request failed because its namespace is being deleted (the
/// `NamespaceTerminating` cause, or km apiserver's message for it).
pub fn is_namespace_terminating(e: &kube::Error) -> bool {
    let kube::Error::Api(s) = e else {
        return false;
    };
    let cause = s
        .details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"));
    cause || (s.code == 403 && s.message.contains("because it is being terminated"))
}
