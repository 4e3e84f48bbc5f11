//! Kubernetes Events about pods (`Scheduled`, `FailedScheduling`),
//! aggregated per pod and reason (one Event whose count grows) and
//! rate-limited, so a thousand pending pods do not flood the API server.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::podtask::PodKey;

/// Who reports the events.
pub const COMPONENT: &str = "k8sm-scheduler";

struct Recorded {
    name: String,
    namespace: String,
    count: i32,
    last_write: Instant,
    message: String,
}

/// Writes pod events in the background.
pub struct Recorder {
    client: kube::Client,
    recorded: HashMap<(String, &'static str), Recorded>,
    /// Least time between two writes about the same pod and reason.
    per_pod: Duration,
    /// Writes left in the current second, across all pods.
    budget: u32,
    budget_per_sec: u32,
    window: Instant,
}

impl Recorder {
    /// A recorder writing at most `per_sec` events a second, and at most one
    /// per pod and reason every `per_pod`.
    pub fn new(client: kube::Client, per_pod: Duration, per_sec: u32) -> Self {
        Recorder {
            client,
            recorded: HashMap::new(),
            per_pod,
            budget: per_sec,
            budget_per_sec: per_sec,
            window: Instant::now(),
        }
    }

    fn take_budget(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.budget = self.budget_per_sec;
        }
        if self.budget == 0 {
            return false;
        }
        self.budget -= 1;
        true
    }

    /// `FailedScheduling` (Warning) with the matcher's reasons.
    pub fn failed_scheduling(&mut self, pod: &PodKey, uid: &str, message: &str) {
        self.record(pod, uid, "FailedScheduling", "Warning", message);
    }

    /// `Scheduled` (Normal): where the pod went.
    pub fn scheduled(&mut self, pod: &PodKey, uid: &str, message: &str) {
        self.record(pod, uid, "Scheduled", "Normal", message);
    }

    /// Forgets a pod's events (it was deleted).
    pub fn forget(&mut self, uid: &str) {
        self.recorded.retain(|(u, _), _| u != uid);
    }

    fn record(&mut self, pod: &PodKey, uid: &str, reason: &'static str, kind: &str, message: &str) {
        let now = Instant::now();
        let uid = uid.to_string();
        let key = (uid.clone(), reason);
        if let Some(r) = self.recorded.get(&key)
            && now.duration_since(r.last_write) < self.per_pod
            && r.message == message
        {
            return;
        }
        if !self.take_budget(now) {
            return;
        }
        let ts = Time(k8s_openapi::jiff::Timestamp::now());
        match self.recorded.get_mut(&key) {
            Some(r) => {
                r.count += 1;
                r.last_write = now;
                r.message = message.to_string();
                let api: Api<Event> = Api::namespaced(self.client.clone(), &r.namespace);
                let patch = json!({"count": r.count, "lastTimestamp": ts, "message": message});
                let name = r.name.clone();
                tokio::spawn(async move {
                    if let Err(e) = api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                    {
                        tracing::debug!(event = name, error = %e, "cannot update event");
                    }
                });
            }
            None => {
                let namespace = pod.namespace.clone();
                let pod_name = pod.name.clone();
                let name = format!(
                    "{pod_name}.{}.{}",
                    &uid.chars().take(8).collect::<String>(),
                    reason.to_ascii_lowercase()
                );
                let event = Event {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace.clone()),
                        ..Default::default()
                    },
                    involved_object: ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(pod_name),
                        namespace: Some(namespace.clone()),
                        uid: Some(uid.clone()),
                        ..Default::default()
                    },
                    reason: Some(reason.into()),
                    message: Some(message.into()),
                    type_: Some(kind.into()),
                    count: Some(1),
                    first_timestamp: Some(ts.clone()),
                    last_timestamp: Some(ts.clone()),
                    event_time: Some(MicroTime(ts.0)),
                    reporting_component: Some(COMPONENT.into()),
                    reporting_instance: Some(COMPONENT.into()),
                    action: Some(
                        if reason == "Scheduled" {
                            "Binding"
                        } else {
                            "Scheduling"
                        }
                        .into(),
                    ),
                    source: Some(k8s_openapi::api::core::v1::EventSource {
                        component: Some(COMPONENT.into()),
                        host: None,
                    }),
                    ..Default::default()
                };
                self.recorded.insert(
                    key,
                    Recorded {
                        name: name.clone(),
                        namespace: namespace.clone(),
                        count: 1,
                        last_write: now,
                        message: message.to_string(),
                    },
                );
                let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
                tokio::spawn(async move {
                    match api.create(&PostParams::default(), &event).await {
                        // Left by an earlier run of the scheduler: bring it up to date.
                        Err(kube::Error::Api(e)) if e.code == 409 => {
                            let patch = json!({"message": event.message, "lastTimestamp": event.last_timestamp});
                            let _ = api
                                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                                .await;
                        }
                        Err(e) => tracing::debug!(event = name, error = %e, "cannot create event"),
                        Ok(_) => {}
                    }
                });
            }
        }
    }
}
