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
