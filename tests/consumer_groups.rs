//! Consumer groups with librdkafka (rdkafka): sharing partitions, rebalancing on join and leave,
//! independent groups, committed offsets across a SIGKILL, cooperative-sticky and static
//! membership.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{client_config, create_topic, producer, Spool};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::ClientContext;

/// Group settings for tests: no initial delay, so a group forms as soon as its members join;
/// consumer-protocol members heartbeat (and so reconcile) every 500 ms.
const BROKER_ARGS: &[&str] = &[
    "--group-initial-rebalance-delay-ms",
    "0",
    "--group-consumer-heartbeat-interval-ms",
    "500",
];

/// Produces `values` round-robin over `partitions` partitions, waiting for every ack.
async fn produce(bootstrap: &str, topic: &str, partitions: i32, values: std::ops::Range<u32>) {
    let p = producer(bootstrap, &[("acks", "all")]);
    let sends: Vec<_> = values
        .map(|v| {
            let value = v.to_string();
            let partition = (v % partitions as u32) as i32;
            let p = p.clone();
            let topic = topic.to_string();
            async move {
                p.send(
                    FutureRecord::<(), _>::to(&topic)
                        .payload(&value)
                        .partition(partition),
                    Duration::from_secs(30),
                )
                .await
                .expect("produce acknowledged");
            }
        })
        .collect();
    futures_util::future::join_all(sends).await;
}

/// Counts the rebalances a member goes through.
#[derive(Default)]
struct Counting {
    revocations: AtomicUsize,
    assignments: AtomicUsize,
}

/// What a member has seen.
#[derive(Default)]
struct Seen {
    /// (partition, offset, value)
    records: Vec<(i32, i64, u32)>,
    assignment: BTreeSet<i32>,
    failed_commits: usize,
}

/// A consumer in a group, polling on its own thread and committing each record synchronously
/// before taking the next, so a record handed over in a rebalance is never delivered twice.
struct Member {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    /// While set, the member does not poll: an application stuck processing a record.
    stall: Arc<AtomicBool>,
    counts: Arc<Counting>,
    thread: Option<JoinHandle<()>>,
}

impl Member {
    fn start(bootstrap: &str, group: &str, topic: &str, extra: &[(&str, &str)]) -> Member {
        let mut config = client_config(bootstrap);
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        // With the consumer protocol (KIP-848) the broker sets the session and heartbeat timers.
        if !extra.contains(&("group.protocol", "consumer")) {
            config
                .set("session.timeout.ms", "6000")
                .set("heartbeat.interval.ms", "500");
        }
        for (k, v) in extra {
            config.set(*k, *v);
        }
        let counts = Arc::new(Counting::default());
        let consumer: BaseConsumer<CountingRef> = config
            .create_with_context(CountingRef(counts.clone()))
            .expect("consumer");
        consumer.subscribe(&[topic]).unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let stall = Arc::new(AtomicBool::new(false));
        let (seen2, stop2, stall2) = (seen.clone(), stop.clone(), stall.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                if stall2.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let msg = consumer.poll(Duration::from_millis(100));
                if let Some(Ok(m)) = &msg {
                    let value: u32 = std::str::from_utf8(m.payload().unwrap())
                        .unwrap()
                        .parse()
                        .unwrap();
                    let committed = consumer.commit_message(m, CommitMode::Sync).is_ok();
                    let mut s = seen2.lock().unwrap();
                    s.records.push((m.partition(), m.offset(), value));
                    if !committed {
                        s.failed_commits += 1;
                    }
                }
                let assignment = consumer
                    .assignment()
                    .map(|a| a.elements().iter().map(|e| e.partition()).collect())
                    .unwrap_or_default();
                seen2.lock().unwrap().assignment = assignment;
            }
            // Dropping the consumer closes it: it leaves the group (unless static).
        });
        Member {
            seen,
            stop,
            stall,
            counts,
            thread: Some(thread),
        }
    }

    fn assignment(&self) -> BTreeSet<i32> {
        self.seen.lock().unwrap().assignment.clone()
    }

    fn stop(mut self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// The context handed to librdkafka, sharing the counters with the test.
struct CountingRef(Arc<Counting>);

impl ClientContext for CountingRef {}

impl ConsumerContext for CountingRef {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = r {
            self.0.revocations.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn post_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = r {
            self.0.assignments.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Waits, up to a bound, for a condition on what the members report.
fn wait_for(what: &str, spool: &Spool, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            spool.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The members' assignments are disjoint and cover `partitions`, every member holding some.
fn shared_fairly(members: &[&Member], partitions: i32) -> bool {
    let sets: Vec<BTreeSet<i32>> = members.iter().map(|m| m.assignment()).collect();
    let total: usize = sets.iter().map(|s| s.len()).sum();
    let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
    sets.iter().all(|s| !s.is_empty()) && total == partitions as usize && union.len() == total
}

fn seen_values(members: &[&Member]) -> usize {
    members
        .iter()
        .map(|m| m.seen.lock().unwrap().records.len())
        .sum()
}

/// Every value in `0..n` was consumed; each once, unless a commit failed (then a record may
/// legitimately come again, at least once).
fn check_delivery(seen: &[Seen], n: u32) {
    let mut count: HashMap<u32, usize> = HashMap::new();
    for s in seen {
        for (_, _, v) in &s.records {
            *count.entry(*v).or_default() += 1;
        }
    }
    let missing: Vec<u32> = (0..n).filter(|v| !count.contains_key(v)).collect();
    assert!(missing.is_empty(), "records never consumed: {missing:?}");
    let failed: usize = seen.iter().map(|s| s.failed_commits).sum();
    if failed == 0 {
        let twice: Vec<_> = count.iter().filter(|(_, c)| **c > 1).collect();
        assert!(twice.is_empty(), "records consumed twice: {twice:?}");
    }
}

/// One member, then two, then three share a 6-partition topic, then the third leaves; across it
/// all no partition is read by two members and no record is skipped.
async fn members_share_and_rebalance(group: &str, topic: &str, settings: &[(&str, &str)]) {
    let spool = Spool::start_with(BROKER_ARGS);
    let b = spool.bootstrap();
    create_topic(&b, topic, 6).await;
    produce(&b, topic, 6, 0..600).await;

    let a = Member::start(&b, group, topic, settings);
    wait_for(
        "the first member holding all six partitions",
        &spool,
        || a.assignment().len() == 6,
    );
    let bm = Member::start(&b, group, topic, settings);
    wait_for("two members sharing six partitions", &spool, || {
        shared_fairly(&[&a, &bm], 6)
    });
    wait_for("the first 600 records", &spool, || {
        seen_values(&[&a, &bm]) >= 600
    });

    let c = Member::start(&b, group, topic, settings);
    wait_for("three members sharing six partitions", &spool, || {
        shared_fairly(&[&a, &bm, &c], 6)
    });
    produce(&b, topic, 6, 600..1200).await;
    wait_for("records up to 1200", &spool, || {
        seen_values(&[&a, &bm, &c]) >= 1200
    });

    // C leaves: its partitions move to the others.
    let c_seen = c.stop();
    wait_for("two members sharing six partitions again", &spool, || {
        shared_fairly(&[&a, &bm], 6)
    });
    produce(&b, topic, 6, 1200..1800).await;
    let by_c = c_seen.records.len();
    wait_for("records up to 1800", &spool, || {
        seen_values(&[&a, &bm]) + by_c >= 1800
    });
    let seen = vec![a.stop(), bm.stop(), c_seen];
    check_delivery(&seen, 1800);
    assert!(
        !seen[2].records.is_empty(),
        "the third member consumed nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn members_share_partitions_and_rebalance_on_join_and_leave() {
    members_share_and_rebalance("g-shared", "shared", &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn independent_groups_each_read_everything() {
    let spool = Spool::start_with(BROKER_ARGS);
    let b = spool.bootstrap();
    create_topic(&b, "fanout", 3).await;
    produce(&b, "fanout", 3, 0..300).await;
    let one = Member::start(&b, "g-one", "fanout", &[]);
    let two = Member::start(&b, "g-two", "fanout", &[]);
    wait_for("both groups to read 300 records", &spool, || {
        seen_values(&[&one]) >= 300 && seen_values(&[&two]) >= 300
    });
    check_delivery(&[one.stop()], 300);
    check_delivery(&[two.stop()], 300);
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_offsets_survive_sigkill_and_consumption_resumes_after_them() {
    let mut spool = Spool::start_with(BROKER_ARGS);
    let b = spool.bootstrap();
    create_topic(&b, "durable", 2).await;
    produce(&b, "durable", 2, 0..200).await;
    let m = Member::start(&b, "g-durable", "durable", &[]);
    wait_for("200 records", &spool, || seen_values(&[&m]) >= 200);
    let first = m.stop();
    check_delivery(&[first], 200);

    spool.kill9();
    spool.launch();
    produce(&b, "durable", 2, 200..300).await;
    let m = Member::start(&b, "g-durable", "durable", &[]);
    wait_for("the 100 new records", &spool, || seen_values(&[&m]) >= 100);
    let second = m.stop();
    let values: BTreeSet<u32> = second.records.iter().map(|r| r.2).collect();
    assert_eq!(
        values,
        (200..300).collect(),
        "after restart the group resumes exactly after its commits"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cooperative_sticky_rebalances_incrementally() {
    let spool = Spool::start_with(BROKER_ARGS);
    let b = spool.bootstrap();
    create_topic(&b, "coop", 6).await;
    produce(&b, "coop", 6, 0..600).await;
    let strategy = [("partition.assignment.strategy", "cooperative-sticky")];
    let a = Member::start(&b, "g-coop", "coop", &strategy);
    wait_for("one member with all partitions", &spool, || {
        a.assignment().len() == 6
    });
    let before = a.assignment();
    let bm = Member::start(&b, "g-coop", "coop", &strategy);
    wait_for("two members sharing", &spool, || {
        shared_fairly(&[&a, &bm], 6)
    });
    // Incremental: the first member kept a subset of what it had, and gave up only the rest.
    assert!(a.assignment().is_subset(&before));
    produce(&b, "coop", 6, 600..1200).await;
    wait_for("all 1200 records", &spool, || {
        seen_values(&[&a, &bm]) >= 1200
    });
    check_delivery(&[a.stop(), bm.stop()], 1200);
}

#[tokio::test(flavor = "multi_thread")]
async fn static_members_rejoin_without_a_rebalance() {
    let spool = Spool::start_with(BROKER_ARGS);
    let b = spool.bootstrap();
    create_topic(&b, "static", 4).await;
    let leader = Member::start(&b, "g-static", "static", &[("group.instance.id", "a")]);
    wait_for("the first member to hold every partition", &spool, || {
        leader.assignment().len() == 4
    });
    let other = Member::start(&b, "g-static", "static", &[("group.instance.id", "b")]);
    wait_for("two static members sharing", &spool, || {
        shared_fairly(&[&leader, &other], 4)
    });
    // A static member does not leave the group when it closes, and its next incarnation gets
    // its partitions back with no rebalance: first the follower restarts, then the leader
    // (librdkafka's JoinGroup v5 predates KIP-814's skip_assignment).
    let (other, leader) = (restart_static(&spool, other, &leader, "b").await, leader);
    let (leader, other) = (restart_static(&spool, leader, &other, "a").await, other);
    produce(&b, "static", 4, 0..400).await;
    wait_for("all 400 records", &spool, || {
        seen_values(&[&leader, &other]) >= 400
    });
    check_delivery(&[leader.stop(), other.stop()], 400);
}

/// Stops a static member and starts its next incarnation; checks it gets the same partitions
/// while the other member sees no rebalance.
async fn restart_static(spool: &Spool, gone: Member, stays: &Member, instance: &str) -> Member {
    let partitions = gone.assignment();
    let revocations = stays.counts.revocations.load(Ordering::SeqCst);
    drop(gone.stop());
    let back = Member::start(
        &spool.bootstrap(),
        "g-static",
        "static",
        &[("group.instance.id", instance)],
    );
    wait_for("the restarted member's old partitions", spool, || {
        back.assignment() == partitions
    });
    assert_eq!(
        stays.counts.revocations.load(Ordering::SeqCst),
        revocations,
        "the member that stayed saw a rebalance when {instance} restarted"
    );
    back
}

/// The consumer protocol (KIP-848) with the broker's default (uniform) assignor.
const CONSUMER_PROTOCOL: &[(&str, &str)] = &[("group.protocol", "consumer")];

#[tokio::test(flavor = "multi_thread")]
async fn consumer_protocol_members_share_and_rebalance_on_join_and_leave() {
    members_share_and_rebalance("g-kip848", "kip848", CONSUMER_PROTOCOL).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_protocol_range_assignor_gives_contiguous_ranges() {
    let spool = Spool::start_with(BROKER_ARGS);
    let b = spool.bootstrap();
    create_topic(&b, "ranged", 6).await;
    let range = [
        ("group.protocol", "consumer"),
        ("group.remote.assignor", "range"),
    ];
    let a = Member::start(&b, "g-range", "ranged", &range);
    let bm = Member::start(&b, "g-range", "ranged", &range);
    wait_for("two members sharing six partitions", &spool, || {
        shared_fairly(&[&a, &bm], 6)
    });
    let mut got = [a.assignment(), bm.assignment()];
    got.sort();
    assert_eq!(got, [BTreeSet::from([0, 1, 2]), BTreeSet::from([3, 4, 5])]);
    produce(&b, "ranged", 6, 0..300).await;
    wait_for("all 300 records", &spool, || seen_values(&[&a, &bm]) >= 300);
    check_delivery(&[a.stop(), bm.stop()], 300);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_that_stops_polling_past_max_poll_interval_loses_its_partitions() {
    let spool = Spool::start_with(BROKER_ARGS);
    let b = spool.bootstrap();
    create_topic(&b, "slow", 4).await;
    let poll = [("max.poll.interval.ms", "6000")];
    let slow = Member::start(&b, "g-slow", "slow", &poll);
    let fast = Member::start(&b, "g-slow", "slow", &poll);
    wait_for("two members sharing", &spool, || {
        shared_fairly(&[&slow, &fast], 4)
    });
    // The slow member stops polling (its heartbeats go on in librdkafka's thread). After
    // max.poll.interval.ms the client leaves the group and the other member takes over.
    slow.stall.store(true, Ordering::SeqCst);
    wait_for("the polling member to hold every partition", &spool, || {
        fast.assignment().len() == 4
    });
    produce(&b, "slow", 4, 0..200).await;
    wait_for("all 200 records by the polling member", &spool, || {
        seen_values(&[&fast]) >= 200
    });
    // Polling again, the slow member rejoins and the partitions are shared again.
    slow.stall.store(false, Ordering::SeqCst);
    wait_for("two members sharing again", &spool, || {
        shared_fairly(&[&slow, &fast], 4)
    });
    check_delivery(&[slow.stop(), fast.stop()], 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_protocol_regex_subscription_reads_every_matching_topic() {
    let spool = Spool::start_with(BROKER_ARGS);
    let b = spool.bootstrap();
    create_topic(&b, "re-a", 2).await;
    create_topic(&b, "re-b", 2).await;
    create_topic(&b, "other", 1).await;
    produce(&b, "re-a", 2, 0..100).await;
    produce(&b, "re-b", 2, 100..200).await;
    produce(&b, "other", 1, 1000..1010).await;
    // librdkafka sends a pattern subscription to the broker as SubscribedTopicRegex.
    let m = Member::start(&b, "g-regex", "^re-.*", CONSUMER_PROTOCOL);
    wait_for("both matching topics' 200 records", &spool, || {
        seen_values(&[&m]) >= 200
    });
    let seen = m.stop();
    assert!(
        seen.records.iter().all(|r| r.2 < 200),
        "read a topic the pattern does not match"
    );
    check_delivery(&[seen], 200);
}
