//! Records over HTTP, in the manner of Kafka REST proxies:
//! - `POST /topics/{topic}/records` with `{"records": [{"key", "value" | "value_base64",
//!   "headers", "partition"}]}` appends them and answers each record's partition and offset;
//! - `GET /topics/{topic}/partitions/{p}/records?offset=&max_bytes=&timeout_ms=` reads from an
//!   offset (waiting up to `timeout_ms` for records when there are none yet).
//!
//! A record's value is JSON (`value`, stored as its JSON text) or bytes (`value_base64`). On
//! reading, a value that parses as JSON comes back as `value`, anything else as `value_base64`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use spool_actors::partition::{queue_append, AwaitRecords, ReadRecords};
use spool_actors::queues::record::{self, QueueRecord, StoredRecord};
use spool_actors::{Broker, BrokerError};

use crate::errors::{bad_request, broker_error, error};
use crate::partitioner::partition_for_key;
use crate::payload;

/// Round-robin position for records with neither key nor partition.
#[derive(Default)]
pub struct RoundRobin(AtomicUsize);

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ProduceBody {
    records: Vec<ProduceRecord>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ProduceRecord {
    key: Option<String>,
    #[schema(value_type = Option<Object>)]
    value: Option<Value>,
    value_base64: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    partition: Option<i32>,
}

/// `POST /topics/{topic}/records`.
#[utoipa::path(
    post,
    path = "/topics/{topic}/records",
    tag = "records",
    summary = "Produce records; answers partition and offset per record",
    params(("topic" = String, Path, description = "Topic name")),
    request_body = ProduceBody,
    responses((status = 200, description = "Offsets"), (status = 400, description = "Bad record"), (status = 404, description = "Unknown topic or partition"), (status = 413, description = "Too large"))
)]
pub async fn produce(
    broker: web::Data<Broker>,
    rr: web::Data<RoundRobin>,
    topic: web::Path<String>,
    body: web::Json<ProduceBody>,
) -> HttpResponse {
    let Some(info) = broker.catalog.snapshot().topic(&topic).cloned() else {
        return broker_error(BrokerError::UnknownTopic(topic.into_inner()));
    };
    let n = info.partitions.len();
    if body.records.is_empty() {
        return bad_request("no records");
    }
    let now = spool_actors::offsets_journal::now_ms();
    // Records grouped by partition, each remembering its place in the request.
    let mut by_partition: BTreeMap<i32, Vec<(usize, QueueRecord)>> = BTreeMap::new();
    for (i, r) in body.into_inner().records.into_iter().enumerate() {
        let value = match payload::decode(r.value, r.value_base64, "value") {
            Ok(v) => v,
            Err(e) => return bad_request(format!("record {i}: {e}")),
        };
        let partition = match (r.partition, &r.key) {
            (Some(p), _) if p < 0 || p as usize >= n => {
                return broker_error(BrokerError::UnknownPartition {
                    topic: topic.to_string(),
                    partition: p,
                })
            }
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k.as_bytes(), n),
            (None, None) => (rr.0.fetch_add(1, Ordering::Relaxed) % n) as i32,
        };
        by_partition.entry(partition).or_default().push((
            i,
            QueueRecord {
                key: r.key.map(bytes::Bytes::from),
                value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k, Some(bytes::Bytes::from(v))))
                    .collect(),
                timestamp_ms: now,
            },
        ));
    }
    let total: usize = by_partition.values().map(Vec::len).sum();
    let mut offsets = vec![Value::Null; total];
    for (partition, records) in by_partition {
        let Some(addr) = info.partitions[partition as usize].local.clone() else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("partition {partition} is not local"),
            );
        };
        let (places, records): (Vec<usize>, Vec<QueueRecord>) = records.into_iter().unzip();
        let batch = match record::encode(&records) {
            Ok(b) => b,
            Err(e) => return broker_error(e),
        };
        match queue_append(&addr, vec![batch]).await {
            Some(Ok(r)) => {
                for (j, place) in places.into_iter().enumerate() {
                    offsets[place] =
                        json!({"partition": partition, "offset": r.base_offset + j as u64});
                }
            }
            Some(Err(e)) => return broker_error(e),
            None => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("partition {partition} is restarting"),
                )
            }
        }
    }
    HttpResponse::Ok().json(json!({"offsets": offsets}))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    offset: Option<u64>,
    max_bytes: Option<usize>,
    timeout_ms: Option<u64>,
}

/// Longest a read may wait for records.
const MAX_WAIT_MS: u64 = 30_000;

/// `GET /topics/{topic}/partitions/{partition}/records`.
#[utoipa::path(
    get,
    path = "/topics/{topic}/partitions/{partition}/records",
    tag = "records",
    summary = "Read a partition from an offset (long-poll)",
    params(("topic" = String, Path, description = "Topic name"), ("partition" = i32, Path, description = "Partition index"), ReadQuery),
    responses((status = 200, description = "Records"), (status = 404, description = "Unknown partition"), (status = 416, description = "Offset out of range"))
)]
pub async fn read(
    broker: web::Data<Broker>,
    path: web::Path<(String, i32)>,
    query: web::Query<ReadQuery>,
) -> HttpResponse {
    let (topic, partition) = path.into_inner();
    let Some(part) = broker
        .catalog
        .snapshot()
        .partition(&topic, partition)
        .cloned()
    else {
        return broker_error(BrokerError::UnknownPartition { topic, partition });
    };
    let Some(addr) = part.local else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("partition {partition} is not local"),
        );
    };
    let offset = query.offset.unwrap_or(0);
    let max_bytes = query.max_bytes.unwrap_or(1 << 20).clamp(1, 64 << 20);
    let wait = Duration::from_millis(query.timeout_ms.unwrap_or(0).min(MAX_WAIT_MS));
    if !wait.is_zero() {
        let _ = tokio_timeout(wait, addr.send(AwaitRecords { offset })).await;
    }
    let read = match addr.send(ReadRecords { offset, max_bytes }).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return broker_error(e),
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("partition {partition} is restarting"),
            )
        }
    };
    let stored = match record::decode(read.records) {
        Ok(s) => s,
        Err(e) => return broker_error(e),
    };
    let records: Vec<Value> = stored
        .into_iter()
        .filter(|s| s.offset >= offset)
        .map(|s| render(s, Map::new()))
        .collect();
    HttpResponse::Ok().json(json!({
        "records": records,
        "high_watermark": read.high_watermark,
        "log_start_offset": read.log_start_offset,
    }))
}

/// A stored record as JSON: `offset`, `timestamp`, `key`, `headers` and the value, after the
/// fields already in `out`.
pub(crate) fn render(s: StoredRecord, mut out: Map<String, Value>) -> Value {
    let r = s.record;
    out.insert("offset".into(), json!(s.offset));
    out.insert("timestamp".into(), json!(r.timestamp_ms));
    let key = r
        .key
        .as_ref()
        .map(|k| String::from_utf8_lossy(k).into_owned());
    out.insert("key".into(), json!(key));
    out.insert("headers".into(), payload::headers(r.headers.iter()));
    payload::encode(&mut out, "value", r.value.as_ref());
    Value::Object(out)
}

/// Waits for `fut` at most `wait`.
pub(crate) async fn tokio_timeout<F: std::future::Future>(
    wait: Duration,
    fut: F,
) -> Option<F::Output> {
    actix_web::rt::time::timeout(wait, fut).await.ok()
}
