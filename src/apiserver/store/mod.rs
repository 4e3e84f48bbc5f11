//! Storage for km apiserver: objects by key, one global revision, watches.
//!
//! The API layer sees only [`Storage`]: get, list (optionally from a retained
//! snapshot, for `continue` tokens), conditional single-key writes and
//! watches that resume from a revision. [`embedded::Embedded`] implements it
//! with an in-memory copy of every object (served to reads and watches)
//! over a redb file (durability, group commit). A distributed backend can
//! implement the same trait.

pub mod embedded;
mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

pub use watch::Watch;

/// A store revision: the `resourceVersion` of Kubernetes objects.
pub type Revision = u64;

/// A storage key: `/<resource key>/<namespace>/<name>` for namespaced
/// objects, `/<resource key>/<name>` for cluster-scoped ones.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Arc<str>);

impl Key {
    /// A key from its text.
    pub fn new(s: impl Into<Arc<str>>) -> Self {
        Key(s.into())
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What selectors look at, computed once per stored version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjMeta {
    /// metadata.labels.
    pub labels: BTreeMap<String, String>,
    /// The field-selector fields this resource supports, with their values.
    pub fields: Vec<(&'static str, String)>,
}

impl ObjMeta {
    /// The value of a selectable field.
    pub fn field(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|(f, _)| *f == name)
            .map(|(_, v)| v.clone())
    }
}

/// Computes an object's [`ObjMeta`] from its key and JSON.
pub type Indexer = Arc<dyn Fn(&Key, &Value) -> ObjMeta + Send + Sync>;

/// One stored version of an object.
#[derive(Debug)]
pub struct Object {
    /// Where it lives.
    pub key: Key,
    /// The revision that wrote this version (its resourceVersion).
    pub revision: Revision,
    /// The object as JSON, with `metadata.resourceVersion` set.
    pub json: Bytes,
    /// Labels and selectable fields.
    pub meta: ObjMeta,
}

impl Object {
    /// Parses the stored JSON.
    pub fn value(&self) -> Value {
        // The store only ever holds JSON it serialised itself.
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Deleted.
    Deleted,
}

impl EventType {
    /// The watch event type as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub struct Event {
    /// What happened.
    pub kind: EventType,
    /// The revision of the change.
    pub revision: Revision,
    /// The object after the change; for deletions its last state, with the
    /// deletion's revision as resourceVersion.
    pub object: Arc<Object>,
    /// The version before the change, if any.
    pub prev: Option<Arc<Object>>,
    /// The encoded watch line, built by the first watcher that needs it.
    pub line: std::sync::OnceLock<Bytes>,
}

/// A condition a write must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// None.
    Any,
    /// The key must not exist (create).
    Absent,
    /// The key must exist at exactly this revision (update, delete).
    Revision(Revision),
    /// The key must exist.
    Exists,
}

/// A single-key write.
#[derive(Debug, Clone)]
pub enum Op {
    /// Store this object (its resourceVersion is set by the store).
    Put(Value),
    /// Remove the object.
    Delete,
}

/// A conditional single-key write.
#[derive(Debug, Clone)]
pub struct Write {
    /// Which object.
    pub key: Key,
    /// What must hold.
    pub precondition: Precondition,
    /// What to do.
    pub op: Op,
}

/// The result of a committed write.
#[derive(Debug, Clone)]
pub struct Committed {
    /// What the write did.
    pub kind: EventType,
    /// The object as stored (for a delete: its final state).
    pub object: Arc<Object>,
    /// The version it replaced.
    pub prev: Option<Arc<Object>>,
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Create of an existing key.
    #[error("{0} already exists")]
    AlreadyExists(Key),
    /// Update or delete of a missing key.
    #[error("{0} not found")]
    NotFound(Key),
    /// The object changed since the revision the write was based on.
    #[error("{key} is at revision {current}, not {expected}")]
    Conflict {
        /// Which object.
        key: Key,
        /// The revision the writer expected.
        expected: Revision,
        /// The revision stored.
        current: Revision,
    },
    /// The revision asked for is older than the retained history.
    #[error("too old resource version: {requested} ({oldest})")]
    Gone {
        /// What was asked for.
        requested: Revision,
        /// The oldest revision still available.
        oldest: Revision,
    },
    /// The store is shutting down.
    #[error("the store is shutting down")]
    Closed,
    /// The durable backend failed; nothing was acknowledged.
    #[error("storage backend: {0}")]
    Backend(String),
}

/// A point-in-time listing.
pub struct Listing {
    /// The revision the listing reflects.
    pub revision: Revision,
    /// Objects under the prefix, in key order, after the `after` key.
    pub items: Box<dyn Iterator<Item = Arc<Object>> + Send>,
}

/// The storage interface of the API layer.
pub trait Storage: Send + Sync + 'static {
    /// The current object at `key`.
    fn get(&self, key: &Key) -> Option<Arc<Object>>;

    /// Objects whose key starts with `prefix`, strictly after `after`.
    /// With `at`, lists the snapshot retained at that revision (for a
    /// `continue` token) or fails with [`StoreError::Gone`]; with `retain`,
    /// keeps this listing's snapshot for a later `continue`.
    fn list(
        &self,
        prefix: &str,
        after: Option<&Key>,
        at: Option<Revision>,
        retain: bool,
    ) -> Result<Listing, StoreError>;

    /// Applies one conditional write durably.
    fn write(
        &self,
        write: Write,
    ) -> futures::future::BoxFuture<'static, Result<Committed, StoreError>>;

    /// Changes under `prefix` with a revision above `after`, or
    /// [`StoreError::Gone`] if some of them are no longer retained.
    fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError>;

    /// The latest committed revision.
    fn revision(&self) -> Revision;
}
