//! Every partition's start and end offsets and size, published by the partition actors so that
//! readers (a metrics scrape, group lag) never message a partition: a scrape costs the write
//! path nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use spool_store::Log;

use crate::Broker;

/// One partition's offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub topic: String,
    pub partition: i32,
    pub log_start_offset: u64,
    /// The next offset to be written.
    pub high_watermark: u64,
    pub size_bytes: u64,
    pub segments: usize,
}

/// A partition's figures as its actor last published them. The actor stores them after every
/// change to its log (append, retention, delete-records); anyone holding the catalog reads them.
#[derive(Debug, Default)]
pub struct LogStats {
    log_start_offset: AtomicU64,
    high_watermark: AtomicU64,
    size_bytes: AtomicU64,
    segments: AtomicU64,
}

impl LogStats {
    /// Stores `log`'s current figures. Called only by the partition's own actor.
    pub(crate) fn publish(&self, log: &Log) {
        self.log_start_offset
            .store(log.log_start_offset(), Ordering::Relaxed);
        self.size_bytes.store(log.size_bytes(), Ordering::Relaxed);
        self.segments
            .store(log.segment_count() as u64, Ordering::Relaxed);
        // Last, with release: a reader that sees this end also sees the figures above.
        self.high_watermark
            .store(log.next_offset(), Ordering::Release);
    }

    /// The next offset to be written, as last published.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    fn offsets(&self, topic: &str, partition: i32) -> PartitionOffsets {
        let high_watermark = self.high_watermark();
        PartitionOffsets {
            topic: topic.to_string(),
            partition,
            log_start_offset: self.log_start_offset.load(Ordering::Relaxed),
            high_watermark,
            size_bytes: self.size_bytes.load(Ordering::Relaxed),
            segments: self.segments.load(Ordering::Relaxed) as usize,
        }
    }
}

impl Broker {
    /// The offsets and sizes of every local partition, sorted by topic and partition, read from
    /// what the partition actors published: no actor is asked.
    pub fn partition_offsets(&self) -> Vec<PartitionOffsets> {
        let snapshot = self.catalog.snapshot();
        snapshot
            .topics
            .iter()
            .flat_map(|(name, topic)| {
                topic
                    .partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.local.is_some())
                    .map(move |(i, p)| p.stats.offsets(name, i as i32))
            })
            .collect()
    }
}
