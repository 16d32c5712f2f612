//! Queues of many partitions (`x-partitions`) with lapin, rdkafka and plain HTTP: publishes
//! spread over the topic's partitions, the queue still behaves as one queue (each message once
//! to competing consumers, prefetch and priorities across partitions), its state survives
//! SIGKILL, and bad `x-partitions` values get RabbitMQ's PRECONDITION_FAILED.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::amqp::{body, connect, declare, next, passive, publish_confirmed, subscribe};
use common::Spool;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;

fn partitions(n: i32) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-partitions".into(), AMQPValue::LongInt(n));
    args
}

/// Records in each partition of `topic`, as a Kafka client sees them.
fn records_per_partition(spool: &Spool, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = common::client_config(&spool.bootstrap())
        .set("group.id", "watermarks")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let count = metadata.topics()[0].partitions().len() as i32;
    (0..count)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            high - low
        })
        .collect()
}

/// Publishes `rounds` rounds of `per_round` messages, each round confirmed before the next, so
/// that every round reaches the broker in its own reads (and so in the next partitions).
async fn publish_rounds(ch: &lapin::Channel, queue: &str, rounds: usize, per_round: usize) {
    for r in 0..rounds {
        let bodies = (0..per_round).map(move |i| format!("m{}", r * per_round + i));
        publish_confirmed(ch, "", queue, bodies).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_of_many_partitions_is_one_queue_to_its_consumers() {
    let spool = Spool::start();
    let conn = connect(&spool).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "wide", partitions(4)).await;
    publish_rounds(&ch, "wide", 8, 50).await;

    // The topic has four partitions, and every one got some of the publishes.
    let per_partition = records_per_partition(&spool, "wide");
    assert_eq!(per_partition.len(), 4, "{per_partition:?}");
    assert!(per_partition.iter().all(|n| *n > 0), "{per_partition:?}");
    assert_eq!(per_partition.iter().sum::<i64>(), 400);

    // Prefetch holds across partitions: five unacknowledged, the rest ready.
    let pch = conn.create_channel().await.unwrap();
    pch.basic_qos(5, BasicQosOptions::default()).await.unwrap();
    let mut held = subscribe(&pch, "wide", "holder").await;
    for _ in 0..5 {
        next(&mut held).await;
    }
    let q = passive(&ch, "wide").await.unwrap();
    assert_eq!(q.message_count(), 395);
    // Its channel closes: the five go back, flagged redelivered.
    pch.close(200, "done".into()).await.unwrap();

    // Three competing consumers process every message exactly once.
    let (seen, mut processed) = tokio::sync::mpsc::unbounded_channel();
    let mut workers = Vec::new();
    for n in 0..3 {
        let c = connect(&spool).await;
        let ch = c.create_channel().await.unwrap();
        ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
        let mut consumer = subscribe(&ch, "wide", &format!("worker-{n}")).await;
        let seen = seen.clone();
        workers.push(c);
        tokio::spawn(async move {
            use futures_lite::StreamExt;
            while let Some(Ok(d)) = consumer.next().await {
                d.ack(BasicAckOptions::default()).await.unwrap();
                let _ = seen.send((body(&d), d.redelivered));
            }
        });
    }
    let mut all = Vec::new();
    while all.len() < 400 {
        let got = tokio::time::timeout(Duration::from_secs(30), processed.recv()).await;
        all.push(
            got.expect("a message within 30 s")
                .expect("workers running"),
        );
    }
    let names: HashSet<&String> = all.iter().map(|(b, _)| b).collect();
    assert_eq!(names.len(), 400, "each message once");
    assert_eq!(all.iter().filter(|(_, r)| *r).count(), 5);
    let q = passive(&ch, "wide").await.unwrap();
    assert_eq!(q.message_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn priorities_hold_across_partitions() {
    let spool = Spool::start();
    let conn = connect(&spool).await;
    let ch = conn.create_channel().await.unwrap();
    let mut args = partitions(3);
    args.insert("x-max-priority".into(), AMQPValue::LongInt(9));
    declare(&ch, "ranked", args).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    // Three publishes, each confirmed before the next, land in three partitions.
    for (text, priority) in [("low", 1), ("high", 9), ("mid", 5)] {
        let confirm = ch
            .basic_publish(
                "".into(),
                "ranked".into(),
                BasicPublishOptions::default(),
                text.as_bytes(),
                lapin::BasicProperties::default().with_priority(priority),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }
    let per_partition = records_per_partition(&spool, "ranked");
    assert_eq!(per_partition, [1, 1, 1]);
    let mut order = Vec::new();
    while let Some(m) = ch
        .basic_get("ranked".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        order.push(body(&m.delivery));
    }
    assert_eq!(order, ["high", "mid", "low"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_queue_s_acks_survive_sigkill() {
    let mut spool = Spool::start();
    let acked: HashSet<String>;
    let unacked: HashSet<String>;
    {
        let conn = connect(&spool).await;
        let ch = conn.create_channel().await.unwrap();
        declare(&ch, "kept", partitions(3)).await;
        publish_rounds(&ch, "kept", 6, 5).await;
        let cch = conn.create_channel().await.unwrap();
        cch.basic_qos(20, BasicQosOptions::default()).await.unwrap();
        let mut c = subscribe(&cch, "kept", "k").await;
        let mut got = Vec::new();
        for _ in 0..20 {
            got.push(next(&mut c).await);
        }
        // Cancelled, so that acks let no more in: the other ten stay ready.
        cch.basic_cancel("k".into(), BasicCancelOptions::default())
            .await
            .unwrap();
        // Acknowledge twelve (one by one: they come from several partitions); eight stay
        // unacknowledged when the broker dies.
        for d in &got[..12] {
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        acked = got[..12].iter().map(body).collect();
        unacked = got[12..].iter().map(body).collect();
        // A synchronous round trip after the acks: its answer means they are written.
        let q = passive(&cch, "kept").await.unwrap();
        assert_eq!(q.message_count(), 10);
        spool.kill9();
    }
    spool.launch();
    let conn = connect(&spool).await;
    let ch = conn.create_channel().await.unwrap();
    let q = passive(&ch, "kept").await.unwrap();
    assert_eq!(q.message_count(), 18);
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get("kept".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        out.push((body(&m.delivery), m.delivery.redelivered));
    }
    let back: HashSet<String> = out.iter().map(|(b, _)| b.clone()).collect();
    assert_eq!(out.len(), 18, "{out:?}");
    assert!(
        back.is_disjoint(&acked),
        "an acknowledged message came back"
    );
    let redelivered: HashSet<String> = out
        .iter()
        .filter(|(_, r)| *r)
        .map(|(b, _)| b.clone())
        .collect();
    assert_eq!(redelivered, unacked);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_or_inequivalent_partition_counts_are_refused() {
    let spool = Spool::start();
    let conn = connect(&spool).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "four", partitions(4)).await;
    // A redeclare with another count is inequivalent.
    let err = ch
        .queue_declare("four".into(), QueueDeclareOptions::durable(), partitions(2))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("PRECONDITION_FAILED")
            && err.to_string().contains("inequivalent arg 'x-partitions'"),
        "{err}"
    );
    for (value, problem) in [
        (AMQPValue::LongInt(0), "value_too_small"),
        (AMQPValue::LongInt(65), "value_too_large"),
        (AMQPValue::LongString("4".into()), "unacceptable_type"),
    ] {
        let ch = conn.create_channel().await.unwrap();
        let mut args = FieldTable::default();
        args.insert("x-partitions".into(), value);
        let err = ch
            .queue_declare("bad".into(), QueueDeclareOptions::durable(), args)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("PRECONDITION_FAILED")
                && err.to_string().contains("invalid arg 'x-partitions'")
                && err.to_string().contains(problem),
            "{err}"
        );
    }
    // A queue over an existing topic reads all its partitions; one that asks for another
    // count is refused.
    common::create_topic(&spool.bootstrap(), "events", 3).await;
    let ch = conn.create_channel().await.unwrap();
    let err = ch
        .queue_declare(
            "events".into(),
            QueueDeclareOptions::durable(),
            partitions(2),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("PRECONDITION_FAILED")
            && err.to_string().contains("has 3 partitions"),
        "{err}"
    );
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "events", FieldTable::default()).await;
    let producer = common::producer(&spool.bootstrap(), &[]);
    for p in 0..3 {
        let record = rdkafka::producer::FutureRecord::<(), _>::to("events")
            .partition(p)
            .payload("from-kafka");
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let q = passive(&ch, "events").await.unwrap();
    assert_eq!(q.message_count(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_receives_and_acks_across_partitions() {
    let spool = Spool::start();
    let (status, _) = spool.http(
        "PUT",
        "/queues/spread",
        Some(r#"{"arguments": {"x-partitions": 3}}"#),
    );
    assert_eq!(status, 200);
    // Sends take the partitions in turn.
    for i in 0..3 {
        let body = format!(r#"{{"messages": [{{"body": "s{i}"}}]}}"#);
        let (status, _) = spool.http_post("/queues/spread/messages", &body);
        assert_eq!(status, 200);
    }
    assert_eq!(records_per_partition(&spool, "spread"), [1, 1, 1]);
    let (status, got) = spool.http_post("/queues/spread/receive?max=10&wait_ms=5000", "{}");
    assert_eq!(status, 200);
    let got: Value = serde_json::from_str(&got).unwrap();
    let receipts: Vec<Value> = got["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["receipt"].clone())
        .collect();
    assert_eq!(receipts.len(), 3, "{got}");
    let (status, _) = spool.http_post(
        "/queues/spread/ack",
        &serde_json::json!({ "receipts": receipts }).to_string(),
    );
    assert_eq!(status, 200);
    let (_, counts) = spool.http_get("/queues/spread");
    let counts: Value = serde_json::from_str(&counts).unwrap();
    assert_eq!(
        (counts["ready"].as_u64(), counts["unacked"].as_u64()),
        (Some(0), Some(0)),
        "{counts}"
    );
}
