//! Fault injection for tests of supervision: makes a chosen actor panic while clients work
//! against it. Served only by debug builds (the HTTP front end's `POST /debug/faults`); a
//! release build has the message type but no actor handles it and no route sends it.

use actix::prelude::*;

#[cfg(debug_assertions)]
use crate::group_registry::FindGroup;
#[cfg(debug_assertions)]
use crate::{Broker, BrokerError};

/// Makes the actor that receives it panic, as a bug in one of its handlers would.
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectPanic;

/// Which actor to crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultTarget {
    /// The actor of one partition (its log is recovered by the restart).
    Partition { topic: String, partition: i32 },
    /// The coordinator of one consumer group (its offsets are reloaded from the journal).
    Group { group: String },
}

/// Crashes the actor `target` names. Answers once it has panicked.
#[cfg(debug_assertions)]
pub async fn crash(broker: &Broker, target: &FaultTarget) -> Result<(), BrokerError> {
    match target {
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
            let _ = addr.send(InjectPanic).await;
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
            let _ = addr.send(InjectPanic).await;
        }
    }
    Ok(())
}
