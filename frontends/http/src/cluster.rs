//! `GET /cluster`: the cluster as this node sees it: the quorum (controller, this node's role,
//! how far it has applied the metadata) and every registered node with its listeners.

use actix_web::{web, HttpResponse};
use serde_json::json;
use spool_actors::Broker;

/// `GET /cluster`.
#[utoipa::path(
    get,
    path = "/cluster",
    tag = "operations",
    summary = "The cluster: its nodes, the controller and this node's role in the metadata quorum",
    responses((status = 200, description = "The cluster as this node knows it"))
)]
pub async fn status(broker: web::Data<Broker>) -> HttpResponse {
    let quorum = broker.cluster.status();
    let applied = broker.cluster.metadata().borrow().clone();
    let m = &applied.metadata;
    let nodes: Vec<_> = m
        .nodes
        .values()
        .map(|n| {
            json!({
                "id": n.id,
                "host": n.host,
                "kafka_port": n.kafka_port,
                "amqp_port": n.amqp_port,
                "http_port": n.http_port,
                "cluster_addr": n.cluster_addr,
                "incarnation": n.incarnation,
                "fenced": n.fenced,
                "voter": quorum.voters.contains(&n.id),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "cluster_id": m.cluster_id,
        "node_id": quorum.node_id,
        "role": quorum.role,
        "controller": quorum.controller,
        "term": quorum.term,
        "last_log_index": quorum.last_log_index,
        "last_applied_index": quorum.last_applied_index,
        "voters": quorum.voters,
        "nodes": nodes,
    }))
}
