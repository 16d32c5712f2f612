//! Fault injection for tests of supervision: makes a chosen actor panic while clients work
//! against it. Served only by debug builds (the HTTP front end's `POST /debug/faults`); a
//! release build has the message type but no actor handles it and no route sends it.

use actix::prelude::*;

#[cfg(debug_assertions)]
use crate::group_registry::FindGroup;
#[cfg(debug_assertions)]
use crate::queues::registry::FindQueue;
#[cfg(debug_assertions)]
use crate::{Broker, BrokerError};

/// Makes the actor that receives it panic, as a bug in one of its handlers would; first it
/// blocks its thread for `stall` (as a slow disk would), so that messages pile up in its
/// mailbox and are lost with it.
#[derive(Message, Default)]
#[rtype(result = "()")]
pub struct InjectPanic {
    pub stall: std::time::Duration,
}

impl InjectPanic {
    /// Stalls, then panics with a message naming `actor`.
    pub fn strike(self, actor: std::fmt::Arguments<'_>) -> ! {
        std::thread::sleep(self.stall);
        panic!("injected panic in {actor}");
    }
}

/// Which actor to crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultTarget {
    /// The actor of one partition (its log is recovered by the restart).
    Partition { topic: String, partition: i32 },
    /// The coordinator of one consumer group (its offsets are reloaded from the journal).
    Group { group: String },
    /// The actor of one queue (its delivery state is reloaded from the queue-state journal;
    /// its consumers re-attach).
    Queue { queue: String },
    /// The actor of the queue-state journal (reopened from disk; queues write their state
    /// to it again).
    QueueStateJournal,
    /// The actor of the group offsets journal (reopened from disk).
    OffsetsJournal,
}

/// A crash to inject: which actor, and how long it stalls before it panics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub target: FaultTarget,
    pub stall: std::time::Duration,
}

/// Crashes the actor `fault` names. Answers once it has panicked.
#[cfg(debug_assertions)]
pub async fn crash(broker: &Broker, fault: &Fault) -> Result<(), BrokerError> {
    let strike = || InjectPanic { stall: fault.stall };
    match &fault.target {
        FaultTarget::Partition { topic, partition } => {
            let snapshot = broker.catalog.snapshot();
            let addr = snapshot
                .partition(topic, *partition)
                .ok_or_else(|| BrokerError::UnknownPartition {
                    topic: topic.clone(),
                    partition: *partition,
                })?
                .local
                .clone()
                .ok_or_else(|| BrokerError::PartitionUnavailable {
                    topic: topic.clone(),
                    partition: *partition,
                })?;
            // The answer never comes: the mailbox error is the panic.
            let _ = addr.send(strike()).await;
        }
        FaultTarget::Group { group } => {
            let addr = broker
                .groups
                .send(FindGroup {
                    group_id: group.clone(),
                    create: false,
                })
                .await
                .map_err(|_| BrokerError::GroupUnavailable(group.clone()))??
                .ok_or_else(|| BrokerError::GroupNotFound(group.clone()))?;
            let _ = addr.send(strike()).await;
        }
        FaultTarget::Queue { queue } => {
            let addr = broker
                .queues
                .send(FindQueue {
                    name: queue.clone(),
                    connection: 0,
                })
                .await
                .map_err(|_| {
                    BrokerError::InvalidRequest("the queue registry has stopped".into())
                })??;
            let _ = addr.send(strike()).await;
        }
        FaultTarget::QueueStateJournal => {
            let _ = broker.journals.queue_state.send(strike()).await;
        }
        FaultTarget::OffsetsJournal => {
            let _ = broker.journals.offsets.send(strike()).await;
        }
    }
    Ok(())
}
