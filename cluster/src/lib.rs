//! Spool's cluster metadata: a Raft quorum (openraft 0.9) over one replicated metadata state
//! machine, as Kafka's KRaft keeps its metadata. `metadata` is the state machine (plain, no
//! I/O), `store` keeps the Raft log, vote and snapshots in redb, `frame` and `network` are the
//! inter-node link, `quorum` is one node's member of the quorum.

pub mod frame;
pub mod liveness;
pub mod metadata;
pub mod network;
pub mod quorum;
pub mod store;

pub use metadata::{Command, Metadata, NodeId, Outcome};
pub use quorum::{Quorum, QuorumConfig};

use std::io::Cursor;

openraft::declare_raft_types!(
    /// The quorum's types: commands in, outcomes out, nodes named by their inter-node address.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

/// A running member of the metadata quorum.
pub type Raft = openraft::Raft<TypeConfig>;
