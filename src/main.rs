//! The `spool` command: `spool serve` runs the broker; `spool bench` measures one.

mod bench;
mod bench_amqp;
mod bench_http;
mod bench_rebalance;
mod bench_wire;
mod cluster_cli;
mod config;
mod groups_cli;
mod log_limit;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use spool_actors::cluster_member;
use spool_actors::consumer_group::ConsumerProtocolTimers;
use spool_actors::group::GroupConfig;
use spool_actors::{Broker, BrokerConfig};
use spool_amqp::AmqpConfig;
use spool_cluster::metadata::NodeRecord;
use spool_cluster::{Quorum, QuorumConfig};
use spool_kafka::KafkaConfig;
use spool_store::LogConfig;
use tracing::info;

use crate::config::ServeArgs;

/// mimalloc instead of glibc's malloc: the broker allocates per message on every path (frames,
/// records, actor messages), and glibc's allocator took about a fifth of its CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Spool: one durable partitioned log, served over the Kafka protocol.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (embedded storage; no external service).
    Serve(Box<ServeArgs>),
    /// Measure brokers: `run` a workload file through a driver (kafka, amqp), `report` results;
    /// or the single-purpose measurements of the flags.
    Bench(Box<bench::BenchArgs>),
    /// List, describe (with lag) and reset the offsets of consumer groups on a running broker.
    Groups(groups_cli::GroupsArgs),
    /// The cluster a running node belongs to: `status` lists its nodes and the controller.
    Cluster(cluster_cli::ClusterArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(args.with_file()?),
        Command::Bench(args) => bench::run(*args),
        Command::Groups(args) => groups_cli::run(args),
        Command::Cluster(args) => cluster_cli::run(args),
    }
}

fn init_logging(level: &str, per_second: u32) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let asked = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    let mut filter = tracing_subscriber::EnvFilter::try_new(&asked)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // openraft narrates every election and tick at info; its warnings are what operators need
    // (unless they ask for more by name).
    if !asked.contains("openraft") {
        filter = filter.add_directive("openraft=warn".parse().expect("a directive"));
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(log_limit::RateLimitLayer::new(per_second))
        .with(
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
    // A panicking actor is restarted by its supervisor; its panic is logged through tracing,
    // so it is rate-limited like any line (the default hook writes straight to stderr, with a
    // whole backtrace each time under RUST_BACKTRACE).
    // Only the first panic carries its backtrace (when RUST_BACKTRACE asks for one).
    static BACKTRACE_SHOWN: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        if BACKTRACE_SHOWN.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::error!(%thread, "panic: {info}");
        } else {
            let backtrace = std::backtrace::Backtrace::capture();
            tracing::error!(%thread, %backtrace, "panic: {info}");
        }
    }));
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(
        args.log_level.as_deref().unwrap_or("info"),
        args.log_rate_limit.unwrap_or(10),
    );
    let shutdown_timeout = Duration::from_millis(args.shutdown_timeout_ms.unwrap_or(10_000));
    // The network runtime, and the signal handlers before any listener is bound: a SIGTERM that
    // arrives while the broker starts is answered with the orderly shutdown, not the default
    // disposition (which would end the process at once).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let signals = runtime.block_on(async { ShutdownSignals::install() })?;
    let kafka_addr: SocketAddr = args
        .kafka_addr
        .unwrap_or_else(|| "0.0.0.0:9092".parse().unwrap());
    let listener = std::net::TcpListener::bind(kafka_addr)
        .with_context(|| format!("binding the Kafka listener to {kafka_addr}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let amqp_addr: SocketAddr = args
        .amqp_addr
        .unwrap_or_else(|| "0.0.0.0:5672".parse().unwrap());
    let amqp_listener = std::net::TcpListener::bind(amqp_addr)
        .with_context(|| format!("binding the AMQP listener to {amqp_addr}"))?;
    amqp_listener.set_nonblocking(true)?;
    let mut amqp_config = amqp_config(&args)?;
    let http_addr: SocketAddr = args
        .http_addr
        .unwrap_or_else(|| "0.0.0.0:8080".parse().unwrap());
    let http_listener = std::net::TcpListener::bind(http_addr)
        .with_context(|| format!("binding the HTTP listener to {http_addr}"))?;
    let (advertised_host, advertised_port) = match &args.advertised_kafka_addr {
        Some(a) => {
            let (h, p) = a
                .rsplit_once(':')
                .context("--advertised-kafka-addr must be host:port")?;
            (h.to_string(), p.parse().context("advertised port")?)
        }
        None if bound.ip().is_unspecified() => ("127.0.0.1".to_string(), bound.port()),
        None => (bound.ip().to_string(), bound.port()),
    };
    let mut log_defaults = LogConfig::default();
    let overrides = [
        ("flush.messages", args.flush_messages.map(|v| v.to_string())),
        ("flush.ms", args.flush_ms.map(|v| v.to_string())),
        ("segment.bytes", args.segment_bytes.map(|v| v.to_string())),
        ("retention.ms", args.retention_ms.map(|v| v.to_string())),
        (
            "retention.bytes",
            args.retention_bytes.map(|v| v.to_string()),
        ),
        (
            "max.message.bytes",
            args.max_message_bytes.map(|v| v.to_string()),
        ),
    ];
    for (k, v) in overrides {
        if let Some(v) = v {
            log_defaults
                .set(k, &v)
                .with_context(|| format!("option {k}"))?;
        }
    }
    let groups = group_config(&args);
    let broker_config = BrokerConfig {
        node_id: args.node_id.unwrap_or(1),
        data_dir: args
            .data_dir
            .unwrap_or_else(|| PathBuf::from("./spool-data")),
        advertised_host,
        advertised_port,
        default_partitions: args.num_partitions.unwrap_or(1),
        auto_create_topics: args.auto_create_topics.unwrap_or(true),
        log_defaults,
        partition_threads: args.partition_threads.unwrap_or(0),
        groups,
    };
    if broker_config.default_partitions == 0 {
        bail!("--num-partitions must be at least 1");
    }
    let defaults = KafkaConfig::default();
    let kafka_config = KafkaConfig {
        max_request_bytes: args.max_request_bytes.unwrap_or(defaults.max_request_bytes),
        max_connections: args.max_connections.unwrap_or(defaults.max_connections),
        max_inflight_requests: args
            .max_inflight_requests
            .unwrap_or(defaults.max_inflight_requests)
            .max(1),
        max_fetch_sessions: args
            .max_fetch_sessions
            .unwrap_or(defaults.max_fetch_sessions),
    };
    amqp_config.data_dir = broker_config.data_dir.clone();
    info!(node_id = broker_config.node_id, data_dir = %broker_config.data_dir.display(), "starting spool");
    let node_id = u64::try_from(broker_config.node_id).context("--node-id must not be negative")?;
    let mut quorum_config = quorum_config(
        &args.controller_voters,
        args.cluster_addr,
        &args.advertised_cluster_addr,
        node_id,
        &broker_config.data_dir,
    )?;
    if let Some(ms) = args.node_heartbeat_ms {
        quorum_config.node_heartbeat = Duration::from_millis(ms.max(1));
    }
    if let Some(ms) = args.node_session_timeout_ms {
        quorum_config.session_timeout = Duration::from_millis(ms.max(1));
    }
    // This node alone is the quorum (the one-node default, or a one-voter cluster's voter).
    let sole_voter = quorum_config.voters.len() == 1 && quorum_config.voters[0].0 == node_id;
    let node_record = NodeRecord {
        id: node_id,
        host: broker_config.advertised_host.clone(),
        kafka_port: broker_config.advertised_port,
        amqp_port: amqp_listener.local_addr()?.port(),
        http_port: http_listener.local_addr()?.port(),
        cluster_addr: quorum_config.advertised.clone(),
        incarnation: 0,
        fenced: false,
    };
    std::fs::create_dir_all(&broker_config.data_dir)
        .with_context(|| format!("creating {}", broker_config.data_dir.display()))?;
    // The metadata quorum's tasks run on the network runtime; the actors reach it from theirs.
    let quorum = runtime
        .block_on(Quorum::start(quorum_config))
        .context("starting the metadata quorum")?;

    // Actors run in an actix System on their own thread; the network on a tokio runtime.
    // Front ends get most of the shutdown's time to finish what they read; the core the rest.
    let drain = shutdown_timeout.mul_f64(0.6);
    let (tx, rx) = std::sync::mpsc::channel();
    let cluster = quorum.clone();
    // A one-node cluster is its own quorum: it registers before it serves, so /readyz is
    // ready from the first request. A node of a larger cluster registers once the quorum can
    // commit (its peers may start after it), and is ready from then on.
    let register_first = sole_voter.then(|| node_record.clone());
    let actors = std::thread::Builder::new()
        .name("spool-actors".into())
        .spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(async {
                let started = Broker::start(broker_config, cluster);
                if let (Ok(broker), Some(record)) = (&started, register_first) {
                    let cluster_id = broker.catalog.snapshot().cluster_id.clone();
                    cluster_member::join(&broker.cluster, &cluster_id, record).await;
                }
                let started = started.map(|broker| {
                    // The HTTP server runs on the actor system's runtime (actix-web's own).
                    let http = match spool_http::server(
                        http_listener,
                        broker.clone(),
                        1,
                        drain.as_secs().max(1),
                    ) {
                        Ok(server) => {
                            let handle = server.handle();
                            actix_rt::spawn(server);
                            info!(addr = %http_addr, "HTTP listener up");
                            Some(handle)
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "HTTP listener failed");
                            None
                        }
                    };
                    (broker, http, actix_rt::System::current())
                });
                let _ = tx.send(started);
            });
            let _ = system.run();
        })?;
    let (broker, http, system) = rx.recv().context("the actor system did not start")??;
    runtime.block_on(async {
        // Registers this node with the cluster (bootstrapping a new one with this node's id).
        let cluster_id = broker.catalog.snapshot().cluster_id.clone();
        let joining = quorum.clone();
        let me = spool_actors::catalog::NodeInfo {
            node_id: broker.config.node_id,
            host: broker.config.advertised_host.clone(),
            port: broker.config.advertised_port,
        };
        tokio::spawn(cluster_member::project_cluster(
            quorum.clone(),
            broker.catalog.clone(),
            me,
        ));
        tokio::spawn(async move {
            if !sole_voter {
                cluster_member::join(&joining, &cluster_id, node_record.clone()).await;
            }
            cluster_member::keep_membership(joining, node_record).await;
        });
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let amqp_listener = tokio::net::TcpListener::from_std(amqp_listener)?;
        info!(addr = %bound, "recovery done; serving");
        let kafka = tokio::spawn(spool_kafka::serve(listener, broker.clone(), kafka_config));
        let amqp = tokio::spawn({
            let broker = broker.clone();
            async move {
                if let Err(e) = spool_amqp::serve(amqp_listener, broker.clone(), amqp_config).await
                {
                    tracing::error!(error = %e, "AMQP listener failed; shutting down");
                    broker.shutdown.begin();
                }
            }
        });
        tokio::select! {
            _ = signals.received() => info!("shutting down"),
            _ = broker.shutdown.wait() => {}
        }
        shutdown(&broker, kafka, amqp, http, shutdown_timeout).await;
        quorum.shutdown().await;
        anyhow::Ok(())
    })?;
    runtime.shutdown_timeout(Duration::from_millis(100));
    system.stop();
    let _ = actors.join();
    info!("stopped");
    Ok(())
}

/// The metadata quorum this node joins: with no `--controller-voters`, a one-node cluster of
/// which this node is the only voter (and which needs no inter-node listener).
fn quorum_config(
    voters: &Option<String>,
    cluster_addr: Option<SocketAddr>,
    advertised: &Option<String>,
    node_id: u64,
    data_dir: &std::path::Path,
) -> anyhow::Result<QuorumConfig> {
    let mut config = cluster_member::single_node(node_id, data_dir);
    let Some(voters) = voters else {
        return Ok(config);
    };
    let voters = config::parse_voters(voters)?;
    let listen = cluster_addr.unwrap_or_else(|| "0.0.0.0:9093".parse().unwrap());
    config.advertised = match (voters.iter().find(|(id, _)| *id == node_id), advertised) {
        // A voter is reached where the voter list says.
        (Some((_, addr)), _) => addr.clone(),
        // An observer says where, or is reached at the address it listens on.
        (None, Some(addr)) => addr.clone(),
        (None, None) if !listen.ip().is_unspecified() => listen.to_string(),
        (None, None) => bail!(
            "node {node_id} is an observer (not among --controller-voters) listening on {listen}: \
             give --advertised-cluster-addr, the host:port other nodes reach it at"
        ),
    };
    config.voters = voters;
    config.listen = Some(listen);
    Ok(config)
}

/// What the shutdown is doing, for the deadline's report.
static SHUTDOWN_STAGE: std::sync::Mutex<&str> = std::sync::Mutex::new("not begun");

fn shutdown_stage(stage: &'static str) {
    *SHUTDOWN_STAGE.lock().unwrap_or_else(|e| e.into_inner()) = stage;
    info!(stage, "shutdown");
}

/// Stops the broker in order: listeners stop accepting and connections finish what they read
/// (AMQP ones are closed with CONNECTION_FORCED), then queue and group actors stop with their
/// journals fsynced, then every partition is flushed, fsynced and closed. A thread of its own
/// enforces `timeout`: past it the process says what was still running, has the kernel write
/// every dirty page, and exits with status 1, whatever is stuck.
async fn shutdown(
    broker: &Broker,
    kafka: tokio::task::JoinHandle<()>,
    amqp: tokio::task::JoinHandle<()>,
    http: Option<spool_http::ServerHandle>,
    timeout: Duration,
) {
    broker.shutdown.begin();
    let deadline = std::time::Instant::now() + timeout;
    std::thread::spawn(move || {
        std::thread::sleep(deadline.saturating_duration_since(std::time::Instant::now()));
        let stage = *SHUTDOWN_STAGE.lock().unwrap_or_else(|e| e.into_inner());
        tracing::error!(
            timeout_ms = timeout.as_millis() as u64,
            still_running = stage,
            "shutdown deadline passed; syncing file systems and exiting"
        );
        spool_store::sync_everything();
        std::process::exit(1);
    });
    shutdown_stage("front ends: finishing what connections read");
    let fronts = async {
        let http = async {
            if let Some(h) = http {
                h.stop(true).await;
            }
        };
        let (k, a, ()) = tokio::join!(kafka, amqp, http);
        drop((k, a));
    };
    if tokio::time::timeout(timeout.mul_f64(0.6), fronts)
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open at the front ends' share of the shutdown time; they are cut"
        );
    }
    shutdown_stage("queue and group actors: stopping, journals fsyncing");
    broker.stop_actors().await;
    shutdown_stage("partitions: flushing and closing");
    broker.close_partitions().await;
    shutdown_stage("actor system: stopping");
}

/// The AMQP listener's settings from the command line.
fn amqp_config(args: &ServeArgs) -> anyhow::Result<AmqpConfig> {
    let d = AmqpConfig::default();
    let users = match &args.amqp_users {
        None => d.users.clone(),
        Some(list) => list
            .iter()
            .map(|u| {
                u.split_once(':')
                    .map(|(n, p)| (n.to_string(), p.to_string()))
                    .with_context(|| format!("--amqp-users: '{u}' is not user:password"))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let frame_max = args.amqp_frame_max.unwrap_or(d.frame_max);
    if frame_max < 4096 {
        bail!("--amqp-frame-max must be at least 4096 (AMQP's minimum)");
    }
    Ok(AmqpConfig {
        frame_max,
        channel_max: args.amqp_channel_max.unwrap_or(d.channel_max).max(1),
        heartbeat_s: args.amqp_heartbeat.unwrap_or(d.heartbeat_s),
        max_connections: args.max_connections.unwrap_or(d.max_connections),
        max_inflight_bytes: args.amqp_max_inflight_bytes.unwrap_or(d.max_inflight_bytes),
        disk_free_limit: args.amqp_disk_free_limit.unwrap_or(d.disk_free_limit),
        users,
        ..d
    })
}

/// SIGTERM and SIGINT (Ctrl-C), caught from the moment they are installed.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers (inside a tokio runtime).
    fn install() -> anyhow::Result<ShutdownSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// The first of them to arrive (or to have arrived since they were installed).
    async fn received(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Consumer group settings from the options, with Kafka's defaults.
fn group_config(args: &ServeArgs) -> GroupConfig {
    let d = GroupConfig::default();
    GroupConfig {
        initial_rebalance_delay: args
            .group_initial_rebalance_delay_ms
            .map_or(d.initial_rebalance_delay, Duration::from_millis),
        min_session_timeout_ms: args
            .group_min_session_timeout_ms
            .unwrap_or(d.min_session_timeout_ms),
        max_session_timeout_ms: args
            .group_max_session_timeout_ms
            .unwrap_or(d.max_session_timeout_ms),
        offsets_retention: args
            .offsets_retention_minutes
            .map_or(d.offsets_retention, |m| Duration::from_secs(m * 60)),
        offsets_retention_check_interval: args
            .offsets_retention_check_interval_ms
            .map_or(d.offsets_retention_check_interval, Duration::from_millis),
        consumer: ConsumerProtocolTimers {
            session_timeout: args
                .group_consumer_session_timeout_ms
                .map_or(d.consumer.session_timeout, Duration::from_millis),
            heartbeat_interval: args
                .group_consumer_heartbeat_interval_ms
                .map_or(d.consumer.heartbeat_interval, Duration::from_millis),
        },
    }
}
