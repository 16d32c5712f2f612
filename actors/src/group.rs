//! The group coordinator of one consumer group: the classic membership protocol's state machine
//! (empty, preparing rebalance, completing rebalance, stable, dead) and the group's committed
//! offsets.
//!
//! The coordinator relays what clients put in their protocols and assignments without reading
//! it, so every client-side assignor works. Members that stop heartbeating are expired after
//! their session timeout; a rebalance waits for every member to rejoin, at most the longest
//! rebalance timeout (the consumers' `max.poll.interval.ms`), and members that did not rejoin are
//! removed. Static members (`group.instance.id`) keep their assignment across restarts.
//!
//! A group is either classic or, once a member heartbeats with the consumer protocol of
//! KIP-848, a consumer group; that protocol's state machine is [`ConsumerGroup`] and its
//! handlers are in `group_consumer.rs`. The offsets are the same for both.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use indexmap::IndexMap;
use tokio::sync::oneshot;
use tracing::{debug, info};

use crate::catalog::Catalog;
use crate::consumer_group::{ConsumerGroup, ConsumerProtocolTimers};
use crate::offsets_journal::{
    now_ms, CommittedOffset, LoadGroupOffsets, OffsetsJournal, RecordOffsets, TopicPartition,
};
use crate::BrokerError;

/// Settings shared by every group (Kafka's `group.*` and `offsets.*` broker configs).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits
    /// for more members.
    pub initial_rebalance_delay: Duration,
    /// `group.min.session.timeout.ms` and `group.max.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// `offsets.retention.minutes`: offsets of a group empty for this long are deleted.
    pub offsets_retention: Duration,
    /// `offsets.retention.check.interval.ms`: how often expired offsets are looked for.
    pub offsets_retention_check_interval: Duration,
    /// `group.consumer.session.timeout.ms` and `group.consumer.heartbeat.interval.ms`: the
    /// consumer protocol's timers, which the broker (not the client) sets.
    pub consumer: ConsumerProtocolTimers,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay: Duration::from_secs(3),
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
            offsets_retention_check_interval: Duration::from_secs(600),
            consumer: ConsumerProtocolTimers {
                session_timeout: Duration::from_secs(45),
                heartbeat_interval: Duration::from_secs(5),
            },
        }
    }
}

/// The group's phase, named as Kafka names it in DescribeGroups and ListGroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupPhase {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupPhase {
    pub fn name(self) -> &'static str {
        match self {
            GroupPhase::Empty => "Empty",
            GroupPhase::PreparingRebalance => "PreparingRebalance",
            GroupPhase::CompletingRebalance => "CompletingRebalance",
            GroupPhase::Stable => "Stable",
            GroupPhase::Dead => "Dead",
        }
    }
}

/// What a JoinGroup gets back.
#[derive(Debug, Clone)]
pub struct JoinResult {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol_name: String,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol; only the leader gets them.
    pub members: Vec<MemberMetadata>,
    /// A static leader that rejoined a stable group (JoinGroup v9+, KIP-814): it gets the
    /// members but must not compute a new assignment.
    pub skip_assignment: bool,
}

/// A member as the leader sees it: id, static instance id, subscription metadata.
#[derive(Debug, Clone)]
pub struct MemberMetadata {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

/// What a SyncGroup gets back.
#[derive(Debug, Clone)]
pub struct SyncResult {
    pub protocol_type: String,
    pub protocol_name: String,
    pub assignment: Bytes,
}

type JoinReply = oneshot::Sender<Result<JoinResult, BrokerError>>;
type SyncReply = oneshot::Sender<Result<SyncResult, BrokerError>>;

struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heard: Instant,
    join_reply: Option<JoinReply>,
    sync_reply: Option<SyncReply>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// Members waiting on a JoinGroup or SyncGroup answer are alive: the client is blocked on us.
    fn is_waiting(&self) -> bool {
        self.join_reply.is_some() || self.sync_reply.is_some()
    }
}

/// Which protocol a group's members speak (Kafka's group type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupType {
    Classic,
    Consumer,
}

impl GroupType {
    pub fn name(self) -> &'static str {
        match self {
            GroupType::Classic => "classic",
            GroupType::Consumer => "consumer",
        }
    }
}

/// The coordinator of one group.
pub struct GroupActor {
    pub(crate) id: String,
    pub(crate) config: Arc<GroupConfig>,
    journal: crate::supervision::Current<OffsetsJournal>,
    pub(crate) catalog: Catalog,
    /// The protocol of the group's members; an empty group keeps the last one.
    pub(crate) group_type: GroupType,
    /// The consumer protocol's state (empty for a classic group).
    pub(crate) consumer: ConsumerGroup,
    pub(crate) phase: GroupPhase,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    /// In join order: the first is the leader when the old one is gone.
    members: IndexMap<String, Member>,
    /// Static members: instance id to current member id.
    instances: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with when; they expire after a session.
    pending: HashMap<String, (Instant, Duration)>,
    /// When the join phase ends even if some members have not rejoined.
    join_deadline: Option<Instant>,
    /// Whether the current join phase is the first one of an empty group (it waits out the
    /// initial delay even when every known member has joined).
    initial_join: bool,
    offsets: HashMap<TopicPartition, CommittedOffset>,
    /// When the group last became empty (for offset expiry).
    pub(crate) empty_since: Instant,
    /// Tells the group registry when this coordinator ends (declared last: dropped last).
    end_notice: Option<crate::supervision::EndNotice>,
}

/// How often timers are checked.
const TICK: Duration = Duration::from_millis(100);

impl GroupActor {
    /// A coordinator for `id`; it loads the group's committed offsets as it starts.
    pub fn new(
        id: String,
        config: Arc<GroupConfig>,
        journal: crate::supervision::Current<OffsetsJournal>,
        catalog: Catalog,
    ) -> Self {
        GroupActor {
            id,
            config,
            journal,
            catalog,
            group_type: GroupType::Classic,
            consumer: ConsumerGroup::default(),
            phase: GroupPhase::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: IndexMap::new(),
            instances: HashMap::new(),
            pending: HashMap::new(),
            join_deadline: None,
            initial_join: false,
            offsets: HashMap::new(),
            empty_since: Instant::now(),
            end_notice: None,
        }
    }

    /// Reports this coordinator's end to its supervisor (the group registry), however it ends.
    pub fn with_end_notice(mut self, notice: crate::supervision::EndNotice) -> Self {
        self.end_notice = Some(notice);
        self
    }

    pub(crate) fn unavailable(&self) -> BrokerError {
        BrokerError::GroupUnavailable(self.id.clone())
    }

    /// True when no member of either protocol is in the group.
    pub(crate) fn is_empty(&self) -> bool {
        self.phase == GroupPhase::Empty && self.consumer.is_empty()
    }

    /// The group's state as ListGroups names it.
    fn state_name(&self) -> &'static str {
        match self.group_type {
            GroupType::Consumer if self.phase != GroupPhase::Dead => self.consumer.state().name(),
            _ => self.phase.name(),
        }
    }

    /// Starts (or restarts) the join phase.
    fn prepare_rebalance(&mut self, reason: &str) {
        if self.phase == GroupPhase::PreparingRebalance {
            return;
        }
        info!(group = %self.id, generation = self.generation, %reason, "rebalance");
        spool_metrics::live::rebalance("classic");
        // Members waiting for an assignment of the old generation must rejoin.
        for m in self.members.values_mut() {
            if let Some(reply) = m.sync_reply.take() {
                let _ = reply.send(Err(BrokerError::RebalanceInProgress(self.id.clone())));
            }
        }
        let now = Instant::now();
        self.initial_join = self.phase == GroupPhase::Empty;
        let wait = if self.initial_join {
            self.config.initial_rebalance_delay
        } else {
            self.members
                .values()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or_default()
        };
        self.join_deadline = Some(now + wait);
        self.phase = GroupPhase::PreparingRebalance;
    }

    /// Ends the join phase if every member has rejoined (and no initial delay is running).
    fn maybe_complete_join(&mut self) {
        if self.phase != GroupPhase::PreparingRebalance || self.initial_join {
            return;
        }
        if self.members.values().all(|m| m.join_reply.is_some()) {
            self.complete_join();
        }
    }

    /// Ends the join phase: drops members that did not rejoin, starts a new generation and
    /// answers every waiting JoinGroup.
    fn complete_join(&mut self) {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_reply.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            debug!(group = %self.id, member = %id, "member did not rejoin in time");
            self.remove_member(&id);
        }
        self.join_deadline = None;
        self.initial_join = false;
        self.generation += 1;
        if self.members.is_empty() {
            self.become_empty();
            return;
        }
        let protocol = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let leader = self.leader.clone().unwrap_or_default();
        let protocol_type = self.protocol_type.clone().unwrap_or_default();
        let roster: Vec<MemberMetadata> = self
            .members
            .iter()
            .map(|(id, m)| MemberMetadata {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(&protocol),
            })
            .collect();
        self.protocol = Some(protocol.clone());
        self.phase = GroupPhase::CompletingRebalance;
        info!(group = %self.id, generation = self.generation, members = self.members.len(), %protocol, "generation formed");
        let now = Instant::now();
        for (id, m) in self.members.iter_mut() {
            m.assignment = Bytes::new();
            m.last_heard = now;
            if let Some(reply) = m.join_reply.take() {
                let _ = reply.send(Ok(JoinResult {
                    generation: self.generation,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        roster.clone()
                    } else {
                        Vec::new()
                    },
                    skip_assignment: false,
                }));
            }
        }
    }

    fn become_empty(&mut self) {
        self.phase = GroupPhase::Empty;
        // The protocol type stays, as Kafka lists an empty consumer group as "consumer".
        self.protocol = None;
        self.leader = None;
        self.join_deadline = None;
        self.empty_since = Instant::now();
        info!(group = %self.id, generation = self.generation, "group is empty");
    }

    /// The protocol every member supports that most members prefer.
    fn select_protocol(&self) -> String {
        let mut candidates: Vec<&str> = match self.members.values().next() {
            Some(m) => m.protocols.iter().map(|(n, _)| n.as_str()).collect(),
            None => return String::new(),
        };
        candidates.retain(|c| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == c))
        });
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n.as_str()))
            {
                *votes.entry(n.as_str()).or_default() += 1;
            }
        }
        candidates
            .iter()
            .max_by_key(|c| {
                (
                    votes.get(*c).copied().unwrap_or(0),
                    std::cmp::Reverse(candidates.iter().position(|x| x == *c)),
                )
            })
            .map(|c| c.to_string())
            .unwrap_or_default()
    }

    /// Removes a member, failing whatever it waits on, and rebalances the rest.
    fn remove_member(&mut self, id: &str) {
        let Some(mut m) = self.members.shift_remove(id) else {
            return;
        };
        if let Some(instance) = &m.instance_id {
            if self.instances.get(instance).is_some_and(|cur| cur == id) {
                self.instances.remove(instance);
            }
        }
        if let Some(r) = m.join_reply.take() {
            let _ = r.send(Err(BrokerError::UnknownMemberId(id.to_string())));
        }
        if let Some(r) = m.sync_reply.take() {
            let _ = r.send(Err(BrokerError::UnknownMemberId(id.to_string())));
        }
    }

    /// Removes members and rebalances the rest as the phase requires.
    fn members_left(&mut self, reason: &str) {
        match self.phase {
            GroupPhase::Stable | GroupPhase::CompletingRebalance => {
                if self.members.is_empty() {
                    self.generation += 1;
                    self.become_empty();
                } else {
                    self.prepare_rebalance(reason);
                }
            }
            GroupPhase::PreparingRebalance => {
                if self.members.is_empty() {
                    self.complete_join();
                } else {
                    self.maybe_complete_join();
                }
            }
            GroupPhase::Empty | GroupPhase::Dead => {}
        }
    }

    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), BrokerError> {
        if let Some(instance) = instance_id {
            match self.instances.get(instance) {
                Some(owner) if owner != member_id => {
                    return Err(BrokerError::FencedInstanceId(instance.to_string()))
                }
                None if self.members.contains_key(member_id) => {
                    return Err(BrokerError::FencedInstanceId(instance.to_string()))
                }
                _ => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(BrokerError::UnknownMemberId(member_id.to_string()));
        }
        Ok(())
    }

    fn check_generation(&self, generation: i32) -> Result<(), BrokerError> {
        if generation != self.generation {
            return Err(BrokerError::IllegalGeneration {
                got: generation,
                current: self.generation,
            });
        }
        Ok(())
    }

    fn tick(&mut self, _: &mut Context<Self>) {
        let now = Instant::now();
        if !self.consumer.is_empty()
            && self.consumer.expire(&self.id, now, self.config.consumer) > 0
            && self.consumer.is_empty()
        {
            self.empty_since = Instant::now();
        }
        self.pending
            .retain(|_, (since, session)| now.duration_since(*since) < *session);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                !m.is_waiting() && now.duration_since(m.last_heard) >= m.session_timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        if !expired.is_empty() {
            for id in &expired {
                info!(group = %self.id, member = %id, "member session expired");
                self.remove_member(id);
            }
            self.members_left("member session expired");
        }
        if self.phase == GroupPhase::PreparingRebalance
            && self.join_deadline.is_some_and(|d| now >= d)
        {
            if self.initial_join && self.members.values().any(|m| m.join_reply.is_none()) {
                // The initial delay is over, but a known member is still on its way: wait for
                // it up to the rebalance timeout, as any other join phase does.
                self.initial_join = false;
                let wait = self
                    .members
                    .values()
                    .map(|m| m.rebalance_timeout)
                    .max()
                    .unwrap_or_default();
                self.join_deadline = Some(now + wait);
            } else {
                self.complete_join();
            }
        }
    }

    fn expire_offsets(&mut self, _: &mut Context<Self>) {
        if !self.is_empty() || self.offsets.is_empty() {
            return;
        }
        let retention = self.config.offsets_retention;
        let cutoff = now_ms() - retention.as_millis() as i64;
        let empty_long_enough = self.empty_since.elapsed() >= retention;
        let expired: Vec<TopicPartition> = self
            .offsets
            .iter()
            .filter(|(_, c)| empty_long_enough && c.commit_ms < cutoff)
            .map(|(tp, _)| tp.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        info!(group = %self.id, partitions = expired.len(), "committed offsets expired");
        for tp in &expired {
            self.offsets.remove(tp);
        }
        self.journal.do_send(RecordOffsets {
            group: self.id.clone(),
            changes: expired.into_iter().map(|tp| (tp, None)).collect(),
        });
    }
}

impl Actor for GroupActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // No request is handled before the offsets are loaded.
        let load = self.journal.send(LoadGroupOffsets {
            group: self.id.clone(),
        });
        ctx.wait(load.into_actor(self).map(|res, act, ctx| match res {
            Ok(offsets) => act.offsets = offsets,
            Err(_) => {
                tracing::error!(group = %act.id, "offsets journal unreachable; group stops");
                ctx.stop();
            }
        }));
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
        ctx.run_interval(self.config.offsets_retention_check_interval, |act, ctx| {
            act.expire_offsets(ctx)
        });
    }
}

impl Handler<crate::supervision::StopActor> for GroupActor {
    type Result = ();

    /// Stops the coordinator (shutdown): its offsets are in the journal already, since a commit
    /// is answered only once written there; members rejoin the next coordinator.
    fn handle(&mut self, _: crate::supervision::StopActor, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(debug_assertions)]
impl Handler<crate::faults::InjectPanic> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: crate::faults::InjectPanic, _: &mut Context<Self>) {
        msg.strike(format_args!("the coordinator of group {}", self.id));
    }
}

/// Joins (or rejoins) the group; answered when the join phase ends.
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<Result<JoinResult, BrokerError>>")]
pub struct JoinGroup {
    /// Empty on a first join.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED with its id.
    pub require_known_member_id: bool,
    /// JoinGroup v9+: the client understands `skip_assignment` (KIP-814).
    pub supports_skip_assignment: bool,
}

impl Handler<JoinGroup> for GroupActor {
    type Result = MessageResult<JoinGroup>;

    fn handle(&mut self, msg: JoinGroup, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.join(msg, tx);
        MessageResult(rx)
    }
}

impl GroupActor {
    fn join(&mut self, msg: JoinGroup, reply: JoinReply) {
        if let Err(e) = self.check_join(&msg) {
            let _ = reply.send(Err(e));
            return;
        }
        self.group_type = GroupType::Classic;
        let instance = msg.instance_id.clone();
        let member_id = if msg.member_id.is_empty() {
            let fresh = format!("{}-{}", msg.client_id, uuid::Uuid::new_v4());
            match &instance {
                Some(instance) => match self.instances.get(instance).cloned() {
                    // A static member restarting: it takes over its old slot under a new id.
                    Some(old) => return self.replace_static_member(&old, fresh, msg, reply),
                    None => fresh,
                },
                None if msg.require_known_member_id => {
                    let session = Duration::from_millis(msg.session_timeout_ms.max(0) as u64);
                    self.pending
                        .insert(fresh.clone(), (Instant::now(), session));
                    let _ = reply.send(Err(BrokerError::MemberIdRequired(fresh)));
                    return;
                }
                None => fresh,
            }
        } else {
            let known = self.members.contains_key(&msg.member_id);
            if !known && self.pending.remove(&msg.member_id).is_none() {
                let _ = reply.send(Err(BrokerError::UnknownMemberId(msg.member_id)));
                return;
            }
            if let Err(e) = self.check_static_owner(&msg.member_id, instance.as_deref()) {
                let _ = reply.send(Err(e));
                return;
            }
            msg.member_id.clone()
        };
        let changed = self
            .members
            .get(&member_id)
            .is_none_or(|m| m.protocols != msg.protocols);
        self.upsert_member(&member_id, msg);
        match self.phase {
            GroupPhase::Dead => {
                let _ = reply.send(Err(self.unavailable()));
            }
            GroupPhase::Stable | GroupPhase::CompletingRebalance
                if !changed && self.leader.as_deref() != Some(member_id.as_str()) =>
            {
                // Nothing changed for a follower: it gets the current generation again.
                let _ = reply.send(Ok(self.current_join_result(&member_id)));
            }
            GroupPhase::Empty
            | GroupPhase::Stable
            | GroupPhase::CompletingRebalance
            | GroupPhase::PreparingRebalance => {
                self.park_join(&member_id, reply);
                self.prepare_rebalance("member joined or changed its subscription");
                self.maybe_complete_join();
            }
        }
    }

    fn check_join(&self, msg: &JoinGroup) -> Result<(), BrokerError> {
        if self.phase == GroupPhase::Dead {
            return Err(self.unavailable());
        }
        if !self.consumer.is_empty() {
            return Err(BrokerError::InconsistentGroupProtocol(format!(
                "group {} has members using the consumer protocol (group.protocol=consumer)",
                self.id
            )));
        }
        let (min, max) = (
            self.config.min_session_timeout_ms,
            self.config.max_session_timeout_ms,
        );
        if msg.session_timeout_ms < min || msg.session_timeout_ms > max {
            return Err(BrokerError::InvalidSessionTimeout {
                got: msg.session_timeout_ms,
                min,
                max,
            });
        }
        if msg.protocol_type.is_empty() || msg.protocols.is_empty() {
            return Err(BrokerError::InconsistentGroupProtocol(
                "a join must name a protocol type and at least one protocol".into(),
            ));
        }
        if self.members.is_empty() {
            return Ok(());
        }
        if self.protocol_type.as_deref() != Some(msg.protocol_type.as_str()) {
            return Err(BrokerError::InconsistentGroupProtocol(format!(
                "group uses protocol type '{}', not '{}'",
                self.protocol_type.as_deref().unwrap_or(""),
                msg.protocol_type
            )));
        }
        let others = self
            .members
            .iter()
            .filter(|(id, _)| **id != msg.member_id)
            .map(|(_, m)| m);
        let common = msg.protocols.iter().any(|(name, _)| {
            others
                .clone()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        });
        if !common {
            return Err(BrokerError::InconsistentGroupProtocol(
                "no protocol in common with the group's members".into(),
            ));
        }
        Ok(())
    }

    fn check_static_owner(
        &self,
        member_id: &str,
        instance: Option<&str>,
    ) -> Result<(), BrokerError> {
        match instance.and_then(|i| self.instances.get(i).map(|owner| (i, owner))) {
            Some((i, owner)) if owner != member_id => {
                Err(BrokerError::FencedInstanceId(i.to_string()))
            }
            _ => Ok(()),
        }
    }

    fn upsert_member(&mut self, member_id: &str, msg: JoinGroup) {
        let now = Instant::now();
        if let Some(instance) = &msg.instance_id {
            self.instances
                .insert(instance.clone(), member_id.to_string());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(msg.protocol_type.clone());
        }
        let session_timeout = Duration::from_millis(msg.session_timeout_ms.max(0) as u64);
        let rebalance_timeout = Duration::from_millis(
            msg.rebalance_timeout_ms.max(msg.session_timeout_ms).max(0) as u64,
        );
        match self.members.get_mut(member_id) {
            Some(m) => {
                m.protocols = msg.protocols;
                m.session_timeout = session_timeout;
                m.rebalance_timeout = rebalance_timeout;
                m.last_heard = now;
            }
            None => {
                self.members.insert(
                    member_id.to_string(),
                    Member {
                        instance_id: msg.instance_id,
                        client_id: msg.client_id,
                        client_host: msg.client_host,
                        session_timeout,
                        rebalance_timeout,
                        protocols: msg.protocols,
                        assignment: Bytes::new(),
                        last_heard: now,
                        join_reply: None,
                        sync_reply: None,
                    },
                );
            }
        }
    }

    fn park_join(&mut self, member_id: &str, reply: JoinReply) {
        if let Some(m) = self.members.get_mut(member_id) {
            if let Some(old) = m.join_reply.replace(reply) {
                let _ = old.send(Err(BrokerError::RebalanceInProgress(self.id.clone())));
            }
        }
    }

    /// The answer for a member that rejoins without changing anything.
    fn current_join_result(&self, member_id: &str) -> JoinResult {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        JoinResult {
            generation: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            members: if leader == member_id {
                self.members
                    .iter()
                    .map(|(id, m)| MemberMetadata {
                        member_id: id.clone(),
                        instance_id: m.instance_id.clone(),
                        metadata: m.metadata_for(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            protocol_name: protocol,
            leader,
            member_id: member_id.to_string(),
            skip_assignment: false,
        }
    }

    /// A static member rejoined with no member id: it replaces its old incarnation, which is
    /// fenced. In a stable group whose protocol choice it does not change, no rebalance
    /// happens (KIP-345): it gets the current generation and, on SyncGroup, its old
    /// assignment. A rejoining leader is told so only from JoinGroup v9 (KIP-814), with
    /// `skip_assignment`; before v9 it is named a follower (the response names its old member
    /// id as leader), as Kafka does, so it cannot hand out a new assignment in a stable group.
    fn replace_static_member(&mut self, old: &str, new: String, msg: JoinGroup, reply: JoinReply) {
        let Some(mut member) = self.members.shift_remove(old) else {
            self.instances
                .remove(msg.instance_id.as_deref().unwrap_or_default());
            return self.join(msg, reply);
        };
        info!(group = %self.id, old, new = %new, "static member rejoined under a new member id");
        let fenced = || BrokerError::FencedInstanceId(msg.instance_id.clone().unwrap_or_default());
        if let Some(r) = member.join_reply.take() {
            let _ = r.send(Err(fenced()));
        }
        if let Some(r) = member.sync_reply.take() {
            let _ = r.send(Err(fenced()));
        }
        member.last_heard = Instant::now();
        member.protocols = msg.protocols.clone();
        self.members.insert(new.clone(), member);
        let was_leader = self.leader.as_deref() == Some(old);
        if was_leader {
            self.leader = Some(new.clone());
        }
        if let Some(instance) = &msg.instance_id {
            self.instances.insert(instance.clone(), new.clone());
        }
        let same_protocol = self.protocol.as_deref() == Some(self.select_protocol().as_str());
        if self.phase == GroupPhase::Stable && same_protocol {
            let mut result = self.current_join_result(&new);
            if was_leader && !msg.supports_skip_assignment {
                result.leader = old.to_string();
                result.members.clear();
            }
            result.skip_assignment = was_leader && msg.supports_skip_assignment;
            let _ = reply.send(Ok(result));
            return;
        }
        let joined = JoinGroup {
            member_id: new,
            ..msg
        };
        self.join(joined, reply)
    }
}

/// Sends the member's assignment; the leader's SyncGroup carries everyone's.
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<Result<SyncResult, BrokerError>>")]
pub struct SyncGroup {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    /// SyncGroup v5+: checked against the group's when present.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

impl Handler<SyncGroup> for GroupActor {
    type Result = MessageResult<SyncGroup>;

    fn handle(&mut self, msg: SyncGroup, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.sync(msg, tx);
        MessageResult(rx)
    }
}

impl GroupActor {
    fn sync(&mut self, msg: SyncGroup, reply: SyncReply) {
        let checked = (|| {
            if self.phase == GroupPhase::Dead {
                return Err(self.unavailable());
            }
            self.check_member(&msg.member_id, msg.instance_id.as_deref())?;
            self.check_generation(msg.generation)?;
            let mismatch = |given: &Option<String>, ours: &Option<String>| {
                given.as_ref().is_some_and(|g| Some(g) != ours.as_ref())
            };
            if mismatch(&msg.protocol_type, &self.protocol_type)
                || mismatch(&msg.protocol_name, &self.protocol)
            {
                return Err(BrokerError::InconsistentGroupProtocol(
                    "SyncGroup names another protocol than the generation's".into(),
                ));
            }
            Ok(())
        })();
        if let Err(e) = checked {
            let _ = reply.send(Err(e));
            return;
        }
        let result = |m: &Member, group: &GroupActor| SyncResult {
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol_name: group.protocol.clone().unwrap_or_default(),
            assignment: m.assignment.clone(),
        };
        match self.phase {
            GroupPhase::PreparingRebalance => {
                let _ = reply.send(Err(BrokerError::RebalanceInProgress(self.id.clone())));
            }
            GroupPhase::Stable => {
                let m = &self.members[&msg.member_id];
                let _ = reply.send(Ok(result(m, self)));
            }
            GroupPhase::CompletingRebalance => {
                let is_leader = self.leader.as_deref() == Some(msg.member_id.as_str());
                if let Some(m) = self.members.get_mut(&msg.member_id) {
                    m.last_heard = Instant::now();
                    m.sync_reply = Some(reply);
                }
                if is_leader {
                    let mut given: HashMap<String, Bytes> = msg.assignments.into_iter().collect();
                    for (id, m) in self.members.iter_mut() {
                        m.assignment = given.remove(id).unwrap_or_default();
                    }
                    self.phase = GroupPhase::Stable;
                    info!(group = %self.id, generation = self.generation, "group stable");
                    let answers: Vec<(SyncReply, SyncResult)> = self
                        .members
                        .values_mut()
                        .filter_map(|m| m.sync_reply.take().map(|r| (r, m.assignment.clone())))
                        .map(|(r, assignment)| {
                            (
                                r,
                                SyncResult {
                                    protocol_type: self.protocol_type.clone().unwrap_or_default(),
                                    protocol_name: self.protocol.clone().unwrap_or_default(),
                                    assignment,
                                },
                            )
                        })
                        .collect();
                    for (r, a) in answers {
                        let _ = r.send(Ok(a));
                    }
                }
            }
            GroupPhase::Empty | GroupPhase::Dead => {
                let _ = reply.send(Err(BrokerError::UnknownMemberId(msg.member_id)));
            }
        }
    }
}

/// Keeps a member alive, and tells it when to rejoin.
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct Heartbeat {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
}

impl Handler<Heartbeat> for GroupActor {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: Heartbeat, _: &mut Context<Self>) -> Self::Result {
        if self.phase == GroupPhase::Dead {
            return Err(self.unavailable());
        }
        self.check_member(&msg.member_id, msg.instance_id.as_deref())?;
        self.check_generation(msg.generation)?;
        if let Some(m) = self.members.get_mut(&msg.member_id) {
            m.last_heard = Instant::now();
        }
        if self.phase == GroupPhase::PreparingRebalance {
            return Err(BrokerError::RebalanceInProgress(self.id.clone()));
        }
        Ok(())
    }
}

/// Members leave (LeaveGroup v3+ names several, by member id and/or instance id).
#[derive(Message)]
#[rtype(result = "Vec<Result<String, BrokerError>>")]
pub struct LeaveGroup {
    pub members: Vec<(String, Option<String>)>,
}

impl Handler<LeaveGroup> for GroupActor {
    type Result = Vec<Result<String, BrokerError>>;

    fn handle(&mut self, msg: LeaveGroup, _: &mut Context<Self>) -> Self::Result {
        if self.phase == GroupPhase::Dead {
            return msg
                .members
                .iter()
                .map(|_| Err(self.unavailable()))
                .collect();
        }
        let mut out = Vec::with_capacity(msg.members.len());
        let mut any = false;
        for (member_id, instance) in msg.members {
            let target = match &instance {
                Some(i) => match self.instances.get(i) {
                    Some(owner) if member_id.is_empty() || *owner == member_id => Ok(owner.clone()),
                    Some(_) => Err(BrokerError::FencedInstanceId(i.clone())),
                    None => Err(BrokerError::UnknownMemberId(member_id.clone())),
                },
                None if self.members.contains_key(&member_id) => Ok(member_id.clone()),
                None => Err(BrokerError::UnknownMemberId(member_id.clone())),
            };
            if let Ok(id) = &target {
                info!(group = %self.id, member = %id, "member left");
                self.remove_member(id);
                any = true;
            }
            out.push(target);
        }
        if any {
            self.members_left("member left");
        }
        out
    }
}

/// Commits offsets for a member of the current generation, or for anyone while the group is
/// empty (generation -1: admin tools and consumers that assign partitions themselves).
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct CommitOffsets {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub offsets: Vec<(TopicPartition, CommittedOffset)>,
}

impl Handler<CommitOffsets> for GroupActor {
    type Result = ResponseActFuture<Self, Result<(), BrokerError>>;

    fn handle(&mut self, msg: CommitOffsets, _: &mut Context<Self>) -> Self::Result {
        let check = (|| {
            if self.phase == GroupPhase::Dead {
                return Err(self.unavailable());
            }
            if !self.consumer.is_empty() {
                return self.consumer.check_commit(&msg.member_id, msg.generation);
            }
            if msg.generation < 0 && self.phase == GroupPhase::Empty {
                return Ok(());
            }
            if self.phase == GroupPhase::CompletingRebalance {
                return Err(BrokerError::RebalanceInProgress(self.id.clone()));
            }
            self.check_member(&msg.member_id, msg.instance_id.as_deref())?;
            self.check_generation(msg.generation)
        })();
        if let Err(e) = check {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        if let Some(m) = self.members.get_mut(&msg.member_id) {
            m.last_heard = Instant::now();
        }
        let record = self.journal.send(RecordOffsets {
            group: self.id.clone(),
            changes: msg
                .offsets
                .iter()
                .map(|(tp, c)| (tp.clone(), Some(c.clone())))
                .collect(),
        });
        // The offsets become visible only once they are in the journal, so a failed commit is
        // never read back. The journal answers in order, so commits apply in order.
        Box::pin(record.into_actor(self).map(move |res, act, _| {
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(act.unavailable()),
            }
            act.offsets.extend(msg.offsets);
            Ok(())
        }))
    }
}

/// The committed offsets of the given partitions (`None`: every partition with one).
#[derive(Message)]
#[rtype(result = "Vec<(TopicPartition, Option<CommittedOffset>)>")]
pub struct FetchOffsets {
    pub partitions: Option<Vec<TopicPartition>>,
}

impl Handler<FetchOffsets> for GroupActor {
    type Result = MessageResult<FetchOffsets>;

    fn handle(&mut self, msg: FetchOffsets, _: &mut Context<Self>) -> Self::Result {
        MessageResult(match msg.partitions {
            Some(list) => list
                .into_iter()
                .map(|tp| {
                    let c = self.offsets.get(&tp).cloned();
                    (tp, c)
                })
                .collect(),
            None => {
                let mut all: Vec<_> = self
                    .offsets
                    .iter()
                    .map(|(tp, c)| (tp.clone(), Some(c.clone())))
                    .collect();
                all.sort_by(|a, b| a.0.cmp(&b.0));
                all
            }
        })
    }
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// The group as DescribeGroups and ListGroups show it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group_id: String,
    pub group_type: GroupType,
    /// The classic protocol's phase (Empty for a consumer group).
    pub phase: GroupPhase,
    /// The state as ListGroups names it, for either type.
    pub state: &'static str,
    /// Members of either protocol (`members` lists the classic ones).
    pub member_count: usize,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
    /// Topics with committed offsets, for lag.
    pub offsets: Vec<(TopicPartition, CommittedOffset)>,
}

#[derive(Message)]
#[rtype(result = "GroupDescription")]
pub struct DescribeGroup;

impl Handler<DescribeGroup> for GroupActor {
    type Result = MessageResult<DescribeGroup>;

    fn handle(&mut self, _: DescribeGroup, _: &mut Context<Self>) -> Self::Result {
        let protocol = self.protocol.clone().unwrap_or_default();
        let mut offsets: Vec<_> = self
            .offsets
            .iter()
            .map(|(tp, c)| (tp.clone(), c.clone()))
            .collect();
        offsets.sort_by(|a, b| a.0.cmp(&b.0));
        MessageResult(GroupDescription {
            group_id: self.id.clone(),
            group_type: self.group_type,
            phase: self.phase,
            state: self.state_name(),
            member_count: self.members.len() + self.consumer.member_count(),
            generation: self.generation,
            protocol_type: match self.group_type {
                GroupType::Consumer => "consumer".to_string(),
                GroupType::Classic => self.protocol_type.clone().unwrap_or_default(),
            },
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            protocol: if self.phase == GroupPhase::Stable {
                protocol
            } else {
                String::new()
            },
            offsets,
        })
    }
}

/// Deletes an empty group and its offsets; the registry forgets it afterwards.
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct DeleteGroup;

impl Handler<DeleteGroup> for GroupActor {
    type Result = ResponseActFuture<Self, Result<(), BrokerError>>;

    fn handle(&mut self, _: DeleteGroup, _: &mut Context<Self>) -> Self::Result {
        if self.phase == GroupPhase::Dead {
            return Box::pin(actix::fut::ready(Err(BrokerError::GroupNotFound(
                self.id.clone(),
            ))));
        }
        if !self.is_empty() {
            return Box::pin(actix::fut::ready(Err(BrokerError::NonEmptyGroup(
                self.id.clone(),
            ))));
        }
        self.phase = GroupPhase::Dead;
        let changes: Vec<_> = self.offsets.drain().map(|(tp, _)| (tp, None)).collect();
        info!(group = %self.id, "group deleted");
        let record = self.journal.send(RecordOffsets {
            group: self.id.clone(),
            changes,
        });
        Box::pin(record.into_actor(self).map(|res, act, ctx| {
            // Deleted: not to be restarted by the registry.
            if let Some(notice) = &mut act.end_notice {
                notice.disarm();
            }
            ctx.stop();
            match res {
                Ok(r) => r,
                Err(_) => Err(act.unavailable()),
            }
        }))
    }
}

/// Deletes committed offsets of some partitions (OffsetDelete), refused for topics the group
/// is consuming.
#[derive(Message)]
#[rtype(result = "Result<Vec<(TopicPartition, Result<(), BrokerError>)>, BrokerError>")]
pub struct DeleteOffsets {
    pub partitions: Vec<TopicPartition>,
    /// Topics the group's members subscribe to, decoded by the front end that knows the
    /// protocol's format.
    pub subscribed: HashSet<String>,
}

impl Handler<DeleteOffsets> for GroupActor {
    type Result = ResponseActFuture<
        Self,
        Result<Vec<(TopicPartition, Result<(), BrokerError>)>, BrokerError>,
    >;

    fn handle(&mut self, msg: DeleteOffsets, _: &mut Context<Self>) -> Self::Result {
        if self.phase == GroupPhase::Dead {
            return Box::pin(actix::fut::ready(Err(BrokerError::GroupNotFound(
                self.id.clone(),
            ))));
        }
        let mut out = Vec::new();
        let mut changes = Vec::new();
        let mut subscribed = msg.subscribed;
        subscribed.extend(self.consumer.subscribed_topics());
        for tp in msg.partitions {
            if !self.is_empty() && subscribed.contains(&tp.0) {
                out.push((
                    tp.clone(),
                    Err(BrokerError::GroupSubscribedToTopic {
                        group: self.id.clone(),
                        topic: tp.0.clone(),
                    }),
                ));
                continue;
            }
            if self.offsets.remove(&tp).is_some() {
                changes.push((tp.clone(), None));
            }
            out.push((tp, Ok(())));
        }
        let record = self.journal.send(RecordOffsets {
            group: self.id.clone(),
            changes,
        });
        Box::pin(record.into_actor(self).map(move |res, act, _| match res {
            Ok(Ok(())) => Ok(out),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(act.unavailable()),
        }))
    }
}
