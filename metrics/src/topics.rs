//! Topic metrics under kafka_exporter's names and labels (`topic`, `partition`), so dashboards
//! built for kafka_exporter show Spool's topics unchanged. One series per partition.

use std::collections::BTreeMap;

use prometheus::Registry;

use crate::{gauge, MetricsError};

/// One partition's offsets, as the broker reports them.
#[derive(Debug, Clone)]
pub struct TopicPartitionSample {
    pub topic: String,
    pub partition: i32,
    /// The next offset to be written (kafka_exporter's "current offset").
    pub current_offset: i64,
    /// The log start offset.
    pub oldest_offset: i64,
    /// Bytes of the partition's segment files.
    pub size_bytes: u64,
    /// Segment files of the partition.
    pub segments: usize,
}

/// Registers `kafka_brokers`, `kafka_topic_partitions`,
/// `kafka_topic_partition_current_offset` and `kafka_topic_partition_oldest_offset`, and Spool's
/// own `spool_log_size_bytes` and `spool_log_segments` per partition.
pub fn register_topic_metrics(
    registry: &Registry,
    brokers: usize,
    partitions: &[TopicPartitionSample],
) -> Result<(), MetricsError> {
    let no_labels: [&str; 0] = [];
    gauge(
        registry,
        "kafka_brokers",
        "Number of Brokers in the Kafka Cluster.",
        &[],
    )?
    .with_label_values(&no_labels)
    .set(brokers as i64);
    let count = gauge(
        registry,
        "kafka_topic_partitions",
        "Number of partitions for this Topic",
        &["topic"],
    )?;
    let current = gauge(
        registry,
        "kafka_topic_partition_current_offset",
        "Current Offset of a Broker at Topic/Partition",
        &["topic", "partition"],
    )?;
    let oldest = gauge(
        registry,
        "kafka_topic_partition_oldest_offset",
        "Oldest Offset of a Broker at Topic/Partition",
        &["topic", "partition"],
    )?;
    let size = gauge(
        registry,
        "spool_log_size_bytes",
        "Bytes of a partition's segment files",
        &["topic", "partition"],
    )?;
    let segments = gauge(
        registry,
        "spool_log_segments",
        "Segment files of a partition",
        &["topic", "partition"],
    )?;
    let mut per_topic: BTreeMap<&str, i64> = BTreeMap::new();
    for p in partitions {
        let partition = p.partition.to_string();
        let labels = [p.topic.as_str(), partition.as_str()];
        current.with_label_values(&labels).set(p.current_offset);
        oldest.with_label_values(&labels).set(p.oldest_offset);
        size.with_label_values(&labels).set(p.size_bytes as i64);
        segments.with_label_values(&labels).set(p.segments as i64);
        *per_topic.entry(p.topic.as_str()).or_default() += 1;
    }
    for (topic, n) in per_topic {
        count.with_label_values(&[topic]).set(n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_kafka_exporter_topic_families() {
        let registry = Registry::new();
        let sample = |partition, current_offset, oldest_offset| TopicPartitionSample {
            topic: "orders".into(),
            partition,
            current_offset,
            oldest_offset,
            size_bytes: 100,
            segments: 1,
        };
        register_topic_metrics(&registry, 1, &[sample(0, 42, 0), sample(1, 7, 3)]).unwrap();
        let text = crate::encode(&registry).unwrap();
        for line in [
            "kafka_brokers 1",
            r#"kafka_topic_partitions{topic="orders"} 2"#,
            r#"kafka_topic_partition_current_offset{partition="0",topic="orders"} 42"#,
            r#"kafka_topic_partition_oldest_offset{partition="1",topic="orders"} 3"#,
            r#"spool_log_size_bytes{partition="1",topic="orders"} 100"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
