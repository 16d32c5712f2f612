//! `spool bench`: produce and consume throughput with librdkafka (through rdkafka), against
//! Spool or any Kafka-protocol broker. The comparison harness grows from here.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use crate::{bench_amqp, bench_http, bench_rebalance, bench_wire};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Which client drives the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchClient {
    Librdkafka,
    Wire,
}

/// Options of `spool bench`: `run` and `report` are the workload-file harness
/// (`spool-bench`); the flags alone run the single-purpose measurements below.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<spool_bench::cli::BenchCommand>,
    /// Broker to measure.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Prefix of the topic created for the run (a fresh topic each run).
    #[arg(long, default_value = "spool-bench")]
    topic: String,
    #[arg(long, default_value_t = 16)]
    partitions: i32,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Total MiB to write.
    #[arg(long, default_value_t = 4096)]
    total_mib: u64,
    /// Producer acks: 1 or all.
    #[arg(long, default_value = "1")]
    acks: String,
    /// Create the topic with flush.messages=1: fsync before every acknowledgement.
    #[arg(long)]
    fsync_each: bool,
    /// Client: `librdkafka`, or `wire` (a minimal client that does no per-record work, to see
    /// the broker's own limits).
    #[arg(long, default_value = "librdkafka")]
    client: BenchClient,
    /// Instead of produce and consume, measure this many offset commits (one at a time) with
    /// the wire client, reporting commits per second and latency percentiles.
    #[arg(long, default_value_t = 0)]
    commits: u64,
    /// Skip the consume phase.
    #[arg(long)]
    produce_only: bool,
    /// Instead of produce and consume, measure how long a group of this many consumers takes
    /// to rebalance when one more joins, for each group protocol (see `--partitions`).
    #[arg(long, default_value_t = 0)]
    rebalance: usize,
    /// Instead of Kafka, run the task-queue workload against this AMQP broker, e.g.
    /// amqp://guest:guest@127.0.0.1:5672/%2f (Spool or RabbitMQ).
    #[arg(long)]
    amqp: Option<String>,
    /// AMQP: messages to publish and consume (bodies are --record-size bytes).
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// AMQP: publisher confirms outstanding at most.
    #[arg(long, default_value_t = 1000)]
    confirm_window: usize,
    /// AMQP: competing consumers, each with its own connection.
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// AMQP: publishing connections, each with its own confirms window.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// AMQP: basic.qos prefetch of each consumer.
    #[arg(long, default_value_t = 100)]
    prefetch: u16,
    /// AMQP: x-queue-type to declare (classic, quorum); none by default.
    #[arg(long, default_value = "")]
    queue_type: String,
    /// Instead of Kafka, produce over Spool's HTTP front end at this base URL, e.g.
    /// http://127.0.0.1:8080 (`--messages` records in batches of `--batch`, from
    /// `--publishers` clients).
    #[arg(long)]
    http: Option<String>,
    /// HTTP: records per produce request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// HTTP: create this many partitions (topics of 10) and `--scrape-groups` groups, then time
    /// `/metrics` scrapes, alone and during produce.
    #[arg(long, default_value_t = 0)]
    scrape_partitions: usize,
    #[arg(long, default_value_t = 100)]
    scrape_groups: usize,
    #[arg(long, default_value_t = 50)]
    scrapes: usize,
    /// HTTP: pause between the scrapes taken during produce; 0 scrapes back to back.
    #[arg(long, default_value_t = 0)]
    scrape_interval_ms: u64,
}

struct Counting {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

async fn wire(args: &BenchArgs, topic: &str, records: u64) -> anyhow::Result<()> {
    let acks = match args.acks.as_str() {
        "all" | "-1" => -1,
        other => other.parse().context("--acks is 0, 1 or all")?,
    };
    let produced = bench_wire::produce(
        &args.bootstrap,
        topic,
        args.partitions,
        records,
        args.record_size,
        acks,
    )
    .await?;
    report("produce", &produced);
    if args.produce_only {
        return Ok(());
    }
    let fetched =
        bench_wire::fetch(&args.bootstrap, topic, args.partitions, produced.records).await?;
    report("consume", &fetched);
    Ok(())
}

async fn commits(args: &BenchArgs, topic: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    let hist = bench_wire::commit_latencies(&args.bootstrap, topic, args.commits).await?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "commits: {:.0} commits/s one at a time; latency us p50 {} p99 {} p99.9 {} max {}",
        args.commits as f64 / secs,
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max()
    );
    Ok(())
}

fn report(phase: &str, m: &bench_wire::Moved) {
    println!(
        "{phase}: {:.0} records/s, {:.1} MB/s ({:.1} s)",
        m.records as f64 / m.secs,
        m.bytes as f64 / 1e6 / m.secs,
        m.secs
    );
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(cmd) = args.command {
        return spool_bench::cli::main(cmd);
    }
    if let Some(url) = &args.http {
        return bench_http::run(bench_http::HttpWorkload {
            url: url.trim_end_matches('/').to_string(),
            topic: format!(
                "{}-{}",
                args.topic,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs()
            ),
            partitions: args.partitions,
            record_size: args.record_size,
            batch: args.batch.max(1),
            messages: args.messages,
            publishers: args.publishers.max(1),
            fsync_each: args.fsync_each,
            scrape_partitions: args.scrape_partitions,
            scrape_groups: args.scrape_groups,
            scrapes: args.scrapes,
            scrape_interval_ms: args.scrape_interval_ms,
        });
    }
    if let Some(uri) = &args.amqp {
        return bench_amqp::run(bench_amqp::AmqpWorkload {
            uri: uri.clone(),
            messages: args.messages,
            size: args.record_size,
            confirm_window: args.confirm_window.max(1),
            consumers: args.consumers.max(1),
            publishers: args.publishers.max(1),
            prefetch: args.prefetch,
            queue_type: args.queue_type.clone(),
        });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let topic = format!(
        "{}-{}",
        args.topic,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let records = args.total_mib * 1024 * 1024 / args.record_size as u64;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .create()?;
    let mut new_topic = NewTopic::new(&topic, args.partitions, TopicReplication::Fixed(1));
    if args.fsync_each {
        new_topic = new_topic.set("flush.messages", "1");
    }
    for r in rt.block_on(admin.create_topics(&[new_topic], &AdminOptions::new()))? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    let durability = if args.fsync_each {
        "fsync before every acknowledgement (flush.messages=1)"
    } else {
        "broker default flush policy"
    };
    if args.commits > 0 {
        return rt.block_on(commits(&args, &topic));
    }
    if args.rebalance > 0 {
        return bench_rebalance::run(&args.bootstrap, &topic, args.partitions, args.rebalance);
    }
    println!(
        "topic {topic}: {} partitions, {} records of {} B ({} MiB), acks={}, {durability}, client {:?}",
        args.partitions, records, args.record_size, args.total_mib, args.acks, args.client
    );
    if args.client == BenchClient::Wire {
        return rt.block_on(wire(&args, &topic, records));
    }

    let ctx = Counting {
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    };
    let producer: ThreadedProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("acks", &args.acks)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(ctx)?;
    let mut payload = vec![0u8; args.record_size];
    for (i, b) in payload.iter_mut().enumerate() {
        *b = (i * 31 % 251) as u8;
    }
    let start = Instant::now();
    for i in 0..records {
        payload[..8.min(args.record_size)]
            .copy_from_slice(&i.to_be_bytes()[..8.min(args.record_size)]);
        let partition = (i % args.partitions as u64) as i32;
        loop {
            let rec: BaseRecord<'_, (), [u8]> = BaseRecord::to(&topic)
                .payload(&payload[..])
                .partition(partition);
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err((e, _)) => bail!("produce failed: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(600))?;
    let secs = start.elapsed().as_secs_f64();
    let failed = producer.context().failed.load(Ordering::Relaxed);
    let delivered = producer.context().delivered.load(Ordering::Relaxed);
    if failed > 0 || delivered != records {
        bail!("{failed} records failed, {delivered} of {records} delivered");
    }
    report(
        "produce",
        &bench_wire::Moved {
            records,
            bytes: records * args.record_size as u64,
            secs,
        },
    );
    if args.produce_only {
        return Ok(());
    }

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", "spool-bench")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .set("queued.max.messages.kbytes", "1048576")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..args.partitions {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut bytes = 0u64;
    while counter.load(Ordering::Relaxed) < records {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                bytes += m.payload().map_or(0, |p| p.len() as u64);
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(e)) => bail!("consume failed: {e}"),
            None => bail!(
                "no record for 10 s after {} of {records}",
                counter.load(Ordering::Relaxed)
            ),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    report(
        "consume",
        &bench_wire::Moved {
            records,
            bytes,
            secs,
        },
    );
    Ok(())
}
