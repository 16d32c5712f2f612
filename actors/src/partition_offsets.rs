//! Every partition's start and end offsets, for metrics (kafka_exporter's topic families).

use crate::partition::DescribeLog;
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

impl Broker {
    /// The offsets and sizes of every local partition, sorted by topic and partition.
    /// Partitions whose actor does not answer (restarting) are left out.
    pub async fn partition_offsets(&self) -> Vec<PartitionOffsets> {
        let snapshot = self.catalog.snapshot();
        let asks = snapshot.topics.iter().flat_map(|(name, topic)| {
            topic
                .partitions
                .iter()
                .enumerate()
                .filter_map(move |(i, p)| {
                    let addr = p.local.clone()?;
                    Some(async move {
                        let status = addr.send(DescribeLog).await.ok()?;
                        Some(PartitionOffsets {
                            topic: name.to_string(),
                            partition: i as i32,
                            log_start_offset: status.log_start_offset,
                            high_watermark: status.high_watermark,
                            size_bytes: status.size_bytes,
                            segments: status.segments,
                        })
                    })
                })
        });
        // Asked all at once: the partitions answer in parallel on their arbiters.
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}
