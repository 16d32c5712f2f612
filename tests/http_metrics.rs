//! The HTTP front end with a plain HTTP/1.1 client: health, readiness, JSON errors, and
//! `/metrics` under kafka_exporter's and rabbitmq_prometheus's names, moving with traffic.

mod common;

use std::time::Duration;

use common::{create_topic, producer, Spool};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rdkafka::producer::FutureRecord;

/// The value of the series `line_start` (metric name with labels) in a scrape.
fn value(metrics: &str, line_start: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_errors() {
    let spool = Spool::start();
    let (status, body) = spool.http_get("/healthz");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"up"}"#));
    let (status, body) = spool.http_get("/readyz");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));
    let (status, body) = spool.http_get("/nope");
    assert_eq!(status, 404);
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error_code"], 404);
    assert!(err["message"].as_str().unwrap().contains("GET /nope"));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_follow_topics_and_queues() {
    let spool = Spool::start();
    let b = spool.bootstrap();
    create_topic(&b, "orders", 2).await;
    let p = producer(&b, &[]);
    for i in 0..10 {
        p.send(
            FutureRecord::<(), _>::to("orders")
                .partition(i % 2)
                .payload("x"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    let conn = Connection::connect(&spool.amqp_uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "tasks".into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for _ in 0..4 {
        ch.basic_publish(
            "".into(),
            "tasks".into(),
            BasicPublishOptions::default(),
            b"t",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let held = ch
        .basic_get("tasks".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();

    let (status, text) = spool.http_get("/metrics");
    assert_eq!(status, 200);
    assert_eq!(value(&text, "kafka_brokers "), Some(1.0));
    assert_eq!(
        value(&text, r#"kafka_topic_partitions{topic="orders"}"#),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            r#"kafka_topic_partition_current_offset{partition="0",topic="orders"}"#
        ),
        Some(5.0)
    );
    assert_eq!(
        value(
            &text,
            r#"rabbitmq_queue_messages_ready{queue="tasks",vhost="/"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &text,
            r#"rabbitmq_queue_messages_unacked{queue="tasks",vhost="/"}"#
        ),
        Some(1.0)
    );

    // Prometheus's own linter accepts the output (promtool, from Debian's prometheus package,
    // which .ci/run installs).
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // An ack moves the queue's families.
    held.delivery.ack(BasicAckOptions::default()).await.unwrap();
    ch.queue_declare(
        "tasks".into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let (_, text) = spool.http_get("/metrics");
    assert_eq!(
        value(
            &text,
            r#"rabbitmq_queue_messages_unacked{queue="tasks",vhost="/"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&text, r#"rabbitmq_queue_messages{queue="tasks",vhost="/"}"#),
        Some(3.0)
    );
}
