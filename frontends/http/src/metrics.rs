//! `GET /metrics`: the broker's state in the Prometheus text format, under the names
//! kafka_exporter and rabbitmq_prometheus use, built fresh for each scrape.

use actix_web::{web, HttpResponse};
use spool_actors::Broker;
use spool_metrics::{GroupSample, PartitionSample, QueueSample, Samples, TopicPartitionSample};

async fn render(broker: &Broker) -> Result<String, spool_metrics::MetricsError> {
    let brokers = broker.catalog.snapshot().nodes.len();
    // Every partition is asked once; the groups' lag is computed from the same answers.
    let offsets = broker.partition_offsets().await;
    let groups: Vec<GroupSample> = broker
        .group_lag_with(&offsets)
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
    spool_metrics::render(&Samples {
        brokers,
        partitions,
        groups,
        queues,
    })
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics (text format)",
    responses((status = 200, description = "OK"))
)]
pub(crate) async fn scrape(broker: web::Data<Broker>) -> HttpResponse {
    match render(&broker).await {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Err(e) => crate::errors::error(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics could not be rendered: {e}"),
        ),
    }
}
