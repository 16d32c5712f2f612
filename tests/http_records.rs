//! Records over HTTP with a plain HTTP client, against rdkafka on the other side: produce over
//! HTTP and consume with rdkafka, produce with rdkafka and read over HTTP, and every error path.

mod common;

use std::time::Duration;

use common::{consume, create_topic, producer, value, Spool};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureRecord;
use rdkafka::Offset;
use serde_json::{json, Value};

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn records_produced_over_http_are_read_by_rdkafka_and_keys_land_where_kafka_puts_them() {
    let spool = Spool::start();
    let b = spool.bootstrap();
    create_topic(&b, "web", 3).await;
    let (status, body) = spool.http_post(
        "/topics/web/records",
        &json!({"records": [
            {"value": {"order": 1}, "partition": 0},
            {"value_base64": "AAEC/w==", "partition": 0, "headers": {"trace": "t-1"}},
            {"key": "alice", "value": "book"},
        ]})
        .to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let offsets = parse(&body)["offsets"].clone();
    assert_eq!(offsets[0], json!({"partition": 0, "offset": 0}));
    assert_eq!(offsets[1], json!({"partition": 0, "offset": 1}));
    let got = consume(&b, "web", 0, Offset::Beginning, 2);
    assert_eq!(value(&got[0]), r#"{"order":1}"#);
    assert_eq!(got[1].payload(), Some(&[0u8, 1, 2, 255][..]));
    let h = got[1].headers().unwrap().get(0);
    assert_eq!((h.key, h.value), ("trace", Some(&b"t-1"[..])));
    // The keyed record went where Kafka's (murmur2) partitioner puts "alice".
    let keyed = offsets[2]["partition"].as_i64().unwrap() as i32;
    let p = producer(&b, &[("partitioner", "murmur2_random")]);
    let delivered = p
        .send(
            FutureRecord::to("web").key("alice").payload("again"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(keyed, delivered.partition);
    let at = offsets[2]["offset"].as_i64().unwrap();
    let got = consume(&b, "web", keyed, Offset::Offset(at), 1);
    assert_eq!(
        (got[0].key(), value(&got[0]).as_str()),
        (Some(&b"alice"[..]), r#""book""#)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn records_produced_with_rdkafka_are_read_over_http_and_reads_wait_for_new_ones() {
    let spool = Spool::start();
    let b = spool.bootstrap();
    create_topic(&b, "feed", 1).await;
    let p = producer(&b, &[]);
    for (k, v) in [("a", r#"{"n":1}"#), ("b", "not json")] {
        p.send(
            FutureRecord::to("feed").key(k).payload(v),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    let (status, body) = spool.http_get("/topics/feed/partitions/0/records?offset=0");
    assert_eq!(status, 200, "{body}");
    let v = parse(&body);
    assert_eq!(v["high_watermark"], 2);
    assert_eq!(v["records"][0]["key"], "a");
    assert_eq!(v["records"][0]["value"], json!({"n": 1}));
    assert_eq!(v["records"][1]["offset"], 1);
    assert_eq!(v["records"][1]["value_base64"], "bm90IGpzb24=");
    // From the end with a wait: an empty answer once the wait is over (nothing arrives).
    let (status, body) =
        spool.http_get("/topics/feed/partitions/0/records?offset=2&timeout_ms=200");
    assert_eq!(
        (status, parse(&body)["records"].as_array().unwrap().len()),
        (200, 0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_json_errors_with_their_status() {
    let spool = Spool::start();
    create_topic(&spool.bootstrap(), "t", 1).await;
    for (what, response, want) in [
        (
            "unknown topic",
            spool.http_post("/topics/nope/records", r#"{"records":[{"value":1}]}"#),
            404,
        ),
        (
            "not JSON",
            spool.http_post("/topics/t/records", "{records"),
            400,
        ),
        (
            "no records",
            spool.http_post("/topics/t/records", r#"{"records":[]}"#),
            400,
        ),
        (
            "both values",
            spool.http_post(
                "/topics/t/records",
                r#"{"records":[{"value":1,"value_base64":"AA=="}]}"#,
            ),
            400,
        ),
        (
            "bad base64",
            spool.http_post(
                "/topics/t/records",
                r#"{"records":[{"value_base64":"!!"}]}"#,
            ),
            400,
        ),
        (
            "no such partition",
            spool.http_post(
                "/topics/t/records",
                r#"{"records":[{"value":1,"partition":5}]}"#,
            ),
            404,
        ),
        (
            "partition not a number",
            spool.http_get("/topics/t/partitions/x/records"),
            400,
        ),
        (
            "offset not a number",
            spool.http_get("/topics/t/partitions/0/records?offset=x"),
            400,
        ),
        (
            "unknown partition",
            spool.http_get("/topics/t/partitions/3/records"),
            404,
        ),
        (
            "offset past the end",
            spool.http_get("/topics/t/partitions/0/records?offset=99"),
            416,
        ),
    ] {
        common::assert_json_error(what, response, want);
    }
    // The broker still serves.
    assert_eq!(spool.http_get("/healthz").0, 200);
}
