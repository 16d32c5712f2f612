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
use crate::journal::JournalPlace;
use crate::offsets_journal::OffsetsJournal;
use crate::supervision::{
    ActorEnded, Current, EndReports, RestartPolicy, ShutdownSignal, JOURNAL_INDEX,
};
use crate::BrokerError;

/// Longest group id accepted (Kafka has no limit; this bounds memory and journal frames).
pub const MAX_GROUP_ID_LEN: usize = 1024;

pub struct GroupRegistry {
    config: Arc<GroupConfig>,
    /// The offsets journal's actor, which this registry supervises.
    journal: Current<OffsetsJournal>,
    /// Where the journal is, to open it again when its actor ends.
    place: JournalPlace,
    /// Where the journal's actor reports its end.
    ends: EndReports,
    catalog: Catalog,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    /// Each group's coordinator and which start of it that is (see [`EndReports`]).
    groups: HashMap<String, (Addr<GroupActor>, u64)>,
    /// How each coordinator has been restarting.
    restarts: HashMap<String, RestartPolicy>,
    /// Once it is up, stopped coordinators are not restarted.
    shutdown: ShutdownSignal,
}

impl GroupRegistry {
    /// A registry that opens the offsets journal at `place`, starts its actor and starts
    /// coordinators for the groups that have committed offsets.
    pub fn new(
        config: Arc<GroupConfig>,
        place: JournalPlace,
        catalog: Catalog,
        arbiters: Vec<ArbiterHandle>,
        shutdown: ShutdownSignal,
    ) -> Result<Self, BrokerError> {
        let (journal, known) = OffsetsJournal::open(&place)?;
        let mut ends = EndReports::default();
        let (notice, _) = ends.notice(JOURNAL, JOURNAL_INDEX);
        let journal = Current::new(journal.with_end_notice(notice).start());
        let mut registry = GroupRegistry {
            config,
            journal,
            place,
            ends,
            catalog,
            arbiters,
            next_arbiter: 0,
            groups: HashMap::new(),
            restarts: HashMap::new(),
            shutdown,
        };
        for group in known {
            registry.start_group(group);
        }
        Ok(registry)
    }

    /// The offsets journal's actor, as it is at each use.
    pub fn journal(&self) -> Current<OffsetsJournal> {
        self.journal.clone()
    }

    /// The offsets journal's actor ended: opens the journal again (what the ended actor
    /// wrote is there; a commit it had not written was answered with a retriable error) and
    /// starts a new actor on it, which coordinators find from then on.
    fn journal_ended(&mut self) {
        if self.shutdown.begun() {
            return;
        }
        spool_metrics::live::actor_restarted("journal");
        match OffsetsJournal::open(&self.place) {
            Ok((journal, _)) => {
                let (notice, _) = self.ends.notice(JOURNAL, JOURNAL_INDEX);
                self.journal.set(journal.with_end_notice(notice).start());
                warn!("group offsets journal's actor ended; restarted it from the journal");
            }
            Err(e) => {
                tracing::error!(error = %e, "group offsets journal could not be opened again; commits fail until a restart")
            }
        }
    }

    fn start_group(&mut self, group: String) -> Addr<GroupActor> {
        let (notice, incarnation) = self.ends.notice(&group, 0);
        let actor = GroupActor::new(
            group.clone(),
            self.config.clone(),
            self.journal.clone(),
            self.catalog.clone(),
        )
        .with_end_notice(notice);
        let addr = match self
            .arbiters
            .get(self.next_arbiter % self.arbiters.len().max(1))
        {
            Some(arbiter) => GroupActor::start_in_arbiter(arbiter, move |_| actor),
            None => actor.start(),
        };
        self.next_arbiter += 1;
        self.restarts
            .entry(group.clone())
            .or_default()
            .started(std::time::Instant::now());
        self.groups.insert(group, (addr.clone(), incarnation));
        addr
    }

    /// The coordinator of `group`, if the group is known. One that stopped is restarted by its
    /// end notice; until then (or during the shutdown) its address is answered as it is, and
    /// a message to it fails as a retriable error.
    fn live(&self, group: &str) -> Option<Addr<GroupActor>> {
        self.groups.get(group).map(|(addr, _)| addr.clone())
    }

    /// A coordinator ended: the current one of a group still known is restarted (its offsets
    /// are loaded again from the journal; members rejoin when their next heartbeat gets
    /// UNKNOWN_MEMBER_ID), at once or after a growing delay when it keeps ending as it starts.
    fn group_ended(&mut self, ended: ActorEnded, ctx: &mut Context<Self>) {
        let current = self
            .groups
            .get(&ended.name)
            .is_some_and(|(_, incarnation)| *incarnation == ended.incarnation);
        if !current || self.shutdown.begun() {
            return;
        }
        let delay = self
            .restarts
            .entry(ended.name.clone())
            .or_default()
            .delay(std::time::Instant::now());
        warn!(group = %ended.name, ?delay, "group coordinator ended; restarting it");
        ctx.run_later(delay, move |act, _| {
            let still = act
                .groups
                .get(&ended.name)
                .is_some_and(|(_, incarnation)| *incarnation == ended.incarnation);
            if still && !act.shutdown.begun() {
                spool_metrics::live::actor_restarted("group");
                act.start_group(ended.name);
            }
        });
    }
}

/// The name the journal's actor reports its end under, with [`JOURNAL_INDEX`] (coordinators
/// report under their group's id and index 0).
const JOURNAL: &str = "offsets-journal";

impl Actor for GroupRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.ends.attach(ctx);
    }
}

impl StreamHandler<ActorEnded> for GroupRegistry {
    fn handle(&mut self, ended: ActorEnded, ctx: &mut Context<Self>) {
        if ended.index == JOURNAL_INDEX {
            self.journal_ended();
        } else {
            self.group_ended(ended, ctx);
        }
    }

    /// The registry keeps a sender, so the stream never ends while it runs; nothing to do.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
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
            .map(|(_, (a, _))| a.send(crate::supervision::StopActor))
            .collect();
        crate::supervision::stop_all_then_journal(stops, self.journal.get())
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
        self.restarts.remove(&msg.group_id);
    }
}
