//! lapin helpers the AMQP tests share: connect, declare, publish with confirms, consume.

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::Spool;

pub async fn connect(spool: &Spool) -> Connection {
    Connection::connect(&spool.amqp_uri(), ConnectionProperties::default())
        .await
        .expect("AMQP connection")
}

pub async fn declare(ch: &Channel, name: &str, args: FieldTable) {
    ch.queue_declare(name.into(), QueueDeclareOptions::durable(), args)
        .await
        .expect("queue.declare");
}

/// Publishes `bodies` with publisher confirms and checks every one is acknowledged.
pub async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    key: &str,
    bodies: impl IntoIterator<Item = String>,
) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut pending = Vec::new();
    for b in bodies {
        pending.push(
            ch.basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                b.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap(),
        );
    }
    for p in pending {
        let confirm = p.await.unwrap();
        assert!(confirm.is_ack(), "publish not confirmed: {confirm:?}");
    }
}

/// Publishes `body` with `mandatory` on a channel in confirm mode and returns the basic.return
/// the broker sent back for it; panics if the message was routed.
pub async fn publish_unroutable(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
) -> lapin::message::BasicReturnMessage {
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        },
        body,
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap()
    .take_message()
    .expect("basic.return for an unroutable mandatory publish")
}

/// A passive queue.declare: the queue's counts, or the channel's error.
pub async fn passive(ch: &Channel, name: &str) -> lapin::Result<lapin::Queue> {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
}

/// A consumer with manual acks and no arguments.
pub async fn subscribe(ch: &Channel, queue: &str, tag: &str) -> lapin::Consumer {
    ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap()
}

pub fn body(d: &lapin::message::Delivery) -> String {
    String::from_utf8(d.data.clone()).unwrap()
}

/// Waits for the next delivery of a consumer (30 s bound).
pub async fn next(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("a delivery within 30 s")
        .expect("consumer open")
        .expect("delivery")
}
