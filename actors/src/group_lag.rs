//! Consumer lag per group and partition, computed by the broker from each group's committed
//! offsets and each partition's high watermark, so metrics (kafka_exporter's
//! `kafka_consumergroup_lag` and friends) need no client-side ListOffsets round.

use std::collections::HashMap;

use crate::group::{DescribeGroup, GroupPhase, GroupType};
use crate::group_registry::ListGroupCoordinators;
use crate::partition::DescribeLog;
use crate::Broker;

/// One partition a group has committed an offset for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    /// The partition's high watermark (the next offset to be written).
    pub end: i64,
    /// `end - committed`, never below zero.
    pub lag: i64,
}

/// A group's members and lag.
#[derive(Debug, Clone)]
pub struct GroupLag {
    pub group: String,
    pub group_type: GroupType,
    pub state: &'static str,
    pub members: usize,
    /// Sorted by topic and partition.
    pub partitions: Vec<PartitionLag>,
}

impl Broker {
    /// Every live group's lag. Partitions that no longer exist are left out; each partition's
    /// high watermark is asked for once however many groups read it.
    pub async fn group_lag(&self) -> Vec<GroupLag> {
        let Ok(coordinators) = self.groups.send(ListGroupCoordinators).await else {
            return Vec::new();
        };
        let snapshot = self.catalog.snapshot();
        let mut ends: HashMap<(String, i32), Option<i64>> = HashMap::new();
        let mut out = Vec::with_capacity(coordinators.len());
        for addr in coordinators {
            let Ok(d) = addr.send(DescribeGroup).await else {
                continue;
            };
            if d.phase == GroupPhase::Dead {
                continue;
            }
            let mut partitions = Vec::with_capacity(d.offsets.len());
            for ((topic, partition), committed) in d.offsets {
                let key = (topic.clone(), partition);
                let end = match ends.get(&key) {
                    Some(e) => *e,
                    None => {
                        let actor = snapshot
                            .partition(&topic, partition)
                            .and_then(|p| p.local.clone());
                        let e = match actor {
                            Some(a) => a
                                .send(DescribeLog)
                                .await
                                .ok()
                                .map(|s| s.high_watermark as i64),
                            None => None,
                        };
                        ends.insert(key, e);
                        e
                    }
                };
                let Some(end) = end else { continue };
                partitions.push(PartitionLag {
                    topic,
                    partition,
                    committed: committed.offset,
                    end,
                    lag: (end - committed.offset).max(0),
                });
            }
            out.push(GroupLag {
                group: d.group_id,
                group_type: d.group_type,
                state: d.state,
                members: d.member_count,
                partitions,
            });
        }
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use spool_store::LogConfig;

    use crate::group::CommitOffsets;
    use crate::group_registry::FindGroup;
    use crate::offsets_journal::CommittedOffset;
    use crate::partition::{AppendBatches, ValidatedBatch};
    use crate::registry::CreateTopic;
    use crate::supervision_tests::test_batch;
    use crate::{Broker, BrokerConfig};

    #[actix_rt::test]
    async fn lag_is_the_distance_from_the_commit_to_the_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(BrokerConfig {
            node_id: 1,
            data_dir: dir.path().to_path_buf(),
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            default_partitions: 1,
            auto_create_topics: true,
            log_defaults: LogConfig::default(),
            partition_threads: 1,
            groups: Default::default(),
        })
        .unwrap();
        broker
            .registry
            .send(CreateTopic {
                name: "t".into(),
                partitions: Some(2),
                replication_factor: None,
                configs: BTreeMap::new(),
                validate_only: false,
            })
            .await
            .unwrap()
            .unwrap();
        for (p, records) in [(0, 5), (1, 3)] {
            let actor = broker
                .catalog
                .snapshot()
                .partition("t", p)
                .unwrap()
                .local
                .clone()
                .unwrap();
            actor
                .send(AppendBatches {
                    batches: vec![ValidatedBatch::new(test_batch(records).freeze()).unwrap()],
                })
                .await
                .unwrap()
                .unwrap();
        }
        let group = broker
            .groups
            .send(FindGroup {
                group_id: "g".into(),
                create: true,
            })
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let commit = |p: i32, offset: i64| CommitOffsets {
            member_id: String::new(),
            instance_id: None,
            generation: -1,
            offsets: vec![(
                ("t".to_string(), p),
                CommittedOffset {
                    offset,
                    leader_epoch: -1,
                    metadata: String::new(),
                    commit_ms: 0,
                },
            )],
        };
        group.send(commit(0, 2)).await.unwrap().unwrap();
        group.send(commit(1, 3)).await.unwrap().unwrap();

        let lag = broker.group_lag().await;
        assert_eq!(lag.len(), 1);
        let g = &lag[0];
        assert_eq!((g.group.as_str(), g.state, g.members), ("g", "Empty", 0));
        let per_partition: Vec<(i32, i64, i64, i64)> = g
            .partitions
            .iter()
            .map(|p| (p.partition, p.committed, p.end, p.lag))
            .collect();
        assert_eq!(per_partition, vec![(0, 2, 5, 3), (1, 3, 3, 0)]);
    }
}
