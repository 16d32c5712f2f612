//! One node's member of the metadata quorum: its Raft instance, its inter-node listener, and
//! the way every part of the node changes the metadata ([`Quorum::propose`], forwarded to the
//! controller when this node is not it) and learns it ([`Quorum::metadata`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};
use tracing::{info, warn};

use crate::frame::{Body, ProposeError};
use crate::metadata::{Command, NodeId, Outcome};
use crate::network::{serve, ClusterId, LinkConfig, Network, Peer, Responder};
use crate::store::{open_database, Applied, LogStore, StateMachineStore};
use crate::Raft;

/// How a node joins the quorum.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    pub node_id: NodeId,
    /// Where `cluster.redb` lives (the node's data directory).
    pub data_dir: PathBuf,
    /// The inter-node listener's address.
    pub listen: SocketAddr,
    /// The voters and their inter-node addresses (`--controller-voters`); a node not among them
    /// is a learner, added by the controller.
    pub voters: Vec<(NodeId, String)>,
    pub max_frame_bytes: usize,
    /// Raft's heartbeat; elections time out after 5 to 10 of them.
    pub heartbeat: Duration,
    /// How long a proposal may wait for the quorum before it is refused as unavailable.
    pub propose_timeout: Duration,
}

/// Why the quorum could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the quorum's store {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("cannot read the quorum's store: {0}")]
    Storage(#[from] openraft::StorageError<NodeId>),
    #[error("cannot listen for other nodes on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid quorum settings: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("the Raft instance failed: {0}")]
    Raft(String),
}

/// A running member of the quorum.
pub struct Quorum {
    raft: Raft,
    state: StateMachineStore,
    link: LinkConfig,
    config: QuorumConfig,
    /// Connections to controllers, for forwarded proposals.
    forwards: Mutex<HashMap<NodeId, Peer>>,
    server: tokio::task::JoinHandle<()>,
}

/// Answers the link's requests with this node's Raft instance.
#[derive(Clone)]
struct RaftResponder {
    raft: Raft,
    propose_timeout: Duration,
}

impl Responder for RaftResponder {
    async fn respond(&self, _from: NodeId, body: Body) -> Body {
        match body {
            Body::Vote(rpc) => {
                Body::VoteReply(self.raft.vote(rpc).await.map_err(|e| e.to_string()))
            }
            Body::Append(rpc) => Body::AppendReply(
                self.raft
                    .append_entries(rpc)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            Body::Snapshot(rpc) => Body::SnapshotReply(
                self.raft
                    .install_snapshot(rpc)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            // Forwarded proposals go no further: a node that is not the controller says who is.
            Body::Propose(command) => {
                let deadline = Instant::now() + self.propose_timeout;
                Body::ProposeReply(write_local(&self.raft, command, deadline).await)
            }
            other => Body::Refused(format!("not a request: {other:?}")),
        }
    }
}

/// Commits `command` through this node's Raft instance, when it is the controller, by
/// `deadline` (a controller that has lost its quorum waits for it no longer).
async fn write_local(
    raft: &Raft,
    command: Command,
    deadline: Instant,
) -> Result<Outcome, ProposeError> {
    let write = raft.client_write(command);
    match tokio::time::timeout_at(deadline.into(), write).await {
        Ok(Ok(r)) => Ok(r.data),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(ProposeError::NotController {
                leader: f.leader_id,
            })
        }
        Ok(Err(e)) => Err(ProposeError::Unavailable(e.to_string())),
        Err(_) => Err(ProposeError::Unavailable(
            "no quorum committed the change in time".into(),
        )),
    }
}

impl Quorum {
    /// Opens the node's quorum store, starts its Raft instance and listener, and (on a voter of
    /// a quorum never formed) forms the quorum of `voters`.
    pub async fn start(config: QuorumConfig) -> Result<Arc<Quorum>, StartError> {
        let path = config.data_dir.join("cluster.redb");
        let db = open_database(&path).map_err(|source| StartError::Store {
            path: path.clone(),
            source,
        })?;
        let state = StateMachineStore::open(db.clone())?;
        let cluster_id = ClusterId::default();
        cluster_id.set(&state.subscribe().borrow().metadata.cluster_id);
        let link = LinkConfig {
            node_id: config.node_id,
            cluster_id: cluster_id.clone(),
            max_frame_bytes: config.max_frame_bytes,
            connect_timeout: Duration::from_secs(1),
        };
        let beat = config.heartbeat.as_millis() as u64;
        let raft_config = openraft::Config {
            cluster_name: "spool".into(),
            heartbeat_interval: beat,
            election_timeout_min: beat * 5,
            election_timeout_max: beat * 10,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(5000),
            ..Default::default()
        }
        .validate()?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            Network { link: link.clone() },
            LogStore::new(db),
            state.clone(),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let server = tokio::spawn(serve(
            listener,
            link.clone(),
            RaftResponder {
                raft: raft.clone(),
                propose_timeout: config.propose_timeout,
            },
        ));
        let voter = config.voters.iter().any(|(id, _)| *id == config.node_id);
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if voter && !initialized {
            // Every voter proposes the same membership; Raft makes one of them leader.
            let members: BTreeMap<NodeId, BasicNode> = config
                .voters
                .iter()
                .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                .collect();
            if let Err(e) = raft.initialize(members).await {
                warn!(error = %e, "quorum initialization (another voter may have done it)");
            }
            info!(
                node = config.node_id,
                voters = config.voters.len(),
                "metadata quorum formed"
            );
        }
        // Frames carry the cluster id once the metadata has one.
        let mut applied = state.subscribe();
        tokio::spawn(async move {
            while applied.changed().await.is_ok() {
                let id = applied.borrow().metadata.cluster_id.clone();
                if !id.is_empty() && cluster_id.get() != id {
                    cluster_id.set(&id);
                }
            }
        });
        Ok(Arc::new(Quorum {
            raft,
            state,
            link,
            config,
            forwards: Mutex::new(HashMap::new()),
            server,
        }))
    }

    /// The metadata as this node has applied it, and each change after.
    pub fn metadata(&self) -> watch::Receiver<Arc<Applied>> {
        self.state.subscribe()
    }

    /// The Raft instance (metrics, membership changes).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The controller (Raft leader) as this node knows it.
    pub fn controller(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Commits a command: through this node's Raft instance when it is the controller,
    /// forwarded to the controller otherwise; tried again while no controller is known, until
    /// the proposal timeout.
    pub async fn propose(&self, command: Command) -> Result<Outcome, ProposeError> {
        let deadline = Instant::now() + self.config.propose_timeout;
        let mut wait = Duration::from_millis(20);
        loop {
            let result = match write_local(&self.raft, command.clone(), deadline).await {
                Err(ProposeError::NotController {
                    leader: Some(leader),
                }) if leader != self.config.node_id => {
                    self.forward(leader, command.clone(), deadline).await
                }
                other => other,
            };
            match result {
                Err(ProposeError::NotController { .. }) if Instant::now() < deadline => {}
                Err(ProposeError::Unavailable(_)) if Instant::now() < deadline => {}
                done => return done,
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
        }
    }

    async fn forward(
        &self,
        leader: NodeId,
        command: Command,
        deadline: Instant,
    ) -> Result<Outcome, ProposeError> {
        let addr = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone());
        let Some(addr) = addr else {
            return Err(ProposeError::NotController { leader: None });
        };
        let mut forwards = self.forwards.lock().await;
        let peer = forwards
            .entry(leader)
            .or_insert_with(|| Peer::new(self.link.clone(), leader, addr));
        let ttl = deadline.saturating_duration_since(Instant::now());
        match peer.call(Body::Propose(command), ttl).await {
            Ok(Body::ProposeReply(r)) => r,
            Ok(other) => Err(ProposeError::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
            Err(e) => Err(ProposeError::Unavailable(e.to_string())),
        }
    }

    /// Stops the Raft instance and the listener.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
        self.server.abort();
    }
}
