//! The consumer group protocol of KIP-848: ConsumerGroupHeartbeat and ConsumerGroupDescribe,
//! translated to messages of the group coordinator actors. Assignments travel by topic id.

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member as DescribedMember,
    TopicPartitions as DescribedTopicPartitions,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use spool_actors::assignor::TopicIdPartition;
use spool_actors::consumer_group::HeartbeatRequest;
use spool_actors::group_consumer::{ConsumerGroupHeartbeat, DescribeConsumerGroup};
use spool_actors::CatalogSnapshot;
use uuid::Uuid;

use crate::error_codes;
use crate::groups::coordinator;
use crate::handler::{message, str_bytes, Ctx};

/// Partitions grouped by topic, in topic-id order (the sets come sorted).
fn by_topic(partitions: &[TopicIdPartition]) -> Vec<(Uuid, Vec<i32>)> {
    let mut out: Vec<(Uuid, Vec<i32>)> = Vec::new();
    for (topic, p) in partitions {
        let id = Uuid::from_bytes(*topic);
        match out.last_mut() {
            Some((last, ps)) if *last == id => ps.push(*p),
            _ => out.push((id, vec![*p])),
        }
    }
    out
}

pub(crate) async fn heartbeat(
    ctx: &Ctx,
    req: ConsumerGroupHeartbeatRequest,
    version: i16,
    client_id: &str,
) -> ConsumerGroupHeartbeatResponse {
    let interval = ctx
        .broker
        .config
        .groups
        .consumer
        .heartbeat_interval
        .as_millis() as i32;
    let fail = |code: i16, text: Option<String>| {
        ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code)
            .with_error_message(text.map(str_bytes))
            .with_heartbeat_interval_ms(interval)
    };
    if req.group_id.is_empty() {
        return fail(
            ResponseError::InvalidRequest.code(),
            Some("GroupId can't be empty.".into()),
        );
    }
    // v0 lets the broker pick member ids; from v1 the client does.
    if version >= 1 && req.member_id.is_empty() {
        return fail(
            ResponseError::InvalidRequest.code(),
            Some("MemberId can't be empty.".into()),
        );
    }
    let addr = match coordinator(ctx, &req.group_id, req.member_epoch == 0).await {
        Ok(a) => a,
        Err(c) if c == ResponseError::GroupIdNotFound.code() => {
            return fail(
                ResponseError::UnknownMemberId.code(),
                Some(format!(
                    "group {} has no member {}",
                    req.group_id.as_str(),
                    req.member_id.as_str()
                )),
            )
        }
        Err(c) => return fail(c, None),
    };
    let request = HeartbeatRequest {
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: req.rack_id.as_ref().map(|s| s.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.to_string()).collect()),
        subscribed_topic_regex: req.subscribed_topic_regex.as_ref().map(|s| s.to_string()),
        server_assignor: req.server_assignor.as_ref().map(|s| s.to_string()),
        owned: req.topic_partitions.as_ref().map(|ts| {
            ts.iter()
                .flat_map(|t| {
                    let id = *t.topic_id.as_bytes();
                    t.partitions.iter().map(move |p| (id, *p))
                })
                .collect()
        }),
        client_id: client_id.to_string(),
        client_host: ctx.peer_host(),
    };
    match addr.send(ConsumerGroupHeartbeat { request }).await {
        Ok(Ok(answer)) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(str_bytes(answer.member_id)))
            .with_member_epoch(answer.member_epoch)
            .with_heartbeat_interval_ms(interval)
            .with_assignment(answer.assignment.map(|a| {
                Assignment::default().with_topic_partitions(
                    by_topic(&a)
                        .into_iter()
                        .map(|(id, ps)| {
                            TopicPartitions::default()
                                .with_topic_id(id)
                                .with_partitions(ps)
                        })
                        .collect(),
                )
            })),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "consumer group heartbeat refused");
            fail(error_codes::code(&e), Some(e.to_string()))
        }
        Err(_) => fail(ResponseError::CoordinatorNotAvailable.code(), None),
    }
}

fn described_assignment(
    partitions: &[TopicIdPartition],
    snapshot: &CatalogSnapshot,
) -> DescribedAssignment {
    DescribedAssignment::default().with_topic_partitions(
        by_topic(partitions)
            .into_iter()
            .map(|(id, ps)| {
                let name = snapshot
                    .topic_by_id(id.as_bytes())
                    .map(|t| t.name.to_string())
                    .unwrap_or_default();
                DescribedTopicPartitions::default()
                    .with_topic_id(id)
                    .with_topic_name(TopicName(str_bytes(name)))
                    .with_partitions(ps)
            })
            .collect(),
    )
}

pub(crate) async fn describe(
    ctx: &Ctx,
    req: ConsumerGroupDescribeRequest,
    version: i16,
) -> ConsumerGroupDescribeResponse {
    let snapshot = ctx.broker.catalog.snapshot();
    let mut groups = Vec::with_capacity(req.group_ids.len());
    for g in req.group_ids {
        let base = DescribedGroup::default().with_group_id(g.clone());
        let described = match coordinator(ctx, &g, false).await {
            Ok(addr) => match addr.send(DescribeConsumerGroup).await {
                Ok(r) => r.map_err(|e| (error_codes::code(&e), message(&e))),
                Err(_) => Err((ResponseError::CoordinatorNotAvailable.code(), None)),
            },
            Err(c) => Err((
                c,
                Some(str_bytes(format!("group {} does not exist", g.as_str()))),
            )),
        };
        groups.push(match described {
            Ok(d) => base
                .with_group_state(str_bytes(d.state.name()))
                .with_group_epoch(d.group_epoch)
                .with_assignment_epoch(d.assignment_epoch)
                .with_assignor_name(str_bytes(d.assignor))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            let member = DescribedMember::default()
                                .with_member_id(str_bytes(m.member_id))
                                .with_instance_id(m.instance_id.map(str_bytes))
                                .with_rack_id(m.rack_id.map(str_bytes))
                                .with_member_epoch(m.member_epoch)
                                .with_client_id(str_bytes(m.client_id))
                                .with_client_host(str_bytes(m.client_host))
                                .with_subscribed_topic_names(
                                    m.subscribed_topic_names
                                        .into_iter()
                                        .map(|t| TopicName(str_bytes(t)))
                                        .collect(),
                                )
                                .with_subscribed_topic_regex(
                                    m.subscribed_topic_regex.map(str_bytes),
                                )
                                .with_assignment(described_assignment(&m.assignment, &snapshot))
                                .with_target_assignment(described_assignment(
                                    &m.target_assignment,
                                    &snapshot,
                                ));
                            // v1 tells consumer-protocol members from classic ones.
                            if version >= 1 {
                                member.with_member_type(1)
                            } else {
                                member
                            }
                        })
                        .collect(),
                ),
            Err((code, text)) => base
                .with_error_code(code)
                .with_error_message(text)
                .with_group_state(str_bytes("Dead")),
        });
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
