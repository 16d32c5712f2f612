//! Consumers that live through a restart of their queue's actor.
//!
//! A queue actor that ends while the broker runs is restarted from the queue's journal by the
//! queue registry. Its consumers' connections stay open: each consumer is told
//! ([`ConsumerEvent::QueueLost`]), the connection finds the queue's new actor by name (backing
//! off while the registry restarts it), claims back every delivery it has not settled
//! ([`ClaimDeliveries`]), sends again the settlements the ended actor never handled, and
//! attaches its consumers again with the parameters of their consume. The client sees nothing
//! but a pause: its delivery tags stay valid and its acknowledgements count. A delivery the
//! new actor cannot give back (the grace ran out, or the queue was deleted) is delivered
//! again later, flagged redelivered, as after a channel loss.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix::Addr;
use futures_util::stream::FuturesUnordered;
use spool_actors::queues::delivery::ConsumerId;
use spool_actors::queues::queue::{
    ClaimDeliveries, ConsumerEvent, Outcome, QueueActor, RecordId, SettleDeliveries,
};
use spool_actors::queues::registry::FindQueue;
use spool_actors::supervision::Backoff;
use tracing::{debug, info};

use crate::connection::{Connection, Event, QueueHandle, QueueRef};

/// A settlement the queue's actor ended before handling.
pub struct LostSettle {
    queue: QueueHandle,
    consumer: ConsumerId,
    records: Vec<RecordId>,
    outcome: Outcome,
}

/// Settlements on their way.
pub type Settling = FuturesUnordered<Handled>;

/// One settlement on its way: answers `None` once handled, or the settlement when its actor
/// ended first.
pub struct Handled {
    receipt: tokio::sync::oneshot::Receiver<()>,
    settle: Option<LostSettle>,
}

impl Future for Handled {
    type Output = Option<LostSettle>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match Pin::new(&mut this.receipt).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(None),
            Poll::Ready(Err(_)) => Poll::Ready(this.settle.take()),
        }
    }
}

/// Queues whose actor ended, by name, with the settlements to send again once the new actor is
/// found.
pub type Reattaching = HashMap<String, Vec<LostSettle>>;

/// Sends a settlement and watches that its actor handles it.
pub fn send_settle(
    settling: &mut Settling,
    queue: QueueHandle,
    consumer: ConsumerId,
    records: Vec<RecordId>,
    outcome: Outcome,
) {
    let (receipt, handled) = tokio::sync::oneshot::channel();
    queue.do_send(SettleDeliveries {
        consumer,
        records: records.clone(),
        outcome,
        receipt: Some(receipt),
    });
    settling.push(Handled {
        receipt: handled,
        settle: Some(LostSettle {
            queue,
            consumer,
            records,
            outcome,
        }),
    });
}

impl Connection {
    /// One of this connection's consumers was told its queue's actor ended.
    pub fn consumer_lost(&mut self, consumer: ConsumerId) {
        let Some(c) = self.consumers.get_mut(&consumer) else {
            return;
        };
        // Told after the re-attach (it began with a lost settlement): every delivery of the
        // ended actor came before this notice, and there is nothing more to do.
        if std::mem::take(&mut c.draining) {
            return;
        }
        // The actor ended even if its address still looks connected: its mailbox may outlive
        // it for a moment.
        c.noticed = true;
        let old = c.queue.clone();
        self.queue_lost(old);
    }

    /// A settlement never reached its actor: it goes to the queue's next actor, with a claim
    /// on its records first, so that it counts there.
    pub fn settle_lost(&mut self, lost: LostSettle) {
        let name = lost.queue.name.clone();
        if let Some(r) = self.reattaching.get_mut(&name) {
            r.push(lost);
            return;
        }
        let current = self.current_handle(&name);
        match current {
            Some(new) if new.connected() && new.addr != lost.queue.addr => {
                new.do_send(ClaimDeliveries {
                    consumer: lost.consumer,
                    records: lost.records.clone(),
                });
                send_settle(
                    &mut self.settling,
                    new,
                    lost.consumer,
                    lost.records,
                    lost.outcome,
                );
            }
            _ => {
                let old = lost.queue.clone();
                self.queue_lost(old);
                if let Some(r) = self.reattaching.get_mut(&name) {
                    r.push(lost);
                }
            }
        }
    }

    /// Attaching to a queue's new actor failed because that actor ended too: the next one is
    /// looked for (unless a later re-attach already moved on).
    pub fn reattach_failed(&mut self, queue: QueueHandle) {
        let current = self.consumers.values().any(|c| c.queue.addr == queue.addr);
        if current {
            self.queue_lost(queue);
        }
    }

    /// The handle this connection uses now for queue `name`, if it holds one.
    fn current_handle(&self, name: &str) -> Option<QueueHandle> {
        let consumers = self.consumers.values().map(|c| &c.queue);
        let unacked = self.channels.values().flat_map(|ch| ch.handles());
        consumers
            .chain(unacked)
            .find(|h| h.name == name && h.connected())
            .cloned()
    }

    /// Starts finding the next actor of the queue whose actor `old` was.
    fn queue_lost(&mut self, old: QueueHandle) {
        let name = old.name.clone();
        if self.reattaching.contains_key(&name) {
            return;
        }
        info!(connection = self.id, queue = %name, "queue's actor ended; re-attaching its consumers");
        let (queues, events, connection) =
            (self.broker.queues.clone(), self.events.clone(), self.id);
        let old_addr = old.addr.clone();
        self.reattaching.insert(name.clone(), Vec::new());
        tokio::spawn(async move {
            // A registry lookup is cheap and the new actor holds the deliveries back only for
            // a grace: look often (10 ms doubling to 100 ms, jittered), never in a tight loop.
            let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
            while !events.is_closed() {
                let found = queues
                    .send(FindQueue {
                        name: name.clone(),
                        connection,
                    })
                    .await;
                let addr = match found {
                    Ok(Ok(addr)) if addr != old_addr && addr.connected() => Some(addr),
                    Ok(Ok(_)) => {
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                    // Deleted meanwhile: its consumers are cancelled.
                    Ok(Err(_)) => None,
                    // The registry stopped: the broker is shutting down.
                    Err(_) => return,
                };
                let _ = events.send(Event::QueueBack { name, addr });
                return;
            }
        });
    }

    /// The queue `name` has a new actor (or was deleted): moves every delivery, consumer and
    /// settlement of the old one over.
    pub fn queue_back(&mut self, name: String, addr: Option<Addr<QueueActor>>) {
        let Some(lost) = self.reattaching.remove(&name) else {
            return;
        };
        let Some(addr) = addr else {
            let gone: Vec<ConsumerId> = self
                .consumers
                .iter()
                .filter(|(_, c)| c.queue.name == name)
                .map(|(id, _)| *id)
                .collect();
            for consumer in gone {
                self.consumer_event(ConsumerEvent::Cancelled(consumer));
            }
            return;
        };
        let new = QueueRef::handle(&name, addr);
        // Claims first: what this connection holds is its own again before anything else.
        let mut claims: HashMap<ConsumerId, Vec<RecordId>> = HashMap::new();
        for ch in self.channels.values_mut() {
            for (consumer, id) in ch.move_handles(&new) {
                claims.entry(consumer).or_default().push(id);
            }
        }
        for s in &lost {
            claims
                .entry(s.consumer)
                .or_default()
                .extend(s.records.iter().copied());
        }
        let claimed: usize = claims.values().map(Vec::len).sum();
        for (consumer, records) in claims {
            new.do_send(ClaimDeliveries { consumer, records });
        }
        for s in lost {
            send_settle(
                &mut self.settling,
                new.clone(),
                s.consumer,
                s.records,
                s.outcome,
            );
        }
        let mut attached = 0;
        for (id, c) in self.consumers.iter_mut() {
            // Every earlier actor of the queue is dead, whichever this re-attach began with.
            if c.queue.name != name || c.queue.addr == new.addr {
                continue;
            }
            c.queue = new.clone();
            c.draining = !std::mem::take(&mut c.noticed);
            if c.cancelled {
                continue;
            }
            attached += 1;
            let attach = new.send(c.params.attach(*id, self.deliveries.clone()));
            let (events, consumer, queue) = (self.events.clone(), *id, new.clone());
            tokio::spawn(async move {
                let ev = match attach.await {
                    Ok(Ok(())) => return,
                    Ok(Err(_)) => Event::ReattachRefused { consumer },
                    // The new actor ended too, before it took the consumer.
                    Err(_) => Event::ReattachFailed { queue },
                };
                let _ = events.send(ev);
            });
        }
        debug!(connection = self.id, queue = %name, claimed, attached, "re-attached to the queue's new actor");
    }
}
