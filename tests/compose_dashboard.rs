//! The Grafana dashboard in `compose/` is valid JSON and its queries name only metrics a
//! running Spool exports: every `spool_*`, `kafka_*` and `rabbitmq_*` name in a panel's
//! expression is checked against a scrape taken after Kafka, AMQP and HTTP traffic.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{client_config, create_topic, producer, Spool};
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use serde_json::Value;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/compose/grafana/dashboards/spool.json"
);

/// Metric names in a PromQL expression: identifiers in Spool's exported namespaces.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| {
            ["spool_", "kafka_", "rabbitmq_"]
                .iter()
                .any(|p| t.starts_with(p))
        })
        .map(str::to_string)
        .collect()
}

/// Every series name in a scrape (histograms give their `_bucket`, `_sum` and `_count`).
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_query_names_an_exported_metric() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let datasources = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/compose/grafana/provisioning/datasources/prometheus.yml"
    ))
    .unwrap();
    let mut wanted = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let uid = panel["datasource"]["uid"].as_str().unwrap();
        assert!(
            datasources.contains(&format!("uid: {uid}")),
            "panel {} uses datasource {uid}, which is not provisioned",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr} names no Spool metric");
            wanted.extend(names);
        }
    }

    // Traffic on every front end, so labelled families have series.
    let spool = Spool::start_with(&["--flush-messages", "1"]);
    let b = spool.bootstrap();
    create_topic(&b, "dash", 1).await;
    producer(&b, &[])
        .send(
            FutureRecord::<(), _>::to("dash").payload("x"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let c: BaseConsumer = client_config(&b)
        .set("group.id", "dash-group")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&["dash"]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(std::time::Instant::now() < deadline, "no record");
        if let Some(m) = c.poll(Duration::from_millis(500)) {
            drop(m.unwrap());
            break;
        }
    }
    c.commit_consumer_state(CommitMode::Sync).unwrap();
    let conn = Connection::connect(&spool.amqp_uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "dash-q".into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "".into(),
        "dash-q".into(),
        BasicPublishOptions::default(),
        b"t",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let got = ch
        .basic_get("dash-q".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    got.delivery.ack(BasicAckOptions::default()).await.unwrap();
    assert_eq!(spool.http_get("/nope").0, 404);

    let (status, scrape) = spool.http_get("/metrics");
    assert_eq!(status, 200);
    let have = exported(&scrape);
    let missing: Vec<&String> = wanted.iter().filter(|n| !have.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics Spool does not export: {missing:?}"
    );
    // The dashboard covers what operators watch.
    for theme in [
        "spool_records_appended_total",
        "spool_request_duration_seconds_bucket",
        "kafka_consumergroup_lag_sum",
        "rabbitmq_queue_messages_ready",
        "spool_fsync_duration_seconds_bucket",
        "spool_actor_restarts_total",
    ] {
        assert!(wanted.contains(theme), "no panel shows {theme}");
    }
    drop(c);
}
