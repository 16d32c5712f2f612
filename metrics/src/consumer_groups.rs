//! Consumer group metrics under kafka_exporter's names and labels, so lag dashboards built for
//! kafka_exporter work on Spool unchanged.

use std::collections::BTreeMap;

use prometheus::Registry;

use crate::{gauge, MetricsError};

/// One group as the broker reports it (see the broker's `group_lag`).
#[derive(Debug, Clone)]
pub struct GroupSample {
    pub group: String,
    pub members: usize,
    pub partitions: Vec<PartitionSample>,
}

/// One partition a group has committed an offset for.
#[derive(Debug, Clone)]
pub struct PartitionSample {
    pub topic: String,
    pub partition: i32,
    pub current_offset: i64,
    pub lag: i64,
}

/// Registers kafka_exporter's consumer group families in `registry`, filled from `groups`.
/// Labels: `consumergroup`, `topic`, `partition`; cardinality is one series per group and
/// committed partition.
pub fn register_group_metrics(
    registry: &Registry,
    groups: &[GroupSample],
) -> Result<(), MetricsError> {
    let part = &["consumergroup", "topic", "partition"];
    let topic = &["consumergroup", "topic"];
    let current = gauge(
        registry,
        "kafka_consumergroup_current_offset",
        "Current Offset of a ConsumerGroup at Topic/Partition",
        part,
    )?;
    let current_sum = gauge(
        registry,
        "kafka_consumergroup_current_offset_sum",
        "Current Offset of a ConsumerGroup at Topic for all partitions",
        topic,
    )?;
    let lag = gauge(
        registry,
        "kafka_consumergroup_lag",
        "Current Approximate Lag of a ConsumerGroup at Topic/Partition",
        part,
    )?;
    let lag_sum = gauge(
        registry,
        "kafka_consumergroup_lag_sum",
        "Current Approximate Lag of a ConsumerGroup at Topic for all partitions",
        topic,
    )?;
    let members = gauge(
        registry,
        "kafka_consumergroup_members",
        "Amount of members in a consumer group",
        &["consumergroup"],
    )?;
    for g in groups {
        members
            .with_label_values(&[g.group.as_str()])
            .set(g.members as i64);
        let mut sums: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for p in &g.partitions {
            let partition = p.partition.to_string();
            let labels = [g.group.as_str(), p.topic.as_str(), partition.as_str()];
            current.with_label_values(&labels).set(p.current_offset);
            lag.with_label_values(&labels).set(p.lag);
            let s = sums.entry(p.topic.as_str()).or_default();
            s.0 += p.current_offset;
            s.1 += p.lag;
        }
        for (t, (offset, l)) in sums {
            current_sum
                .with_label_values(&[g.group.as_str(), t])
                .set(offset);
            lag_sum.with_label_values(&[g.group.as_str(), t]).set(l);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_kafka_exporter_families() {
        let registry = Registry::new();
        let groups = vec![GroupSample {
            group: "billing".into(),
            members: 2,
            partitions: vec![
                PartitionSample {
                    topic: "orders".into(),
                    partition: 0,
                    current_offset: 10,
                    lag: 5,
                },
                PartitionSample {
                    topic: "orders".into(),
                    partition: 1,
                    current_offset: 7,
                    lag: 1,
                },
            ],
        }];
        register_group_metrics(&registry, &groups).unwrap();
        let text = crate::encode(&registry).unwrap();
        for line in [
            r#"kafka_consumergroup_lag{consumergroup="billing",partition="0",topic="orders"} 5"#,
            r#"kafka_consumergroup_current_offset{consumergroup="billing",partition="1",topic="orders"} 7"#,
            r#"kafka_consumergroup_lag_sum{consumergroup="billing",topic="orders"} 6"#,
            r#"kafka_consumergroup_current_offset_sum{consumergroup="billing",topic="orders"} 17"#,
            r#"kafka_consumergroup_members{consumergroup="billing"} 2"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
