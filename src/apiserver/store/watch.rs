//! A watch: the retained history after a revision, then live events, with
//! recovery from the history when the watcher falls behind the live feed.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::{Event, Revision, StoreError};

/// Where a lagging watcher catches up from.
pub(crate) trait History: Send + Sync {
    /// Every retained event with a revision above `after`, in order, or
    /// [`StoreError::Gone`] when some of them are no longer retained.
    fn since(&self, after: Revision) -> Result<Vec<Arc<Event>>, StoreError>;
}

/// A stream of the changes under one key prefix, in revision order, with no
/// gaps. A watcher that reads slowly never holds up the store or other
/// watchers: when it falls behind the live feed it catches up from the
/// retained history, and only if that was compacted does it get
/// [`StoreError::Gone`].
pub struct Watch {
    prefix: Arc<str>,
    backlog: VecDeque<Arc<Event>>,
    live: broadcast::Receiver<Arc<Event>>,
    history: Arc<dyn History>,
    last: Revision,
}

impl Watch {
    pub(crate) fn new(
        prefix: &str,
        backlog: Vec<Arc<Event>>,
        live: broadcast::Receiver<Arc<Event>>,
        history: Arc<dyn History>,
        after: Revision,
    ) -> Self {
        Watch {
            prefix: prefix.into(),
            backlog: backlog.into(),
            live,
            history,
            last: after,
        }
    }

    /// The next change under the prefix.
    pub async fn next(&mut self) -> Result<Arc<Event>, StoreError> {
        loop {
            let event = match self.backlog.pop_front() {
                Some(e) => e,
                None => match self.live.recv().await {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.backlog.extend(self.history.since(self.last)?);
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(StoreError::Closed),
                },
            };
            if event.revision <= self.last {
                continue;
            }
            self.last = event.revision;
            if event.object.key.as_str().starts_with(&*self.prefix) {
                return Ok(event);
            }
        }
    }

    /// The revision up to which every change has been seen (delivered or
    /// filtered out): a safe resourceVersion for a bookmark.
    pub fn progress(&self) -> Revision {
        self.last
    }
}
