//! The `amqp` driver: lapin (AMQP 0-9-1) against Spool's AMQP facade or RabbitMQ (classic,
//! quorum or stream queues). Every message is persistent and confirmed by the broker (publisher
//! confirms); every delivery is acknowledged after the harness saw it.
//!
//! A subscription is a durable queue. With one subscription the producers publish to it through
//! the default exchange (the queue is then named as the topic, so on Spool the queue's topic is
//! the workload's topic); with several, through a fanout exchange named as the topic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::oneshot;

use crate::driver::{
    BoxFut, Consumer, Deliver, Driver, Producer, Reading, RpcClient, TaskConsumer,
};

/// Options of the amqp driver.
pub struct AmqpDriver {
    pub uri: String,
    /// `x-queue-type` to declare: classic, quorum or stream; none leaves the broker's default.
    pub queue_type: Option<String>,
    /// How many subscriptions each topic has, learned at `prepare`.
    subscriptions: Mutex<HashMap<String, usize>>,
    /// Stream queues read by a subscription already (see `consumer`).
    stream_readers: Mutex<std::collections::HashSet<String>>,
    /// Two connections carry every channel of the driver: one for publishing (with set-up
    /// and clean-up) and one for consuming, as RabbitMQ advises ("use individual AMQP
    /// connections for either producing or consuming", so that flow control on publishers
    /// never holds back consumers' acks). Not one per client: lapin runs a thread per
    /// connection, and a thread per client would spend the shared cores switching.
    connections: [tokio::sync::Mutex<Option<Connection>>; 2],
}

/// Which of the driver's two connections a channel is opened on.
#[derive(Clone, Copy)]
enum Role {
    Publish = 0,
    Consume = 1,
}

fn queue_name(topic: &str, subscription: &str, subscriptions: usize) -> String {
    if subscriptions == 1 {
        topic.to_string()
    } else {
        format!("{topic}.{subscription}")
    }
}

impl AmqpDriver {
    pub fn new(uri: String, queue_type: Option<String>) -> AmqpDriver {
        AmqpDriver {
            uri,
            queue_type,
            subscriptions: Mutex::default(),
            stream_readers: Mutex::default(),
            connections: Default::default(),
        }
    }

    fn subscriptions_of(&self, topic: &str) -> usize {
        let subs = self.subscriptions.lock().expect("subscriptions lock");
        subs.get(topic).copied().unwrap_or(1)
    }

    /// A new channel on the connection for `role`, opened on first use.
    async fn channel(&self, role: Role) -> anyhow::Result<Channel> {
        let mut shared = self.connections[role as usize].lock().await;
        if shared.as_ref().is_none_or(|c| !c.status().connected()) {
            let conn = Connection::connect(&self.uri, ConnectionProperties::default())
                .await
                .with_context(|| format!("connecting to {}", self.uri))?;
            *shared = Some(conn);
        }
        let conn = shared.as_ref().expect("connected above");
        Ok(conn.create_channel().await?)
    }

    fn is_stream(&self) -> bool {
        self.queue_type.as_deref() == Some("stream")
    }
}

impl Driver for AmqpDriver {
    fn name(&self) -> &'static str {
        "amqp"
    }

    fn durability(&self) -> String {
        format!(
            "publisher confirms, persistent messages, durable {} queues, an ack per delivery",
            self.queue_type.as_deref().unwrap_or("default-type")
        )
    }

    fn prepare<'a>(
        &'a self,
        topic: &'a str,
        partitions: u32,
        subscriptions: &'a [String],
        reading: Reading,
    ) -> BoxFut<'a, ()> {
        Box::pin(async move {
            if self.is_stream() && reading != Reading::Stream {
                bail!("stream queues are read as streams; use classic or quorum for a task queue");
            }
            self.subscriptions
                .lock()
                .expect("subscriptions lock")
                .insert(topic.to_string(), subscriptions.len());
            let ch = self.channel(Role::Publish).await?;
            let mut args = FieldTable::default();
            if let Some(t) = &self.queue_type {
                args.insert(
                    "x-queue-type".into(),
                    AMQPValue::LongString(t.as_str().into()),
                );
            }
            // Spool spreads a queue over this many partitions; RabbitMQ keeps an unknown
            // argument and ignores it.
            if partitions > 1 {
                args.insert("x-partitions".into(), AMQPValue::LongUInt(partitions));
            }
            if subscriptions.len() > 1 {
                ch.exchange_declare(
                    topic.into(),
                    ExchangeKind::Fanout,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            }
            for s in subscriptions {
                let q = queue_name(topic, s, subscriptions.len());
                ch.queue_declare(
                    q.as_str().into(),
                    QueueDeclareOptions::durable(),
                    args.clone(),
                )
                .await
                .with_context(|| format!("declaring queue {q}"))?;
                if subscriptions.len() > 1 {
                    ch.queue_bind(
                        q.as_str().into(),
                        topic.into(),
                        "".into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                }
            }
            ch.close(200, "prepared".into()).await?;
            Ok(())
        })
    }

    fn producer<'a>(&'a self, topic: &'a str) -> BoxFut<'a, Box<dyn Producer>> {
        Box::pin(async move {
            let ch = self.channel(Role::Publish).await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            let (exchange, routing_key) = if self.subscriptions_of(topic) > 1 {
                (topic.to_string(), String::new())
            } else {
                (String::new(), topic.to_string())
            };
            Ok(Box::new(AmqpProducer {
                ch,
                exchange: exchange.as_str().into(),
                routing_key: routing_key.as_str().into(),
            }) as Box<dyn Producer>)
        })
    }

    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        subscription: &'a str,
        reading: Reading,
        deliver: Deliver,
    ) -> BoxFut<'a, Box<dyn Consumer>> {
        Box::pin(async move {
            let q = queue_name(topic, subscription, self.subscriptions_of(topic));
            // A stream queue has no competing consumers: every AMQP consumer reads the whole
            // stream (and single active consumer exists only in the stream protocol). The
            // first consumer of a subscription reads it; the others stand by.
            if self.is_stream()
                && !self
                    .stream_readers
                    .lock()
                    .expect("readers lock")
                    .insert(q.clone())
            {
                return Ok(Box::new(TaskConsumer::spawn(move |mut stop| async move {
                    let _ = stop.changed().await;
                    Ok(())
                })) as Box<dyn Consumer>);
            }
            let ch = self.channel(Role::Consume).await?;
            let prefetch = match reading {
                Reading::Queue { prefetch } => prefetch,
                Reading::Stream | Reading::Rpc => 1000,
            };
            ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
            let mut args = FieldTable::default();
            if self.is_stream() {
                args.insert(
                    "x-stream-offset".into(),
                    AMQPValue::LongString("first".into()),
                );
            }
            let mut deliveries = ch
                .basic_consume(
                    q.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    args,
                )
                .await
                .with_context(|| format!("consuming from {q}"))?;
            Ok(Box::new(TaskConsumer::spawn(move |mut stop| async move {
                // Acks are sent as deliveries come, without waiting for each to be written
                // before taking the next delivery (as pika's and amqplib's basic_ack do);
                // a message counts as consumed once its ack is on the wire.
                let mut acking = FuturesUnordered::new();
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        Some(acked) = acking.next(), if !acking.is_empty() => {
                            let data: Vec<u8> = acked?;
                            deliver(&data);
                        }
                        d = deliveries.next() => {
                            let Some(d) = d else { break };
                            let d = d?;
                            // Acked on the channel itself: `Delivery::ack` takes a detour
                            // through lapin's internal RPC task (a queue hop, a spawned task
                            // and a second promise per ack) to send the same frame.
                            let ch = &ch;
                            acking.push(async move {
                                ch.basic_ack(d.delivery_tag, BasicAckOptions::default()).await?;
                                anyhow::Ok(d.data)
                            });
                        }
                    }
                }
                while let Some(acked) = acking.next().await {
                    deliver(&acked?);
                }
                let _ = ch.close(200, "done".into()).await;
                Ok(())
            })) as Box<dyn Consumer>)
        })
    }

    fn cleanup<'a>(&'a self, topic: &'a str, subscriptions: &'a [String]) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let ch = self.channel(Role::Publish).await?;
            for s in subscriptions {
                let q = queue_name(topic, s, subscriptions.len());
                self.stream_readers.lock().expect("readers lock").remove(&q);
                ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await?;
            }
            if subscriptions.len() > 1 {
                ch.exchange_delete(topic.into(), ExchangeDeleteOptions::default())
                    .await?;
            }
            ch.close(200, "cleaned up".into()).await?;
            for conn in &self.connections {
                if let Some(conn) = conn.lock().await.take() {
                    let _ = conn.close(200, "done".into()).await;
                }
            }
            Ok(())
        })
    }

    fn rpc_client<'a>(&'a self, topic: &'a str) -> BoxFut<'a, Box<dyn RpcClient>> {
        Box::pin(async move {
            let ch = self.channel(Role::Publish).await?;
            // Direct reply-to: replies come straight back on this channel, no queue declared.
            let mut replies = ch
                .basic_consume(
                    "amq.rabbitmq.reply-to".into(),
                    "".into(),
                    BasicConsumeOptions {
                        no_ack: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>> = Arc::default();
            let w = waiting.clone();
            let reader = tokio::spawn(async move {
                while let Some(Ok(d)) = replies.next().await {
                    let id = d
                        .properties
                        .correlation_id()
                        .as_ref()
                        .and_then(|c| c.as_str().parse::<u64>().ok());
                    if let Some(tx) = id.and_then(|id| w.lock().expect("rpc lock").remove(&id)) {
                        let _ = tx.send(d.data);
                    }
                }
            });
            Ok(Box::new(AmqpRpcClient {
                ch,
                queue: topic.into(),
                next: AtomicU64::new(0),
                waiting,
                reader,
            }) as Box<dyn RpcClient>)
        })
    }

    fn rpc_server<'a>(&'a self, topic: &'a str, deliver: Deliver) -> BoxFut<'a, Box<dyn Consumer>> {
        Box::pin(async move {
            let ch = self.channel(Role::Consume).await?;
            ch.basic_qos(100, BasicQosOptions::default()).await?;
            let mut requests = ch
                .basic_consume(
                    topic.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok(Box::new(TaskConsumer::spawn(move |mut stop| async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        d = requests.next() => {
                            let Some(d) = d else { break };
                            let d = d?;
                            deliver(&d.data);
                            if let Some(reply_to) = d.properties.reply_to().clone() {
                                let mut props = BasicProperties::default();
                                if let Some(c) = d.properties.correlation_id().clone() {
                                    props = props.with_correlation_id(c);
                                }
                                ch.basic_publish("".into(), reply_to, BasicPublishOptions::default(), &d.data, props)
                                    .await?;
                            }
                            d.ack(BasicAckOptions::default()).await?;
                        }
                    }
                }
                let _ = ch.close(200, "done".into()).await;
                Ok(())
            })) as Box<dyn Consumer>)
        })
    }
}

struct AmqpProducer {
    ch: Channel,
    exchange: ShortString,
    routing_key: ShortString,
}

impl Producer for AmqpProducer {
    fn send(&self, _key: Option<Vec<u8>>, payload: Vec<u8>) -> BoxFut<'static, ()> {
        let (ch, exchange, routing_key) = (
            self.ch.clone(),
            self.exchange.clone(),
            self.routing_key.clone(),
        );
        Box::pin(async move {
            let confirm = ch
                .basic_publish(
                    exchange,
                    routing_key,
                    BasicPublishOptions::default(),
                    &payload,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?
                .await?;
            if !confirm.is_ack() {
                bail!("the broker nacked a publish");
            }
            Ok(())
        })
    }
}

struct AmqpRpcClient {
    ch: Channel,
    queue: ShortString,
    next: AtomicU64,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for AmqpRpcClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl RpcClient for AmqpRpcClient {
    fn call(&self, payload: Vec<u8>) -> BoxFut<'static, Vec<u8>> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("rpc lock").insert(id, tx);
        let (ch, queue) = (self.ch.clone(), self.queue.clone());
        Box::pin(async move {
            let props = BasicProperties::default()
                .with_reply_to("amq.rabbitmq.reply-to".into())
                .with_correlation_id(id.to_string().as_str().into());
            ch.basic_publish(
                "".into(),
                queue,
                BasicPublishOptions::default(),
                &payload,
                props,
            )
            .await?;
            rx.await.context("the reply consumer stopped")
        })
    }
}
