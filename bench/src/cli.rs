//! `spool bench run` and `spool bench report`: their options and what they do.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};

use crate::driver::Driver;
use crate::drivers::{amqp::AmqpDriver, http::HttpDriver, kafka::KafkaDriver, nats::NatsDriver};
use crate::result::RunResult;
use crate::runner::{run, RunOptions};
use crate::workload::Workload;

/// The harness's subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Run a workload file through a driver and save the result as JSON.
    Run(RunArgs),
    /// Turn result files into a Markdown table and plots (SVG and PNG).
    Report(ReportArgs),
}

/// Which client drives the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriverKind {
    /// librdkafka: Spool's Kafka front end or any Kafka-protocol broker.
    Kafka,
    /// lapin: Spool's AMQP facade or RabbitMQ.
    Amqp,
    /// async-nats: NATS JetStream (file storage).
    Nats,
    /// reqwest: Spool's HTTP front end (topics and consumer groups, or queues).
    Http,
}

/// Options of `spool bench run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workload file (TOML; see bench/workloads/).
    #[arg(long)]
    pub workload: PathBuf,
    #[arg(long, value_enum)]
    pub driver: DriverKind,
    /// Where the system listens: a Kafka bootstrap (127.0.0.1:9092), an AMQP URI
    /// (amqp://guest:guest@127.0.0.1:5672/%2f), a NATS URL (nats://127.0.0.1:4222) or
    /// Spool's HTTP base URL (http://127.0.0.1:8080).
    /// Defaults to Spool's listener for the driver (NATS: its default port).
    #[arg(long)]
    pub target: Option<String>,
    /// The system's name in results and reports (default: Spool).
    #[arg(long, default_value = "Spool")]
    pub system: String,
    /// amqp: `x-queue-type` of the queues: classic, quorum or stream.
    #[arg(long)]
    pub queue_type: Option<String>,
    /// kafka: create topics with flush.messages=1 (fsync before every acknowledgement).
    #[arg(long)]
    pub fsync_each: bool,
    /// Added to the durability the driver states, for settings of the broker itself
    /// (e.g. "spool --flush-messages 1").
    #[arg(long)]
    pub durability_note: Option<String>,
    /// The broker's process id, to sample its CPU and memory.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// The broker's process name (`spool`, `beam.smp`, `nats-server`), to find its pid.
    #[arg(long, conflicts_with = "broker_pid")]
    pub broker_process: Option<String>,
    /// Overrides the workload's test_seconds.
    #[arg(long)]
    pub test_seconds: Option<u64>,
    /// Overrides the workload's warmup_seconds.
    #[arg(long)]
    pub warmup_seconds: Option<u64>,
    /// Overrides the workload's producer_rate (0: max rate).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Overrides the workload's pattern: the same workload run as a stream and as a queue.
    #[arg(long, value_enum)]
    pub pattern: Option<crate::workload::Pattern>,
    /// Where to save the result (default: results/<workload file>-<system>-<driver>.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress line, even on a terminal.
    #[arg(long)]
    pub quiet: bool,
}

/// Options of `spool bench report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Result files written by `spool bench run`.
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
    /// Directory for report.md and the plots.
    #[arg(long, default_value = "bench-report")]
    pub out: PathBuf,
    /// The report's title.
    #[arg(long, default_value = "Spool bench")]
    pub title: String,
}

impl RunArgs {
    fn driver(&self) -> Arc<dyn Driver> {
        match self.driver {
            DriverKind::Kafka => Arc::new(KafkaDriver {
                bootstrap: self
                    .target
                    .clone()
                    .unwrap_or_else(|| "127.0.0.1:9092".into()),
                fsync_each: self.fsync_each,
            }),
            DriverKind::Amqp => Arc::new(AmqpDriver::new(
                self.target
                    .clone()
                    .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
                self.queue_type.clone(),
            )),
            DriverKind::Nats => Arc::new(NatsDriver {
                url: self
                    .target
                    .clone()
                    .unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
            }),
            DriverKind::Http => Arc::new(HttpDriver::new(
                self.target
                    .clone()
                    .unwrap_or_else(|| "http://127.0.0.1:8080".into()),
            )),
        }
    }
}

/// Runs `spool bench run`: the result is printed and saved; returns it.
pub async fn run_command(args: RunArgs) -> anyhow::Result<RunResult> {
    let mut workload = Workload::load(&args.workload)?;
    if let Some(s) = args.test_seconds {
        workload.test_seconds = s;
    }
    if let Some(s) = args.warmup_seconds {
        workload.warmup_seconds = s;
    }
    if let Some(r) = args.rate {
        workload.producer_rate = r;
    }
    if let Some(p) = args.pattern {
        workload.pattern = p;
    }
    let broker_pid = match (&args.broker_pid, &args.broker_process) {
        (Some(pid), _) => Some(*pid),
        (None, Some(name)) => Some(crate::procstat::find_process(name)?),
        (None, None) => None,
    };
    let driver = args.driver();
    println!(
        "{} / {}: {} ({})",
        args.system,
        driver.name(),
        workload.name,
        driver.durability()
    );
    let result = run(RunOptions {
        workload,
        driver,
        system: args.system.clone(),
        durability_note: args.durability_note.clone(),
        broker_pid,
        progress: args.quiet.then_some(false),
    })
    .await?;
    print_summary(&result);
    let out = args.out.clone().unwrap_or_else(|| {
        let stem = args
            .workload
            .file_stem()
            .map_or("workload".into(), |s| s.to_string_lossy().to_string());
        let system: String = args
            .system
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        PathBuf::from("results").join(format!("{stem}-{system}-{}.json", result.driver))
    });
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&result)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("saved {}", out.display());
    let bad: Vec<_> = result.delivery.iter().filter(|d| d.missing > 0).collect();
    if !bad.is_empty() || result.errors > 0 {
        bail!(
            "{} errors; subscriptions missing messages: {bad:?}",
            result.errors
        );
    }
    Ok(result)
}

/// One paragraph per run, as printed after it.
fn print_summary(r: &RunResult) {
    let (p, e) = (&r.publish_latency_ms, &r.end_to_end_latency_ms);
    println!(
        "publish {:.0} msg/s ({:.1} MB/s), consume {:.0} msg/s ({:.1} MB/s), errors {}",
        r.publish.msg_per_s, r.publish.mb_per_s, r.consume.msg_per_s, r.consume.mb_per_s, r.errors
    );
    println!(
        "publish latency ms: p50 {:.2} p75 {:.2} p95 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        p.p50, p.p75, p.p95, p.p99, p.p999, p.max
    );
    println!(
        "end-to-end latency ms: p50 {:.2} p75 {:.2} p95 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        e.p50, e.p75, e.p95, e.p99, e.p999, e.max
    );
    for (i, d) in r.delivery.iter().enumerate() {
        println!(
            "subscription {i}: {} received, {} duplicates, {} missing",
            d.received, d.duplicates, d.missing
        );
    }
    if let Some(b) = &r.broker {
        println!(
            "broker (pid {}): CPU mean {:.0}% max {:.0}%, RSS max {:.0} MiB",
            b.pid, b.cpu_percent_mean, b.cpu_percent_max, b.rss_mib_max
        );
    }
}

/// Runs a harness subcommand on its own runtime.
pub fn main(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Run(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(run_command(args)).map(drop)
        }
        BenchCommand::Report(args) => {
            let written = crate::report::write(&args.results, &args.out, &args.title)?;
            for f in written {
                println!("wrote {}", f.display());
            }
            Ok(())
        }
    }
}
