//! Cluster metadata in one place: nodes, topics, partitions and their leaders, as immutable
//! snapshots front ends read without messaging anyone. Two writers, each of its own fields, each
//! through `Catalog::update` (an atomic read-modify-write): the topic registry writes topics and
//! partitions; the cluster projection (`cluster_member::project_cluster`) writes the cluster id,
//! the controller and the nodes from the metadata quorum.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use actix::Addr;
use spool_store::LogConfig;

use crate::partition::PartitionActor;
use crate::partition_offsets::LogStats;

/// A broker node as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub node_id: i32,
    pub host: String,
    pub port: u16,
}

/// One partition: its leader and epoch, and the local replica's actor when this node has one.
#[derive(Clone)]
pub struct PartitionInfo {
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub local: Option<Addr<PartitionActor>>,
    /// The arbiter (thread) the local replica's actor runs on, so that an actor which talks to
    /// it for every message (a queue over it) can run beside it, with no thread hop between.
    pub arbiter: Option<actix::dev::ArbiterHandle>,
    /// Which incarnation of the local replica's actor `local` is (a restart makes a new one).
    pub incarnation: u64,
    /// The local replica's offsets and size, as its actor last published them.
    pub stats: Arc<LogStats>,
}

/// A topic with its id, config and partitions.
#[derive(Clone)]
pub struct TopicInfo {
    pub name: Arc<str>,
    pub id: [u8; 16],
    pub config: LogConfig,
    pub overrides: BTreeMap<String, String>,
    pub partitions: Vec<PartitionInfo>,
}

/// An immutable picture of the cluster at one moment.
#[derive(Clone)]
pub struct CatalogSnapshot {
    pub cluster_id: String,
    pub controller_id: i32,
    pub nodes: Vec<NodeInfo>,
    pub topics: BTreeMap<Arc<str>, Arc<TopicInfo>>,
}

impl CatalogSnapshot {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicInfo>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<&Arc<TopicInfo>> {
        self.topics.values().find(|t| &t.id == id)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionInfo> {
        self.topics
            .get(topic)?
            .partitions
            .get(usize::try_from(partition).ok()?)
    }

    /// The partition of `topic` that publish number `turn` of a keyless publisher goes to:
    /// turns go round the partitions, which is how a queue of many partitions spreads its
    /// publishes.
    pub fn spread(&self, topic: &str, turn: u64) -> Option<(i32, &PartitionInfo)> {
        let partitions = &self.topics.get(topic)?.partitions;
        let n = partitions.len() as u64;
        if n == 0 {
            return None;
        }
        let i = (turn % n) as usize;
        Some((i as i32, &partitions[i]))
    }
}

/// Shared handle to the current snapshot.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<RwLock<Arc<CatalogSnapshot>>>,
}

impl Catalog {
    pub(crate) fn new(snapshot: CatalogSnapshot) -> Catalog {
        Catalog {
            inner: Arc::new(RwLock::new(Arc::new(snapshot))),
        }
    }

    /// The current snapshot; cheap (one reference count).
    pub fn snapshot(&self) -> Arc<CatalogSnapshot> {
        self.inner.read().expect("catalog lock").clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut CatalogSnapshot)) {
        let mut guard = self.inner.write().expect("catalog lock");
        let mut next = (**guard).clone();
        f(&mut next);
        *guard = Arc::new(next);
    }
}
