//! The embedded store: every object in memory (a persistent ordered map, so
//! a listing is an O(1) snapshot), durably kept in a redb file.
//!
//! One writer thread takes every write queued since its last commit,
//! checks each precondition against the committed state plus the earlier
//! writes of the same batch, and commits them in one redb transaction (one
//! fsync): group commit. Only then does it publish the batch to readers and
//! watchers and acknowledge the writers, so nothing acknowledged can be lost
//! to a crash and nothing unacknowledged is ever visible.

use std::collections::{HashMap, VecDeque};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use imbl::OrdMap;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::watch::History;
use super::{
    Committed, Event, EventType, Indexer, Key, Listing, Object, Op, Precondition, Revision,
    Storage, StoreError, Watch, Write,
};

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";

/// How long and how many listing snapshots are kept for `continue` tokens.
const SNAPSHOT_TTL: Duration = Duration::from_secs(300);
const SNAPSHOTS_MAX: usize = 32;
/// The most writes committed in one transaction.
const BATCH_MAX: usize = 2048;

/// Tuning of the embedded store.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many recent events are kept for watches resuming from an older
    /// revision (older ones get 410 Gone and re-list).
    pub window: usize,
    /// redb's page cache, in bytes.
    pub cache_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            window: 10_000,
            cache_bytes: 8 << 20,
        }
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

fn backend(e: impl Into<redb::Error>) -> StoreError {
    StoreError::from(e.into())
}

struct Snapshot {
    revision: Revision,
    taken: Instant,
    objects: OrdMap<Key, Arc<Object>>,
}

struct State {
    objects: OrdMap<Key, Arc<Object>>,
    revision: Revision,
    /// Recent events, oldest first.
    window: VecDeque<Arc<Event>>,
    /// Every event above this revision is in `window`.
    compacted: Revision,
    snapshots: VecDeque<Snapshot>,
}

struct Shared {
    state: RwLock<State>,
    live: broadcast::Sender<Arc<Event>>,
    window: usize,
}

impl History for Shared {
    fn since(&self, after: Revision) -> Result<Vec<Arc<Event>>, StoreError> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        events_since(&state, after)
    }
}

fn events_since(state: &State, after: Revision) -> Result<Vec<Arc<Event>>, StoreError> {
    if after < state.compacted {
        return Err(StoreError::Gone {
            requested: after,
            oldest: state.compacted,
        });
    }
    let start = state.window.partition_point(|e| e.revision <= after);
    Ok(state.window.range(start..).cloned().collect())
}

struct Request {
    write: Write,
    reply: oneshot::Sender<Result<Committed, StoreError>>,
}

/// The embedded, durable store.
pub struct Embedded {
    shared: Arc<Shared>,
    writes: Option<mpsc::UnboundedSender<Request>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Embedded {
    /// Closes the queue and waits for the writer to finish its last
    /// commit and release the file.
    fn drop(&mut self) {
        self.writes.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Embedded {
    /// Opens (or creates) the store file and loads every object.
    pub fn open(path: &Path, indexer: Indexer, options: Options) -> Result<Self, StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(options.cache_bytes)
            .create(path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        let (objects, revision) = load(&db, &indexer)?;
        let (live, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            state: RwLock::new(State {
                objects,
                revision,
                window: VecDeque::new(),
                compacted: revision,
                snapshots: VecDeque::new(),
            }),
            live,
            window: options.window.max(1),
        });
        let (writes, queue) = mpsc::unbounded_channel();
        let writer = Writer {
            db,
            indexer,
            shared: shared.clone(),
            queue,
            revision,
        };
        let writer = std::thread::Builder::new()
            .name("km-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(Embedded {
            shared,
            writes: Some(writes),
            writer: Some(writer),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.shared.state.read().unwrap_or_else(|e| e.into_inner())
    }
}

fn load(
    db: &redb::Database,
    indexer: &Indexer,
) -> Result<(OrdMap<Key, Arc<Object>>, Revision), StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    {
        // Create the tables on first start.
        txn.open_table(OBJECTS).map_err(backend)?;
        txn.open_table(META).map_err(backend)?;
    }
    txn.commit().map_err(backend)?;
    let txn = db.begin_read().map_err(backend)?;
    let revision = txn
        .open_table(META)
        .map_err(backend)?
        .get(REVISION)
        .map_err(backend)?
        .map(|v| v.value())
        .unwrap_or(0);
    let table = txn.open_table(OBJECTS).map_err(backend)?;
    let mut objects = OrdMap::new();
    for entry in table.iter().map_err(backend)? {
        let (k, v) = entry.map_err(backend)?;
        let key = Key::new(k.value());
        let bytes = v.value();
        let Some((rev, json)) = split_record(bytes) else {
            return Err(StoreError::Backend(format!("corrupt record at {key}")));
        };
        let value: Value = serde_json::from_slice(json)
            .map_err(|e| StoreError::Backend(format!("corrupt JSON at {key}: {e}")))?;
        let meta = indexer(&key, &value);
        objects.insert(
            key.clone(),
            Arc::new(Object {
                key,
                revision: rev,
                json: Bytes::copy_from_slice(json),
                meta,
            }),
        );
    }
    Ok((objects, revision))
}

/// A record is the revision (8 bytes, little endian) then the JSON.
fn record(revision: Revision, json: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + json.len());
    v.extend_from_slice(&revision.to_le_bytes());
    v.extend_from_slice(json);
    v
}

fn split_record(bytes: &[u8]) -> Option<(Revision, &[u8])> {
    let (rev, json) = bytes.split_at_checked(8)?;
    Some((Revision::from_le_bytes(rev.try_into().ok()?), json))
}

/// Sets `metadata.resourceVersion` and serialises.
fn encode(mut value: Value, revision: Revision) -> Bytes {
    if let Some(meta) = value
        .as_object_mut()
        .and_then(|o| o.get_mut("metadata"))
        .and_then(Value::as_object_mut)
    {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
    Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
}

struct Writer {
    db: redb::Database,
    indexer: Indexer,
    shared: Arc<Shared>,
    queue: mpsc::UnboundedReceiver<Request>,
    revision: Revision,
}

struct Staged {
    reply: oneshot::Sender<Result<Committed, StoreError>>,
    event: Arc<Event>,
}

impl Writer {
    fn run(mut self) {
        while let Some(first) = self.queue.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < BATCH_MAX {
                match self.queue.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<Request>) {
        let started = Instant::now();
        let mut overlay: HashMap<Key, Option<Arc<Object>>> = HashMap::new();
        let mut staged: Vec<Staged> = Vec::with_capacity(batch.len());
        let mut revision = self.revision;
        {
            let state = self.shared.state.read().unwrap_or_else(|e| e.into_inner());
            for Request { write, reply } in batch {
                let current = match overlay.get(&write.key) {
                    Some(o) => o.clone(),
                    None => state.objects.get(&write.key).cloned(),
                };
                if let Err(e) = check(&write, current.as_ref()) {
                    let _ = reply.send(Err(e));
                    continue;
                }
                let next = revision + 1;
                let (kind, json, meta) = match write.op {
                    Op::Put(value) => {
                        let meta = (self.indexer)(&write.key, &value);
                        let kind = if current.is_some() {
                            EventType::Modified
                        } else {
                            EventType::Added
                        };
                        (kind, encode(value, next), meta)
                    }
                    Op::Delete => {
                        let Some(prev) = current.as_ref() else {
                            let _ = reply.send(Err(StoreError::NotFound(write.key)));
                            continue;
                        };
                        (
                            EventType::Deleted,
                            encode(prev.value(), next),
                            prev.meta.clone(),
                        )
                    }
                };
                revision = next;
                let object = Arc::new(Object {
                    key: write.key.clone(),
                    revision,
                    json,
                    meta,
                });
                overlay.insert(
                    write.key,
                    (kind != EventType::Deleted).then(|| object.clone()),
                );
                staged.push(Staged {
                    reply,
                    event: Arc::new(Event {
                        kind,
                        revision,
                        object,
                        prev: current,
                        line: Default::default(),
                    }),
                });
            }
        }
        if staged.is_empty() {
            return;
        }
        if let Err(e) = self.persist(&staged, revision) {
            tracing::error!(error = %e, writes = staged.len(), "store commit failed; writes rejected");
            for s in staged {
                let _ = s.reply.send(Err(e.clone()));
            }
            return;
        }
        self.revision = revision;
        crate::apiserver::metrics::store_commit(started.elapsed(), staged.len());
        let mut state = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
        for s in &staged {
            let e = &s.event;
            match e.kind {
                EventType::Deleted => {
                    state.objects.remove(&e.object.key);
                }
                _ => {
                    state.objects.insert(e.object.key.clone(), e.object.clone());
                }
            }
            state.window.push_back(e.clone());
            if state.window.len() > self.shared.window
                && let Some(old) = state.window.pop_front()
            {
                state.compacted = old.revision;
            }
            // Sent under the lock so that a new watcher's history and live
            // feed neither overlap wrongly nor leave a gap.
            let _ = self.shared.live.send(e.clone());
        }
        state.revision = revision;
        drop(state);
        for s in staged {
            let committed = Committed {
                kind: s.event.kind,
                object: s.event.object.clone(),
                prev: s.event.prev.clone(),
            };
            let _ = s.reply.send(Ok(committed));
        }
    }

    fn persist(&self, staged: &[Staged], revision: Revision) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        {
            let mut objects = txn.open_table(OBJECTS).map_err(backend)?;
            for s in staged {
                let o = &s.event.object;
                match s.event.kind {
                    EventType::Deleted => {
                        objects.remove(o.key.as_str()).map_err(backend)?;
                    }
                    _ => {
                        objects
                            .insert(o.key.as_str(), record(o.revision, &o.json).as_slice())
                            .map_err(backend)?;
                    }
                }
            }
            let mut meta = txn.open_table(META).map_err(backend)?;
            meta.insert(REVISION, revision).map_err(backend)?;
        }
        txn.commit().map_err(backend)
    }
}

fn check(write: &Write, current: Option<&Arc<Object>>) -> Result<(), StoreError> {
    match (write.precondition, current) {
        (Precondition::Absent, Some(_)) => Err(StoreError::AlreadyExists(write.key.clone())),
        (Precondition::Exists | Precondition::Revision(_), None) => {
            Err(StoreError::NotFound(write.key.clone()))
        }
        (Precondition::Revision(expected), Some(o)) if o.revision != expected => {
            Err(StoreError::Conflict {
                key: write.key.clone(),
                expected,
                current: o.revision,
            })
        }
        (Precondition::Any, None) if matches!(write.op, Op::Delete) => {
            Err(StoreError::NotFound(write.key.clone()))
        }
        _ => Ok(()),
    }
}

fn range(
    objects: &OrdMap<Key, Arc<Object>>,
    prefix: &str,
    after: Option<&Key>,
) -> Vec<Arc<Object>> {
    let start: Bound<&str> = match after {
        Some(k) if k.as_str() >= prefix => Bound::Excluded(k.as_str()),
        _ => Bound::Included(prefix),
    };
    objects
        .range::<_, str>((start, Bound::Unbounded))
        .take_while(|(k, _)| k.as_str().starts_with(prefix))
        .map(|(_, v)| v.clone())
        .collect()
}

impl std::borrow::Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Storage for Embedded {
    fn get(&self, key: &Key) -> Option<Arc<Object>> {
        self.read().objects.get(key).cloned()
    }

    fn list(
        &self,
        prefix: &str,
        after: Option<&Key>,
        at: Option<Revision>,
        retain: bool,
    ) -> Result<Listing, StoreError> {
        let (revision, objects) = {
            let state = self.read();
            match at {
                Some(rev) if rev != state.revision => {
                    let snap = state
                        .snapshots
                        .iter()
                        .find(|s| s.revision == rev && s.taken.elapsed() < SNAPSHOT_TTL)
                        .ok_or(StoreError::Gone {
                            requested: rev,
                            oldest: state.compacted,
                        })?;
                    (rev, snap.objects.clone())
                }
                _ => (state.revision, state.objects.clone()),
            }
        };
        if retain {
            let mut state = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
            state
                .snapshots
                .retain(|s| s.taken.elapsed() < SNAPSHOT_TTL && s.revision != revision);
            if state.snapshots.len() >= SNAPSHOTS_MAX {
                state.snapshots.pop_front();
            }
            state.snapshots.push_back(Snapshot {
                revision,
                taken: Instant::now(),
                objects: objects.clone(),
            });
        }
        Ok(Listing {
            revision,
            items: Box::new(range(&objects, prefix, after).into_iter()),
        })
    }

    fn write(&self, write: Write) -> BoxFuture<'static, Result<Committed, StoreError>> {
        let (reply, rx) = oneshot::channel();
        let sent = match &self.writes {
            Some(w) => w.send(Request { write, reply }).is_ok(),
            None => false,
        };
        async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            rx.await.map_err(|_| StoreError::Closed)?
        }
        .boxed()
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        let state = self.read();
        let backlog = events_since(&state, after)?;
        // Subscribed under the read lock: the writer publishes under the
        // write lock, so live events start exactly after the backlog.
        let live = self.shared.live.subscribe();
        let history: Arc<dyn History> = self.shared.clone();
        Ok(Watch::new(prefix, backlog, live, history, after))
    }

    fn revision(&self) -> Revision {
        self.read().revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn indexer() -> Indexer {
        Arc::new(|_k: &Key, v: &Value| super::super::ObjMeta {
            labels: v["metadata"]["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            fields: vec![],
        })
    }

    fn pod(name: &str) -> Value {
        json!({"kind": "Pod", "metadata": {"name": name}})
    }

    fn put(key: &str, v: Value, p: Precondition) -> Write {
        Write {
            key: Key::new(key),
            precondition: p,
            op: Op::Put(v),
        }
    }

    #[tokio::test]
    async fn writes_survive_reopen_with_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let s = Embedded::open(&path, indexer(), Options::default()).unwrap();
            let a = s
                .write(put("/pods/ns/a", pod("a"), Precondition::Absent))
                .await
                .unwrap();
            assert_eq!(a.object.revision, 1);
            assert_eq!(a.object.value()["metadata"]["resourceVersion"], "1");
            s.write(put("/pods/ns/b", pod("b"), Precondition::Absent))
                .await
                .unwrap();
            s.write(Write {
                key: Key::new("/pods/ns/a"),
                precondition: Precondition::Revision(1),
                op: Op::Delete,
            })
            .await
            .unwrap();
            assert_eq!(s.revision(), 3);
        }
        let s = Embedded::open(&path, indexer(), Options::default()).unwrap();
        assert_eq!(s.revision(), 3);
        assert!(s.get(&Key::new("/pods/ns/a")).is_none());
        assert_eq!(s.get(&Key::new("/pods/ns/b")).unwrap().revision, 2);
        // Resuming at the current revision works; older history is gone.
        assert!(s.watch("/pods/", 3).is_ok());
        assert!(matches!(s.watch("/pods/", 1), Err(StoreError::Gone { .. })));
    }

    #[tokio::test]
    async fn preconditions_decide_concurrent_writers() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(
            Embedded::open(&dir.path().join("db"), indexer(), Options::default()).unwrap(),
        );
        let first = s
            .write(put("/x/a", pod("a"), Precondition::Absent))
            .await
            .unwrap();
        assert!(matches!(
            s.write(put("/x/a", pod("a"), Precondition::Absent)).await,
            Err(StoreError::AlreadyExists(_))
        ));
        let rev = first.object.revision;
        let (r1, r2) = tokio::join!(
            s.write(put("/x/a", pod("a"), Precondition::Revision(rev))),
            s.write(put("/x/a", pod("a"), Precondition::Revision(rev)))
        );
        assert_eq!(
            r1.is_ok() as u8 + r2.is_ok() as u8,
            1,
            "exactly one writer wins"
        );
        assert!(matches!(
            r1.err().or(r2.err()),
            Some(StoreError::Conflict { .. })
        ));
    }

    #[tokio::test]
    async fn list_snapshots_and_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Embedded::open(&dir.path().join("db"), indexer(), Options::default()).unwrap();
        for k in ["/pods/a/1", "/pods/a/2", "/pods/b/1", "/podsx/a/1"] {
            s.write(put(k, pod(k), Precondition::Absent)).await.unwrap();
        }
        let keys = |l: Listing| l.items.map(|o| o.key.to_string()).collect::<Vec<_>>();
        assert_eq!(keys(s.list("/pods/", None, None, false).unwrap()).len(), 3);
        assert_eq!(
            keys(s.list("/pods/a/", None, None, false).unwrap()),
            ["/pods/a/1", "/pods/a/2"]
        );
        let first = s.list("/pods/", None, None, true).unwrap();
        let rev = first.revision;
        s.write(put("/pods/c/1", pod("c"), Precondition::Absent))
            .await
            .unwrap();
        let after = Key::new("/pods/a/2");
        let rest = keys(s.list("/pods/", Some(&after), Some(rev), false).unwrap());
        assert_eq!(rest, ["/pods/b/1"], "a continued list reads the snapshot");
        assert!(matches!(
            s.list("/pods/", None, Some(rev - 1), false),
            Err(StoreError::Gone { .. })
        ));
    }

    #[tokio::test]
    async fn watches_resume_and_slow_watchers_catch_up_from_history() {
        let dir = tempfile::tempdir().unwrap();
        let s = Embedded::open(
            &dir.path().join("db"),
            indexer(),
            Options {
                window: 100_000,
                ..Default::default()
            },
        )
        .unwrap();
        let mut w = s.watch("/pods/", 0).unwrap();
        // More events than the live channel holds, before the watcher reads any.
        let n = 5000u64;
        for i in 0..n {
            let k = if i % 2 == 0 {
                format!("/pods/ns/{i}")
            } else {
                format!("/nodes/{i}")
            };
            s.write(put(&k, pod("p"), Precondition::Absent))
                .await
                .unwrap();
        }
        let mut seen = 0;
        let mut last = 0;
        while seen < n / 2 {
            let e = w.next().await.unwrap();
            assert!(e.revision > last, "in order, no duplicates");
            assert!(e.object.key.as_str().starts_with("/pods/"));
            last = e.revision;
            seen += 1;
        }
        // Resume from a revision in the middle.
        let mut w2 = s.watch("/pods/", 10).unwrap();
        assert_eq!(w2.next().await.unwrap().revision, 11);
    }

    #[tokio::test]
    async fn compacted_history_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let s = Embedded::open(
            &dir.path().join("db"),
            indexer(),
            Options {
                window: 10,
                ..Default::default()
            },
        )
        .unwrap();
        for i in 0..50 {
            s.write(put(&format!("/a/{i}"), pod("p"), Precondition::Absent))
                .await
                .unwrap();
        }
        assert!(matches!(s.watch("/a/", 5), Err(StoreError::Gone { .. })));
        assert!(s.watch("/a/", 45).is_ok());
    }
}
