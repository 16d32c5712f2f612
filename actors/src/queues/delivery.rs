//! The delivery state of one queue over its log, as a plain state machine (no actor, no I/O).
//!
//! A queue is a log read with per-record state, in the manner of Kafka's share groups
//! (KIP-932): a record read from the log is *available*; a consumer *acquires* it (its delivery
//! count rises); the consumer then *acknowledges* it, or *releases* it (back to available, as
//! AMQP's requeue does), or it is *archived* (rejected without requeue, expired, over the
//! delivery limit). Acknowledged and archived records are *finished*. `start` is the lowest
//! offset not finished: everything below it is done, and the log before it may be dropped.
//!
//! Records are acquired lowest offset first, so a released record goes back to its place in the
//! queue, as RabbitMQ requeues. Priorities (higher first) order the available records ahead of
//! their offsets.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rangemap::RangeSet;

/// A consumer, as the queue knows it: unique across the broker (see [`next_consumer_id`]).
pub type ConsumerId = u64;

static NEXT_CONSUMER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A fresh consumer id; every front end takes its ids here so they never collide.
pub fn next_consumer_id() -> ConsumerId {
    NEXT_CONSUMER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// What the queue keeps of one record it has read but not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Times it was handed to a consumer (before the current acquisition, if any).
    pub deliveries: u32,
    /// Priority (0 when the queue has none); higher is delivered first.
    pub priority: u8,
    /// Who holds it now, if anyone.
    pub holder: Option<ConsumerId>,
}

/// One record handed to a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    pub offset: u64,
    /// Delivered before (to anyone): AMQP's `redelivered` flag.
    pub redelivered: bool,
    /// How many times it has now been delivered, this time included.
    pub deliveries: u32,
}

/// A change to persist, so that a restart recovers the same state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Change {
    /// These records are finished (acknowledged or archived).
    Finished(Vec<u64>),
    /// Every record in `from..to` is finished: a purge or a retention that removed unread
    /// records, however many, in one small change.
    FinishedRange { from: u64, to: u64 },
    /// These records were handed out and now have these delivery counts.
    Delivered(Vec<(u64, u32)>),
}

impl Change {
    /// `from..to` finished, as one change (none when the range is empty).
    pub fn finished_range(from: u64, to: u64) -> Option<Change> {
        (from < to).then_some(Change::FinishedRange { from, to })
    }

    /// True when the change changes nothing.
    pub fn is_empty(&self) -> bool {
        match self {
            Change::Finished(o) => o.is_empty(),
            Change::FinishedRange { from, to } => from >= to,
            Change::Delivered(d) => d.is_empty(),
        }
    }
}

/// Finished offsets as ranges, in JSON as `[[from, to], ...]` (half-open). A set of single
/// offsets, as journals wrote it before, reads too.
mod finished_ranges {
    use rangemap::RangeSet;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(set: &RangeSet<u64>, s: S) -> Result<S::Ok, S::Error> {
        let spans: Vec<[u64; 2]> = set.iter().map(|r| [r.start, r.end]).collect();
        spans.serialize(s)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        One(u64),
        Span([u64; 2]),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RangeSet<u64>, D::Error> {
        let mut set = RangeSet::new();
        for item in Vec::<Item>::deserialize(d)? {
            match item {
                Item::One(o) => set.insert(o..o + 1),
                Item::Span([from, to]) if from < to => set.insert(from..to),
                Item::Span(_) => {}
            }
        }
        Ok(set)
    }
}

/// What a restart needs: the start, the finished records above it and the delivery counts of
/// the unfinished ones that were ever delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Durable {
    pub start: u64,
    /// Finished records above `start`, as ranges: a purge behind an unacknowledged record
    /// finishes millions of records in one range.
    #[serde(with = "finished_ranges")]
    pub finished: RangeSet<u64>,
    pub delivered: BTreeMap<u64, u32>,
}

/// The delivery state machine of one queue.
#[derive(Debug, Default)]
pub struct DeliveryState {
    start: u64,
    /// Next offset to read from the log; everything in `start..read_to` that is not finished
    /// is in `pending`.
    read_to: u64,
    pending: BTreeMap<u64, Pending>,
    /// Finished records above `start` (the holes that keep `start` from moving), as ranges.
    finished: RangeSet<u64>,
    /// Available records: (reverse priority, offset), so the first is the next to deliver.
    available: BTreeSet<(u8, u64)>,
    /// Delivery counts recovered for records not read again yet.
    recovered: HashMap<u64, u32>,
    held: HashMap<ConsumerId, BTreeSet<u64>>,
    /// Set after a restart of the queue's actor (the broker kept running): recovered records
    /// that were out with consumers are held back, not made available, until their holders
    /// claim them again ([`Self::claim`]) or the hold ends ([`Self::end_hold_back`]).
    hold_back: bool,
    /// Records held back: read, pending, neither available nor held.
    held_back: BTreeSet<u64>,
    /// Claims on records not read yet: the claimant holds them once they are read.
    claims: HashMap<u64, ConsumerId>,
}

impl DeliveryState {
    /// The state a queue resumes with after a restart: records it had handed out and not
    /// finished are available again and count as delivered (AMQP `redelivered`).
    pub fn recover(durable: Durable) -> DeliveryState {
        let mut finished = durable.finished;
        if durable.start > 0 {
            finished.remove(0..durable.start);
        }
        let mut state = DeliveryState {
            start: durable.start,
            read_to: durable.start,
            finished,
            recovered: durable
                .delivered
                .into_iter()
                .filter(|(o, _)| *o >= durable.start)
                .collect(),
            ..DeliveryState::default()
        };
        state.advance_start();
        state
    }

    /// The state a queue resumes with after its actor alone restarted: as [`Self::recover`],
    /// but records that were out with consumers stay out of reach until they are claimed back
    /// or [`Self::end_hold_back`] is called, so that consumers whose connections lived through
    /// the restart keep what they hold (and can still acknowledge it).
    pub fn recover_held_back(durable: Durable) -> DeliveryState {
        DeliveryState {
            hold_back: true,
            ..DeliveryState::recover(durable)
        }
    }

    /// `consumer` says it holds these records (it got them from the queue's previous actor and
    /// has not settled them): while the hold lasts, they become its own again, as if delivered
    /// to it by this state. Only records that were out with a consumer at the restart can be
    /// claimed: not finished ones, not available ones, not ones another consumer holds or
    /// claimed first. Records not read yet are held by `consumer` once read. Answers the
    /// offsets claimed.
    pub fn claim(&mut self, consumer: ConsumerId, offsets: &[u64]) -> Vec<u64> {
        let mut claimed = Vec::with_capacity(offsets.len());
        if !self.hold_back {
            return claimed;
        }
        for &offset in offsets {
            let Some(p) = self.pending.get_mut(&offset) else {
                let unread = offset >= self.read_to && self.recovered.contains_key(&offset);
                if unread && *self.claims.entry(offset).or_insert(consumer) == consumer {
                    claimed.push(offset);
                }
                continue;
            };
            let free = p.holder.is_none() && self.held_back.remove(&offset);
            if free {
                p.holder = Some(consumer);
                self.held.entry(consumer).or_default().insert(offset);
            }
            if p.holder == Some(consumer) {
                claimed.push(offset);
            }
        }
        claimed
    }

    /// Ends the hold after a restart: records nobody claimed back are available again.
    pub fn end_hold_back(&mut self) {
        self.hold_back = false;
        for offset in std::mem::take(&mut self.held_back) {
            if let Some(p) = self.pending.get(&offset) {
                self.available.insert((u8::MAX - p.priority, offset));
            }
        }
    }

    /// The persisted form of the state, for snapshots.
    pub fn durable(&self) -> Durable {
        Durable {
            start: self.start,
            finished: self.finished.clone(),
            delivered: self
                .pending
                .iter()
                .filter(|(_, p)| p.deliveries > 0 || p.holder.is_some())
                .map(|(o, p)| (*o, p.deliveries))
                .chain(self.recovered.iter().map(|(o, d)| (*o, *d)))
                .collect(),
        }
    }

    /// Applies a persisted change while replaying a journal into [`Durable`] form.
    pub fn replay(durable: &mut Durable, change: &Change) {
        match change {
            Change::Finished(offsets) => {
                for o in offsets {
                    durable.delivered.remove(o);
                    if *o >= durable.start {
                        durable.finished.insert(*o..*o + 1);
                    }
                }
            }
            Change::FinishedRange { from, to } => {
                let counted: Vec<u64> =
                    durable.delivered.range(from..to).map(|(o, _)| *o).collect();
                for o in counted {
                    durable.delivered.remove(&o);
                }
                let from = (*from).max(durable.start);
                if from < *to {
                    durable.finished.insert(from..*to);
                }
            }
            Change::Delivered(counts) => durable.delivered.extend(counts.iter().copied()),
        }
        while let Some(r) = durable.finished.get(&durable.start).cloned() {
            durable.finished.remove(r.clone());
            durable.start = r.end;
        }
    }

    /// Lowest unfinished offset.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Next offset to read from the log.
    pub fn read_to(&self) -> u64 {
        self.read_to
    }

    /// Records read and ready to deliver.
    pub fn available_count(&self) -> usize {
        self.available.len()
    }

    /// Records handed out and not yet settled.
    pub fn acquired_count(&self) -> usize {
        self.pending.len() - self.available.len()
    }

    /// Records a consumer holds.
    pub fn held_by(&self, consumer: ConsumerId) -> usize {
        self.held.get(&consumer).map_or(0, BTreeSet::len)
    }

    /// Takes records read from the log (offsets at or after `read_to`, ascending), with their
    /// priorities. Records already finished are skipped. Moves `read_to` past `through`.
    pub fn add_read(&mut self, records: &[(u64, u8)], through: u64) {
        for &(offset, priority) in records {
            if offset < self.read_to || self.finished.contains(&offset) || offset < self.start {
                continue;
            }
            let recovered = self.recovered.remove(&offset);
            let holder = self.claims.remove(&offset);
            self.pending.insert(
                offset,
                Pending {
                    deliveries: recovered.unwrap_or(0),
                    priority,
                    holder,
                },
            );
            if let Some(c) = holder {
                self.held.entry(c).or_default().insert(offset);
            } else if recovered.is_some() && self.hold_back {
                self.held_back.insert(offset);
            } else {
                self.available.insert((u8::MAX - priority, offset));
            }
        }
        // Offsets in the span with no record (compacted away, control batches) are finished.
        self.read_to = self.read_to.max(through);
        self.advance_start();
    }

    /// Marks offsets in the read span that carry no deliverable record as finished.
    pub fn skip(&mut self, offsets: &[u64]) -> Change {
        let done: Vec<u64> = offsets
            .iter()
            .copied()
            .filter(|o| *o >= self.start && !self.pending.contains_key(o))
            .collect();
        for o in &done {
            self.finished.insert(*o..*o + 1);
        }
        self.advance_start();
        Change::Finished(done)
    }

    /// Hands up to `n` available records to `consumer`, best first. Records that reached
    /// `delivery_limit` deliveries are not handed out: they are returned in the second list,
    /// to be archived (dead-lettered or dropped) by the caller with [`Self::archive`].
    pub fn acquire(
        &mut self,
        consumer: ConsumerId,
        n: usize,
        delivery_limit: Option<u32>,
    ) -> (Vec<Acquired>, Vec<u64>) {
        let mut out = Vec::new();
        let mut over_limit = Vec::new();
        while out.len() < n {
            let Some(&(rank, offset)) = self.available.first() else {
                break;
            };
            self.available.remove(&(rank, offset));
            let p = self.pending.get_mut(&offset).expect("available is pending");
            if delivery_limit.is_some_and(|limit| p.deliveries >= limit) {
                over_limit.push(offset);
                p.holder = Some(consumer);
                self.held.entry(consumer).or_default().insert(offset);
                continue;
            }
            out.push(Acquired {
                offset,
                redelivered: p.deliveries > 0,
                deliveries: p.deliveries + 1,
            });
            p.deliveries += 1;
            p.holder = Some(consumer);
            self.held.entry(consumer).or_default().insert(offset);
        }
        (out, over_limit)
    }

    /// The change that records an acquisition, for the journal.
    pub fn delivered_change(acquired: &[Acquired]) -> Change {
        Change::Delivered(acquired.iter().map(|a| (a.offset, a.deliveries)).collect())
    }

    /// Settles records `consumer` holds: acknowledged or archived records finish. Offsets it
    /// does not hold are returned as errors (AMQP's unknown delivery tag is a channel error,
    /// which the caller detects before this point; here they are ignored).
    pub fn finish(&mut self, consumer: ConsumerId, offsets: &[u64]) -> Change {
        let mut done = Vec::with_capacity(offsets.len());
        for &offset in offsets {
            if self.release_hold(consumer, offset) {
                self.pending.remove(&offset);
                self.finished.insert(offset..offset + 1);
                done.push(offset);
            }
        }
        self.advance_start();
        Change::Finished(done)
    }

    /// Finishes records whether or not anyone holds them (expiry, purge, overflow).
    pub fn archive(&mut self, offsets: &[u64]) -> Change {
        let mut done = Vec::with_capacity(offsets.len());
        for &offset in offsets {
            let Some(p) = self.pending.remove(&offset) else {
                continue;
            };
            match p.holder {
                Some(c) => {
                    if let Some(h) = self.held.get_mut(&c) {
                        h.remove(&offset);
                    }
                }
                None => {
                    self.available.remove(&(u8::MAX - p.priority, offset));
                    self.held_back.remove(&offset);
                }
            }
            self.finished.insert(offset..offset + 1);
            done.push(offset);
        }
        self.advance_start();
        Change::Finished(done)
    }

    /// Puts records `consumer` holds back, at their place in the queue (AMQP requeue).
    pub fn release(&mut self, consumer: ConsumerId, offsets: &[u64]) {
        for &offset in offsets {
            if self.release_hold(consumer, offset) {
                let p = self.pending.get_mut(&offset).expect("held is pending");
                p.holder = None;
                self.available.insert((u8::MAX - p.priority, offset));
            }
        }
    }

    /// Puts back everything a consumer holds (it cancelled, its channel closed or died).
    pub fn release_all(&mut self, consumer: ConsumerId) -> Vec<u64> {
        self.claims.retain(|_, c| *c != consumer);
        let held: Vec<u64> = self
            .held
            .remove(&consumer)
            .map(|h| h.into_iter().collect())
            .unwrap_or_default();
        for &offset in &held {
            let p = self.pending.get_mut(&offset).expect("held is pending");
            p.holder = None;
            self.available.insert((u8::MAX - p.priority, offset));
        }
        held
    }

    /// True when `consumer` holds `offset`.
    pub fn holds(&self, consumer: ConsumerId, offset: u64) -> bool {
        self.held
            .get(&consumer)
            .is_some_and(|h| h.contains(&offset))
    }

    /// The next record to deliver: its priority and offset.
    pub fn next_available(&self) -> Option<(u8, u64)> {
        self.available
            .first()
            .map(|(rank, offset)| (u8::MAX - rank, *offset))
    }

    /// True when the record at `offset` is read and not finished.
    pub fn is_pending(&self, offset: u64) -> bool {
        self.pending.contains_key(&offset)
    }

    /// Available offsets, best first (for purges and expiry scans).
    pub fn available_offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.available.iter().map(|(_, o)| *o)
    }

    /// The `n` oldest available offsets (the head of the queue, whatever their priority).
    pub fn oldest_available(&self, n: usize) -> Vec<u64> {
        self.pending
            .iter()
            .filter(|(_, p)| p.holder.is_none())
            .map(|(o, _)| *o)
            .take(n)
            .collect()
    }

    fn release_hold(&mut self, consumer: ConsumerId, offset: u64) -> bool {
        let held = self
            .held
            .get_mut(&consumer)
            .is_some_and(|h| h.remove(&offset));
        if held && self.held.get(&consumer).is_some_and(BTreeSet::is_empty) {
            self.held.remove(&consumer);
        }
        held
    }

    fn advance_start(&mut self) {
        loop {
            if let Some(r) = self.finished.get(&self.start).cloned() {
                self.finished.remove(r.clone());
                self.start = r.end;
            } else if self.start < self.read_to && !self.pending.contains_key(&self.start) {
                // Read, with no record here: nothing to deliver up to the next record, the
                // next finished range or the end of what was read.
                let record = self.pending.range(self.start..).next().map(|(o, _)| *o);
                let finished = self.finished.first().map(|r| r.start);
                let next = [record, finished, Some(self.read_to)]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(self.read_to);
                self.start = next.max(self.start + 1);
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(state: &mut DeliveryState, offsets: std::ops::Range<u64>) {
        let records: Vec<(u64, u8)> = offsets.clone().map(|o| (o, 0)).collect();
        state.add_read(&records, offsets.end);
    }

    #[test]
    fn a_large_finished_range_is_one_change_and_one_range() {
        let to = 7_500_000;
        let change = Change::finished_range(5, to).expect("not empty");
        let mut durable = Durable::default();
        durable.delivered.insert(6, 1);
        DeliveryState::replay(&mut durable, &change);
        // With 0..5 still open, 5..to is held as one range; the counts inside it are gone.
        let ranges: Vec<(u64, u64)> = durable.finished.iter().map(|r| (r.start, r.end)).collect();
        assert_eq!(ranges, [(5, to)]);
        assert!(durable.delivered.is_empty());
        let json = serde_json::to_string(&durable).unwrap();
        assert!(json.len() < 100, "{json}");
        assert_eq!(serde_json::from_str::<Durable>(&json).unwrap(), durable);
        // Acknowledging 0..5 moves the start past the range.
        DeliveryState::replay(&mut durable, &Change::Finished((0..5).collect()));
        assert_eq!((durable.start, durable.finished.is_empty()), (to, true));
        assert!(Change::finished_range(9, 9).is_none());
    }

    #[test]
    fn snapshots_with_finished_offsets_one_by_one_still_read() {
        let old = r#"{"start":2,"finished":[4,5,7],"delivered":{"3":1}}"#;
        let durable: Durable = serde_json::from_str(old).unwrap();
        assert_eq!(
            durable.finished.iter().cloned().collect::<Vec<_>>(),
            [4..6, 7..8]
        );
        let mut s = DeliveryState::recover(durable);
        read(&mut s, 2..9);
        // 2, 3, 6 and 8 are left; 3 was delivered before.
        let (got, _) = s.acquire(1, 10, None);
        let seen: Vec<(u64, bool)> = got.iter().map(|a| (a.offset, a.redelivered)).collect();
        assert_eq!(seen, [(2, false), (3, true), (6, false), (8, false)]);
    }

    #[test]
    fn competing_consumers_get_disjoint_records_and_acks_move_the_start() {
        let mut s = DeliveryState::default();
        read(&mut s, 0..6);
        let (a, _) = s.acquire(1, 2, None);
        let (b, _) = s.acquire(2, 2, None);
        assert_eq!(a.iter().map(|x| x.offset).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(b.iter().map(|x| x.offset).collect::<Vec<_>>(), [2, 3]);
        assert_eq!((s.available_count(), s.acquired_count()), (2, 4));
        // Out of order acks leave a hole; the start moves once it closes.
        s.finish(2, &[2, 3]);
        assert_eq!(s.start(), 0);
        s.finish(1, &[0, 1]);
        assert_eq!(s.start(), 4);
        // Settling a record one does not hold changes nothing.
        assert_eq!(s.finish(1, &[4]), Change::Finished(vec![]));
    }

    #[test]
    fn released_records_go_back_to_their_place_and_count_as_redelivered() {
        let mut s = DeliveryState::default();
        read(&mut s, 0..3);
        let (first, _) = s.acquire(1, 3, None);
        assert!(first.iter().all(|a| !a.redelivered));
        s.release(1, &[1]);
        assert_eq!(s.release_all(1), vec![0, 2]);
        let (again, _) = s.acquire(2, 3, None);
        assert_eq!(
            again.iter().map(|a| a.offset).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert!(again.iter().all(|a| a.redelivered && a.deliveries == 2));
    }

    #[test]
    fn the_delivery_limit_hands_records_back_for_archiving() {
        let mut s = DeliveryState::default();
        read(&mut s, 0..1);
        for _ in 0..2 {
            let (got, over) = s.acquire(1, 1, Some(2));
            assert_eq!((got.len(), over.len()), (1, 0));
            s.release(1, &[0]);
        }
        let (got, over) = s.acquire(1, 1, Some(2));
        assert_eq!((got.len(), &over[..]), (0, &[0][..]));
        s.archive(&over);
        assert_eq!(
            (s.start(), s.available_count(), s.acquired_count()),
            (1, 0, 0)
        );
    }

    #[test]
    fn higher_priorities_go_first() {
        let mut s = DeliveryState::default();
        s.add_read(&[(0, 0), (1, 5), (2, 9), (3, 5)], 4);
        let (got, _) = s.acquire(1, 4, None);
        assert_eq!(
            got.iter().map(|a| a.offset).collect::<Vec<_>>(),
            [2, 1, 3, 0]
        );
    }

    #[test]
    fn a_restart_recovers_finished_records_and_delivery_counts() {
        let mut s = DeliveryState::default();
        let mut durable = Durable::default();
        read(&mut s, 0..5);
        let (got, _) = s.acquire(1, 4, None);
        DeliveryState::replay(&mut durable, &DeliveryState::delivered_change(&got));
        DeliveryState::replay(&mut durable, &s.finish(1, &[0, 2]));
        assert_eq!(durable, s.durable());
        let mut r = DeliveryState::recover(durable);
        assert_eq!(r.start(), 1);
        read(&mut r, 1..5);
        let (again, _) = r.acquire(2, 5, None);
        let seen: Vec<(u64, bool)> = again.iter().map(|a| (a.offset, a.redelivered)).collect();
        assert_eq!(seen, [(1, true), (3, true), (4, false)]);
    }

    #[test]
    fn after_an_actor_restart_held_records_wait_for_their_holders() {
        let mut s = DeliveryState::default();
        let mut durable = Durable::default();
        read(&mut s, 0..6);
        let (got, _) = s.acquire(1, 2, None); // 0, 1 to consumer 1
        DeliveryState::replay(&mut durable, &DeliveryState::delivered_change(&got));
        let (got, _) = s.acquire(2, 2, None); // 2, 3 to consumer 2
        DeliveryState::replay(&mut durable, &DeliveryState::delivered_change(&got));
        DeliveryState::replay(&mut durable, &s.finish(1, &[0]));
        let mut r = DeliveryState::recover_held_back(durable);
        // Consumer 1 claims 1 before the log is read again, and 0 (finished: not claimed).
        assert_eq!(r.claim(1, &[0, 1]), [1]);
        read(&mut r, 1..6);
        // Consumer 2's records are held back; only 4 and 5 are available.
        let (fresh, _) = r.acquire(3, 10, None);
        let offsets: Vec<u64> = fresh.iter().map(|a| a.offset).collect();
        assert_eq!(offsets, [4, 5]);
        assert!(r.holds(1, 1));
        // Consumer 2 claims 3 back (already read); 2 is left and the hold ends.
        assert_eq!(r.claim(2, &[3]), [3]);
        assert_eq!(r.claim(3, &[3]), Vec::<u64>::new(), "held by another");
        assert_eq!(
            r.claim(3, &[7]),
            Vec::<u64>::new(),
            "never out: not claimable"
        );
        r.end_hold_back();
        assert_eq!(r.claim(2, &[2]), Vec::<u64>::new(), "the hold is over");
        let (again, _) = r.acquire(3, 10, None);
        let seen: Vec<(u64, bool)> = again.iter().map(|a| (a.offset, a.redelivered)).collect();
        assert_eq!(seen, [(2, true)]);
        // What was claimed settles as if delivered by this state.
        assert_eq!(r.finish(1, &[1]), Change::Finished(vec![1]));
        assert_eq!(r.finish(2, &[3]), Change::Finished(vec![3]));
        assert_eq!(r.start(), 2);
    }
}
