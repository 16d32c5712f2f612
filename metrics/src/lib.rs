//! Spool's Prometheus metrics: the only crate that touches the prometheus library. Other crates
//! hand it plain samples; it names, labels and encodes them.

mod cluster;
mod consumer_groups;
pub mod live;
mod queues;
mod text;
mod topics;

pub use cluster::ClusterSample;
pub use consumer_groups::{GroupSample, PartitionSample};
pub use queues::QueueSample;
pub use topics::TopicPartitionSample;

/// Why metrics could not be registered or encoded.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("prometheus: {0}")]
    Prometheus(#[from] prometheus::Error),
    #[error("metrics text is not UTF-8: {0}")]
    Utf8(#[from] std::string::FromUtf8Error),
}

/// One scrape's samples of broker state.
pub struct Samples {
    pub brokers: usize,
    pub partitions: Vec<TopicPartitionSample>,
    pub groups: Vec<GroupSample>,
    pub queues: Vec<QueueSample>,
    /// This node's view of the cluster.
    pub cluster: ClusterSample,
}

/// A scrape: `samples` under kafka_exporter's and rabbitmq_prometheus's names, and the live
/// counters, in the Prometheus text format.
pub fn render(samples: &Samples) -> Result<String, MetricsError> {
    use prometheus::Encoder;
    // Roughly 150 bytes a series; the live families add a few tens of KiB.
    let series = samples.partitions.len() * 4
        + samples
            .groups
            .iter()
            .map(|g| g.partitions.len() * 2)
            .sum::<usize>()
        + samples.queues.len() * 4;
    let mut out = String::with_capacity(series * 150 + 64 * 1024);
    topics::write_topic_metrics(&mut out, samples.brokers, &samples.partitions);
    consumer_groups::write_group_metrics(&mut out, &samples.groups);
    queues::write_queue_metrics(&mut out, &samples.queues);
    cluster::write_cluster_metrics(&mut out, &samples.cluster);
    let mut buf = out.into_bytes();
    prometheus::TextEncoder::new().encode(&live::registry().gather(), &mut buf)?;
    Ok(String::from_utf8(buf)?)
}
