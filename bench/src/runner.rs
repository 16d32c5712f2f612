//! Runs a workload through a driver: creates topics and subscriptions, starts consumers and
//! producers, warms up, measures, drains, checks that every message arrived, and cleans up.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::driver::{Consumer, Deliver, Driver, Producer, Reading, RpcClient};
use crate::message::{filler, now_us, Header, Seen};
use crate::procstat::ProcessSampler;
use crate::recorder::Recorder;
use crate::result::{BrokerUsage, RunResult, Throughput, TimelinePoint};
use crate::workload::{KeyDistribution, Pattern, Workload};

/// A run's settings beside the workload.
pub struct RunOptions {
    pub workload: Workload,
    pub driver: Arc<dyn Driver>,
    /// The system's name in results ("Spool", "RabbitMQ quorum").
    pub system: String,
    /// Appended to the driver's durability (e.g. the broker's own flush setting).
    pub durability_note: Option<String>,
    /// The broker's process, sampled for CPU and memory when given.
    pub broker_pid: Option<u32>,
    /// Print a progress line every second (default: when stderr is a terminal).
    pub progress: Option<bool>,
}

/// One subscription's delivery bookkeeping.
struct Subscription {
    topic: usize,
    seen: Seen,
    duplicates: AtomicU64,
    received: AtomicU64,
    /// Readiness probes received (see `await_consumers`).
    probes: AtomicU64,
}

/// The producer number of readiness probes: not counted as messages.
const PROBE: u32 = u32::MAX;

/// What producers share: the stop flag and the flow-control limit.
struct Control {
    stop: AtomicBool,
    /// Max rate: producers wait while more than this many messages are unconsumed.
    max_backlog: Option<u64>,
    /// Backlog runs: producers stop after this many messages in all.
    produce_limit: Option<u64>,
    subscriptions: u64,
}

/// Runs the workload; the result holds the measured window's figures.
pub async fn run(opts: RunOptions) -> anyhow::Result<RunResult> {
    let w = opts.workload.clone();
    w.check()?;
    let driver = opts.driver.clone();
    let reading = match w.pattern {
        Pattern::Stream => Reading::Stream,
        Pattern::Queue => Reading::Queue {
            prefetch: w.prefetch,
        },
        Pattern::Rpc => Reading::Rpc,
    };
    let tag = format!("{:06x}", now_us() & 0xff_ffff);
    let topics: Vec<String> = (0..w.topics).map(|t| format!("bench-{tag}-t{t}")).collect();
    let subs: Vec<String> = (0..w.subscriptions_per_topic)
        .map(|s| format!("bench-{tag}-s{s}"))
        .collect();
    for t in &topics {
        driver
            .prepare(t, w.partitions_per_topic, &subs, reading)
            .await
            .with_context(|| format!("preparing {t}"))?;
    }
    let started_unix = now_us() / 1_000_000;
    let rec = Arc::new(Recorder::default());
    let subscriptions: Vec<Arc<Subscription>> = (0..topics.len())
        .flat_map(|t| {
            subs.iter().map(move |_| {
                Arc::new(Subscription {
                    topic: t,
                    seen: Seen::default(),
                    duplicates: AtomicU64::new(0),
                    received: AtomicU64::new(0),
                    probes: AtomicU64::new(0),
                })
            })
        })
        .collect();
    let backlog = w.backlog_mib > 0;
    let ctl = Arc::new(Control {
        stop: AtomicBool::new(false),
        max_backlog: (w.producer_rate == 0 && !backlog && w.pattern != Pattern::Rpc)
            .then_some(w.max_backlog),
        produce_limit: backlog.then(|| w.backlog_messages()),
        subscriptions: subscriptions.len() as u64 / topics.len() as u64,
    });

    // Consumers first, so none misses the start (backlog runs start them later).
    let mut consumers: Vec<Box<dyn Consumer>> = Vec::new();
    if !backlog {
        consumers =
            start_consumers(&*driver, &w, &topics, &subs, reading, &subscriptions, &rec).await?;
        if w.pattern != Pattern::Rpc {
            await_consumers(&*driver, &w, &topics, &subscriptions).await?;
        }
    }

    let mut sampler = opts.broker_pid.map(ProcessSampler::new).transpose()?;
    let progress = opts
        .progress
        .unwrap_or_else(|| std::io::stderr().is_terminal());
    let wall_start_us = now_us();
    let start = Instant::now();
    let mut producers = Vec::new();
    let producers_total = w.topics * w.producers_per_topic;
    for (t, topic) in topics.iter().enumerate() {
        for j in 0..w.producers_per_topic {
            let p = t as u32 * w.producers_per_topic + j;
            let sender = if w.pattern == Pattern::Rpc {
                let client = driver.rpc_client(topic).await?;
                let sub = subscriptions[t * subs.len()].clone();
                Sender::Rpc(client, deliver_to(sub, rec.clone(), producers_total))
            } else {
                Sender::Producer(driver.producer(topic).await?)
            };
            let (w, rec, ctl) = (w.clone(), rec.clone(), ctl.clone());
            producers.push(tokio::spawn(produce(
                p,
                sender,
                w,
                rec,
                ctl,
                start,
                wall_start_us,
            )));
        }
    }

    let mut timeline = Vec::new();
    let mut tick = Ticker::new(rec.clone(), start);
    let (published, publish, usage) = if backlog {
        // Produce the backlog, then drain it: the drain is the measured window's consume side.
        rec.start_window();
        let published = join_producers(producers).await?;
        rec.end_window();
        let publish_seconds = rec.window_seconds();
        let (p, _) = rec.counts();
        rec.start_window();
        if let Some(s) = sampler.as_mut() {
            s.reset();
        }
        consumers =
            start_consumers(&*driver, &w, &topics, &subs, reading, &subscriptions, &rec).await?;
        drain(
            &w,
            &published,
            &subscriptions,
            &mut tick,
            &mut sampler,
            &mut timeline,
            progress,
        )
        .await;
        rec.end_window();
        let usage = sampler.as_ref().map(ProcessSampler::usage);
        let publish = Throughput::new(p, publish_seconds, w.message_size);
        (published, publish, usage)
    } else {
        measure(
            &w,
            &rec,
            &ctl,
            producers,
            &subscriptions,
            tick,
            sampler,
            &mut timeline,
            start,
            progress,
        )
        .await?
    };
    finish(
        opts,
        w,
        driver,
        consumers,
        &topics,
        &subs,
        rec,
        &subscriptions,
        &published,
        publish,
        started_unix,
        usage,
        timeline,
    )
    .await
}

/// Warm-up, then the measured window with a point per second; then producers stop and the
/// consumers drain. Returns what each producer sent, the window's publish throughput and the
/// broker's usage in the window.
#[allow(clippy::too_many_arguments)]
async fn measure(
    w: &Workload,
    rec: &Recorder,
    ctl: &Control,
    producers: Vec<tokio::task::JoinHandle<anyhow::Result<u64>>>,
    subscriptions: &[Arc<Subscription>],
    mut tick: Ticker,
    mut sampler: Option<ProcessSampler>,
    timeline: &mut Vec<TimelinePoint>,
    start: Instant,
    progress: bool,
) -> anyhow::Result<(Vec<u64>, Throughput, Option<BrokerUsage>)> {
    let warmup_end = start + Duration::from_secs(w.warmup_seconds);
    let test_end = warmup_end + Duration::from_secs(w.test_seconds);
    let mut in_window = false;
    loop {
        let now = Instant::now();
        if !in_window && now >= warmup_end {
            rec.start_window();
            if let Some(s) = sampler.as_mut() {
                s.reset();
            }
            in_window = true;
        }
        if now >= test_end {
            break;
        }
        tokio::time::sleep_until((now + Duration::from_secs(1)).min(test_end).into()).await;
        let cpu = sampler.as_mut().and_then(ProcessSampler::sample);
        let point = tick.second(cpu);
        if progress {
            tick.print(&point, test_end.saturating_duration_since(Instant::now()));
        }
        if in_window {
            timeline.push(point);
        }
    }
    rec.end_window();
    let usage = sampler.as_ref().map(ProcessSampler::usage);
    ctl.stop.store(true, Ordering::Release);
    let published = join_producers(producers).await?;
    drain(
        w,
        &published,
        subscriptions,
        &mut tick,
        &mut None,
        &mut Vec::new(),
        progress,
    )
    .await;
    let (p, _) = rec.counts();
    let publish = Throughput::new(p, rec.window_seconds(), w.message_size);
    Ok((published, publish, usage))
}

/// Consumers (or rpc servers) for every subscription of every topic.
async fn start_consumers(
    driver: &dyn Driver,
    w: &Workload,
    topics: &[String],
    subs: &[String],
    reading: Reading,
    subscriptions: &[Arc<Subscription>],
    rec: &Arc<Recorder>,
) -> anyhow::Result<Vec<Box<dyn Consumer>>> {
    let mut out = Vec::new();
    for (t, topic) in topics.iter().enumerate() {
        for (s, sub) in subs.iter().enumerate() {
            let state = subscriptions[t * subs.len() + s].clone();
            for _ in 0..w.consumers_per_subscription {
                let c = if w.pattern == Pattern::Rpc {
                    // Servers only answer; the client counts the replies.
                    let rec = rec.clone();
                    let seen: Deliver = Arc::new(move |_: &[u8]| {
                        let _ = &rec;
                    });
                    driver.rpc_server(topic, seen).await?
                } else {
                    let producers = w.topics * w.producers_per_topic;
                    let deliver = deliver_to(state.clone(), rec.clone(), producers);
                    driver.consumer(topic, sub, reading, deliver).await?
                };
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// Sends one probe per partition to every topic and waits until every subscription has
/// received all of them: then every consumer group has its partitions (a Kafka group's first
/// rebalance takes seconds) and the measured window starts with consumers reading.
async fn await_consumers(
    driver: &dyn Driver,
    w: &Workload,
    topics: &[String],
    subscriptions: &[Arc<Subscription>],
) -> anyhow::Result<()> {
    let probes = u64::from(w.partitions_per_topic);
    for topic in topics {
        let producer = driver.producer(topic).await?;
        for seq in 0..probes {
            let mut payload = vec![0; w.message_size];
            Header {
                due_us: now_us(),
                producer: PROBE,
                seq,
            }
            .write(&mut payload);
            producer
                .send(None, payload)
                .await
                .context("sending a probe")?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while subscriptions
        .iter()
        .any(|s| s.probes.load(Ordering::Acquire) < probes)
    {
        if Instant::now() >= deadline {
            anyhow::bail!("consumers did not receive the readiness probes within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The callback a subscription's consumers call with each payload.
/// A payload that is not the harness's (too short, or naming no producer of this run) counts
/// as an error.
fn deliver_to(sub: Arc<Subscription>, rec: Arc<Recorder>, producers: u32) -> Deliver {
    Arc::new(move |payload: &[u8]| {
        let Some(h) = Header::read(payload) else {
            rec.error();
            return;
        };
        if h.producer == PROBE {
            sub.probes.fetch_add(1, Ordering::AcqRel);
            return;
        }
        if h.producer >= producers || h.seq > rec.sent_total.load(Ordering::Acquire) {
            rec.error();
            return;
        }
        rec.delivered(now_us().saturating_sub(h.due_us));
        if sub.seen.mark(&h) {
            sub.received.fetch_add(1, Ordering::Relaxed);
        } else {
            sub.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// How a producer task sends: a producer, or an rpc client whose replies are deliveries.
enum Sender {
    Producer(Box<dyn Producer>),
    Rpc(Box<dyn RpcClient>, Deliver),
}

impl Sender {
    fn send(
        &self,
        key: Option<Vec<u8>>,
        payload: Vec<u8>,
    ) -> futures_util::future::BoxFuture<'static, anyhow::Result<()>> {
        match self {
            Sender::Producer(p) => p.send(key, payload),
            Sender::Rpc(c, deliver) => {
                let call = c.call(payload);
                let deliver = deliver.clone();
                Box::pin(async move {
                    let reply = call.await?;
                    deliver(&reply);
                    Ok(())
                })
            }
        }
    }
}

/// One producer: sends until stopped, at the workload's rate or as fast as confirms (and the
/// consumers) allow. Returns how many messages it sent.
async fn produce(
    p: u32,
    sender: Sender,
    w: Workload,
    rec: Arc<Recorder>,
    ctl: Arc<Control>,
    start: Instant,
    wall_start_us: u64,
) -> anyhow::Result<u64> {
    let rate = w.rate_per_producer();
    let template = filler(w.message_size, w.payload_randomness);
    let mut inflight = FuturesUnordered::new();
    let mut seq = 0u64;
    let keys = w.partitions_per_topic.max(1) as u64 * 4;
    let done = |r: Option<(Instant, anyhow::Result<()>)>| {
        if let Some((due, r)) = r {
            match r {
                Ok(()) => rec.confirmed(due.elapsed()),
                Err(_) => rec.error(),
            }
        }
    };
    loop {
        if ctl.stop.load(Ordering::Acquire) {
            break;
        }
        if let Some(limit) = ctl.produce_limit {
            if rec.sent_total.fetch_add(1, Ordering::AcqRel) >= limit {
                break;
            }
        }
        if let Some(max) = ctl.max_backlog {
            // Flow control for max-rate runs: the sustainable rate is the one consumers keep.
            while rec.sent_total.load(Ordering::Acquire) * ctl.subscriptions
                > rec.delivered_total.load(Ordering::Acquire) + max * ctl.subscriptions
                && !ctl.stop.load(Ordering::Acquire)
            {
                tokio::select! {
                    r = inflight.next(), if !inflight.is_empty() => done(r),
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
            }
        }
        let due = match rate {
            Some(r) => start + Duration::from_secs_f64(seq as f64 / r),
            None => Instant::now(),
        };
        loop {
            let full = inflight.len() >= w.max_in_flight;
            if !full && Instant::now() >= due {
                break;
            }
            tokio::select! {
                r = inflight.next(), if !inflight.is_empty() => done(r),
                _ = tokio::time::sleep_until(due.into()), if !full => {}
            }
        }
        let mut payload = template.clone();
        let due_us = wall_start_us + due.duration_since(start).as_micros() as u64;
        Header {
            due_us,
            producer: p,
            seq,
        }
        .write(&mut payload);
        let key = match w.key_distribution {
            KeyDistribution::None => None,
            KeyDistribution::RoundRobin => Some(format!("key-{}", seq % keys).into_bytes()),
            KeyDistribution::Random => Some(fastrand::u64(..).to_be_bytes().to_vec()),
        };
        if ctl.produce_limit.is_none() {
            rec.sent_total.fetch_add(1, Ordering::AcqRel);
        }
        let send = sender.send(key, payload);
        inflight.push(async move { (due, send.await) });
        seq += 1;
    }
    while let Some(r) = inflight.next().await {
        done(Some(r));
    }
    Ok(seq)
}

/// Waits for the producers; returns each one's count of messages sent, by producer number.
async fn join_producers(
    producers: Vec<tokio::task::JoinHandle<anyhow::Result<u64>>>,
) -> anyhow::Result<Vec<u64>> {
    let mut out = Vec::with_capacity(producers.len());
    for p in producers {
        out.push(p.await.context("a producer task failed")??);
    }
    Ok(out)
}

/// Waits until every subscription has every message its topic's producers sent, or the
/// drain timeout passes.
async fn drain(
    w: &Workload,
    published: &[u64],
    subscriptions: &[Arc<Subscription>],
    tick: &mut Ticker,
    sampler: &mut Option<ProcessSampler>,
    timeline: &mut Vec<TimelinePoint>,
    progress: bool,
) {
    let per_topic = w.producers_per_topic as usize;
    let expected = |s: &Subscription| -> u64 {
        published[s.topic * per_topic..(s.topic + 1) * per_topic]
            .iter()
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(w.drain_timeout_seconds);
    let mut next_tick = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if subscriptions
            .iter()
            .all(|s| s.received.load(Ordering::Acquire) >= expected(s))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        if Instant::now() >= next_tick {
            next_tick += Duration::from_secs(1);
            let cpu = sampler.as_mut().and_then(ProcessSampler::sample);
            let point = tick.second(cpu);
            if progress {
                tick.print(&point, deadline.saturating_duration_since(Instant::now()));
            }
            timeline.push(point);
        }
    }
    if progress {
        eprintln!();
    }
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    opts: RunOptions,
    w: Workload,
    driver: Arc<dyn Driver>,
    consumers: Vec<Box<dyn Consumer>>,
    topics: &[String],
    subs: &[String],
    rec: Arc<Recorder>,
    subscriptions: &[Arc<Subscription>],
    published: &[u64],
    publish: Throughput,
    started_unix: u64,
    broker: Option<BrokerUsage>,
    timeline: Vec<TimelinePoint>,
) -> anyhow::Result<RunResult> {
    let (_, consumed) = rec.counts();
    let consume = Throughput::new(consumed, rec.window_seconds(), w.message_size);
    let (publish_latency_ms, end_to_end_latency_ms) = rec.percentiles();
    for c in consumers {
        c.close().await.context("closing a consumer")?;
    }
    let per_topic = w.producers_per_topic as usize;
    let delivery = subscriptions
        .iter()
        .map(|s| {
            // Only this topic's producers count for this subscription.
            let mut expected = vec![0; published.len()];
            let range = s.topic * per_topic..(s.topic + 1) * per_topic;
            expected[range.clone()].copy_from_slice(&published[range]);
            s.seen
                .check(&expected, s.duplicates.load(Ordering::Acquire))
        })
        .collect();
    for t in topics {
        if let Err(e) = driver.cleanup(t, subs).await {
            eprintln!("cleaning up {t}: {e:#}");
        }
    }
    let durability = match &opts.durability_note {
        Some(n) => format!("{}; {n}", driver.durability()),
        None => driver.durability(),
    };
    Ok(RunResult {
        system: opts.system,
        driver: driver.name().to_string(),
        durability,
        workload: w,
        machine: machine(),
        started_unix,
        publish,
        consume,
        publish_latency_ms,
        end_to_end_latency_ms,
        errors: rec.errors.load(Ordering::Acquire),
        delivery,
        broker,
        timeline,
    })
}

/// The machine, as results state it: cores, memory, CPU model.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB")
}

/// Per-second rates for the timeline and the progress line.
struct Ticker {
    rec: Arc<Recorder>,
    start: Instant,
    last: (Instant, u64, u64),
}

impl Ticker {
    fn new(rec: Arc<Recorder>, start: Instant) -> Ticker {
        Ticker {
            rec,
            start,
            last: (start, 0, 0),
        }
    }

    fn second(&mut self, broker_cpu_percent: Option<f64>) -> TimelinePoint {
        let now = Instant::now();
        let sent = self.rec.sent_total.load(Ordering::Acquire);
        let got = self.rec.delivered_total.load(Ordering::Acquire);
        let secs = now.duration_since(self.last.0).as_secs_f64().max(1e-3);
        let (publish_p99_ms, end_to_end_p99_ms) = self.rec.take_second();
        let point = TimelinePoint {
            second: now.duration_since(self.start).as_secs(),
            publish_msg_per_s: sent.saturating_sub(self.last.1) as f64 / secs,
            consume_msg_per_s: got.saturating_sub(self.last.2) as f64 / secs,
            publish_p99_ms,
            end_to_end_p99_ms,
            broker_cpu_percent,
        };
        self.last = (now, sent, got);
        point
    }

    fn print(&self, p: &TimelinePoint, remaining: Duration) {
        eprint!(
            "\r{:>4} s  publish {:>9.0} msg/s  consume {:>9.0} msg/s  p99 publish {:>7.2} ms  end-to-end {:>7.2} ms  {:>4} s left   ",
            p.second,
            p.publish_msg_per_s,
            p.consume_msg_per_s,
            p.publish_p99_ms,
            p.end_to_end_p99_ms,
            remaining.as_secs()
        );
    }
}
