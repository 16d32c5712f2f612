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

/// Waits until every earlier turn of the connection has been dropped; without a turn, at once.
pub(crate) async fn wait_turn(turn: &mut Option<Turn>) {
    if let Some(previous) = turn.as_mut().and_then(|t| t.previous.take()) {
        let _ = previous.await;
    }
}
