//! Counters and histograms that move as the broker works, kept for the life of the process.
//! Other crates report events through the functions here (plain types only); the scrape adds
//! these families to the ones sampled from broker state.
//!
//! Every label takes values from a closed set (front ends, API or method names, route
//! patterns, dead-letter reasons), so the number of series does not grow with traffic.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::MetricsError;

/// Which way in a request or connection came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    Kafka,
    Amqp,
    Http,
}

/// Every front end, in the order of [`Frontend`]'s variants (series arrays are indexed by it).
const FRONTENDS: [Frontend; 3] = [Frontend::Kafka, Frontend::Amqp, Frontend::Http];

impl Frontend {
    fn label(self) -> &'static str {
        match self {
            Frontend::Kafka => "kafka",
            Frontend::Amqp => "amqp",
            Frontend::Http => "http",
        }
    }
}

/// Why a queue dead-lettered a message, as rabbitmq_prometheus names its families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    Rejected,
    Expired,
    MaxLen,
    DeliveryLimit,
}

/// Every reason, in the order of [`DeadLetterReason`]'s variants.
const DEAD_LETTER_REASONS: [DeadLetterReason; 4] = [
    DeadLetterReason::Rejected,
    DeadLetterReason::Expired,
    DeadLetterReason::MaxLen,
    DeadLetterReason::DeliveryLimit,
];

impl DeadLetterReason {
    fn label(self) -> &'static str {
        match self {
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::Expired => "expired",
            DeadLetterReason::MaxLen => "maxlen",
            DeadLetterReason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// How a message reached a consumer, as rabbitmq_prometheus splits deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryKind {
    ConsumeManualAck,
    ConsumeAutoAck,
    GetManualAck,
    GetAutoAck,
}

/// Latency buckets of requests, in seconds: 0.1 ms to 30 s (long polls reach the top).
const REQUEST_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];
/// fsync latency buckets, in seconds: 50 µs to 2.5 s.
const FSYNC_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];

/// rabbitmq_prometheus labels its global message families with the protocol.
const AMQP091: &str = "amqp091";

struct Live {
    registry: Registry,
    requests: IntCounterVec,
    request_errors: IntCounterVec,
    request_seconds: HistogramVec,
    bytes_received: [IntCounter; 3],
    bytes_sent: [IntCounter; 3],
    records_appended: IntCounter,
    bytes_appended: IntCounter,
    fsync_seconds: Histogram,
    connections: [IntGauge; 3],
    channels: IntGauge,
    actor_restarts: IntCounterVec,
    controller_changes: IntCounter,
    rebalances: IntCounterVec,
    queue_deliveries: IntCounter,
    queue_redeliveries: IntCounter,
    queue_dead_letters: [IntCounter; 4],
    rabbit_connections: IntGauge,
    rabbit_channels: IntGauge,
    rabbit_received: IntCounter,
    rabbit_received_confirm: IntCounter,
    rabbit_routed: IntCounter,
    rabbit_unroutable_dropped: IntCounter,
    rabbit_unroutable_returned: IntCounter,
    rabbit_confirmed: IntCounter,
    rabbit_delivered: IntCounter,
    rabbit_delivered_kind: [IntCounter; 4],
    rabbit_redelivered: IntCounter,
    rabbit_acknowledged: IntCounter,
    rabbit_dead_lettered: [IntCounter; 4],
    rabbit_disk_alarm: IntGauge,
    rabbit_disk_available: IntGauge,
    rabbit_disk_limit: IntGauge,
}

fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    m: M,
) -> Result<M, MetricsError> {
    registry.register(Box::new(m.clone()))?;
    Ok(m)
}

impl Live {
    fn new() -> Result<Live, MetricsError> {
        let r = Registry::new();
        let counter = |name: &str, help: &str| register(&r, IntCounter::new(name, help)?);
        let counters = |name: &str, help: &str, labels: &[&str]| {
            register(&r, IntCounterVec::new(Opts::new(name, help), labels)?)
        };
        let gauge = |name: &str, help: &str| register(&r, IntGauge::new(name, help)?);
        // Families whose labels take a fixed value: the series is made once, here.
        let rabbit = |name: &str, help: &str| {
            counters(name, help, &["protocol"]).map(|f| f.with_label_values(&[AMQP091]))
        };
        let dead = |reason: &str| {
            counters(
                &format!("rabbitmq_global_messages_dead_lettered_{reason}_total"),
                &format!("Total number of messages dead-lettered due to {reason}"),
                &["queue_type", "dead_letter_strategy"],
            )
            .map(|f| f.with_label_values(&["rabbit_classic_queue", "at_most_once"]))
        };
        let per_frontend = |f: IntCounterVec| FRONTENDS.map(|x| f.with_label_values(&[x.label()]));
        Ok(Live {
            requests: counters(
                "spool_requests_total",
                "Requests handled, by front end and API (Kafka API, AMQP method, HTTP route)",
                &["frontend", "api"],
            )?,
            request_errors: counters(
                "spool_request_errors_total",
                "Requests answered with an error, by front end and API",
                &["frontend", "api"],
            )?,
            request_seconds: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "spool_request_duration_seconds",
                        "Time from a request's arrival to its answer, by front end and API",
                    )
                    .buckets(REQUEST_BUCKETS.to_vec()),
                    &["frontend", "api"],
                )?,
            )?,
            bytes_received: per_frontend(counters(
                "spool_received_bytes_total",
                "Bytes read from client connections",
                &["frontend"],
            )?),
            bytes_sent: per_frontend(counters(
                "spool_sent_bytes_total",
                "Bytes written to client connections",
                &["frontend"],
            )?),
            records_appended: counter(
                "spool_records_appended_total",
                "Records appended to partition logs (every front end)",
            )?,
            bytes_appended: counter(
                "spool_appended_bytes_total",
                "Bytes of record batches appended to partition logs",
            )?,
            fsync_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "spool_fsync_duration_seconds",
                        "Time an fsync of a partition log took",
                    )
                    .buckets(FSYNC_BUCKETS.to_vec()),
                )?,
            )?,
            connections: {
                let f = register(
                    &r,
                    IntGaugeVec::new(
                        Opts::new("spool_connections", "Open client connections, by front end"),
                        &["frontend"],
                    )?,
                )?;
                FRONTENDS.map(|x| f.with_label_values(&[x.label()]))
            },
            channels: gauge("spool_amqp_channels", "Open AMQP channels")?,
            actor_restarts: counters(
                "spool_actor_restarts_total",
                "Actors restarted by their supervisor after dying",
                &["actor"],
            )?,
            controller_changes: counter(
                "spool_cluster_controller_changes_total",
                "Times this node saw the cluster's controller change (a new metadata quorum leader)",
            )?,
            rebalances: counters(
                "spool_group_rebalances_total",
                "Consumer group rebalances started (classic) or group epochs bumped (consumer)",
                &["protocol"],
            )?,
            queue_deliveries: counter(
                "spool_queue_deliveries_total",
                "Queue messages handed to consumers (AMQP and HTTP)",
            )?,
            queue_redeliveries: counter(
                "spool_queue_redeliveries_total",
                "Queue messages handed out again after a requeue, lapsed lease or lost consumer",
            )?,
            queue_dead_letters: {
                let f = counters(
                    "spool_queue_dead_letters_total",
                    "Queue messages dead-lettered or dropped (no dead-letter exchange), by reason",
                    &["reason"],
                )?;
                DEAD_LETTER_REASONS.map(|x| f.with_label_values(&[x.label()]))
            },
            rabbit_disk_alarm: gauge(
                "rabbitmq_alarms_free_disk_space_watermark",
                "is 1 if free disk space watermark alarm is in effect",
            )?,
            rabbit_disk_available: gauge(
                "rabbitmq_disk_space_available_bytes",
                "Disk space available in bytes",
            )?,
            rabbit_disk_limit: gauge(
                "rabbitmq_disk_space_available_limit_bytes",
                "Free disk space low watermark in bytes",
            )?,
            rabbit_connections: gauge("rabbitmq_connections", "Connections currently open")?,
            rabbit_channels: gauge("rabbitmq_channels", "Channels currently open")?,
            rabbit_received: rabbit(
                "rabbitmq_global_messages_received_total",
                "Total number of messages received from publishers",
            )?,
            rabbit_received_confirm: rabbit(
                "rabbitmq_global_messages_received_confirm_total",
                "Total number of messages received from publishers expecting confirmations",
            )?,
            rabbit_routed: rabbit(
                "rabbitmq_global_messages_routed_total",
                "Total number of messages routed to queues or streams",
            )?,
            rabbit_unroutable_dropped: rabbit(
                "rabbitmq_global_messages_unroutable_dropped_total",
                "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
            )?,
            rabbit_unroutable_returned: rabbit(
                "rabbitmq_global_messages_unroutable_returned_total",
                "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
            )?,
            rabbit_confirmed: rabbit(
                "rabbitmq_global_messages_confirmed_total",
                "Total number of messages confirmed to publishers",
            )?,
            rabbit_delivered: rabbit(
                "rabbitmq_global_messages_delivered_total",
                "Total number of messages delivered to consumers",
            )?,
            rabbit_delivered_kind: [
                rabbit(
                    "rabbitmq_global_messages_delivered_consume_manual_ack_total",
                    "Total number of messages delivered to consumers using manual acknowledgement mode",
                )?,
                rabbit(
                    "rabbitmq_global_messages_delivered_consume_auto_ack_total",
                    "Total number of messages delivered to consumers using automatic acknowledgement mode",
                )?,
                rabbit(
                    "rabbitmq_global_messages_delivered_get_manual_ack_total",
                    "Total number of messages fetched with basic.get in manual acknowledgement mode",
                )?,
                rabbit(
                    "rabbitmq_global_messages_delivered_get_auto_ack_total",
                    "Total number of messages fetched with basic.get in automatic acknowledgement mode",
                )?,
            ],
            rabbit_redelivered: rabbit(
                "rabbitmq_global_messages_redelivered_total",
                "Total number of messages redelivered to consumers",
            )?,
            rabbit_acknowledged: rabbit(
                "rabbitmq_global_messages_acknowledged_total",
                "Total number of messages acknowledged by consumers",
            )?,
            rabbit_dead_lettered: [
                dead(DeadLetterReason::Rejected.label())?,
                dead(DeadLetterReason::Expired.label())?,
                dead(DeadLetterReason::MaxLen.label())?,
                dead(DeadLetterReason::DeliveryLimit.label())?,
            ],
            registry: r,
        })
    }
}

impl Live {
    /// Series whose labels are not fixed at construction but come from a closed set start at
    /// zero too, so dashboards and alerts see them before the first event (as Prometheus
    /// recommends).
    fn with_known_series(self) -> Live {
        for actor in ["partition", "group", "queue", "journal"] {
            self.actor_restarts.with_label_values(&[actor]);
        }
        for protocol in ["classic", "consumer"] {
            self.rebalances.with_label_values(&[protocol]);
        }
        self
    }
}

static LIVE: LazyLock<Live> = LazyLock::new(|| {
    Live::new()
        .expect("live metric names and labels are valid")
        .with_known_series()
});

/// The live families, for the scrape to encode beside the sampled ones.
pub(crate) fn registry() -> &'static Registry {
    &LIVE.registry
}

/// A request answered after `elapsed`; `failed` when the answer was an error.
pub fn request(frontend: Frontend, api: &str, elapsed: Duration, failed: bool) {
    let labels = [frontend.label(), api];
    LIVE.requests.with_label_values(&labels).inc();
    LIVE.request_seconds
        .with_label_values(&labels)
        .observe(elapsed.as_secs_f64());
    if failed {
        LIVE.request_errors.with_label_values(&labels).inc();
    }
}

/// Bytes read from a client.
pub fn bytes_received(frontend: Frontend, n: usize) {
    LIVE.bytes_received[frontend as usize].inc_by(n as u64);
}

/// Bytes written to a client.
pub fn bytes_sent(frontend: Frontend, n: usize) {
    LIVE.bytes_sent[frontend as usize].inc_by(n as u64);
}

/// A batch of `records` records, `bytes` long, appended to a partition log.
pub fn appended(records: u64, bytes: usize) {
    LIVE.records_appended.inc_by(records);
    LIVE.bytes_appended.inc_by(bytes as u64);
}

/// One fsync of a partition log.
pub fn fsync(elapsed: Duration) {
    LIVE.fsync_seconds.observe(elapsed.as_secs_f64());
}

/// A client connection opened (`+1`) or closed (`-1`).
pub fn connections(frontend: Frontend, delta: i64) {
    LIVE.connections[frontend as usize].add(delta);
    if frontend == Frontend::Amqp {
        LIVE.rabbit_connections.add(delta);
    }
}

/// Free space on the data directory's disk, the limit below which AMQP publishers are
/// blocked, and whether they are.
pub fn disk(available: u64, limit: u64, alarm: bool) {
    LIVE.rabbit_disk_available
        .set(available.min(i64::MAX as u64) as i64);
    LIVE.rabbit_disk_limit
        .set(limit.min(i64::MAX as u64) as i64);
    LIVE.rabbit_disk_alarm.set(alarm as i64);
}

/// AMQP channels opened (`+n`) or closed (`-n`).
pub fn channels(delta: i64) {
    LIVE.channels.add(delta);
    LIVE.rabbit_channels.add(delta);
}

/// A supervisor restarted an actor of this kind (`partition`, `group`, `queue`, `journal`).
pub fn actor_restarted(actor: &str) {
    LIVE.actor_restarts.with_label_values(&[actor]).inc();
}

/// This node saw the cluster's controller change.
pub fn controller_changed() {
    LIVE.controller_changes.inc();
}

/// A group started a rebalance; `protocol` is `classic` or `consumer`.
pub fn rebalance(protocol: &str) {
    LIVE.rebalances.with_label_values(&[protocol]).inc();
}

/// An AMQP publish arrived; `confirm` when the channel is in confirm mode.
pub fn published(confirm: bool) {
    LIVE.rabbit_received.inc();
    if confirm {
        LIVE.rabbit_received_confirm.inc();
    }
}

/// Where a publish went: routed to at least one queue, or unroutable (returned when
/// `mandatory`, dropped otherwise).
pub fn routed(routed: bool, mandatory: bool) {
    match (routed, mandatory) {
        (true, _) => LIVE.rabbit_routed.inc(),
        (false, true) => LIVE.rabbit_unroutable_returned.inc(),
        (false, false) => LIVE.rabbit_unroutable_dropped.inc(),
    }
}

/// Publishes confirmed to publishers.
pub fn confirmed(n: u64) {
    LIVE.rabbit_confirmed.inc_by(n);
}

/// Queue messages handed to a consumer; `redelivered` counts those handed out before.
pub fn delivered(kind: DeliveryKind, n: u64, redelivered: u64) {
    LIVE.queue_deliveries.inc_by(n);
    LIVE.queue_redeliveries.inc_by(redelivered);
    LIVE.rabbit_delivered.inc_by(n);
    LIVE.rabbit_redelivered.inc_by(redelivered);
    LIVE.rabbit_delivered_kind[kind as usize].inc_by(n);
}

/// Queue messages acknowledged by consumers.
pub fn acknowledged(n: u64) {
    LIVE.rabbit_acknowledged.inc_by(n);
}

/// Queue messages that left for a reason: republished to a dead-letter exchange when
/// `to_exchange`, dropped otherwise (RabbitMQ counts only the first as dead-lettered).
pub fn dead_lettered(reason: DeadLetterReason, n: u64, to_exchange: bool) {
    LIVE.queue_dead_letters[reason as usize].inc_by(n);
    if to_exchange {
        LIVE.rabbit_dead_lettered[reason as usize].inc_by(n);
    }
}
