//! This node's part in the cluster: starting its member of the metadata quorum, bringing the
//! metadata up to what the node's own store held before the cluster existed (the bootstrap),
//! and registering the node's listeners with the controller.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use spool_cluster::frame::ProposeError;
use spool_cluster::metadata::NodeRecord;
use spool_cluster::quorum::StartError;
use spool_cluster::{Command, NodeId, Outcome, Quorum, QuorumConfig};
use tracing::{info, warn};

use crate::catalog::{Catalog, NodeInfo};
use crate::supervision::Backoff;

/// The quorum settings of a one-node cluster: the node is the only voter, and no other node
/// talks to it, so it has no inter-node listener.
pub fn single_node(node_id: NodeId, data_dir: &Path) -> QuorumConfig {
    QuorumConfig {
        node_id,
        data_dir: data_dir.to_path_buf(),
        listen: None,
        voters: vec![(node_id, String::new())],
        advertised: String::new(),
        max_frame_bytes: 64 << 20,
        heartbeat: Duration::from_millis(250),
        propose_timeout: Duration::from_secs(10),
        node_heartbeat: Duration::from_secs(2),
        session_timeout: Duration::from_secs(9),
    }
}

/// Starts a one-node cluster's quorum on `data_dir`.
pub async fn single_node_quorum(
    node_id: NodeId,
    data_dir: &Path,
) -> Result<Arc<Quorum>, StartError> {
    Quorum::start(single_node(node_id, data_dir)).await
}

/// Joins the cluster: bootstraps the metadata with `cluster_id` when nobody has yet, then
/// registers `node`. Tries again (backing off, saying so once) while the quorum cannot commit,
/// as when a node starts before the other voters. Answers the incarnation the node got.
pub async fn join(quorum: &Quorum, cluster_id: &str, node: NodeRecord) -> u64 {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        match try_join(quorum, cluster_id, node.clone()).await {
            Ok(incarnation) => {
                let metadata = quorum.metadata().borrow().metadata.clone();
                info!(
                    node = node.id,
                    incarnation,
                    cluster_id = %metadata.cluster_id,
                    nodes = metadata.nodes.len(),
                    controller = ?quorum.controller(),
                    "node registered with the cluster"
                );
                return incarnation;
            }
            Err(e) => {
                if backoff.attempts() == 0 {
                    warn!(error = %e, "cannot register with the cluster yet; trying again");
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Keeps this node a live member: heartbeats the controller every interval, and registers
/// again when the controller has fenced it (it was paused or cut off for longer than its
/// session), as a Kafka broker does. Runs until the quorum stops.
pub async fn keep_membership(quorum: Arc<Quorum>, node: NodeRecord) {
    let mut tick = tokio::time::interval(quorum.heartbeat_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        if quorum.raft().metrics().borrow().running_state.is_err() {
            return;
        }
        match quorum.heartbeat().await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                warn!(error = %e, "heartbeat to the controller failed");
            }
            Err(_) => {}
        }
        let fenced = quorum
            .metadata()
            .borrow()
            .metadata
            .nodes
            .get(&node.id)
            .is_some_and(|n| n.fenced);
        if fenced {
            warn!(
                node = node.id,
                "this node was fenced by the controller; registering again"
            );
            if let Ok(Outcome::Registered { incarnation }) = quorum
                .propose(Command::RegisterNode { node: node.clone() })
                .await
            {
                info!(node = node.id, incarnation, "registered again");
            }
        }
    }
}

async fn try_join(
    quorum: &Quorum,
    cluster_id: &str,
    node: NodeRecord,
) -> Result<u64, ProposeError> {
    let bootstrapped = !quorum.metadata().borrow().metadata.cluster_id.is_empty();
    if !bootstrapped {
        // Several nodes may race here: the first bootstrap wins, the others are refused.
        quorum
            .propose(Command::Bootstrap {
                cluster_id: cluster_id.to_string(),
                topics: Vec::new(),
                definitions: Vec::new(),
            })
            .await?;
    }
    match quorum.propose(Command::RegisterNode { node }).await? {
        Outcome::Registered { incarnation } => Ok(incarnation),
        other => Err(ProposeError::Unavailable(format!(
            "registration answered {other:?}"
        ))),
    }
}

/// Keeps the catalog's cluster facts (cluster id, controller, the nodes Kafka clients are told
/// of) equal to what the quorum says, as it changes. This node stays listed before it has
/// registered (a client may ask before), and fenced nodes are left out, as Kafka leaves out
/// brokers whose session ended. Runs until the quorum stops.
pub async fn project_cluster(quorum: Arc<Quorum>, catalog: Catalog, me: NodeInfo) {
    let mut applied = quorum.metadata();
    let mut metrics = quorum.raft().metrics();
    let mut last_controller = None;
    loop {
        let (cluster_id, mut nodes) = {
            let a = applied.borrow_and_update();
            let nodes: Vec<NodeInfo> = a
                .metadata
                .live_nodes()
                .filter_map(|n| {
                    Some(NodeInfo {
                        node_id: i32::try_from(n.id).ok()?,
                        host: n.host.clone(),
                        port: n.kafka_port,
                    })
                })
                .collect();
            (a.metadata.cluster_id.clone(), nodes)
        };
        if !nodes.iter().any(|n| n.node_id == me.node_id) {
            nodes.push(me.clone());
            nodes.sort_by_key(|n| n.node_id);
        }
        let controller = metrics
            .borrow_and_update()
            .current_leader
            .and_then(|c| i32::try_from(c).ok());
        if controller.is_some() && controller != last_controller {
            if last_controller.is_some() {
                spool_metrics::live::controller_changed();
                info!(from = ?last_controller, to = ?controller, "the cluster's controller changed");
            }
            last_controller = controller;
        }
        catalog.update(|c| {
            if !cluster_id.is_empty() {
                c.cluster_id = cluster_id;
            }
            if let Some(controller) = controller {
                c.controller_id = controller;
            }
            c.nodes = nodes;
        });
        let stopped = tokio::select! {
            r = applied.changed() => r.is_err(),
            r = metrics.changed() => r.is_err(),
        };
        if stopped {
            return;
        }
    }
}
