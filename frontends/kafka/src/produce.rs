//! Produce: validate each batch (framing, magic, CRC, size), then append it through the
//! partition's actor. acks=0 gets no answer; acks=1 and acks=all are the same on one node and
//! are answered once the flush policy says the data is acknowledged.

use std::sync::Arc;

use futures_util::future::join_all;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use spool_actors::partition::{AppendBatches, ValidatedBatch};
use spool_actors::record_batch;
use spool_actors::{BrokerError, TopicInfo};
use tracing::debug;

use crate::error_codes;
use crate::handler::{message, topic_or_create, Ctx};

pub(crate) async fn handle(
    ctx: &Ctx,
    req: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let refuse = if ![-1, 0, 1].contains(&req.acks) {
        Some(ResponseError::InvalidRequiredAcks.code())
    } else if req.transactional_id.is_some() {
        Some(ResponseError::TransactionalIdAuthorizationFailed.code())
    } else {
        None
    };
    let acks = req.acks;
    let mut topics = Vec::new();
    for t in req.topic_data {
        topics.push(produce_topic(ctx, t, version, refuse));
    }
    let responses = join_all(topics).await;
    (acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

async fn produce_topic(
    ctx: &Ctx,
    t: TopicProduceData,
    version: i16,
    refuse: Option<i16>,
) -> TopicProduceResponse {
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
        .map(|p| produce_partition(ctx, topic.clone(), p, refuse));
    let partition_responses = join_all(parts).await;
    TopicProduceResponse::default()
        .with_name(t.name)
        .with_topic_id(t.topic_id)
        .with_partition_responses(partition_responses)
}

async fn produce_partition(
    _ctx: &Ctx,
    topic: Result<Arc<TopicInfo>, i16>,
    p: PartitionProduceData,
    refuse: Option<i16>,
) -> PartitionProduceResponse {
    let out = PartitionProduceResponse::default()
        .with_index(p.index)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1);
    if let Some(code) = refuse {
        return out.with_error_code(code);
    }
    let topic = match topic {
        Ok(t) => t,
        Err(code) => return out.with_error_code(code),
    };
    let Some(addr) = usize::try_from(p.index)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .and_then(|part| part.local.clone())
    else {
        return out.with_error_code(ResponseError::UnknownTopicOrPartition.code());
    };
    let fail = |e: BrokerError| {
        debug!(topic = %topic.name, partition = p.index, error = %e, "produce refused");
        out.clone()
            .with_error_code(error_codes::code(&e))
            .with_error_message(message(&e))
    };
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
    match addr.send(AppendBatches { batches }).await {
        Ok(Ok(r)) => out
            .with_base_offset(r.base_offset as i64)
            .with_log_start_offset(r.log_start_offset as i64),
        Ok(Err(e)) => fail(e),
        Err(_) => out.with_error_code(error_codes::unreachable()),
    }
}
