//! One partition of a queue's topic as the queue reads it: the partition's delivery state, the
//! records read ahead of the consumers, and where reading stands. A queue of one partition has
//! one of these; `x-partitions` gives it more, and its actor serves them all.
//!
//! Plain data and decoding, no actor and no I/O: the queue actor does the reading.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::warn;

use super::delivery::{DeliveryState, Durable};
use super::record::{self, QueueRecord};
use crate::supervision::Backoff;

/// What a queue keeps of one partition of its topic.
#[derive(Default)]
pub(super) struct QueuePartition {
    pub state: DeliveryState,
    /// Records read and not finished, shared with the deliveries made of them.
    pub records: HashMap<u64, Arc<QueueRecord>>,
    /// Expiry times (ms) of the records in `records` that have one (per-message TTL or
    /// `x-message-ttl`), parsed once when read.
    pub expiries: HashMap<u64, i64>,
    /// A read of the log is on its way.
    pub reading: bool,
    /// Waiting for the log to grow.
    pub waiting: bool,
    /// The high watermark of the last read.
    pub log_end: u64,
    /// The log has been read at least once (until then `log_end` is unknown).
    pub read_once: bool,
    /// Waits between attempts while the partition's actor is not there (restarting).
    pub backoff: Backoff,
    /// A retry after a failed attempt is scheduled.
    pub retry_pending: bool,
}

/// What a read added to a partition.
pub(super) struct TakenRead {
    /// Records added to the read-ahead.
    pub records: u64,
    /// Records among them whose time had already passed.
    pub expired: Vec<u64>,
}

impl QueuePartition {
    /// A partition resuming from its durable state; `hold_back` after a restart of the
    /// queue's actor alone (see [`DeliveryState::recover_held_back`]).
    pub fn recover(durable: Durable, hold_back: bool) -> QueuePartition {
        QueuePartition {
            state: if hold_back {
                DeliveryState::recover_held_back(durable)
            } else {
                DeliveryState::recover(durable)
            },
            ..QueuePartition::default()
        }
    }

    /// Records in the log not read yet.
    pub fn unread(&self) -> u64 {
        self.log_end.saturating_sub(self.state.read_to())
    }

    /// Whether the record at `offset` has expired by `now` (ms).
    pub fn expired(&self, offset: u64, now: i64) -> bool {
        self.expiries.get(&offset).is_some_and(|at| *at <= now)
    }

    /// The next record this partition would deliver: its priority, publish time and offset.
    pub fn head(&self) -> Option<(u8, i64, u64)> {
        let (priority, offset) = self.state.next_available()?;
        let at = self
            .records
            .get(&offset)
            .map_or(i64::MAX, |r| r.timestamp_ms);
        Some((priority, at, offset))
    }

    /// Takes what a read from `from` returned; `None` when it does not decode.
    pub fn take_read(
        &mut self,
        from: u64,
        bytes: bytes::Bytes,
        high_watermark: u64,
        log_start: u64,
        max_priority: Option<u8>,
        now: i64,
    ) -> Option<TakenRead> {
        self.log_end = high_watermark;
        self.read_once = true;
        let from = from.max(log_start);
        // Past every batch read, records or not (control batches), so reading moves on.
        let through = record::span_end(&bytes).unwrap_or(from).max(from);
        let stored = match record::decode(bytes) {
            Ok(s) => s,
            Err(e) => {
                warn!(offset = from, error = %e, "undecodable batch in a queue's log");
                return None;
            }
        };
        let mut ranked = Vec::with_capacity(stored.len());
        let mut kept = Vec::with_capacity(stored.len());
        for s in stored.into_iter().filter(|s| s.offset >= from) {
            let priority = max_priority.map_or(0, |max| s.record.priority().min(max));
            ranked.push((s.offset, priority));
            kept.push(s);
        }
        self.state.add_read(&ranked, through);
        let mut expired = Vec::new();
        let mut records = 0;
        // Records finished before a restart are read again but not kept.
        for s in kept.into_iter().filter(|s| self.state.is_pending(s.offset)) {
            if let Some(at) = s.record.expires_at_ms() {
                self.expiries.insert(s.offset, at);
                if at <= now {
                    expired.push(s.offset);
                }
            }
            self.records.insert(s.offset, Arc::new(s.record));
            records += 1;
        }
        Some(TakenRead { records, expired })
    }
}
