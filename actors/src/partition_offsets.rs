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
}

impl Broker {
    /// The offsets of every local partition, sorted by topic and partition. Partitions whose
    /// actor does not answer (restarting) are left out.
    pub async fn partition_offsets(&self) -> Vec<PartitionOffsets> {
        let snapshot = self.catalog.snapshot();
        let mut out = Vec::new();
        for (name, topic) in &snapshot.topics {
            for (i, p) in topic.partitions.iter().enumerate() {
                let Some(addr) = &p.local else {
                    continue;
                };
                if let Ok(status) = addr.send(DescribeLog).await {
                    out.push(PartitionOffsets {
                        topic: name.to_string(),
                        partition: i as i32,
                        log_start_offset: status.log_start_offset,
                        high_watermark: status.high_watermark,
                    });
                }
            }
        }
        out
    }
}
