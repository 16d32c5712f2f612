//! Queue metrics under rabbitmq_prometheus's per-object names and labels (`vhost`, `queue`), so
//! RabbitMQ queue dashboards show Spool's queues unchanged. One series per queue.

use prometheus::Registry;

use crate::{gauge, MetricsError};

/// One queue's counts, as the broker reports them.
#[derive(Debug, Clone)]
pub struct QueueSample {
    pub queue: String,
    pub ready: u64,
    pub unacked: u64,
    pub consumers: u32,
}

/// Registers `rabbitmq_queue_messages_ready`, `rabbitmq_queue_messages_unacked`,
/// `rabbitmq_queue_messages` and `rabbitmq_queue_consumers`. Spool has one vhost, `/`.
pub fn register_queue_metrics(
    registry: &Registry,
    queues: &[QueueSample],
) -> Result<(), MetricsError> {
    let labels = &["vhost", "queue"];
    let ready = gauge(
        registry,
        "rabbitmq_queue_messages_ready",
        "Messages ready to be delivered to consumers",
        labels,
    )?;
    let unacked = gauge(
        registry,
        "rabbitmq_queue_messages_unacked",
        "Messages delivered to consumers but not yet acknowledged",
        labels,
    )?;
    let total = gauge(
        registry,
        "rabbitmq_queue_messages",
        "Sum of ready and unacknowledged messages - total queue depth",
        labels,
    )?;
    let consumers = gauge(
        registry,
        "rabbitmq_queue_consumers",
        "Consumers on a queue",
        labels,
    )?;
    for q in queues {
        let l = ["/", q.queue.as_str()];
        ready.with_label_values(&l).set(q.ready as i64);
        unacked.with_label_values(&l).set(q.unacked as i64);
        total
            .with_label_values(&l)
            .set((q.ready + q.unacked) as i64);
        consumers.with_label_values(&l).set(q.consumers as i64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rabbitmq_prometheus_queue_families() {
        let registry = Registry::new();
        let q = QueueSample {
            queue: "tasks".into(),
            ready: 5,
            unacked: 2,
            consumers: 3,
        };
        register_queue_metrics(&registry, &[q]).unwrap();
        let text = crate::encode(&registry).unwrap();
        for line in [
            r#"rabbitmq_queue_messages_ready{queue="tasks",vhost="/"} 5"#,
            r#"rabbitmq_queue_messages_unacked{queue="tasks",vhost="/"} 2"#,
            r#"rabbitmq_queue_messages{queue="tasks",vhost="/"} 7"#,
            r#"rabbitmq_queue_consumers{queue="tasks",vhost="/"} 3"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
