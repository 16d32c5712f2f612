//! Consumer group metrics under kafka_exporter's names and labels, so lag dashboards built for
//! kafka_exporter work on Spool unchanged.

use std::collections::BTreeMap;

use crate::text::{Family, Gauge};

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

/// Per topic of a group: (sum of committed offsets, sum of lag).
type TopicSums<'a> = BTreeMap<&'a str, (i64, i64)>;

/// Writes kafka_exporter's consumer group families, filled from `groups`. Labels:
/// `consumergroup`, `topic`, `partition`; cardinality is one series per group and committed
/// partition.
pub(crate) fn write_group_metrics(out: &mut String, groups: &[GroupSample]) {
    let per_partition: [Family<PartitionSample>; 2] = [
        (
            "kafka_consumergroup_current_offset",
            "Current Offset of a ConsumerGroup at Topic/Partition",
            |p| p.current_offset,
        ),
        (
            "kafka_consumergroup_lag",
            "Current Approximate Lag of a ConsumerGroup at Topic/Partition",
            |p| p.lag,
        ),
    ];
    for (name, help, value) in per_partition {
        let mut g = Gauge::new(out, name, help);
        for group in groups {
            for p in &group.partitions {
                g.sample(
                    &[
                        ("consumergroup", &group.group),
                        ("partition", &p.partition),
                        ("topic", &p.topic),
                    ],
                    value(p),
                );
            }
        }
    }
    let sums: Vec<(&str, TopicSums)> = groups
        .iter()
        .map(|g| {
            let mut sums: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
            for p in &g.partitions {
                let s = sums.entry(p.topic.as_str()).or_default();
                s.0 += p.current_offset;
                s.1 += p.lag;
            }
            (g.group.as_str(), sums)
        })
        .collect();
    let per_topic: [Family<(i64, i64)>; 2] = [
        (
            "kafka_consumergroup_current_offset_sum",
            "Current Offset of a ConsumerGroup at Topic for all partitions",
            |s| s.0,
        ),
        (
            "kafka_consumergroup_lag_sum",
            "Current Approximate Lag of a ConsumerGroup at Topic for all partitions",
            |s| s.1,
        ),
    ];
    for (name, help, value) in per_topic {
        let mut g = Gauge::new(out, name, help);
        for (group, topics) in &sums {
            for (topic, s) in topics {
                g.sample(&[("consumergroup", group), ("topic", topic)], value(s));
            }
        }
    }
    let mut members = Gauge::new(
        out,
        "kafka_consumergroup_members",
        "Amount of members in a consumer group",
    );
    for g in groups {
        members.sample(&[("consumergroup", &g.group)], g.members as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_kafka_exporter_families() {
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
        let mut text = String::new();
        write_group_metrics(&mut text, &groups);
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
