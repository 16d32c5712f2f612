//! The server-side assignors of the consumer group protocol (KIP-848): the coordinator, not a
//! leader member, decides which member reads which partition.
//!
//! `uniform` (the default, as in Kafka) balances partition counts across the members that can
//! take each partition and keeps every partition where it is whenever balance allows, so a
//! member joining moves only the partitions it takes. `range` gives each member a contiguous
//! range of every topic it subscribes to, the first members by id taking one extra when the
//! count does not divide, so members of co-partitioned topics read the same partition numbers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A topic's id, as the consumer protocol names topics.
pub type TopicId = [u8; 16];
/// One partition of a topic.
pub type TopicIdPartition = (TopicId, i32);

/// A member as the assignor sees it.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    pub member_id: String,
    /// The existing topics it subscribes to.
    pub topics: BTreeSet<TopicId>,
    /// Its current target assignment (what stickiness keeps).
    pub current: BTreeSet<TopicIdPartition>,
}

/// The assignors this broker offers, in preference order: the first is the default.
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// A server-side assignor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    Uniform,
    Range,
}

impl Assignor {
    /// The assignor a client names, if this broker has it.
    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    /// Every member's new target assignment. `partitions` gives each subscribed topic's
    /// partition count; members are returned in `members`' order, each with a (maybe empty) set.
    pub fn assign(
        self,
        members: &[MemberSpec],
        partitions: &BTreeMap<TopicId, i32>,
    ) -> HashMap<String, BTreeSet<TopicIdPartition>> {
        match self {
            Assignor::Uniform => uniform(members, partitions),
            Assignor::Range => range(members, partitions),
        }
    }
}

fn range(
    members: &[MemberSpec],
    partitions: &BTreeMap<TopicId, i32>,
) -> HashMap<String, BTreeSet<TopicIdPartition>> {
    let mut out: HashMap<String, BTreeSet<TopicIdPartition>> = members
        .iter()
        .map(|m| (m.member_id.clone(), BTreeSet::new()))
        .collect();
    for (topic, &count) in partitions {
        let mut subscribers: Vec<&str> = members
            .iter()
            .filter(|m| m.topics.contains(topic))
            .map(|m| m.member_id.as_str())
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        subscribers.sort_unstable();
        let n = subscribers.len() as i32;
        let (quota, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, member) in subscribers.iter().enumerate() {
            let take = quota + i32::from((i as i32) < extra);
            let set = out.get_mut(*member).expect("member listed");
            set.extend((next..next + take).map(|p| (*topic, p)));
            next += take;
        }
    }
    out
}

fn uniform(
    members: &[MemberSpec],
    partitions: &BTreeMap<TopicId, i32>,
) -> HashMap<String, BTreeSet<TopicIdPartition>> {
    let mut sorted: Vec<&MemberSpec> = members.iter().collect();
    sorted.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    let mut out: Vec<BTreeSet<TopicIdPartition>> = vec![BTreeSet::new(); sorted.len()];
    let eligible = |i: usize, topic: &TopicId| sorted[i].topics.contains(topic);
    let valid = |tp: &TopicIdPartition| partitions.get(&tp.0).is_some_and(|&n| tp.1 < n);

    // Keep what members have, as long as it still exists, they still subscribe to it, and no
    // one else claimed it first.
    let mut owner: HashMap<TopicIdPartition, usize> = HashMap::new();
    for (i, m) in sorted.iter().enumerate() {
        for tp in &m.current {
            if valid(tp) && eligible(i, &tp.0) && !owner.contains_key(tp) {
                owner.insert(*tp, i);
                out[i].insert(*tp);
            }
        }
    }

    // Hand out the rest, partition number first so one topic spreads over every member, each to
    // the least loaded member that subscribes to its topic.
    let max_count = partitions.values().copied().max().unwrap_or(0);
    for p in 0..max_count {
        for (topic, &count) in partitions {
            let tp = (*topic, p);
            if p >= count || owner.contains_key(&tp) {
                continue;
            }
            let least = (0..sorted.len())
                .filter(|&i| eligible(i, topic))
                .min_by_key(|&i| (out[i].len(), i));
            if let Some(i) = least {
                owner.insert(tp, i);
                out[i].insert(tp);
            }
        }
    }

    // Balance: move a partition from a member to one that can take it and has at least two
    // fewer, until no such move exists. Each move lowers the sum of squared counts, so this
    // ends; it moves as few partitions as balance needs.
    loop {
        let mut by_load: Vec<usize> = (0..sorted.len()).collect();
        by_load.sort_by_key(|&i| std::cmp::Reverse(out[i].len()));
        let mut moved = None;
        'search: for &from in &by_load {
            let load = out[from].len();
            // Highest partitions first, so members keep their low, older partitions.
            for tp in out[from].iter().rev() {
                let target = (0..sorted.len())
                    .filter(|&i| i != from && eligible(i, &tp.0) && out[i].len() + 1 < load)
                    .min_by_key(|&i| (out[i].len(), i));
                if let Some(to) = target {
                    moved = Some((from, to, *tp));
                    break 'search;
                }
            }
        }
        let Some((from, to, tp)) = moved else { break };
        out[from].remove(&tp);
        out[to].insert(tp);
    }

    sorted
        .iter()
        .zip(out)
        .map(|(m, set)| (m.member_id.clone(), set))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: TopicId = [1; 16];
    const B: TopicId = [2; 16];

    fn member(id: &str, topics: &[TopicId], current: &[TopicIdPartition]) -> MemberSpec {
        MemberSpec {
            member_id: id.to_string(),
            topics: topics.iter().copied().collect(),
            current: current.iter().copied().collect(),
        }
    }

    fn counts(a: &HashMap<String, BTreeSet<TopicIdPartition>>) -> Vec<usize> {
        let mut c: Vec<usize> = a.values().map(|s| s.len()).collect();
        c.sort_unstable();
        c
    }

    fn assert_complete(a: &HashMap<String, BTreeSet<TopicIdPartition>>, total: usize) {
        let all: BTreeSet<TopicIdPartition> = a.values().flatten().copied().collect();
        let sum: usize = a.values().map(|s| s.len()).sum();
        assert_eq!(sum, total, "a partition assigned twice");
        assert_eq!(all.len(), total, "a partition left out");
    }

    #[test]
    fn uniform_balances_and_is_sticky_when_a_member_joins() {
        let topics = BTreeMap::from([(A, 64)]);
        let members: Vec<MemberSpec> = (0..8)
            .map(|i| member(&format!("m{i}"), &[A], &[]))
            .collect();
        let first = Assignor::Uniform.assign(&members, &topics);
        assert_complete(&first, 64);
        assert_eq!(counts(&first), vec![8; 8]);

        let mut next: Vec<MemberSpec> = members
            .iter()
            .map(|m| {
                member(
                    &m.member_id,
                    &[A],
                    &first[&m.member_id].iter().copied().collect::<Vec<_>>(),
                )
            })
            .collect();
        next.push(member("m9", &[A], &[]));
        let second = Assignor::Uniform.assign(&next, &topics);
        assert_complete(&second, 64);
        assert_eq!(counts(&second), vec![7, 7, 7, 7, 7, 7, 7, 7, 8]);
        // Only the partitions the newcomer takes move.
        let moved: usize = members
            .iter()
            .map(|m| {
                first[&m.member_id]
                    .difference(&second[&m.member_id])
                    .count()
            })
            .sum();
        assert_eq!(moved, second["m9"].len());
    }

    #[test]
    fn uniform_respects_subscriptions() {
        let topics = BTreeMap::from([(A, 4), (B, 4)]);
        let members = vec![
            member("x", &[A], &[]),
            member("y", &[A, B], &[]),
            member("z", &[B], &[]),
        ];
        let a = Assignor::Uniform.assign(&members, &topics);
        assert_complete(&a, 8);
        assert!(a["x"].iter().all(|tp| tp.0 == A));
        assert!(a["z"].iter().all(|tp| tp.0 == B));
        assert!(counts(&a).iter().max().unwrap() - counts(&a).iter().min().unwrap() <= 1);
    }

    #[test]
    fn uniform_drops_partitions_that_no_longer_exist() {
        let topics = BTreeMap::from([(A, 2)]);
        let members = vec![member("x", &[A], &[(A, 0), (A, 5), (B, 0)])];
        let a = Assignor::Uniform.assign(&members, &topics);
        assert_eq!(a["x"], BTreeSet::from([(A, 0), (A, 1)]));
    }

    #[test]
    fn range_gives_contiguous_ranges_per_topic() {
        let topics = BTreeMap::from([(A, 7), (B, 2)]);
        let members = vec![member("b", &[A, B], &[]), member("a", &[A, B], &[])];
        let a = Assignor::Range.assign(&members, &topics);
        assert_complete(&a, 9);
        assert_eq!(
            a["a"],
            BTreeSet::from([(A, 0), (A, 1), (A, 2), (A, 3), (B, 0)])
        );
        assert_eq!(a["b"], BTreeSet::from([(A, 4), (A, 5), (A, 6), (B, 1)]));
    }

    #[test]
    fn more_members_than_partitions_leaves_some_idle() {
        let topics = BTreeMap::from([(A, 2)]);
        let members: Vec<MemberSpec> = (0..3)
            .map(|i| member(&format!("m{i}"), &[A], &[]))
            .collect();
        for assignor in [Assignor::Uniform, Assignor::Range] {
            let a = assignor.assign(&members, &topics);
            assert_complete(&a, 2);
            assert_eq!(counts(&a), vec![0, 1, 1]);
        }
    }
}
