//! Request order on one connection. Kafka applies a connection's requests in the order they
//! were sent; Spool handles them concurrently, so requests whose effects must not overtake each
//! other (Produce and OffsetCommit) take a turn in arrival order: each waits for the previous
//! one to have queued its effect before queuing its own. Reads do not take turns.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// One connection's queue of turns.
#[derive(Clone, Default)]
pub(crate) struct Turns(Arc<Mutex<Option<oneshot::Receiver<()>>>>);

/// A request's place in its connection's order. Dropping it lets the next turn go.
pub(crate) struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    /// Held until the turn is dropped; the next turn waits for it to close.
    _done: oneshot::Sender<()>,
}

impl Turns {
    /// The next turn; called in arrival order, before the request is handed to a task.
    pub fn take(&self) -> Turn {
        let (done, next) = oneshot::channel();
        let previous = self.0.lock().expect("turns lock").replace(next);
        Turn {
            previous,
            _done: done,
        }
    }
}

impl Turn {
    /// Waits until every earlier turn has finished (or its request was dropped).
    pub async fn wait(&mut self) {
        if let Some(p) = self.previous.take() {
            let _ = p.await;
        }
    }
}
