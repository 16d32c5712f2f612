//! Queue and exchange lifecycle with lapin against the real broker: server-named and exclusive
//! queues, purge, unbind, conditional deletes, per-message expiration, basic.recover, AMQPLAIN,
//! `global` prefetch and `x-queue-type`, with RabbitMQ's reply codes where a client errs.

mod common;

use common::amqp::{
    body, connect, declare, next, passive, publish_confirmed, publish_unroutable, subscribe,
};
use common::Spool;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// A channel-level error's text, with its reply code name first (as lapin renders it).
fn refused<T: std::fmt::Debug>(r: lapin::Result<T>) -> String {
    r.expect_err("the broker should refuse this").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn server_named_exclusive_queues_belong_to_their_connection() {
    let spool = Spool::start();
    let owner = connect(&spool).await;
    let och = owner.create_channel().await.unwrap();
    let q = och
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let name = q.name().to_string();
    assert!(name.starts_with("amq.gen-"), "{name}");
    publish_confirmed(&och, "", &name, ["mine".to_string()]).await;

    // Another connection may neither declare nor consume it: RESOURCE_LOCKED.
    let other = connect(&spool).await;
    let err = refused(passive(&other.create_channel().await.unwrap(), &name).await);
    assert!(
        err.contains("RESOURCE_LOCKED") && err.contains(&name),
        "{err}"
    );
    let err = refused(
        other
            .create_channel()
            .await
            .unwrap()
            .basic_consume(
                name.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await,
    );
    assert!(err.contains("RESOURCE_LOCKED"), "{err}");
    // Its owner reads it.
    let mut c = subscribe(&och, &name, "").await;
    assert_eq!(body(&next(&mut c).await), "mine");

    // It goes with its connection: once the close is answered, the queue is gone.
    owner.close(200, "bye".into()).await.unwrap();
    let err = refused(passive(&other.create_channel().await.unwrap(), &name).await);
    assert!(err.contains("NOT_FOUND"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_unbind_and_conditional_deletes() {
    let spool = Spool::start();
    let conn = connect(&spool).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "held", FieldTable::default()).await;
    ch.exchange_declare(
        "jobs".into(),
        lapin::ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "held".into(),
        "jobs".into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish_confirmed(&ch, "jobs", "k", (0..3).map(|i| i.to_string())).await;

    // Purge drops the ready messages and says how many.
    let purged = ch
        .queue_purge("held".into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    assert_eq!(purged, 3);
    assert_eq!(passive(&ch, "held").await.unwrap().message_count(), 0);

    // A bound exchange is in use; after unbind, a mandatory publish comes back unroutable.
    let err = refused(
        conn.create_channel()
            .await
            .unwrap()
            .exchange_delete(
                "jobs".into(),
                ExchangeDeleteOptions {
                    if_unused: true,
                    ..Default::default()
                },
            )
            .await,
    );
    assert!(
        err.contains("PRECONDITION_FAILED") && err.contains("in use"),
        "{err}"
    );
    ch.queue_unbind(
        "held".into(),
        "jobs".into(),
        "k".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let returned = publish_unroutable(&ch, "jobs", "k", b"lost").await;
    assert_eq!(returned.reply_code, 312, "NO_ROUTE");
    assert_eq!(returned.data, b"lost");
    ch.exchange_delete(
        "jobs".into(),
        ExchangeDeleteOptions {
            if_unused: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // The predeclared exchanges cannot be deleted.
    let err = refused(
        conn.create_channel()
            .await
            .unwrap()
            .exchange_delete("amq.direct".into(), ExchangeDeleteOptions::default())
            .await,
    );
    assert!(
        err.contains(
            "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed"
        ),
        "{err}"
    );

    // if-empty refuses a queue with a ready message, if-unused one with a consumer.
    publish_confirmed(&ch, "", "held", ["last".to_string()]).await;
    let if_empty = QueueDeleteOptions {
        if_empty: true,
        ..Default::default()
    };
    let err = refused(
        conn.create_channel()
            .await
            .unwrap()
            .queue_delete("held".into(), if_empty)
            .await,
    );
    assert!(
        err.contains("PRECONDITION_FAILED") && err.contains("not empty"),
        "{err}"
    );
    let cch = conn.create_channel().await.unwrap();
    let mut c = subscribe(&cch, "held", "worker").await;
    let d = next(&mut c).await;
    let if_unused = QueueDeleteOptions {
        if_unused: true,
        ..Default::default()
    };
    let err = refused(
        conn.create_channel()
            .await
            .unwrap()
            .queue_delete("held".into(), if_unused)
            .await,
    );
    assert!(
        err.contains("PRECONDITION_FAILED") && err.contains("in use"),
        "{err}"
    );
    // Cancelled and nacked back, the message is ready again; a plain delete counts it.
    cch.basic_cancel("worker".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    d.nack(BasicNackOptions {
        requeue: true,
        multiple: false,
    })
    .await
    .unwrap();
    assert_eq!(passive(&ch, "held").await.unwrap().message_count(), 1);
    let deleted = ch
        .queue_delete("held".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert!(
        refused(passive(&conn.create_channel().await.unwrap(), "held").await).contains("NOT_FOUND")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn per_message_expiration_is_honoured_and_bad_ones_refused() {
    let spool = Spool::start();
    let conn = connect(&spool).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "fresh", FieldTable::default()).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    // "0" expires at once (nobody is consuming); an hour does not.
    for (text, expiration) in [("gone", "0"), ("kept", "3600000")] {
        let confirm = ch
            .basic_publish(
                "".into(),
                "fresh".into(),
                BasicPublishOptions::default(),
                text.as_bytes(),
                BasicProperties::default().with_expiration(expiration.into()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }
    let got = ch
        .basic_get("fresh".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the unexpired message");
    assert_eq!(body(&got.delivery), "kept");
    assert_eq!(
        got.delivery
            .properties
            .expiration()
            .as_ref()
            .map(|e| e.as_str()),
        Some("3600000"),
        "the expiration property travels with the message"
    );
    assert!(ch
        .basic_get("fresh".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .is_none());

    // An expiration that is not a non-negative integer closes the channel, as RabbitMQ does.
    for (expiration, problem) in [
        ("soon", "no_integer"),
        ("-5", "{value_negative,-5}"),
        ("10s", "{leftover_string,\"s\"}"),
    ] {
        let bad = conn.create_channel().await.unwrap();
        bad.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let confirm = bad
            .basic_publish(
                "".into(),
                "fresh".into(),
                BasicPublishOptions::default(),
                b"x",
                BasicProperties::default().with_expiration(expiration.into()),
            )
            .await
            .unwrap();
        let err = refused(confirm.await);
        assert!(
            err.contains("PRECONDITION_FAILED")
                && err.contains(&format!("invalid expiration '{expiration}': {problem}")),
            "{err}"
        );
    }
    assert_eq!(passive(&ch, "fresh").await.unwrap().message_count(), 0);
    assert!(
        conn.status().connected(),
        "channel errors leave the connection"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn recover_requeues_unacknowledged_deliveries() {
    let spool = Spool::start();
    let conn = connect(&spool).await;
    let ch = conn.create_channel().await.unwrap();
    declare(&ch, "redo", FieldTable::default()).await;
    publish_confirmed(&ch, "", "redo", (0..4).map(|i| i.to_string())).await;
    let cch = conn.create_channel().await.unwrap();
    cch.basic_qos(4, BasicQosOptions::default()).await.unwrap();
    let mut c = subscribe(&cch, "redo", "").await;
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(next(&mut c).await);
    }
    assert!(first.iter().all(|d| !d.redelivered));
    first[0].ack(BasicAckOptions::default()).await.unwrap();
    // The other three come back, flagged, and are acknowledged this time.
    cch.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .unwrap();
    let mut again = Vec::new();
    for _ in 0..3 {
        let d = next(&mut c).await;
        assert!(d.redelivered, "{}", body(&d));
        again.push(body(&d));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    again.sort();
    assert_eq!(again, ["1", "2", "3"]);
    let q = passive(&ch, "redo").await.unwrap();
    assert_eq!(q.message_count(), 0);

    // Redelivery to the same consumer (requeue=false) is not implemented, as in RabbitMQ:
    // a connection error.
    let err = refused(
        cch.basic_recover(BasicRecoverOptions { requeue: false })
            .await,
    );
    assert!(err.contains("NOT_IMPLEMENTED"), "{err}");
    let after = connect(&spool).await;
    passive(&after.create_channel().await.unwrap(), "redo")
        .await
        .expect("the broker still serves");
}

#[tokio::test(flavor = "multi_thread")]
async fn amqplain_login_global_prefetch_and_queue_types() {
    let spool = Spool::start();
    // kombu and older clients log in with AMQPLAIN.
    let uri = format!("{}?auth_mechanism=amqplain", spool.amqp_uri());
    let conn = Connection::connect(&uri, ConnectionProperties::default())
        .await
        .expect("AMQPLAIN login");
    let ch = conn.create_channel().await.unwrap();
    let quorum = FieldTable::from(std::collections::BTreeMap::from([(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    )]));
    declare(&ch, "typed", quorum.clone()).await;
    declare(&ch, "typed", quorum).await;
    // A redeclare with another type is inequivalent.
    let classic = FieldTable::from(std::collections::BTreeMap::from([(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    )]));
    let err = refused(
        conn.create_channel()
            .await
            .unwrap()
            .queue_declare("typed".into(), QueueDeclareOptions::durable(), classic)
            .await,
    );
    assert!(
        err.contains("PRECONDITION_FAILED") && err.contains("x-queue-type"),
        "{err}"
    );
    // An unknown type is refused, as RabbitMQ refuses it.
    let unknown = FieldTable::from(std::collections::BTreeMap::from([(
        "x-queue-type".into(),
        AMQPValue::LongString("lazy".into()),
    )]));
    let err = refused(
        conn.create_channel()
            .await
            .unwrap()
            .queue_declare("other".into(), QueueDeclareOptions::durable(), unknown)
            .await,
    );
    assert!(err.contains("\"unsupported queue type 'lazy'\""), "{err}");

    // `global` prefetch (kombu sets it) bounds the consumer as a per-consumer one does.
    publish_confirmed(&ch, "", "typed", (0..10).map(|i| i.to_string())).await;
    let cch = conn.create_channel().await.unwrap();
    cch.basic_qos(3, BasicQosOptions { global: true })
        .await
        .unwrap();
    let mut c = subscribe(&cch, "typed", "").await;
    let held = [next(&mut c).await, next(&mut c).await, next(&mut c).await];
    let q = passive(&ch, "typed").await.unwrap();
    assert_eq!((q.message_count(), q.consumer_count()), (7, 1));
    held[2]
        .ack(BasicAckOptions { multiple: true })
        .await
        .unwrap();
    assert_eq!(body(&next(&mut c).await), "3");
}
