//! The consumer group protocol of KIP-848 (`group.protocol=consumer`): members heartbeat their
//! subscription, and the coordinator assigns partitions with a server-side assignor and walks
//! each member to its target assignment.
//!
//! The group has an epoch that grows whenever membership, a subscription or a subscribed
//! topic's partition count changes; a new target assignment is computed for each group epoch.
//! Each member reconciles on its own heartbeats: it first revokes what its target no longer
//! holds (keeping its epoch), then moves to the target epoch and receives the target's
//! partitions as their previous owners release them. So no partition is ever owned by two
//! members, and a member that keeps its partitions across a rebalance keeps reading them.
//!
//! This module is the state machine only: [`ConsumerGroup`] holds no actor and does no I/O, and
//! the group actor calls it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::Regex;
use tracing::info;

use crate::assignor::{Assignor, MemberSpec, TopicId, TopicIdPartition, ASSIGNORS};
use crate::catalog::CatalogSnapshot;
use crate::BrokerError;

/// The member epoch a member sends to leave the group.
pub const LEAVE_EPOCH: i32 = -1;
/// The member epoch a static member sends to leave for a while, keeping its assignment.
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// One ConsumerGroupHeartbeat, as the front end decoded it.
#[derive(Debug, Clone)]
pub struct HeartbeatRequest {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    /// `None`: unchanged.
    pub subscribed_topic_names: Option<Vec<String>>,
    /// `None`: unchanged; `Some("")`: no regex.
    pub subscribed_topic_regex: Option<String>,
    /// `None`: unchanged (or the default).
    pub server_assignor: Option<String>,
    /// The partitions the member owns; `None`: unchanged since its last heartbeat.
    pub owned: Option<Vec<TopicIdPartition>>,
    pub client_id: String,
    pub client_host: String,
}

/// What a heartbeat gets back.
#[derive(Debug, Clone)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    /// The member's whole assignment, sent when it changed or the member asked for it.
    pub assignment: Option<Vec<TopicIdPartition>>,
}

/// The group's state, named as Kafka names it for consumer groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerGroupState {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

/// A member as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone)]
pub struct ConsumerMemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: Vec<TopicIdPartition>,
    pub target_assignment: Vec<TopicIdPartition>,
}

/// The group as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone)]
pub struct ConsumerGroupDescription {
    pub state: ConsumerGroupState,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<ConsumerMemberDescription>,
}

struct Member {
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    epoch: i32,
    previous_epoch: i32,
    rebalance_timeout: Duration,
    topic_names: Vec<String>,
    topic_regex: Option<(String, Regex)>,
    assignor: Option<String>,
    /// What the member owns as far as the coordinator knows (and has told it).
    assigned: BTreeSet<TopicIdPartition>,
    /// What it was asked to give up and still owns.
    revoking: BTreeSet<TopicIdPartition>,
    revoke_deadline: Option<Instant>,
    last_heard: Instant,
}

impl Member {
    fn subscribes_to(&self, topic: &str) -> bool {
        self.topic_names.iter().any(|t| t == topic)
            || self
                .topic_regex
                .as_ref()
                .is_some_and(|(_, r)| r.is_match(topic))
    }

    fn owns(&self, tp: &TopicIdPartition) -> bool {
        self.assigned.contains(tp) || self.revoking.contains(tp)
    }
}

/// Timers of the consumer protocol (Kafka's `group.consumer.*` broker configs).
#[derive(Debug, Clone, Copy)]
pub struct ConsumerProtocolTimers {
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
}

/// The consumer-protocol side of one group.
#[derive(Default)]
pub struct ConsumerGroup {
    group_epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    target: HashMap<String, BTreeSet<TopicIdPartition>>,
    /// The subscribed topics as last seen: name to (id, partition count).
    topics: BTreeMap<Arc<str>, (TopicId, i32)>,
    assignor: Option<Assignor>,
}

impl ConsumerGroup {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }

    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.assignment_epoch < self.group_epoch {
            ConsumerGroupState::Assigning
        } else if self.members.iter().any(|(id, m)| {
            m.epoch != STATIC_LEAVE_EPOCH && m.epoch != self.assignment_epoch
                || !m.revoking.is_empty()
                || self.target.get(id).is_some_and(|t| *t != m.assigned)
        }) {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    /// Topics the members subscribe to (by name or by regex), for OffsetDelete.
    pub fn subscribed_topics(&self) -> Vec<String> {
        self.topics.keys().map(|t| t.to_string()).collect()
    }

    /// Checks an offset commit (or fetch) made by a member: it must be in the group, at its
    /// current epoch. Epoch -1 with no member id is an admin or manual-assignment commit,
    /// allowed only while the group is empty.
    pub fn check_commit(&self, member_id: &str, epoch: i32) -> Result<(), BrokerError> {
        if epoch < 0 && member_id.is_empty() {
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(BrokerError::UnknownMemberId(member_id.to_string()))
            };
        }
        let m = self
            .members
            .get(member_id)
            .ok_or_else(|| BrokerError::UnknownMemberId(member_id.to_string()))?;
        if epoch != m.epoch {
            return Err(BrokerError::StaleMemberEpoch {
                got: epoch,
                current: m.epoch,
            });
        }
        Ok(())
    }

    /// Handles one heartbeat: joins, leaves, updates the subscription, recomputes the target
    /// assignment when the group epoch moved, and reconciles the member.
    pub fn heartbeat(
        &mut self,
        group: &str,
        req: HeartbeatRequest,
        catalog: &CatalogSnapshot,
        now: Instant,
    ) -> Result<HeartbeatAnswer, BrokerError> {
        validate(&req)?;
        if req.member_epoch == LEAVE_EPOCH || req.member_epoch == STATIC_LEAVE_EPOCH {
            return Ok(self.leave(group, &req));
        }
        let owned: Option<BTreeSet<TopicIdPartition>> =
            req.owned.as_ref().map(|o| o.iter().copied().collect());
        let full_request = req.rebalance_timeout_ms != -1
            && (req.subscribed_topic_names.is_some() || req.subscribed_topic_regex.is_some())
            && owned.is_some();
        let (member_id, joined) = if req.member_epoch == 0 {
            self.join(group, &req, now)?
        } else {
            self.check_epoch(&req.member_id, req.member_epoch, owned.as_ref())?;
            (req.member_id.clone(), false)
        };
        let changed_subscription = self.update_member(&member_id, &req, now)?;
        let changed_topics = self.refresh_topics(catalog);
        if joined || changed_subscription || changed_topics {
            self.group_epoch += 1;
            spool_metrics::live::rebalance("consumer");
        }
        if self.assignment_epoch < self.group_epoch {
            self.compute_target(group);
        }
        let assignment_changed = self.reconcile(&member_id, owned.as_ref(), now);
        let m = &self.members[&member_id];
        let send = req.member_epoch == 0 || full_request || assignment_changed;
        Ok(HeartbeatAnswer {
            member_id: member_id.clone(),
            member_epoch: m.epoch,
            assignment: send.then(|| m.assigned.iter().copied().collect()),
        })
    }

    fn leave(&mut self, group: &str, req: &HeartbeatRequest) -> HeartbeatAnswer {
        let answer = HeartbeatAnswer {
            member_id: req.member_id.clone(),
            member_epoch: req.member_epoch,
            assignment: None,
        };
        let Some(m) = self.members.get_mut(&req.member_id) else {
            return answer;
        };
        if req.member_epoch == STATIC_LEAVE_EPOCH && m.instance_id.is_some() {
            // A static member leaving for a restart keeps its partitions until its session
            // expires, so its replacement takes them without a rebalance.
            info!(group, member = %req.member_id, "static member left temporarily");
            m.previous_epoch = m.epoch;
            m.epoch = STATIC_LEAVE_EPOCH;
            return answer;
        }
        info!(group, member = %req.member_id, "member left");
        self.remove(&req.member_id);
        answer
    }

    /// A member joining (epoch 0): new, rejoining after being fenced, or a static member
    /// replacing its earlier incarnation. Returns its member id, and whether it is new to the
    /// group (which changes the group epoch).
    fn join(
        &mut self,
        group: &str,
        req: &HeartbeatRequest,
        now: Instant,
    ) -> Result<(String, bool), BrokerError> {
        let member_id = if req.member_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            req.member_id.clone()
        };
        if let Some(instance) = &req.instance_id {
            let previous = self
                .members
                .iter()
                .find(|(id, m)| m.instance_id.as_ref() == Some(instance) && **id != member_id)
                .map(|(id, m)| (id.clone(), m.epoch));
            if let Some((old_id, old_epoch)) = previous {
                if old_epoch != STATIC_LEAVE_EPOCH {
                    return Err(BrokerError::UnreleasedInstanceId(instance.clone()));
                }
                // The new incarnation takes over the old one's place and partitions.
                let mut old = self.members.remove(&old_id).expect("found above");
                old.epoch = old.previous_epoch;
                old.last_heard = now;
                old.client_id = req.client_id.clone();
                old.client_host = req.client_host.clone();
                if let Some(t) = self.target.remove(&old_id) {
                    self.target.insert(member_id.clone(), t);
                }
                info!(group, member = %member_id, instance = %instance, "static member rejoined");
                self.members.insert(member_id.clone(), old);
                return Ok((member_id, false));
            }
        }
        match self.members.get_mut(&member_id) {
            Some(m) => {
                // Rejoining after an error: the member has dropped everything it owned.
                m.epoch = 0;
                m.previous_epoch = 0;
                m.assigned.clear();
                m.revoking.clear();
                m.revoke_deadline = None;
                Ok((member_id, false))
            }
            None => {
                info!(group, member = %member_id, "member joined");
                self.members.insert(
                    member_id.clone(),
                    Member {
                        instance_id: req.instance_id.clone(),
                        rack_id: None,
                        client_id: req.client_id.clone(),
                        client_host: req.client_host.clone(),
                        epoch: 0,
                        previous_epoch: 0,
                        rebalance_timeout: Duration::ZERO,
                        topic_names: Vec::new(),
                        topic_regex: None,
                        assignor: None,
                        assigned: BTreeSet::new(),
                        revoking: BTreeSet::new(),
                        revoke_deadline: None,
                        last_heard: now,
                    },
                );
                Ok((member_id, true))
            }
        }
    }

    /// A member's epoch must be its current one, or the previous one when the answer that
    /// moved it was lost (then it may own no more than it was given).
    fn check_epoch(
        &self,
        member_id: &str,
        epoch: i32,
        owned: Option<&BTreeSet<TopicIdPartition>>,
    ) -> Result<(), BrokerError> {
        let m = self
            .members
            .get(member_id)
            .filter(|m| m.epoch != STATIC_LEAVE_EPOCH)
            .ok_or_else(|| BrokerError::UnknownMemberId(member_id.to_string()))?;
        let lost_answer = epoch == m.previous_epoch
            && epoch < m.epoch
            && owned.is_some_and(|o| o.iter().all(|tp| m.owns(tp)));
        if epoch != m.epoch && !lost_answer {
            return Err(BrokerError::FencedMemberEpoch {
                got: epoch,
                current: m.epoch,
            });
        }
        Ok(())
    }

    /// Applies the request's fields to the member; true when its subscription changed.
    fn update_member(
        &mut self,
        member_id: &str,
        req: &HeartbeatRequest,
        now: Instant,
    ) -> Result<bool, BrokerError> {
        let m = self.members.get_mut(member_id).expect("member exists");
        m.last_heard = now;
        let mut changed = false;
        if req.rebalance_timeout_ms >= 0 {
            m.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms as u64);
        }
        if req.rack_id.is_some() {
            m.rack_id = req.rack_id.clone();
        }
        if let Some(names) = &req.subscribed_topic_names {
            let mut names = names.clone();
            names.sort();
            names.dedup();
            changed |= names != m.topic_names;
            m.topic_names = names;
        }
        if let Some(pattern) = &req.subscribed_topic_regex {
            let current = m.topic_regex.as_ref().map(|(p, _)| p.as_str());
            if pattern.is_empty() {
                changed |= current.is_some();
                m.topic_regex = None;
            } else if current != Some(pattern.as_str()) {
                m.topic_regex = Some((pattern.clone(), compile(pattern)?));
                changed = true;
            }
        }
        if let Some(a) = &req.server_assignor {
            if m.assignor.as_deref() != Some(a.as_str()) {
                m.assignor = Some(a.clone());
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Looks up the subscribed topics; true when one was created, deleted or grown (which
    /// changes the group epoch).
    fn refresh_topics(&mut self, catalog: &CatalogSnapshot) -> bool {
        let topics: BTreeMap<Arc<str>, (TopicId, i32)> = catalog
            .topics
            .iter()
            .filter(|(name, _)| self.members.values().any(|m| m.subscribes_to(name)))
            .map(|(name, t)| (name.clone(), (t.id, t.partitions.len() as i32)))
            .collect();
        if topics == self.topics {
            return false;
        }
        self.topics = topics;
        true
    }

    fn compute_target(&mut self, group: &str) {
        let assignor = self.preferred_assignor();
        let specs: Vec<MemberSpec> = self
            .members
            .iter()
            .map(|(id, m)| MemberSpec {
                member_id: id.clone(),
                topics: self
                    .topics
                    .iter()
                    .filter(|(name, _)| m.subscribes_to(name))
                    .map(|(_, (tid, _))| *tid)
                    .collect(),
                current: self.target.get(id).cloned().unwrap_or_default(),
            })
            .collect();
        let partitions: BTreeMap<TopicId, i32> = self.topics.values().copied().collect();
        self.target = assignor.assign(&specs, &partitions);
        self.assignment_epoch = self.group_epoch;
        self.assignor = Some(assignor);
        info!(
            group,
            epoch = self.group_epoch,
            members = self.members.len(),
            assignor = assignor.name(),
            "target assignment computed"
        );
    }

    /// The assignor most members ask for; the default when none does.
    fn preferred_assignor(&self) -> Assignor {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.assignor {
                *votes.entry(a.as_str()).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(name, n)| (*n, std::cmp::Reverse(*name)))
            .and_then(|(name, _)| Assignor::from_name(name))
            .unwrap_or(Assignor::Uniform)
    }

    /// Moves the member one step towards its target; true when its assignment changed.
    fn reconcile(
        &mut self,
        member_id: &str,
        owned: Option<&BTreeSet<TopicIdPartition>>,
        now: Instant,
    ) -> bool {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let target_epoch = self.assignment_epoch;
        // What the other members still own: given, or being revoked.
        let held_elsewhere: BTreeSet<TopicIdPartition> = self
            .members
            .iter()
            .filter(|(id, _)| *id != member_id)
            .flat_map(|(_, o)| o.assigned.iter().chain(&o.revoking))
            .copied()
            .collect();
        let m = self.members.get_mut(member_id).expect("member exists");
        if !m.revoking.is_empty() {
            // Still revoking until the member reports that it no longer owns those partitions.
            match owned {
                Some(o) if o.is_disjoint(&m.revoking) => {
                    m.revoking.clear();
                    m.revoke_deadline = None;
                }
                _ => return false,
            }
        }
        let to_revoke: BTreeSet<TopicIdPartition> =
            m.assigned.difference(&target).copied().collect();
        if !to_revoke.is_empty() {
            m.assigned.retain(|tp| target.contains(tp));
            m.revoking = to_revoke;
            m.revoke_deadline = Some(now + m.rebalance_timeout);
            return true;
        }
        if m.epoch != target_epoch {
            m.previous_epoch = m.epoch;
            m.epoch = target_epoch;
        }
        // Take the target's partitions that no one else still owns.
        let before = m.assigned.len();
        m.assigned
            .extend(target.difference(&held_elsewhere).copied());
        m.assigned.len() != before
    }

    fn remove(&mut self, member_id: &str) {
        if self.members.remove(member_id).is_some() {
            self.target.remove(member_id);
            self.group_epoch += 1;
            spool_metrics::live::rebalance("consumer");
        }
    }

    /// Expires members whose session ran out and fences members that did not revoke within
    /// their rebalance timeout. Returns how many were removed.
    pub fn expire(&mut self, group: &str, now: Instant, timers: ConsumerProtocolTimers) -> usize {
        let gone: Vec<(String, &'static str)> = self
            .members
            .iter()
            .filter_map(|(id, m)| {
                if now.duration_since(m.last_heard) >= timers.session_timeout {
                    Some((id.clone(), "session expired"))
                } else if m.revoke_deadline.is_some_and(|d| now >= d) {
                    Some((id.clone(), "did not revoke within its rebalance timeout"))
                } else {
                    None
                }
            })
            .collect();
        for (id, why) in &gone {
            info!(group, member = %id, reason = why, "member removed");
            self.remove(id);
        }
        gone.len()
    }

    /// The group as ConsumerGroupDescribe shows it.
    pub fn describe(&self) -> ConsumerGroupDescription {
        ConsumerGroupDescription {
            state: self.state(),
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            assignor: self
                .assignor
                .unwrap_or(Assignor::Uniform)
                .name()
                .to_string(),
            members: self
                .members
                .iter()
                .map(|(id, m)| ConsumerMemberDescription {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.topic_names.clone(),
                    subscribed_topic_regex: m.topic_regex.as_ref().map(|(p, _)| p.clone()),
                    assignment: m.assigned.iter().copied().collect(),
                    target_assignment: self
                        .target
                        .get(id)
                        .map(|t| t.iter().copied().collect())
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// Kafka's checks of a heartbeat's fields, before anything changes.
fn validate(req: &HeartbeatRequest) -> Result<(), BrokerError> {
    let invalid = |m: &str| Err(BrokerError::InvalidRequest(m.to_string()));
    if req.member_epoch < STATIC_LEAVE_EPOCH {
        return invalid("MemberEpoch is invalid.");
    }
    if req.member_epoch != 0 && req.member_id.is_empty() {
        return invalid("MemberId can't be empty.");
    }
    if req.member_epoch == STATIC_LEAVE_EPOCH && req.instance_id.is_none() {
        return invalid("InstanceId can't be null when leaving with epoch -2.");
    }
    if req.member_epoch == 0 {
        if req.rebalance_timeout_ms == -1 {
            return invalid("RebalanceTimeoutMs must be provided in first request.");
        }
        if req.owned.as_ref().is_some_and(|o| !o.is_empty()) {
            return invalid("TopicPartitions must be empty when (re-)joining.");
        }
        let has_regex = req
            .subscribed_topic_regex
            .as_ref()
            .is_some_and(|r| !r.is_empty());
        if req.subscribed_topic_names.is_none() && !has_regex {
            return invalid(
                "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
            );
        }
    }
    if let Some(a) = &req.server_assignor {
        if !ASSIGNORS.contains(&a.as_str()) {
            return Err(BrokerError::UnsupportedAssignor(a.clone()));
        }
    }
    if let Some(pattern) = &req.subscribed_topic_regex {
        if !pattern.is_empty() {
            compile(pattern)?;
        }
    }
    Ok(())
}

/// A subscription regex, matched against whole topic names as Kafka's RE2/J `matches()` does.
fn compile(pattern: &str) -> Result<Regex, BrokerError> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| BrokerError::InvalidRegularExpression {
        pattern: pattern.to_string(),
        reason: e.to_string(),
    })
}
