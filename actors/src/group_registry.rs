//! The group registry: finds or starts the coordinator actor of each consumer group.
//!
//! Group actors are spread over the partition arbiters. One that has stopped (it panicked, or
//! its group was deleted) is replaced the next time its group is asked for; a replacement
//! reloads the group's committed offsets from the journal, and members rejoin as they do after a
//! coordinator moves in Kafka (their next heartbeat gets UNKNOWN_MEMBER_ID).

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use tracing::{info, warn};

use crate::catalog::Catalog;
use crate::group::{GroupActor, GroupConfig};
use crate::offsets_journal::OffsetsJournal;
use crate::supervision::ShutdownSignal;
use crate::BrokerError;

/// Longest group id accepted (Kafka has no limit; this bounds memory and journal frames).
pub const MAX_GROUP_ID_LEN: usize = 1024;

pub struct GroupRegistry {
    config: Arc<GroupConfig>,
    journal: Addr<OffsetsJournal>,
    catalog: Catalog,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    groups: HashMap<String, Addr<GroupActor>>,
    restarts: u64,
    /// Once it is up, stopped coordinators are not restarted.
    shutdown: ShutdownSignal,
}

impl GroupRegistry {
    /// A registry that starts coordinators for `known` groups (those with committed offsets).
    pub fn new(
        config: Arc<GroupConfig>,
        journal: Addr<OffsetsJournal>,
        catalog: Catalog,
        arbiters: Vec<ArbiterHandle>,
        known: Vec<String>,
        shutdown: ShutdownSignal,
    ) -> Self {
        let mut registry = GroupRegistry {
            config,
            journal,
            catalog,
            arbiters,
            next_arbiter: 0,
            groups: HashMap::new(),
            restarts: 0,
            shutdown,
        };
        for group in known {
            registry.start_group(group);
        }
        registry
    }

    fn start_group(&mut self, group: String) -> Addr<GroupActor> {
        let actor = GroupActor::new(
            group.clone(),
            self.config.clone(),
            self.journal.clone(),
            self.catalog.clone(),
        );
        let addr = match self
            .arbiters
            .get(self.next_arbiter % self.arbiters.len().max(1))
        {
            Some(arbiter) => GroupActor::start_in_arbiter(arbiter, move |_| actor),
            None => actor.start(),
        };
        self.next_arbiter += 1;
        self.groups.insert(group, addr.clone());
        addr
    }

    /// The live coordinator of `group`, restarting it if it stopped.
    fn live(&mut self, group: &str) -> Option<Addr<GroupActor>> {
        let addr = self.groups.get(group)?;
        if addr.connected() || self.shutdown.begun() {
            return Some(addr.clone());
        }
        warn!(group, "group coordinator stopped; starting a new one");
        self.restarts += 1;
        spool_metrics::live::actor_restarted("group");
        Some(self.start_group(group.to_string()))
    }
}

impl Actor for GroupRegistry {
    type Context = Context<Self>;
}

/// Checks a group id as Kafka does: not empty (most APIs), and bounded.
pub fn validate_group_id(group: &str) -> Result<(), BrokerError> {
    if group.is_empty() {
        return Err(BrokerError::InvalidGroupId("empty group id".into()));
    }
    if group.len() > MAX_GROUP_ID_LEN {
        return Err(BrokerError::InvalidGroupId(format!(
            "group id longer than {MAX_GROUP_ID_LEN} bytes"
        )));
    }
    Ok(())
}

/// The coordinator of a group: created when `create` is set, `None` for an unknown group
/// otherwise.
#[derive(Message)]
#[rtype(result = "Result<Option<Addr<GroupActor>>, BrokerError>")]
pub struct FindGroup {
    pub group_id: String,
    pub create: bool,
}

impl Handler<FindGroup> for GroupRegistry {
    type Result = Result<Option<Addr<GroupActor>>, BrokerError>;

    fn handle(&mut self, msg: FindGroup, _: &mut Context<Self>) -> Self::Result {
        validate_group_id(&msg.group_id)?;
        if let Some(addr) = self.live(&msg.group_id) {
            return Ok(Some(addr));
        }
        if !msg.create {
            return Ok(None);
        }
        info!(group = %msg.group_id, "group created");
        Ok(Some(self.start_group(msg.group_id)))
    }
}

/// Every group's coordinator, for ListGroups.
#[derive(Message)]
#[rtype(result = "Vec<Addr<GroupActor>>")]
pub struct ListGroupCoordinators;

impl Handler<ListGroupCoordinators> for GroupRegistry {
    type Result = MessageResult<ListGroupCoordinators>;

    fn handle(&mut self, _: ListGroupCoordinators, _: &mut Context<Self>) -> Self::Result {
        let names: Vec<String> = self.groups.keys().cloned().collect();
        MessageResult(names.iter().filter_map(|g| self.live(g)).collect())
    }
}

impl Handler<crate::supervision::StopActor> for GroupRegistry {
    type Result = ResponseFuture<()>;

    /// The shutdown's step for groups: stops every coordinator, then fsyncs and stops the
    /// offsets journal. Nothing is restarted afterwards (the shutdown signal is up).
    fn handle(&mut self, _: crate::supervision::StopActor, _: &mut Context<Self>) -> Self::Result {
        let stops: Vec<_> = self
            .groups
            .drain()
            .map(|(_, a)| a.send(crate::supervision::StopActor))
            .collect();
        crate::supervision::stop_all_then_journal(stops, self.journal.clone())
    }
}

/// Forgets a deleted group.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ForgetGroup {
    pub group_id: String,
}

impl Handler<ForgetGroup> for GroupRegistry {
    type Result = ();

    fn handle(&mut self, msg: ForgetGroup, _: &mut Context<Self>) {
        self.groups.remove(&msg.group_id);
    }
}
