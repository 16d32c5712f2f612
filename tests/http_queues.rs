//! Queues over HTTP (SQS-style) with a plain HTTP client, beside lapin: send over HTTP and
//! consume with lapin, receive with a visibility timeout, ack, nack to the dead-letter exchange,
//! counts, and errors.

mod common;

use common::Spool;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use serde_json::{json, Value};

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn send_receive_ack_nack_and_leases() {
    let spool = Spool::start();
    let conn = Connection::connect(&spool.amqp_uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        "dlx".into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        "dead".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "dead".into(),
        "dlx".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("dlx".into()),
    );
    ch.queue_declare("jobs".into(), QueueDeclareOptions::durable(), args)
        .await
        .unwrap();

    // Sent over HTTP, consumed with lapin (as published to the default exchange).
    let (status, body) = spool.http_post(
        "/queues/jobs/messages",
        &json!({"messages": [
            {"body": {"job": 1}, "headers": {"tenant": "acme"}},
            {"body_base64": "AAE="},
            {"body": "third"},
        ]})
        .to_string(),
    );
    assert_eq!(
        (status, parse(&body)["sent"].clone()),
        (200, json!(3)),
        "{body}"
    );
    let first = ch
        .basic_get("jobs".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.delivery.data, br#"{"job":1}"#);
    assert_eq!(first.delivery.routing_key.as_str(), "jobs");
    let headers = first.delivery.properties.headers().clone().unwrap();
    assert_eq!(
        headers.inner().get("tenant"),
        Some(&AMQPValue::LongString("acme".into()))
    );

    // Received over HTTP with a short lease; one is acked, the other lapses and comes back.
    let (status, body) = spool.http_post("/queues/jobs/receive?max=5&visibility_ms=300", "");
    assert_eq!(status, 200, "{body}");
    let got = parse(&body)["messages"].as_array().unwrap().clone();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["body_base64"], "AAE=");
    assert_eq!(got[1]["body"], "third");
    let (status, _) = spool.http_post(
        "/queues/jobs/ack",
        &json!({"receipts": [got[0]["receipt"]]}).to_string(),
    );
    assert_eq!(status, 200);
    let (_, stats) = spool.http_get("/queues/jobs");
    assert_eq!(parse(&stats)["unacked"], 1, "{stats}");
    let (_, body) = spool.http_post("/queues/jobs/receive?visibility_ms=60000&wait_ms=10000", "");
    let again = parse(&body)["messages"].as_array().unwrap().clone();
    assert_eq!(again.len(), 1, "{body}");
    assert_eq!(
        (again[0]["body"].clone(), again[0]["redelivered"].clone()),
        (json!("third"), json!(true))
    );

    // Rejected without requeue: dead-lettered.
    let (status, _) = spool.http_post(
        "/queues/jobs/nack",
        &json!({"receipts": [again[0]["receipt"]], "requeue": false}).to_string(),
    );
    assert_eq!(status, 200);
    let (_, body) = spool.http_post("/queues/dead/receive?wait_ms=10000", "");
    let dead = parse(&body)["messages"].as_array().unwrap().clone();
    assert_eq!(dead.len(), 1, "{body}");
    assert_eq!(dead[0]["body"], "third");
    let (_, stats) = spool.http_get("/queues/jobs");
    let s = parse(&stats);
    assert_eq!(
        (s["ready"].clone(), s["unacked"].clone()),
        (json!(0), json!(0)),
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_errors_are_json() {
    let spool = Spool::start();
    let conn = Connection::connect(&spool.amqp_uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "q".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for (what, response, want) in [
        (
            "send to a missing queue",
            spool.http_post("/queues/nope/messages", r#"{"messages":[{"body":1}]}"#),
            404,
        ),
        (
            "receive from a missing queue",
            spool.http_post("/queues/nope/receive", ""),
            404,
        ),
        (
            "stats of a missing queue",
            spool.http_get("/queues/nope"),
            404,
        ),
        (
            "no body",
            spool.http_post("/queues/q/messages", r#"{"messages":[{}]}"#),
            400,
        ),
        (
            "not a receipt",
            spool.http_post("/queues/q/ack", r#"{"receipts":["x"]}"#),
            400,
        ),
        (
            "bad max",
            spool.http_post("/queues/q/receive?max=many", ""),
            400,
        ),
    ] {
        common::assert_json_error(what, response, want);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn declare_and_delete_over_http() {
    let spool = Spool::start();
    // Declared over HTTP with AMQP arguments; declaring again the same way is a no-op.
    let args = r#"{"arguments": {"x-max-length": 2, "x-overflow": "reject-publish"}}"#;
    for _ in 0..2 {
        let (status, body) = spool.http("PUT", "/queues/work", Some(args));
        assert_eq!(status, 200, "{body}");
        assert_eq!(parse(&body)["ready"], json!(0), "{body}");
    }
    // lapin sees the same queue with the same arguments (a passive declare, then an
    // equivalent one), and the length limit holds for what HTTP sends.
    let conn = Connection::connect(&spool.amqp_uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut table = FieldTable::default();
    table.insert("x-max-length".into(), AMQPValue::LongLongInt(2));
    table.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    ch.queue_declare("work".into(), QueueDeclareOptions::durable(), table)
        .await
        .unwrap();
    let (status, body) = spool.http_post(
        "/queues/work/messages",
        r#"{"messages":[{"body":"a"},{"body":"b"}]}"#,
    );
    assert_eq!(status, 200, "{body}");
    // Full: of two more, none goes in, and the answer says so.
    let (status, body) = spool.http_post(
        "/queues/work/messages",
        r#"{"messages":[{"body":"c"},{"body":"d"}]}"#,
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(parse(&body)["sent"], json!(0), "{body}");
    assert!(parse(&body)["message"]
        .as_str()
        .unwrap()
        .contains("2 of 2 messages refused"));
    let got = ch
        .basic_get("work".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.delivery.data, br#""a""#);

    for (what, response, want) in [
        (
            "redeclare with other arguments",
            spool.http(
                "PUT",
                "/queues/work",
                Some(r#"{"arguments": {"x-max-length": 5}}"#),
            ),
            409,
        ),
        (
            "a body that is not JSON",
            spool.http("PUT", "/queues/other", Some("{nope")),
            400,
        ),
        (
            "an unknown field",
            spool.http("PUT", "/queues/other", Some(r#"{"durable": false}"#)),
            400,
        ),
        (
            "delete if empty, with a message in it",
            spool.http("DELETE", "/queues/work?if_empty=true", None),
            409,
        ),
    ] {
        common::assert_json_error(what, response, want);
    }

    let (status, body) = spool.http("DELETE", "/queues/work", None);
    assert_eq!(
        (status, parse(&body)["messages"].clone()),
        (200, json!(1)),
        "{body}"
    );
    let (status, _) = spool.http_get("/queues/work");
    assert_eq!(status, 404);
    // Declared with no body at all: a plain durable queue.
    let (status, body) = spool.http("PUT", "/queues/plain", None);
    assert_eq!(status, 200, "{body}");
}
