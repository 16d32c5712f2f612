//! Fetch: read stored batches as they are, long-polling up to `max_wait_ms` until `min_bytes`
//! are available. Fetch sessions (KIP-227) are declined by answering with session id 0, which
//! clients treat as "send full fetch requests"; an incremental request is refused with
//! FETCH_SESSION_ID_NOT_FOUND.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::select_all;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use spool_actors::partition::{AwaitRecords, ReadRecords};
use spool_actors::{BrokerError, TopicInfo};

use crate::error_codes;
use crate::handler::Ctx;
use crate::misc::leader_epoch_error;

/// One partition to read, resolved against the catalog.
struct Wanted {
    topic_index: usize,
    partition: i32,
    offset: i64,
    max_bytes: i32,
    target: Result<Arc<TopicInfo>, i16>,
    current_leader_epoch: i32,
}

pub(crate) async fn handle(ctx: &Ctx, req: FetchRequest, version: i16) -> FetchResponse {
    if req.session_id != 0 || req.session_epoch > 0 {
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code())
            .with_session_id(0);
    }
    let snapshot = ctx.broker.catalog.snapshot();
    let mut topics_out = Vec::new();
    let mut wanted = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let target = if version >= 13 {
            snapshot
                .topic_by_id(t.topic_id.as_bytes())
                .cloned()
                .ok_or(ResponseError::UnknownTopicId.code())
        } else {
            snapshot
                .topic(&t.topic)
                .cloned()
                .ok_or(ResponseError::UnknownTopicOrPartition.code())
        };
        topics_out.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(t.topic_id),
        );
        for p in &t.partitions {
            wanted.push(Wanted {
                topic_index: ti,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                target: target.clone(),
                current_leader_epoch: p.current_leader_epoch,
            });
        }
    }
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
    for (w, data) in wanted.iter().zip(parts) {
        topics_out[w.topic_index].partitions.push(data);
    }
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(topics_out)
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
    // The first partition with data always returns at least one batch (Kafka's rule), so a
    // batch larger than the limits still makes progress.
    let max = (w.max_bytes.max(0) as usize).min(if first { usize::MAX } else { budget });
    if max == 0 {
        return addr
            .send(ReadRecords {
                offset: w.offset as u64,
                max_bytes: 0,
            })
            .await
            .map_err(|_| (error_codes::unreachable(), None))?
            .map(|mut r| {
                r.records = Default::default();
                r
            })
            .map_err(map_read_error);
    }
    addr.send(ReadRecords {
        offset: w.offset as u64,
        max_bytes: max,
    })
    .await
    .map_err(|_| (error_codes::unreachable(), None))?
    .map_err(map_read_error)
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
