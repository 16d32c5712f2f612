//! Metadata: brokers, topics (with ids) and partition leaders, auto-creating topics when asked.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use spool_actors::TopicInfo;
use uuid::Uuid;

use crate::error_codes;
use crate::handler::{str_bytes, topic_or_create, Ctx};

fn describe(t: &TopicInfo) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(t.name.to_string()))))
        .with_topic_id(Uuid::from_bytes(t.id))
        .with_topic_authorized_operations(i32::MIN)
        .with_partitions(
            t.partitions
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let replicas: Vec<BrokerId> = p.replicas.iter().map(|r| BrokerId(*r)).collect();
                    MetadataResponsePartition::default()
                        .with_partition_index(i as i32)
                        .with_leader_id(BrokerId(p.leader))
                        .with_leader_epoch(p.leader_epoch)
                        .with_isr_nodes(replicas.clone())
                        .with_replica_nodes(replicas)
                })
                .collect(),
        )
}

pub(crate) async fn handle(ctx: &Ctx, req: MetadataRequest, version: i16) -> MetadataResponse {
    // v0: an empty list means every topic; v1+: null means every topic. Before v4 requests
    // cannot say, and auto-creation is allowed.
    let allow_auto = version < 4 || req.allow_auto_topic_creation;
    let wanted = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let mut topics = Vec::new();
    match wanted {
        None => {
            let snapshot = ctx.broker.catalog.snapshot();
            topics.extend(snapshot.topics.values().map(|t| describe(t)));
        }
        Some(list) => {
            for wanted in list {
                match wanted.name {
                    Some(name) => match topic_or_create(ctx, &name, allow_auto).await {
                        Ok(t) => topics.push(describe(&t)),
                        Err(e) => topics.push(
                            MetadataResponseTopic::default()
                                .with_name(Some(name))
                                .with_error_code(error_codes::code(&e)),
                        ),
                    },
                    None => {
                        let snapshot = ctx.broker.catalog.snapshot();
                        match snapshot.topic_by_id(wanted.topic_id.as_bytes()) {
                            Some(t) => topics.push(describe(t)),
                            None => topics.push(
                                MetadataResponseTopic::default()
                                    .with_topic_id(wanted.topic_id)
                                    .with_error_code(ResponseError::UnknownTopicId.code()),
                            ),
                        }
                    }
                }
            }
        }
    }
    let snapshot = ctx.broker.catalog.snapshot();
    MetadataResponse::default()
        .with_brokers(
            snapshot
                .nodes
                .iter()
                .map(|n| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(n.node_id))
                        .with_host(str_bytes(n.host.clone()))
                        .with_port(n.port as i32)
                })
                .collect(),
        )
        .with_cluster_id(Some(str_bytes(snapshot.cluster_id.clone())))
        .with_controller_id(BrokerId(snapshot.controller_id))
        .with_cluster_authorized_operations(i32::MIN)
        .with_topics(topics)
}
