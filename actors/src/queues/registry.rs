//! The queue registry: owns queue, exchange and binding definitions (durable ones in redb),
//! starts one [`QueueActor`] per queue, and publishes the [`RoutingTable`] front ends route
//! with. A queue's records live in a topic of the same name (or, when the name is not a legal
//! topic name, an escaped one), so Kafka clients can read and feed it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use spool_store::MetaStore;
use tracing::{info, warn};

use super::queue::{
    CountMessages, DeadLetter, Overflow, QueueActor, QueueCounts, QueueSettings, QueueUnused,
    RejournalState, StopQueue, TouchQueue,
};
use super::routing::{
    Arguments, Binding, ExchangeDef, ExchangeKind, QueueTarget, Routes, RoutingTable,
};
use super::state_journal::{ForgetQueueState, QueueStateJournal, RetainQueueStates};
use crate::catalog::Catalog;
use crate::journal::JournalPlace;
use crate::registry::{validate_topic_name, CreateTopic, DeleteTopic, TopicRegistry};
use crate::supervision::{ActorEnded, Current, EndReports, RestartPolicy, JOURNAL_INDEX};
use crate::BrokerError;

const QUEUE: &str = "queue";
const EXCHANGE: &str = "exchange";
const BINDING: &str = "binding";

/// Identifies a client connection, for exclusive queues.
pub type ConnectionId = u64;

/// A queue's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueDef {
    pub name: String,
    /// The topic holding its records.
    pub topic: String,
    /// The queue created its topic (and deletes it with itself).
    pub owns_topic: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub arguments: Arguments,
    /// The connection that owns an exclusive queue (exclusive queues are never durable).
    #[serde(skip)]
    pub exclusive_owner: Option<ConnectionId>,
}

impl QueueDef {
    /// `x-delivery-limit`, when set.
    pub fn delivery_limit(&self) -> Option<u32> {
        self.arguments
            .get("x-delivery-limit")
            .and_then(serde_json::Value::as_u64)
            .map(|n| n.min(u32::MAX as u64) as u32)
    }

    /// The queue actor's settings from the arguments.
    pub fn settings(&self) -> QueueSettings {
        let text = |k: &str| {
            self.arguments
                .get(k)
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        };
        QueueSettings {
            delivery_limit: self.delivery_limit(),
            max_priority: self.max_priority(),
            dead_letter: text("x-dead-letter-exchange").map(|exchange| DeadLetter {
                exchange,
                routing_key: text("x-dead-letter-routing-key"),
            }),
            auto_delete: self.auto_delete,
            expires_ms: self
                .arguments
                .get("x-expires")
                .and_then(serde_json::Value::as_u64),
            max_length: self
                .arguments
                .get("x-max-length")
                .and_then(serde_json::Value::as_u64),
            overflow: match text("x-overflow").as_deref() {
                Some("reject-publish") => Overflow::RejectPublish,
                Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => Overflow::DropHead,
            },
        }
    }

    /// `x-max-priority` (RabbitMQ caps it at 255), when set: the queue is a priority queue.
    pub fn max_priority(&self) -> Option<u8> {
        self.arguments
            .get("x-max-priority")
            .and_then(serde_json::Value::as_u64)
            .map(|n| n.min(255) as u8)
    }
}

/// Partitions a queue may ask for (`x-partitions`). One actor serves all of a queue's
/// partitions and reads each one ahead, so this bounds its work per delivery and its memory.
pub const MAX_QUEUE_PARTITIONS: u64 = 64;

/// Arguments that take a whole number, with the least and most each accepts.
const NUMERIC_ARGUMENTS: &[(&str, u64, u64)] = &[
    ("x-message-ttl", 0, u64::MAX),
    ("x-expires", 1, u64::MAX),
    ("x-max-length", 0, u64::MAX),
    ("x-max-priority", 0, u64::MAX),
    ("x-delivery-limit", 0, u64::MAX),
    ("x-partitions", 1, MAX_QUEUE_PARTITIONS),
];

/// The queue types RabbitMQ knows (`x-queue-type`); Spool serves each as its one kind of queue.
const QUEUE_TYPES: &[&str] = &["classic", "quorum", "stream"];

/// Refuses arguments with values RabbitMQ would refuse (a string for a number, a negative TTL,
/// an unknown queue type), with its wording; and `x-partitions` outside
/// 1..=[`MAX_QUEUE_PARTITIONS`].
pub fn check_arguments(queue: &str, arguments: &Arguments) -> Result<(), BrokerError> {
    let invalid = |arg: &str, problem: String| {
        BrokerError::PreconditionFailed(format!(
            "invalid arg '{arg}' for queue '{queue}' in vhost '/': {problem}"
        ))
    };
    match arguments.get("x-queue-type") {
        None => {}
        Some(serde_json::Value::String(t)) if QUEUE_TYPES.contains(&t.as_str()) => {}
        Some(serde_json::Value::String(t)) => {
            return Err(invalid(
                "x-queue-type",
                format!("\"unsupported queue type '{t}'\""),
            ))
        }
        Some(other) => {
            let kind = match other {
                serde_json::Value::Number(_) => "signedint",
                serde_json::Value::Bool(_) => "bool",
                _ => "table",
            };
            return Err(invalid(
                "x-queue-type",
                format!("{{unacceptable_type,{kind}}}"),
            ));
        }
    }
    for (arg, least, most) in NUMERIC_ARGUMENTS {
        let Some(value) = arguments.get(*arg) else {
            continue;
        };
        let problem = match value {
            serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(v), _) if v < *least => Some(format!("{{value_too_small,{v},{least}}}")),
                (Some(v), _) if v > *most => Some(format!("{{value_too_large,{v},{most}}}")),
                (Some(_), _) => None,
                (None, Some(v)) => Some(format!("{{value_negative,{v}}}")),
                (None, None) => Some("{unacceptable_type,float}".to_string()),
            },
            serde_json::Value::String(_) => Some("{unacceptable_type,longstr}".to_string()),
            serde_json::Value::Bool(_) => Some("{unacceptable_type,bool}".to_string()),
            _ => Some("{unacceptable_type,table}".to_string()),
        };
        if let Some(problem) = problem {
            return Err(invalid(arg, problem));
        }
    }
    Ok(())
}

struct QueueEntry {
    def: QueueDef,
    addr: Addr<QueueActor>,
    /// Which start of the queue's actor `addr` is (see [`EndReports`]).
    incarnation: u64,
}

/// The name the queue-state journal's actor reports its end under, with [`JOURNAL_INDEX`]
/// (queue actors report under their queue's name and index 0).
const JOURNAL_NAME: &str = "queue-state-journal";

/// The topic for a queue: its own name when that is a legal topic name, otherwise the name with
/// every other byte escaped as `_XX` (and `_` as `__`), prefixed `amqp.`.
pub fn topic_for_queue(name: &str) -> String {
    if validate_topic_name(name).is_ok() {
        return name.to_string();
    }
    let mut out = String::from("amqp.");
    for b in name.bytes() {
        match b {
            b'_' => out.push_str("__"),
            b if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' => out.push(b as char),
            b => out.push_str(&format!("_{b:02X}")),
        }
    }
    out
}

/// The exchanges every vhost has.
fn predeclared() -> Vec<ExchangeDef> {
    [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ]
    .into_iter()
    .map(|(name, kind)| ExchangeDef {
        name: name.into(),
        kind,
        durable: true,
        auto_delete: false,
        internal: false,
        arguments: Arguments::new(),
    })
    .collect()
}

/// Owns the definitions and the queue actors.
pub struct QueueRegistry {
    meta: Arc<MetaStore>,
    topics: Addr<TopicRegistry>,
    catalog: Catalog,
    /// The queue-state journal's actor, which this registry supervises.
    journal: Current<QueueStateJournal>,
    /// Where the journal is, to open it again when its actor ends.
    place: JournalPlace,
    routes: Routes,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    queues: BTreeMap<String, QueueEntry>,
    exchanges: BTreeMap<String, ExchangeDef>,
    bindings: BTreeSet<Binding>,
    /// Durable queues loaded by `recover`, started by `run`.
    recovered: Vec<QueueDef>,
    /// Where queue actors report their ends.
    ends: EndReports,
    /// How each queue's actor has been restarting.
    restarts: HashMap<String, RestartPolicy>,
    /// The shutdown has stopped the queues: none is restarted.
    stopping: bool,
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("definitions serialize")
}

impl QueueRegistry {
    /// Loads the durable definitions. Queue actors start when the registry does.
    pub fn recover(
        meta: Arc<MetaStore>,
        topics: Addr<TopicRegistry>,
        catalog: Catalog,
        place: JournalPlace,
        arbiters: Vec<ArbiterHandle>,
        routes: Routes,
    ) -> Result<QueueRegistry, BrokerError> {
        let mut ends = EndReports::default();
        let (notice, _) = ends.notice(JOURNAL_NAME, JOURNAL_INDEX);
        let journal = QueueStateJournal::open(&place)?.with_end_notice(notice);
        let mut reg = QueueRegistry {
            meta,
            topics,
            catalog,
            journal: Current::new(journal.start()),
            place,
            routes,
            arbiters,
            next_arbiter: 0,
            queues: BTreeMap::new(),
            exchanges: predeclared()
                .into_iter()
                .map(|e| (e.name.clone(), e))
                .collect(),
            bindings: BTreeSet::new(),
            recovered: Vec::new(),
            ends,
            restarts: HashMap::new(),
            stopping: false,
        };
        for (_, bytes) in reg.meta.definitions(EXCHANGE)? {
            match serde_json::from_slice::<ExchangeDef>(&bytes) {
                Ok(e) => {
                    reg.exchanges.insert(e.name.clone(), e);
                }
                Err(e) => warn!(error = %e, "unreadable exchange definition skipped"),
            }
        }
        let mut defs = Vec::new();
        for (_, bytes) in reg.meta.definitions(QUEUE)? {
            match serde_json::from_slice::<QueueDef>(&bytes) {
                Ok(q) => defs.push(q),
                Err(e) => warn!(error = %e, "unreadable queue definition skipped"),
            }
        }
        for (_, bytes) in reg.meta.definitions(BINDING)? {
            match serde_json::from_slice::<Binding>(&bytes) {
                Ok(b) => {
                    reg.bindings.insert(b);
                }
                Err(e) => warn!(error = %e, "unreadable binding skipped"),
            }
        }
        info!(
            queues = defs.len(),
            exchanges = reg.exchanges.len(),
            bindings = reg.bindings.len(),
            "queue definitions recovered"
        );
        reg.recovered = defs;
        Ok(reg)
    }

    /// Starts the registry and the recovered queues' actors (which report back to it).
    pub fn run(mut self) -> Addr<QueueRegistry> {
        QueueRegistry::create(move |ctx| {
            let me = ctx.address().recipient();
            for def in std::mem::take(&mut self.recovered) {
                let entry = self.start_queue(def, me.clone(), false);
                self.queues.insert(entry.def.name.clone(), entry);
            }
            self.publish();
            self
        })
    }

    /// Starts an actor for the queue `def` defines; `restarted` when it replaces one that ended
    /// while the broker ran (see [`QueueActor::restarted`]).
    fn start_queue(
        &mut self,
        def: QueueDef,
        me: Recipient<QueueUnused>,
        restarted: bool,
    ) -> QueueEntry {
        let (notice, incarnation) = self.ends.notice(&def.name, 0);
        let mut actor = QueueActor::new(
            def.name.clone(),
            def.topic.clone(),
            self.catalog.clone(),
            self.journal.clone(),
            self.routes.clone(),
            def.settings(),
        )
        .report_unused_to(me)
        .with_end_notice(notice);
        if restarted {
            actor = actor.restarted();
        }
        // Beside its partition: every publish and read of the queue goes through that actor.
        let beside = self
            .catalog
            .snapshot()
            .partition(&def.topic, 0)
            .and_then(|p| p.arbiter.clone());
        let arbiter = beside.unwrap_or_else(|| {
            self.next_arbiter += 1;
            self.arbiters[(self.next_arbiter - 1) % self.arbiters.len()].clone()
        });
        let addr = QueueActor::start_in_arbiter(&arbiter, move |_| actor);
        QueueEntry {
            def,
            addr,
            incarnation,
        }
    }

    /// The queue-state journal's actor, as it is at each use.
    pub fn journal(&self) -> Current<QueueStateJournal> {
        self.journal.clone()
    }

    /// The queue-state journal's actor ended: opens the journal again (what the ended actor
    /// wrote is there) and starts a new actor on it. Changes lost in the ended actor's mailbox
    /// are written again: every queue actor writes its whole state to the new journal before
    /// its next change (it sees the journal's generation move), and deletions are applied
    /// again from the registry's definitions.
    fn journal_ended(&mut self) {
        if self.stopping {
            return;
        }
        spool_metrics::live::actor_restarted("journal");
        let journal = match QueueStateJournal::open(&self.place) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "queue-state journal could not be opened again; queue changes are not recorded until a restart");
                return;
            }
        };
        let (notice, _) = self.ends.notice(JOURNAL_NAME, JOURNAL_INDEX);
        self.journal.set(journal.with_end_notice(notice).start());
        warn!("queue-state journal's actor ended; restarted it from the journal");
        self.journal.do_send(RetainQueueStates {
            queues: self.queues.keys().cloned().collect(),
        });
        for q in self.queues.values() {
            q.addr.do_send(RejournalState);
        }
    }

    /// A queue's actor ended. The current actor of a queue still defined is restarted from the
    /// queue's journal (at once, or after a growing delay when it keeps ending soon after it
    /// starts); an actor of a deleted queue, or one that ended in the shutdown, is not.
    fn queue_ended(&mut self, ended: ActorEnded, ctx: &mut Context<Self>) {
        let current = self
            .queues
            .get(&ended.name)
            .is_some_and(|q| q.incarnation == ended.incarnation);
        if !current || self.stopping {
            return;
        }
        let delay = self
            .restarts
            .entry(ended.name.clone())
            .or_default()
            .delay(std::time::Instant::now());
        warn!(queue = %ended.name, ?delay, "queue actor ended; restarting it from its journal");
        let name = ended.name;
        ctx.run_later(delay, move |act, ctx| {
            if act.stopping {
                return;
            }
            let Some(def) = act
                .queues
                .get(&name)
                .filter(|q| q.incarnation == ended.incarnation)
                .map(|q| q.def.clone())
            else {
                return;
            };
            spool_metrics::live::actor_restarted("queue");
            let entry = act.start_queue(def, ctx.address().recipient(), true);
            if let Some(r) = act.restarts.get_mut(&name) {
                r.started(std::time::Instant::now());
            }
            act.queues.insert(name, entry);
            act.publish();
        });
    }

    /// Publishes the routing table front ends read.
    fn publish(&self) {
        self.routes.publish(RoutingTable {
            exchanges: self.exchanges.clone(),
            bindings: self.bindings.clone(),
            queues: self
                .queues
                .values()
                .map(|q| {
                    (
                        q.def.name.clone(),
                        QueueTarget {
                            name: q.def.name.clone(),
                            topic: q.def.topic.clone(),
                            message_ttl: q
                                .def
                                .arguments
                                .get("x-message-ttl")
                                .and_then(serde_json::Value::as_i64),
                            admission: {
                                let s = q.def.settings();
                                (s.overflow.rejects_publishes() && s.max_length.is_some())
                                    .then(|| q.addr.clone())
                            },
                        },
                    )
                })
                .collect(),
        });
    }

    fn queue(&self, name: &str, conn: ConnectionId) -> Result<&QueueEntry, BrokerError> {
        let q = self.queues.get(name).ok_or_else(|| no_queue(name))?;
        if q.def.exclusive_owner.is_some_and(|owner| owner != conn) {
            return Err(locked(name));
        }
        Ok(q)
    }

    fn remove_queue(&mut self, name: &str) -> Option<QueueEntry> {
        let q = self.queues.remove(name)?;
        self.restarts.remove(name);
        self.bindings.retain(|b| b.queue != name);
        if q.def.durable {
            if let Err(e) = self.meta.delete_definition(QUEUE, name) {
                warn!(queue = name, error = %e, "could not delete the queue's definition");
            }
        }
        for b in self.meta.definitions(BINDING).unwrap_or_default() {
            if serde_json::from_slice::<Binding>(&b.1).is_ok_and(|x| x.queue == name) {
                let _ = self.meta.delete_definition(BINDING, &b.0);
            }
        }
        self.journal.do_send(ForgetQueueState {
            queue: name.to_string(),
        });
        if q.def.owns_topic {
            self.topics.do_send(DeleteTopic {
                name: q.def.topic.clone(),
            });
        }
        // Its consumers are told they are cancelled (AMQP consumer cancel notification).
        q.addr.do_send(StopQueue);
        self.publish();
        Some(q)
    }
}

impl Handler<crate::supervision::StopActor> for QueueRegistry {
    type Result = ResponseFuture<()>;

    /// The shutdown's step for queues: stops every queue actor (each has journaled every
    /// change it made by then), then fsyncs and stops the queue-state journal.
    fn handle(&mut self, _: crate::supervision::StopActor, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        let stops: Vec<_> = self
            .queues
            .values()
            .map(|q| q.addr.send(StopQueue))
            .collect();
        crate::supervision::stop_all_then_journal(stops, self.journal.get())
    }
}

fn no_queue(name: &str) -> BrokerError {
    BrokerError::NoSuchEntity {
        kind: "queue",
        name: format!("{name}' in vhost '/"),
    }
}

fn no_exchange(name: &str) -> BrokerError {
    BrokerError::NoSuchEntity {
        kind: "exchange",
        name: format!("{name}' in vhost '/"),
    }
}

fn locked(name: &str) -> BrokerError {
    BrokerError::ResourceLocked(format!(
        "cannot obtain exclusive access to locked queue '{name}' in vhost '/'. It could be \
         originally declared on another connection or the exclusive property value does not \
         match that of the original declaration."
    ))
}

fn inequivalent(
    what: &str,
    arg: &str,
    name: &str,
    received: String,
    current: String,
) -> BrokerError {
    BrokerError::PreconditionFailed(format!(
        "inequivalent arg '{arg}' for {what} '{name}' in vhost '/': received {received} but \
         current is {current}"
    ))
}

impl Actor for QueueRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.ends.attach(ctx);
    }
}

impl StreamHandler<ActorEnded> for QueueRegistry {
    fn handle(&mut self, ended: ActorEnded, ctx: &mut Context<Self>) {
        if ended.index == JOURNAL_INDEX {
            self.journal_ended();
        } else {
            self.queue_ended(ended, ctx);
        }
    }

    /// The registry keeps a sender, so the stream never ends while it runs; nothing to do.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

/// A declared (or found) queue.
#[derive(Debug, Clone)]
pub struct DeclaredQueue {
    pub name: String,
    pub counts: QueueCounts,
    pub addr: Addr<QueueActor>,
}

/// Declares a queue (AMQP queue.declare).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<DeclaredQueue, BrokerError>")]
pub struct DeclareQueue {
    /// Empty: the broker names it.
    pub name: String,
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: Arguments,
    pub connection: ConnectionId,
}

impl Handler<DeclareQueue> for QueueRegistry {
    type Result = AtomicResponse<Self, Result<DeclaredQueue, BrokerError>>;

    fn handle(&mut self, msg: DeclareQueue, _: &mut Context<Self>) -> Self::Result {
        let found = |q: &QueueEntry| {
            let (name, addr) = (q.def.name.clone(), q.addr.clone());
            addr.do_send(TouchQueue);
            async move {
                let counts = addr.send(CountMessages).await.unwrap_or_default();
                Ok(DeclaredQueue { name, counts, addr })
            }
        };
        if msg.passive {
            return match self.queue(&msg.name, msg.connection) {
                Ok(q) => {
                    let fut = found(q);
                    AtomicResponse::new(Box::pin(fut.into_actor(self)))
                }
                Err(e) => AtomicResponse::new(Box::pin(fut::ready(Err(e)))),
            };
        }
        let checked = (|| {
            check_arguments(&msg.name, &msg.arguments)?;
            if msg.name.starts_with("amq.") {
                return Err(BrokerError::AccessRefused(format!(
                    "queue name '{}' contains reserved prefix 'amq.*'",
                    msg.name
                )));
            }
            if let Some(q) = self.queues.get(&msg.name) {
                let exclusive = q.def.exclusive_owner.is_some();
                if q.def.exclusive_owner.is_some_and(|o| o != msg.connection) {
                    return Err(locked(&msg.name));
                }
                let flag = |arg: &str, got: bool, have: bool| {
                    (got != have).then(|| {
                        inequivalent(
                            "queue",
                            arg,
                            &msg.name,
                            format!("'{got}'"),
                            format!("'{have}'"),
                        )
                    })
                };
                if let Some(e) = flag("durable", msg.durable, q.def.durable)
                    .or_else(|| flag("exclusive", msg.exclusive, exclusive))
                    .or_else(|| flag("auto_delete", msg.auto_delete, q.def.auto_delete))
                {
                    return Err(e);
                }
                for key in msg.arguments.keys().chain(q.def.arguments.keys()) {
                    let (got, have) = (msg.arguments.get(key), q.def.arguments.get(key));
                    if got != have {
                        let show = |v: Option<&serde_json::Value>| {
                            v.map_or("none".to_string(), |v| format!("'{v}'"))
                        };
                        return Err(inequivalent("queue", key, &msg.name, show(got), show(have)));
                    }
                }
                return Ok(true);
            }
            Ok(false)
        })();
        match checked {
            Err(e) => AtomicResponse::new(Box::pin(fut::ready(Err(e)))),
            Ok(true) => {
                let q = &self.queues[&msg.name];
                AtomicResponse::new(Box::pin(found(q).into_actor(self)))
            }
            Ok(false) => {
                let name = if msg.name.is_empty() {
                    format!("amq.gen-{}", uuid::Uuid::new_v4().simple())
                } else {
                    msg.name.clone()
                };
                let topic = topic_for_queue(&name);
                let existing = self.catalog.snapshot().topic(&topic).cloned();
                let asked = msg
                    .arguments
                    .get("x-partitions")
                    .and_then(serde_json::Value::as_u64);
                let create = self.topics.send(CreateTopic {
                    name: topic.clone(),
                    partitions: Some(asked.unwrap_or(1) as i32),
                    replication_factor: None,
                    configs: BTreeMap::new(),
                    validate_only: false,
                });
                let fut = async move {
                    match existing {
                        // A queue over an existing topic reads all its partitions; one that
                        // asks for a number must find it.
                        Some(t) if asked.is_some_and(|n| n != t.partitions.len() as u64) => {
                            Err(BrokerError::PreconditionFailed(format!(
                                "topic '{topic}' has {} partitions but the queue asks for {}",
                                t.partitions.len(),
                                asked.unwrap_or_default()
                            )))
                        }
                        Some(_) => Ok((topic, false)),
                        None => match create.await {
                            Ok(Ok(_)) => Ok((topic, true)),
                            Ok(Err(e)) => Err(e),
                            Err(_) => Err(BrokerError::PreconditionFailed("the topic registry is gone".into())),
                        },
                    }
                }
                .into_actor(self)
                .then(move |res, act, ctx| {
                    let result = res.and_then(|(topic, owns_topic)| {
                        let def = QueueDef {
                            name: name.clone(),
                            topic,
                            owns_topic,
                            durable: msg.durable && !msg.exclusive,
                            auto_delete: msg.auto_delete,
                            arguments: msg.arguments,
                            exclusive_owner: msg.exclusive.then_some(msg.connection),
                        };
                        if def.durable {
                            act.meta.put_definition(QUEUE, &name, &json(&def))?;
                        }
                        info!(queue = %name, topic = %def.topic, durable = def.durable, "queue declared");
                        let entry = act.start_queue(def, ctx.address().recipient(), false);
                        let addr = entry.addr.clone();
                        act.queues.insert(name.clone(), entry);
                        act.publish();
                        Ok(DeclaredQueue {
                            name,
                            counts: QueueCounts::default(),
                            addr,
                        })
                    });
                    fut::ready(result)
                });
                AtomicResponse::new(Box::pin(fut))
            }
        }
    }
}

/// Finds a queue's actor (for consume, get, purge), checking exclusivity.
#[derive(Message)]
#[rtype(result = "Result<Addr<QueueActor>, BrokerError>")]
pub struct FindQueue {
    pub name: String,
    pub connection: ConnectionId,
}

impl Handler<FindQueue> for QueueRegistry {
    type Result = Result<Addr<QueueActor>, BrokerError>;

    fn handle(&mut self, msg: FindQueue, _: &mut Context<Self>) -> Self::Result {
        Ok(self.queue(&msg.name, msg.connection)?.addr.clone())
    }
}

/// Deletes a queue (AMQP queue.delete); answers how many ready messages it had.
#[derive(Message)]
#[rtype(result = "Result<u64, BrokerError>")]
pub struct DeleteQueue {
    pub name: String,
    pub if_unused: bool,
    pub if_empty: bool,
    pub connection: ConnectionId,
}

impl Handler<DeleteQueue> for QueueRegistry {
    type Result = AtomicResponse<Self, Result<u64, BrokerError>>;

    fn handle(&mut self, msg: DeleteQueue, _: &mut Context<Self>) -> Self::Result {
        let addr = match self.queue(&msg.name, msg.connection) {
            // Deleting a queue that does not exist succeeds (RabbitMQ 3.x).
            Err(BrokerError::NoSuchEntity { .. }) => {
                return AtomicResponse::new(Box::pin(fut::ready(Ok(0))))
            }
            Err(e) => return AtomicResponse::new(Box::pin(fut::ready(Err(e)))),
            Ok(q) => q.addr.clone(),
        };
        let fut = async move { addr.send(CountMessages).await.unwrap_or_default() }
            .into_actor(self)
            .map(move |counts, act, _| {
                if msg.if_unused && counts.consumers > 0 {
                    return Err(BrokerError::PreconditionFailed(format!(
                        "queue '{}' in vhost '/' in use",
                        msg.name
                    )));
                }
                if msg.if_empty && counts.ready > 0 {
                    return Err(BrokerError::PreconditionFailed(format!(
                        "queue '{}' in vhost '/' not empty",
                        msg.name
                    )));
                }
                act.remove_queue(&msg.name);
                info!(queue = %msg.name, "queue deleted");
                Ok(counts.ready)
            });
        AtomicResponse::new(Box::pin(fut))
    }
}

impl Handler<QueueUnused> for QueueRegistry {
    type Result = ();

    fn handle(&mut self, msg: QueueUnused, _: &mut Context<Self>) {
        if self.remove_queue(&msg.name).is_some() {
            info!(queue = %msg.name, "queue deleted (auto-delete or x-expires)");
        }
    }
}

/// Every queue's name and actor.
#[derive(Message)]
#[rtype(result = "Vec<(String, Addr<QueueActor>)>")]
pub struct ListQueues;

impl Handler<ListQueues> for QueueRegistry {
    type Result = MessageResult<ListQueues>;

    fn handle(&mut self, _: ListQueues, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.queues
                .values()
                .map(|q| (q.def.name.clone(), q.addr.clone()))
                .collect(),
        )
    }
}

impl crate::Broker {
    /// Every queue's counts (ready, unacked, consumers), sorted by name.
    pub async fn queue_counts(&self) -> Vec<(String, QueueCounts)> {
        let Ok(queues) = self.queues.send(ListQueues).await else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(queues.len());
        for (name, addr) in queues {
            if let Ok(counts) = addr.send(CountMessages).await {
                out.push((name, counts));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Deletes the exclusive queues of a connection that closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectionClosed {
    pub connection: ConnectionId,
}

impl Handler<ConnectionClosed> for QueueRegistry {
    type Result = ();

    fn handle(&mut self, msg: ConnectionClosed, _: &mut Context<Self>) {
        let owned: Vec<String> = self
            .queues
            .values()
            .filter(|q| q.def.exclusive_owner == Some(msg.connection))
            .map(|q| q.def.name.clone())
            .collect();
        for name in owned {
            self.remove_queue(&name);
        }
    }
}

/// Declares an exchange (AMQP exchange.declare).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct DeclareExchange {
    pub name: String,
    /// The AMQP type name.
    pub kind: String,
    pub passive: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: Arguments,
}

impl Handler<DeclareExchange> for QueueRegistry {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: DeclareExchange, _: &mut Context<Self>) -> Self::Result {
        if msg.name.is_empty() {
            return if msg.passive {
                Ok(())
            } else {
                Err(BrokerError::AccessRefused(
                    "operation not permitted on the default exchange".into(),
                ))
            };
        }
        if let Some(e) = self.exchanges.get(&msg.name) {
            if msg.passive {
                return Ok(());
            }
            if e.kind.name() != msg.kind {
                return Err(inequivalent(
                    "exchange",
                    "type",
                    &msg.name,
                    format!("'{}'", msg.kind),
                    format!("'{}'", e.kind.name()),
                ));
            }
            if e.durable != msg.durable {
                return Err(inequivalent(
                    "exchange",
                    "durable",
                    &msg.name,
                    format!("'{}'", msg.durable),
                    format!("'{}'", e.durable),
                ));
            }
            return Ok(());
        }
        if msg.passive {
            return Err(no_exchange(&msg.name));
        }
        if msg.name.starts_with("amq.") {
            return Err(BrokerError::AccessRefused(format!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                msg.name
            )));
        }
        let kind = ExchangeKind::parse(&msg.kind).ok_or_else(|| {
            BrokerError::InvalidRequest(format!("unknown exchange type '{}'", msg.kind))
        })?;
        let def = ExchangeDef {
            name: msg.name.clone(),
            kind,
            durable: msg.durable,
            auto_delete: msg.auto_delete,
            internal: msg.internal,
            arguments: msg.arguments,
        };
        if def.durable {
            self.meta.put_definition(EXCHANGE, &def.name, &json(&def))?;
        }
        self.exchanges.insert(def.name.clone(), def);
        self.publish();
        Ok(())
    }
}

/// Deletes an exchange and its bindings.
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct DeleteExchange {
    pub name: String,
    pub if_unused: bool,
}

impl Handler<DeleteExchange> for QueueRegistry {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: DeleteExchange, _: &mut Context<Self>) -> Self::Result {
        if msg.name.is_empty() {
            return Err(BrokerError::AccessRefused(
                "operation not permitted on the default exchange".into(),
            ));
        }
        if msg.name.starts_with("amq.") {
            return Err(BrokerError::AccessRefused(format!(
                "deletion of system exchange '{}' in vhost '/' not allowed",
                msg.name
            )));
        }
        if !self.exchanges.contains_key(&msg.name) {
            return Ok(());
        }
        let bound: Vec<Binding> = self
            .bindings
            .iter()
            .filter(|b| b.exchange == msg.name)
            .cloned()
            .collect();
        if msg.if_unused && !bound.is_empty() {
            return Err(BrokerError::PreconditionFailed(format!(
                "exchange '{}' in vhost '/' in use",
                msg.name
            )));
        }
        for b in bound {
            self.meta.delete_definition(BINDING, &binding_key(&b))?;
            self.bindings.remove(&b);
        }
        self.meta.delete_definition(EXCHANGE, &msg.name)?;
        self.exchanges.remove(&msg.name);
        self.publish();
        Ok(())
    }
}

fn binding_key(b: &Binding) -> String {
    json_string(b)
}

fn json_string<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("definitions serialize")
}

/// Binds a queue to an exchange, or unbinds it (AMQP queue.bind / queue.unbind).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct ChangeBinding {
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
    pub arguments: Arguments,
    pub bind: bool,
    pub connection: ConnectionId,
}

impl Handler<ChangeBinding> for QueueRegistry {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: ChangeBinding, _: &mut Context<Self>) -> Self::Result {
        let q = self.queue(&msg.queue, msg.connection)?;
        let durable = q.def.durable;
        if msg.exchange.is_empty() {
            return Err(BrokerError::AccessRefused(format!(
                "operation not permitted on the default exchange (queue '{}')",
                msg.queue
            )));
        }
        let ex = self
            .exchanges
            .get(&msg.exchange)
            .ok_or_else(|| no_exchange(&msg.exchange))?;
        let durable = durable && ex.durable;
        let binding = Binding {
            exchange: msg.exchange,
            queue: msg.queue,
            routing_key: msg.routing_key,
            arguments: json_string(&msg.arguments),
        };
        if msg.bind {
            if durable {
                self.meta
                    .put_definition(BINDING, &binding_key(&binding), &json(&binding))?;
            }
            self.bindings.insert(binding);
        } else {
            self.meta
                .delete_definition(BINDING, &binding_key(&binding))?;
            self.bindings.remove(&binding);
        }
        self.publish();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_arguments_are_checked_as_rabbitmq_does() {
        let args = |v: serde_json::Value| -> Arguments {
            [("x-partitions".to_string(), v)].into_iter().collect()
        };
        assert!(check_arguments("q", &args(serde_json::json!(4))).is_ok());
        for (value, problem) in [
            (serde_json::json!(0), "{value_too_small,0,1}"),
            (serde_json::json!(65), "{value_too_large,65,64}"),
            (serde_json::json!(-1), "{value_negative,-1}"),
            (serde_json::json!("4"), "{unacceptable_type,longstr}"),
        ] {
            let err = check_arguments("q", &args(value)).unwrap_err().to_string();
            assert!(err.contains(problem), "{err}");
            assert!(
                err.contains("invalid arg 'x-partitions' for queue 'q'"),
                "{err}"
            );
        }
    }

    #[test]
    fn queue_types_are_those_rabbitmq_knows() {
        let args = |v: serde_json::Value| -> Arguments {
            [("x-queue-type".to_string(), v)].into_iter().collect()
        };
        for t in ["classic", "quorum", "stream"] {
            assert!(check_arguments("q", &args(serde_json::json!(t))).is_ok());
        }
        // RabbitMQ 3.10's own answers, word for word.
        for (value, problem) in [
            (
                serde_json::json!("foo"),
                r#""unsupported queue type 'foo'""#,
            ),
            (serde_json::json!(5), "{unacceptable_type,signedint}"),
        ] {
            let err = check_arguments("q", &args(value)).unwrap_err().to_string();
            assert!(
                err.ends_with(&format!(
                    "invalid arg 'x-queue-type' for queue 'q' in vhost '/': {problem}"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn queue_names_map_to_legal_distinct_topics() {
        assert_eq!(topic_for_queue("tasks.high"), "tasks.high");
        assert_eq!(topic_for_queue("celery@host"), "amqp.celery_40host");
        assert_ne!(topic_for_queue("a b"), topic_for_queue("a_20b"));
        assert!(validate_topic_name(&topic_for_queue("a/b:c d")).is_ok());
    }
}
