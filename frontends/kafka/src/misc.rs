//! Small APIs: ApiVersions, FindCoordinator, InitProducerId, OffsetForLeaderEpoch and
//! DescribeCluster.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use spool_actors::partition::DescribeLog;
use spool_actors::registry::AllocateProducerId;

use crate::api_versions::SUPPORTED;
use crate::error_codes;
use crate::handler::{str_bytes, Ctx};

pub(crate) fn api_versions() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        SUPPORTED
            .iter()
            .map(|(api, lo, hi)| {
                ApiVersion::default()
                    .with_api_key(*api as i16)
                    .with_min_version(*lo)
                    .with_max_version(*hi)
            })
            .collect(),
    )
}

/// This node coordinates every group (single node). Transactions are not served yet, so a
/// transaction coordinator is reported as unavailable.
pub(crate) fn find_coordinator(
    ctx: &Ctx,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let snapshot = ctx.broker.catalog.snapshot();
    let me_id = ctx.broker.config.node_id;
    let me = snapshot
        .nodes
        .iter()
        .find(|n| n.node_id == me_id)
        .unwrap_or(&snapshot.nodes[0]);
    let answer = |key_type: i8| -> (i16, Option<&'static str>) {
        match key_type {
            0 => (0, None),
            1 => (
                ResponseError::CoordinatorNotAvailable.code(),
                Some("transactions are not supported by this broker"),
            ),
            _ => (
                ResponseError::InvalidRequest.code(),
                Some("unknown coordinator key type"),
            ),
        }
    };
    let (code, msg) = answer(req.key_type);
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(if code == 0 { me.node_id } else { -1 }))
                    .with_host(str_bytes(if code == 0 {
                        me.host.clone()
                    } else {
                        String::new()
                    }))
                    .with_port(if code == 0 { me.port as i32 } else { -1 })
                    .with_error_code(code)
                    .with_error_message(msg.map(str_bytes))
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    if code != 0 {
        return FindCoordinatorResponse::default()
            .with_error_code(code)
            .with_error_message(msg.map(str_bytes))
            .with_node_id(BrokerId(-1))
            .with_port(-1);
    }
    FindCoordinatorResponse::default()
        .with_node_id(BrokerId(me.node_id))
        .with_host(str_bytes(me.host.clone()))
        .with_port(me.port as i32)
}

/// Idempotent producers get a fresh id (or, with KIP-360, a bumped epoch of their own id).
/// Transactional producers are refused until transactions exist.
pub(crate) async fn init_producer_id(
    ctx: &Ctx,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let fail = |code: i16| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if req.transactional_id.is_some() {
        return fail(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        return InitProducerIdResponse::default()
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch + 1);
    }
    match ctx.broker.registry.send(AllocateProducerId).await {
        Ok(Ok(id)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Ok(Err(e)) => fail(error_codes::code(&e)),
        Err(_) => fail(ResponseError::CoordinatorNotAvailable.code()),
    }
}

/// Every partition has had one leader epoch, 0, since it was created: its end is the log end.
pub(crate) async fn offset_for_leader_epoch(
    ctx: &Ctx,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let snapshot = ctx.broker.catalog.snapshot();
    let mut topics = Vec::new();
    for t in req.topics {
        let mut parts = Vec::new();
        for p in t.partitions {
            let out = EpochEndOffset::default().with_partition(p.partition);
            let Some(part) = snapshot.partition(&t.topic, p.partition) else {
                parts.push(out.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            if let Some(code) = leader_epoch_error(p.current_leader_epoch, part.leader_epoch) {
                parts.push(out.with_error_code(code));
                continue;
            }
            if p.leader_epoch < 0 {
                parts.push(out.with_leader_epoch(-1).with_end_offset(-1));
                continue;
            }
            let status = match &part.local {
                Some(a) => a.send(DescribeLog).await.ok(),
                None => None,
            };
            parts.push(match status {
                Some(s) => out
                    .with_leader_epoch(part.leader_epoch)
                    .with_end_offset(s.high_watermark as i64),
                None => out.with_error_code(error_codes::unreachable()),
            });
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(parts),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// Kafka's check of a client's `current_leader_epoch` (-1: the client does not know).
pub(crate) fn leader_epoch_error(client: i32, leader: i32) -> Option<i16> {
    if client < 0 || client == leader {
        None
    } else if client > leader {
        Some(ResponseError::UnknownLeaderEpoch.code())
    } else {
        Some(ResponseError::FencedLeaderEpoch.code())
    }
}

pub(crate) fn describe_cluster(ctx: &Ctx, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let snapshot = ctx.broker.catalog.snapshot();
    if req.endpoint_type != 1 {
        return DescribeClusterResponse::default()
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(str_bytes("only broker endpoints are served")));
    }
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(snapshot.cluster_id.clone()))
        .with_controller_id(BrokerId(snapshot.controller_id))
        .with_endpoint_type(1)
        .with_cluster_authorized_operations(i32::MIN)
        .with_brokers(
            snapshot
                .nodes
                .iter()
                .map(|n| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(n.node_id))
                        .with_host(str_bytes(n.host.clone()))
                        .with_port(n.port as i32)
                })
                .collect(),
        )
}
