//! `GET /metrics`: the broker's state in the Prometheus text format, under the names
//! kafka_exporter and rabbitmq_prometheus use, built fresh for each scrape.

use actix_web::{web, HttpResponse};
use spool_actors::Broker;
use spool_metrics::{
    ClusterSample, GroupSample, PartitionSample, QueueSample, Samples, TopicPartitionSample,
};

/// The broker's state for one scrape.
async fn samples(broker: &Broker) -> Samples {
    let brokers = broker.catalog.snapshot().nodes.len();
    // The partitions' figures are read from what their actors published: a scrape sends
    // nothing to a partition, so it never queues behind (or ahead of) a produce.
    let offsets = broker.partition_offsets();
    let groups: Vec<GroupSample> = broker
        .group_lag()
        .await
        .into_iter()
        .map(|g| GroupSample {
            group: g.group,
            members: g.members,
            partitions: g
                .partitions
                .into_iter()
                .map(|p| PartitionSample {
                    topic: p.topic,
                    partition: p.partition,
                    current_offset: p.committed,
                    lag: p.lag,
                })
                .collect(),
        })
        .collect();
    let partitions: Vec<TopicPartitionSample> = offsets
        .into_iter()
        .map(|p| TopicPartitionSample {
            topic: p.topic,
            partition: p.partition,
            current_offset: p.high_watermark as i64,
            oldest_offset: p.log_start_offset as i64,
            size_bytes: p.size_bytes,
            segments: p.segments,
        })
        .collect();
    let queues: Vec<QueueSample> = broker
        .queue_counts()
        .await
        .into_iter()
        .map(|(queue, c)| QueueSample {
            queue,
            ready: c.ready,
            unacked: c.unacked,
            consumers: c.consumers,
        })
        .collect();
    let quorum = broker.cluster.status();
    let (live, fenced) = {
        let applied = broker.cluster.metadata();
        let nodes = &applied.borrow().metadata.nodes;
        let fenced = nodes.values().filter(|n| n.fenced).count();
        (nodes.len() - fenced, fenced)
    };
    Samples {
        brokers,
        partitions,
        groups,
        queues,
        cluster: ClusterSample {
            controller: quorum.controller == Some(quorum.node_id),
            role: quorum.role,
            term: quorum.term,
            live_nodes: live,
            fenced_nodes: fenced,
            log_index: quorum.last_log_index.unwrap_or(0),
            applied_index: quorum.last_applied_index.unwrap_or(0),
        },
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics (text format)",
    responses((status = 200, description = "OK"))
)]
pub(crate) async fn scrape(broker: web::Data<Broker>) -> HttpResponse {
    let samples = samples(&broker).await;
    // Encoding a large scrape takes milliseconds of CPU: done on a blocking thread, it never
    // holds up the HTTP worker that also serves produce requests.
    match web::block(move || spool_metrics::render(&samples)).await {
        Ok(Ok(text)) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Ok(Err(e)) => crate::errors::error(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics could not be rendered: {e}"),
        ),
        Err(e) => crate::errors::error(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics rendering was cancelled: {e}"),
        ),
    }
}
