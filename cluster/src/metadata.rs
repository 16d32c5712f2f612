//! The cluster's metadata as a plain, deterministic state machine: what every node agrees on.
//!
//! The Raft log carries [`Command`]s; every node applies the same commands in the same order
//! and so holds the same [`Metadata`]. Nothing here does I/O or looks at a clock: every decision
//! that needs one (placement, fencing, the time a node registered) is made by the controller
//! before it proposes the command, and travels inside it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A node of the cluster.
pub type NodeId = u64;

/// Where a node serves, as it registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    /// Host clients are told to connect to.
    pub host: String,
    pub kafka_port: u16,
    pub amqp_port: u16,
    pub http_port: u16,
    /// The inter-node listener (`host:port`).
    pub cluster_addr: String,
    /// Raised each time the node registers again (a restart), so a node's lives are told apart.
    pub incarnation: u64,
    /// Fenced by the controller (it stopped heartbeating): it leads nothing and is in no ISR.
    pub fenced: bool,
}

/// One partition's placement and leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// Replicas, preferred leader first.
    pub replicas: Vec<NodeId>,
    /// The leader (`None`: no replica can lead, the partition is offline).
    pub leader: Option<NodeId>,
    /// Raised at every leadership change; a replica refuses requests from an older epoch.
    pub leader_epoch: i32,
    /// In-sync replicas (the leader included).
    pub isr: Vec<NodeId>,
}

/// A topic as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    /// Kafka's topic id (16 bytes, as hex in JSON).
    pub id: [u8; 16],
    /// Topic-level config overrides (Kafka names).
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionRecord>,
}

/// A change to the metadata. Proposed by the controller only; applied by every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The first entry of a cluster: its id, and whatever a single-node data directory held
    /// before the cluster existed.
    Bootstrap {
        cluster_id: String,
        topics: Vec<TopicRecord>,
        definitions: Vec<(String, String, String)>,
    },
    /// A node registers (at every start): its listeners, unfenced, with a new incarnation.
    RegisterNode {
        node: NodeRecord,
    },
    /// The controller fences a node that stopped heartbeating: it leaves every ISR, and every
    /// partition it led gets a new leader from the ISR (or none) with a bumped epoch.
    FenceNode {
        id: NodeId,
    },
    /// A topic, placed by the controller.
    CreateTopic {
        topic: TopicRecord,
    },
    DeleteTopic {
        name: String,
    },
    /// Partitions added to a topic, placed by the controller.
    AddPartitions {
        name: String,
        partitions: Vec<PartitionRecord>,
    },
    /// Topic config overrides set (`Some`) or removed (`None`).
    AlterTopicConfigs {
        name: String,
        changes: Vec<(String, Option<String>)>,
    },
    /// A partition's leader and ISR, as the controller decided (the epoch is bumped when the
    /// leader changes).
    ChangePartition {
        topic: String,
        partition: i32,
        leader: Option<NodeId>,
        isr: Vec<NodeId>,
    },
    /// A queue, exchange or binding definition (`kind`, `name`, JSON) set or removed.
    PutDefinition {
        kind: String,
        name: String,
        json: String,
    },
    DeleteDefinition {
        kind: String,
        name: String,
    },
    /// A block of producer ids for a node to hand out.
    AllocateProducerIds {
        node: NodeId,
        count: u64,
    },
}

/// What applying a command answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    /// The command was refused; the metadata is unchanged.
    Refused(Refusal),
    /// The first id of an allocated producer-id block.
    ProducerIds {
        first: i64,
    },
    /// The incarnation a registration got.
    Registered {
        incarnation: u64,
    },
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("partition {partition} of topic '{topic}' does not exist")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("node {0} is not registered")]
    UnknownNode(NodeId),
    #[error("the cluster is bootstrapped already")]
    Bootstrapped,
}

/// The metadata every node holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Empty until the bootstrap entry is applied.
    pub cluster_id: String,
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    pub topics: BTreeMap<String, TopicRecord>,
    /// Queue, exchange and binding definitions (JSON) by kind, then name.
    pub definitions: BTreeMap<String, BTreeMap<String, String>>,
    /// The next producer id to hand out.
    pub next_producer_id: i64,
}

impl Metadata {
    /// Applies one command; a refused command changes nothing.
    pub fn apply(&mut self, command: Command) -> Outcome {
        match self.try_apply(command) {
            Ok(outcome) => outcome,
            Err(refusal) => Outcome::Refused(refusal),
        }
    }

    fn try_apply(&mut self, command: Command) -> Result<Outcome, Refusal> {
        match command {
            Command::Bootstrap {
                cluster_id,
                topics,
                definitions,
            } => {
                if !self.cluster_id.is_empty() {
                    return Err(Refusal::Bootstrapped);
                }
                self.cluster_id = cluster_id;
                for t in topics {
                    self.topics.insert(t.name.clone(), t);
                }
                for (kind, name, json) in definitions {
                    self.definitions.entry(kind).or_default().insert(name, json);
                }
            }
            Command::RegisterNode { mut node } => {
                let previous = self.nodes.get(&node.id).map_or(0, |n| n.incarnation);
                node.incarnation = previous + 1;
                node.fenced = false;
                let incarnation = node.incarnation;
                self.nodes.insert(node.id, node);
                return Ok(Outcome::Registered { incarnation });
            }
            Command::FenceNode { id } => {
                let node = self.nodes.get_mut(&id).ok_or(Refusal::UnknownNode(id))?;
                node.fenced = true;
                for topic in self.topics.values_mut() {
                    for p in &mut topic.partitions {
                        p.isr.retain(|r| *r != id);
                        if p.leader == Some(id) {
                            p.leader = p.isr.first().copied();
                            p.leader_epoch += 1;
                        }
                    }
                }
            }
            Command::CreateTopic { topic } => {
                if self.topics.contains_key(&topic.name) {
                    return Err(Refusal::TopicExists(topic.name));
                }
                self.topics.insert(topic.name.clone(), topic);
            }
            Command::DeleteTopic { name } => {
                self.topics
                    .remove(&name)
                    .ok_or(Refusal::UnknownTopic(name))?;
            }
            Command::AddPartitions { name, partitions } => {
                let topic = self
                    .topics
                    .get_mut(&name)
                    .ok_or(Refusal::UnknownTopic(name))?;
                topic.partitions.extend(partitions);
            }
            Command::AlterTopicConfigs { name, changes } => {
                let topic = self
                    .topics
                    .get_mut(&name)
                    .ok_or(Refusal::UnknownTopic(name))?;
                for (key, value) in changes {
                    match value {
                        Some(v) => topic.configs.insert(key, v),
                        None => topic.configs.remove(&key),
                    };
                }
            }
            Command::ChangePartition {
                topic,
                partition,
                leader,
                isr,
            } => {
                let unknown = || Refusal::UnknownPartition {
                    topic: topic.clone(),
                    partition,
                };
                let t = self.topics.get_mut(&topic).ok_or_else(unknown)?;
                let p = usize::try_from(partition)
                    .ok()
                    .and_then(|i| t.partitions.get_mut(i))
                    .ok_or_else(unknown)?;
                if p.leader != leader {
                    p.leader_epoch += 1;
                }
                p.leader = leader;
                p.isr = isr;
            }
            Command::PutDefinition { kind, name, json } => {
                self.definitions.entry(kind).or_default().insert(name, json);
            }
            Command::DeleteDefinition { kind, name } => {
                if let Some(of_kind) = self.definitions.get_mut(&kind) {
                    of_kind.remove(&name);
                }
            }
            Command::AllocateProducerIds { node, count } => {
                if !self.nodes.contains_key(&node) {
                    return Err(Refusal::UnknownNode(node));
                }
                let first = self.next_producer_id;
                self.next_producer_id += count as i64;
                return Ok(Outcome::ProducerIds { first });
            }
        }
        Ok(Outcome::Done)
    }

    /// Nodes that are registered and not fenced.
    pub fn live_nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values().filter(|n| !n.fenced)
    }
}

/// Places `count` new partitions with `replication` replicas each on the live nodes `nodes`:
/// replicas of a partition on distinct nodes, and leaders (first replicas) spread so that every
/// node ends up leading as evenly as possible, counting what `metadata` already has each lead.
/// `None` when there are fewer live nodes than replicas asked for.
pub fn place(
    metadata: &Metadata,
    nodes: &[NodeId],
    count: usize,
    replication: usize,
) -> Option<Vec<PartitionRecord>> {
    if replication == 0 || nodes.len() < replication {
        return None;
    }
    let mut nodes = nodes.to_vec();
    nodes.sort_unstable();
    let mut leads: BTreeMap<NodeId, usize> = nodes.iter().map(|n| (*n, 0)).collect();
    for p in metadata.topics.values().flat_map(|t| &t.partitions) {
        if let Some(n) = p.leader.and_then(|l| leads.get_mut(&l)) {
            *n += 1;
        }
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        // The node leading least leads next (lowest id on a tie); the followers are the nodes
        // after it in id order, wrapping, as Kafka's rack-unaware placement does.
        let (&leader, _) = leads
            .iter()
            .min_by_key(|(id, n)| (**n, **id))
            .expect("nodes is not empty");
        *leads.get_mut(&leader).expect("listed") += 1;
        let at = nodes.iter().position(|n| *n == leader).expect("listed");
        let replicas: Vec<NodeId> = (0..replication)
            .map(|i| nodes[(at + i) % nodes.len()])
            .collect();
        out.push(PartitionRecord {
            leader: Some(leader),
            leader_epoch: 0,
            isr: replicas.clone(),
            replicas,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId) -> NodeRecord {
        NodeRecord {
            id,
            host: "127.0.0.1".into(),
            kafka_port: 9092,
            amqp_port: 5672,
            http_port: 8080,
            cluster_addr: format!("127.0.0.1:{}", 9093 + id),
            incarnation: 0,
            fenced: false,
        }
    }

    fn topic(name: &str, partitions: Vec<PartitionRecord>) -> TopicRecord {
        TopicRecord {
            name: name.into(),
            id: [1; 16],
            configs: BTreeMap::new(),
            partitions,
        }
    }

    fn three_nodes() -> Metadata {
        let mut m = Metadata::default();
        for id in 1..=3 {
            assert!(matches!(
                m.apply(Command::RegisterNode { node: node(id) }),
                Outcome::Registered { incarnation: 1 }
            ));
        }
        m
    }

    #[test]
    fn placement_spreads_leaders_and_keeps_replicas_apart() {
        let mut m = three_nodes();
        let placed = place(&m, &[1, 2, 3], 6, 3).unwrap();
        for p in &placed {
            let mut distinct = p.replicas.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "{p:?}");
            assert_eq!(p.leader, Some(p.replicas[0]));
        }
        let leaders: Vec<NodeId> = placed.iter().map(|p| p.leader.unwrap()).collect();
        assert_eq!(leaders, [1, 2, 3, 1, 2, 3]);
        m.apply(Command::CreateTopic {
            topic: topic("a", placed),
        });
        // A later topic starts from what each node leads already.
        m.apply(Command::FenceNode { id: 1 });
        let counts = |m: &Metadata, n: NodeId| {
            m.topics["a"]
                .partitions
                .iter()
                .filter(|p| p.leader == Some(n))
                .count()
        };
        // Node 1's partitions went to the first replica after it, node 2.
        assert_eq!((counts(&m, 2), counts(&m, 3)), (4, 2));
        let next = place(&m, &[2, 3], 3, 2).unwrap();
        let leaders: Vec<NodeId> = next.iter().map(|p| p.leader.unwrap()).collect();
        assert_eq!(leaders, [3, 3, 2], "the node leading least leads first");
        assert!(
            place(&m, &[2, 3], 1, 3).is_none(),
            "more replicas than nodes"
        );
    }

    #[test]
    fn fencing_moves_leadership_within_the_isr_and_bumps_the_epoch() {
        let mut m = three_nodes();
        let placed = place(&m, &[1, 2, 3], 3, 2).unwrap();
        m.apply(Command::CreateTopic {
            topic: topic("t", placed),
        });
        assert_eq!(m.apply(Command::FenceNode { id: 1 }), Outcome::Done);
        for p in &m.topics["t"].partitions {
            assert!(!p.isr.contains(&1));
            assert_ne!(p.leader, Some(1));
        }
        let p0 = &m.topics["t"].partitions[0];
        assert_eq!(
            (p0.replicas.clone(), p0.leader, p0.leader_epoch),
            (vec![1, 2], Some(2), 1)
        );
        assert!(m.nodes[&1].fenced);
        // Registering again unfences, with a new incarnation; leadership stays where it went.
        assert_eq!(
            m.apply(Command::RegisterNode { node: node(1) }),
            Outcome::Registered { incarnation: 2 }
        );
        assert!(!m.nodes[&1].fenced);
        assert_eq!(m.topics["t"].partitions[0].leader, Some(2));
    }

    #[test]
    fn refused_commands_change_nothing() {
        let mut m = three_nodes();
        m.apply(Command::CreateTopic {
            topic: topic("t", place(&m, &[1], 1, 1).unwrap()),
        });
        let before = m.clone();
        let refusals = [
            Command::CreateTopic {
                topic: topic("t", vec![]),
            },
            Command::DeleteTopic { name: "x".into() },
            Command::FenceNode { id: 9 },
            Command::ChangePartition {
                topic: "t".into(),
                partition: 5,
                leader: None,
                isr: vec![],
            },
            Command::AllocateProducerIds { node: 9, count: 10 },
        ];
        for c in refusals {
            assert!(matches!(m.apply(c.clone()), Outcome::Refused(_)), "{c:?}");
        }
        assert_eq!(m, before);
    }

    #[test]
    fn producer_id_blocks_do_not_overlap() {
        let mut m = three_nodes();
        let a = m.apply(Command::AllocateProducerIds {
            node: 1,
            count: 1000,
        });
        let b = m.apply(Command::AllocateProducerIds {
            node: 2,
            count: 1000,
        });
        assert_eq!(
            (a, b),
            (
                Outcome::ProducerIds { first: 0 },
                Outcome::ProducerIds { first: 1000 }
            )
        );
    }

    #[test]
    fn bootstrap_happens_once() {
        let mut m = Metadata::default();
        let boot = Command::Bootstrap {
            cluster_id: "c1".into(),
            topics: vec![topic("old", vec![])],
            definitions: vec![("queue".into(), "q".into(), "{}".into())],
        };
        assert_eq!(m.apply(boot.clone()), Outcome::Done);
        assert_eq!(m.cluster_id, "c1");
        assert!(m.topics.contains_key("old"));
        assert_eq!(m.apply(boot), Outcome::Refused(Refusal::Bootstrapped));
        // The whole state goes through JSON (snapshots are JSON).
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Metadata>(&json).unwrap(), m);
    }
}
