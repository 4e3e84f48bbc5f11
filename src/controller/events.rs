//! Kubernetes Events (core/v1) from the controllers, about any object.
//!
//! The same event about the same object (uid, reason, message) is written
//! once and then counted: later occurrences patch `count` and
//! `lastTimestamp`, at most once per [`Recorder::MIN_INTERVAL`], so a
//! controller that resyncs a broken Service every few seconds leaves one
//! Event, not thousands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Something happened as expected.
    Normal,
    /// Something needs an operator's attention.
    Warning,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Normal => "Normal",
            Severity::Warning => "Warning",
        }
    }
}

struct Written {
    name: String,
    namespace: String,
    count: i32,
    last_write: Instant,
}

type Key = (String, &'static str, String);

/// Writes Events in the background; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    component: &'static str,
    written: Arc<Mutex<HashMap<Key, Written>>>,
}

impl Recorder {
    /// Least time between two writes of the same event.
    pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
    /// Events remembered for counting; beyond it the memory starts over.
    const MAX_REMEMBERED: usize = 4096;

    /// A recorder that signs its Events `source.component = component`.
    pub fn new(client: kube::Client, component: &'static str) -> Self {
        Recorder {
            client,
            component,
            written: Arc::default(),
        }
    }

    /// Records `reason`/`message` about `obj` (written in the background).
    pub fn record<K>(&self, obj: &K, severity: Severity, reason: &'static str, message: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let target = obj.object_ref(&());
        let key: Key = (
            target.uid.clone().unwrap_or_default(),
            reason,
            message.clone(),
        );
        let now = Instant::now();
        let patch = {
            let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            if written.len() >= Self::MAX_REMEMBERED && !written.contains_key(&key) {
                written.clear();
            }
            match written.get_mut(&key) {
                Some(w) if now.duration_since(w.last_write) < Self::MIN_INTERVAL => {
                    w.count += 1;
                    return;
                }
                Some(w) => {
                    w.count += 1;
                    w.last_write = now;
                    Some((w.name.clone(), w.namespace.clone(), w.count))
                }
                None => {
                    let namespace = obj.namespace().unwrap_or_else(|| "default".into());
                    let name = format!(
                        "{}.{:016x}",
                        obj.name_any(),
                        fastrand::u64(..) & 0xffff_ffff_ffff
                    );
                    written.insert(
                        key,
                        Written {
                            name,
                            namespace,
                            count: 1,
                            last_write: now,
                        },
                    );
                    None
                }
            }
        };
        let client = self.client.clone();
        let component = self.component;
        let written = self.written.clone();
        tokio::spawn(async move {
            let stamp = Time(k8s_openapi::jiff::Timestamp::now());
            let result = match patch {
                Some((name, namespace, count)) => {
                    let api: Api<Event> = Api::namespaced(client, &namespace);
                    let body = json!({"count": count, "lastTimestamp": stamp});
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                        .await
                        .map(drop)
                }
                None => {
                    let (name, namespace) = {
                        let written = written.lock().unwrap_or_else(|p| p.into_inner());
                        let key = (
                            target.uid.clone().unwrap_or_default(),
                            reason,
                            message.clone(),
                        );
                        match written.get(&key) {
                            Some(w) => (w.name.clone(), w.namespace.clone()),
                            None => return,
                        }
                    };
                    let event = Event {
                        metadata: ObjectMeta {
                            name: Some(name),
                            namespace: Some(namespace.clone()),
                            ..Default::default()
                        },
                        involved_object: ObjectReference { ..target },
                        reason: Some(reason.to_string()),
                        message: Some(message),
                        type_: Some(severity.as_str().to_string()),
                        count: Some(1),
                        first_timestamp: Some(stamp.clone()),
                        last_timestamp: Some(stamp),
                        source: Some(EventSource {
                            component: Some(component.to_string()),
                            host: None,
                        }),
                        reporting_component: Some(component.to_string()),
                        ..Default::default()
                    };
                    let api: Api<Event> = Api::namespaced(client, &namespace);
                    api.create(&PostParams::default(), &event).await.map(drop)
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, reason, "cannot write an event");
            }
        });
    }
}
