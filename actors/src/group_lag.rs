//! Consumer lag per group and partition, computed by the broker from each group's committed
//! offsets and each partition's high watermark, so metrics (kafka_exporter's
//! `kafka_consumergroup_lag` and friends) need no client-side ListOffsets round.

use futures_util::future::join_all;

use crate::group::{DescribeGroup, GroupPhase, GroupType};
use crate::group_registry::ListGroupCoordinators;
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
    /// Every live group's lag. Partitions that no longer exist are left out. The partitions'
    /// ends are the ones their actors published: only the groups are asked, all at once.
    pub async fn group_lag(&self) -> Vec<GroupLag> {
        let Ok(coordinators) = self.groups.send(ListGroupCoordinators).await else {
            return Vec::new();
        };
        let described = join_all(coordinators.iter().map(|a| a.send(DescribeGroup))).await;
        let groups: Vec<_> = described
            .into_iter()
            .filter_map(Result::ok)
            .filter(|d| d.phase != GroupPhase::Dead)
            .collect();
        let snapshot = self.catalog.snapshot();
        let end_of = |topic: &str, partition: i32| {
            let p = snapshot.partition(topic, partition)?;
            p.local.as_ref()?;
            Some(p.stats.high_watermark() as i64)
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
                        let end = end_of(topic, *partition)?;
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
