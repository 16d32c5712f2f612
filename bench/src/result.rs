//! A run's results as saved to JSON and read back by `spool bench report`.

use serde::{Deserialize, Serialize};

use crate::message::DeliveryCheck;
use crate::workload::Workload;

/// Latency percentiles in milliseconds, from an HDR histogram (3 significant digits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    /// Values recorded.
    pub count: u64,
}

/// Messages moved in the measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub messages: u64,
    pub seconds: f64,
    pub msg_per_s: f64,
    pub mb_per_s: f64,
}

impl Throughput {
    pub fn new(messages: u64, seconds: f64, message_size: usize) -> Throughput {
        let rate = if seconds > 0.0 {
            messages as f64 / seconds
        } else {
            0.0
        };
        Throughput {
            messages,
            seconds,
            msg_per_s: rate,
            mb_per_s: rate * message_size as f64 / 1e6,
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since producing started.
    pub second: u64,
    pub publish_msg_per_s: f64,
    pub consume_msg_per_s: f64,
    pub publish_p99_ms: f64,
    pub end_to_end_p99_ms: f64,
    /// The broker's CPU use in that second (100 = one core), when it was sampled.
    pub broker_cpu_percent: Option<f64>,
}

/// The broker process's use of the machine during the measured window (sampled from /proc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerUsage {
    pub pid: u32,
    /// Mean CPU use (100 = one core).
    pub cpu_percent_mean: f64,
    pub cpu_percent_max: f64,
    pub rss_mib_max: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The system measured as the user named it (`--system`), e.g. "Spool" or "RabbitMQ quorum".
    pub system: String,
    pub driver: String,
    /// The durability the driver asked for (and any note about the broker's settings).
    pub durability: String,
    pub workload: Workload,
    /// `nproc`, memory and kernel of the machine the run was on.
    pub machine: String,
    /// Unix seconds when the run started.
    pub started_unix: u64,
    pub publish: Throughput,
    pub consume: Throughput,
    /// Send to confirm (fixed rate: from the message's due time).
    pub publish_latency_ms: Percentiles,
    /// Due time to delivery at a consumer (rpc: the round trip).
    pub end_to_end_latency_ms: Percentiles,
    /// Failed sends and consumer errors.
    pub errors: u64,
    /// Per subscription: what was received of everything published.
    pub delivery: Vec<DeliveryCheck>,
    pub broker: Option<BrokerUsage>,
    pub timeline: Vec<TimelinePoint>,
}
