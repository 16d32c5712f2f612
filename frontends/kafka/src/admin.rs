//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions and DeleteRecords.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use spool_actors::partition::DeleteRecordsBefore;
use spool_actors::registry::{self, CreatePartitions, CreateTopic, DeleteTopic};
use spool_actors::BrokerError;
use uuid::Uuid;

use crate::error_codes;
use crate::handler::{message, str_bytes, Ctx};

fn mailbox_error() -> BrokerError {
    BrokerError::InvalidConfig("the topic registry is unavailable".into())
}

pub(crate) async fn create_topics(ctx: &Ctx, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut seen = HashSet::new();
    let duplicated: HashSet<_> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.to_string()))
        .map(|t| t.name.to_string())
        .collect();
    let node = ctx.broker.config.node_id;
    let mut results = Vec::new();
    for t in req.topics {
        let out = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        if duplicated.contains(t.name.as_str()) {
            results.push(
                out.with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(
                        "topic named more than once in the request",
                    ))),
            );
            continue;
        }
        let mut partitions = Some(t.num_partitions);
        let mut replication = Some(t.replication_factor);
        if !t.assignments.is_empty() {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                results.push(
                    out.with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(str_bytes(
                            "assignments exclude num_partitions and replication_factor",
                        ))),
                );
                continue;
            }
            let all_here = t
                .assignments
                .iter()
                .all(|a| a.broker_ids.len() == 1 && a.broker_ids[0].0 == node);
            if !all_here {
                results.push(
                    out.with_error_code(ResponseError::InvalidReplicaAssignment.code())
                        .with_error_message(Some(str_bytes(format!(
                            "every partition must have exactly one replica, on node {node}"
                        )))),
                );
                continue;
            }
            partitions = Some(t.assignments.len() as i32);
            replication = Some(1);
        }
        let mut configs = BTreeMap::new();
        for c in &t.configs {
            if let Some(v) = &c.value {
                configs.insert(c.name.to_string(), v.to_string());
            }
        }
        let sent = ctx
            .broker
            .registry
            .send(CreateTopic {
                name: t.name.to_string(),
                partitions,
                replication_factor: replication,
                configs,
                validate_only: req.validate_only,
            })
            .await
            .unwrap_or_else(|_| Err(mailbox_error()));
        results.push(match sent {
            Ok(info) => {
                let n = if req.validate_only {
                    partitions
                        .filter(|n| *n > 0)
                        .unwrap_or(ctx.broker.config.default_partitions as i32)
                } else {
                    info.partitions.len() as i32
                };
                out.with_topic_id(Uuid::from_bytes(info.id))
                    .with_num_partitions(n)
                    .with_replication_factor(1)
                    .with_configs(Some(
                        info.config
                            .entries()
                            .into_iter()
                            .map(|(k, v)| {
                                CreatableTopicConfigs::default()
                                    .with_name(str_bytes(k))
                                    .with_value(Some(str_bytes(v)))
                                    .with_config_source(if info.overrides.contains_key(k) {
                                        1
                                    } else {
                                        5
                                    })
                            })
                            .collect(),
                    ))
            }
            Err(e) => out
                .with_error_code(error_codes::code(&e))
                .with_error_message(message(&e)),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub(crate) async fn delete_topics(ctx: &Ctx, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let snapshot = ctx.broker.catalog.snapshot();
    // v0-5 name topics in `topic_names`; v6 in `topics`, by name or by id.
    let mut targets: Vec<(Option<TopicName>, Uuid)> = req
        .topic_names
        .into_iter()
        .map(|n| (Some(n), Uuid::nil()))
        .collect();
    targets.extend(req.topics.into_iter().map(|t| (t.name, t.topic_id)));
    let mut responses = Vec::new();
    for (name, id) in targets {
        let resolved = match &name {
            Some(n) => snapshot.topic(n).cloned(),
            None => snapshot.topic_by_id(id.as_bytes()).cloned(),
        };
        let out = DeletableTopicResult::default()
            .with_name(name.clone())
            .with_topic_id(id);
        let Some(topic) = resolved else {
            let code = if name.is_some() {
                ResponseError::UnknownTopicOrPartition.code()
            } else {
                ResponseError::UnknownTopicId.code()
            };
            responses.push(out.with_error_code(code));
            continue;
        };
        let out = out
            .with_name(Some(TopicName(str_bytes(topic.name.to_string()))))
            .with_topic_id(Uuid::from_bytes(topic.id));
        let sent = ctx
            .broker
            .registry
            .send(DeleteTopic {
                name: topic.name.to_string(),
            })
            .await
            .unwrap_or_else(|_| Err(mailbox_error()));
        responses.push(match sent {
            Ok(()) => out,
            Err(e) => out
                .with_error_code(error_codes::code(&e))
                .with_error_message(message(&e)),
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(crate) async fn create_partitions(
    ctx: &Ctx,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let node = ctx.broker.config.node_id;
    let mut results = Vec::new();
    for t in req.topics {
        let out = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        if let Some(assignments) = &t.assignments {
            if !assignments
                .iter()
                .all(|a| a.broker_ids.len() == 1 && a.broker_ids[0].0 == node)
            {
                results.push(out.with_error_code(ResponseError::InvalidReplicaAssignment.code()));
                continue;
            }
        }
        if let Err(e) = registry::validate_topic_name(&t.name) {
            results.push(out.with_error_code(error_codes::code(&e)));
            continue;
        }
        let sent = ctx
            .broker
            .registry
            .send(CreatePartitions {
                name: t.name.to_string(),
                total: t.count,
                validate_only: req.validate_only,
            })
            .await
            .unwrap_or_else(|_| Err(mailbox_error()));
        results.push(match sent {
            Ok(()) => out,
            Err(e) => out
                .with_error_code(error_codes::code(&e))
                .with_error_message(message(&e)),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

pub(crate) async fn delete_records(ctx: &Ctx, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let snapshot = ctx.broker.catalog.snapshot();
    let mut topics = Vec::new();
    for t in req.topics {
        let mut parts = Vec::new();
        for p in t.partitions {
            let out = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            let Some(addr) = snapshot
                .partition(&t.name, p.partition_index)
                .and_then(|x| x.local.clone())
            else {
                parts.push(out.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            let offset = match p.offset {
                -1 => None,
                o if o >= 0 => Some(o as u64),
                _ => {
                    parts.push(out.with_error_code(ResponseError::OffsetOutOfRange.code()));
                    continue;
                }
            };
            parts.push(match addr.send(DeleteRecordsBefore { offset }).await {
                Ok(Ok(low)) => out.with_low_watermark(low as i64),
                Ok(Err(e)) => out.with_error_code(error_codes::code(&e)),
                Err(_) => out.with_error_code(error_codes::unreachable()),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
