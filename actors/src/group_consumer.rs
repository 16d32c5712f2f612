//! The group actor's handlers for the consumer protocol (KIP-848): ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe. The state machine itself is [`crate::consumer_group`].

use std::time::Instant;

use actix::prelude::*;

use crate::consumer_group::{ConsumerGroupDescription, HeartbeatAnswer, HeartbeatRequest};
use crate::group::{GroupActor, GroupPhase, GroupType};
use crate::BrokerError;

/// One consumer-protocol heartbeat: join, leave, subscribe, acknowledge an assignment.
#[derive(Message)]
#[rtype(result = "Result<HeartbeatAnswer, BrokerError>")]
pub struct ConsumerGroupHeartbeat {
    pub request: HeartbeatRequest,
}

impl Handler<ConsumerGroupHeartbeat> for GroupActor {
    type Result = Result<HeartbeatAnswer, BrokerError>;

    fn handle(&mut self, msg: ConsumerGroupHeartbeat, _: &mut Context<Self>) -> Self::Result {
        if self.phase == GroupPhase::Dead {
            return Err(self.unavailable());
        }
        if self.phase != GroupPhase::Empty {
            return Err(BrokerError::GroupTypeMismatch {
                group: self.id.clone(),
                actual: GroupType::Classic.name(),
                wanted: GroupType::Consumer.name(),
            });
        }
        let was_empty = self.consumer.is_empty();
        let snapshot = self.catalog.snapshot();
        let answer = self
            .consumer
            .heartbeat(&self.id, msg.request, &snapshot, Instant::now())?;
        if !self.consumer.is_empty() {
            self.group_type = GroupType::Consumer;
        } else if !was_empty {
            self.empty_since = Instant::now();
        }
        Ok(answer)
    }
}

/// The group as ConsumerGroupDescribe shows it; refused for a classic group, as Kafka does.
#[derive(Message)]
#[rtype(result = "Result<ConsumerGroupDescription, BrokerError>")]
pub struct DescribeConsumerGroup;

impl Handler<DescribeConsumerGroup> for GroupActor {
    type Result = Result<ConsumerGroupDescription, BrokerError>;

    fn handle(&mut self, _: DescribeConsumerGroup, _: &mut Context<Self>) -> Self::Result {
        if self.phase == GroupPhase::Dead {
            return Err(BrokerError::GroupNotFound(self.id.clone()));
        }
        if self.group_type != GroupType::Consumer {
            return Err(BrokerError::GroupTypeMismatch {
                group: self.id.clone(),
                actual: GroupType::Classic.name(),
                wanted: GroupType::Consumer.name(),
            });
        }
        Ok(self.consumer.describe())
    }
}
