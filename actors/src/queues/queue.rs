//! The queue actor: one per queue, the only owner of its delivery state. It reads the queue's
//! log ahead of its consumers, hands records out by prefetch credit in turn, and journals every
//! change so that a restart neither loses nor re-delivers an acknowledged record.
//!
//! Publishing does not pass through here: publishers append to the queue's partition (the only
//! writer of the log), and the queue learns of new records by waiting on that partition.

use spool_metrics::live::{self, DeadLetterReason, DeliveryKind};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::delivery::{Change, ConsumerId, DeliveryState};
use super::record::{self, QueueRecord};
use super::routing::Routes;
use super::state_journal::{Barrier, LoadQueueState, QueueStateJournal, RecordQueueChange};
use crate::catalog::Catalog;
use crate::partition::{queue_append, AwaitRecords, DescribeLog, PartitionActor, ReadRecords};
use crate::BrokerError;

/// Records read ahead of the consumers, at most.
const READ_AHEAD: usize = 2048;
/// Bytes asked of the log per read.
const READ_BYTES: usize = 1 << 20;
/// How often ready records are checked for expiry.
const EXPIRY_SCAN: std::time::Duration = std::time::Duration::from_millis(100);
/// Deliveries buffered for a consumer without acknowledgements before it is skipped.
pub const AUTO_ACK_WINDOW: usize = 512;

/// One record handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub consumer: ConsumerId,
    pub offset: u64,
    pub redelivered: bool,
    /// Shared with the queue's read-ahead: a delivery does not copy the record.
    pub record: Arc<QueueRecord>,
}

/// What a queue tells a consumer.
#[derive(Debug, Clone)]
pub enum ConsumerEvent {
    Deliver(Delivery),
    /// The queue is gone (deleted): the consumer will get nothing more.
    Cancelled(ConsumerId),
}

/// Where a consumer's deliveries go: the front end's channel to its connection.
pub type DeliverySink = mpsc::Sender<ConsumerEvent>;

/// A queue's behaviour, from its declaration's arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSettings {
    /// `x-delivery-limit`: records delivered this many times are archived instead.
    pub delivery_limit: Option<u32>,
    /// `x-max-priority`: priorities count (capped at it) only on a priority queue.
    pub max_priority: Option<u8>,
    /// `x-dead-letter-exchange` (and `x-dead-letter-routing-key`): where archived records go.
    pub dead_letter: Option<DeadLetter>,
    /// Deleted when its last consumer goes (after it had one), as AMQP's auto-delete.
    pub auto_delete: bool,
    /// `x-expires`: deleted after this long with no consumer, get or redeclare.
    pub expires_ms: Option<u64>,
    /// `x-max-length`: most ready records; `x-overflow` says what happens beyond it.
    pub max_length: Option<u64>,
    pub overflow: Overflow,
}

/// What a full queue (`x-max-length`) does, as `x-overflow` names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overflow {
    /// The oldest ready records are dropped (dead-lettered as `maxlen`).
    #[default]
    DropHead,
    /// New publishes are refused (the publisher gets a nack).
    RejectPublish,
}

/// Tells the registry a queue should go (auto-delete or `x-expires`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct QueueUnused {
    pub name: String,
}

/// Marks the queue used now (a redeclare), for `x-expires`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TouchQueue;

impl Handler<TouchQueue> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: TouchQueue, _: &mut Context<Self>) {
        self.last_used = std::time::Instant::now();
    }
}

/// Where a queue's rejected, expired and over-limit records are republished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub exchange: String,
    /// Replaces the record's routing key when set.
    pub routing_key: Option<String>,
}

/// Why a record was archived, as RabbitMQ names it in `x-death`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathReason {
    Rejected,
    Expired,
    DeliveryLimit,
    /// Dropped from the head of a full queue.
    MaxLength,
}

impl DeathReason {
    pub fn name(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::DeliveryLimit => "delivery_limit",
            DeathReason::MaxLength => "maxlen",
        }
    }

    fn metric(self) -> DeadLetterReason {
        match self {
            DeathReason::Rejected => DeadLetterReason::Rejected,
            DeathReason::Expired => DeadLetterReason::Expired,
            DeathReason::DeliveryLimit => DeadLetterReason::DeliveryLimit,
            DeathReason::MaxLength => DeadLetterReason::MaxLen,
        }
    }
}

struct Consumer {
    /// Unacknowledged deliveries allowed at once (0: no limit).
    prefetch: u32,
    /// Higher-priority consumers are served first (`x-priority`).
    priority: i32,
    /// Deliveries are settled on sending (AMQP no-ack).
    auto_ack: bool,
    sink: DeliverySink,
}

/// The actor of one queue.
pub struct QueueActor {
    name: String,
    topic: String,
    catalog: Catalog,
    journal: Addr<QueueStateJournal>,
    state: DeliveryState,
    records: HashMap<u64, Arc<QueueRecord>>,
    /// Expiry times (ms) of the records in `records` that have one (per-message TTL or
    /// `x-message-ttl`), parsed once when read.
    expiries: HashMap<u64, i64>,
    consumers: HashMap<ConsumerId, Consumer>,
    /// Consumers in the order they are offered records.
    turn: VecDeque<ConsumerId>,
    settings: QueueSettings,
    routes: Routes,
    /// The consumer that holds the queue exclusively, if one does.
    exclusive_consumer: Option<ConsumerId>,
    /// Publishes admitted (x-overflow=reject-publish) and not yet read from the log.
    admitted: u64,
    /// Where to report that the queue should be deleted (auto-delete, `x-expires`).
    unused: Option<Recipient<QueueUnused>>,
    last_used: std::time::Instant,
    reading: bool,
    waiting: bool,
    /// The high watermark of the last read.
    log_end: u64,
    /// The log has been read at least once (until then `log_end` is unknown).
    read_once: bool,
}

impl QueueActor {
    pub fn new(
        name: String,
        topic: String,
        catalog: Catalog,
        journal: Addr<QueueStateJournal>,
        routes: Routes,
        settings: QueueSettings,
    ) -> QueueActor {
        QueueActor {
            name,
            topic,
            catalog,
            journal,
            state: DeliveryState::default(),
            records: HashMap::new(),
            expiries: HashMap::new(),
            consumers: HashMap::new(),
            turn: VecDeque::new(),
            settings,
            routes,
            exclusive_consumer: None,
            admitted: 0,
            unused: None,
            last_used: std::time::Instant::now(),
            reading: false,
            waiting: false,
            log_end: 0,
            read_once: false,
        }
    }

    fn partition(&self) -> Option<Addr<PartitionActor>> {
        self.catalog
            .snapshot()
            .partition(&self.topic, 0)
            .and_then(|p| p.local.clone())
    }

    fn journal(&self, change: Change) {
        self.journal.do_send(RecordQueueChange {
            queue: self.name.clone(),
            change,
        });
    }

    /// Reads more of the log when the read-ahead has room, or waits for new records.
    fn fill(&mut self, ctx: &mut Context<Self>) {
        if self.reading || self.state.available_count() >= READ_AHEAD {
            return;
        }
        let Some(addr) = self.partition() else {
            return;
        };
        let from = self.state.read_to();
        if from < self.log_end || !self.read_once {
            self.reading = true;
            let read = addr.send(ReadRecords {
                offset: from,
                max_bytes: READ_BYTES,
            });
            ctx.spawn(read.into_actor(self).map(move |res, act, ctx| {
                act.reading = false;
                match res {
                    Ok(Ok(r)) => {
                        if !act.take_read(from, r.records, r.high_watermark, r.log_start_offset) {
                            // Retry later rather than spin on a batch that does not decode.
                            act.reading = true;
                            ctx.run_later(std::time::Duration::from_secs(1), |act, ctx| {
                                act.reading = false;
                                act.fill(ctx);
                            });
                            return;
                        }
                    }
                    Ok(Err(BrokerError::OffsetOutOfRange { start, end, .. })) => {
                        // Retention removed records the queue had not finished: skip them.
                        act.log_end = end;
                        act.read_once = true;
                        if from < start {
                            warn!(queue = %act.name, from, start, "records removed before delivery");
                            act.state.add_read(&[], start);
                            for change in Change::finished_range(from, start) {
                                act.journal(change);
                            }
                        }
                    }
                    Ok(Err(e)) => warn!(queue = %act.name, error = %e, "queue read failed"),
                    Err(_) => warn!(queue = %act.name, "queue's partition is gone"),
                }
                act.dispatch(ctx);
            }));
        } else if !self.waiting {
            self.waiting = true;
            let wait = addr.send(AwaitRecords { offset: from });
            ctx.spawn(wait.into_actor(self).map(move |res, act, ctx| {
                act.waiting = false;
                if res.is_ok() {
                    // Something was appended: the next fill reads it.
                    act.log_end = act.log_end.max(from + 1);
                    act.dispatch(ctx);
                }
            }));
        }
    }

    /// Takes what a read returned; false when it does not decode.
    fn take_read(
        &mut self,
        from: u64,
        bytes: bytes::Bytes,
        high_watermark: u64,
        log_start: u64,
    ) -> bool {
        self.log_end = high_watermark;
        self.read_once = true;
        let from = from.max(log_start);
        // Past every batch read, records or not (control batches), so reading moves on.
        let through = record::span_end(&bytes).unwrap_or(from).max(from);
        let stored = match record::decode(bytes) {
            Ok(s) => s,
            Err(e) => {
                warn!(queue = %self.name, offset = from, error = %e, "undecodable batch");
                return false;
            }
        };
        let now = crate::offsets_journal::now_ms();
        let mut ranked = Vec::with_capacity(stored.len());
        let mut expired = Vec::new();
        for s in stored.into_iter().filter(|s| s.offset >= from) {
            if let Some(at) = s.record.expires_at_ms() {
                self.expiries.insert(s.offset, at);
                if at <= now {
                    expired.push(s.offset);
                }
            }
            let priority = self
                .settings
                .max_priority
                .map_or(0, |max| s.record.priority().min(max));

            ranked.push((s.offset, priority));
            self.records.insert(s.offset, Arc::new(s.record));
        }
        self.admitted = self.admitted.saturating_sub(ranked.len() as u64);
        self.state.add_read(&ranked, through);
        if !expired.is_empty() {
            self.finish_archived(&expired, Some(DeathReason::Expired));
        }
        self.drop_head();
        true
    }

    /// `x-max-length` with drop-head: the oldest ready records beyond the limit go.
    fn drop_head(&mut self) {
        let Some(max) = self.settings.max_length else {
            return;
        };
        let ready = self.counts().ready;
        if self.settings.overflow == Overflow::DropHead && ready > max {
            let excess = self.state.oldest_available((ready - max) as usize);
            self.finish_archived(&excess, Some(DeathReason::MaxLength));
        }
    }

    /// Reports queue deletion to `registry` when auto-delete or `x-expires` call for it.
    pub fn report_unused_to(mut self, registry: Recipient<QueueUnused>) -> QueueActor {
        self.unused = Some(registry);
        self
    }

    fn report_unused(&mut self) {
        if let Some(r) = self.unused.take() {
            r.do_send(QueueUnused {
                name: self.name.clone(),
            });
        }
    }

    /// Archives ready records whose time has passed; reports the queue when `x-expires` ran
    /// out.
    fn expire_due(&mut self, ctx: &mut Context<Self>) {
        if let Some(ms) = self.settings.expires_ms {
            let idle = self.consumers.is_empty()
                && self.last_used.elapsed() >= std::time::Duration::from_millis(ms);
            if idle {
                self.report_unused();
            }
        }
        if self.expiries.is_empty() {
            return;
        }
        let now = crate::offsets_journal::now_ms();
        let due: Vec<u64> = self
            .state
            .available_offsets()
            .filter(|o| self.expired(*o, now))
            .collect();
        if !due.is_empty() {
            self.finish_archived(&due, Some(DeathReason::Expired));
            self.fill(ctx);
        }
    }

    /// Whether the record at `offset` has expired by `now` (ms).
    fn expired(&self, offset: u64, now: i64) -> bool {
        self.expiries.get(&offset).is_some_and(|at| *at <= now)
    }

    /// Archives records whoever holds them; with a reason, they are dead-lettered.
    fn finish_archived(&mut self, offsets: &[u64], reason: Option<DeathReason>) {
        let change = self.state.archive(offsets);
        self.retire(change, reason);
    }

    /// Drops finished records from memory, dead-letters them when archived for a reason and the
    /// queue has a dead-letter exchange, and journals the change. Dead-lettering is at most
    /// once, as RabbitMQ's classic queues do it: the copies are queued on their partitions
    /// before the change is journaled.
    fn retire(&mut self, change: Change, reason: Option<DeathReason>) {
        if let Change::Finished(done) = &change {
            let dead_letter = reason.zip(self.settings.dead_letter.clone());
            if let Some(reason) = reason {
                live::dead_lettered(reason.metric(), done.len() as u64, dead_letter.is_some());
            }
            for o in done {
                self.expiries.remove(o);
                let Some(record) = self.records.remove(o) else {
                    continue;
                };
                if let Some((reason, dlx)) = &dead_letter {
                    self.republish(&record, *reason, dlx);
                }
            }
        }
        self.journal(change);
    }

    fn republish(&self, record: &QueueRecord, reason: DeathReason, dlx: &DeadLetter) {
        let now = crate::offsets_journal::now_ms();
        let dead = record::dead_letter(record, &self.name, reason.name(), dlx, now);
        let key = dead
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let targets = match self
            .routes
            .snapshot()
            .route(&dlx.exchange, &key, &dead.text_headers())
        {
            Ok(t) => t,
            Err(e) => return warn!(queue = %self.name, error = ?e, "dead-letter exchange unusable"),
        };
        let catalog = self.catalog.snapshot();
        for t in targets {
            let Some(addr) = catalog.partition(&t.topic, 0).and_then(|p| p.local.clone()) else {
                continue;
            };
            match record::encode(std::slice::from_ref(&dead)) {
                Ok(batch) => {
                    drop(queue_append(&addr, vec![batch]));
                }
                Err(e) => warn!(queue = %self.name, error = %e, "dead letter not encoded"),
            }
        }
    }

    /// Hands available records to consumers with credit, one each in turn.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        let mut delivered = Vec::new();
        let mut settled = Vec::new();
        let mut over_limit = Vec::new();
        let mut expired = Vec::new();
        let now = crate::offsets_journal::now_ms();
        // Each consumer's priority and credit, looked up once: a dispatch hands out many
        // records, and each one takes a unit of its consumer's credit.
        let mut slots: Vec<(ConsumerId, i32, usize)> = self
            .turn
            .iter()
            .map(|id| (*id, self.consumers[id].priority, self.credit(*id)))
            .collect();
        let mut next = 0;
        while self.state.available_count() > 0 {
            // Consumers take turns within the highest priority that has credit (AMQP
            // consumer priorities, `x-priority`); lower ones get records only when those
            // cannot take more.
            let Some(top) = slots.iter().filter(|s| s.2 > 0).map(|s| s.1).max() else {
                break;
            };
            let n = slots.len();
            let Some(i) = (0..n)
                .map(|k| (next + k) % n)
                .find(|&i| slots[i].2 > 0 && slots[i].1 == top)
            else {
                break;
            };
            next = (i + 1) % n;
            let id = slots[i].0;
            let (got, over) = self.state.acquire(id, 1, self.settings.delivery_limit);
            over_limit.extend(over);
            for a in got {
                if self.expired(a.offset, now) {
                    expired.push(a.offset);
                    continue;
                }
                let record = self.records[&a.offset].clone();
                let auto_ack = self.consumers[&id].auto_ack;
                let sent = self.consumers[&id]
                    .sink
                    .try_send(ConsumerEvent::Deliver(Delivery {
                        consumer: id,
                        offset: a.offset,
                        redelivered: a.redelivered,
                        record,
                    }));
                match sent {
                    Ok(()) => slots[i].2 -= 1,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // Its connection is behind: back in line, and its turn is over.
                        self.state.release(id, &[a.offset]);
                        slots[i].2 = 0;
                        continue;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        // Its connection is gone: so is the consumer, and what it held.
                        self.state.release(id, &[a.offset]);
                        self.drop_consumer(id, true);
                        slots[i].2 = 0;
                        continue;
                    }
                }
                delivered.push(a);
                if auto_ack {
                    settled.push((id, a.offset));
                }
            }
        }
        // The next dispatch starts with the consumer after the last one served.
        if let Some(pos) = slots
            .get(next)
            .and_then(|s| self.turn.iter().position(|id| *id == s.0))
        {
            self.turn.rotate_left(pos);
        }
        if !delivered.is_empty() {
            let redelivered = delivered.iter().filter(|a| a.redelivered).count() as u64;
            let auto = settled.len() as u64;
            let manual = delivered.len() as u64 - auto;
            // Redeliveries are counted once, with the manual-ack deliveries they belong to.
            live::delivered(DeliveryKind::ConsumeManualAck, manual, redelivered);
            live::delivered(DeliveryKind::ConsumeAutoAck, auto, 0);
            self.journal(DeliveryState::delivered_change(&delivered));
        }
        for (id, offset) in settled {
            self.settle(id, &[offset], Outcome::Ack);
        }
        if !over_limit.is_empty() {
            debug!(queue = %self.name, count = over_limit.len(), "archived at the delivery limit");
            self.finish_archived(&over_limit, Some(DeathReason::DeliveryLimit));
        }
        if !expired.is_empty() {
            self.finish_archived(&expired, Some(DeathReason::Expired));
        }
        self.fill(ctx);
    }

    /// Deliveries a consumer can take now: its prefetch room, bounded by its connection's.
    fn credit(&self, id: ConsumerId) -> usize {
        let c = &self.consumers[&id];
        if c.auto_ack {
            c.sink.capacity().min(AUTO_ACK_WINDOW)
        } else if c.prefetch == 0 {
            c.sink.capacity()
        } else {
            (c.prefetch as usize)
                .saturating_sub(self.state.held_by(id))
                .min(c.sink.capacity())
        }
    }

    fn drop_consumer(&mut self, consumer: ConsumerId, requeue: bool) {
        self.last_used = std::time::Instant::now();
        if self.consumers.remove(&consumer).is_some()
            && self.consumers.is_empty()
            && self.settings.auto_delete
        {
            self.report_unused();
        }
        if self.exclusive_consumer == Some(consumer) {
            self.exclusive_consumer = None;
        }
        self.turn.retain(|c| *c != consumer);
        if requeue {
            self.state.release_all(consumer);
        }
    }

    fn settle(&mut self, consumer: ConsumerId, offsets: &[u64], outcome: Outcome) {
        match outcome {
            Outcome::Ack => {
                let change = self.state.finish(consumer, offsets);
                self.retire(change, None);
            }
            Outcome::Reject => {
                let change = self.state.finish(consumer, offsets);
                self.retire(change, Some(DeathReason::Rejected));
            }
            Outcome::Requeue => self.state.release(consumer, offsets),
        }
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Expired records leave (and are dead-lettered) even when nobody consumes.
        ctx.run_interval(EXPIRY_SCAN, |act, ctx| act.expire_due(ctx));
        // Nothing else is handled until the durable state is back.
        let load = self.journal.send(LoadQueueState {
            queue: self.name.clone(),
        });
        ctx.wait(load.into_actor(self).map(|res, act, ctx| {
            if let Ok(durable) = res {
                act.state = DeliveryState::recover(durable);
            }
            act.fill(ctx);
        }));
    }
}

/// How a consumer settles deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Done: the record is finished.
    Ack,
    /// Put back at its place for another delivery (AMQP requeue).
    Requeue,
    /// Refused without requeue: finished (archived).
    Reject,
}

/// Starts delivering to a consumer. An exclusive consumer is refused when the queue has any
/// consumer, and while it consumes nobody else is let in (AMQP's exclusive consume).
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct AddConsumer {
    pub consumer: ConsumerId,
    pub prefetch: u32,
    pub auto_ack: bool,
    pub exclusive: bool,
    /// `x-priority` of the consume (0 by default).
    pub priority: i32,
    pub sink: DeliverySink,
}

impl Handler<AddConsumer> for QueueActor {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: AddConsumer, ctx: &mut Context<Self>) -> Self::Result {
        if self.exclusive_consumer.is_some() || (msg.exclusive && !self.consumers.is_empty()) {
            return Err(BrokerError::AccessRefused(format!(
                "queue '{}' in vhost '/' in exclusive use",
                self.name
            )));
        }
        if msg.exclusive {
            self.exclusive_consumer = Some(msg.consumer);
        }
        self.consumers.insert(
            msg.consumer,
            Consumer {
                prefetch: msg.prefetch,
                priority: msg.priority,
                auto_ack: msg.auto_ack,
                sink: msg.sink,
            },
        );
        self.turn.push_back(msg.consumer);
        self.dispatch(ctx);
        Ok(())
    }
}

/// Stops delivering to a consumer. `requeue`: what it holds goes back to the queue (a
/// cancelled AMQP consumer's unacknowledged deliveries stay with its channel, so the channel
/// releases them when it closes).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveConsumer {
    pub consumer: ConsumerId,
    pub requeue: bool,
}

impl Handler<RemoveConsumer> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: RemoveConsumer, ctx: &mut Context<Self>) {
        self.drop_consumer(msg.consumer, msg.requeue);
        self.dispatch(ctx);
    }
}

/// Settles deliveries a consumer holds.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SettleDeliveries {
    pub consumer: ConsumerId,
    pub offsets: Vec<u64>,
    pub outcome: Outcome,
}

impl Handler<SettleDeliveries> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: SettleDeliveries, ctx: &mut Context<Self>) {
        if msg.outcome == Outcome::Ack {
            live::acknowledged(msg.offsets.len() as u64);
        }
        self.settle(msg.consumer, &msg.offsets, msg.outcome);
        self.dispatch(ctx);
    }
}

/// Releases everything a consumer holds (its channel closed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseAll {
    pub consumer: ConsumerId,
}

impl Handler<ReleaseAll> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: ReleaseAll, ctx: &mut Context<Self>) {
        self.state.release_all(msg.consumer);
        self.dispatch(ctx);
    }
}

/// Takes one record for `consumer` without a subscription (AMQP basic.get), if one is ready.
/// Everything appended before the request counts.
#[derive(Message)]
#[rtype(result = "Option<Delivery>")]
pub struct TakeOne {
    pub consumer: ConsumerId,
    pub auto_ack: bool,
}

impl QueueActor {
    fn take_one(&mut self, msg: &TakeOne) -> Option<Delivery> {
        let now = crate::offsets_journal::now_ms();
        let taken = loop {
            let (got, over) = self
                .state
                .acquire(msg.consumer, 1, self.settings.delivery_limit);
            if !over.is_empty() {
                self.finish_archived(&over, Some(DeathReason::DeliveryLimit));
                continue;
            }
            let a = got.into_iter().next()?;
            if self.expired(a.offset, now) {
                self.finish_archived(&[a.offset], Some(DeathReason::Expired));
                continue;
            }
            let record = self.records[&a.offset].clone();
            self.journal(DeliveryState::delivered_change(&[a]));
            let kind = if msg.auto_ack {
                DeliveryKind::GetAutoAck
            } else {
                DeliveryKind::GetManualAck
            };
            live::delivered(kind, 1, a.redelivered as u64);
            break Delivery {
                consumer: msg.consumer,
                offset: a.offset,
                redelivered: a.redelivered,
                record,
            };
        };
        if msg.auto_ack {
            self.settle(msg.consumer, &[taken.offset], Outcome::Ack);
        }
        Some(taken)
    }

    /// Reads the log up to its current end, then runs `then`.
    fn catch_up<R: 'static>(
        &mut self,
        then: impl FnOnce(&mut Self, &mut Context<Self>) -> R + 'static,
    ) -> ResponseActFuture<Self, R> {
        let Some(addr) = self.partition() else {
            return Box::pin(fut::ready(()).map(move |_, act, ctx| then(act, ctx)));
        };
        let from = self.state.read_to();
        let read = addr.send(ReadRecords {
            offset: from,
            max_bytes: READ_BYTES,
        });
        Box::pin(read.into_actor(self).map(move |res, act, ctx| {
            if let Ok(Ok(r)) = res {
                act.take_read(from, r.records, r.high_watermark, r.log_start_offset);
            }
            let out = then(act, ctx);
            act.fill(ctx);
            out
        }))
    }
}

impl Handler<TakeOne> for QueueActor {
    type Result = ResponseActFuture<Self, Option<Delivery>>;

    fn handle(&mut self, msg: TakeOne, _: &mut Context<Self>) -> Self::Result {
        self.last_used = std::time::Instant::now();
        // Read what was appended first, so the best record (priority, then age) is chosen
        // among everything published before the request.
        self.catch_up(move |act, _| act.take_one(&msg))
    }
}

/// Leases up to `max` ready records to `consumer` for `lease` (an SQS-style receive): unless
/// settled by then, they go back to the queue when the lease ends, counted as delivered.
#[derive(Message)]
#[rtype(result = "Vec<Delivery>")]
pub struct LeaseRecords {
    pub consumer: ConsumerId,
    pub max: usize,
    pub lease: std::time::Duration,
}

impl Handler<LeaseRecords> for QueueActor {
    type Result = ResponseActFuture<Self, Vec<Delivery>>;

    fn handle(&mut self, msg: LeaseRecords, _: &mut Context<Self>) -> Self::Result {
        self.last_used = std::time::Instant::now();
        let (consumer, max, lease) = (msg.consumer, msg.max, msg.lease);
        self.catch_up(move |act, ctx| {
            let take = TakeOne {
                consumer,
                auto_ack: false,
            };
            let mut out = Vec::new();
            while out.len() < max {
                let Some(d) = act.take_one(&take) else {
                    break;
                };
                out.push(d);
            }
            if !out.is_empty() {
                let offsets: Vec<u64> = out.iter().map(|d| d.offset).collect();
                ctx.run_later(lease, move |act, ctx| {
                    // Only what the consumer still holds goes back.
                    act.state.release(consumer, &offsets);
                    act.dispatch(ctx);
                });
            }
            out
        })
    }
}

/// Counts, as queue.declare-ok and the metrics report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueCounts {
    /// Ready to deliver (read ahead or still in the log).
    pub ready: u64,
    /// Delivered and not yet settled.
    pub unacked: u64,
    pub consumers: u32,
}

/// The queue's counts, including everything appended before the request.
#[derive(Message)]
#[rtype(result = "QueueCounts")]
pub struct CountMessages;

impl Handler<CountMessages> for QueueActor {
    type Result = ResponseActFuture<Self, QueueCounts>;

    fn handle(&mut self, _: CountMessages, _: &mut Context<Self>) -> Self::Result {
        // The answer also means every settlement handled before it is in the journal (the
        // barrier follows the changes this actor sent), so a client that saw it can rely on
        // its acknowledgements surviving a crash.
        let written = self.journal.send(Barrier);
        let log = self.partition().map(|addr| addr.send(DescribeLog));
        Box::pin(
            async move {
                let _ = written.await;
                match log {
                    Some(log) => log.await.ok(),
                    None => None,
                }
            }
            .into_actor(self)
            .map(|status, act, _| {
                if let Some(status) = status {
                    act.log_end = act.log_end.max(status.high_watermark);
                }
                act.counts()
            }),
        )
    }
}

impl QueueActor {
    fn counts(&self) -> QueueCounts {
        let unread = self.log_end.saturating_sub(self.state.read_to());
        QueueCounts {
            ready: self.state.available_count() as u64 + unread,
            unacked: self.state.acquired_count() as u64,
            consumers: self.consumers.len() as u32,
        }
    }
}

/// Asks whether a publish may enter (x-overflow=reject-publish on a full queue refuses it).
/// An admitted publish counts as ready until it is read from the log.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct AdmitPublish;

impl Handler<AdmitPublish> for QueueActor {
    type Result = ResponseActFuture<Self, bool>;

    fn handle(&mut self, _: AdmitPublish, ctx: &mut Context<Self>) -> Self::Result {
        let handle = <Self as Handler<CountMessages>>::handle(self, CountMessages, ctx);
        Box::pin(handle.map(|counts, act, _| {
            let full = act
                .settings
                .max_length
                .is_some_and(|max| counts.ready + act.admitted >= max);
            if !full {
                act.admitted += 1;
            }
            !full
        }))
    }
}

/// Stops the queue (it was deleted): its consumers are told they are cancelled.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopQueue;

impl Handler<StopQueue> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: StopQueue, ctx: &mut Context<Self>) {
        for (id, c) in self.consumers.drain() {
            let sink = c.sink;
            actix::spawn(async move {
                let _ = sink.send(ConsumerEvent::Cancelled(id)).await;
            });
        }
        self.turn.clear();
        ctx.stop();
    }
}

/// Archives every ready record (AMQP queue.purge); answers how many.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct PurgeReady;

impl Handler<PurgeReady> for QueueActor {
    type Result = MessageResult<PurgeReady>;

    fn handle(&mut self, _: PurgeReady, _: &mut Context<Self>) -> Self::Result {
        let ready: Vec<u64> = self.state.available_offsets().collect();
        let unread = self.log_end.saturating_sub(self.state.read_to());
        // Purged records are not dead-lettered (as in RabbitMQ).
        self.finish_archived(&ready, None);
        if unread > 0 {
            let from = self.state.read_to();
            self.state.add_read(&[], self.log_end);
            for change in Change::finished_range(from, self.log_end) {
                self.journal(change);
            }
        }
        MessageResult(ready.len() as u64 + unread)
    }
}
