//! The queue actor: one per queue, the only owner of its delivery state. It reads the queue's
//! log ahead of its consumers, hands records out by prefetch credit in turn, and journals every
//! change so that a restart neither loses nor re-delivers an acknowledged record.
//!
//! Publishing does not pass through here: publishers append to the queue's partitions (each
//! the only writer of its log), and the queue learns of new records by waiting on them. A queue
//! of many partitions (`x-partitions`) keeps one delivery state per partition and serves them
//! all from this one actor, so prefetch, consumer priorities and `x-max-length` hold across the
//! whole queue; deliveries take the best record of any partition (priority, then publish time).

use spool_metrics::live::{self, DeadLetterReason, DeliveryKind};
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::delivery::{Acquired, Change, ConsumerId, DeliveryState, Durable};
use super::queue_partition::QueuePartition;
use super::record::{self, QueueRecord};
use super::routing::Routes;
use super::state_journal::{
    Barrier, LoadQueueState, QueueStateJournal, RecordQueueChange, RecordQueueSnapshot,
};
use crate::catalog::Catalog;
use crate::partition::{queue_append, AwaitRecords, DescribeLog, PartitionActor, ReadRecords};
use crate::supervision::{Backoff, Current};
use crate::BrokerError;

/// Records read ahead of the consumers, at most.
const READ_AHEAD: usize = 2048;
/// Bytes asked of the log per read.
const READ_BYTES: usize = 1 << 20;
/// How often ready records are checked for expiry.
const EXPIRY_SCAN: std::time::Duration = std::time::Duration::from_millis(100);
/// Deliveries buffered for a consumer without acknowledgements before it is skipped.
pub const AUTO_ACK_WINDOW: usize = 512;

/// Where a queue's record is: a partition of the queue's topic and an offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    pub partition: i32,
    pub offset: u64,
}

/// One record handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub consumer: ConsumerId,
    pub id: RecordId,
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
    /// The queue's actor ended unexpectedly (it is being restarted from the queue's journal):
    /// the consumer should attach to the new actor and claim back what it holds
    /// ([`ClaimDeliveries`]) before [`REATTACH_GRACE`] ends. Sent after every delivery the
    /// ended actor made to that consumer.
    QueueLost(ConsumerId),
}

/// How long a queue actor restarted while the broker runs keeps the records its predecessor
/// had handed out for their holders to claim back, before they are delivered again.
pub const REATTACH_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// As `RejectPublish`, and the refused message is dead-lettered (reason `rejected`).
    RejectPublishDlx,
}

impl Overflow {
    /// Whether a full queue refuses publishes (so a publish must ask it first).
    pub fn rejects_publishes(self) -> bool {
        self != Overflow::DropHead
    }
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
    journal: Current<QueueStateJournal>,
    /// The journal generation this actor's state was last written to in full (see
    /// [`QueueActor::journal`]).
    journal_generation: u64,
    /// One per partition of the topic, indexed by partition.
    parts: Vec<QueuePartition>,
    /// Durable state loaded for partitions the catalog does not show yet.
    recovered: std::collections::BTreeMap<i32, Durable>,
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
    /// Dead letters sent, to spread them over a target's partitions.
    dead_letters: u64,
    /// Restarted while the broker runs: records that were out stay out for their holders to
    /// claim back until [`REATTACH_GRACE`] has passed.
    holding_back: bool,
    /// Tells the registry when this actor ends (declared last: dropped after the rest).
    end_notice: Option<crate::supervision::EndNotice>,
}

impl QueueActor {
    pub fn new(
        name: String,
        topic: String,
        catalog: Catalog,
        journal: Current<QueueStateJournal>,
        routes: Routes,
        settings: QueueSettings,
    ) -> QueueActor {
        QueueActor {
            name,
            topic,
            catalog,
            journal_generation: journal.generation(),
            journal,
            parts: Vec::new(),
            recovered: Default::default(),
            consumers: HashMap::new(),
            turn: VecDeque::new(),
            settings,
            routes,
            exclusive_consumer: None,
            admitted: 0,
            unused: None,
            last_used: std::time::Instant::now(),
            dead_letters: 0,
            holding_back: false,
            end_notice: None,
        }
    }

    /// Reports this actor's end to its supervisor (the queue registry), however it ends.
    pub fn with_end_notice(mut self, notice: crate::supervision::EndNotice) -> QueueActor {
        self.end_notice = Some(notice);
        self
    }

    /// A restart of a queue whose predecessor ended while the broker ran: what it had handed
    /// out waits [`REATTACH_GRACE`] for the holders to claim it back.
    pub fn restarted(mut self) -> QueueActor {
        self.holding_back = true;
        self
    }

    /// The current actor of partition `p`, when one is running: resolved from the catalog each
    /// time, so a restarted partition is found and a dead address is never kept.
    fn partition(&self, p: usize) -> Option<Addr<PartitionActor>> {
        self.catalog
            .snapshot()
            .partition(&self.topic, p as i32)
            .and_then(|p| p.local.clone())
            .filter(Addr::connected)
    }

    /// Partition `p` could not be reached (its actor is restarting, or the read failed): tries
    /// again after a bounded, jittered backoff, never at once. Says so once per outage.
    fn retry_later(&mut self, p: usize, ctx: &mut Context<Self>, why: &str) {
        let part = &mut self.parts[p];
        if part.retry_pending {
            return;
        }
        if part.backoff.attempts() == 0 {
            warn!(queue = %self.name, partition = p, reason = why, "queue's partition unavailable; retrying with backoff");
        }
        part.retry_pending = true;
        let delay = part.backoff.next_delay();
        ctx.run_later(delay, move |act, ctx| {
            if let Some(part) = act.parts.get_mut(p) {
                part.retry_pending = false;
            }
            act.fill(ctx);
        });
    }

    /// Partition `p` answered: the next outage starts its backoff afresh.
    fn reached(&mut self, p: usize) {
        let part = &mut self.parts[p];
        if part.backoff.attempts() > 0 {
            info!(queue = %self.name, partition = p, "queue's partition is back");
            part.backoff.reset();
        }
    }

    /// Follows the topic's partition count: partitions added to it (a Kafka client's
    /// CreatePartitions) become part of the queue.
    fn track_partitions(&mut self) {
        let n = self
            .catalog
            .snapshot()
            .topic(&self.topic)
            .map_or(0, |t| t.partitions.len());
        while self.parts.len() < n {
            let p = self.parts.len() as i32;
            let durable = self.recovered.remove(&p).unwrap_or_default();
            self.parts
                .push(QueuePartition::recover(durable, self.holding_back));
        }
    }

    fn journal(&mut self, p: usize, change: Change) {
        self.rejournal();
        self.journal.do_send(RecordQueueChange {
            queue: self.name.clone(),
            partition: p as i32,
            change,
        });
    }

    /// When the journal's actor was restarted since this actor last wrote to it, changes sent
    /// to the ended one may be lost: writes this queue's whole state to the new one first.
    fn rejournal(&mut self) {
        let generation = self.journal.generation();
        if generation == self.journal_generation {
            return;
        }
        self.journal_generation = generation;
        let parts = self.parts.iter().enumerate();
        let states = parts.map(|(p, part)| (p as i32, part.state.durable()));
        let unseen = self.recovered.iter().map(|(p, d)| (*p, d.clone()));
        for (partition, state) in states.chain(unseen).collect::<Vec<_>>() {
            self.journal.do_send(RecordQueueSnapshot {
                queue: self.name.clone(),
                partition,
                state,
            });
        }
        info!(queue = %self.name, "queue state written to the restarted journal");
    }

    /// Loads the queue's durable state before anything else is handled, trying again (after
    /// `delay`) while the journal's actor is restarting: a queue never starts from an empty
    /// state because its journal was briefly away.
    fn load_state(&mut self, ctx: &mut Context<Self>, mut backoff: Backoff) {
        let delay = (backoff.attempts() > 0).then(|| backoff.next_delay());
        let (journal, queue) = (self.journal.clone(), self.name.clone());
        let load = async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            journal.send(LoadQueueState { queue }).await
        };
        ctx.wait(load.into_actor(self).map(move |res, act, ctx| match res {
            Ok(state) => {
                act.recovered = state;
                act.journal_generation = act.journal.generation();
                act.fill(ctx);
            }
            Err(_) => {
                if backoff.attempts() == 0 {
                    warn!(queue = %act.name, "queue-state journal unavailable; loading again with backoff");
                    backoff.next_delay();
                }
                act.load_state(ctx, backoff);
            }
        }));
    }

    /// Reads more of each partition's log when its read-ahead has room, or waits for new
    /// records.
    fn fill(&mut self, ctx: &mut Context<Self>) {
        self.track_partitions();
        for p in 0..self.parts.len() {
            self.fill_partition(p, ctx);
        }
    }

    fn fill_partition(&mut self, p: usize, ctx: &mut Context<Self>) {
        let part = &self.parts[p];
        if part.reading || part.retry_pending || part.state.available_count() >= READ_AHEAD {
            return;
        }
        let Some(addr) = self.partition(p) else {
            if self.catalog.snapshot().topic(&self.topic).is_some() {
                self.retry_later(p, ctx, "no running actor");
            }
            return;
        };
        let from = part.state.read_to();
        if from < part.log_end || !part.read_once {
            self.parts[p].reading = true;
            let read = addr.send(ReadRecords {
                offset: from,
                max_bytes: READ_BYTES,
            });
            ctx.spawn(read.into_actor(self).map(move |res, act, ctx| {
                act.parts[p].reading = false;
                match res {
                    Ok(Ok(r)) => {
                        act.reached(p);
                        if !act.take_read(p, from, r.records, r.high_watermark, r.log_start_offset)
                        {
                            // Retry later rather than spin on a batch that does not decode.
                            act.parts[p].reading = true;
                            ctx.run_later(std::time::Duration::from_secs(1), move |act, ctx| {
                                act.parts[p].reading = false;
                                act.fill(ctx);
                            });
                            return;
                        }
                    }
                    Ok(Err(BrokerError::OffsetOutOfRange { start, end, .. })) => {
                        act.reached(p);
                        // Retention removed records the queue had not finished: skip them.
                        let part = &mut act.parts[p];
                        part.log_end = end;
                        part.read_once = true;
                        if from < start {
                            warn!(queue = %act.name, partition = p, from, start, "records removed before delivery");
                            part.state.add_read(&[], start);
                            if let Some(change) = Change::finished_range(from, start) {
                                act.journal(p, change);
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        warn!(queue = %act.name, error = %e, "queue read failed");
                        return act.retry_later(p, ctx, "read failed");
                    }
                    Err(_) => return act.retry_later(p, ctx, "the actor stopped"),
                }
                act.dispatch(ctx);
            }));
        } else if !part.waiting {
            self.parts[p].waiting = true;
            let wait = addr.send(AwaitRecords { offset: from });
            ctx.spawn(wait.into_actor(self).map(move |res, act, ctx| {
                act.parts[p].waiting = false;
                match res {
                    // Something was appended, or the actor ended while it was parked (its
                    // waiters are dropped): either way the next fill reads, or finds the
                    // partition gone and backs off.
                    Ok(()) => {
                        if act.partition(p).is_some() {
                            let part = &mut act.parts[p];
                            part.log_end = part.log_end.max(from + 1);
                        }
                        act.dispatch(ctx);
                    }
                    Err(_) => act.retry_later(p, ctx, "the actor stopped"),
                }
            }));
        }
    }

    /// Takes what a read of partition `p` returned; false when it does not decode.
    fn take_read(
        &mut self,
        p: usize,
        from: u64,
        bytes: bytes::Bytes,
        high_watermark: u64,
        log_start: u64,
    ) -> bool {
        let now = crate::offsets_journal::now_ms();
        let max_priority = self.settings.max_priority;
        let Some(taken) =
            self.parts[p].take_read(from, bytes, high_watermark, log_start, max_priority, now)
        else {
            return false;
        };
        self.admitted = self.admitted.saturating_sub(taken.records);
        if !taken.expired.is_empty() {
            self.finish_archived(p, &taken.expired, Some(DeathReason::Expired));
        }
        self.drop_head();
        true
    }

    /// `x-max-length` with drop-head: the oldest ready records beyond the limit go (oldest
    /// by publish time, across partitions).
    fn drop_head(&mut self) {
        let Some(max) = self.settings.max_length else {
            return;
        };
        let ready = self.counts().ready;
        if self.settings.overflow != Overflow::DropHead || ready <= max {
            return;
        }
        let excess = (ready - max) as usize;
        let mut oldest: Vec<(i64, usize, u64)> = Vec::new();
        for (p, part) in self.parts.iter().enumerate() {
            for o in part.state.oldest_available(excess) {
                let at = part.records.get(&o).map_or(i64::MIN, |r| r.timestamp_ms);
                oldest.push((at, p, o));
            }
        }
        oldest.sort_unstable();
        oldest.truncate(excess);
        let head: Vec<(usize, u64)> = oldest.into_iter().map(|(_, p, o)| (p, o)).collect();
        self.archive_each(&head, DeathReason::MaxLength);
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
        let now = crate::offsets_journal::now_ms();
        let mut any = false;
        for p in 0..self.parts.len() {
            let part = &self.parts[p];
            if part.expiries.is_empty() {
                continue;
            }
            let due: Vec<u64> = part
                .state
                .available_offsets()
                .filter(|o| part.expired(*o, now))
                .collect();
            if !due.is_empty() {
                self.finish_archived(p, &due, Some(DeathReason::Expired));
                any = true;
            }
        }
        if any {
            self.fill(ctx);
        }
    }

    /// Archives records of partition `p` whoever holds them; with a reason, they are
    /// dead-lettered.
    fn finish_archived(&mut self, p: usize, offsets: &[u64], reason: Option<DeathReason>) {
        let change = self.parts[p].state.archive(offsets);
        self.retire(p, change, reason);
    }

    /// Drops finished records from memory, dead-letters them when archived for a reason and the
    /// queue has a dead-letter exchange, and journals the change. Dead-lettering is at most
    /// once, as RabbitMQ's classic queues do it: the copies are queued on their partitions
    /// before the change is journaled.
    fn retire(&mut self, p: usize, change: Change, reason: Option<DeathReason>) {
        if let Change::Finished(done) = &change {
            let dead_letter = reason.zip(self.settings.dead_letter.clone());
            if let Some(reason) = reason {
                live::dead_lettered(reason.metric(), done.len() as u64, dead_letter.is_some());
            }
            for o in done {
                let part = &mut self.parts[p];
                part.expiries.remove(o);
                let Some(record) = part.records.remove(o) else {
                    continue;
                };
                if let Some((reason, dlx)) = &dead_letter {
                    self.republish(&record, *reason, dlx);
                }
            }
        }
        self.journal(p, change);
    }

    fn republish(&mut self, record: &QueueRecord, reason: DeathReason, dlx: &DeadLetter) {
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
        self.dead_letters += 1;
        for t in targets {
            let Some(addr) = catalog
                .spread(&t.topic, self.dead_letters)
                .and_then(|(_, p)| p.local.clone())
            else {
                continue;
            };
            // The target's own x-message-ttl runs from now, as for any publish to it.
            let copy;
            let record = match t.message_ttl {
                Some(ttl) => {
                    copy = dead.with_expiry(now + ttl.max(0));
                    &copy
                }
                None => &dead,
            };
            match record::encode(std::slice::from_ref(record)) {
                Ok(batch) => {
                    drop(queue_append(&addr, vec![batch]));
                }
                Err(e) => warn!(queue = %self.name, error = %e, "dead letter not encoded"),
            }
        }
    }

    /// The partition whose next record goes first: the highest priority, then the oldest
    /// publish time, then the lowest partition.
    fn next_partition(&self) -> Option<usize> {
        if let [only] = self.parts.as_slice() {
            return (only.state.available_count() > 0).then_some(0);
        }
        self.parts
            .iter()
            .enumerate()
            .filter_map(|(p, part)| part.head().map(|(prio, at, _)| (prio, at, p)))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)))
            .map(|(_, _, p)| p)
    }

    /// Hands available records to consumers with credit, one each in turn.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        let mut delivered: Vec<Vec<Acquired>> = vec![Vec::new(); self.parts.len()];
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
        while let Some(p) = self.next_partition() {
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
            let part = &mut self.parts[p];
            let (got, over) = part.state.acquire(id, 1, self.settings.delivery_limit);
            over_limit.extend(over.into_iter().map(|o| (p, o)));
            for a in got {
                let part = &mut self.parts[p];
                if part.expired(a.offset, now) {
                    expired.push((p, a.offset));
                    continue;
                }
                let record = part.records[&a.offset].clone();
                let consumer = &self.consumers[&id];
                let sent = consumer.sink.try_send(ConsumerEvent::Deliver(Delivery {
                    consumer: id,
                    id: RecordId {
                        partition: p as i32,
                        offset: a.offset,
                    },
                    redelivered: a.redelivered,
                    record,
                }));
                let auto_ack = consumer.auto_ack;
                match sent {
                    Ok(()) => slots[i].2 -= 1,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // Its connection is behind: back in line, and its turn is over.
                        self.parts[p].state.release(id, &[a.offset]);
                        slots[i].2 = 0;
                        continue;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        // Its connection is gone: so is the consumer, and what it held.
                        self.parts[p].state.release(id, &[a.offset]);
                        self.drop_consumer(id, true);
                        slots[i].2 = 0;
                        continue;
                    }
                }
                delivered[p].push(a);
                if auto_ack {
                    settled.push((
                        id,
                        RecordId {
                            partition: p as i32,
                            offset: a.offset,
                        },
                    ));
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
        let count: usize = delivered.iter().map(Vec::len).sum();
        if count > 0 {
            let redelivered = delivered.iter().flatten().filter(|a| a.redelivered).count() as u64;
            let auto = settled.len() as u64;
            let manual = count as u64 - auto;
            // Redeliveries are counted once, with the manual-ack deliveries they belong to.
            live::delivered(DeliveryKind::ConsumeManualAck, manual, redelivered);
            live::delivered(DeliveryKind::ConsumeAutoAck, auto, 0);
            for (p, acquired) in delivered.iter().enumerate() {
                if !acquired.is_empty() {
                    self.journal(p, DeliveryState::delivered_change(acquired));
                }
            }
        }
        // Auto-ack deliveries finish as one settlement per consumer (one journal change each),
        // not one per record.
        settled.sort_unstable_by_key(|(id, _)| *id);
        for group in settled.chunk_by(|a, b| a.0 == b.0) {
            let records: Vec<RecordId> = group.iter().map(|(_, r)| *r).collect();
            self.settle(group[0].0, &records, Outcome::Ack);
        }
        if !over_limit.is_empty() {
            debug!(queue = %self.name, count = over_limit.len(), "archived at the delivery limit");
            self.archive_each(&over_limit, DeathReason::DeliveryLimit);
        }
        if !expired.is_empty() {
            self.archive_each(&expired, DeathReason::Expired);
        }
        self.fill(ctx);
    }

    /// Archives (partition, offset) pairs for `reason`.
    fn archive_each(&mut self, records: &[(usize, u64)], reason: DeathReason) {
        for (p, offsets) in self.by_partition(records.iter().copied()) {
            self.finish_archived(p, &offsets, Some(reason));
        }
    }

    /// Offsets grouped by partition, in one pass. Partitions the queue does not have are
    /// dropped: a receipt that names one settles nothing.
    fn by_partition(
        &self,
        records: impl IntoIterator<Item = (usize, u64)>,
    ) -> Vec<(usize, Vec<u64>)> {
        let mut grouped: Vec<Vec<u64>> = vec![Vec::new(); self.parts.len()];
        for (p, offset) in records {
            if let Some(g) = grouped.get_mut(p) {
                g.push(offset);
            }
        }
        grouped
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .collect()
    }

    /// Deliveries a consumer holds, in every partition.
    fn held_by(&self, id: ConsumerId) -> usize {
        self.parts.iter().map(|p| p.state.held_by(id)).sum()
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
                .saturating_sub(self.held_by(id))
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
            for part in &mut self.parts {
                part.state.release_all(consumer);
            }
        }
    }

    /// Settles records a consumer holds, in whichever partitions they are.
    fn settle(&mut self, consumer: ConsumerId, records: &[RecordId], outcome: Outcome) {
        let located = records
            .iter()
            .map(|r| (usize::try_from(r.partition).unwrap_or(usize::MAX), r.offset));
        for (p, offsets) in self.by_partition(located) {
            self.settle_partition(consumer, p, &offsets, outcome);
        }
    }

    fn settle_partition(
        &mut self,
        consumer: ConsumerId,
        p: usize,
        offsets: &[u64],
        outcome: Outcome,
    ) {
        let Some(part) = self.parts.get_mut(p) else {
            return;
        };
        match outcome {
            Outcome::Ack => {
                let change = part.state.finish(consumer, offsets);
                self.retire(p, change, None);
            }
            Outcome::Reject => {
                let change = part.state.finish(consumer, offsets);
                self.retire(p, change, Some(DeathReason::Rejected));
            }
            Outcome::Requeue => part.state.release(consumer, offsets),
        }
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Expired records leave (and are dead-lettered) even when nobody consumes.
        ctx.run_interval(EXPIRY_SCAN, |act, ctx| act.expire_due(ctx));
        // Nothing else is handled until the durable state is back.
        self.load_state(ctx, Backoff::default());
        if self.holding_back {
            ctx.run_later(REATTACH_GRACE, |act, ctx| {
                act.holding_back = false;
                for part in &mut act.parts {
                    part.state.end_hold_back();
                }
                act.dispatch(ctx);
            });
        }
    }
}

impl Drop for QueueActor {
    /// An actor that ends with consumers attached ended unexpectedly (a deletion or a shutdown
    /// cancels them first): each is told to attach to the restarted actor. The notice follows
    /// the actor's deliveries on the consumer's channel; when that channel is full it is sent
    /// from a task of its own.
    fn drop(&mut self) {
        for (id, c) in self.consumers.drain() {
            if let Err(tokio::sync::mpsc::error::TrySendError::Full(ev)) =
                c.sink.try_send(ConsumerEvent::QueueLost(id))
            {
                let sink = c.sink;
                actix::spawn(async move {
                    let _ = sink.send(ev).await;
                });
            }
        }
    }
}

#[cfg(debug_assertions)]
impl Handler<crate::faults::InjectPanic> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: crate::faults::InjectPanic, _: &mut Context<Self>) {
        msg.strike(format_args!("the actor of queue {}", self.name));
    }
}

/// The queue-state journal's actor was restarted: the queue writes its whole state to the new
/// one (unless a change of its own has done so already).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RejournalState;

impl Handler<RejournalState> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: RejournalState, _: &mut Context<Self>) {
        self.rejournal();
    }
}

/// A consumer claims back records it got from the queue's previous actor and has not settled
/// (see [`ConsumerEvent::QueueLost`]): while the restart's grace lasts, they are its own again
/// and its settlements of them count. Answers the records claimed.
#[derive(Message)]
#[rtype(result = "Vec<RecordId>")]
pub struct ClaimDeliveries {
    pub consumer: ConsumerId,
    pub records: Vec<RecordId>,
}

impl Handler<ClaimDeliveries> for QueueActor {
    type Result = MessageResult<ClaimDeliveries>;

    fn handle(&mut self, msg: ClaimDeliveries, _: &mut Context<Self>) -> Self::Result {
        self.track_partitions();
        let located = msg
            .records
            .iter()
            .map(|r| (usize::try_from(r.partition).unwrap_or(usize::MAX), r.offset));
        let mut claimed = Vec::new();
        for (p, offsets) in self.by_partition(located) {
            let offsets = self.parts[p].state.claim(msg.consumer, &offsets);
            claimed.extend(offsets.into_iter().map(|offset| RecordId {
                partition: p as i32,
                offset,
            }));
        }
        MessageResult(claimed)
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
    pub records: Vec<RecordId>,
    pub outcome: Outcome,
    /// Answered once the settlement is handled; dropped unanswered when the actor ended
    /// first, which tells the sender to settle with the queue's next actor. Sent with
    /// `do_send`, so settlements keep their order with the sender's other messages.
    pub receipt: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Handler<SettleDeliveries> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: SettleDeliveries, ctx: &mut Context<Self>) {
        if msg.outcome == Outcome::Ack {
            live::acknowledged(msg.records.len() as u64);
        }
        self.settle(msg.consumer, &msg.records, msg.outcome);
        if let Some(receipt) = msg.receipt {
            let _ = receipt.send(());
        }
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
        for part in &mut self.parts {
            part.state.release_all(msg.consumer);
        }
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
            let p = self.next_partition()?;
            let part = &mut self.parts[p];
            let (got, over) = part
                .state
                .acquire(msg.consumer, 1, self.settings.delivery_limit);
            if !over.is_empty() {
                self.finish_archived(p, &over, Some(DeathReason::DeliveryLimit));
                continue;
            }
            let a = got.into_iter().next()?;
            if part.expired(a.offset, now) {
                self.finish_archived(p, &[a.offset], Some(DeathReason::Expired));
                continue;
            }
            let record = part.records[&a.offset].clone();
            self.journal(p, DeliveryState::delivered_change(&[a]));
            let kind = if msg.auto_ack {
                DeliveryKind::GetAutoAck
            } else {
                DeliveryKind::GetManualAck
            };
            live::delivered(kind, 1, a.redelivered as u64);
            break Delivery {
                consumer: msg.consumer,
                id: RecordId {
                    partition: p as i32,
                    offset: a.offset,
                },
                redelivered: a.redelivered,
                record,
            };
        };
        if msg.auto_ack {
            self.settle(msg.consumer, &[taken.id], Outcome::Ack);
        }
        Some(taken)
    }

    /// Reads every partition's log up to its current end, then runs `then`.
    fn catch_up<R: 'static>(
        &mut self,
        then: impl FnOnce(&mut Self, &mut Context<Self>) -> R + 'static,
    ) -> ResponseActFuture<Self, R> {
        self.track_partitions();
        let reads: Vec<_> = (0..self.parts.len())
            .filter_map(|p| {
                let addr = self.partition(p)?;
                let from = self.parts[p].state.read_to();
                let read = addr.send(ReadRecords {
                    offset: from,
                    max_bytes: READ_BYTES,
                });
                Some(async move { (p, from, read.await) })
            })
            .collect();
        Box::pin(futures_util::future::join_all(reads).into_actor(self).map(
            move |results, act, ctx| {
                for (p, from, res) in results {
                    // A read raced by another one: take only what is still new.
                    if act.parts[p].state.read_to() != from {
                        continue;
                    }
                    if let Ok(Ok(r)) = res {
                        act.take_read(p, from, r.records, r.high_watermark, r.log_start_offset);
                    }
                }
                let out = then(act, ctx);
                act.fill(ctx);
                out
            },
        ))
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
                let records: Vec<RecordId> = out.iter().map(|d| d.id).collect();
                ctx.run_later(lease, move |act, ctx| {
                    // Only what the consumer still holds goes back.
                    act.settle(consumer, &records, Outcome::Requeue);
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
        Box::pin(self.learn_log_ends().map(|(), act, _| act.counts()))
    }
}

impl QueueActor {
    /// Waits until the journal holds every change sent before and each partition's log end
    /// is known as its actor has it, so that what follows covers every record appended (and
    /// confirmed) before the caller asked. A count answered after it also means every
    /// settlement handled before is in the journal, so a client that saw it can rely on its
    /// acknowledgements surviving a crash.
    fn learn_log_ends(&mut self) -> impl ActorFuture<Self, Output = ()> {
        self.track_partitions();
        let written = self.journal.send(Barrier);
        let logs: Vec<_> = (0..self.parts.len())
            .filter_map(|p| {
                let log = self.partition(p)?.send(DescribeLog);
                Some(async move { (p, log.await.ok()) })
            })
            .collect();
        async move {
            let written = written.await.is_ok();
            (written, futures_util::future::join_all(logs).await)
        }
        .into_actor(self)
        .then(|(written, statuses), act, _| {
            for (p, status) in statuses {
                if let Some(status) = status {
                    let part = &mut act.parts[p];
                    part.log_end = part.log_end.max(status.high_watermark);
                }
            }
            act.journal_caught_up(written)
        })
    }

    /// After a barrier on the journal (`written`: it answered): when the journal's actor ended
    /// with this queue's changes in its mailbox, waits for its successor, writes the queue's
    /// state there and waits for that, so that an answer given after this covers them too.
    fn journal_caught_up(&mut self, written: bool) -> Pin<Box<dyn ActorFuture<Self, Output = ()>>> {
        if written {
            return Box::pin(actix::fut::ready(()));
        }
        let (journal, seen) = (self.journal.clone(), self.journal_generation);
        let restarted = async move {
            let mut backoff = Backoff::default();
            while journal.generation() == seen || !journal.get().connected() {
                if backoff.attempts() >= 20 {
                    return;
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        };
        Box::pin(restarted.into_actor(self).then(|(), act, _| {
            act.rejournal();
            let barrier = act.journal.send(Barrier);
            async move {
                let _ = barrier.await;
            }
            .into_actor(act)
        }))
    }
}

impl QueueActor {
    fn counts(&self) -> QueueCounts {
        let mut counts = QueueCounts {
            consumers: self.consumers.len() as u32,
            ..QueueCounts::default()
        };
        for part in &self.parts {
            counts.ready += part.state.available_count() as u64 + part.unread();
            counts.unacked += part.state.acquired_count() as u64;
        }
        counts
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

/// A publish the queue refused (see [`AdmitPublish`]): with `x-overflow=reject-publish-dlx`
/// it goes to the dead-letter exchange as `rejected`, as RabbitMQ does; otherwise it is
/// dropped. The record is built by the publisher only once it was refused.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RefusePublish {
    pub record: QueueRecord,
}

impl Handler<RefusePublish> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: RefusePublish, _: &mut Context<Self>) {
        if self.settings.overflow != Overflow::RejectPublishDlx {
            return;
        }
        let dlx = self.settings.dead_letter.clone();
        live::dead_lettered(DeathReason::Rejected.metric(), 1, dlx.is_some());
        if let Some(dlx) = dlx {
            self.republish(&msg.record, DeathReason::Rejected, &dlx);
        }
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
    type Result = ResponseActFuture<Self, u64>;

    fn handle(&mut self, _: PurgeReady, _: &mut Context<Self>) -> Self::Result {
        // Everything appended before the purge is purged, read ahead or not.
        Box::pin(self.learn_log_ends().map(|(), act, _| act.purge_ready()))
    }
}

impl QueueActor {
    fn purge_ready(&mut self) -> u64 {
        let mut purged = 0;
        for p in 0..self.parts.len() {
            let part = &mut self.parts[p];
            let ready: Vec<u64> = part.state.available_offsets().collect();
            let (from, to) = (part.state.read_to(), part.log_end);
            purged += ready.len() as u64 + part.unread();
            // Purged records are not dead-lettered (as in RabbitMQ).
            self.finish_archived(p, &ready, None);
            if from < to {
                self.parts[p].state.add_read(&[], to);
                if let Some(change) = Change::finished_range(from, to) {
                    self.journal(p, change);
                }
            }
        }
        purged
    }
}
