//! `spool groups` against a running broker: list, describe with lag, and reset-offsets (refused
//! while the group has members).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{client_config, producer, Spool};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;

fn groups(spool: &Spool, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["groups", "--bootstrap", &spool.bootstrap()])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn list_describe_and_reset_offsets() {
    let spool = Spool::start_with(&["--group-initial-rebalance-delay-ms", "0"]);
    let b = spool.bootstrap();
    let p = producer(&b, &[]);
    for i in 0..30 {
        p.send(
            FutureRecord::<(), _>::to("cli")
                .payload(&i.to_string())
                .partition(0),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    }
    // A member consumes 20 records and commits.
    let consumer: BaseConsumer = client_config(&b)
        .set("group.id", "cli-g")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["cli"]).unwrap();
    let mut got = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while got < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "no records\n{}",
            spool.log()
        );
        // `None` also comes back after serving a rebalance event.
        if let Some(m) = consumer.poll(Duration::from_millis(500)) {
            consumer
                .commit_message(&m.unwrap(), CommitMode::Sync)
                .unwrap();
            got += 1;
        }
    }

    let (ok, out) = groups(&spool, &["list"]);
    assert!(
        ok && out.contains("cli-g") && out.contains("Stable"),
        "{out}"
    );
    let (ok, out) = groups(
        &spool,
        &["reset-offsets", "cli-g", "--topic", "cli", "--to-earliest"],
    );
    assert!(
        !ok && out.contains("stop its consumers"),
        "reset must be refused while active: {out}"
    );

    drop(consumer);
    let (ok, out) = groups(&spool, &["describe", "cli-g"]);
    assert!(ok, "{out}");
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("cli "))
        .unwrap_or_else(|| panic!("no row for the topic: {out}"))
        .split_whitespace()
        .collect();
    assert_eq!(row, ["cli", "0", "20", "30", "10"], "{out}");

    let (ok, out) = groups(
        &spool,
        &["reset-offsets", "cli-g", "--topic", "cli", "--to-earliest"],
    );
    assert!(ok && out.contains("cli-0: 0"), "{out}");
    let (ok, out) = groups(
        &spool,
        &[
            "reset-offsets",
            "cli-g",
            "--topic",
            "cli",
            "--to-offset",
            "7",
        ],
    );
    assert!(ok && out.contains("cli-0: 7"), "{out}");
    let (_, out) = groups(&spool, &["describe", "cli-g"]);
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["cli", "0", "7", "30", "23"]),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn describe_and_reset_see_consumer_protocol_groups() {
    let spool = Spool::start_with(&["--group-consumer-heartbeat-interval-ms", "500"]);
    let b = spool.bootstrap();
    common::create_topic(&b, "cli848", 2).await;
    let consumer: BaseConsumer = client_config(&b)
        .set("group.id", "cli-848")
        .set("group.protocol", "consumer")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&["cli848"]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while consumer.assignment().unwrap().count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "never assigned\n{}",
            spool.log()
        );
        consumer.poll(Duration::from_millis(100));
    }
    // DescribeGroups says it is not a classic group; the CLI asks ConsumerGroupDescribe.
    let (ok, out) = groups(&spool, &["describe", "cli-848"]);
    assert!(ok, "{out}");
    assert!(out.contains("1 members"), "{out}");
    let (ok, out) = groups(
        &spool,
        &[
            "reset-offsets",
            "cli-848",
            "--topic",
            "cli848",
            "--to-earliest",
        ],
    );
    assert!(!ok, "reset allowed while the group has a member: {out}");
}
