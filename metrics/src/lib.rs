//! Spool's Prometheus metrics: the only crate that touches the prometheus library. Other crates
//! hand it plain samples; it names, labels and encodes them.

mod consumer_groups;
pub mod live;
mod queues;
mod topics;

pub use consumer_groups::{register_group_metrics, GroupSample, PartitionSample};
pub use queues::{register_queue_metrics, QueueSample};
pub use topics::{register_topic_metrics, TopicPartitionSample};

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
}

/// A scrape: `samples` under kafka_exporter's and rabbitmq_prometheus's names, and the live
/// counters, in the Prometheus text format.
pub fn render(samples: &Samples) -> Result<String, MetricsError> {
    let registry = prometheus::Registry::new();
    register_topic_metrics(&registry, samples.brokers, &samples.partitions)?;
    register_group_metrics(&registry, &samples.groups)?;
    register_queue_metrics(&registry, &samples.queues)?;
    encode(&registry)
}

/// `registry`'s metrics (sampled from broker state for one scrape) and the live counters, in
/// the Prometheus text format.
pub(crate) fn encode(registry: &prometheus::Registry) -> Result<String, MetricsError> {
    use prometheus::Encoder;
    let mut families = registry.gather();
    families.extend(live::registry().gather());
    let mut buf = Vec::new();
    prometheus::TextEncoder::new().encode(&families, &mut buf)?;
    Ok(String::from_utf8(buf)?)
}

/// A gauge family with these labels, registered in `registry`.
pub(crate) fn gauge(
    registry: &prometheus::Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<prometheus::IntGaugeVec, MetricsError> {
    let g = prometheus::IntGaugeVec::new(prometheus::Opts::new(name, help), labels)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}
