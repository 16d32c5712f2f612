//! Topic administration over HTTP, what Kafka's admin API does for Kafka clients:
//! - `GET /topics`: every topic with its partition count;
//! - `POST /topics` with `{"name", "partitions", "replication_factor", "configs"}` creates one
//!   (201, or 409 when it exists);
//! - `GET /topics/{topic}`: partitions (leader, replicas, start and end offsets, size) and every
//!   config with its value and whether the topic overrides it;
//! - `PATCH /topics/{topic}/configs` with `{"set": {...}, "delete": [...]}` changes overrides
//!   (as IncrementalAlterConfigs does);
//! - `POST /topics/{topic}/partitions` with `{"count"}` grows the topic to `count` partitions;
//! - `DELETE /topics/{topic}` deletes it and its data (204).

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use futures_util::future::join_all;
use serde::Deserialize;
use serde_json::{json, Value};
use spool_actors::catalog::TopicInfo;
use spool_actors::partition::DescribeLog;
use spool_actors::registry::{AlterTopicConfig, CreatePartitions, CreateTopic, DeleteTopic};
use spool_actors::{Broker, BrokerError};

use crate::errors::{answered, bad_request, broker_error};

/// What a topic registry that does not answer is called in errors.
const REGISTRY: &str = "the topic registry";

/// `GET /topics`.
#[utoipa::path(
    get,
    path = "/topics",
    tag = "topics",
    summary = "List topics",
    responses((status = 200, description = "OK"))
)]
pub async fn list(broker: web::Data<Broker>) -> HttpResponse {
    let snapshot = broker.catalog.snapshot();
    let topics: Vec<Value> = snapshot
        .topics
        .values()
        .map(|t| json!({"name": &*t.name, "partitions": t.partitions.len()}))
        .collect();
    HttpResponse::Ok().json(json!({ "topics": topics }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    partitions: Option<i32>,
    replication_factor: Option<i16>,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

/// `POST /topics`.
#[utoipa::path(
    post,
    path = "/topics",
    tag = "topics",
    summary = "Create a topic",
    request_body = CreateBody,
    responses((status = 201, description = "Created: the topic's description"), (status = 400, description = "Invalid name, partitions or config"), (status = 409, description = "The topic exists"))
)]
pub async fn create(broker: web::Data<Broker>, body: web::Json<CreateBody>) -> HttpResponse {
    let body = body.into_inner();
    let sent = broker
        .registry
        .send(CreateTopic {
            name: body.name,
            partitions: body.partitions,
            replication_factor: body.replication_factor,
            configs: body.configs,
            validate_only: false,
        })
        .await;
    match answered(sent, REGISTRY) {
        Ok(info) => HttpResponse::build(StatusCode::CREATED).json(describe_topic(&info).await),
        Err(r) => r,
    }
}

/// `GET /topics/{topic}`.
#[utoipa::path(
    get,
    path = "/topics/{topic}",
    tag = "topics",
    summary = "Describe a topic: partitions with offsets, and configs",
    params(("topic" = String, Path, description = "Topic name")),
    responses((status = 200, description = "OK"), (status = 404, description = "Unknown topic"))
)]
pub async fn describe(broker: web::Data<Broker>, topic: web::Path<String>) -> HttpResponse {
    current(&broker, &topic).await
}

/// The topic as it is now (200), or 404.
async fn current(broker: &Broker, topic: &str) -> HttpResponse {
    match broker.catalog.snapshot().topic(topic) {
        Some(info) => HttpResponse::Ok().json(describe_topic(info).await),
        None => broker_error(BrokerError::UnknownTopic(topic.to_string())),
    }
}

/// A topic as `GET /topics/{topic}` shows it; partitions are asked for their offsets at once.
async fn describe_topic(info: &TopicInfo) -> Value {
    let logs = join_all(info.partitions.iter().map(|p| async {
        match &p.local {
            Some(addr) => addr.send(DescribeLog).await.ok(),
            None => None,
        }
    }))
    .await;
    let partitions: Vec<Value> = info
        .partitions
        .iter()
        .zip(logs)
        .enumerate()
        .map(|(i, (p, log))| {
            let mut out = json!({
                "partition": i,
                "leader": p.leader,
                "leader_epoch": p.leader_epoch,
                "replicas": p.replicas,
            });
            if let Some(log) = log {
                out["log_start_offset"] = json!(log.log_start_offset);
                out["high_watermark"] = json!(log.high_watermark);
                out["size_bytes"] = json!(log.size_bytes);
                out["segments"] = json!(log.segments);
            }
            out
        })
        .collect();
    let configs: serde_json::Map<String, Value> = info
        .config
        .entries()
        .into_iter()
        .map(|(k, v)| {
            let source = if info.overrides.contains_key(k) {
                "topic"
            } else {
                "default"
            };
            (k.to_string(), json!({"value": v, "source": source}))
        })
        .collect();
    json!({
        "name": &*info.name,
        "id": uuid_text(&info.id),
        "partitions": partitions,
        "configs": configs,
    })
}

/// A topic id in the UUID text form Kafka tools print.
fn uuid_text(id: &[u8; 16]) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlterConfigsBody {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    delete: Vec<String>,
}

/// `PATCH /topics/{topic}/configs`: the topic's description after the change.
#[utoipa::path(
    patch,
    path = "/topics/{topic}/configs",
    tag = "topics",
    summary = "Set and delete config overrides",
    params(("topic" = String, Path, description = "Topic name")),
    request_body = AlterConfigsBody,
    responses((status = 200, description = "The topic after the change"), (status = 400, description = "Unknown key or invalid value"), (status = 404, description = "Unknown topic"))
)]
pub async fn alter_configs(
    broker: web::Data<Broker>,
    topic: web::Path<String>,
    body: web::Json<AlterConfigsBody>,
) -> HttpResponse {
    let Some(info) = broker.catalog.snapshot().topic(&topic).cloned() else {
        return broker_error(BrokerError::UnknownTopic(topic.into_inner()));
    };
    let body = body.into_inner();
    if let Some(k) = body.delete.iter().find(|k| body.set.contains_key(*k)) {
        return bad_request(format!("{k} is both set and deleted"));
    }
    let mut overrides = info.overrides.clone();
    for k in &body.delete {
        overrides.remove(k);
    }
    overrides.extend(body.set);
    let sent = broker
        .registry
        .send(AlterTopicConfig {
            name: topic.to_string(),
            overrides,
            validate_only: false,
        })
        .await;
    match answered(sent, REGISTRY) {
        Ok(()) => current(&broker, &topic).await,
        Err(r) => r,
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartitionsBody {
    /// The new total.
    count: i32,
}

/// `POST /topics/{topic}/partitions`.
#[utoipa::path(
    post,
    path = "/topics/{topic}/partitions",
    tag = "topics",
    summary = "Grow a topic to a partition count",
    params(("topic" = String, Path, description = "Topic name")),
    request_body = PartitionsBody,
    responses((status = 200, description = "The topic after the change"), (status = 400, description = "Not more than the current count"), (status = 404, description = "Unknown topic"))
)]
pub async fn add_partitions(
    broker: web::Data<Broker>,
    topic: web::Path<String>,
    body: web::Json<PartitionsBody>,
) -> HttpResponse {
    let sent = broker
        .registry
        .send(CreatePartitions {
            name: topic.to_string(),
            total: body.count,
            validate_only: false,
        })
        .await;
    match answered(sent, REGISTRY) {
        Ok(()) => current(&broker, &topic).await,
        Err(r) => r,
    }
}

/// `DELETE /topics/{topic}`.
#[utoipa::path(
    delete,
    path = "/topics/{topic}",
    tag = "topics",
    summary = "Delete a topic and its data",
    params(("topic" = String, Path, description = "Topic name")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "Unknown topic"))
)]
pub async fn delete(broker: web::Data<Broker>, topic: web::Path<String>) -> HttpResponse {
    let sent = broker
        .registry
        .send(DeleteTopic {
            name: topic.into_inner(),
        })
        .await;
    match answered(sent, REGISTRY) {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(r) => r,
    }
}
