//! Consumer-group members over HTTP: two HTTP members split a topic's partitions, hand them
//! over when one leaves, commit, and a Kafka consumer (rdkafka, consumer protocol) of the same
//! group resumes where they committed.

mod common;

use std::time::Duration;

use common::{assert_json_error, client_config, create_topic, producer, Spool};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn join(spool: &Spool, group: &str) -> String {
    let (status, body) = spool.http_post(
        &format!("/groups/{group}/members"),
        r#"{"topics": ["hm"], "auto_offset_reset": "earliest"}"#,
    );
    assert_eq!(status, 201, "{body}");
    parse(&body)["member_id"].as_str().unwrap().to_string()
}

/// One poll: the member's answer (assignment and records).
fn poll(spool: &Spool, group: &str, member: &str, timeout_ms: u64) -> Value {
    let (status, body) = spool.http_get(&format!(
        "/groups/{group}/members/{member}/records?timeout_ms={timeout_ms}"
    ));
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

fn assigned(answer: &Value) -> Vec<i64> {
    answer["assignment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["partition"].as_i64().unwrap())
        .collect()
}

fn values(answer: &Value) -> Vec<String> {
    answer["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}:{}:{}",
                r["partition"],
                r["offset"],
                r["value"].as_str().unwrap()
            )
        })
        .collect()
}

fn produce_over_http(spool: &Spool, partition: i32, values: &[&str]) {
    let records: Vec<Value> = values
        .iter()
        .map(|v| json!({"value": v, "partition": partition}))
        .collect();
    let (status, body) = spool.http_post(
        "/topics/hm/records",
        &json!({ "records": records }).to_string(),
    );
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_members_share_partitions_hand_them_over_and_commit_where_kafka_resumes() {
    let spool = Spool::start();
    let b = spool.bootstrap();
    create_topic(&b, "hm", 2).await;
    let ten: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    let ten: Vec<&str> = ten.iter().map(String::as_str).collect();
    produce_over_http(&spool, 0, &ten);
    produce_over_http(&spool, 1, &ten);

    // Alone, A gets both partitions and reads everything from the start.
    let a = join(&spool, "hg");
    let mut got = Vec::new();
    while got.len() < 20 {
        let answer = poll(&spool, "hg", &a, 5000);
        let batch = values(&answer);
        assert!(!batch.is_empty(), "a 5 s poll found nothing; got {got:?}");
        got.extend(batch);
    }
    assert_eq!(got.len(), 20, "{got:?}");
    assert!(got.contains(&"0:9:v9".to_string()) && got.contains(&"1:0:v0".to_string()));
    let (status, body) = spool.http_post(&format!("/groups/hg/members/{a}/offsets"), "");
    assert_eq!(status, 200, "{body}");
    let (_, body) = spool.http_get("/groups/hg");
    let g = parse(&body);
    assert_eq!(g["type"], "consumer", "{body}");
    assert_eq!(
        g["offsets"],
        json!([
            {"topic": "hm", "partition": 0, "committed": 10, "end": 10, "lag": 0},
            {"topic": "hm", "partition": 1, "committed": 10, "end": 10, "lag": 0},
        ])
    );

    // B joins: A gives one partition up on its next poll, and B takes it on its own.
    let bm = join(&spool, "hg");
    let (mut pa, mut pb) = (vec![0, 1], vec![]);
    for _ in 0..20 {
        pa = assigned(&poll(&spool, "hg", &a, 0));
        pb = assigned(&poll(&spool, "hg", &bm, 0));
        if pa.len() == 1 && pb.len() == 1 {
            break;
        }
    }
    assert_eq!((pa.len(), pb.len()), (1, 1), "A {pa:?}, B {pb:?}");
    assert_ne!(pa, pb);
    // B starts where the group committed: only new records reach each member.
    produce_over_http(&spool, 0, &["new0"]);
    produce_over_http(&spool, 1, &["new1"]);
    let from_a = values(&poll(&spool, "hg", &a, 5000));
    let from_b = values(&poll(&spool, "hg", &bm, 5000));
    assert_eq!(from_a, vec![format!("{}:10:new{}", pa[0], pa[0])]);
    assert_eq!(from_b, vec![format!("{}:10:new{}", pb[0], pb[0])]);
    // A commits an explicit offset; B commits its position.
    let (status, body) = spool.http_post(
        &format!("/groups/hg/members/{a}/offsets"),
        &json!({"offsets": [{"topic": "hm", "partition": pa[0], "offset": 11}]}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = spool.http_post(&format!("/groups/hg/members/{bm}/offsets"), "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body)["offsets"],
        json!([{"topic": "hm", "partition": pb[0], "offset": 11}])
    );

    // A leaves: B takes both partitions, A's from where A committed.
    let (status, body) = spool.http("DELETE", &format!("/groups/hg/members/{a}"), None);
    assert_eq!(status, 204, "{body}");
    assert_json_error(
        "poll after leaving",
        spool.http_get(&format!("/groups/hg/members/{a}/records")),
        404,
    );
    let mut answer = poll(&spool, "hg", &bm, 0);
    for _ in 0..20 {
        if assigned(&answer).len() == 2 {
            break;
        }
        answer = poll(&spool, "hg", &bm, 200);
    }
    assert_eq!(assigned(&answer), vec![0, 1], "{answer}");
    assert!(
        answer["assignment"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["position"] == 11),
        "{answer}"
    );
    let (status, _) = spool.http("DELETE", &format!("/groups/hg/members/{bm}"), None);
    assert_eq!(status, 204);

    // A Kafka consumer of the group resumes at the committed offsets.
    let p = producer(&b, &[]);
    for part in 0..2 {
        p.send(
            FutureRecord::<(), _>::to("hm")
                .partition(part)
                .payload(&format!("kafka{part}")),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    let consumer: BaseConsumer = client_config(&b)
        .set("group.id", "hg")
        .set("group.protocol", "consumer")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&["hm"]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut kafka = Vec::new();
    while kafka.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "{kafka:?}");
        if let Some(m) = consumer.poll(Duration::from_millis(500)) {
            let m = m.unwrap();
            kafka.push((m.partition(), m.offset(), m.payload().map(<[u8]>::to_vec)));
        }
    }
    kafka.sort();
    assert_eq!(
        kafka,
        vec![
            (0, 11, Some(b"kafka0".to_vec())),
            (1, 11, Some(b"kafka1".to_vec()))
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_member_errors_answer_json() {
    let spool = Spool::start();
    create_topic(&spool.bootstrap(), "hm", 1).await;
    assert_json_error(
        "no topics",
        spool.http_post("/groups/e/members", r#"{"topics": []}"#),
        400,
    );
    assert_json_error(
        "unknown field",
        spool.http_post("/groups/e/members", r#"{"topics": ["hm"], "group": "x"}"#),
        400,
    );
    assert_json_error(
        "bad reset policy",
        spool.http_post(
            "/groups/e/members",
            r#"{"topics": ["hm"], "auto_offset_reset": "middle"}"#,
        ),
        400,
    );
    assert_json_error(
        "unknown member",
        spool.http_get("/groups/e/members/nobody/records"),
        404,
    );
    let m = join(&spool, "e");
    assert_json_error(
        "bad commit body",
        spool.http_post(&format!("/groups/e/members/{m}/offsets"), "{not json"),
        400,
    );
    assert_json_error(
        "negative offset",
        spool.http_post(
            &format!("/groups/e/members/{m}/offsets"),
            r#"{"offsets": [{"topic": "hm", "partition": 0, "offset": -5}]}"#,
        ),
        400,
    );
    assert_json_error(
        "bad timeout",
        spool.http_get(&format!("/groups/e/members/{m}/records?timeout_ms=soon")),
        400,
    );
    let (status, body) = spool.http_get(&format!("/groups/e/members/{m}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse(&body)["member_id"], m.as_str());
    let (status, _) = spool.http("DELETE", &format!("/groups/e/members/{m}"), None);
    assert_eq!(status, 204);
    assert_json_error(
        "commit after leaving",
        spool.http_post(&format!("/groups/e/members/{m}/offsets"), ""),
        404,
    );
}
