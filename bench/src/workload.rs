//! A workload as a file describes it, in the manner of the OpenMessaging Benchmark's workload
//! YAML: what to create, how many producers and consumers, how fast, for how long. Workloads
//! are TOML files (see `bench/workloads/`); every field but `name` has a default.

use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// How the messages are consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    /// Each subscription reads every message (a Kafka consumer group, a RabbitMQ stream or a
    /// queue per subscription, a JetStream consumer); consumers of one subscription share its
    /// partitions. Delivery is at least once.
    Stream,
    /// Competing consumers take messages one by one from a shared queue and acknowledge each;
    /// each subscription is one queue. Delivery is exactly once.
    Queue,
    /// Producers send requests and wait for a reply from a consumer (request/reply); the
    /// latency is the round trip.
    Rpc,
}

/// How records are keyed (OMB's `keyDistributor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDistribution {
    /// No key: the broker or client spreads records.
    None,
    /// Keys cycle through a fixed set, one per partition's worth.
    RoundRobin,
    /// A random key per record.
    Random,
}

/// A workload file's contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// What the workload is called in results and reports.
    pub name: String,
    pub pattern: Pattern,
    pub topics: u32,
    pub partitions_per_topic: u32,
    /// Bytes per message (at least the 20-byte header the harness writes into each).
    pub message_size: usize,
    /// 0.0: payloads of one repeated byte; 1.0: fully random (incompressible) payloads.
    pub payload_randomness: f64,
    pub producers_per_topic: u32,
    pub subscriptions_per_topic: u32,
    pub consumers_per_subscription: u32,
    /// Messages per second over all producers; 0 finds the maximum sustainable rate:
    /// producers go as fast as the broker confirms, held back only when consumers fall more
    /// than `max_backlog` messages behind.
    pub producer_rate: u64,
    pub key_distribution: KeyDistribution,
    /// Seconds run before measuring (connections warm, caches full), not recorded.
    pub warmup_seconds: u64,
    /// Seconds measured.
    pub test_seconds: u64,
    /// When above 0: produce this many MiB with no consumer running, then start the consumers
    /// and measure how fast they drain it (the drain rate is the consume rate).
    pub backlog_mib: u64,
    /// Queue pattern: unacknowledged messages a consumer may hold (AMQP basic.qos prefetch).
    pub prefetch: u16,
    /// Messages a producer may have unconfirmed at once.
    pub max_in_flight: usize,
    /// Max-rate runs: messages published but not yet consumed above which producers wait.
    pub max_backlog: u64,
    /// Seconds to wait after producing stops for consumers to receive every message.
    pub drain_timeout_seconds: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            name: String::new(),
            pattern: Pattern::Stream,
            topics: 1,
            partitions_per_topic: 1,
            message_size: 1024,
            payload_randomness: 1.0,
            producers_per_topic: 1,
            subscriptions_per_topic: 1,
            consumers_per_subscription: 1,
            producer_rate: 0,
            key_distribution: KeyDistribution::None,
            warmup_seconds: 5,
            test_seconds: 30,
            backlog_mib: 0,
            prefetch: 100,
            max_in_flight: 1000,
            max_backlog: 100_000,
            drain_timeout_seconds: 60,
        }
    }
}

/// Bytes of the header every message starts with (see `message.rs`).
pub const HEADER_LEN: usize = 20;

impl Workload {
    /// Reads and checks a workload file.
    pub fn load(path: &Path) -> anyhow::Result<Workload> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading workload {}", path.display()))?;
        let w = Workload::parse(&text).with_context(|| format!("workload {}", path.display()))?;
        Ok(w)
    }

    /// Parses and checks a workload's TOML text.
    pub fn parse(text: &str) -> anyhow::Result<Workload> {
        let w: Workload = toml::from_str(text)?;
        w.check()?;
        Ok(w)
    }

    /// Refuses settings no run could honour, naming the field.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.name.is_empty() {
            bail!("`name` is required");
        }
        if self.message_size < HEADER_LEN {
            bail!("`message_size` must be at least {HEADER_LEN} (the harness's header)");
        }
        if !(0.0..=1.0).contains(&self.payload_randomness) {
            bail!("`payload_randomness` must be between 0.0 and 1.0");
        }
        for (field, v) in [
            ("topics", self.topics),
            ("partitions_per_topic", self.partitions_per_topic),
            ("producers_per_topic", self.producers_per_topic),
            ("subscriptions_per_topic", self.subscriptions_per_topic),
            (
                "consumers_per_subscription",
                self.consumers_per_subscription,
            ),
        ] {
            if v == 0 {
                bail!("`{field}` must be at least 1");
            }
        }
        if self.test_seconds == 0 && self.backlog_mib == 0 {
            bail!("`test_seconds` must be at least 1 (or set `backlog_mib`)");
        }
        if self.max_in_flight == 0 {
            bail!("`max_in_flight` must be at least 1");
        }
        if self.pattern == Pattern::Rpc && self.subscriptions_per_topic != 1 {
            bail!("an rpc workload has one subscription (the servers) per topic");
        }
        Ok(())
    }

    /// Messages per second each producer is asked for; `None` at max rate.
    pub fn rate_per_producer(&self) -> Option<f64> {
        (self.producer_rate > 0)
            .then(|| self.producer_rate as f64 / (self.topics * self.producers_per_topic) as f64)
    }

    /// The backlog in messages (backlog runs).
    pub fn backlog_messages(&self) -> u64 {
        self.backlog_mib * 1024 * 1024 / self.message_size as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults_and_refuses_nonsense() {
        let w = Workload::parse(
            r#"
            name = "omb"
            partitions_per_topic = 16
            producer_rate = 50000
            producers_per_topic = 4
            key_distribution = "round-robin"
            "#,
        )
        .unwrap();
        assert_eq!(w.partitions_per_topic, 16);
        assert_eq!(w.message_size, 1024);
        assert_eq!(w.rate_per_producer(), Some(12_500.0));
        assert_eq!(w.key_distribution, KeyDistribution::RoundRobin);
        for (text, says) in [
            ("", "`name` is required"),
            ("name = \"x\"\nmessage_size = 4", "message_size"),
            (
                "name = \"x\"\npartitions_per_topic = 0",
                "partitions_per_topic",
            ),
            (
                "name = \"x\"\npayload_randomness = 2.0",
                "payload_randomness",
            ),
            (
                "name = \"x\"\npattern = \"rpc\"\nsubscriptions_per_topic = 2",
                "rpc",
            ),
        ] {
            let e = Workload::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
        let e = format!(
            "{:#}",
            Workload::parse("name = \"x\"\nspeed = 3").unwrap_err()
        );
        assert!(e.contains("unknown field `speed`"), "{e}");
    }
}
