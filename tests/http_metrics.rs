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

/// Prometheus's own checker (promtool, from Debian's prometheus package, which .ci/run
/// installs) parses `text` and its linter finds nothing but kafka_exporter's two `_sum` gauge
/// names, which Spool keeps so kafka_exporter dashboards work unchanged.
fn promtool_accepts(text: &str) {
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let kafka_exporter_names = [
        "kafka_consumergroup_current_offset_sum non-histogram and non-summary metrics should not have \"_sum\" suffix",
        "kafka_consumergroup_lag_sum non-histogram and non-summary metrics should not have \"_sum\" suffix",
    ];
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| !kafka_exporter_names.contains(&l.trim()))
        .collect();
    // Exit code 3 is "lint problems found"; any other failure is a parse error.
    let code = out.status.code();
    assert!(
        problems.is_empty() && matches!(code, Some(0) | Some(3)),
        "promtool check metrics (exit {code:?}):\n{report}"
    );
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

    promtool_accepts(&text);

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

#[tokio::test(flavor = "multi_thread")]
async fn live_counters_and_lag_move_with_traffic() {
    let spool = Spool::start_with(&["--flush-messages", "1"]);
    let b = spool.bootstrap();
    create_topic(&b, "moves", 1).await;
    let scrape = || spool.http_get("/metrics").1;
    let at = |text: &str, series: &str| value(text, series).unwrap_or(0.0);
    let before = scrape();

    // Kafka: N records appended, counted once each, with their produce requests and fsyncs.
    let n = 25;
    let p = producer(&b, &[("linger.ms", "0")]);
    for _ in 0..n {
        p.send(
            FutureRecord::<(), _>::to("moves").payload("m"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    let text = scrape();
    assert_eq!(
        at(&text, "spool_records_appended_total ") - at(&before, "spool_records_appended_total "),
        n as f64
    );
    let produces = r#"spool_requests_total{api="Produce",frontend="kafka"}"#;
    assert!(at(&text, produces) >= 1.0, "{text}");
    assert_eq!(
        at(
            &text,
            r#"spool_request_duration_seconds_count{api="Produce",frontend="kafka"}"#
        ),
        at(&text, produces)
    );
    assert!(at(&text, "spool_fsync_duration_seconds_count ") >= 1.0);
    assert!(at(&text, r#"spool_connections{frontend="kafka"}"#) >= 1.0);
    assert!(at(&text, r#"spool_received_bytes_total{frontend="kafka"}"#) > 0.0);
    assert!(
        at(
            &text,
            r#"spool_log_size_bytes{partition="0",topic="moves"}"#
        ) > 0.0
    );
    // HTTP requests are counted by route pattern.
    assert!(
        at(
            &text,
            r#"spool_requests_total{api="GET /metrics",frontend="http"}"#
        ) >= 1.0,
        "{text}"
    );

    // Lag: a group reset to the start lags by N, and falls to 0 once it consumed and committed.
    let (status, body) = spool.http_post(
        "/groups/lagging/offsets/reset",
        r#"{"topic": "moves", "to": "earliest"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let lag = r#"kafka_consumergroup_lag{consumergroup="lagging",partition="0",topic="moves"}"#;
    assert_eq!(value(&scrape(), lag), Some(n as f64));
    {
        use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
        let c: BaseConsumer = common::client_config(&b)
            .set("group.id", "lagging")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset("moves", 0, rdkafka::Offset::Stored)
            .unwrap();
        c.assign(&tpl).unwrap();
        for _ in 0..n {
            drop(c.poll(Duration::from_secs(30)).unwrap().unwrap());
        }
        c.commit_consumer_state(CommitMode::Sync).unwrap();
    }
    let text = scrape();
    assert_eq!(value(&text, lag), Some(0.0));
    promtool_accepts(&text);

    // AMQP: publishes, confirms, deliveries, acks and dead-letters, under rabbitmq_prometheus's
    // global names.
    let conn = Connection::connect(&spool.amqp_uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        lapin::types::AMQPValue::LongString("amq.fanout".into()),
    );
    ch.queue_declare("work".into(), QueueDeclareOptions::durable(), args)
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for _ in 0..3 {
        ch.basic_publish(
            "".into(),
            "work".into(),
            BasicPublishOptions::default(),
            b"job",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let text = scrape();
    assert_eq!(at(&text, "rabbitmq_connections "), 1.0);
    assert_eq!(at(&text, "rabbitmq_channels "), 1.0);
    // The disk alarm's gauges, as rabbitmq_prometheus names them (default limit 50 MB).
    assert_eq!(at(&text, "rabbitmq_alarms_free_disk_space_watermark "), 0.0);
    assert_eq!(
        at(&text, "rabbitmq_disk_space_available_limit_bytes "),
        50e6
    );
    assert!(at(&text, "rabbitmq_disk_space_available_bytes ") >= 50e6);
    let global =
        |name: &str| format!(r#"rabbitmq_global_messages_{name}_total{{protocol="amqp091"}}"#);
    assert_eq!(at(&text, &global("received")), 3.0);
    assert_eq!(at(&text, &global("received_confirm")), 3.0);
    assert_eq!(at(&text, &global("routed")), 3.0);
    assert_eq!(at(&text, &global("confirmed")), 3.0);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            ch.basic_get("work".into(), BasicGetOptions::default())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    got[0]
        .delivery
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    got[1]
        .delivery
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    got[2]
        .delivery
        .nack(BasicNackOptions {
            requeue: false,
            ..Default::default()
        })
        .await
        .unwrap();
    // A round trip to the queue on the same channel: the settlements were handled before it.
    ch.queue_declare(
        "work".into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let text = scrape();
    assert_eq!(at(&text, &global("delivered")), 3.0);
    assert_eq!(at(&text, &global("delivered_get_manual_ack")), 3.0);
    assert_eq!(at(&text, &global("acknowledged")), 2.0);
    assert_eq!(
        at(
            &text,
            r#"rabbitmq_global_messages_dead_lettered_rejected_total{dead_letter_strategy="at_most_once",queue_type="rabbit_classic_queue"}"#
        ),
        1.0
    );
    assert_eq!(
        at(
            &text,
            r#"spool_queue_dead_letters_total{reason="rejected"}"#
        ),
        1.0
    );
    assert!(
        at(
            &text,
            r#"spool_requests_total{api="basic.publish",frontend="amqp"}"#
        ) >= 3.0
    );
    ch.close(200, "bye".into()).await.unwrap();
    assert_eq!(at(&scrape(), "rabbitmq_channels "), 0.0);
    conn.close(200, "bye".into()).await.unwrap();
}
