//! Dispatch: one decoded request in, one response out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::messages::{RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use spool_actors::registry::CreateTopic;
use spool_actors::{Broker, BrokerError, TopicInfo};

use crate::fetch_session::FetchSessionCache;
use crate::server::KafkaConfig;
use crate::turns::{wait_turn, Turn, Turns};
use crate::{
    admin, configs, consumer_groups, fetch, groups, list_offsets, metadata, misc, produce,
};

/// What every handler needs.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub broker: Broker,
    pub config: Arc<KafkaConfig>,
    pub fetch_sessions: Arc<FetchSessionCache>,
    /// The client's address, on a connection's copy of the context.
    pub peer: Option<SocketAddr>,
    /// The connection's order for requests whose effects must not overtake each other.
    pub turns: Turns,
}

impl Ctx {
    /// The client host as DescribeGroups reports it (`/ip`, as Kafka writes it).
    pub fn peer_host(&self) -> String {
        self.peer
            .map_or_else(String::new, |p| format!("/{}", p.ip()))
    }
}

/// Handles one request. `None` means no response is sent (Produce with acks=0).
pub(crate) async fn handle(
    ctx: &Ctx,
    header: &RequestHeader,
    req: RequestKind,
    mut turn: Option<Turn>,
) -> Option<ResponseKind> {
    let v = header.request_api_version;
    Some(match req {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(misc::api_versions()),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(ctx, r, v).await),
        RequestKind::Produce(r) => {
            return produce::handle(ctx, r, v, turn)
                .await
                .map(ResponseKind::Produce)
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(ctx, r, v).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(ctx, r, v).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(misc::find_coordinator(ctx, r, v))
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(misc::init_producer_id(ctx, r).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(misc::offset_for_leader_epoch(ctx, r).await)
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(misc::describe_cluster(ctx, r))
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(admin::create_topics(ctx, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(admin::delete_topics(ctx, r).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(admin::create_partitions(ctx, r).await)
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(admin::delete_records(ctx, r).await)
        }
        RequestKind::DescribeConfigs(r) => ResponseKind::DescribeConfigs(configs::describe(ctx, r)),
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(configs::alter(ctx, r).await),
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(configs::incremental_alter(ctx, r).await)
        }
        RequestKind::JoinGroup(r) => {
            let client_id = header.client_id.as_ref().map_or("", |c| c.as_str());
            ResponseKind::JoinGroup(groups::join_group(ctx, r, v, client_id).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(groups::sync_group(ctx, r, v).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(ctx, r).await),
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(groups::leave_group(ctx, r, v).await)
        }
        RequestKind::OffsetCommit(r) => {
            wait_turn(&mut turn).await;
            let response = groups::offset_commit(ctx, r).await;
            drop(turn);
            ResponseKind::OffsetCommit(response)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(groups::offset_fetch(ctx, r, v).await)
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(groups::list_groups(ctx, r, v).await)
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe_groups(ctx, r, v).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(groups::delete_groups(ctx, r).await)
        }
        RequestKind::ConsumerGroupHeartbeat(r) => {
            let client_id = header.client_id.as_ref().map_or("", |c| c.as_str());
            ResponseKind::ConsumerGroupHeartbeat(
                consumer_groups::heartbeat(ctx, r, v, client_id).await,
            )
        }
        RequestKind::ConsumerGroupDescribe(r) => {
            ResponseKind::ConsumerGroupDescribe(consumer_groups::describe(ctx, r, v).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(groups::offset_delete(ctx, r).await)
        }
        // Unreachable: the server refuses APIs outside `api_versions::SUPPORTED` before decoding.
        _ => return None,
    })
}

/// The topic, created with broker defaults when it is unknown and auto-creation is allowed.
pub(crate) async fn topic_or_create(
    ctx: &Ctx,
    name: &str,
    allow_auto_create: bool,
) -> Result<Arc<TopicInfo>, BrokerError> {
    if let Some(t) = ctx.broker.catalog.snapshot().topic(name) {
        return Ok(t.clone());
    }
    if !(allow_auto_create && ctx.broker.config.auto_create_topics) {
        return Err(BrokerError::UnknownTopic(name.to_string()));
    }
    let created = ctx
        .broker
        .registry
        .send(CreateTopic {
            name: name.to_string(),
            partitions: None,
            replication_factor: None,
            configs: BTreeMap::new(),
            validate_only: false,
        })
        .await
        .map_err(|_| BrokerError::UnknownTopic(name.to_string()))?;
    match created {
        Err(BrokerError::TopicExists(_)) => ctx
            .broker
            .catalog
            .snapshot()
            .topic(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string())),
        other => other,
    }
}

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub(crate) fn message(e: &impl std::fmt::Display) -> Option<StrBytes> {
    Some(str_bytes(e.to_string()))
}
