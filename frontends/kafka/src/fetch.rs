//! Fetch: read stored batches as they are, long-polling up to `max_wait_ms` until `min_bytes`
//! are available. Incremental fetch sessions (KIP-227) live in [`crate::fetch_session`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::select_all;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use spool_actors::partition::{AwaitRecords, ReadRecords};
use spool_actors::{BrokerError, TopicInfo};

use crate::error_codes;
use crate::fetch_session::{Answered, FetchPlan, PartitionKey};
use crate::handler::Ctx;
use crate::misc::leader_epoch_error;

/// One partition to read, resolved against the catalog.
struct Wanted {
    partition: i32,
    offset: i64,
    max_bytes: i32,
    target: Result<Arc<TopicInfo>, i16>,
    current_leader_epoch: i32,
}

pub(crate) async fn handle(ctx: &Ctx, req: FetchRequest, version: i16) -> FetchResponse {
    let plan = match ctx.fetch_sessions.begin(&req) {
        Ok(plan) => plan,
        Err(code) => {
            return FetchResponse::default()
                .with_error_code(code)
                .with_session_id(0)
        }
    };
    let snapshot = ctx.broker.catalog.snapshot();
    let wanted: Vec<Wanted> = plan
        .partitions
        .iter()
        .map(|(key, params)| Wanted {
            partition: key.partition,
            offset: params.fetch_offset,
            max_bytes: params.max_bytes,
            target: if version >= 13 {
                snapshot
                    .topic_by_id(key.topic_id.as_bytes())
                    .cloned()
                    .ok_or(ResponseError::UnknownTopicId.code())
            } else {
                snapshot
                    .topic(&key.topic)
                    .cloned()
                    .ok_or(ResponseError::UnknownTopicOrPartition.code())
            },
            current_leader_epoch: params.current_leader_epoch,
        })
        .collect();
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = if req.max_bytes <= 0 {
        i32::MAX
    } else {
        req.max_bytes
    } as usize;
    let parts = loop {
        let (parts, total, any_error) = read_all(&wanted, max_bytes).await;
        if total >= min_bytes.max(1) || any_error || Instant::now() >= deadline {
            break parts;
        }
        let seen: Vec<i64> = parts.iter().map(|p| p.high_watermark).collect();
        wait_for_data(&wanted, &seen, deadline).await;
        if Instant::now() >= deadline {
            break read_all(&wanted, max_bytes).await.0;
        }
    };
    FetchResponse::default()
        .with_session_id(plan.mode.session_id())
        .with_responses(respond(ctx, &plan, parts))
}

/// Groups the partitions the session says to send under their topics, keeping the read order
/// (a topic that recurs after another one gets a second entry, as in Kafka).
fn respond(ctx: &Ctx, plan: &FetchPlan, parts: Vec<PartitionData>) -> Vec<FetchableTopicResponse> {
    let answers: Vec<Answered> = parts
        .iter()
        .map(|p| Answered {
            high_watermark: p.high_watermark,
            log_start_offset: p.log_start_offset,
            has_records: p.records.as_ref().is_some_and(|r| !r.is_empty()),
            is_error: p.error_code != 0,
        })
        .collect();
    let include = ctx.fetch_sessions.finish(plan, &answers);
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut last: Option<&PartitionKey> = None;
    for (((key, _), data), send) in plan.partitions.iter().zip(parts).zip(include) {
        if !send {
            continue;
        }
        let same = last.is_some_and(|l| l.topic == key.topic && l.topic_id == key.topic_id);
        if !same {
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(TopicName(key.topic.clone()))
                    .with_topic_id(key.topic_id),
            );
        }
        last = Some(key);
        if let Some(t) = topics.last_mut() {
            t.partitions.push(data);
        }
    }
    topics
}

/// Reads every partition once. Returns the answers, the bytes read, and whether any partition
/// answered with an error (which ends the wait, as in Kafka).
async fn read_all(wanted: &[Wanted], max_bytes: usize) -> (Vec<PartitionData>, usize, bool) {
    let mut out = Vec::with_capacity(wanted.len());
    let mut total = 0usize;
    let mut any_error = false;
    for w in wanted {
        let base = PartitionData::default()
            .with_partition_index(w.partition)
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1)
            .with_preferred_read_replica(BrokerId(-1));
        let answer = read_one(w, max_bytes.saturating_sub(total), total == 0).await;
        out.push(match answer {
            Ok(r) => {
                total += r.records.len();
                base.with_high_watermark(r.high_watermark as i64)
                    .with_last_stable_offset(r.high_watermark as i64)
                    .with_log_start_offset(r.log_start_offset as i64)
                    .with_records(Some(r.records))
            }
            Err((code, marks)) => {
                any_error = true;
                let base = base
                    .with_error_code(code)
                    .with_records(Some(Default::default()));
                match marks {
                    Some((hw, start)) => base
                        .with_high_watermark(hw)
                        .with_last_stable_offset(hw)
                        .with_log_start_offset(start),
                    None => base,
                }
            }
        });
    }
    (out, total, any_error)
}

type ReadError = (i16, Option<(i64, i64)>);

async fn read_one(
    w: &Wanted,
    budget: usize,
    first: bool,
) -> Result<spool_actors::partition::ReadResult, ReadError> {
    let topic = w.target.as_ref().map_err(|c| (*c, None))?;
    let part = usize::try_from(w.partition)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .ok_or((ResponseError::UnknownTopicOrPartition.code(), None))?;
    if let Some(code) = leader_epoch_error(w.current_leader_epoch, part.leader_epoch) {
        return Err((code, None));
    }
    let addr = part
        .local
        .as_ref()
        .ok_or((error_codes::unreachable(), None))?;
    if w.offset < 0 {
        return Err((ResponseError::OffsetOutOfRange.code(), None));
    }
    // Both the partition's and the response's limits apply. The first partition with data
    // always returns at least one batch (Kafka's rule, and what ReadRecords does), so a batch
    // larger than the limits still makes progress; a later partition returns nothing rather
    // than overshoot the response's limit.
    let max = (w.max_bytes.max(0) as usize).min(budget);
    let mut read = addr
        .send(ReadRecords {
            offset: w.offset as u64,
            max_bytes: max,
        })
        .await
        .map_err(|_| (error_codes::unreachable(), None))?
        .map_err(map_read_error)?;
    if !first && read.records.len() > max {
        read.records = Default::default();
    }
    Ok(read)
}

fn map_read_error(e: BrokerError) -> ReadError {
    let marks = match &e {
        BrokerError::OffsetOutOfRange { start, end, .. } => Some((*end as i64, *start as i64)),
        _ => None,
    };
    (error_codes::code(&e), marks)
}

/// Parks until any wanted partition grows past the high watermark seen by the last read, or
/// the deadline passes.
async fn wait_for_data(wanted: &[Wanted], seen: &[i64], deadline: Instant) {
    let waits: Vec<_> = wanted
        .iter()
        .zip(seen)
        .filter_map(|(w, seen)| {
            let topic = w.target.as_ref().ok()?;
            let part = topic.partitions.get(usize::try_from(w.partition).ok()?)?;
            let addr = part.local.clone()?;
            let offset = w.offset.max(*seen).max(0) as u64;
            Some(Box::pin(async move {
                let _ = addr.send(AwaitRecords { offset }).await;
            }))
        })
        .collect();
    let remaining = deadline.saturating_duration_since(Instant::now());
    if waits.is_empty() {
        tokio::time::sleep(remaining).await;
        return;
    }
    let _ = tokio::time::timeout(remaining, select_all(waits)).await;
}
