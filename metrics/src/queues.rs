//! Queue metrics under rabbitmq_prometheus's per-object names and labels (`vhost`, `queue`), so
//! RabbitMQ queue dashboards show Spool's queues unchanged. One series per queue.

use crate::text::{Family, Gauge};

/// One queue's counts, as the broker reports them.
#[derive(Debug, Clone)]
pub struct QueueSample {
    pub queue: String,
    pub ready: u64,
    pub unacked: u64,
    pub consumers: u32,
}

/// Writes `rabbitmq_queue_messages_ready`, `rabbitmq_queue_messages_unacked`,
/// `rabbitmq_queue_messages` and `rabbitmq_queue_consumers`. Spool has one vhost, `/`.
pub(crate) fn write_queue_metrics(out: &mut String, queues: &[QueueSample]) {
    let families: [Family<QueueSample>; 4] = [
        (
            "rabbitmq_queue_messages_ready",
            "Messages ready to be delivered to consumers",
            |q| q.ready as i64,
        ),
        (
            "rabbitmq_queue_messages_unacked",
            "Messages delivered to consumers but not yet acknowledged",
            |q| q.unacked as i64,
        ),
        (
            "rabbitmq_queue_messages",
            "Sum of ready and unacknowledged messages - total queue depth",
            |q| (q.ready + q.unacked) as i64,
        ),
        ("rabbitmq_queue_consumers", "Consumers on a queue", |q| {
            q.consumers as i64
        }),
    ];
    for (name, help, value) in families {
        let mut g = Gauge::new(out, name, help);
        for q in queues {
            g.sample(&[("queue", &q.queue), ("vhost", &"/")], value(q));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rabbitmq_prometheus_queue_families() {
        let q = QueueSample {
            queue: "tasks".into(),
            ready: 5,
            unacked: 2,
            consumers: 3,
        };
        let mut text = String::new();
        write_queue_metrics(&mut text, &[q]);
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
