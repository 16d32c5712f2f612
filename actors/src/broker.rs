//! The broker root: owns the metadata store, the arbiters partitions run on, and the topic
//! registry that supervises them.

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use spool_store::{LogConfig, MetaStore};

use crate::catalog::{Catalog, CatalogSnapshot, NodeInfo};
use crate::group::GroupConfig;
use crate::group_registry::GroupRegistry;
use crate::journal::JournalPlace;
use crate::offsets_journal::OffsetsJournal;
use crate::queues::registry::QueueRegistry;
use crate::queues::routing::Routes;
use crate::queues::state_journal::QueueStateJournal;
use crate::registry::{ClosePartitions, TopicRegistry};
use crate::supervision::Current;
use crate::supervision::{ShutdownSignal, StopActor};
use crate::BrokerError;

/// Settings of the broker core (front ends have their own).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub data_dir: PathBuf,
    /// Host and port clients are told to connect to.
    pub advertised_host: String,
    pub advertised_port: u16,
    /// Partitions of an auto-created topic, or of a CreateTopics without a count.
    pub default_partitions: u32,
    pub auto_create_topics: bool,
    /// Defaults for every topic's log config.
    pub log_defaults: LogConfig,
    /// Threads partition actors are spread over (one arbiter each); 0 means one per core.
    pub partition_threads: usize,
    /// Consumer group settings.
    pub groups: GroupConfig,
}

/// A running broker core: what front ends hold.
#[derive(Clone)]
pub struct Broker {
    pub config: Arc<BrokerConfig>,
    pub registry: Addr<TopicRegistry>,
    /// Finds the coordinator actor of each consumer group.
    pub groups: Addr<GroupRegistry>,
    pub catalog: Catalog,
    /// Queues, exchanges and bindings (the AMQP facade's model).
    pub queues: Addr<QueueRegistry>,
    /// The routing table front ends route publishes with.
    pub routes: Routes,
    /// Raised when the broker begins to shut down: listeners stop accepting, connections wind
    /// down, supervisors stop restarting.
    pub shutdown: ShutdownSignal,
    /// The journals' actors, as their supervisors (the registries) keep them.
    pub journals: Journals,
    /// This node's member of the cluster's metadata quorum.
    pub cluster: Arc<spool_cluster::Quorum>,
}

/// The current actors of the two journals.
#[derive(Clone)]
pub struct Journals {
    /// Every queue's delivery state (supervised by the queue registry).
    pub queue_state: Current<QueueStateJournal>,
    /// Consumer groups' committed offsets (supervised by the group registry).
    pub offsets: Current<OffsetsJournal>,
}

impl Broker {
    /// Opens the metadata store, recovers every topic's partitions and starts the registry.
    /// Must be called inside a running actix `System`.
    pub fn start(
        config: BrokerConfig,
        cluster: Arc<spool_cluster::Quorum>,
    ) -> Result<Broker, BrokerError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            BrokerError::Storage(spool_store::StoreError::Io {
                path: config.data_dir.clone(),
                source: e,
            })
        })?;
        let meta = Arc::new(MetaStore::open(&config.data_dir.join("meta.redb"))?);
        let cluster_id = meta.cluster_id()?;
        let catalog = Catalog::new(CatalogSnapshot {
            cluster_id,
            controller_id: config.node_id,
            nodes: vec![NodeInfo {
                node_id: config.node_id,
                host: config.advertised_host.clone(),
                port: config.advertised_port,
            }],
            topics: Default::default(),
        });
        let threads = match config.partition_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let arbiters: Vec<ArbiterHandle> = (0..threads).map(|_| Arbiter::new().handle()).collect();
        let config = Arc::new(config);
        let shutdown = ShutdownSignal::default();
        let place = JournalPlace {
            data_dir: config.data_dir.clone(),
            meta: meta.clone(),
            flush_ms: config.log_defaults.flush_ms,
        };
        let groups = GroupRegistry::new(
            Arc::new(config.groups.clone()),
            place.clone(),
            catalog.clone(),
            arbiters.clone(),
            shutdown.clone(),
        )?;
        let registry = TopicRegistry::recover(
            config.clone(),
            meta.clone(),
            catalog.clone(),
            arbiters.clone(),
            shutdown.clone(),
        )?
        .start();
        let routes = Routes::default();
        let queues = QueueRegistry::recover(
            meta,
            registry.clone(),
            catalog.clone(),
            place,
            arbiters,
            routes.clone(),
        )?;
        let journals = Journals {
            queue_state: queues.journal(),
            offsets: groups.journal(),
        };
        Ok(Broker {
            config,
            registry,
            groups: groups.start(),
            catalog,
            queues: queues.run(),
            routes,
            shutdown,
            journals,
            cluster,
        })
    }

    /// The core's first shutdown step, once the front ends have closed their connections:
    /// stops queue and group actors and fsyncs their journals. Raises the shutdown signal if
    /// nobody has yet, so nothing stopped is restarted.
    pub async fn stop_actors(&self) {
        self.shutdown.begin();
        let queues = self.queues.send(StopActor);
        let groups = self.groups.send(StopActor);
        let (q, g) = futures_util::future::join(queues, groups).await;
        if q.is_err() || g.is_err() {
            tracing::warn!("a registry had stopped before the shutdown reached it");
        }
    }

    /// The core's last shutdown step: flushes, fsyncs and closes every partition's log.
    pub async fn close_partitions(&self) {
        self.shutdown.begin();
        if self.registry.send(ClosePartitions).await.is_err() {
            tracing::warn!("the topic registry had stopped before its partitions were closed");
        }
    }
}
