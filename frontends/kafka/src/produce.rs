//! Produce: validate each batch (framing, magic, CRC, size), then append it through the
//! partition's actor. acks=0 gets no answer; acks=1 and acks=all are the same on one node and
//! are answered once the flush policy says the data is acknowledged.

use std::future::Future;
use std::sync::Arc;

use actix::Addr;
use futures_util::future::{join_all, ready, Either, Ready};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use spool_actors::partition::{queue_append, PartitionActor, ValidatedBatch};
use spool_actors::record_batch;
use spool_actors::{BrokerError, TopicInfo};
use tracing::debug;
use uuid::Uuid;

use crate::error_codes;
use crate::handler::{message, topic_or_create, Ctx};
use crate::turns::{wait_turn, Turn};

/// A partition's part of a request: answered already (refused), or batches to append.
enum Prepared {
    Answered(PartitionProduceResponse),
    Append {
        addr: Addr<PartitionActor>,
        batches: Vec<ValidatedBatch>,
        out: PartitionProduceResponse,
        topic: Arc<str>,
    },
}

pub(crate) async fn handle(
    ctx: &Ctx,
    req: ProduceRequest,
    version: i16,
    mut turn: Option<Turn>,
) -> Option<ProduceResponse> {
    let refuse = if ![-1, 0, 1].contains(&req.acks) {
        Some(ResponseError::InvalidRequiredAcks.code())
    } else if req.transactional_id.is_some() {
        Some(ResponseError::TransactionalIdAuthorizationFailed.code())
    } else {
        None
    };
    let acks = req.acks;
    // Validation (CRCs over whole batches) runs concurrently with other requests...
    let mut topics = Vec::new();
    for t in req.topic_data {
        topics.push(prepare_topic(ctx, t, version, refuse));
    }
    let prepared = join_all(topics).await;
    // ...but appends are queued in the order the requests arrived on the connection.
    wait_turn(&mut turn).await;
    let pending: Vec<_> = prepared
        .into_iter()
        .map(|(name, topic_id, parts)| {
            let parts: Vec<_> = parts.into_iter().map(append).collect();
            (name, topic_id, parts)
        })
        .collect();
    drop(turn);
    let mut responses = Vec::with_capacity(pending.len());
    for (name, topic_id, parts) in pending {
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_topic_id(topic_id)
                .with_partition_responses(join_all(parts).await),
        );
    }
    (acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

/// Queues a prepared append now (so appends keep the order of this call); the future answers
/// the partition.
fn append(
    p: Prepared,
) -> Either<Ready<PartitionProduceResponse>, impl Future<Output = PartitionProduceResponse>> {
    match p {
        Prepared::Answered(out) => Either::Left(ready(out)),
        Prepared::Append {
            addr,
            batches,
            out,
            topic,
        } => {
            let queued = queue_append(&addr, batches);
            Either::Right(async move {
                match queued.await {
                    Some(Ok(r)) => out
                        .with_base_offset(r.base_offset as i64)
                        .with_log_append_time_ms(r.log_append_time.unwrap_or(-1))
                        .with_log_start_offset(r.log_start_offset as i64),
                    Some(Err(e)) => refused(out, &topic, &e),
                    None => out.with_error_code(error_codes::unreachable()),
                }
            })
        }
    }
}

fn refused(
    out: PartitionProduceResponse,
    topic: &str,
    e: &BrokerError,
) -> PartitionProduceResponse {
    debug!(topic, partition = out.index, error = %e, "produce refused");
    out.with_error_code(error_codes::code(e))
        .with_error_message(message(e))
}

async fn prepare_topic(
    ctx: &Ctx,
    t: TopicProduceData,
    version: i16,
    refuse: Option<i16>,
) -> (TopicName, Uuid, Vec<Prepared>) {
    let topic: Result<Arc<TopicInfo>, i16> = if version >= 13 {
        ctx.broker
            .catalog
            .snapshot()
            .topic_by_id(t.topic_id.as_bytes())
            .cloned()
            .ok_or(ResponseError::UnknownTopicId.code())
    } else {
        topic_or_create(ctx, &t.name, true)
            .await
            .map_err(|e| error_codes::code(&e))
    };
    let parts = t
        .partition_data
        .into_iter()
        .map(|p| prepare_partition(topic.clone(), p, refuse))
        .collect();
    (t.name, t.topic_id, parts)
}

fn prepare_partition(
    topic: Result<Arc<TopicInfo>, i16>,
    p: PartitionProduceData,
    refuse: Option<i16>,
) -> Prepared {
    let out = PartitionProduceResponse::default()
        .with_index(p.index)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1);
    if let Some(code) = refuse {
        return Prepared::Answered(out.with_error_code(code));
    }
    let topic = match topic {
        Ok(t) => t,
        Err(code) => return Prepared::Answered(out.with_error_code(code)),
    };
    let Some(addr) = usize::try_from(p.index)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .and_then(|part| part.local.clone())
    else {
        return Prepared::Answered(
            out.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
        );
    };
    let fail = |e: BrokerError| Prepared::Answered(refused(out.clone(), &topic.name, &e));
    let records = p.records.unwrap_or_default();
    let slices = match record_batch::split(&records) {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => {
            return fail(BrokerError::CorruptBatch(
                "no record batch in the request".into(),
            ))
        }
        Err(e) => return fail(BrokerError::CorruptBatch(e)),
    };
    let limit = topic.config.max_message_bytes as usize;
    let mut batches = Vec::with_capacity(slices.len());
    for s in slices {
        if s.len() > limit {
            return fail(BrokerError::BatchTooLarge {
                size: s.len(),
                limit,
            });
        }
        match ValidatedBatch::new(records.slice_ref(s)) {
            Ok(b) => batches.push(b),
            Err(e) => return fail(e),
        }
    }
    Prepared::Append {
        addr,
        batches,
        out,
        topic: topic.name.clone(),
    }
}
