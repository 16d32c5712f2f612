//! `spool bench --rebalance N`: how long a consumer group of N members takes to share the topic
//! again when one more member joins, for each group protocol librdkafka speaks: classic eager
//! (range), classic cooperative-sticky, and the consumer protocol of KIP-848.
//!
//! Every member is a librdkafka consumer on its own thread with the client's default timers. The
//! clock starts when the newcomer subscribes and stops when all N+1 members hold disjoint,
//! non-empty assignments covering every partition. Rebalance callbacks are counted per member,
//! which shows how many rounds the protocol took.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::bail;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::ClientContext;

/// The protocols measured, with the client settings that select them.
const PROTOCOLS: &[(&str, &[(&str, &str)])] = &[
    (
        "classic eager (range)",
        &[("partition.assignment.strategy", "range")],
    ),
    (
        "classic cooperative-sticky",
        &[("partition.assignment.strategy", "cooperative-sticky")],
    ),
    (
        "consumer (KIP-848, uniform)",
        &[("group.protocol", "consumer")],
    ),
];

#[derive(Default)]
struct Events {
    assigns: AtomicUsize,
    revokes: AtomicUsize,
}

struct Ctx(Arc<Events>);

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = r {
            self.0.revokes.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn post_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = r {
            self.0.assigns.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// One group member polling on its own thread, publishing its assignment.
struct Member {
    assignment: Arc<Mutex<BTreeSet<i32>>>,
    events: Arc<Events>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Member {
    fn start(
        bootstrap: &str,
        group: &str,
        topic: &str,
        settings: &[(&str, &str)],
    ) -> anyhow::Result<Member> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false");
        for (k, v) in settings {
            config.set(*k, *v);
        }
        let events = Arc::new(Events::default());
        let consumer: BaseConsumer<Ctx> = config.create_with_context(Ctx(events.clone()))?;
        consumer.subscribe(&[topic])?;
        let assignment = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (assignment.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let _ = consumer.poll(Duration::from_millis(5));
                if let Ok(tpl) = consumer.assignment() {
                    *a.lock().unwrap() = tpl.elements().iter().map(|e| e.partition()).collect();
                }
            }
        });
        Ok(Member {
            assignment,
            events,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// True when the members' assignments are disjoint, non-empty and cover every partition.
fn shared(members: &[Member], partitions: i32) -> bool {
    let sets: Vec<BTreeSet<i32>> = members
        .iter()
        .map(|m| m.assignment.lock().unwrap().clone())
        .collect();
    let total: usize = sets.iter().map(|s| s.len()).sum();
    let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
    sets.iter().all(|s| !s.is_empty()) && total == partitions as usize && union.len() == total
}

fn wait_shared(members: &[Member], partitions: i32, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !shared(members, partitions) {
        if start.elapsed() > limit {
            bail!("the group did not settle within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(start.elapsed())
}

/// Runs the join scenario for each protocol and prints one line per protocol.
pub fn run(bootstrap: &str, topic: &str, partitions: i32, members: usize) -> anyhow::Result<()> {
    println!(
        "rebalance: {members} members on {partitions} partitions, then one joins (librdkafka defaults)"
    );
    let run_id = std::process::id();
    for (name, settings) in PROTOCOLS {
        let group = format!(
            "bench-rebalance-{run_id}-{}",
            name.split(' ').next().unwrap_or("g")
        );
        let mut group_members = Vec::with_capacity(members + 1);
        for _ in 0..members {
            group_members.push(Member::start(bootstrap, &group, topic, settings)?);
        }
        let formed = wait_shared(&group_members, partitions, Duration::from_secs(120))?;
        let before: Vec<(usize, usize)> = group_members
            .iter()
            .map(|m| {
                (
                    m.events.assigns.load(Ordering::SeqCst),
                    m.events.revokes.load(Ordering::SeqCst),
                )
            })
            .collect();
        let start = Instant::now();
        group_members.push(Member::start(bootstrap, &group, topic, settings)?);
        wait_shared(&group_members, partitions, Duration::from_secs(120))?;
        let took = start.elapsed();
        // Assign callbacks per existing member during the join: the protocol's rounds.
        let rounds: BTreeSet<usize> = group_members[..members]
            .iter()
            .zip(&before)
            .map(|(m, (a, _))| m.events.assigns.load(Ordering::SeqCst) - a)
            .collect();
        let revoked: usize = group_members[..members]
            .iter()
            .zip(&before)
            .map(|(m, (_, r))| m.events.revokes.load(Ordering::SeqCst) - r)
            .sum();
        println!(
            "{name}: group formed in {:.2} s; join settled in {:.3} s; assign callbacks per existing member {:?}; revoke callbacks {}",
            formed.as_secs_f64(),
            took.as_secs_f64(),
            rounds,
            revoked
        );
    }
    Ok(())
}
