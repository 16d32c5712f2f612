//! Topic and consumer-group administration over HTTP with a plain HTTP client, checked from the
//! Kafka side with rdkafka: topics created, grown, reconfigured and deleted over HTTP are what
//! Kafka clients see, and group offsets reset over HTTP are where an rdkafka consumer resumes.

mod common;

use std::time::Duration;

use common::{assert_json_error, client_config, create_topic, producer, Spool};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::TopicPartitionList;
use serde_json::{json, Value};

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The partition count rdkafka's metadata shows for `topic` (None: no such topic).
fn kafka_partitions(bootstrap: &str, topic: &str) -> Option<usize> {
    let c: BaseConsumer = client_config(bootstrap).create().unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let t = &md.topics()[0];
    t.error().is_none().then(|| t.partitions().len())
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_created_altered_grown_and_deleted_over_http_are_what_kafka_clients_see() {
    let spool = Spool::start_with(&["--auto-create-topics", "false"]);
    let b = spool.bootstrap();
    let (status, body) = spool.http_post(
        "/topics",
        &json!({"name": "adm", "partitions": 2, "configs": {"retention.ms": "600000"}}).to_string(),
    );
    assert_eq!(status, 201, "{body}");
    let t = parse(&body);
    assert_eq!(t["partitions"].as_array().unwrap().len(), 2);
    assert_eq!(
        t["configs"]["retention.ms"],
        json!({"value": "600000", "source": "topic"})
    );
    assert_eq!(t["configs"]["segment.bytes"]["source"], "default");
    assert_eq!(kafka_partitions(&b, "adm"), Some(2));
    let (_, body) = spool.http_get("/topics");
    assert!(
        parse(&body)["topics"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "adm", "partitions": 2})),
        "{body}"
    );

    // Records produced by rdkafka show in the partition offsets.
    let p = producer(&b, &[]);
    for i in 0..3 {
        p.send(
            FutureRecord::<(), _>::to("adm")
                .partition(1)
                .payload(&format!("r{i}")),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    let (_, body) = spool.http_get("/topics/adm");
    let part = &parse(&body)["partitions"][1];
    assert_eq!(
        (
            part["log_start_offset"].as_u64(),
            part["high_watermark"].as_u64()
        ),
        (Some(0), Some(3))
    );

    // Incremental config changes: set one key, drop another.
    let (status, body) = spool.http(
        "PATCH",
        "/topics/adm/configs",
        Some(
            &json!({"set": {"max.message.bytes": "2048"}, "delete": ["retention.ms"]}).to_string(),
        ),
    );
    assert_eq!(status, 200, "{body}");
    let t = parse(&body);
    assert_eq!(t["configs"]["max.message.bytes"]["value"], "2048");
    assert_eq!(t["configs"]["retention.ms"]["source"], "default");
    // The new limit is enforced on Kafka produce.
    let big = vec![b'x'; 4096];
    let err = p
        .send(
            FutureRecord::<(), _>::to("adm").partition(0).payload(&big),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
    assert!(
        err.0.to_string().contains("MessageSizeTooLarge")
            || err.0.to_string().contains("too large"),
        "{}",
        err.0
    );

    // Grow to 4 partitions.
    let (status, body) = spool.http_post("/topics/adm/partitions", r#"{"count": 4}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse(&body)["partitions"].as_array().unwrap().len(), 4);
    assert_eq!(kafka_partitions(&b, "adm"), Some(4));

    // Errors.
    assert_json_error(
        "exists",
        spool.http_post("/topics", r#"{"name": "adm"}"#),
        409,
    );
    assert_json_error(
        "bad name",
        spool.http_post("/topics", r#"{"name": "a/b"}"#),
        400,
    );
    assert_json_error(
        "unknown field",
        spool.http_post("/topics", r#"{"name": "x", "partitons": 3}"#),
        400,
    );
    assert_json_error(
        "zero partitions",
        spool.http_post("/topics", r#"{"name": "x", "partitions": 0}"#),
        400,
    );
    assert_json_error(
        "unknown config",
        spool.http(
            "PATCH",
            "/topics/adm/configs",
            Some(r#"{"set": {"no.such": "1"}}"#),
        ),
        400,
    );
    assert_json_error(
        "bad config value",
        spool.http(
            "PATCH",
            "/topics/adm/configs",
            Some(r#"{"set": {"retention.ms": "soon"}}"#),
        ),
        400,
    );
    assert_json_error(
        "shrink",
        spool.http_post("/topics/adm/partitions", r#"{"count": 3}"#),
        400,
    );
    assert_json_error("unknown topic", spool.http_get("/topics/nope"), 404);
    assert_json_error(
        "unknown topic configs",
        spool.http("PATCH", "/topics/nope/configs", Some("{}")),
        404,
    );
    assert_json_error(
        "wrong method",
        spool.http("PUT", "/topics/adm", Some("{}")),
        405,
    );

    // Delete.
    let (status, body) = spool.http("DELETE", "/topics/adm", None);
    assert_eq!(status, 204, "{body}");
    assert_json_error("deleted", spool.http_get("/topics/adm"), 404);
    assert_eq!(kafka_partitions(&b, "adm"), None);
    assert_json_error(
        "deleted twice",
        spool.http("DELETE", "/topics/adm", None),
        404,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn group_offsets_reset_over_http_are_where_an_rdkafka_consumer_resumes() {
    let spool = Spool::start();
    let b = spool.bootstrap();
    create_topic(&b, "grp", 2).await;
    let p = producer(&b, &[]);
    for part in 0..2 {
        for i in 0..5 {
            p.send(
                FutureRecord::<(), _>::to("grp")
                    .partition(part)
                    .payload(&format!("{part}-{i}")),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        }
    }
    // An rdkafka member reads 3 records of partition 0 and commits; the group has a member.
    let consumer: BaseConsumer = client_config(&b)
        .set("group.id", "g1")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["grp"]).unwrap();
    // poll answers None for rebalance events too: read until all 10 are in, within 30 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    while seen < 10 {
        assert!(std::time::Instant::now() < deadline, "{seen} of 10 records");
        if let Some(m) = consumer.poll(Duration::from_millis(500)) {
            drop(m.unwrap());
            seen += 1;
        }
    }
    let mut commit = TopicPartitionList::new();
    commit
        .add_partition_offset("grp", 0, rdkafka::Offset::Offset(3))
        .unwrap();
    commit
        .add_partition_offset("grp", 1, rdkafka::Offset::Offset(5))
        .unwrap();
    consumer.commit(&commit, CommitMode::Sync).unwrap();

    let (status, body) = spool.http_get("/groups/g1");
    assert_eq!(status, 200, "{body}");
    let g = parse(&body);
    assert_eq!(g["state"], "Stable", "{body}");
    assert_eq!(g["members"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(
        g["offsets"],
        json!([
            {"topic": "grp", "partition": 0, "committed": 3, "end": 5, "lag": 2},
            {"topic": "grp", "partition": 1, "committed": 5, "end": 5, "lag": 0},
        ])
    );
    let (_, body) = spool.http_get("/groups");
    let listed = parse(&body)["groups"].clone();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["group"] == "g1" && x["lag"] == 2 && x["members"] == 1),
        "{body}"
    );
    // Refused while the group has a member.
    assert_json_error(
        "reset with members",
        spool.http_post(
            "/groups/g1/offsets/reset",
            r#"{"topic": "grp", "to": "earliest"}"#,
        ),
        409,
    );
    assert_json_error(
        "delete with members",
        spool.http("DELETE", "/groups/g1", None),
        409,
    );
    drop(consumer);

    // Empty now: reset partition 1 to offset 2, then rdkafka resumes there.
    let reset = |body: Value| {
        let (status, out) = spool.http_post("/groups/g1/offsets/reset", &body.to_string());
        assert_eq!(status, 200, "{out}");
        parse(&out)["offsets"].clone()
    };
    // rdkafka's close left the group (LeaveGroup answered) before drop returned.
    let (_, body) = spool.http_get("/groups/g1");
    assert_eq!(parse(&body)["state"], "Empty", "{body}");
    assert_eq!(
        reset(json!({"topic": "grp", "partitions": [1], "to": "offset", "offset": 2})),
        json!([{"topic": "grp", "partition": 1, "offset": 2}])
    );
    assert_eq!(
        reset(json!({"topic": "grp", "to": "latest"})),
        json!([
            {"topic": "grp", "partition": 0, "offset": 5},
            {"topic": "grp", "partition": 1, "offset": 5},
        ])
    );
    // Offsets beyond the log are clamped, as Kafka's tool does; a timestamp after every record
    // lands on the end; one before every record on the start.
    assert_eq!(
        reset(json!({"topic": "grp", "to": "offset", "offset": 99}))[0]["offset"],
        5
    );
    assert_eq!(
        reset(json!({"topic": "grp", "to": "timestamp", "timestamp": 0}))[1]["offset"],
        0
    );
    assert_eq!(
        reset(json!({"topic": "grp", "partitions": [1], "to": "offset", "offset": 2})),
        json!([{"topic": "grp", "partition": 1, "offset": 2}])
    );
    let consumer: BaseConsumer = client_config(&b)
        .set("group.id", "g1")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("grp", 1);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        committed.find_partition("grp", 1).unwrap().offset(),
        rdkafka::Offset::Offset(2)
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("grp", 1, rdkafka::Offset::Stored)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    // Detached: a message still alive would hold up the consumer's close.
    let m = consumer
        .poll(Duration::from_secs(30))
        .unwrap()
        .unwrap()
        .detach();
    assert_eq!((m.offset(), m.payload()), (2, Some(&b"1-2"[..])));
    drop(consumer);

    // Errors.
    assert_json_error("unknown group", spool.http_get("/groups/nope"), 404);
    assert_json_error(
        "unknown topic",
        spool.http_post(
            "/groups/g1/offsets/reset",
            r#"{"topic": "nope", "to": "earliest"}"#,
        ),
        404,
    );
    assert_json_error(
        "unknown partition",
        spool.http_post(
            "/groups/g1/offsets/reset",
            r#"{"topic": "grp", "partitions": [7], "to": "earliest"}"#,
        ),
        404,
    );
    assert_json_error(
        "unknown target",
        spool.http_post(
            "/groups/g1/offsets/reset",
            r#"{"topic": "grp", "to": "yesterday"}"#,
        ),
        400,
    );
    assert_json_error(
        "missing offset",
        spool.http_post(
            "/groups/g1/offsets/reset",
            r#"{"topic": "grp", "to": "offset"}"#,
        ),
        400,
    );

    // Delete the (empty) group.
    let (status, body) = spool.http("DELETE", "/groups/g1", None);
    assert_eq!(status, 204, "{body}");
    assert_json_error("deleted group", spool.http_get("/groups/g1"), 404);
}
