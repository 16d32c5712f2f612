//! The classic consumer group protocol: JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups and OffsetDelete,
//! translated to messages of the group coordinator actors.

use std::collections::HashSet;

use actix::Addr;
use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::ResponseError;
use spool_actors::group::{
    CommitOffsets, DeleteGroup, DeleteOffsets, DescribeGroup, FetchOffsets, GroupActor,
    GroupDescription, GroupPhase, GroupType, Heartbeat, JoinGroup, LeaveGroup, SyncGroup,
};
use spool_actors::group_registry::{FindGroup, ForgetGroup, ListGroupCoordinators};
use spool_actors::offsets_journal::{now_ms, CommittedOffset, TopicPartition};
use spool_actors::BrokerError;

use crate::error_codes;
use crate::handler::{str_bytes, Ctx};

/// Largest commit metadata string accepted (`offset.metadata.max.bytes`).
const MAX_METADATA_BYTES: usize = 4096;

/// The group's coordinator, or the error code to answer with.
pub(crate) async fn coordinator(
    ctx: &Ctx,
    group: &str,
    create: bool,
) -> Result<Addr<GroupActor>, i16> {
    match ctx
        .broker
        .groups
        .send(FindGroup {
            group_id: group.to_string(),
            create,
        })
        .await
    {
        Ok(Ok(Some(addr))) => Ok(addr),
        Ok(Ok(None)) => Err(ResponseError::GroupIdNotFound.code()),
        Ok(Err(e)) => Err(error_codes::code(&e)),
        Err(_) => Err(ResponseError::CoordinatorNotAvailable.code()),
    }
}

fn code_of<T>(r: &Result<T, BrokerError>) -> i16 {
    if let Err(e) = r {
        tracing::debug!(error = %e, "group request refused");
    }
    r.as_ref().err().map_or(0, error_codes::code)
}

fn unavailable() -> i16 {
    ResponseError::CoordinatorNotAvailable.code()
}

fn opt_str(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

pub(crate) async fn join_group(
    ctx: &Ctx,
    req: JoinGroupRequest,
    version: i16,
    client_id: &str,
) -> JoinGroupResponse {
    let fail = |code: i16, member_id: StrBytes| {
        let r = JoinGroupResponse::default()
            .with_error_code(code)
            .with_generation_id(-1)
            .with_member_id(member_id);
        // Before v7 the protocol name is a non-null string.
        if version < 7 {
            r.with_protocol_name(Some(StrBytes::default()))
        } else {
            r
        }
    };
    let addr = match coordinator(ctx, &req.group_id, true).await {
        Ok(a) => a,
        Err(code) => return fail(code, req.member_id),
    };
    let msg = JoinGroup {
        member_id: req.member_id.to_string(),
        instance_id: opt_str(&req.group_instance_id),
        client_id: client_id.to_string(),
        client_host: ctx.peer_host(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: it is the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let answer = match addr.send(msg).await {
        Ok(rx) => rx
            .await
            .unwrap_or_else(|_| Err(BrokerError::GroupUnavailable(req.group_id.to_string()))),
        Err(_) => return fail(unavailable(), req.member_id),
    };
    match answer {
        Ok(j) => JoinGroupResponse::default()
            .with_generation_id(j.generation)
            .with_protocol_type((version >= 7).then(|| str_bytes(j.protocol_type)))
            .with_protocol_name(Some(str_bytes(j.protocol_name)))
            .with_leader(str_bytes(j.leader))
            .with_member_id(str_bytes(j.member_id))
            .with_skip_assignment(j.skip_assignment)
            .with_members(
                j.members
                    .into_iter()
                    .map(|m| {
                        JoinGroupResponseMember::default()
                            .with_member_id(str_bytes(m.member_id))
                            .with_group_instance_id(m.instance_id.map(str_bytes))
                            .with_metadata(m.metadata)
                    })
                    .collect(),
            ),
        Err(BrokerError::MemberIdRequired(id)) => {
            fail(ResponseError::MemberIdRequired.code(), str_bytes(id))
        }
        Err(e) => fail(error_codes::code(&e), req.member_id),
    }
}

pub(crate) async fn sync_group(
    ctx: &Ctx,
    req: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let fail = |code: i16| SyncGroupResponse::default().with_error_code(code);
    let addr = match coordinator(ctx, &req.group_id, false).await {
        Ok(a) => a,
        Err(c) if c == ResponseError::GroupIdNotFound.code() => {
            return fail(ResponseError::UnknownMemberId.code())
        }
        Err(c) => return fail(c),
    };
    let msg = SyncGroup {
        member_id: req.member_id.to_string(),
        instance_id: opt_str(&req.group_instance_id),
        generation: req.generation_id,
        protocol_type: opt_str(&req.protocol_type),
        protocol_name: opt_str(&req.protocol_name),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let answer = match addr.send(msg).await {
        Ok(rx) => rx
            .await
            .unwrap_or_else(|_| Err(BrokerError::GroupUnavailable(req.group_id.to_string()))),
        Err(_) => return fail(unavailable()),
    };
    match answer {
        Ok(s) => {
            let r = SyncGroupResponse::default().with_assignment(s.assignment);
            if version >= 5 {
                r.with_protocol_type(Some(str_bytes(s.protocol_type)))
                    .with_protocol_name(Some(str_bytes(s.protocol_name)))
            } else {
                r
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "sync refused");
            fail(error_codes::code(&e))
        }
    }
}

pub(crate) async fn heartbeat(ctx: &Ctx, req: HeartbeatRequest) -> HeartbeatResponse {
    let code = match coordinator(ctx, &req.group_id, false).await {
        Ok(addr) => match addr
            .send(Heartbeat {
                member_id: req.member_id.to_string(),
                instance_id: opt_str(&req.group_instance_id),
                generation: req.generation_id,
            })
            .await
        {
            Ok(r) => code_of(&r),
            Err(_) => unavailable(),
        },
        Err(c) if c == ResponseError::GroupIdNotFound.code() => {
            ResponseError::UnknownMemberId.code()
        }
        Err(c) => c,
    };
    HeartbeatResponse::default().with_error_code(code)
}

pub(crate) async fn leave_group(
    ctx: &Ctx,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), opt_str(&m.group_instance_id)))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let addr = match coordinator(ctx, &req.group_id, false).await {
        Ok(a) => a,
        Err(c) => {
            let c = if c == ResponseError::GroupIdNotFound.code() {
                ResponseError::UnknownMemberId.code()
            } else {
                c
            };
            return LeaveGroupResponse::default().with_error_code(c);
        }
    };
    let results = match addr
        .send(LeaveGroup {
            members: members.clone(),
        })
        .await
    {
        Ok(r) => r,
        Err(_) => return LeaveGroupResponse::default().with_error_code(unavailable()),
    };
    if version < 3 {
        return LeaveGroupResponse::default().with_error_code(code_of(&results[0]));
    }
    LeaveGroupResponse::default().with_members(
        members
            .into_iter()
            .zip(results)
            .map(|((member_id, instance), r)| {
                MemberResponse::default()
                    .with_member_id(str_bytes(member_id))
                    .with_group_instance_id(instance.map(str_bytes))
                    .with_error_code(code_of(&r))
            })
            .collect(),
    )
}

pub(crate) async fn offset_commit(ctx: &Ctx, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let snapshot = ctx.broker.catalog.snapshot();
    let now = now_ms();
    // Per partition: the resolved key and the commit, or an error code.
    let mut slots: Vec<(usize, i32, Result<Commit, i16>)> = Vec::new();
    let mut topics_out: Vec<OffsetCommitResponseTopic> = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let topic = snapshot.topic(&t.name);
        topics_out.push(OffsetCommitResponseTopic::default().with_name(t.name.clone()));
        for p in &t.partitions {
            let metadata = p.committed_metadata.as_ref().map_or("", |m| m.as_str());
            let slot = match topic {
                None => Err(ResponseError::UnknownTopicOrPartition.code()),
                Some(info)
                    if p.partition_index < 0
                        || p.partition_index as usize >= info.partitions.len() =>
                {
                    Err(ResponseError::UnknownTopicOrPartition.code())
                }
                Some(_) if metadata.len() > MAX_METADATA_BYTES => {
                    Err(ResponseError::OffsetMetadataTooLarge.code())
                }
                Some(info) => Ok((
                    (info.name.to_string(), p.partition_index),
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: metadata.to_string(),
                        commit_ms: now,
                    },
                )),
            };
            slots.push((ti, p.partition_index, slot));
        }
    }
    let valid: Vec<(TopicPartition, CommittedOffset)> = slots
        .iter()
        .filter_map(|(_, _, s)| s.as_ref().ok().cloned())
        .collect();
    let group_code = if valid.is_empty() {
        0
    } else {
        match coordinator(ctx, &req.group_id, req.generation_id_or_member_epoch < 0).await {
            Ok(addr) => match addr
                .send(CommitOffsets {
                    member_id: req.member_id.to_string(),
                    instance_id: opt_str(&req.group_instance_id),
                    generation: req.generation_id_or_member_epoch,
                    offsets: valid,
                })
                .await
            {
                Ok(r) => code_of(&r),
                Err(_) => unavailable(),
            },
            Err(c) if c == ResponseError::GroupIdNotFound.code() => {
                ResponseError::IllegalGeneration.code()
            }
            Err(c) => c,
        }
    };
    for (ti, partition, slot) in slots {
        let code = match slot {
            Ok(_) => group_code,
            Err(c) => c,
        };
        topics_out[ti].partitions.push(
            OffsetCommitResponsePartition::default()
                .with_partition_index(partition)
                .with_error_code(code),
        );
    }
    OffsetCommitResponse::default().with_topics(topics_out)
}

/// One group's requested partitions for OffsetFetch: `None` for all of them.
struct FetchWanted {
    group: String,
    /// (topic, partitions)
    topics: Option<Vec<(StrBytes, Vec<i32>)>>,
}

/// One topic's answer: per partition its committed offset.
type TopicOffsets = (StrBytes, Vec<(i32, Option<CommittedOffset>)>);

/// One group's answer, or a group error.
type FetchAnswer = Result<Vec<TopicOffsets>, i16>;

/// A partition's validated commit.
type Commit = (TopicPartition, CommittedOffset);

async fn fetch_group(ctx: &Ctx, wanted: FetchWanted) -> FetchAnswer {
    let partitions: Option<Vec<TopicPartition>> = wanted.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|(name, parts)| parts.iter().map(move |p| (name.to_string(), *p)))
            .collect()
    });
    let stored = match coordinator(ctx, &wanted.group, false).await {
        Ok(addr) => addr
            .send(FetchOffsets {
                partitions: partitions.clone(),
            })
            .await
            .map_err(|_| unavailable())?,
        // An unknown group has no offsets: every partition answers -1.
        Err(c) if c == ResponseError::GroupIdNotFound.code() => partitions
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|tp| (tp, None))
            .collect(),
        Err(c) => return Err(c),
    };
    Ok(match wanted.topics {
        Some(topics) => {
            let mut it = stored.into_iter();
            topics
                .into_iter()
                .map(|(name, parts)| {
                    let answers = parts
                        .iter()
                        .map(|p| (*p, it.next().and_then(|(_, c)| c)))
                        .collect();
                    (name, answers)
                })
                .collect()
        }
        None => {
            let mut out: Vec<TopicOffsets> = Vec::new();
            for ((topic, p), c) in stored {
                match out.last_mut() {
                    Some(last) if last.0.as_str() == topic => last.1.push((p, c)),
                    _ => out.push((str_bytes(topic), vec![(p, c)])),
                }
            }
            out
        }
    })
}

fn committed_fields(c: &Option<CommittedOffset>) -> (i64, i32, Option<StrBytes>) {
    match c {
        Some(c) => (
            c.offset,
            c.leader_epoch,
            Some(str_bytes(c.metadata.clone())),
        ),
        None => (-1, -1, Some(StrBytes::default())),
    }
}

pub(crate) async fn offset_fetch(
    ctx: &Ctx,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version < 8 {
        let wanted = FetchWanted {
            group: req.group_id.to_string(),
            topics: req.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0, t.partition_indexes))
                    .collect()
            }),
        };
        return match fetch_group(ctx, wanted).await {
            Err(code) => {
                OffsetFetchResponse::default().with_error_code(if version >= 2 { code } else { 0 })
            }
            Ok(topics) => OffsetFetchResponse::default().with_topics(
                topics
                    .into_iter()
                    .map(|(name, parts)| {
                        OffsetFetchResponseTopic::default()
                            .with_name(TopicName(name))
                            .with_partitions(
                                parts
                                    .into_iter()
                                    .map(|(p, c)| {
                                        let (offset, epoch, metadata) = committed_fields(&c);
                                        OffsetFetchResponsePartition::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(metadata)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        };
    }
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in req.groups {
        let wanted = FetchWanted {
            group: g.group_id.to_string(),
            topics: g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0, t.partition_indexes))
                    .collect()
            }),
        };
        let out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
        groups.push(match fetch_group(ctx, wanted).await {
            Err(code) => out.with_error_code(code),
            Ok(topics) => out.with_topics(
                topics
                    .into_iter()
                    .map(|(name, parts)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(name))
                            .with_partitions(
                                parts
                                    .into_iter()
                                    .map(|(p, c)| {
                                        let (offset, epoch, metadata) = committed_fields(&c);
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(metadata)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        });
    }
    OffsetFetchResponse::default().with_groups(groups)
}

async fn describe_all(ctx: &Ctx) -> Vec<GroupDescription> {
    let Ok(addrs) = ctx.broker.groups.send(ListGroupCoordinators).await else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(addrs.len());
    for a in addrs {
        if let Ok(d) = a.send(DescribeGroup).await {
            if d.phase != GroupPhase::Dead {
                out.push(d);
            }
        }
    }
    out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    out
}

pub(crate) async fn list_groups(
    ctx: &Ctx,
    req: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let states: HashSet<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: HashSet<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let groups = describe_all(ctx)
        .await
        .into_iter()
        .filter(|d| states.is_empty() || states.contains(&d.state.to_lowercase()))
        .filter(|d| types.is_empty() || types.contains(d.group_type.name()))
        .map(|d| {
            let g = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(d.group_id)))
                .with_protocol_type(str_bytes(d.protocol_type));
            let g = if version >= 4 {
                g.with_group_state(str_bytes(d.state))
            } else {
                g
            };
            if version >= 5 {
                g.with_group_type(str_bytes(d.group_type.name()))
            } else {
                g
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub(crate) async fn describe_groups(
    ctx: &Ctx,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut out = Vec::with_capacity(req.groups.len());
    for g in req.groups {
        let base = DescribedGroup::default().with_group_id(g.clone());
        let described = match coordinator(ctx, &g, false).await {
            Ok(addr) => addr.send(DescribeGroup).await.map_err(|_| unavailable()),
            Err(c) => Err(c),
        };
        out.push(match described {
            // Kafka describes only classic groups here; consumer groups have their own API.
            Ok(d) if d.group_type == GroupType::Consumer => base
                .with_group_state(str_bytes("Dead"))
                .with_error_code(ResponseError::GroupIdNotFound.code())
                .with_error_message(
                    (version >= 6)
                        .then(|| str_bytes(format!("group {} is not a classic group", g.as_str()))),
                ),
            Ok(d) => base
                .with_group_state(str_bytes(d.phase.name()))
                .with_protocol_type(str_bytes(d.protocol_type))
                .with_protocol_data(str_bytes(d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(m.member_id))
                                .with_group_instance_id(if version >= 4 {
                                    m.instance_id.map(str_bytes)
                                } else {
                                    None
                                })
                                .with_client_id(str_bytes(m.client_id))
                                .with_client_host(str_bytes(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                ),
            // Kafka describes an unknown group as Dead, without an error (before v6).
            Err(c) if c == ResponseError::GroupIdNotFound.code() => {
                let dead = base.with_group_state(str_bytes("Dead"));
                if version >= 6 {
                    dead.with_error_code(c)
                        .with_error_message(Some(str_bytes(format!(
                            "group {} does not exist",
                            g.as_str()
                        ))))
                } else {
                    dead
                }
            }
            Err(c) => base.with_error_code(c),
        });
    }
    DescribeGroupsResponse::default().with_groups(out)
}

pub(crate) async fn delete_groups(ctx: &Ctx, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in req.groups_names {
        let code = match coordinator(ctx, &g, false).await {
            Ok(addr) => match addr.send(DeleteGroup).await {
                Ok(Ok(())) => {
                    let _ = ctx
                        .broker
                        .groups
                        .send(ForgetGroup {
                            group_id: g.to_string(),
                        })
                        .await;
                    0
                }
                Ok(Err(e)) => error_codes::code(&e),
                Err(_) => unavailable(),
            },
            Err(c) => c,
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// Topics the members of a consumer group subscribe to, from their subscription metadata.
fn subscribed_topics(d: &GroupDescription) -> HashSet<String> {
    if d.protocol_type != "consumer" {
        return HashSet::new();
    }
    d.members
        .iter()
        .filter_map(|m| {
            let mut buf: Bytes = m.metadata.clone();
            let version = i16::from_be_bytes([*buf.first()?, *buf.get(1)?]);
            bytes::Buf::advance(&mut buf, 2);
            ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)).ok()
        })
        .flat_map(|s| s.topics.into_iter().map(|t| t.to_string()))
        .collect()
}

pub(crate) async fn offset_delete(ctx: &Ctx, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let addr = match coordinator(ctx, &req.group_id, false).await {
        Ok(a) => a,
        Err(c) => return OffsetDeleteResponse::default().with_error_code(c),
    };
    let Ok(description) = addr.send(DescribeGroup).await else {
        return OffsetDeleteResponse::default().with_error_code(unavailable());
    };
    let partitions: Vec<TopicPartition> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    let results = match addr
        .send(DeleteOffsets {
            partitions,
            subscribed: subscribed_topics(&description),
        })
        .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return OffsetDeleteResponse::default().with_error_code(error_codes::code(&e))
        }
        Err(_) => return OffsetDeleteResponse::default().with_error_code(unavailable()),
    };
    let mut results = results.into_iter();
    let snapshot = ctx.broker.catalog.snapshot();
    OffsetDeleteResponse::default().with_topics(
        req.topics
            .into_iter()
            .map(|t| {
                let known = snapshot.topic(&t.name).is_some();
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                let r = results.next().map(|(_, r)| r);
                                let code = if !known {
                                    ResponseError::UnknownTopicOrPartition.code()
                                } else {
                                    r.map_or(0, |r| code_of(&r))
                                };
                                OffsetDeleteResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
