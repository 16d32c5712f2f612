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

/// Publishes `n` persistent messages `{prefix}{i}` to `queue` with confirms, publishing again
/// what is nacked; answers what was confirmed.
fn confirmed_publisher(
    conn: lapin::Connection,
    queue: &'static str,
    prefix: &'static str,
    n: usize,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let mut confirmed = Vec::new();
        for i in 0..n {
            let b = format!("{prefix}{i}");
            loop {
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        queue.into(),
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
    })
}

/// A worker on its own channel of `conn` (prefetch 50, manual acks): records what it acks in
/// `acked`, and in `again` what it is given after it, or anyone, acked it. Its stream ending
/// (a basic.cancel) fails the test.
async fn worker(
    conn: &lapin::Connection,
    queue: &str,
    tag: &str,
    acked: Arc<Mutex<HashSet<String>>>,
    again: Arc<Mutex<Vec<String>>>,
) -> Worker {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(50, BasicQosOptions::default()).await.unwrap();
    let mut consumer = subscribe(&ch, queue, tag).await;
    let stop = Arc::new(tokio::sync::Notify::new());
    let task = {
        let (stop, tag) = (stop.clone(), tag.to_string());
        tokio::spawn(async move {
            loop {
                let d = tokio::select! {
                    _ = stop.notified() => return,
                    d = consumer.next() => d,
                };
                let Some(Ok(d)) = d else {
                    panic!("consumer {tag} ended: {d:?}");
                };
                let b = body(&d);
                if !acked.lock().unwrap().insert(b.clone()) {
                    again.lock().unwrap().push(b);
                }
                ch.basic_ack(d.delivery_tag, BasicAckOptions::default())
                    .await
                    .unwrap();
            }
        })
    };
    Worker { stop, task }
}

/// A running [`worker`]; dropping it stops it (and fails the test if it had failed).
struct Worker {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// False once the worker's task has ended (its consumer was cancelled, or a call failed).
    fn running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
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
    // Bodies are numbers, so that the HTTP receiver reads them as the worker does.
    let published = confirmed_publisher(connect(&spool).await, "tasks", "", 2000);
    let work_conn = connect(&spool).await;
    let acked_tasks = Arc::new(Mutex::new(HashSet::<String>::new()));
    let redelivered_acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let working = worker(
        &work_conn,
        "tasks",
        "worker",
        acked_tasks.clone(),
        redelivered_acked.clone(),
    )
    .await;
    // HTTP: a long-poll receiver on the same queue.
    let http_stop = Arc::new(AtomicBool::new(false));
    let receiver = http_receiver(
        &spool,
        "tasks",
        http_stop.clone(),
        acked_tasks.clone(),
        redelivered_acked.clone(),
    );

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
    http_stop.store(true, Ordering::SeqCst);
    receiver.join().unwrap();

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
    drop(working);
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

/// Lines of the broker's log about queue actors ending, restarting and consumers re-attaching.
fn queue_trouble_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("queue actor")
                || l.contains("queue's actor")
                || l.contains("injected panic")
                || l.contains("log lines suppressed")
        })
        .count()
}

/// Receives from `queue` over HTTP (long polls, leases of a minute) and acknowledges what it
/// gets, until `stop`: records like [`worker`] does. A 503 (the queue restarting) is retried;
/// any other failure fails the test. Answers how many 503s it saw.
fn http_receiver(
    spool: &Spool,
    queue: &str,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<HashSet<String>>>,
    again: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<usize> {
    let (port, queue) = (spool.http_port, queue.to_string());
    std::thread::spawn(move || {
        let http = |path: &str, body: &str| common::http_to(port, "POST", path, Some(body));
        let mut retried = 0;
        while !stop.load(Ordering::SeqCst) {
            let path = format!("/queues/{queue}/receive?max=10&wait_ms=300&visibility_ms=60000");
            let (status, body) = http(&path, "");
            if status == 503 {
                // As a client would: a pause before trying again.
                retried += 1;
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            assert_eq!(status, 200, "receive: {body}");
            let got: serde_json::Value = serde_json::from_str(&body).unwrap();
            let mut receipts = Vec::new();
            for m in got["messages"].as_array().unwrap() {
                let b = m["body"].to_string();
                if !acked.lock().unwrap().insert(b.clone()) {
                    again.lock().unwrap().push(b);
                }
                receipts.push(m["receipt"].clone());
            }
            if receipts.is_empty() {
                continue;
            }
            let ack = serde_json::json!({ "receipts": receipts }).to_string();
            loop {
                let (status, body) = http(&format!("/queues/{queue}/ack"), &ack);
                if status == 503 {
                    retried += 1;
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                assert_eq!(status, 200, "ack: {body}");
                break;
            }
        }
        retried
    })
}

/// Queue actors crash while two lapin workers (manual acks) and an HTTP long-poll receiver
/// work a queue fed by a confirming publisher: the workers' consumers are never cancelled,
/// everything confirmed is worked, nothing acknowledged is delivered again, the broker goes
/// quiet, and SIGTERM still ends it in order.
#[tokio::test(flavor = "multi_thread")]
async fn crashed_queue_actors_are_invisible_to_consumers() {
    let mut spool = Spool::start();
    let setup = connect(&spool).await;
    declare(
        &setup.create_channel().await.unwrap(),
        "jobs",
        FieldTable::default(),
    )
    .await;
    // Bodies are numbers, so that the HTTP receiver reads them as the workers do.
    let published = confirmed_publisher(connect(&spool).await, "jobs", "", 3000);
    let acked = Arc::new(Mutex::new(HashSet::<String>::new()));
    let again = Arc::new(Mutex::new(Vec::<String>::new()));
    let (c1, c2) = (connect(&spool).await, connect(&spool).await);
    let w1 = worker(&c1, "jobs", "w1", acked.clone(), again.clone()).await;
    let w2 = worker(&c2, "jobs", "w2", acked.clone(), again.clone()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = http_receiver(&spool, "jobs", stop.clone(), acked.clone(), again.clone());

    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        spool.crash(r#"{"actor": "queue", "queue": "jobs"}"#);
    }
    let confirmed = published.await.unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done = {
            let acked = acked.lock().unwrap();
            confirmed.iter().all(|b| acked.contains(b))
        };
        if done {
            break;
        }
        assert!(
            w1.running() && w2.running(),
            "a worker stopped:\n{}",
            spool.log()
        );
        assert!(
            std::time::Instant::now() < until,
            "{} of {} confirmed messages worked\n{}",
            acked.lock().unwrap().len(),
            confirmed.len(),
            spool.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(w1.running() && w2.running(), "a worker stopped");
    assert!(
        again.lock().unwrap().is_empty(),
        "acknowledged messages delivered again: {:?}",
        again.lock().unwrap()
    );
    stop.store(true, Ordering::SeqCst);
    let retried = receiver.join().unwrap();
    println!("HTTP requests answered 503 while the queue restarted: {retried}");

    // Idle consumers stay attached; one more crash, then the broker must go quiet.
    spool.crash(r#"{"actor": "queue", "queue": "jobs"}"#);
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
        queue_trouble_lines(&log) < 100,
        "{} lines about queues:\n{log}",
        queue_trouble_lines(&log)
    );

    // The consumers still work after the last crash.
    let ch = setup.create_channel().await.unwrap();
    publish_confirmed(&ch, "", "jobs", ["\"after\"".to_string()]).await;
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !acked.lock().unwrap().contains("\"after\"") {
        assert!(
            std::time::Instant::now() < until,
            "not worked after the last crash:\n{}",
            spool.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    drop((w1, w2));
    let (status, _) = spool
        .terminate(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM:\n{}", spool.log()));
    assert!(status.success(), "exit status {status:?}:\n{}", spool.log());
    spool.launch();
    let ch = connect(&spool).await.create_channel().await.unwrap();
    assert_eq!(passive(&ch, "jobs").await.unwrap().message_count(), 0);
}

/// The two journals' actors crash while a worker settles a queue and a consumer group commits
/// offsets: after a SIGKILL and a restart, every settlement a count answered for and every
/// commit the broker acknowledged is still there.
#[tokio::test(flavor = "multi_thread")]
async fn crashed_journals_lose_nothing_acknowledged() {
    let mut spool = Spool::start();
    let bootstrap = spool.bootstrap();
    create_topic(&bootstrap, "events", 1).await;
    let setup = connect(&spool).await;
    declare(
        &setup.create_channel().await.unwrap(),
        "ledger",
        FieldTable::default(),
    )
    .await;
    // A group member that commits each record it reads, synchronously; the last offset the
    // broker acknowledged is kept.
    let p = producer(&bootstrap, &[("acks", "all")]);
    let values: Vec<String> = (0..1000).map(|i| format!("e-{i}")).collect();
    let sends = values.iter().map(|v| {
        p.send(
            FutureRecord::<(), _>::to("events").payload(v),
            Duration::from_secs(10),
        )
    });
    for sent in futures_util::future::join_all(sends).await {
        sent.unwrap();
    }
    let published = confirmed_publisher(connect(&spool).await, "ledger", "", 3000);
    let acked = Arc::new(Mutex::new(HashSet::<String>::new()));
    let again = Arc::new(Mutex::new(Vec::<String>::new()));
    let wc = connect(&spool).await;
    let w = worker(&wc, "ledger", "w", acked.clone(), again.clone()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(Mutex::new(-1i64));
    let member = {
        let (stop, committed, bootstrap) = (stop.clone(), committed.clone(), bootstrap.clone());
        std::thread::spawn(move || {
            let consumer: BaseConsumer = client_config(&bootstrap)
                .set("group.id", "auditors")
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            consumer.subscribe(&["events"]).unwrap();
            while !stop.load(Ordering::SeqCst) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    // A commit the journal lost is answered with an error: it does not count.
                    if consumer.commit_message(&m, CommitMode::Sync).is_ok() {
                        *committed.lock().unwrap() = m.offset() + 1;
                    }
                }
            }
        })
    };

    // Each journal stalls (its mailbox fills) and crashes while its writers are busy.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        spool.crash(r#"{"actor": "queue-state-journal", "stall_ms": 100}"#);
    }
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while *committed.lock().unwrap() < 0 {
        assert!(std::time::Instant::now() < until, "no commit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        spool.crash(r#"{"actor": "offsets-journal", "stall_ms": 100}"#);
    }
    let confirmed = published.await.unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !confirmed.iter().all(|b| acked.lock().unwrap().contains(b))
        || *committed.lock().unwrap() < 1000
    {
        assert!(
            std::time::Instant::now() < until,
            "{} of {} messages worked, offset {} committed\n{}",
            acked.lock().unwrap().len(),
            confirmed.len(),
            committed.lock().unwrap(),
            spool.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    member.join().unwrap();
    assert!(w.running(), "the worker stopped");
    assert!(
        again.lock().unwrap().is_empty(),
        "{:?}",
        again.lock().unwrap()
    );
    // The count is answered once every settlement before it is in the journal.
    let ch = setup.create_channel().await.unwrap();
    assert_eq!(passive(&ch, "ledger").await.unwrap().message_count(), 0);
    assert!(spool.log().contains("restarted it from the journal"));

    drop(w);
    spool.kill9();
    spool.launch();
    let ch = connect(&spool).await.create_channel().await.unwrap();
    assert_eq!(
        passive(&ch, "ledger").await.unwrap().message_count(),
        0,
        "settlements lost:\n{}",
        spool.log()
    );
    let consumer: BaseConsumer = client_config(&spool.bootstrap())
        .set("group.id", "auditors")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition("events", 0);
    let offsets = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        offsets.find_partition("events", 0).unwrap().offset(),
        Offset::Offset(1000)
    );
}
