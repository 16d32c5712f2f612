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
use crate::liveness::Liveness;
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
    /// The inter-node listener's address (`None`: no listener, for a one-node cluster, which
    /// no other node talks to).
    pub listen: Option<SocketAddr>,
    /// The voters and their inter-node addresses (`--controller-voters`); a node not among them
    /// is an observer, added by the controller as a Raft learner when it asks.
    pub voters: Vec<(NodeId, String)>,
    /// The address other nodes reach this node's listener at (a voter's is its entry in
    /// `voters`).
    pub advertised: String,
    pub max_frame_bytes: usize,
    /// Raft's heartbeat; elections time out after 5 to 10 of them.
    pub heartbeat: Duration,
    /// How long a proposal may wait for the quorum before it is refused as unavailable.
    pub propose_timeout: Duration,
    /// How often nodes tell the controller they are alive (`--node-heartbeat-ms`).
    pub node_heartbeat: Duration,
    /// How long the controller waits without a heartbeat before it fences a node
    /// (`--node-session-timeout-ms`, Kafka's 9 s).
    pub session_timeout: Duration,
}

/// One node's view of the quorum, for status pages and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuorumStatus {
    pub node_id: NodeId,
    /// `leader` (the controller), `follower`, `candidate` or `learner`.
    pub role: String,
    pub controller: Option<NodeId>,
    pub term: u64,
    /// The last entry of this node's log.
    pub last_log_index: Option<u64>,
    /// The last entry this node has applied to its metadata.
    pub last_applied_index: Option<u64>,
    pub voters: Vec<NodeId>,
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
    /// Node sessions, kept while this node is the controller.
    liveness: Arc<std::sync::Mutex<Liveness>>,
    /// Connections to controllers, for forwarded proposals.
    forwards: Mutex<HashMap<NodeId, Peer>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// Answers the link's requests with this node's Raft instance.
#[derive(Clone)]
struct RaftResponder {
    raft: Raft,
    propose_timeout: Duration,
    liveness: Arc<std::sync::Mutex<Liveness>>,
}

impl Responder for RaftResponder {
    async fn respond(&self, from: NodeId, body: Body) -> Body {
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
            Body::Heartbeat => Body::HeartbeatReply(hear(&self.raft, &self.liveness, from)),
            Body::AddLearner { addr } => {
                let deadline = Instant::now() + self.propose_timeout;
                Body::AddLearnerReply(add_learner(&self.raft, from, addr, deadline).await)
            }
            other => Body::Refused(format!("not a request: {other:?}")),
        }
    }
}

/// Adds `node` at `addr` as a learner, when this node is the controller (a voter asking is
/// answered at once: it is in the quorum already).
async fn add_learner(
    raft: &Raft,
    node: NodeId,
    addr: String,
    deadline: Instant,
) -> Result<(), ProposeError> {
    let m = raft.metrics().borrow().clone();
    if m.membership_config
        .membership()
        .voter_ids()
        .any(|v| v == node)
    {
        return Ok(());
    }
    let add = raft.add_learner(node, BasicNode { addr }, false);
    match tokio::time::timeout_at(deadline.into(), add).await {
        Ok(Ok(_)) => {
            info!(node, "observer added to the metadata quorum as a learner");
            Ok(())
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(ProposeError::NotController {
                leader: f.leader_id,
            })
        }
        Ok(Err(e)) => Err(ProposeError::Unavailable(e.to_string())),
        Err(_) => Err(ProposeError::Unavailable(
            "the learner was not added in time".into(),
        )),
    }
}

/// An observer asks the voters, in turn, until the controller has added it as a learner.
async fn join_as_learner(link: LinkConfig, voters: Vec<(NodeId, String)>, advertised: String) {
    let mut wait = Duration::from_millis(50);
    let mut next = 0;
    loop {
        let (id, addr) = voters[next % voters.len()].clone();
        let mut peer = Peer::new(link.clone(), id, addr);
        let asked = Body::AddLearner {
            addr: advertised.clone(),
        };
        match peer.call(asked, Duration::from_secs(5)).await {
            Ok(Body::AddLearnerReply(Ok(()))) => {
                info!(
                    node = link.node_id,
                    "joined the metadata quorum as an observer"
                );
                return;
            }
            Ok(Body::AddLearnerReply(Err(ProposeError::NotController { leader: Some(l) }))) => {
                if let Some(i) = voters.iter().position(|(v, _)| *v == l) {
                    next = i;
                    continue;
                }
                next += 1;
            }
            _ => next += 1,
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

/// Records `node`'s heartbeat, when this node is the controller.
fn hear(
    raft: &Raft,
    liveness: &std::sync::Mutex<Liveness>,
    node: NodeId,
) -> Result<(), ProposeError> {
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(m.id) {
        return Err(ProposeError::NotController {
            leader: m.current_leader,
        });
    }
    lock(liveness).heard(node, Instant::now());
    Ok(())
}

fn lock(liveness: &std::sync::Mutex<Liveness>) -> std::sync::MutexGuard<'_, Liveness> {
    liveness.lock().unwrap_or_else(|p| p.into_inner())
}

/// The controller's watch over node sessions: while this node leads, nodes whose heartbeats
/// stopped for longer than the session timeout are fenced (once each: a fenced node is not
/// live, and registering again unfences it).
async fn fence_silent_nodes(
    raft: Raft,
    state: StateMachineStore,
    liveness: Arc<std::sync::Mutex<Liveness>>,
    every: Duration,
    propose_timeout: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let m = raft.metrics().borrow().clone();
        if m.running_state.is_err() {
            return;
        }
        let leading = m.current_leader == Some(m.id);
        let now = Instant::now();
        let expired = {
            let mut l = lock(&liveness);
            l.set_leading(leading, now);
            l.heard(m.id, now);
            l.expired(&state.subscribe().borrow().metadata, now)
        };
        for id in expired {
            warn!(node = id, "node stopped heartbeating; fencing it");
            let deadline = Instant::now() + propose_timeout;
            if let Err(e) = write_local(&raft, Command::FenceNode { id }, deadline).await {
                warn!(node = id, error = %e, "could not fence the node");
            }
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
        let liveness = Arc::new(std::sync::Mutex::new(Liveness::new(config.session_timeout)));
        tokio::spawn(fence_silent_nodes(
            raft.clone(),
            state.clone(),
            liveness.clone(),
            config.node_heartbeat.min(config.session_timeout / 4),
            config.propose_timeout,
        ));
        let server = match config.listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Listen { addr, source })?;
                let responder = RaftResponder {
                    raft: raft.clone(),
                    propose_timeout: config.propose_timeout,
                    liveness: liveness.clone(),
                };
                Some(tokio::spawn(serve(listener, link.clone(), responder)))
            }
            None => None,
        };
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
        if !voter {
            tokio::spawn(join_as_learner(
                link.clone(),
                config.voters.clone(),
                config.advertised.clone(),
            ));
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
            liveness,
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

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.config.node_id
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

    /// Tells the controller this node is alive.
    pub async fn heartbeat(&self) -> Result<(), ProposeError> {
        let leader = self.controller();
        if leader == Some(self.config.node_id) || leader.is_none() {
            return hear(&self.raft, &self.liveness, self.config.node_id);
        }
        let deadline = Instant::now() + self.config.node_heartbeat.max(Duration::from_millis(500));
        match self
            .call_controller(leader.expect("known"), Body::Heartbeat, deadline)
            .await?
        {
            Body::HeartbeatReply(r) => r,
            other => Err(ProposeError::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// How often this node should send [`Quorum::heartbeat`].
    pub fn heartbeat_interval(&self) -> Duration {
        self.config.node_heartbeat
    }

    async fn forward(
        &self,
        leader: NodeId,
        command: Command,
        deadline: Instant,
    ) -> Result<Outcome, ProposeError> {
        match self
            .call_controller(leader, Body::Propose(command), deadline)
            .await?
        {
            Body::ProposeReply(r) => r,
            other => Err(ProposeError::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// Sends `body` to node `leader` over the link, answering by `deadline`.
    async fn call_controller(
        &self,
        leader: NodeId,
        body: Body,
        deadline: Instant,
    ) -> Result<Body, ProposeError> {
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
        peer.call(body, ttl)
            .await
            .map_err(|e| ProposeError::Unavailable(e.to_string()))
    }

    /// What this node knows of the quorum now.
    pub fn status(&self) -> QuorumStatus {
        let m = self.raft.metrics().borrow().clone();
        QuorumStatus {
            node_id: self.config.node_id,
            role: format!("{:?}", m.state).to_lowercase(),
            controller: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied_index: m.last_applied.map(|l| l.index),
            voters: m.membership_config.membership().voter_ids().collect(),
        }
    }

    /// Stops the Raft instance and the listener.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}
