//! Queues over HTTP, in the manner of SQS:
//! - `POST /queues/{queue}/messages` with `{"messages": [{"body" | "body_base64", "headers"}]}`
//!   publishes to the queue (as AMQP's default exchange would);
//! - `POST /queues/{queue}/receive?max=&visibility_ms=&wait_ms=` leases up to `max` messages
//!   for `visibility_ms`, waiting up to `wait_ms` for one; each comes with a `receipt`;
//! - `POST /queues/{queue}/ack` and `/nack` (`requeue`, else dead-lettered or dropped) settle
//!   receipts; an unsettled message goes back to the queue when its lease ends;
//! - `GET /queues/{queue}` gives its counts;
//! - `PUT /queues/{queue}` declares a durable queue (with AMQP's `x-` arguments), as RabbitMQ's
//!   management API does, and `DELETE /queues/{queue}?if_unused=&if_empty=` deletes one.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use spool_actors::partition::{queue_append, AwaitRecords};
use spool_actors::queues::delivery::{next_consumer_id, ConsumerId};
use spool_actors::queues::queue::{
    AdmitPublish, ClaimDeliveries, CountMessages, LeaseRecords, Outcome, QueueActor, QueueCounts,
    RecordId, RefusePublish, SettleDeliveries,
};
use spool_actors::queues::record::{self, QueueRecord, EXCHANGE_HEADER};
use spool_actors::queues::registry::{DeclareQueue, DeleteQueue, FindQueue};
use spool_actors::queues::routing::Arguments;
use spool_actors::{Broker, BrokerError};

use crate::errors::{answered, broker_error, error};
use crate::payload;

/// HTTP clients own no AMQP connection: exclusive queues are not theirs.
const HTTP_CONNECTION: u64 = 0;
/// Longest a receive may wait, and a lease may last.
const MAX_WAIT_MS: u64 = 30_000;
const MAX_VISIBILITY_MS: u64 = 12 * 3600 * 1000;
/// Sends so far, so that sends take a queue's partitions in turn.
static SENDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn find(broker: &Broker, queue: &str) -> Result<actix::Addr<QueueActor>, HttpResponse> {
    match broker
        .queues
        .send(FindQueue {
            name: queue.to_string(),
            connection: HTTP_CONNECTION,
        })
        .await
    {
        Ok(Ok(addr)) => Ok(addr),
        Ok(Err(e)) => Err(broker_error(e)),
        Err(_) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue registry unavailable".into(),
        )),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SendBody {
    messages: Vec<SendMessage>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SendMessage {
    #[schema(value_type = Option<Object>)]
    body: Option<Value>,
    body_base64: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// `POST /queues/{queue}/messages`.
#[utoipa::path(
    post,
    path = "/queues/{queue}/messages",
    tag = "queues",
    summary = "Send messages to a queue",
    params(("queue" = String, Path, description = "Queue name")),
    request_body = SendBody,
    responses((status = 200, description = "Sent"), (status = 400, description = "Bad message"), (status = 404, description = "Unknown queue"), (status = 409, description = "The queue is full (x-overflow reject-publish): `sent` says how many went in, in order"))
)]
pub async fn send(
    broker: web::Data<Broker>,
    queue: web::Path<String>,
    body: web::Json<SendBody>,
) -> HttpResponse {
    let routes = broker.routes.snapshot();
    let Some(target) = routes.queues.get(queue.as_str()).cloned() else {
        return broker_error(BrokerError::NoSuchEntity {
            kind: "queue",
            name: format!("{queue}' in vhost '/"),
        });
    };
    if body.messages.is_empty() {
        return error(StatusCode::BAD_REQUEST, "no messages".into());
    }
    let now = spool_actors::offsets_journal::now_ms();
    let mut records = Vec::with_capacity(body.messages.len());
    for (i, m) in body.into_inner().messages.into_iter().enumerate() {
        let value = match payload::decode(m.body, m.body_base64, "body") {
            Ok(Some(v)) => v,
            Ok(None) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("message {i}: give one of body and body_base64"),
                )
            }
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("message {i}: {e}")),
        };
        let mut headers: Vec<(String, Option<bytes::Bytes>)> =
            vec![(EXCHANGE_HEADER.to_string(), Some(bytes::Bytes::new()))];
        headers.extend(
            m.headers
                .into_iter()
                .map(|(k, v)| (k, Some(bytes::Bytes::from(v)))),
        );
        if let Some(ttl) = target.message_ttl {
            headers.push((
                record::EXPIRES_HEADER.to_string(),
                Some(bytes::Bytes::from((now + ttl).to_string())),
            ));
        }
        records.push(QueueRecord {
            key: Some(bytes::Bytes::from(queue.to_string())),
            value: Some(value),
            headers,
            timestamp_ms: now,
        });
    }
    // A full queue with x-overflow=reject-publish takes messages while it has room; the rest
    // are refused (and dead-lettered with reject-publish-dlx), as AMQP publishes would be.
    let mut refused = 0;
    if let Some(q) = &target.admission {
        let mut admitted = 0;
        while admitted < records.len() && q.send(AdmitPublish).await.unwrap_or(false) {
            admitted += 1;
        }
        for record in records.drain(admitted..) {
            refused += 1;
            q.do_send(RefusePublish { record });
        }
    }
    let full = || {
        HttpResponse::Conflict().json(json!({
            "error_code": 409,
            "message": format!(
                "queue '{queue}' is full (x-max-length with x-overflow reject-publish): \
                 {refused} of {} messages refused",
                records.len() + refused
            ),
            "sent": records.len(),
        }))
    };
    if records.is_empty() {
        return full();
    }
    // Each send is one batch, and sends take the queue's partitions in turn.
    let turn = SENDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Some(addr) = broker
        .catalog
        .snapshot()
        .spread(&target.topic, turn)
        .and_then(|(_, p)| p.local.clone())
    else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("queue '{queue}' has no storage"),
        );
    };
    let batch = match record::encode(&records) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match queue_append(&addr, vec![batch]).await {
        Some(Ok(_)) if refused > 0 => full(),
        Some(Ok(_)) => HttpResponse::Ok().json(json!({"sent": records.len()})),
        Some(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("queue '{queue}' is restarting"),
        ),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReceiveQuery {
    max: Option<usize>,
    visibility_ms: Option<u64>,
    wait_ms: Option<u64>,
}

/// `POST /queues/{queue}/receive`.
#[utoipa::path(
    post,
    path = "/queues/{queue}/receive",
    tag = "queues",
    summary = "Lease messages for a visibility timeout (long-poll)",
    params(("queue" = String, Path, description = "Queue name"), ReceiveQuery),
    responses((status = 200, description = "Messages with receipts"), (status = 404, description = "Unknown queue"))
)]
pub async fn receive(
    broker: web::Data<Broker>,
    queue: web::Path<String>,
    q: web::Query<ReceiveQuery>,
) -> HttpResponse {
    let mut addr = match find(&broker, &queue).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut restarting = spool_actors::supervision::Backoff::default();
    let max = q.max.unwrap_or(1).clamp(1, 1000);
    let lease = Duration::from_millis(
        q.visibility_ms
            .unwrap_or(30_000)
            .clamp(1, MAX_VISIBILITY_MS),
    );
    let deadline = Instant::now() + Duration::from_millis(q.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    let consumer = next_consumer_id();
    let topic = broker
        .routes
        .snapshot()
        .queues
        .get(queue.as_str())
        .map(|t| t.topic.clone());
    loop {
        let leased = addr
            .send(LeaseRecords {
                consumer,
                max,
                lease,
            })
            .await;
        let Ok(got) = leased else {
            // The queue's actor ended: wait for its restart and ask the new one, within the
            // request's wait; past it the client is told to try again.
            if Instant::now() >= deadline {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("queue '{queue}' is restarting; try again"),
                );
            }
            actix_web::rt::time::sleep(restarting.next_delay()).await;
            addr = match find(&broker, &queue).await {
                Ok(a) => a,
                Err(r) => return r,
            };
            continue;
        };
        let now = Instant::now();
        if !got.is_empty() || now >= deadline {
            let messages: Vec<Value> =
                got.into_iter()
                    .map(|d| {
                        let mut m = Map::new();
                        let receipt = format!("{consumer}.{}.{}", d.id.partition, d.id.offset);
                        m.insert("receipt".into(), json!(receipt));
                        m.insert("redelivered".into(), json!(d.redelivered));
                        let own =
                            d.record.headers.iter().filter(|(k, _)| {
                                !k.starts_with("amqp.") && !k.starts_with("spool.")
                            });
                        m.insert("headers".into(), payload::headers(own));
                        let body = d.record.value.clone().unwrap_or_default();
                        payload::encode(&mut m, "body", Some(&body));
                        Value::Object(m)
                    })
                    .collect();
            return HttpResponse::Ok().json(json!({"messages": messages}));
        }
        // Nothing ready: wait for any of the queue's logs to grow (or the deadline), then try
        // again.
        let catalog = broker.catalog.snapshot();
        let partitions: Vec<_> = topic
            .as_ref()
            .and_then(|t| catalog.topic(t))
            .map(|t| {
                t.partitions
                    .iter()
                    .filter_map(|p| p.local.clone())
                    .collect()
            })
            .unwrap_or_default();
        if partitions.is_empty() {
            return HttpResponse::Ok().json(json!({"messages": []}));
        }
        let mut appended = Vec::with_capacity(partitions.len());
        for part in partitions {
            let end = part
                .send(spool_actors::partition::DescribeLog)
                .await
                .map(|s| s.high_watermark)
                .unwrap_or(0);
            appended.push(Box::pin(async move {
                part.send(AwaitRecords { offset: end }).await
            }));
        }
        // Records also become ready without an append (a lapsed lease, a requeue), which the
        // log cannot signal: look again at least every 100 ms.
        let wait = (deadline - now).min(Duration::from_millis(100));
        let any = futures_util::future::select_all(appended);
        let _ = actix_web::rt::time::timeout(wait, any).await;
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SettleBody {
    receipts: Vec<String>,
    #[serde(default)]
    requeue: bool,
}

/// Receipts (`{consumer}.{partition}.{offset}`) grouped by consumer; the first that does not
/// parse.
fn parse_receipts(receipts: &[String]) -> Result<HashMap<ConsumerId, Vec<RecordId>>, String> {
    let mut out: HashMap<ConsumerId, Vec<RecordId>> = HashMap::new();
    for r in receipts {
        let mut fields = r.split('.');
        let parsed = (|| {
            let consumer = fields.next()?.parse().ok()?;
            let partition = fields.next()?.parse().ok()?;
            let offset = fields.next()?.parse().ok()?;
            fields
                .next()
                .is_none()
                .then_some((consumer, RecordId { partition, offset }))
        })();
        match parsed {
            Some((c, id)) => out.entry(c).or_default().push(id),
            None => return Err(format!("'{r}' is not a receipt")),
        }
    }
    Ok(out)
}

async fn settle(broker: &Broker, queue: &str, body: SettleBody, outcome: Outcome) -> HttpResponse {
    let addr = match find(broker, queue).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let by_consumer = match parse_receipts(&body.receipts) {
        Ok(m) => m,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    for (consumer, records) in by_consumer {
        // Leases taken from an actor that has since been restarted are claimed back first
        // (a no-op otherwise), so that their settlement counts.
        addr.do_send(ClaimDeliveries {
            consumer,
            records: records.clone(),
        });
        addr.do_send(SettleDeliveries {
            consumer,
            records,
            outcome,
            receipt: None,
        });
    }
    // A count after the settlements: its answer means they are written.
    if addr.send(CountMessages).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("queue '{queue}' is restarting; try again"),
        );
    }
    HttpResponse::Ok().json(json!({"settled": body.receipts.len()}))
}

/// `POST /queues/{queue}/ack`.
#[utoipa::path(
    post,
    path = "/queues/{queue}/ack",
    tag = "queues",
    summary = "Acknowledge receipts",
    params(("queue" = String, Path, description = "Queue name")),
    request_body = SettleBody,
    responses((status = 200, description = "Settled"), (status = 400, description = "Bad receipt"), (status = 404, description = "Unknown queue"))
)]
pub async fn ack(
    broker: web::Data<Broker>,
    queue: web::Path<String>,
    body: web::Json<SettleBody>,
) -> HttpResponse {
    settle(&broker, &queue, body.into_inner(), Outcome::Ack).await
}

/// `POST /queues/{queue}/nack`: back to the queue with `requeue`, else rejected (dead-lettered
/// when the queue has a dead-letter exchange).
#[utoipa::path(
    post,
    path = "/queues/{queue}/nack",
    tag = "queues",
    summary = "Requeue or dead-letter receipts",
    params(("queue" = String, Path, description = "Queue name")),
    request_body = SettleBody,
    responses((status = 200, description = "Settled"), (status = 400, description = "Bad receipt"), (status = 404, description = "Unknown queue"))
)]
pub async fn nack(
    broker: web::Data<Broker>,
    queue: web::Path<String>,
    body: web::Json<SettleBody>,
) -> HttpResponse {
    let outcome = if body.requeue {
        Outcome::Requeue
    } else {
        Outcome::Reject
    };
    settle(&broker, &queue, body.into_inner(), outcome).await
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclareBody {
    /// Queue arguments as AMQP's queue.declare takes them: `x-message-ttl`,
    /// `x-dead-letter-exchange`, `x-max-length`, `x-delivery-limit`, `x-max-priority`...
    #[serde(default)]
    #[schema(value_type = Object)]
    arguments: Arguments,
}

/// `PUT /queues/{queue}`: declares a durable queue; declaring it again with the same
/// arguments is a no-op, with others a conflict (AMQP's PRECONDITION_FAILED).
#[utoipa::path(
    put,
    path = "/queues/{queue}",
    tag = "queues",
    summary = "Declare a durable queue",
    params(("queue" = String, Path, description = "Queue name")),
    request_body(content = DeclareBody, description = "Optional: the queue's arguments"),
    responses((status = 200, description = "Declared, with its counts"), (status = 400, description = "Bad name, body or argument"), (status = 409, description = "Exists with other arguments"))
)]
pub async fn declare(
    broker: web::Data<Broker>,
    queue: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let body: DeclareBody = if body.iter().all(u8::is_ascii_whitespace) {
        DeclareBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad body: {e}")),
        }
    };
    let declared = broker
        .queues
        .send(DeclareQueue {
            name: queue.to_string(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: body.arguments,
            connection: HTTP_CONNECTION,
        })
        .await;
    match answered(declared, "queue registry") {
        Ok(q) => HttpResponse::Ok().json(counts(&q.name, &q.counts)),
        Err(r) => r,
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Refuse (409) while the queue has consumers.
    #[serde(default)]
    if_unused: bool,
    /// Refuse (409) while the queue holds messages.
    #[serde(default)]
    if_empty: bool,
}

/// `DELETE /queues/{queue}`: deletes a queue and its messages (consumers are cancelled).
#[utoipa::path(
    delete,
    path = "/queues/{queue}",
    tag = "queues",
    summary = "Delete a queue",
    params(("queue" = String, Path, description = "Queue name"), DeleteQuery),
    responses((status = 200, description = "Deleted, with the messages it held"), (status = 409, description = "In use or not empty"))
)]
pub async fn delete(
    broker: web::Data<Broker>,
    queue: web::Path<String>,
    q: web::Query<DeleteQuery>,
) -> HttpResponse {
    let deleted = broker
        .queues
        .send(DeleteQueue {
            name: queue.to_string(),
            if_unused: q.if_unused,
            if_empty: q.if_empty,
            connection: HTTP_CONNECTION,
        })
        .await;
    match answered(deleted, "queue registry") {
        Ok(messages) => {
            HttpResponse::Ok().json(json!({"deleted": queue.as_str(), "messages": messages}))
        }
        Err(r) => r,
    }
}

/// `GET /queues/{queue}`.
#[utoipa::path(
    get,
    path = "/queues/{queue}",
    tag = "queues",
    summary = "Queue counts: ready, unacked, consumers",
    params(("queue" = String, Path, description = "Queue name")),
    responses((status = 200, description = "Counts"), (status = 404, description = "Unknown queue"))
)]
pub async fn stats(broker: web::Data<Broker>, queue: web::Path<String>) -> HttpResponse {
    let addr = match find(&broker, &queue).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let c = addr.send(CountMessages).await.unwrap_or_default();
    HttpResponse::Ok().json(counts(&queue, &c))
}

/// A queue's counts as the API shows them (stats and declare answers).
fn counts(queue: &str, c: &QueueCounts) -> Value {
    json!({
        "queue": queue,
        "ready": c.ready,
        "unacked": c.unacked,
        "consumers": c.consumers,
    })
}
