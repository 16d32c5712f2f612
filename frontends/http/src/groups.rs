//! Consumer groups over HTTP, what `kafka-consumer-groups.sh` does:
//! - `GET /groups`: every group with its type, state, member count and total lag;
//! - `GET /groups/{group}`: members (with their assignment) and, per partition, the committed
//!   offset, the end offset and the lag;
//! - `POST /groups/{group}/offsets/reset` with `{"topic", "to": "earliest" | "latest" |
//!   "timestamp" | "offset", "timestamp" | "offset", "partitions"}` moves committed offsets of an
//!   empty group (409 while it has members);
//! - `DELETE /groups/{group}` deletes an empty group and its offsets.

use actix::Addr;
use actix_web::{web, HttpResponse};
use futures_util::future::join_all;
use serde::Deserialize;
use serde_json::{json, Value};
use spool_actors::group::{CommitOffsets, DeleteGroup, DescribeGroup, GroupActor, GroupType};
use spool_actors::group_consumer::DescribeConsumerGroup;
use spool_actors::group_registry::{FindGroup, ForgetGroup};
use spool_actors::offsets_journal::{now_ms, CommittedOffset};
use spool_actors::partition::{DescribeLog, OffsetQuery, QueryOffset};
use spool_actors::{Broker, BrokerError};

use crate::errors::{answered, bad_request, broker_error, unavailable};

/// `GET /groups`.
#[utoipa::path(
    get,
    path = "/groups",
    tag = "groups",
    summary = "List consumer groups with their lag",
    responses((status = 200, description = "OK"))
)]
pub async fn list(broker: web::Data<Broker>) -> HttpResponse {
    let groups: Vec<Value> = broker
        .group_lag()
        .await
        .into_iter()
        .map(|g| {
            json!({
                "group": g.group,
                "type": g.group_type.name(),
                "state": g.state,
                "members": g.members,
                "lag": g.partitions.iter().map(|p| p.lag).sum::<i64>(),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({ "groups": groups }))
}

/// The coordinator of `group`; `create` makes one for an unknown group.
pub(crate) async fn find(
    broker: &Broker,
    group: &str,
    create: bool,
) -> Result<Addr<GroupActor>, HttpResponse> {
    match broker
        .groups
        .send(FindGroup {
            group_id: group.to_string(),
            create,
        })
        .await
    {
        Ok(Ok(Some(addr))) => Ok(addr),
        Ok(Ok(None)) => Err(broker_error(BrokerError::GroupNotFound(group.to_string()))),
        Ok(Err(e)) => Err(broker_error(e)),
        Err(_) => Err(unavailable("the group registry")),
    }
}

/// `GET /groups/{group}`.
#[utoipa::path(
    get,
    path = "/groups/{group}",
    tag = "groups",
    summary = "Describe a group: members, committed offsets, lag",
    params(("group" = String, Path, description = "Consumer group id")),
    responses((status = 200, description = "OK"), (status = 404, description = "Unknown group"))
)]
pub async fn describe(broker: web::Data<Broker>, group: web::Path<String>) -> HttpResponse {
    let addr = match find(&broker, &group, false).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Ok(d) = addr.send(DescribeGroup).await else {
        return broker_error(BrokerError::GroupNotFound(group.into_inner()));
    };
    let snapshot = broker.catalog.snapshot();
    let members: Vec<Value> = if d.group_type == GroupType::Consumer {
        match addr.send(DescribeConsumerGroup).await {
            Ok(Ok(c)) => c
                .members
                .into_iter()
                .map(|m| {
                    let assignment: Vec<Value> = m
                        .assignment
                        .iter()
                        .filter_map(|(id, p)| {
                            snapshot
                                .topic_by_id(id)
                                .map(|t| json!({"topic": &*t.name, "partition": p}))
                        })
                        .collect();
                    json!({
                        "member_id": m.member_id,
                        "instance_id": m.instance_id,
                        "client_id": m.client_id,
                        "client_host": m.client_host,
                        "member_epoch": m.member_epoch,
                        "assignment": assignment,
                    })
                })
                .collect(),
            _ => Vec::new(),
        }
    } else {
        d.members
            .iter()
            .map(|m| {
                json!({
                    "member_id": m.member_id,
                    "instance_id": m.instance_id,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                })
            })
            .collect()
    };
    let ends = join_all(d.offsets.iter().map(|((topic, partition), _)| {
        let actor = snapshot
            .partition(topic, *partition)
            .and_then(|p| p.local.clone());
        async move {
            match actor {
                Some(a) => a
                    .send(DescribeLog)
                    .await
                    .ok()
                    .map(|s| s.high_watermark as i64),
                None => None,
            }
        }
    }))
    .await;
    let offsets: Vec<Value> = d
        .offsets
        .iter()
        .zip(ends)
        .map(|(((topic, partition), c), end)| {
            json!({
                "topic": topic,
                "partition": partition,
                "committed": c.offset,
                "end": end,
                "lag": end.map(|e| (e - c.offset).max(0)),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "group": d.group_id,
        "type": d.group_type.name(),
        "state": d.state,
        "generation": d.generation,
        "protocol": d.protocol,
        "members": members,
        "offsets": offsets,
    }))
}

/// Where a reset moves offsets to.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum ResetTo {
    Earliest,
    Latest,
    /// The first record at or after this time (ms since the epoch); the end when none is.
    Timestamp {
        timestamp: i64,
    },
    /// This offset, clamped to each partition's start and end, as Kafka's tool does.
    Offset {
        offset: i64,
    },
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ResetBody {
    topic: String,
    /// Every partition of the topic when absent.
    partitions: Option<Vec<i32>>,
    #[serde(flatten)]
    to: ResetTo,
}

/// `POST /groups/{group}/offsets/reset`: answers the new offsets.
#[utoipa::path(
    post,
    path = "/groups/{group}/offsets/reset",
    tag = "groups",
    summary = "Reset an empty group's offsets",
    params(("group" = String, Path, description = "Consumer group id")),
    request_body = ResetBody,
    responses((status = 200, description = "The new offsets"), (status = 400, description = "Bad target"), (status = 404, description = "Unknown topic or partition"), (status = 409, description = "The group has members"))
)]
pub async fn reset_offsets(
    broker: web::Data<Broker>,
    group: web::Path<String>,
    body: web::Json<ResetBody>,
) -> HttpResponse {
    let body = body.into_inner();
    let Some(info) = broker.catalog.snapshot().topic(&body.topic).cloned() else {
        return broker_error(BrokerError::UnknownTopic(body.topic));
    };
    let partitions = body
        .partitions
        .unwrap_or_else(|| (0..info.partitions.len() as i32).collect());
    let mut offsets = Vec::with_capacity(partitions.len());
    for p in partitions {
        let Some(addr) = info
            .partitions
            .get(p as usize)
            .filter(|_| p >= 0)
            .and_then(|x| x.local.clone())
        else {
            return broker_error(BrokerError::UnknownPartition {
                topic: body.topic,
                partition: p,
            });
        };
        let Ok(log) = addr.send(DescribeLog).await else {
            return unavailable(format!("partition {p}"));
        };
        let (start, end) = (log.log_start_offset as i64, log.high_watermark as i64);
        let offset = match body.to {
            ResetTo::Earliest => start,
            ResetTo::Latest => end,
            ResetTo::Offset { offset } => offset.clamp(start, end),
            ResetTo::Timestamp { timestamp } if timestamp < 0 => {
                return bad_request("timestamp must not be negative")
            }
            ResetTo::Timestamp { timestamp } => {
                let query = OffsetQuery::Timestamp(timestamp);
                match addr.send(QueryOffset { query }).await {
                    Ok(Ok(answer)) => answer.resolve(query).map_or(end, |(o, _)| o),
                    Ok(Err(e)) => return broker_error(e),
                    Err(_) => return unavailable(format!("partition {p}")),
                }
            }
        };
        offsets.push(((body.topic.clone(), p), offset));
    }
    let addr = match find(&broker, &group, true).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    match addr.send(DescribeGroup).await {
        Ok(d) if d.member_count > 0 => {
            return broker_error(BrokerError::NonEmptyGroup(group.into_inner()))
        }
        Ok(_) => {}
        Err(_) => return unavailable("the group"),
    }
    commit(&addr, String::new(), -1, &offsets).await
}

/// Commits `offsets` for a member of `generation` (-1: an empty group's admin) and answers
/// them as `{"offsets": [{"topic", "partition", "offset"}]}`.
pub(crate) async fn commit(
    addr: &Addr<GroupActor>,
    member_id: String,
    generation: i32,
    offsets: &[((String, i32), i64)],
) -> HttpResponse {
    let now = now_ms();
    let sent = addr
        .send(CommitOffsets {
            member_id,
            instance_id: None,
            generation,
            offsets: offsets
                .iter()
                .map(|(tp, o)| {
                    let c = CommittedOffset {
                        offset: *o,
                        leader_epoch: -1,
                        metadata: String::new(),
                        commit_ms: now,
                    };
                    (tp.clone(), c)
                })
                .collect(),
        })
        .await;
    if let Err(r) = answered(sent, "the group") {
        return r;
    }
    let out: Vec<Value> = offsets
        .iter()
        .map(|((t, p), o)| json!({"topic": t, "partition": p, "offset": o}))
        .collect();
    HttpResponse::Ok().json(json!({ "offsets": out }))
}

/// `DELETE /groups/{group}`.
#[utoipa::path(
    delete,
    path = "/groups/{group}",
    tag = "groups",
    summary = "Delete an empty group",
    params(("group" = String, Path, description = "Consumer group id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "Unknown group"), (status = 409, description = "The group has members"))
)]
pub async fn delete(broker: web::Data<Broker>, group: web::Path<String>) -> HttpResponse {
    let addr = match find(&broker, &group, false).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if let Err(r) = answered(addr.send(DeleteGroup).await, "the group") {
        return r;
    }
    broker.groups.do_send(ForgetGroup {
        group_id: group.into_inner(),
    });
    HttpResponse::NoContent().finish()
}
