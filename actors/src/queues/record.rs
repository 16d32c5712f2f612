//! Records as queues store them: Kafka's record model (key, value, headers, timestamp) in the
//! broker's batch format, so a queue's topic can be read and fed by Kafka clients. Queues read
//! two headers of their own: [`PRIORITY_HEADER`] and [`EXPIRES_HEADER`].

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::partition::ValidatedBatch;
use crate::BrokerError;

/// Delivery priority of a record (decimal, 0-255; higher first). Absent: 0.
pub const PRIORITY_HEADER: &str = "spool.priority";
/// When a record expires (ms since the epoch, decimal): it is then archived, not delivered.
pub const EXPIRES_HEADER: &str = "spool.expires-at-ms";
/// The exchange that routed a record (AMQP's `exchange` of a delivery).
pub const EXCHANGE_HEADER: &str = "amqp.exchange";
/// The message's own expiration, which dead-lettering removes.
pub const EXPIRATION_HEADER: &str = "amqp.expiration";
/// A record's dead-letter history, newest first, as JSON: `[{"queue", "reason", "count",
/// "time" (s), "exchange", "routing-keys": [..]}]`. Front ends present it as AMQP's `x-death`.
pub const DEATHS_HEADER: &str = "spool.x-death";

/// One record, as published to a queue or read back from its log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    pub timestamp_ms: i64,
}

impl QueueRecord {
    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_ref())
    }

    fn number_header<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        std::str::from_utf8(self.header(name)?).ok()?.parse().ok()
    }

    /// Delivery priority ([`PRIORITY_HEADER`]), 0 when absent or unreadable.
    pub fn priority(&self) -> u8 {
        self.number_header(PRIORITY_HEADER).unwrap_or(0)
    }

    /// Expiry time ([`EXPIRES_HEADER`]), if any.
    pub fn expires_at_ms(&self) -> Option<i64> {
        self.number_header(EXPIRES_HEADER)
    }
}

impl QueueRecord {
    /// Headers with text values other than the broker's own (`amqp.*`, `spool.*`), as
    /// arguments for headers-exchange matching.
    pub fn text_headers(&self) -> crate::queues::routing::Arguments {
        self.headers
            .iter()
            .filter(|(k, _)| !k.starts_with("amqp.") && !k.starts_with("spool."))
            .filter_map(|(k, v)| {
                let text = std::str::from_utf8(v.as_ref()?).ok()?;
                Some((k.clone(), serde_json::Value::String(text.to_string())))
            })
            .collect()
    }

    fn set_header(&mut self, name: &str, value: Option<Bytes>) {
        self.headers.retain(|(k, _)| k != name);
        if let Some(v) = value {
            self.headers.push((name.to_string(), Some(v)));
        }
    }

    /// A copy that expires at `at_ms` (ms since the epoch): what a queue with `x-message-ttl`
    /// gets when the broker itself publishes to it (dead letters).
    pub fn with_expiry(&self, at_ms: i64) -> QueueRecord {
        let mut out = self.clone();
        out.set_header(EXPIRES_HEADER, Some(Bytes::from(at_ms.to_string())));
        out
    }
}

/// The copy of `record` that a queue dead-letters: its history gains this death (counted per
/// queue and reason, newest first, as RabbitMQ's `x-death`), it is routed by the dead-letter
/// exchange (with the dead-letter routing key if one is set), and it loses its expiration:
/// where it lands, only that queue's own `x-message-ttl` applies.
pub fn dead_letter(
    record: &QueueRecord,
    queue: &str,
    reason: &str,
    dlx: &crate::queues::queue::DeadLetter,
    now_ms: i64,
) -> QueueRecord {
    use serde_json::{json, Value};
    let mut out = record.clone();
    let routing_key = record
        .key
        .as_ref()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default();
    let exchange = record
        .header(EXCHANGE_HEADER)
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .unwrap_or_default();
    let mut deaths: Vec<Value> = record
        .header(DEATHS_HEADER)
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default();
    let same = |d: &Value| d["queue"] == queue && d["reason"] == reason;
    let mut entry = match deaths.iter().position(same) {
        Some(i) => deaths.remove(i),
        None => json!({"queue": queue, "reason": reason, "count": 0, "exchange": exchange,
                        "routing-keys": [routing_key]}),
    };
    entry["count"] = json!(entry["count"].as_i64().unwrap_or(0) + 1);
    entry["time"] = json!(now_ms / 1000);
    deaths.insert(0, entry);
    out.set_header(
        DEATHS_HEADER,
        Some(Bytes::from(Value::Array(deaths).to_string())),
    );
    out.set_header(EXCHANGE_HEADER, Some(Bytes::from(dlx.exchange.clone())));
    out.set_header(EXPIRES_HEADER, None);
    out.set_header(EXPIRATION_HEADER, None);
    if let Some(k) = &dlx.routing_key {
        out.key = Some(Bytes::from(k.clone()));
    }
    out
}

/// A record read from a queue's log, with its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub record: QueueRecord,
}

fn codec_error(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::CorruptBatch(e.to_string())
}

/// Encodes records as one uncompressed batch, ready to append.
pub fn encode(records: &[QueueRecord]) -> Result<ValidatedBatch, BrokerError> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // One batch: the encoder splits where offset - sequence changes.
            sequence: i as i32,
            timestamp: r.timestamp_ms,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                .collect(),
            delete_horizon: false,
        })
        .collect();
    // Room for the whole batch up front: growing the buffer copies what is in it.
    let size: usize = records
        .iter()
        .map(|r| {
            let fields =
                r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len());
            let headers: usize = r
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()) + 10)
                .sum();
            fields + headers + 32
        })
        .sum();
    let mut buf = BytesMut::with_capacity(61 + size);
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(codec_error)?;
    // The encoder writes a producer-less batch with base sequence 0; a sequence only means
    // something with a producer id, so mark it absent as Kafka's producers do.
    buf[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    let crc = crc32c::crc32c(&buf[21..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    ValidatedBatch::encoded_here(buf.freeze())
}

/// The offset after the last batch of a read (its base offset plus its span), whatever the
/// batches hold (control batches included); `None` for no batch.
pub fn span_end(bytes: &[u8]) -> Option<u64> {
    let batches = crate::record_batch::split(bytes).ok()?;
    let last = batches.last()?;
    let base = i64::from_be_bytes(last.get(..8)?.try_into().ok()?);
    let header = crate::record_batch::describe(last)?;
    Some((base + header.info.last_offset_delta as i64 + 1).max(0) as u64)
}

/// Decodes the batches a read returned (any codec), skipping control records. Records are
/// returned in offset order.
pub fn decode(bytes: Bytes) -> Result<Vec<StoredRecord>, BrokerError> {
    let mut buf = bytes;
    let sets = RecordBatchDecoder::decode_all(&mut buf).map_err(codec_error)?;
    Ok(sets
        .into_iter()
        .flat_map(|set| set.records)
        .filter(|r| !r.control)
        .map(|r| StoredRecord {
            offset: r.offset as u64,
            record: QueueRecord {
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                timestamp_ms: r.timestamp,
            },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_a_batch() {
        let records = vec![
            QueueRecord {
                key: Some(Bytes::from_static(b"rk")),
                value: Some(Bytes::from_static(b"body")),
                headers: vec![
                    (PRIORITY_HEADER.into(), Some(Bytes::from_static(b"7"))),
                    ("empty".into(), None),
                ],
                timestamp_ms: 1_700_000_000_000,
            },
            QueueRecord {
                value: Some(Bytes::from_static(b"second")),
                timestamp_ms: 1_700_000_000_001,
                ..QueueRecord::default()
            },
        ];
        let batch = encode(&records).unwrap();
        assert_eq!(batch.header().records_count, 2);
        let back = decode(batch.bytes().clone()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!((back[0].offset, back[1].offset), (0, 1));
        assert_eq!(back[0].record, records[0]);
        assert_eq!(back[0].record.priority(), 7);
        assert_eq!(back[1].record.priority(), 0);
        assert_eq!(back[1].record.expires_at_ms(), None);
        assert_eq!(span_end(batch.bytes()), Some(2));
        assert_eq!(span_end(&[]), None);
    }
}
