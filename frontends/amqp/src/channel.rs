//! Channels: the methods of the basic, queue, exchange and confirm classes, turned into broker
//! messages. A channel keeps its unacknowledged deliveries (by delivery tag), its consumers and
//! the message being published (method, then header, then body frames).

use spool_metrics::live;
use std::collections::{BTreeMap, HashMap};

use actix::Addr;
use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{basic, channel, confirm, exchange, queue, AMQPClass};
use amq_protocol::types::ShortString;
use bytes::BytesMut;
use spool_actors::offsets_journal::now_ms;
use spool_actors::partition::{queue_append, PartitionActor};
use spool_actors::queues::delivery::ConsumerId;
use spool_actors::queues::queue::{
    AdmitPublish, ClaimDeliveries, ConsumerEvent, CountMessages, Delivery, Outcome, PurgeReady,
    QueueActor, RecordId, RefusePublish, ReleaseAll, RemoveConsumer, SettleDeliveries, TakeOne,
};
use spool_actors::queues::record::{self, QueueRecord};
use spool_actors::queues::registry::{
    ChangeBinding, DeclareExchange, DeclareQueue, DeleteExchange, DeleteQueue, FindQueue,
    QueueRegistry,
};
use spool_actors::queues::routing::RouteError;
use spool_actors::BrokerError;

use crate::connection::{
    next_consumer_id, truncate, Connection, ConsumeParams, ConsumerRef, Event, QueueHandle,
    QueueRef, DIRECT_REPLY_TO,
};
use crate::message::{expiration_ms, from_record, table_to_args, to_record};
use crate::reply::{self, AmqpError};

/// Records per batch when staged publishes are appended (well under `max.message.bytes`).
const STAGED_BATCH_BYTES: usize = 512 * 1024;

/// Publishes received since the last flush, grouped by queue so that each queue gets one
/// append however many messages arrived in one read.
#[derive(Default)]
pub struct Staged {
    /// By topic (each flush appends a topic's records to one of its partitions).
    queues: HashMap<String, StagedQueue>,
    messages: Vec<StagedMessage>,
    /// Body bytes staged (counted as in flight once appended).
    pub bytes: usize,
}

/// Settlements received since the last flush, by consumer and outcome, so that a queue gets
/// one message (one dispatch, one journal write) for every ack of a read instead of one each.
pub type StagedSettles = HashMap<(ConsumerId, Outcome), (QueueHandle, Vec<RecordId>)>;

/// One queue's staged records: the partition they go to, the records in publish order, and
/// which staged messages they are. A queue of many partitions gets each flush's records in
/// one of them, the next flush's in the next, so a read's publishes stay one append.
struct StagedQueue {
    partition: Addr<PartitionActor>,
    records: Vec<QueueRecord>,
    messages: Vec<usize>,
}

struct StagedMessage {
    channel: u16,
    /// Its confirm sequence number, in confirm mode.
    seq: Option<u64>,
    /// A queue refused it (reject-publish): it is nacked whatever the appends do.
    refused: bool,
}

impl Staged {
    fn add(
        &mut self,
        channel: u16,
        seq: Option<u64>,
        refused: bool,
        body_len: usize,
        records: Vec<(String, Addr<PartitionActor>, QueueRecord)>,
    ) {
        let index = self.messages.len();
        self.messages.push(StagedMessage {
            channel,
            seq,
            refused,
        });
        self.bytes += body_len * records.len();
        for (topic, partition, record) in records {
            let q = self.queues.entry(topic).or_insert_with(|| StagedQueue {
                partition,
                records: Vec::new(),
                messages: Vec::new(),
            });
            q.records.push(record);
            q.messages.push(index);
        }
    }
}

/// A message being received: its publish method, then its header, then its body.
struct Incoming {
    publish: basic::Publish,
    header: Option<AMQPContentHeader>,
    body: BytesMut,
}

/// One delivery the client has not settled yet.
struct Unacked {
    consumer: ConsumerId,
    id: RecordId,
    queue: QueueHandle,
}

/// The state of one open channel.
#[derive(Default)]
pub struct Channel {
    /// basic.qos prefetch for consumers started from now on (0: none).
    prefetch: u16,
    confirm: bool,
    /// Publish sequence numbers in confirm mode start at 1.
    published: u64,
    /// Confirms decided and not yet sent, and what the client has been told.
    confirms: crate::confirms::Confirms,
    incoming: Option<Incoming>,
    next_tag: u64,
    unacked: BTreeMap<u64, Unacked>,
    /// Consumers by tag.
    consumers: HashMap<String, ConsumerId>,
    /// The channel's pseudo-consumer for basic.get, per queue it got from.
    getters: HashMap<String, (ConsumerId, QueueHandle)>,
    /// The name replies to this channel's requests go to (direct reply-to), once it consumes
    /// from `amq.rabbitmq.reply-to`.
    reply_name: Option<String>,
}

impl Channel {
    /// Puts every unacknowledged delivery back (the channel closed).
    pub fn release_all(&mut self) {
        for u in std::mem::take(&mut self.unacked).into_values() {
            u.queue.do_send(SettleDeliveries {
                consumer: u.consumer,
                records: vec![u.id],
                outcome: Outcome::Requeue,
                receipt: None,
            });
        }
        for (id, q) in self.getters.values() {
            q.do_send(ReleaseAll { consumer: *id });
        }
    }

    /// The queue handles this channel's deliveries and gets hold.
    pub fn handles(&self) -> impl Iterator<Item = &QueueHandle> {
        let unacked = self.unacked.values().map(|u| &u.queue);
        unacked.chain(self.getters.values().map(|(_, q)| q))
    }

    /// Points what this channel holds of queue `new.name` at its actor `new` (the queue's
    /// actor was restarted, maybe more than once: every earlier handle of it is dead); answers
    /// the unsettled deliveries moved, by consumer.
    pub fn move_handles(&mut self, new: &QueueHandle) -> Vec<(ConsumerId, RecordId)> {
        let stale = |q: &QueueHandle| q.name == new.name && q.addr != new.addr;
        let mut moved = Vec::new();
        for u in self.unacked.values_mut() {
            if stale(&u.queue) {
                u.queue = new.clone();
                moved.push((u.consumer, u.id));
            }
        }
        for (_, q) in self.getters.values_mut() {
            if stale(q) {
                *q = new.clone();
            }
        }
        moved
    }
}

impl Connection {
    /// Handles a frame for a channel other than 0.
    pub async fn channel_frame(&mut self, id: u16, frame: AMQPFrame) -> Result<(), AmqpError> {
        if self.closing.contains(&id) {
            // After the server closed a channel, only close-ok (or close) counts.
            if let AMQPFrame::Method(_, AMQPClass::Channel(c)) = frame {
                match c {
                    channel::AMQPMethod::CloseOk(_) => {
                        self.closing.remove(&id);
                    }
                    channel::AMQPMethod::Close(_) => {
                        self.closing.remove(&id);
                        self.method(
                            id,
                            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                        );
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        if id > self.channel_max {
            return Err(AmqpError::connection(
                reply::CHANNEL_ERROR,
                format!("channel {id} is above channel_max {}", self.channel_max),
            ));
        }
        match frame {
            AMQPFrame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Open(_))) => {
                if self.channels.contains_key(&id) {
                    return Err(AmqpError::connection(
                        reply::CHANNEL_ERROR,
                        format!("second 'channel.open' seen on channel {id}"),
                    ));
                }
                self.channels.insert(id, Channel::default());
                live::channels(1);
                self.method(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                );
                Ok(())
            }
            _ if !self.channels.contains_key(&id) => Err(AmqpError::connection(
                reply::CHANNEL_ERROR,
                format!("expected 'channel.open' on channel {id}"),
            )),
            AMQPFrame::Method(_, method) => {
                if self.channels[&id].incoming.is_some() {
                    return Err(AmqpError::connection(
                        reply::UNEXPECTED_FRAME,
                        "expected a content header or body, got a method",
                    ));
                }
                // Anything but a publish or a settlement may look at what was published
                // before it: staged publishes are appended first.
                let streaming = matches!(
                    &method,
                    AMQPClass::Basic(
                        basic::AMQPMethod::Publish(_)
                            | basic::AMQPMethod::Ack(_)
                            | basic::AMQPMethod::Nack(_)
                            | basic::AMQPMethod::Reject(_)
                    )
                );
                if !streaming {
                    self.flush_settles();
                    self.flush_publishes()?;
                }
                self.channel_method(id, method).await
            }
            AMQPFrame::Header(_, header) => {
                let ch = self.channels.get_mut(&id).expect("checked");
                match &mut ch.incoming {
                    Some(inc) if inc.header.is_none() => {
                        let size = header.body_size;
                        if size > self.config.max_message_bytes {
                            return Err(AmqpError::channel(
                                reply::PRECONDITION_FAILED,
                                format!(
                                    "message size {size} is larger than configured max size {}",
                                    self.config.max_message_bytes
                                ),
                            )
                            .on(60, 40));
                        }
                        inc.body.reserve(size as usize);
                        inc.header = Some(header);
                        if size == 0 {
                            self.publish_complete(id).await?;
                        }
                        Ok(())
                    }
                    _ => Err(AmqpError::connection(
                        reply::UNEXPECTED_FRAME,
                        "unexpected content header",
                    )),
                }
            }
            AMQPFrame::Body(_, data) => {
                let ch = self.channels.get_mut(&id).expect("checked");
                let Some(inc) = &mut ch.incoming else {
                    return Err(AmqpError::connection(
                        reply::UNEXPECTED_FRAME,
                        "unexpected content body",
                    ));
                };
                let Some(header) = &inc.header else {
                    return Err(AmqpError::connection(
                        reply::UNEXPECTED_FRAME,
                        "content body before its header",
                    ));
                };
                if inc.body.len() + data.len() > header.body_size as usize {
                    return Err(AmqpError::connection(
                        reply::FRAME_ERROR,
                        "content body longer than its header said",
                    ));
                }
                inc.body.extend_from_slice(&data);
                if inc.body.len() == header.body_size as usize {
                    self.publish_complete(id).await?;
                }
                Ok(())
            }
            _ => Err(AmqpError::connection(
                reply::FRAME_ERROR,
                "unexpected frame",
            )),
        }
    }

    /// Closes a channel for a soft error: channel.close now; frames until close-ok are dropped.
    pub fn close_channel(&mut self, id: u16, e: &AmqpError) {
        // Acks received before the error count; what the channel still holds goes back.
        self.flush_settles();
        self.drop_reply_consumer(id, None);
        if let Some(mut ch) = self.channels.remove(&id) {
            live::channels(-1);
            ch.release_all();
            self.drop_consumers(&mut ch);
        }
        self.closing.insert(id);
        self.method(
            id,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: e.code,
                reply_text: ShortString::from(truncate(&e.text)),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
    }

    fn drop_consumers(&mut self, ch: &mut Channel) {
        for id in ch.consumers.drain().map(|(_, id)| id) {
            if let Some(c) = self.consumers.get_mut(&id) {
                c.cancelled = true;
                c.queue.do_send(RemoveConsumer {
                    consumer: id,
                    requeue: true,
                });
            }
        }
    }

    fn ch(&mut self, id: u16) -> &mut Channel {
        self.channels.get_mut(&id).expect("open channel")
    }

    /// Asks the queue registry; its refusal becomes the AMQP error for it.
    async fn registry<M, T>(&self, msg: M) -> Result<T, AmqpError>
    where
        M: actix::Message<Result = Result<T, BrokerError>> + Send + 'static,
        M::Result: Send,
        QueueRegistry: actix::Handler<M>,
    {
        self.broker
            .queues
            .send(msg)
            .await
            .map_err(|_| {
                AmqpError::connection(reply::INTERNAL_ERROR, "queue registry unavailable")
            })?
            .map_err(AmqpError::from)
    }

    async fn find_queue(&self, name: &str) -> Result<Addr<QueueActor>, AmqpError> {
        self.registry(FindQueue {
            name: name.to_string(),
            connection: self.id,
        })
        .await
    }

    async fn channel_method(&mut self, id: u16, method: AMQPClass) -> Result<(), AmqpError> {
        let (class_id, method_id) = (method.get_amqp_class_id(), method.get_amqp_method_id());
        let on = |e: AmqpError| e.on(class_id, method_id);
        match method {
            AMQPClass::Channel(c) => match c {
                channel::AMQPMethod::Close(_) => {
                    self.drop_reply_consumer(id, None);
                    if let Some(mut ch) = self.channels.remove(&id) {
                        live::channels(-1);
                        ch.release_all();
                        self.drop_consumers(&mut ch);
                    }
                    self.method(
                        id,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    );
                }
                channel::AMQPMethod::Flow(f) => self.method(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                        active: f.active,
                    })),
                ),
                channel::AMQPMethod::CloseOk(_) | channel::AMQPMethod::FlowOk(_) => {}
                _ => {
                    return Err(on(AmqpError::connection(
                        reply::COMMAND_INVALID,
                        "unexpected channel method",
                    )))
                }
            },
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                self.ch(id).confirm = true;
                if !s.nowait {
                    self.method(
                        id,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
            }
            AMQPClass::Exchange(e) => self.exchange_method(id, e).await.map_err(on)?,
            AMQPClass::Queue(q) => self.queue_method(id, q).await.map_err(on)?,
            AMQPClass::Basic(b) => self.basic_method(id, b).await.map_err(on)?,
            AMQPClass::Tx(_) => {
                return Err(on(AmqpError::channel(
                    reply::NOT_IMPLEMENTED,
                    "transactions (tx.*) are not supported; use publisher confirms",
                )))
            }
            _ => {
                return Err(on(AmqpError::connection(
                    reply::COMMAND_INVALID,
                    "unexpected method",
                )))
            }
        }
        Ok(())
    }

    async fn exchange_method(
        &mut self,
        id: u16,
        method: exchange::AMQPMethod,
    ) -> Result<(), AmqpError> {
        match method {
            exchange::AMQPMethod::Declare(d) => {
                self.registry(DeclareExchange {
                    name: d.exchange.to_string(),
                    kind: d.kind.to_string(),
                    passive: d.passive,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: table_to_args(&d.arguments),
                })
                .await?;
                if !d.nowait {
                    self.method(
                        id,
                        AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(
                            exchange::DeclareOk {},
                        )),
                    );
                }
            }
            exchange::AMQPMethod::Delete(d) => {
                self.registry(DeleteExchange {
                    name: d.exchange.to_string(),
                    if_unused: d.if_unused,
                })
                .await?;
                if !d.nowait {
                    self.method(
                        id,
                        AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                    );
                }
            }
            _ => {
                return Err(AmqpError::channel(
                    reply::NOT_IMPLEMENTED,
                    "exchange-to-exchange bindings are not supported",
                ))
            }
        }
        Ok(())
    }

    async fn queue_method(&mut self, id: u16, method: queue::AMQPMethod) -> Result<(), AmqpError> {
        match method {
            queue::AMQPMethod::Declare(d) => {
                let q = self
                    .registry(DeclareQueue {
                        name: d.queue.to_string(),
                        passive: d.passive,
                        durable: d.durable,
                        exclusive: d.exclusive,
                        auto_delete: d.auto_delete,
                        arguments: table_to_args(&d.arguments),
                        connection: self.id,
                    })
                    .await?;
                if !d.nowait {
                    self.method(
                        id,
                        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                            queue: q.name.as_str().into(),
                            message_count: q.counts.ready.min(u32::MAX as u64) as u32,
                            consumer_count: q.counts.consumers,
                        })),
                    );
                }
            }
            queue::AMQPMethod::Bind(b) => {
                self.registry(ChangeBinding {
                    queue: b.queue.to_string(),
                    exchange: b.exchange.to_string(),
                    routing_key: b.routing_key.to_string(),
                    arguments: table_to_args(&b.arguments),
                    bind: true,
                    connection: self.id,
                })
                .await?;
                if !b.nowait {
                    self.method(
                        id,
                        AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
                    );
                }
            }
            queue::AMQPMethod::Unbind(b) => {
                self.registry(ChangeBinding {
                    queue: b.queue.to_string(),
                    exchange: b.exchange.to_string(),
                    routing_key: b.routing_key.to_string(),
                    arguments: table_to_args(&b.arguments),
                    bind: false,
                    connection: self.id,
                })
                .await?;
                self.method(
                    id,
                    AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})),
                );
            }
            queue::AMQPMethod::Purge(p) => {
                let q = self.find_queue(p.queue.as_str()).await?;
                // A queue deleted meanwhile is not there to purge.
                let n = q.send(PurgeReady).await.map_err(|_| {
                    AmqpError::channel(
                        reply::NOT_FOUND,
                        format!("no queue '{}' in vhost '/'", p.queue),
                    )
                })?;
                if !p.nowait {
                    self.method(
                        id,
                        AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                            message_count: n.min(u32::MAX as u64) as u32,
                        })),
                    );
                }
            }
            queue::AMQPMethod::Delete(d) => {
                let n = self
                    .registry(DeleteQueue {
                        name: d.queue.to_string(),
                        if_unused: d.if_unused,
                        if_empty: d.if_empty,
                        connection: self.id,
                    })
                    .await?;
                if !d.nowait {
                    self.method(
                        id,
                        AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                            message_count: n.min(u32::MAX as u64) as u32,
                        })),
                    );
                }
            }
            _ => {
                return Err(AmqpError::connection(
                    reply::COMMAND_INVALID,
                    "unexpected queue method",
                ))
            }
        }
        Ok(())
    }

    async fn basic_method(&mut self, id: u16, method: basic::AMQPMethod) -> Result<(), AmqpError> {
        match method {
            basic::AMQPMethod::Qos(q) => {
                // Per consumer (RabbitMQ's per_consumer_qos); `global` is accepted and applied
                // the same way, as kombu sets it.
                self.ch(id).prefetch = q.prefetch_count;
                self.method(
                    id,
                    AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
                );
            }
            basic::AMQPMethod::Publish(p) => {
                self.ch(id).incoming = Some(Incoming {
                    publish: p,
                    header: None,
                    body: BytesMut::new(),
                });
            }
            basic::AMQPMethod::Consume(c) => self.consume(id, c).await?,
            basic::AMQPMethod::Cancel(c) => {
                let tag = c.consumer_tag.to_string();
                self.drop_reply_consumer(id, Some(&tag));
                if let Some(consumer) = self.ch(id).consumers.remove(&tag) {
                    if let Some(r) = self.consumers.get_mut(&consumer) {
                        // Unacknowledged deliveries stay with the channel until settled;
                        // deliveries already on their way go back (see `deliver`).
                        r.cancelled = true;
                        r.queue.do_send(RemoveConsumer {
                            consumer,
                            requeue: false,
                        });
                    }
                }
                if !c.nowait {
                    self.method(
                        id,
                        AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                            consumer_tag: tag.as_str().into(),
                        })),
                    );
                }
            }
            basic::AMQPMethod::Get(g) => self.get(id, g).await?,
            // The client's answer to a cancel notification.
            basic::AMQPMethod::CancelOk(_) => {}
            basic::AMQPMethod::Ack(a) => {
                self.settle(id, a.delivery_tag, a.multiple, Outcome::Ack)?
            }
            basic::AMQPMethod::Nack(n) => {
                let outcome = if n.requeue {
                    Outcome::Requeue
                } else {
                    Outcome::Reject
                };
                self.settle(id, n.delivery_tag, n.multiple, outcome)?
            }
            basic::AMQPMethod::Reject(r) => {
                let outcome = if r.requeue {
                    Outcome::Requeue
                } else {
                    Outcome::Reject
                };
                self.settle(id, r.delivery_tag, false, outcome)?
            }
            // Unacknowledged deliveries go back to the queue, for anyone, flagged redelivered.
            // As in RabbitMQ, redelivery to the same consumer (requeue=false) is not
            // implemented, and recover-async has no answer.
            basic::AMQPMethod::Recover(basic::Recover { requeue })
            | basic::AMQPMethod::RecoverAsync(basic::RecoverAsync { requeue })
                if !requeue =>
            {
                return Err(AmqpError::connection(
                    reply::NOT_IMPLEMENTED,
                    "requeue=false",
                ))
            }
            basic::AMQPMethod::RecoverAsync(_) => self.settle_all(id, Outcome::Requeue),
            basic::AMQPMethod::Recover(_) => {
                self.settle_all(id, Outcome::Requeue);
                self.method(
                    id,
                    AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
                );
            }
            _ => {
                return Err(AmqpError::connection(
                    reply::COMMAND_INVALID,
                    "unexpected basic method",
                ))
            }
        }
        Ok(())
    }

    async fn consume(&mut self, id: u16, c: basic::Consume) -> Result<(), AmqpError> {
        if c.queue.as_str() == DIRECT_REPLY_TO {
            return self.consume_replies(id, c);
        }
        let queue = self.find_queue(c.queue.as_str()).await?;
        let tag = if c.consumer_tag.as_str().is_empty() {
            format!("amq.ctag-{}", next_consumer_id())
        } else {
            c.consumer_tag.to_string()
        };
        if self.ch(id).consumers.contains_key(&tag) {
            return Err(AmqpError::connection(
                reply::NOT_ALLOWED,
                format!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        let consumer = next_consumer_id();
        let params = ConsumeParams {
            prefetch: self.ch(id).prefetch as u32,
            auto_ack: c.no_ack,
            exclusive: c.exclusive,
            priority: table_to_args(&c.arguments)
                .get("x-priority")
                .and_then(serde_json::Value::as_i64)
                .map_or(0, |p| p.clamp(i32::MIN as i64, i32::MAX as i64) as i32),
        };
        queue
            .send(params.attach(consumer, self.deliveries.clone()))
            .await
            .map_err(|_| AmqpError::channel(reply::NOT_FOUND, "the queue is gone"))??;
        self.ch(id).consumers.insert(tag.clone(), consumer);
        self.consumers.insert(
            consumer,
            ConsumerRef {
                channel: id,
                tag: tag.as_str().into(),
                queue: QueueRef::handle(c.queue.as_str(), queue),
                no_ack: c.no_ack,
                cancelled: false,
                params,
                noticed: false,
                draining: false,
            },
        );
        // consume-ok goes out before any delivery: deliveries wait in the connection's channel
        // until this handler returns.
        if !c.nowait {
            self.method(
                id,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: tag.as_str().into(),
                })),
            );
        }
        Ok(())
    }

    /// Direct reply-to: the channel gets a private reply name; nothing is stored.
    fn consume_replies(&mut self, id: u16, c: basic::Consume) -> Result<(), AmqpError> {
        if !c.no_ack {
            return Err(AmqpError::channel(
                reply::PRECONDITION_FAILED,
                "reply consumer cannot acknowledge",
            ));
        }
        if self.ch(id).reply_name.is_some() {
            return Err(AmqpError::channel(
                reply::PRECONDITION_FAILED,
                "reply consumer already set",
            ));
        }
        use std::hash::{BuildHasher, Hasher};
        let secret = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let consumer = next_consumer_id();
        let name = format!("{DIRECT_REPLY_TO}.g{}.{consumer}.{secret:016x}", self.id);
        let tag = if c.consumer_tag.as_str().is_empty() {
            format!("amq.ctag-{consumer}")
        } else {
            c.consumer_tag.to_string()
        };
        self.replies
            .lock()
            .expect("replies lock")
            .insert(name.clone(), (self.deliveries.clone(), consumer));
        self.reply_consumers
            .insert(consumer, (id, tag.clone(), name.clone()));
        self.ch(id).reply_name = Some(name);
        if !c.nowait {
            self.method(
                id,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: tag.as_str().into(),
                })),
            );
        }
        Ok(())
    }

    /// Forgets a channel's direct reply-to consumer (cancelled, or its channel closed).
    fn drop_reply_consumer(&mut self, id: u16, tag: Option<&str>) {
        let found = self
            .reply_consumers
            .iter()
            .find(|(_, (ch, t, _))| *ch == id && tag.is_none_or(|tag| tag == t))
            .map(|(c, _)| *c);
        if let Some(consumer) = found {
            let (_, _, name) = self.reply_consumers.remove(&consumer).expect("found");
            self.replies.lock().expect("replies lock").remove(&name);
            if let Some(ch) = self.channels.get_mut(&id) {
                ch.reply_name = None;
            }
        }
    }

    async fn get(&mut self, id: u16, g: basic::Get) -> Result<(), AmqpError> {
        let name = g.queue.to_string();
        let queue = self.find_queue(&name).await?;
        let handle = QueueRef::handle(&name, queue.clone());
        let consumer = self
            .ch(id)
            .getters
            .entry(name)
            .or_insert_with(|| (next_consumer_id(), handle.clone()))
            .0;
        let taken = queue
            .send(TakeOne {
                consumer,
                auto_ack: g.no_ack,
            })
            .await
            .ok()
            .flatten();
        let Some(d) = taken else {
            self.method(
                id,
                AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
            );
            return Ok(());
        };
        let remaining = queue.send(CountMessages).await.unwrap_or_default().ready;
        let tag = self.track(id, consumer, d.id, handle, g.no_ack);
        let out = from_record(&d.record);
        self.content(
            id,
            AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag: tag,
                redelivered: d.redelivered,
                exchange: out.exchange.as_str().into(),
                routing_key: out.routing_key.as_str().into(),
                message_count: remaining.min(u32::MAX as u64) as u32,
            })),
            out.properties,
            &out.body,
        );
        Ok(())
    }

    /// Gives a delivery its tag, remembering it until settled unless `no_ack`.
    fn track(
        &mut self,
        id: u16,
        consumer: ConsumerId,
        record: RecordId,
        queue: QueueHandle,
        no_ack: bool,
    ) -> u64 {
        let ch = self.ch(id);
        ch.next_tag += 1;
        let tag = ch.next_tag;
        if !no_ack {
            ch.unacked.insert(
                tag,
                Unacked {
                    consumer,
                    id: record,
                    queue,
                },
            );
        }
        tag
    }

    /// Something a queue told one of this connection's consumers.
    pub fn consumer_event(&mut self, ev: ConsumerEvent) {
        match ev {
            ConsumerEvent::Deliver(d) => self.deliver(d),
            ConsumerEvent::QueueLost(consumer) => self.consumer_lost(consumer),
            ConsumerEvent::Cancelled(consumer) => {
                // The queue was deleted: tell the client (consumer_cancel_notify).
                let Some(c) = self.consumers.get_mut(&consumer) else {
                    return;
                };
                if c.cancelled {
                    return;
                }
                c.cancelled = true;
                let (channel, tag) = (c.channel, c.tag.clone());
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.consumers.remove(tag.as_str());
                    self.method(
                        channel,
                        AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                            consumer_tag: tag,
                            nowait: true,
                        })),
                    );
                }
            }
        }
    }

    /// Writes a delivery from a queue to its consumer's channel.
    fn deliver(&mut self, d: Delivery) {
        if let Some((channel, tag, _)) = self.reply_consumers.get(&d.consumer).cloned() {
            let Some(ch) = self.channels.get_mut(&channel) else {
                return;
            };
            ch.next_tag += 1;
            let delivery_tag = ch.next_tag;
            let out = from_record(&d.record);
            self.content(
                channel,
                AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                    consumer_tag: tag.as_str().into(),
                    delivery_tag,
                    redelivered: false,
                    exchange: "".into(),
                    routing_key: out.routing_key.as_str().into(),
                })),
                out.properties,
                &out.body,
            );
            return;
        }
        let Some(c) = self.consumers.get(&d.consumer) else {
            return;
        };
        let (channel, tag, queue, no_ack) = (c.channel, c.tag.clone(), c.queue.clone(), c.no_ack);
        if c.cancelled || !self.channels.contains_key(&channel) {
            // Cancelled (or its channel closed) while this was on its way: it goes back.
            if !no_ack {
                queue.do_send(SettleDeliveries {
                    consumer: d.consumer,
                    records: vec![d.id],
                    outcome: Outcome::Requeue,
                    receipt: None,
                });
            }
            return;
        }
        if c.draining && !no_ack {
            // From the queue's ended actor, after the consumer moved to the next one.
            queue.do_send(ClaimDeliveries {
                consumer: d.consumer,
                records: vec![d.id],
            });
        }
        let delivery_tag = self.track(channel, d.consumer, d.id, queue, no_ack);
        let out = from_record(&d.record);
        self.content(
            channel,
            AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: tag,
                delivery_tag,
                redelivered: d.redelivered,
                exchange: out.exchange.into(),
                routing_key: out.routing_key.into(),
            })),
            out.properties,
            &out.body,
        );
    }

    /// Settles one tag, or every tag up to it (`multiple`; tag 0 with multiple means all).
    fn settle(
        &mut self,
        id: u16,
        tag: u64,
        multiple: bool,
        outcome: Outcome,
    ) -> Result<(), AmqpError> {
        let ch = self.ch(id);
        let tags: Vec<u64> = if multiple {
            let upto = if tag == 0 { u64::MAX } else { tag };
            ch.unacked.range(..=upto).map(|(t, _)| *t).collect()
        } else if ch.unacked.contains_key(&tag) {
            vec![tag]
        } else {
            Vec::new()
        };
        if tags.is_empty() && !(multiple && tag == 0) {
            return Err(AmqpError::channel(
                reply::PRECONDITION_FAILED,
                format!("unknown delivery tag {tag}"),
            ));
        }
        let settled: Vec<Unacked> = tags
            .iter()
            .map(|t| ch.unacked.remove(t).expect("listed"))
            .collect();
        for u in settled {
            self.settles
                .entry((u.consumer, outcome))
                .or_insert_with(|| (u.queue.clone(), Vec::new()))
                .1
                .push(u.id);
        }
        Ok(())
    }

    /// Sends the staged settlements: before anything else reaches a queue (a cancel, a
    /// channel's release), and at the end of every read.
    pub fn flush_settles(&mut self) {
        for ((consumer, outcome), (queue, records)) in self.settles.drain() {
            crate::reattach::send_settle(&mut self.settling, queue, consumer, records, outcome);
        }
    }

    fn settle_all(&mut self, id: u16, outcome: Outcome) {
        if let Some(last) = self.ch(id).unacked.keys().next_back().copied() {
            let _ = self.settle(id, last, true, outcome);
        }
    }

    /// A whole message arrived: route it and append it to every queue it reaches.
    async fn publish_complete(&mut self, id: u16) -> Result<(), AmqpError> {
        let inc = self.ch(id).incoming.take().expect("publishing");
        let header = inc.header.expect("complete");
        let p = inc.publish;
        if let Err(problem) = expiration_ms(&header.properties) {
            let text = header
                .properties
                .expiration()
                .as_ref()
                .map_or("", |e| e.as_str());
            return Err(AmqpError::channel(
                reply::PRECONDITION_FAILED,
                format!("invalid expiration '{text}': {problem}"),
            )
            .on(60, 40));
        }
        let confirm = self.ch(id).confirm;
        live::published(confirm);
        let seq = if confirm {
            let ch = self.ch(id);
            ch.published += 1;
            Some(ch.published)
        } else {
            None
        };
        let exchange = p.exchange.to_string();
        let routing_key = p.routing_key.to_string();
        let mut header = header;
        if header.properties.reply_to().as_ref().map(|r| r.as_str()) == Some(DIRECT_REPLY_TO) {
            let Some(name) = self.ch(id).reply_name.clone() else {
                return Err(AmqpError::channel(
                    reply::PRECONDITION_FAILED,
                    "fast reply consumer does not exist",
                )
                .on(60, 40));
            };
            header.properties = header.properties.with_reply_to(name.as_str().into());
        }
        if exchange.is_empty() && routing_key.starts_with(&format!("{DIRECT_REPLY_TO}.")) {
            let target = self
                .replies
                .lock()
                .expect("replies lock")
                .get(&routing_key)
                .cloned();
            let body = inc.body.freeze();
            live::routed(target.is_some(), p.mandatory);
            match target {
                Some((sink, consumer)) => {
                    let record =
                        to_record("", &routing_key, &header.properties, body, now_ms(), None);
                    // A requester that cannot keep up loses replies, as with RabbitMQ.
                    let _ = sink.try_send(ConsumerEvent::Deliver(Delivery {
                        consumer,
                        id: RecordId {
                            partition: 0,
                            offset: 0,
                        },
                        redelivered: false,
                        record: record.into(),
                    }));
                }
                None if p.mandatory => self.content(
                    id,
                    AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                        reply_code: reply::NO_ROUTE,
                        reply_text: "NO_ROUTE".into(),
                        exchange: "".into(),
                        routing_key: routing_key.as_str().into(),
                    })),
                    header.properties.clone(),
                    &body,
                ),
                None => {}
            }
            if let Some(seq) = seq {
                self.confirm(id, seq, true);
            }
            return Ok(());
        }
        let headers = header
            .properties
            .headers()
            .as_ref()
            .map(table_to_args)
            .unwrap_or_default();
        let routes = self.broker.routes.snapshot();
        let targets = match routes.route(&exchange, &routing_key, &headers) {
            Ok(t) => t,
            Err(RouteError::NoExchange(name)) => {
                return Err(AmqpError::channel(
                    reply::NOT_FOUND,
                    format!("no exchange '{name}' in vhost '/'"),
                )
                .on(60, 40))
            }
            Err(RouteError::Internal(name)) => {
                return Err(AmqpError::channel(
                    reply::ACCESS_REFUSED,
                    format!("cannot publish to internal exchange '{name}' in vhost '/'"),
                )
                .on(60, 40))
            }
        };
        let body = inc.body.freeze();
        live::routed(!targets.is_empty(), p.mandatory);
        if targets.is_empty() {
            if p.mandatory {
                self.content(
                    id,
                    AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                        reply_code: reply::NO_ROUTE,
                        reply_text: "NO_ROUTE".into(),
                        exchange: exchange.as_str().into(),
                        routing_key: routing_key.as_str().into(),
                    })),
                    header.properties.clone(),
                    &body,
                );
            }
            if let Some(seq) = seq {
                self.confirm(id, seq, true);
            }
            return Ok(());
        }
        let catalog = self.broker.catalog.snapshot();
        let now = now_ms();
        // A full queue with x-overflow=reject-publish refuses the message: it is not appended
        // there, and the publisher gets a nack (with reject-publish-dlx the queue also
        // dead-letters it).
        let mut refused = false;
        let mut records = Vec::with_capacity(targets.len());
        let record = |ttl| {
            to_record(
                &exchange,
                &routing_key,
                &header.properties,
                body.clone(),
                now,
                ttl,
            )
        };
        for t in &targets {
            if let Some(q) = &t.admission {
                if !q.send(AdmitPublish).await.unwrap_or(false) {
                    refused = true;
                    q.do_send(RefusePublish {
                        record: record(t.message_ttl),
                    });
                    continue;
                }
            }
            let turn = self.id.wrapping_add(self.flushes);
            let Some(addr) = catalog
                .spread(&t.topic, turn)
                .and_then(|(_, p)| p.local.clone())
            else {
                return Err(AmqpError::channel(
                    reply::NOT_FOUND,
                    format!("queue '{}' has no storage (its topic is gone)", t.name),
                ));
            };
            records.push((t.topic.clone(), addr, record(t.message_ttl)));
        }
        self.publisher = true;
        self.staged.add(id, seq, refused, body.len(), records);
        self.overflowed |=
            self.inflight.bytes() + self.staged.bytes > self.config.max_inflight_bytes;
        Ok(())
    }

    /// Appends the publishes staged since the last flush: one append per queue, its records
    /// in batches, and the confirms once those appends are acknowledged.
    pub fn flush_publishes(&mut self) -> Result<(), AmqpError> {
        if self.staged.messages.is_empty() {
            return Ok(());
        }
        let staged = std::mem::take(&mut self.staged);
        self.flushes += 1;
        let mut appends = Vec::with_capacity(staged.queues.len());
        for q in staged.queues.into_values() {
            let (addr, records, messages) = (q.partition, q.records, q.messages);
            let mut batches = Vec::new();
            let mut chunk = Vec::new();
            let mut chunk_bytes = 0;
            for r in records {
                let size = r.value.as_ref().map_or(0, |v| v.len()) + 256;
                if !chunk.is_empty() && chunk_bytes + size > STAGED_BATCH_BYTES {
                    batches.push(record::encode(&chunk).map_err(AmqpError::from)?);
                    chunk.clear();
                    chunk_bytes = 0;
                }
                chunk_bytes += size;
                chunk.push(r);
            }
            if !chunk.is_empty() {
                batches.push(record::encode(&chunk).map_err(AmqpError::from)?);
            }
            appends.push((queue_append(&addr, batches), messages));
        }
        let (events, inflight, bytes) = (self.events.clone(), self.inflight.clone(), staged.bytes);
        inflight.add(bytes);
        let mut ok: Vec<bool> = staged.messages.iter().map(|m| !m.refused).collect();
        tokio::spawn(async move {
            for (append, messages) in appends {
                if !matches!(append.await, Some(Ok(_))) {
                    for m in messages {
                        ok[m] = false;
                    }
                }
            }
            inflight.release(bytes);
            for (m, ok) in staged.messages.iter().zip(ok) {
                if let Some(seq) = m.seq {
                    let _ = events.send(Event::Confirmed {
                        channel: m.channel,
                        seq,
                        ok,
                    });
                }
            }
        });
        Ok(())
    }

    /// Decides publish `seq` of `channel`: its confirm goes out with the others decided before
    /// the connection next writes ([`Self::send_confirms`]).
    fn confirm(&mut self, channel: u16, seq: u64, ok: bool) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        if ok {
            live::confirmed(1);
        }
        if !ch.confirms.pending() {
            self.confirming.push(channel);
        }
        ch.confirms.add(seq, ok);
    }

    /// Encodes the confirms decided since the last write, runs of acks as one `multiple` ack.
    pub fn send_confirms(&mut self) {
        for channel in std::mem::take(&mut self.confirming) {
            let Some(ch) = self.channels.get_mut(&channel) else {
                continue;
            };
            for c in ch.confirms.take() {
                let method = if c.ack {
                    basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: c.delivery_tag,
                        multiple: c.multiple,
                    })
                } else {
                    basic::AMQPMethod::Nack(basic::Nack {
                        delivery_tag: c.delivery_tag,
                        multiple: c.multiple,
                        requeue: false,
                    })
                };
                self.method(channel, AMQPClass::Basic(method));
            }
        }
    }

    /// An event from a task the connection started.
    pub fn event(&mut self, ev: Event) {
        match ev {
            Event::Confirmed { channel, seq, ok } => self.confirm(channel, seq, ok),
            Event::QueueBack { name, addr } => self.queue_back(name, addr),
            Event::ReattachRefused { consumer } => {
                self.consumer_event(ConsumerEvent::Cancelled(consumer))
            }
            Event::ReattachFailed { queue } => self.reattach_failed(queue),
        }
    }
}
