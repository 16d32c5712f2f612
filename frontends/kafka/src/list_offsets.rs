//! ListOffsets: earliest, latest, max timestamp, and the first offset at or after a time.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use spool_actors::partition::{OffsetQuery, QueryOffset};

use crate::error_codes;
use crate::handler::Ctx;
use crate::misc::leader_epoch_error;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

pub(crate) async fn handle(
    ctx: &Ctx,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    // The leader epoch exists from v4; earlier versions must leave it at its default.
    let epoch_field = |epoch: i32| if version >= 4 { epoch } else { -1 };
    let snapshot = ctx.broker.catalog.snapshot();
    let mut topics = Vec::new();
    for t in req.topics {
        let mut parts = Vec::new();
        for p in t.partitions {
            let out = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1)
                .with_leader_epoch(-1);
            let Some(part) = snapshot.partition(&t.name, p.partition_index) else {
                parts.push(out.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            if let Some(code) = leader_epoch_error(p.current_leader_epoch, part.leader_epoch) {
                parts.push(out.with_error_code(code));
                continue;
            }
            let query = match p.timestamp {
                LATEST => OffsetQuery::Latest,
                EARLIEST | EARLIEST_LOCAL => OffsetQuery::Earliest,
                MAX_TIMESTAMP => OffsetQuery::MaxTimestamp,
                ts if ts >= 0 => OffsetQuery::Timestamp(ts),
                _ => {
                    parts.push(out.with_error_code(ResponseError::InvalidRequest.code()));
                    continue;
                }
            };
            let Some(addr) = &part.local else {
                parts.push(out.with_error_code(error_codes::unreachable()));
                continue;
            };
            let answer = match addr.send(QueryOffset { query }).await {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => {
                    parts.push(out.with_error_code(error_codes::code(&e)));
                    continue;
                }
                Err(_) => {
                    parts.push(out.with_error_code(error_codes::unreachable()));
                    continue;
                }
            };
            let found = answer.resolve(query);
            parts.push(match found {
                Some((offset, timestamp)) => out
                    .with_offset(offset)
                    .with_timestamp(timestamp)
                    .with_leader_epoch(epoch_field(part.leader_epoch)),
                None => out,
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
