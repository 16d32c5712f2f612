//! Consumer lag per group and partition, computed by the broker from each group's committed
//! offsets and each partition's high watermark, so metrics (kafka_exporter's
//! `kafka_consumergroup_lag` and friends) need no client-side ListOffsets round.

use std::collections::{BTreeSet, HashMap};

use futures_util::future::join_all;

use crate::group::{DescribeGroup, GroupPhase, GroupType};
use crate::group_registry::ListGroupCoordinators;
use crate::partition::DescribeLog;
use crate::partition_offsets::PartitionOffsets;
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
    /// high watermark is asked for once however many groups read it, and all are asked at once.
    pub async fn group_lag(&self) -> Vec<GroupLag> {
        self.group_lag_given(None).await
    }

    /// Every live group's lag, with the partitions' offsets already known (a scrape has just
    /// asked every partition for them): no partition is asked again.
    pub async fn group_lag_with(&self, offsets: &[PartitionOffsets]) -> Vec<GroupLag> {
        self.group_lag_given(Some(offsets)).await
    }

    async fn group_lag_given(&self, known: Option<&[PartitionOffsets]>) -> Vec<GroupLag> {
        let Ok(coordinators) = self.groups.send(ListGroupCoordinators).await else {
            return Vec::new();
        };
        // Every group, then every partition any group has offsets for, each asked at once.
        let described = join_all(coordinators.iter().map(|a| a.send(DescribeGroup))).await;
        let groups: Vec<_> = described
            .into_iter()
            .filter_map(Result::ok)
            .filter(|d| d.phase != GroupPhase::Dead)
            .collect();
        let snapshot = self.catalog.snapshot();
        let partitions: BTreeSet<(&str, i32)> = groups
            .iter()
            .flat_map(|d| d.offsets.iter().map(|((t, p), _)| (t.as_str(), *p)))
            .collect();
        let ends: HashMap<(&str, i32), i64> = match known {
            Some(offsets) => offsets
                .iter()
                .map(|o| ((o.topic.as_str(), o.partition), o.high_watermark as i64))
                .filter(|(k, _)| partitions.contains(k))
                .collect(),
            None => {
                let asked = join_all(partitions.iter().map(|(topic, partition)| {
                    let actor = snapshot
                        .partition(topic, *partition)
                        .and_then(|p| p.local.clone());
                    async move {
                        let log = actor?.send(DescribeLog).await.ok()?;
                        Some(log.high_watermark as i64)
                    }
                }))
                .await;
                partitions
                    .iter()
                    .zip(asked)
                    .filter_map(|(k, end)| Some((*k, end?)))
                    .collect()
            }
        };
        let mut out: Vec<GroupLag> = groups
            .iter()
            .map(|d| GroupLag {
                group: d.group_id.clone(),
                group_type: d.group_type,
                state: d.state,
                members: d.member_count,
                partitions: d
                    .offsets
                    .iter()
                    .filter_map(|((topic, partition), committed)| {
                        let end = *ends.get(&(topic.as_str(), *partition))?;
                        Some(PartitionLag {
                            topic: topic.clone(),
                            partition: *partition,
                            committed: committed.offset,
                            end,
                            lag: (end - committed.offset).max(0),
                        })
                    })
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }
}
