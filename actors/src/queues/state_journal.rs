//! Every queue's delivery state, kept durable in a [`Journal`] (as Kafka keeps share-group
//! state in `__share_group_state`). Queue actors send each change here as it happens; a
//! restarted queue loads its state back.

use std::collections::{BTreeMap, HashMap, HashSet};

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use super::delivery::{Change, DeliveryState, Durable};
use crate::journal::{Journal, JournalPlace, JournalState};
use crate::supervision::EndNotice;
use crate::BrokerError;

/// Where the journal lives under the data directory.
pub const STATE_JOURNAL_DIR: &str = "__queue_state";

/// One frame of the journal. `partition` is the partition of the queue's topic the state is
/// about (absent, as journals before multi-partition queues wrote it: 0).
#[derive(Debug, Serialize, Deserialize)]
pub enum QueueFrame {
    Change {
        queue: String,
        #[serde(default)]
        partition: i32,
        change: Change,
    },
    Snapshot {
        queue: String,
        #[serde(default)]
        partition: i32,
        state: Durable,
    },
    Deleted {
        queue: String,
    },
}

/// Every queue's durable state, by partition of its topic.
#[derive(Default)]
pub struct QueueStates(HashMap<String, BTreeMap<i32, Durable>>);

impl JournalState for QueueStates {
    type Frame = QueueFrame;

    fn apply(&mut self, frame: QueueFrame) {
        match frame {
            QueueFrame::Change {
                queue,
                partition,
                change,
            } => DeliveryState::replay(
                self.0
                    .entry(queue)
                    .or_default()
                    .entry(partition)
                    .or_default(),
                &change,
            ),
            QueueFrame::Snapshot {
                queue,
                partition,
                state,
            } => {
                self.0.entry(queue).or_default().insert(partition, state);
            }
            QueueFrame::Deleted { queue } => {
                self.0.remove(&queue);
            }
        }
    }

    fn snapshot(&self) -> Vec<QueueFrame> {
        self.0
            .iter()
            .flat_map(|(queue, partitions)| {
                partitions
                    .iter()
                    .map(|(partition, state)| QueueFrame::Snapshot {
                        queue: queue.clone(),
                        partition: *partition,
                        state: state.clone(),
                    })
            })
            .collect()
    }
}

/// The only writer of the queue-state journal.
pub struct QueueStateJournal {
    journal: Journal<QueueStates>,
    /// Tells the queue registry when this actor ends (declared last: dropped after the
    /// journal, so a restart opens it after this one closed it).
    end_notice: Option<EndNotice>,
}

impl QueueStateJournal {
    /// Opens (recovering) the journal at `place`.
    pub fn open(place: &JournalPlace) -> Result<QueueStateJournal, BrokerError> {
        Ok(QueueStateJournal {
            journal: place.open(STATE_JOURNAL_DIR)?,
            end_notice: None,
        })
    }

    /// Reports this actor's end to its supervisor, however it ends.
    pub fn with_end_notice(mut self, notice: EndNotice) -> QueueStateJournal {
        self.end_notice = Some(notice);
        self
    }
}

impl Actor for QueueStateJournal {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        Journal::keep_synced(self, ctx, |a| &mut a.journal);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.journal.flush();
    }
}

impl Handler<crate::supervision::StopActor> for QueueStateJournal {
    type Result = ();

    /// Fsyncs the journal, then stops: answered once everything recorded is durable.
    fn handle(&mut self, _: crate::supervision::StopActor, ctx: &mut Context<Self>) {
        self.journal.flush();
        ctx.stop();
    }
}

/// Records a change to one partition of a queue. Sent with `do_send` in the order changes
/// happen; the write reaches the page cache before the next message is handled.
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct RecordQueueChange {
    pub queue: String,
    pub partition: i32,
    pub change: Change,
}

impl Handler<RecordQueueChange> for QueueStateJournal {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: RecordQueueChange, _: &mut Context<Self>) -> Self::Result {
        if msg.change.is_empty() {
            return Ok(());
        }
        self.journal.record(QueueFrame::Change {
            queue: msg.queue,
            partition: msg.partition,
            change: msg.change,
        })
    }
}

/// A queue's durable state by partition, as a (re)starting queue actor loads it.
#[derive(Message)]
#[rtype(result = "BTreeMap<i32, Durable>")]
pub struct LoadQueueState {
    pub queue: String,
}

impl Handler<LoadQueueState> for QueueStateJournal {
    type Result = MessageResult<LoadQueueState>;

    fn handle(&mut self, msg: LoadQueueState, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.journal
                .state()
                .0
                .get(&msg.queue)
                .cloned()
                .unwrap_or_default(),
        )
    }
}

/// Records the whole durable state of one partition of a queue: what a queue actor sends when
/// the journal it wrote to before ended (the changes in that journal's mailbox were lost).
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct RecordQueueSnapshot {
    pub queue: String,
    pub partition: i32,
    pub state: Durable,
}

impl Handler<RecordQueueSnapshot> for QueueStateJournal {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: RecordQueueSnapshot, _: &mut Context<Self>) -> Self::Result {
        self.journal.record(QueueFrame::Snapshot {
            queue: msg.queue,
            partition: msg.partition,
            state: msg.state,
        })
    }
}

/// Forgets the state of every queue not named (deletions the journal's previous actor never
/// wrote).
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct RetainQueueStates {
    pub queues: HashSet<String>,
}

impl Handler<RetainQueueStates> for QueueStateJournal {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: RetainQueueStates, _: &mut Context<Self>) -> Self::Result {
        let gone: Vec<String> = self
            .journal
            .state()
            .0
            .keys()
            .filter(|q| !msg.queues.contains(*q))
            .cloned()
            .collect();
        for queue in gone {
            self.journal.record(QueueFrame::Deleted { queue })?;
        }
        Ok(())
    }
}

#[cfg(debug_assertions)]
impl Handler<crate::faults::InjectPanic> for QueueStateJournal {
    type Result = ();

    fn handle(&mut self, msg: crate::faults::InjectPanic, _: &mut Context<Self>) {
        msg.strike(format_args!("the queue-state journal"));
    }
}

/// Forgets a deleted queue's state.
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct ForgetQueueState {
    pub queue: String,
}

impl Handler<ForgetQueueState> for QueueStateJournal {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: ForgetQueueState, _: &mut Context<Self>) -> Self::Result {
        self.journal
            .record(QueueFrame::Deleted { queue: msg.queue })
    }
}

/// Answers once every message sent before it (by the same sender) has been handled, so a
/// queue can tell a client its earlier changes are written.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Barrier;

impl Handler<Barrier> for QueueStateJournal {
    type Result = ();

    fn handle(&mut self, _: Barrier, _: &mut Context<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_without_a_partition_are_partition_zero() {
        let old: QueueFrame =
            serde_json::from_str(r#"{"Change":{"queue":"q","change":{"Finished":[0,1]}}}"#)
                .unwrap();
        let mut states = QueueStates::default();
        states.apply(old);
        states.apply(QueueFrame::Change {
            queue: "q".into(),
            partition: 2,
            change: Change::Finished(vec![0]),
        });
        let q = &states.0["q"];
        assert_eq!((q[&0].start, q[&2].start), (2, 1));
        // A snapshot keeps each partition apart, and replays to the same state.
        let mut again = QueueStates::default();
        for frame in states.snapshot() {
            again.apply(frame);
        }
        assert_eq!(again.0, states.0);
        again.apply(QueueFrame::Deleted { queue: "q".into() });
        assert!(again.0.is_empty());
    }
}
