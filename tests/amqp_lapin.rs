//! The AMQP 0-9-1 facade with lapin (an unmodified RabbitMQ client) against the real broker:
//! work queues with competing consumers, acks and redelivery, prefetch, basic.get, routing,
//! publisher confirms, and errors with RabbitMQ's reply codes.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::amqp::{
    body, connect, declare, next, passive, publish_confirmed, publish_unroutable, subscribe,
};
use common::Spool;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

#[tokio::test(flavor = "multi_thread")]
async fn competing_consumers_process_each_message_once_and_a_dead_consumer_s_messages_go_to_others()
{
    let spool = Spool::start();
    let conn = connect(&spool).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "work", FieldTable::default()).await;
    publish_confirmed(&ch, "", "work", (0..300).map(|i| format!("task-{i}"))).await;

    // A consumer that takes tasks and dies before acknowledging them.
    let doomed = connect(&spool).await;
    let dch = doomed.create_channel().await.unwrap();
    dch.basic_qos(7, BasicQosOptions::default()).await.unwrap();
    let mut dc = subscribe(&dch, "work", "doomed").await;
    let mut abandoned = HashSet::new();
    for _ in 0..7 {
        abandoned.insert(body(&next(&mut dc).await));
    }
    doomed.close(200, "gone".into()).await.unwrap();

    // Three competing consumers with manual acks.
    let mut handles = Vec::new();
    for n in 0..3 {
        let c = connect(&spool).await;
        let ch = c.create_channel().await.unwrap();
        ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
        let consumer = ch
            .basic_consume(
                "work".into(),
                format!("worker-{n}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        handles.push((c, ch, consumer));
    }
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut redelivered = HashSet::new();
    let mut per_worker = [0usize; 3];
    let mut last_progress = std::time::Instant::now();
    while seen.len() < 300 {
        for (i, (_, _, consumer)) in handles.iter_mut().enumerate() {
            if let Ok(Some(Ok(d))) =
                tokio::time::timeout(Duration::from_millis(50), consumer.next()).await
            {
                let b = body(&d);
                if d.redelivered {
                    redelivered.insert(b.clone());
                }
                *seen.entry(b).or_default() += 1;
                per_worker[i] += 1;
                d.ack(BasicAckOptions::default()).await.unwrap();
                last_progress = std::time::Instant::now();
            }
        }
        assert!(
            last_progress.elapsed() < Duration::from_secs(30),
            "no delivery for 30 s after {} of 300: {}",
            seen.len(),
            spool.log()
        );
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "a message was processed twice"
    );
    assert_eq!(
        redelivered, abandoned,
        "exactly the dead consumer's messages come back, flagged"
    );
    assert!(
        per_worker.iter().all(|n| *n > 0),
        "every worker got work: {per_worker:?}"
    );
    // Nothing is left.
    let q = passive(&ch, "work").await.unwrap();
    assert_eq!(q.message_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn prefetch_bounds_unacknowledged_deliveries() {
    let spool = Spool::start();
    let conn = connect(&spool).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "pf", FieldTable::default()).await;
    publish_confirmed(&ch, "", "pf", (0..20).map(|i| i.to_string())).await;
    let cch = conn.create_channel().await.unwrap();
    cch.basic_qos(5, BasicQosOptions::default()).await.unwrap();
    let mut c = subscribe(&cch, "pf", "").await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(next(&mut c).await);
    }
    // With five unacknowledged, the other fifteen stay ready.
    let q = passive(&ch, "pf").await.unwrap();
    assert_eq!((q.message_count(), q.consumer_count()), (15, 1));
    // Acknowledging two (multiple) lets exactly two more in, in order.
    held[1]
        .ack(BasicAckOptions { multiple: true })
        .await
        .unwrap();
    let more = [next(&mut c).await, next(&mut c).await];
    assert_eq!([body(&more[0]), body(&more[1])], ["5", "6"]);
    let q = passive(&ch, "pf").await.unwrap();
    assert_eq!(q.message_count(), 13);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_nack_and_reject() {
    let spool = Spool::start();
    let conn = connect(&spool).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "g", FieldTable::default()).await;
    publish_confirmed(&ch, "", "g", ["a", "b"].map(String::from)).await;
    let first = ch
        .basic_get("g".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(body(&first.delivery), "a");
    assert_eq!(first.message_count, 1);
    // Requeued: it comes back first, flagged as redelivered.
    first
        .delivery
        .nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await
        .unwrap();
    let again = ch
        .basic_get("g".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("again");
    assert_eq!(body(&again.delivery), "a");
    assert!(again.delivery.redelivered);
    // Rejected without requeue: gone.
    again
        .delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let b = ch
        .basic_get("g".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("b");
    assert_eq!(body(&b.delivery), "b");
    assert!(ch
        .basic_get("g".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn fanout_topic_and_headers_exchanges_route() {
    let spool = Spool::start();
    let conn = connect(&spool).await;
    let ch = conn.create_channel().await.unwrap();
    for (ex, kind) in [
        ("fan", lapin::ExchangeKind::Fanout),
        ("top", lapin::ExchangeKind::Topic),
        ("hdr", lapin::ExchangeKind::Headers),
    ] {
        ch.exchange_declare(
            ex.into(),
            kind,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    for q in ["f1", "f2", "orange", "lazy", "pdf"] {
        declare(&ch, q, FieldTable::default()).await;
    }
    let bind = |q: &'static str, ex: &'static str, key: &'static str, args: FieldTable| {
        let ch = ch.clone();
        async move {
            ch.queue_bind(
                q.into(),
                ex.into(),
                key.into(),
                QueueBindOptions::default(),
                args,
            )
            .await
            .unwrap()
        }
    };
    bind("f1", "fan", "", FieldTable::default()).await;
    bind("f2", "fan", "", FieldTable::default()).await;
    bind("orange", "top", "*.orange.*", FieldTable::default()).await;
    bind("lazy", "top", "lazy.#", FieldTable::default()).await;
    let mut h = FieldTable::default();
    h.insert("x-match".into(), AMQPValue::LongString("all".into()));
    h.insert("format".into(), AMQPValue::LongString("pdf".into()));
    bind("pdf", "hdr", "", h).await;

    publish_confirmed(&ch, "fan", "", ["x".to_string()]).await;
    publish_confirmed(&ch, "top", "quick.orange.rabbit", ["qor".to_string()]).await;
    publish_confirmed(&ch, "top", "lazy.orange.elephant", ["loe".to_string()]).await;
    publish_confirmed(&ch, "top", "quick.brown.fox", ["qbf".to_string()]).await;
    for (format, text) in [("pdf", "is-pdf"), ("zip", "is-zip")] {
        let mut headers = FieldTable::default();
        headers.insert("format".into(), AMQPValue::LongString(format.into()));
        ch.basic_publish(
            "hdr".into(),
            "".into(),
            BasicPublishOptions::default(),
            text.as_bytes(),
            BasicProperties::default().with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let drain = |q: &'static str| {
        let ch = ch.clone();
        async move {
            let mut out = Vec::new();
            while let Some(m) = ch
                .basic_get(q.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                out.push(body(&m.delivery));
            }
            out
        }
    };
    assert_eq!(drain("f1").await, ["x"]);
    assert_eq!(drain("f2").await, ["x"]);
    assert_eq!(drain("orange").await, ["qor", "loe"]);
    assert_eq!(drain("lazy").await, ["loe"]);
    assert_eq!(drain("pdf").await, ["is-pdf"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_close_the_channel_with_rabbitmq_reply_codes() {
    let spool = Spool::start();
    let conn = connect(&spool).await;
    // Passive declare of a missing queue: 404 on that channel; the connection stays up.
    let ch = conn.create_channel().await.unwrap();
    let err = passive(&ch, "missing").await.unwrap_err();
    assert!(err.to_string().contains("NOT_FOUND"), "{err}");
    // Inequivalent redeclare: 406.
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "dur", FieldTable::default()).await;
    let err = ch
        .queue_declare(
            "dur".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("PRECONDITION_FAILED"), "{err}");
    // Publishing to a missing exchange: 404, which fails the pending confirm.
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = ch
        .basic_publish(
            "nope".into(),
            "k".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    let err = confirm.await.unwrap_err();
    assert!(
        err.to_string().contains("NOT_FOUND - no exchange 'nope'"),
        "{err}"
    );
    // The connection still serves new channels.
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "dur", FieldTable::default()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn confirmed_messages_and_acks_survive_sigkill() {
    let mut spool = Spool::start();
    {
        let conn = connect(&spool).await;
        let ch = conn.create_channel().await.unwrap();
        declare(&ch, "durable", FieldTable::default()).await;
        let ex = "events";
        ch.exchange_declare(
            ex.into(),
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            "durable".into(),
            ex.into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        publish_confirmed(&ch, ex, "k", (0..10).map(|i| format!("m{i}"))).await;
        let cch = conn.create_channel().await.unwrap();
        cch.basic_qos(6, BasicQosOptions::default()).await.unwrap();
        let mut c = subscribe(&cch, "durable", "").await;
        let mut got = Vec::new();
        for _ in 0..6 {
            got.push(next(&mut c).await);
        }
        // Acknowledge m0..m3; m4 and m5 stay unacknowledged when the broker dies.
        got[3]
            .ack(BasicAckOptions { multiple: true })
            .await
            .unwrap();
        // A synchronous round trip after the acks: its answer means they are written.
        let q = passive(&cch, "durable").await.unwrap();
        assert_eq!(q.message_count(), 0);
        spool.kill9();
    }
    spool.launch();
    // The queue, the exchange and the binding are back; so are exactly the unacknowledged and
    // undelivered messages, the unacknowledged ones flagged redelivered.
    let conn = connect(&spool).await;
    let ch = conn.create_channel().await.unwrap();
    let q = passive(&ch, "durable").await.unwrap();
    assert_eq!(q.message_count(), 6);
    publish_confirmed(&ch, "events", "k", ["after".to_string()]).await;
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get("durable".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        out.push((body(&m.delivery), m.delivery.redelivered));
    }
    let expected: Vec<(String, bool)> = (4..10)
        .map(|i| (format!("m{i}"), true))
        .chain([("after".to_string(), false)])
        .collect();
    assert_eq!(out, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_is_a_topic_kafka_clients_read_and_feed() {
    use rdkafka::message::{Headers, Message};
    use rdkafka::producer::FutureRecord;
    let spool = Spool::start();
    let conn = connect(&spool).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "bridge", FieldTable::default()).await;
    // AMQP in, Kafka out: key = routing key, value = body, properties as amqp.* headers.
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut headers = FieldTable::default();
    headers.insert("tenant".into(), AMQPValue::LongString("acme".into()));
    ch.basic_publish(
        "".into(),
        "bridge".into(),
        BasicPublishOptions::default(),
        b"from-amqp",
        BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_headers(headers),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let got = common::consume(
        &spool.bootstrap(),
        "bridge",
        0,
        rdkafka::Offset::Beginning,
        1,
    );
    assert_eq!(got[0].key(), Some(&b"bridge"[..]));
    assert_eq!(got[0].payload(), Some(&b"from-amqp"[..]));
    let h = got[0].headers().expect("headers");
    let header = |name: &str| {
        h.iter()
            .find(|x| x.key == name)
            .and_then(|x| x.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("amqp.content-type").as_deref(), Some("text/plain"));
    assert_eq!(header("tenant").as_deref(), Some("acme"));
    // Kafka in, AMQP out: a Kafka producer feeds the queue.
    let p = common::producer(&spool.bootstrap(), &[]);
    p.send(
        FutureRecord::to("bridge")
            .key("k1")
            .payload("from-kafka")
            .headers(
                rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                    key: "trace",
                    value: Some("t-1"),
                }),
            ),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let first = ch
        .basic_get("bridge".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body(&first.delivery), "from-amqp");
    let second = ch
        .basic_get("bridge".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body(&second.delivery), "from-kafka");
    assert_eq!(second.delivery.routing_key.as_str(), "k1");
    let props_headers = second.delivery.properties.headers().clone().unwrap();
    assert_eq!(
        props_headers.inner().get("trace"),
        Some(&AMQPValue::LongString("t-1".into()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rpc_with_direct_reply_to() {
    let spool = Spool::start();
    // The server: answers each request on the name its reply_to carries.
    let server = connect(&spool).await;
    let sch = server.create_channel().await.unwrap();
    declare(&sch, "rpc", FieldTable::default()).await;
    let mut requests = subscribe(&sch, "rpc", "server").await;
    // The client: consumes its replies from the pseudo-queue, without acks.
    let client = connect(&spool).await;
    let cch = client.create_channel().await.unwrap();
    let mut replies = cch
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut last_reply_to = None;
    for n in 0..3 {
        cch.basic_publish(
            "".into(),
            "rpc".into(),
            BasicPublishOptions::default(),
            format!("{n}").as_bytes(),
            BasicProperties::default()
                .with_reply_to("amq.rabbitmq.reply-to".into())
                .with_correlation_id(format!("req-{n}").as_str().into()),
        )
        .await
        .unwrap();
        let req = next(&mut requests).await;
        let reply_to = req.properties.reply_to().clone().unwrap();
        assert!(
            reply_to.as_str().starts_with("amq.rabbitmq.reply-to."),
            "{reply_to}"
        );
        last_reply_to = Some(reply_to.clone());
        let answer = body(&req).parse::<u32>().unwrap() * 10;
        sch.basic_publish(
            "".into(),
            reply_to.as_str().into(),
            BasicPublishOptions::default(),
            answer.to_string().as_bytes(),
            BasicProperties::default()
                .with_correlation_id(req.properties.correlation_id().clone().unwrap()),
        )
        .await
        .unwrap();
        req.ack(BasicAckOptions::default()).await.unwrap();
        let got = next(&mut replies).await;
        assert_eq!(body(&got), (n * 10).to_string());
        assert_eq!(
            got.properties.correlation_id().as_ref().unwrap().as_str(),
            format!("req-{n}")
        );
    }
    // Publishing with reply_to on a channel that has no reply consumer is refused.
    let other = client.create_channel().await.unwrap();
    other
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = other
        .basic_publish(
            "".into(),
            "rpc".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into()),
        )
        .await
        .unwrap();
    let err = confirm.await.unwrap_err();
    assert!(
        err.to_string()
            .contains("fast reply consumer does not exist"),
        "{err}"
    );
    // Once the requester's connection is closed, its reply-to name is unroutable: a mandatory
    // reply comes back to the server.
    client.close(200, "done".into()).await.unwrap();
    sch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let late = last_reply_to.unwrap();
    let returned = publish_unroutable(&sch, "", late.as_str(), b"too late").await;
    assert_eq!(returned.reply_code, 312);
}

#[tokio::test(flavor = "multi_thread")]
async fn consumers_of_a_deleted_queue_are_cancelled() {
    let spool = Spool::start();
    let conn = connect(&spool).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "doomed", FieldTable::default()).await;
    let cch = conn.create_channel().await.unwrap();
    let mut consumer = subscribe(&cch, "doomed", "c").await;
    ch.queue_delete("doomed".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    // The server's basic.cancel ends the consumer's stream; the channel stays usable.
    let end = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("cancelled within 30 s");
    assert!(end.is_none(), "expected the end of the stream, got {end:?}");
    declare(&cch, "after", FieldTable::default()).await;
    let err = passive(&ch, "doomed").await.unwrap_err();
    assert!(err.to_string().contains("NOT_FOUND"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exclusive_consumer_keeps_others_out() {
    let spool = Spool::start();
    let conn = connect(&spool).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "solo", FieldTable::default()).await;
    let _only = ch
        .basic_consume(
            "solo".into(),
            "only".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let other = conn.create_channel().await.unwrap();
    let err = other
        .basic_consume(
            "solo".into(),
            "second".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("ACCESS_REFUSED") && err.to_string().contains("exclusive use"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn higher_priority_consumers_are_served_first() {
    let spool = Spool::start();
    let conn = connect(&spool).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "ranked", FieldTable::default()).await;
    let subscribe = |prefetch: u16, priority: i32| {
        let conn = &conn;
        async move {
            let ch = conn.create_channel().await.unwrap();
            ch.basic_qos(prefetch, BasicQosOptions::default())
                .await
                .unwrap();
            let mut args = FieldTable::default();
            args.insert("x-priority".into(), AMQPValue::LongInt(priority));
            let c = ch
                .basic_consume(
                    "ranked".into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    args,
                )
                .await
                .unwrap();
            (ch, c)
        }
    };
    let (_low_ch, mut low) = subscribe(100, 0).await;
    let (_high_ch, mut high) = subscribe(5, 10).await;
    publish_confirmed(&ch, "", "ranked", (0..20).map(|i| i.to_string())).await;
    // The high-priority consumer takes what its prefetch allows, from the head; the other
    // gets the rest.
    let mut got_high = Vec::new();
    for _ in 0..5 {
        got_high.push(body(&next(&mut high).await));
    }
    let mut got_low = Vec::new();
    for _ in 0..15 {
        got_low.push(body(&next(&mut low).await));
    }
    assert_eq!(got_high, (0..5).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(got_low, (5..20).map(|i| i.to_string()).collect::<Vec<_>>());
}
