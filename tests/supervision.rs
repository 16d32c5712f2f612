//! Supervision: actors crash (injected with `POST /debug/faults`) while real clients work, and
//! SIGTERM ends the process in order, within its deadline, whatever ran before.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::amqp::{body, connect, declare, next, passive, publish_confirmed, subscribe};
use common::{client_config, consume, create_topic, producer, value, Spool};
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::Offset;

/// Lines of the broker's log about partition actors being unreachable, dying or coming back.
fn partition_trouble_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("partition unavailable")
                || l.contains("partition is gone")
                || l.contains("partition actor")
                || l.contains("partition is back")
                || l.contains("log lines suppressed")
        })
        .count()
}

/// The sequence that left the broker spinning at SIGTERM: confirmed publishes to a durable
/// queue, SIGKILL and restart, most of the queue consumed, the queue read back over Kafka. The
/// process must end within 10 s with status 0, and a restart must find what was left.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_after_queue_traffic_a_kill_and_a_kafka_read_ends_the_process() {
    let mut spool = Spool::start();
    {
        let conn = connect(&spool).await;
        let ch = conn.create_channel().await.unwrap();
        declare(&ch, "jobs", FieldTable::default()).await;
        publish_confirmed(&ch, "", "jobs", (0..2000).map(|i| format!("job-{i}"))).await;
    }
    spool.kill9();
    spool.launch();
    let conn = connect(&spool).await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    let mut consumer = subscribe(&ch, "jobs", "worker").await;
    for _ in 0..1500 {
        let d = next(&mut consumer).await;
        ch.basic_ack(d.delivery_tag, BasicAckOptions::default())
            .await
            .unwrap();
    }
    // Closing the channel returns what the consumer held; the count then shows the acks were
    // handled.
    ch.close(200, "done".into()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(passive(&ch, "jobs").await.unwrap().message_count(), 500);
    let read = consume(&spool.bootstrap(), "jobs", 0, Offset::Beginning, 2000);
    assert_eq!(value(&read[1999]), "job-1999");
    let (status, took) = spool
        .terminate(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM:\n{}", spool.log()));
    assert!(status.success(), "exit status {status:?}:\n{}", spool.log());
    println!("SIGTERM to exit: {took:?}");
    let log = spool.log();
    assert!(partition_trouble_lines(&log) < 10, "{log}");
    assert!(
        log.contains("CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'")
    );
    drop(conn);
    spool.launch();
    let conn = connect(&spool).await;
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(passive(&ch, "jobs").await.unwrap().message_count(), 500);
}

/// Partition actors and a group coordinator crash again and again while an idempotent
/// producer, a consumer group, an AMQP publisher with confirms and an AMQP worker with manual
/// acks run: the clients see at most retriable errors, every acknowledged record and confirmed
/// message arrives, no acknowledged message comes back, the CPU is idle a second after the
/// last restart, and the log says little about it.
#[tokio::test(flavor = "multi_thread")]
async fn crashed_partitions_and_coordinators_are_invisible_to_clients() {
    let mut spool = Spool::start();
    let bootstrap = spool.bootstrap();
    create_topic(&bootstrap, "stream", 2).await;
    let setup = connect(&spool).await;
    declare(
        &setup.create_channel().await.unwrap(),
        "tasks",
        FieldTable::default(),
    )
    .await;

    // Kafka: an idempotent producer (acks=all) and a consumer group that commits as it reads.
    let p = producer(
        &bootstrap,
        &[("acks", "all"), ("enable.idempotence", "true")],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let read = Arc::new(Mutex::new(HashSet::<String>::new()));
    let reader = {
        let (stop, read, bootstrap) = (stop.clone(), read.clone(), bootstrap.clone());
        std::thread::spawn(move || {
            let consumer: BaseConsumer = client_config(&bootstrap)
                .set("group.id", "readers")
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false")
                .set("session.timeout.ms", "6000")
                .set("heartbeat.interval.ms", "500")
                .create()
                .unwrap();
            consumer.subscribe(&["stream"]).unwrap();
            while !stop.load(Ordering::SeqCst) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    read.lock()
                        .unwrap()
                        .insert(String::from_utf8_lossy(m.payload().unwrap()).into_owned());
                    // A commit may fail while the coordinator restarts: the next one covers it.
                    let _ = consumer.commit_message(&m, CommitMode::Async);
                }
            }
        })
    };
    let produced = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..3000 {
            let v = format!("rec-{i}");
            let r = p
                .send(
                    FutureRecord::<(), _>::to("stream").payload(&v),
                    Duration::from_secs(30),
                )
                .await;
            if r.is_ok() {
                acked.push(v);
            }
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        acked
    });

    // AMQP: a publisher that republishes what is nacked, a worker with manual acks.
    let pub_conn = connect(&spool).await;
    let published = tokio::spawn(async move {
        let ch = pub_conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let mut confirmed = Vec::new();
        for i in 0..2000 {
            let b = format!("task-{i}");
            loop {
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        "tasks".into(),
                        BasicPublishOptions::default(),
                        b.as_bytes(),
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                if confirm.is_ack() {
                    break;
                }
            }
            confirmed.push(b);
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        confirmed
    });
    let work_conn = connect(&spool).await;
    let wch = work_conn.create_channel().await.unwrap();
    wch.basic_qos(50, BasicQosOptions::default()).await.unwrap();
    let mut worker = subscribe(&wch, "tasks", "worker").await;
    let acked_tasks = Arc::new(Mutex::new(HashSet::<String>::new()));
    let redelivered_acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let working = {
        let (acked, bad) = (acked_tasks.clone(), redelivered_acked.clone());
        tokio::spawn(async move {
            while let Some(Ok(d)) = worker.next().await {
                let b = body(&d);
                if !acked.lock().unwrap().insert(b.clone()) {
                    bad.lock().unwrap().push(b);
                }
                wch.basic_ack(d.delivery_tag, BasicAckOptions::default())
                    .await
                    .unwrap();
            }
        })
    };

    // The faults, while all of that runs.
    for round in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        spool.crash(r#"{"actor": "partition", "topic": "tasks", "partition": 0}"#);
        spool.crash(&format!(
            r#"{{"actor": "partition", "topic": "stream", "partition": {}}}"#,
            round % 2
        ));
        if round == 2 {
            spool.crash(r#"{"actor": "group", "group": "readers"}"#);
        }
    }

    let acked = produced.await.unwrap();
    let confirmed = published.await.unwrap();
    assert!(
        acked.len() >= 2900,
        "only {} of 3000 records acknowledged",
        acked.len()
    );
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let have_all = {
            let read = read.lock().unwrap();
            let tasks = acked_tasks.lock().unwrap();
            acked.iter().all(|v| read.contains(v)) && confirmed.iter().all(|b| tasks.contains(b))
        };
        if have_all {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "not everything acknowledged arrived: {} of {} records read, {} of {} tasks worked\n{}",
            read.lock().unwrap().len(),
            acked.len(),
            acked_tasks.lock().unwrap().len(),
            confirmed.len(),
            spool.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        redelivered_acked.lock().unwrap().is_empty(),
        "acknowledged messages delivered again: {:?}",
        redelivered_acked.lock().unwrap()
    );

    // Idle clients stay connected; one more crash, then the broker must go quiet.
    spool.crash(r#"{"actor": "partition", "topic": "tasks", "partition": 0}"#);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = spool.cpu_time();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = spool.cpu_time() - before;
    assert!(
        used < Duration::from_millis(250),
        "the broker used {used:?} of CPU in the second after a restart"
    );
    let log = spool.log();
    assert!(
        partition_trouble_lines(&log) < 100,
        "{} lines about partitions:\n{log}",
        partition_trouble_lines(&log)
    );

    // SIGTERM with every client still connected: an orderly exit, and a restart finds every
    // acknowledged record and every settlement.
    let (status, took) = spool
        .terminate(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM:\n{}", spool.log()));
    assert!(status.success(), "exit status {status:?}:\n{}", spool.log());
    println!("SIGTERM to exit with clients connected: {took:?}");
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    working.abort();
    spool.launch();
    let ch = connect(&spool).await.create_channel().await.unwrap();
    assert_eq!(passive(&ch, "tasks").await.unwrap().message_count(), 0);
    let (_, topic) = spool.http_get("/topics/stream");
    let topic: serde_json::Value = serde_json::from_str(&topic).unwrap();
    let mut stored = HashSet::new();
    for p in 0..2 {
        let end = topic["partitions"][p]["high_watermark"].as_u64().unwrap();
        for m in consume(
            &spool.bootstrap(),
            "stream",
            p as i32,
            Offset::Beginning,
            end as usize,
        ) {
            stored.insert(value(&m));
        }
    }
    assert!(acked.iter().all(|v| stored.contains(v)));
}
