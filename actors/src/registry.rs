//! The topic registry: creates, alters and deletes topics, supervises their partition actors,
//! and is the only writer of the [`Catalog`]. A partition actor that dies (a panic in a
//! handler) is noticed by the watchdog, its log is recovered and a new actor takes its place;
//! the rest of the broker keeps serving meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use spool_store::{Log, LogConfig, MetaStore, TopicRecord};
use tracing::{error, info, warn};

use crate::broker::BrokerConfig;
use crate::catalog::{Catalog, PartitionInfo, TopicInfo};
use crate::partition::{CloseLog, PartitionActor, ReplicaRole, UpdateLogConfig};
use crate::partition_offsets::LogStats;
use crate::record_batch::KafkaBatchFormat;
use crate::supervision::{ActorEnded, EndReports, ShutdownSignal};
use crate::BrokerError;

/// The watchdog is a backstop: partition actors report their end at once (an [`EndNotice`]).
const WATCHDOG_EVERY: Duration = Duration::from_millis(200);
/// The most partitions one topic may have.
pub const MAX_PARTITIONS: i32 = 10_000;
const PRODUCER_ID_BLOCK: u64 = 1000;

/// Creates a topic (also used for auto-creation).
#[derive(Message)]
#[rtype(result = "Result<Arc<TopicInfo>, BrokerError>")]
pub struct CreateTopic {
    pub name: String,
    /// `None`: the broker default.
    pub partitions: Option<i32>,
    /// `None` or 1 on a single node.
    pub replication_factor: Option<i16>,
    pub configs: BTreeMap<String, String>,
    pub validate_only: bool,
}

/// Deletes a topic and its data.
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct DeleteTopic {
    pub name: String,
}

/// Grows a topic to `total` partitions.
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct CreatePartitions {
    pub name: String,
    pub total: i32,
    pub validate_only: bool,
}

/// Replaces a topic's config overrides with `overrides`.
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct AlterTopicConfig {
    pub name: String,
    pub overrides: BTreeMap<String, String>,
    pub validate_only: bool,
}

/// Hands out a producer id never used before on this broker.
#[derive(Message)]
#[rtype(result = "Result<i64, BrokerError>")]
pub struct AllocateProducerId;

/// Reports how many partition actors were restarted after dying.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct CountRestarts;

/// The shutdown's last step: stops restarting partitions, then flushes, fsyncs and closes every
/// partition's log. Answers once all are closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClosePartitions;

/// Checks a topic name against Kafka's rules (which every front end shares).
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    let bad = |reason| {
        Err(BrokerError::InvalidTopic {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("the name is empty");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not allowed");
    }
    if name.len() > 249 {
        return bad("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// See the module docs.
pub struct TopicRegistry {
    config: Arc<BrokerConfig>,
    meta: Arc<MetaStore>,
    catalog: Catalog,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    records: BTreeMap<String, TopicRecord>,
    producer_ids: std::ops::Range<u64>,
    restarts: u64,
    /// Where partition actors report their ends (and their incarnation numbers).
    ends: EndReports,
    /// Once it is up, nothing is restarted.
    shutdown: ShutdownSignal,
}

impl TopicRegistry {
    /// Loads every topic from the metadata store and recovers its partitions.
    pub fn recover(
        config: Arc<BrokerConfig>,
        meta: Arc<MetaStore>,
        catalog: Catalog,
        arbiters: Vec<ArbiterHandle>,
        shutdown: ShutdownSignal,
    ) -> Result<TopicRegistry, BrokerError> {
        let mut reg = TopicRegistry {
            config,
            meta,
            catalog,
            arbiters,
            next_arbiter: 0,
            records: BTreeMap::new(),
            producer_ids: 0..0,
            restarts: 0,
            ends: EndReports::default(),
            shutdown,
        };
        for record in reg.meta.topics()? {
            let log_config = reg.log_config(&record.configs)?;
            let partitions = (0..record.partitions as i32)
                .map(|p| reg.start_partition(&record.name, p, &log_config))
                .collect::<Result<Vec<_>, _>>()?;
            reg.publish(&record, log_config, partitions);
            info!(topic = %record.name, partitions = record.partitions, "topic recovered");
            reg.records.insert(record.name.clone(), record);
        }
        Ok(reg)
    }

    fn log_config(&self, overrides: &BTreeMap<String, String>) -> Result<LogConfig, BrokerError> {
        LogConfig::from_overrides(&self.config.log_defaults, overrides)
            .map_err(|e| BrokerError::InvalidConfig(e.to_string()))
    }

    fn partition_dir(&self, topic: &str, partition: i32) -> std::path::PathBuf {
        self.config.data_dir.join(format!("{topic}-{partition}"))
    }

    /// Recovers a partition's log and starts its actor on the next arbiter.
    fn start_partition(
        &mut self,
        topic: &str,
        partition: i32,
        config: &LogConfig,
    ) -> Result<PartitionInfo, BrokerError> {
        let start = self.meta.log_start_offset(topic, partition as u32)?;
        let log = Log::open(
            &self.partition_dir(topic, partition),
            config.clone(),
            Arc::new(KafkaBatchFormat),
            start,
        )?;
        let role = ReplicaRole::Leader { epoch: 0 };
        let stats = Arc::new(LogStats::default());
        let (notice, incarnation) = self.ends.notice(topic, partition);
        let actor = PartitionActor::new(
            topic.into(),
            partition,
            role,
            log,
            self.meta.clone(),
            stats.clone(),
        )?
        .with_end_notice(notice);
        let arbiter = self.arbiters[self.next_arbiter % self.arbiters.len()].clone();
        self.next_arbiter += 1;
        let addr = PartitionActor::start_in_arbiter(&arbiter, move |_| actor);
        Ok(PartitionInfo {
            leader: self.config.node_id,
            leader_epoch: 0,
            replicas: vec![self.config.node_id],
            local: Some(addr),
            arbiter: Some(arbiter),
            incarnation,
            stats,
        })
    }

    fn publish(&self, record: &TopicRecord, config: LogConfig, partitions: Vec<PartitionInfo>) {
        let info = Arc::new(TopicInfo {
            name: record.name.as_str().into(),
            id: record.id,
            config,
            overrides: record.configs.clone(),
            partitions,
        });
        self.catalog.update(|c| {
            c.topics.insert(info.name.clone(), info);
        });
    }

    fn topic(&self, name: &str) -> Result<Arc<TopicInfo>, BrokerError> {
        self.catalog
            .snapshot()
            .topic(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))
    }

    /// Restarts every partition actor that is no longer running (the backstop to end notices).
    fn watchdog(&mut self) {
        if self.shutdown.begun() {
            return;
        }
        let snapshot = self.catalog.snapshot();
        for (name, topic) in &snapshot.topics {
            for (p, part) in topic.partitions.iter().enumerate() {
                if part.local.as_ref().is_some_and(|a| !a.connected()) {
                    self.restart_partition(name, p, &topic.config);
                }
            }
        }
    }

    /// A partition actor ended: restarts it when it is the current incarnation of a partition
    /// that still exists (a deleted topic's actors end too, and so do replaced ones).
    fn actor_ended(&mut self, ended: ActorEnded) {
        if self.shutdown.begun() {
            return;
        }
        let snapshot = self.catalog.snapshot();
        let Some(topic) = snapshot.topic(&ended.name) else {
            return;
        };
        let p = ended.index as usize;
        if topic
            .partitions
            .get(p)
            .is_some_and(|part| part.incarnation == ended.incarnation)
        {
            self.restart_partition(&topic.name, p, &topic.config);
        }
    }

    fn restart_partition(&mut self, name: &str, p: usize, config: &LogConfig) {
        warn!(topic = %name, partition = p, "partition actor died; restarting it");
        match self.start_partition(name, p as i32, config) {
            Ok(fresh) => {
                self.restarts += 1;
                spool_metrics::live::actor_restarted("partition");
                self.catalog.update(|c| {
                    if let Some(t) = c.topics.get_mut(name) {
                        let t = Arc::make_mut(t);
                        t.partitions[p] = fresh;
                    }
                });
                info!(topic = %name, partition = p, "partition actor restarted");
            }
            Err(e) => {
                error!(topic = %name, partition = p, error = %e, "partition restart failed")
            }
        }
    }
}

impl Actor for TopicRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(WATCHDOG_EVERY, |act, _| act.watchdog());
        self.ends.attach(ctx);
    }
}

impl StreamHandler<ActorEnded> for TopicRegistry {
    fn handle(&mut self, ended: ActorEnded, _ctx: &mut Context<Self>) {
        self.actor_ended(ended);
    }

    /// The registry keeps a sender, so the stream never ends while it runs; nothing to do.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl Handler<ClosePartitions> for TopicRegistry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: ClosePartitions, _ctx: &mut Context<Self>) -> Self::Result {
        self.shutdown.begin();
        let snapshot = self.catalog.snapshot();
        let closes: Vec<_> = snapshot
            .topics
            .values()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.clone(), p)))
            .filter_map(|(name, p)| Some((name, p.local.clone()?)))
            .map(|(name, a)| async move { (name, a.send(CloseLog { delete: false }).await) })
            .collect();
        Box::pin(async move {
            for (topic, r) in futures_util::future::join_all(closes).await {
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => error!(%topic, error = %e, "closing a partition's log failed"),
                    // It had stopped already; its log was closed when it ended.
                    Err(_) => {}
                }
            }
        })
    }
}

impl Handler<CreateTopic> for TopicRegistry {
    type Result = Result<Arc<TopicInfo>, BrokerError>;

    fn handle(&mut self, msg: CreateTopic, _ctx: &mut Context<Self>) -> Self::Result {
        validate_topic_name(&msg.name)?;
        if self.records.contains_key(&msg.name) {
            return Err(BrokerError::TopicExists(msg.name));
        }
        let partitions = match msg.partitions {
            None | Some(-1) => self.config.default_partitions as i32,
            Some(n) if (1..=MAX_PARTITIONS).contains(&n) => n,
            Some(n) => {
                return Err(BrokerError::InvalidPartitions(format!(
                    "{n} is not between 1 and {MAX_PARTITIONS}"
                )))
            }
        };
        match msg.replication_factor {
            None | Some(-1) | Some(1) => {}
            Some(n) => return Err(BrokerError::InvalidReplicationFactor(n)),
        }
        let log_config = self.log_config(&msg.configs)?;
        if msg.validate_only {
            return Ok(Arc::new(TopicInfo {
                name: msg.name.as_str().into(),
                id: [0; 16],
                config: log_config,
                overrides: msg.configs,
                partitions: Vec::new(),
            }));
        }
        let record = TopicRecord {
            name: msg.name.clone(),
            id: *uuid::Uuid::new_v4().as_bytes(),
            partitions: partitions as u32,
            configs: msg.configs,
            created_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let parts = (0..partitions)
            .map(|p| self.start_partition(&record.name, p, &log_config))
            .collect::<Result<Vec<_>, _>>()?;
        self.meta.put_topic(&record)?;
        self.publish(&record, log_config, parts);
        info!(topic = %record.name, partitions, "topic created");
        self.records.insert(record.name.clone(), record);
        self.topic(&msg.name)
    }
}

impl Handler<DeleteTopic> for TopicRegistry {
    type Result = AtomicResponse<Self, Result<(), BrokerError>>;

    /// Answers once every partition's files are gone, and holds the mailbox until then, so
    /// neither the caller nor a re-create under the same name can see the old log.
    fn handle(&mut self, msg: DeleteTopic, _ctx: &mut Context<Self>) -> Self::Result {
        let topic = match self.topic(&msg.name) {
            Ok(t) => t,
            Err(e) => return AtomicResponse::new(Box::pin(fut::ready(Err(e)))),
        };
        if let Err(e) = self.meta.delete_topic(&msg.name) {
            return AtomicResponse::new(Box::pin(fut::ready(Err(e.into()))));
        }
        self.records.remove(&msg.name);
        self.catalog.update(|c| {
            c.topics.remove(msg.name.as_str());
        });
        let closes: Vec<_> = topic
            .partitions
            .iter()
            .filter_map(|p| p.local.clone())
            .map(|a| a.send(CloseLog { delete: true }))
            .collect();
        let name = msg.name;
        AtomicResponse::new(Box::pin(
            async move {
                for r in futures_util::future::join_all(closes).await {
                    if let Ok(Err(e)) = r {
                        error!(topic = %name, error = %e, "deleting a partition's log failed");
                    }
                }
                info!(topic = %name, "topic deleted");
                Ok(())
            }
            .into_actor(self),
        ))
    }
}

impl Handler<CreatePartitions> for TopicRegistry {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: CreatePartitions, _ctx: &mut Context<Self>) -> Self::Result {
        let topic = self.topic(&msg.name)?;
        let current = topic.partitions.len() as i32;
        if msg.total <= current {
            return Err(BrokerError::InvalidPartitions(format!(
                "topic has {current} partitions; the new count {} must be larger",
                msg.total
            )));
        }
        if msg.total > MAX_PARTITIONS {
            return Err(BrokerError::InvalidPartitions(format!(
                "{} exceeds the limit of {MAX_PARTITIONS}",
                msg.total
            )));
        }
        if msg.validate_only {
            return Ok(());
        }
        let mut parts = topic.partitions.clone();
        for p in current..msg.total {
            parts.push(self.start_partition(&msg.name, p, &topic.config)?);
        }
        let record = self.records.get_mut(&msg.name).expect("known topic");
        record.partitions = msg.total as u32;
        self.meta.put_topic(record)?;
        let record = record.clone();
        self.publish(&record, topic.config.clone(), parts);
        info!(topic = %msg.name, partitions = msg.total, "partitions added");
        Ok(())
    }
}

impl Handler<AlterTopicConfig> for TopicRegistry {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: AlterTopicConfig, _ctx: &mut Context<Self>) -> Self::Result {
        let topic = self.topic(&msg.name)?;
        let log_config = self.log_config(&msg.overrides)?;
        if msg.validate_only {
            return Ok(());
        }
        let record = self.records.get_mut(&msg.name).expect("known topic");
        record.configs = msg.overrides;
        self.meta.put_topic(record)?;
        let record = record.clone();
        for p in topic.partitions.iter().filter_map(|p| p.local.as_ref()) {
            p.do_send(UpdateLogConfig {
                config: log_config.clone(),
            });
        }
        self.publish(&record, log_config, topic.partitions.clone());
        info!(topic = %msg.name, "topic config altered");
        Ok(())
    }
}

impl Handler<AllocateProducerId> for TopicRegistry {
    type Result = Result<i64, BrokerError>;

    fn handle(&mut self, _msg: AllocateProducerId, _ctx: &mut Context<Self>) -> Self::Result {
        if self.producer_ids.is_empty() {
            let first = self.meta.allocate("producer_id", PRODUCER_ID_BLOCK)?;
            self.producer_ids = first..first + PRODUCER_ID_BLOCK;
        }
        Ok(self.producer_ids.next().expect("refilled") as i64)
    }
}

impl Handler<CountRestarts> for TopicRegistry {
    type Result = u64;

    fn handle(&mut self, _msg: CountRestarts, _ctx: &mut Context<Self>) -> u64 {
        self.restarts
    }
}
