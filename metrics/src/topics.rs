//! Topic metrics under kafka_exporter's names and labels (`topic`, `partition`), so dashboards
//! built for kafka_exporter show Spool's topics unchanged. One series per partition.

use std::collections::BTreeMap;

use crate::text::{Family, Gauge};

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

/// Writes `kafka_brokers`, `kafka_topic_partitions`, `kafka_topic_partition_current_offset` and
/// `kafka_topic_partition_oldest_offset`, and Spool's own `spool_log_size_bytes` and
/// `spool_log_segments` per partition.
pub(crate) fn write_topic_metrics(
    out: &mut String,
    brokers: usize,
    partitions: &[TopicPartitionSample],
) {
    Gauge::new(
        out,
        "kafka_brokers",
        "Number of Brokers in the Kafka Cluster.",
    )
    .sample(&[], brokers as i64);
    let mut count = Gauge::new(
        out,
        "kafka_topic_partitions",
        "Number of partitions for this Topic",
    );
    let mut per_topic: BTreeMap<&str, i64> = BTreeMap::new();
    for p in partitions {
        *per_topic.entry(p.topic.as_str()).or_default() += 1;
    }
    for (topic, n) in per_topic {
        count.sample(&[("topic", &topic)], n);
    }
    let per_partition: [Family<TopicPartitionSample>; 4] = [
        (
            "kafka_topic_partition_current_offset",
            "Current Offset of a Broker at Topic/Partition",
            |p| p.current_offset,
        ),
        (
            "kafka_topic_partition_oldest_offset",
            "Oldest Offset of a Broker at Topic/Partition",
            |p| p.oldest_offset,
        ),
        (
            "spool_log_size_bytes",
            "Bytes of a partition's segment files",
            |p| p.size_bytes as i64,
        ),
        ("spool_log_segments", "Segment files of a partition", |p| {
            p.segments as i64
        }),
    ];
    for (name, help, value) in per_partition {
        let mut g = Gauge::new(out, name, help);
        for p in partitions {
            g.sample(
                &[("partition", &p.partition), ("topic", &p.topic)],
                value(p),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_kafka_exporter_topic_families() {
        let sample = |partition, current_offset, oldest_offset| TopicPartitionSample {
            topic: "orders".into(),
            partition,
            current_offset,
            oldest_offset,
            size_bytes: 100,
            segments: 1,
        };
        let mut text = String::new();
        write_topic_metrics(&mut text, 1, &[sample(0, 42, 0), sample(1, 7, 3)]);
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
