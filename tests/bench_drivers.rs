//! `spool bench`: every driver against a running system on a short workload, asserting that
//! everything published was consumed (exactly once for queues with acks, at least once for
//! streams), and a report generated from recorded result files.
//!
//! Spool runs in every test. NATS JetStream and RabbitMQ are started by the test when their
//! servers are installed (`.ci/run` installs nats-server and rabbitmq-server from Debian);
//! when one is missing its test says so on stderr, uncaptured, and checks nothing else.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, Spool};
use spool_bench::driver::Driver;
use spool_bench::drivers::{
    amqp::AmqpDriver, http::HttpDriver, kafka::KafkaDriver, nats::NatsDriver,
};
use spool_bench::result::RunResult;
use spool_bench::runner::{run, RunOptions};
use spool_bench::workload::Workload;

/// A short workload: 1 s of warm-up, 2 s measured, messages of 256 bytes unless `extra` says
/// otherwise.
fn workload(pattern: &str, extra: &str) -> Workload {
    Workload::parse(&format!(
        "name = \"test {pattern}\"\npattern = \"{pattern}\"\n\
         warmup_seconds = 1\ntest_seconds = 2\ndrain_timeout_seconds = 30\n{extra}\n{}",
        if extra.contains("message_size") {
            ""
        } else {
            "message_size = 256\n"
        }
    ))
    .unwrap()
}

async fn run_on(driver: Arc<dyn Driver>, workload: Workload) -> RunResult {
    run(RunOptions {
        workload,
        driver,
        system: "test".into(),
        durability_note: None,
        broker_pid: None,
        progress: Some(false),
    })
    .await
    .unwrap()
}

/// Competing consumers at max rate, held back by flow control: a queue workload's settings.
const COMPETING_CONSUMERS: &str = "producers_per_topic = 2\nconsumers_per_subscription = 3\n\
    prefetch = 10\nproducer_rate = 0\nmax_backlog = 2000";

/// Every subscription got every message at least once, and the run measured something.
fn assert_complete(r: &RunResult) {
    assert_eq!(r.errors, 0, "{r:#?}");
    assert!(r.publish.messages > 0 && r.consume.messages > 0, "{r:#?}");
    assert_eq!(
        r.delivery.len() as u32,
        r.workload.topics * r.workload.subscriptions_per_topic
    );
    for d in &r.delivery {
        assert!(d.received > 0 && d.missing == 0, "{r:#?}");
    }
    assert!(r.end_to_end_latency_ms.count > 0 && r.end_to_end_latency_ms.p50 > 0.0);
}

/// As `assert_complete`, and no message was delivered twice.
fn assert_exactly_once(r: &RunResult) {
    assert_complete(r);
    for d in &r.delivery {
        assert_eq!(d.duplicates, 0, "{r:#?}");
    }
}

/// Says on the real stderr (not captured by the test harness) why a test checks nothing.
fn skip(why: &str) {
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {why}");
}

#[test]
fn kafka_driver_through_the_cli_streams_every_message() {
    let spool = Spool::start();
    let dir = tempfile::tempdir().unwrap();
    let wl = dir.path().join("stream.toml");
    std::fs::write(
        &wl,
        "name = \"cli stream\"\npartitions_per_topic = 4\nproducers_per_topic = 2\n\
         subscriptions_per_topic = 2\nconsumers_per_subscription = 2\nproducer_rate = 500\n\
         key_distribution = \"round-robin\"\nmessage_size = 256\nwarmup_seconds = 1\n\
         test_seconds = 2\n",
    )
    .unwrap();
    let out = dir.path().join("result.json");
    let run = Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["bench", "run", "--driver", "kafka", "--quiet"])
        .args(["--target", &spool.bootstrap(), "--broker-pid"])
        .arg(spool_pid(&spool).to_string())
        .arg("--workload")
        .arg(&wl)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let r: RunResult = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_complete(&r);
    assert_eq!(r.driver, "kafka");
    assert!(r.durability.contains("acks=all"));
    let broker = r.broker.expect("broker usage sampled");
    assert!(
        broker.rss_mib_max > 1.0 && broker.cpu_percent_mean > 0.0,
        "{broker:?}"
    );
    assert!(!r.timeline.is_empty());
}

/// The broker's pid: the process listening on its Kafka port, found through /proc by the
/// harness's data directory in its command line.
fn spool_pid(spool: &Spool) -> u32 {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let wanted = spool.data_dir().to_string_lossy().to_string();
        if String::from_utf8_lossy(&cmdline).contains(&wanted) {
            return pid;
        }
    }
    panic!("no process serves {}", spool.data_dir().display());
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_driver_drains_a_backlog() {
    let spool = Spool::start();
    let driver = Arc::new(KafkaDriver {
        bootstrap: spool.bootstrap(),
        fsync_each: false,
    });
    let mut w = workload(
        "stream",
        "partitions_per_topic = 2\nmessage_size = 1024\nbacklog_mib = 2\n\
         producers_per_topic = 2\nconsumers_per_subscription = 2",
    );
    (w.warmup_seconds, w.test_seconds) = (0, 0);
    let r = run_on(driver, w).await;
    assert_complete(&r);
    // 2 MiB of 1 KiB messages, all drained after they were produced.
    assert_eq!(r.publish.messages, 2048);
    assert_eq!(r.delivery[0].received, 2048);
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_driver_on_spool_task_queue_fan_out_and_rpc() {
    let spool = Spool::start();
    let driver = || Arc::new(AmqpDriver::new(spool.amqp_uri(), None));
    // Competing consumers at max rate, with flow control: exactly once.
    let r = run_on(driver(), workload("queue", COMPETING_CONSUMERS)).await;
    assert_exactly_once(&r);
    let r = run_on(
        driver(),
        workload(
            "stream",
            "subscriptions_per_topic = 3\nconsumers_per_subscription = 1\nproducer_rate = 500",
        ),
    )
    .await;
    assert_complete(&r);
    let r = run_on(
        driver(),
        workload(
            "rpc",
            "producers_per_topic = 2\nconsumers_per_subscription = 2\nmax_in_flight = 4\n\
             producer_rate = 0",
        ),
    )
    .await;
    assert_exactly_once(&r);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_driver_on_spool_stream_and_task_queue() {
    let spool = Spool::start();
    let driver = || {
        Arc::new(HttpDriver::new(format!(
            "http://127.0.0.1:{}",
            spool.http_port
        )))
    };
    // Two consumer groups of two HTTP members each over 4 partitions: at least once.
    let r = run_on(
        driver(),
        workload(
            "stream",
            "partitions_per_topic = 4\nsubscriptions_per_topic = 2\n\
             consumers_per_subscription = 2\nproducer_rate = 500",
        ),
    )
    .await;
    assert_complete(&r);
    // Competing consumers leasing and acknowledging at max rate: exactly once.
    let r = run_on(driver(), workload("queue", COMPETING_CONSUMERS)).await;
    assert_exactly_once(&r);
}

/// A child process killed with its whole process group (rabbitmq-server runs beam.smp).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signals the process group this test started.
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

fn installed(program: &str) -> bool {
    [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/bin",
        "/usr/lib/rabbitmq/bin",
    ]
    .iter()
    .any(|d| Path::new(d).join(program).exists())
}

fn spawn_server(cmd: &mut Command, port: u16, what: &str) -> Server {
    use std::os::unix::process::CommandExt;
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_driver_on_jetstream() {
    if !installed("nats-server") {
        return skip(
            "nats_driver_on_jetstream: nats-server is not installed (apt-get install nats-server)",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _nats = spawn_server(
        Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path()),
        port,
        "nats-server",
    );
    let driver = || {
        Arc::new(NatsDriver {
            url: format!("nats://127.0.0.1:{port}"),
        })
    };
    let r = run_on(
        driver(),
        workload(
            "stream",
            "subscriptions_per_topic = 2\nconsumers_per_subscription = 2\nproducer_rate = 500",
        ),
    )
    .await;
    assert_complete(&r);
    let r = run_on(
        driver(),
        workload(
            "queue",
            "producers_per_topic = 2\nconsumers_per_subscription = 3\nproducer_rate = 0\n\
             max_backlog = 2000",
        ),
    )
    .await;
    assert_exactly_once(&r);
    let r = run_on(
        driver(),
        workload("rpc", "consumers_per_subscription = 2\nproducer_rate = 500"),
    )
    .await;
    assert_exactly_once(&r);
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_driver_on_rabbitmq_classic_quorum_and_stream_queues() {
    // Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user; the script it wraps
    // runs the node as the current user, with the test's own directories.
    let server = Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
    if !server.exists() {
        return skip("amqp_driver_on_rabbitmq_classic_quorum_and_stream_queues: rabbitmq-server is not installed (apt-get install rabbitmq-server)");
    }
    let dir = tempfile::tempdir().unwrap();
    let (port, dist) = (free_port(), free_port());
    for d in ["mnesia", "log"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let conf = dir.path().join("rabbitmq");
    std::fs::write(
        conf.with_extension("conf"),
        "loopback_users.guest = false\n",
    )
    .unwrap();
    let _rabbit = spawn_server(
        Command::new(server)
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("RABBITMQ_NODENAME", format!("spooltest{port}@localhost"))
            .env("RABBITMQ_MNESIA_BASE", dir.path().join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.path().join("log"))
            .env("RABBITMQ_CONFIG_FILE", &conf)
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.path().join("plugins"))
            .env("HOME", dir.path()),
        port,
        "rabbitmq-server",
    );
    let uri = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    for queue_type in ["classic", "quorum"] {
        let r = run_on(
            Arc::new(AmqpDriver::new(uri.clone(), Some(queue_type.into()))),
            workload(
                "queue",
                "producers_per_topic = 2\nconsumers_per_subscription = 2\nproducer_rate = 500",
            ),
        )
        .await;
        assert_exactly_once(&r);
        assert!(r.durability.contains(queue_type));
    }
    let r = run_on(
        Arc::new(AmqpDriver::new(uri, Some("stream".into()))),
        workload(
            "stream",
            "consumers_per_subscription = 1\nproducer_rate = 500",
        ),
    )
    .await;
    assert_complete(&r);
}

#[test]
fn report_from_recorded_results_has_the_table_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/testdata");
    let out = Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["bench", "report", "--title", "Recorded"])
        .arg(data.join("task-queue-spool-amqp.json"))
        .arg(data.join("task-queue-nats.json"))
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.starts_with("# Recorded"), "{md}");
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
    // Header and one row per result, systems side by side.
    assert_eq!(rows.len(), 3, "{md}");
    assert!(
        rows[1].starts_with("| Spool (amqp) |") && rows[2].contains("(nats)"),
        "{md}"
    );
    for name in ["throughput", "latency", "timeline"] {
        let svg = std::fs::read_to_string(dir.path().join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("Spool (amqp)"),
            "{name}.svg"
        );
        let png = std::fs::read(dir.path().join(format!("{name}.png"))).unwrap();
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
            "{name}.png"
        );
    }
}
