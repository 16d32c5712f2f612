//! `spool serve` settings: flags win over `SPOOL_*` environment variables, which win over the
//! TOML file given with `--config`, which wins over the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;

/// Every option of `spool serve`. Each is optional here so that the file can fill gaps.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeArgs {
    /// TOML file with any of these options (keys as the flag names, without the dashes).
    #[arg(long, env = "SPOOL_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Directory for segment files and metadata [default: ./spool-data].
    #[arg(long, env = "SPOOL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Kafka listener address [default: 0.0.0.0:9092].
    #[arg(long, env = "SPOOL_KAFKA_ADDR")]
    pub kafka_addr: Option<SocketAddr>,
    /// HTTP listener address (health, readiness, metrics) [default: 0.0.0.0:8080].
    #[arg(long, env = "SPOOL_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// AMQP 0-9-1 listener address [default: 0.0.0.0:5672].
    #[arg(long, env = "SPOOL_AMQP_ADDR")]
    pub amqp_addr: Option<SocketAddr>,
    /// AMQP users as user:password, comma-separated; `guest` may connect from loopback only
    /// [default: guest:guest].
    #[arg(long, env = "SPOOL_AMQP_USERS", value_delimiter = ',')]
    pub amqp_users: Option<Vec<String>>,
    /// Largest AMQP frame offered in connection.tune [default: 131072].
    #[arg(long, env = "SPOOL_AMQP_FRAME_MAX")]
    pub amqp_frame_max: Option<u32>,
    /// Most channels per AMQP connection [default: 2047].
    #[arg(long, env = "SPOOL_AMQP_CHANNEL_MAX")]
    pub amqp_channel_max: Option<u16>,
    /// AMQP heartbeat offered, in seconds; 0 for none [default: 60].
    #[arg(long, env = "SPOOL_AMQP_HEARTBEAT")]
    pub amqp_heartbeat: Option<u16>,
    /// Published AMQP bytes on their way to the log before publishers get connection.blocked
    /// and are no longer read [default: 67108864].
    #[arg(long, env = "SPOOL_AMQP_MAX_INFLIGHT_BYTES")]
    pub amqp_max_inflight_bytes: Option<usize>,
    /// Free bytes on the data directory's disk below which AMQP publishers get
    /// connection.blocked ("low on disk"), as RabbitMQ's disk_free_limit [default: 50000000].
    #[arg(long, env = "SPOOL_AMQP_DISK_FREE_LIMIT")]
    pub amqp_disk_free_limit: Option<u64>,
    /// host:port clients are told to connect to [default: the listener's host and port, with
    /// 127.0.0.1 for an unspecified host].
    #[arg(long, env = "SPOOL_ADVERTISED_KAFKA_ADDR")]
    pub advertised_kafka_addr: Option<String>,
    /// This node's id in the cluster [default: 1].
    #[arg(long, env = "SPOOL_NODE_ID")]
    pub node_id: Option<i32>,
    /// Log filter when RUST_LOG is unset, e.g. info or spool_store=debug [default: info].
    #[arg(long, env = "SPOOL_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Partitions of auto-created topics (`num.partitions`) [default: 1].
    #[arg(long, env = "SPOOL_NUM_PARTITIONS")]
    pub num_partitions: Option<u32>,
    /// Create unknown topics on Metadata and Produce (`auto.create.topics.enable`) [default: true].
    #[arg(long, env = "SPOOL_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: Option<bool>,
    /// Default `flush.messages`: fsync once this many records are unflushed, and hold their
    /// acknowledgement until it completes; 1 = fsync before every acknowledgement [default: never].
    #[arg(long, env = "SPOOL_FLUSH_MESSAGES")]
    pub flush_messages: Option<u64>,
    /// Default `flush.ms`: background fsync at most this long after a write, or sooner once 4 MiB
    /// of a partition are unsynced [default: 1000].
    #[arg(long, env = "SPOOL_FLUSH_MS")]
    pub flush_ms: Option<u64>,
    /// Default `segment.bytes` [default: 1073741824].
    #[arg(long, env = "SPOOL_SEGMENT_BYTES")]
    pub segment_bytes: Option<u64>,
    /// Default `retention.ms`, -1 for none [default: 604800000].
    #[arg(long, env = "SPOOL_RETENTION_MS", allow_hyphen_values = true)]
    pub retention_ms: Option<i64>,
    /// Default `retention.bytes`, -1 for none [default: -1].
    #[arg(long, env = "SPOOL_RETENTION_BYTES", allow_hyphen_values = true)]
    pub retention_bytes: Option<i64>,
    /// Default `max.message.bytes`: largest record batch accepted [default: 1048588].
    #[arg(long, env = "SPOOL_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<u32>,
    /// Largest Kafka request frame (`socket.request.max.bytes`) [default: 104857600].
    #[arg(long, env = "SPOOL_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Most client connections at once [default: 10000].
    #[arg(long, env = "SPOOL_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Requests in progress per connection before reading pauses [default: 64].
    #[arg(long, env = "SPOOL_MAX_INFLIGHT_REQUESTS")]
    pub max_inflight_requests: Option<usize>,
    /// Incremental fetch sessions kept at once, 0 for none [default: 1000].
    #[arg(long, env = "SPOOL_MAX_FETCH_SESSIONS")]
    pub max_fetch_sessions: Option<usize>,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits
    /// for more members [default: 3000].
    #[arg(long, env = "SPOOL_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// `group.min.session.timeout.ms` [default: 6000].
    #[arg(long, env = "SPOOL_GROUP_MIN_SESSION_TIMEOUT_MS")]
    pub group_min_session_timeout_ms: Option<i32>,
    /// `group.max.session.timeout.ms` [default: 1800000].
    #[arg(long, env = "SPOOL_GROUP_MAX_SESSION_TIMEOUT_MS")]
    pub group_max_session_timeout_ms: Option<i32>,
    /// `offsets.retention.minutes`: committed offsets of a group empty this long are deleted
    /// [default: 10080].
    #[arg(long, env = "SPOOL_OFFSETS_RETENTION_MINUTES")]
    pub offsets_retention_minutes: Option<u64>,
    /// `offsets.retention.check.interval.ms`: how often expired offsets are looked for
    /// [default: 600000].
    #[arg(long, env = "SPOOL_OFFSETS_RETENTION_CHECK_INTERVAL_MS")]
    pub offsets_retention_check_interval_ms: Option<u64>,
    /// `group.consumer.session.timeout.ms`: how long a consumer-protocol (KIP-848) member may go
    /// without heartbeating [default: 45000].
    #[arg(long, env = "SPOOL_GROUP_CONSUMER_SESSION_TIMEOUT_MS")]
    pub group_consumer_session_timeout_ms: Option<u64>,
    /// `group.consumer.heartbeat.interval.ms`: how often consumer-protocol members heartbeat
    /// [default: 5000].
    #[arg(long, env = "SPOOL_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS")]
    pub group_consumer_heartbeat_interval_ms: Option<u64>,
    /// Threads partition actors run on, 0 for one per core [default: 0].
    #[arg(long, env = "SPOOL_PARTITION_THREADS")]
    pub partition_threads: Option<usize>,
    /// How long an orderly shutdown (SIGTERM, Ctrl-C) may take; past it the process logs what
    /// was still running and exits with status 1 [default: 10000].
    #[arg(long, env = "SPOOL_SHUTDOWN_TIMEOUT_MS")]
    pub shutdown_timeout_ms: Option<u64>,
    /// Lines one log statement may write per second before the rest are counted and
    /// suppressed [default: 10].
    #[arg(long, env = "SPOOL_LOG_RATE_LIMIT")]
    pub log_rate_limit: Option<u32>,
    /// The voters of the cluster's metadata quorum, `id@host:port` of their inter-node
    /// listeners, comma-separated (1, 3 or 5 of them) [default: this node alone, a one-node
    /// cluster].
    #[arg(long, env = "SPOOL_CONTROLLER_VOTERS")]
    pub controller_voters: Option<String>,
    /// Where the inter-node listener binds, in a cluster of more than one node
    /// [default: 0.0.0.0:9093].
    #[arg(long, env = "SPOOL_CLUSTER_ADDR")]
    pub cluster_addr: Option<SocketAddr>,
    /// The host:port other nodes reach this node's inter-node listener at, for an observer
    /// (a node not among the voters) [default: --cluster-addr when it names an address].
    #[arg(long, env = "SPOOL_ADVERTISED_CLUSTER_ADDR")]
    pub advertised_cluster_addr: Option<String>,
    /// How often a node tells the controller it is alive [default: 2000].
    #[arg(long, env = "SPOOL_NODE_HEARTBEAT_MS")]
    pub node_heartbeat_ms: Option<u64>,
    /// How long the controller waits without a node's heartbeat before it fences the node
    /// [default: 9000].
    #[arg(long, env = "SPOOL_NODE_SESSION_TIMEOUT_MS")]
    pub node_session_timeout_ms: Option<u64>,
}

/// Parses `--controller-voters`: `id@host:port,...`.
pub fn parse_voters(text: &str) -> anyhow::Result<Vec<(u64, String)>> {
    let mut voters = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('@')
            .with_context(|| format!("voter '{item}' is not id@host:port"))?;
        let id: u64 = id
            .parse()
            .with_context(|| format!("voter '{item}': '{id}' is not a node id"))?;
        if !addr.contains(':') {
            anyhow::bail!("voter '{item}': '{addr}' is not host:port");
        }
        if voters.iter().any(|(v, _)| *v == id) {
            anyhow::bail!("node {id} is listed twice in --controller-voters");
        }
        voters.push((id, addr.to_string()));
    }
    if voters.is_empty() {
        anyhow::bail!("--controller-voters lists no voter");
    }
    Ok(voters)
}

macro_rules! fill {
    ($dst:ident, $src:ident, $($f:ident),*) => { $( if $dst.$f.is_none() { $dst.$f = $src.$f; } )* };
}

impl ServeArgs {
    /// Fills options not given by flag or environment from the `--config` file.
    pub fn with_file(mut self: Box<Self>) -> anyhow::Result<ServeArgs> {
        let Some(path) = self.config.clone() else {
            return Ok(*self);
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let file: ServeArgs = toml::from_str(&text)
            .with_context(|| format!("parsing config file {}", path.display()))?;
        fill!(
            self,
            file,
            data_dir,
            kafka_addr,
            http_addr,
            amqp_addr,
            amqp_users,
            amqp_frame_max,
            amqp_channel_max,
            amqp_heartbeat,
            amqp_max_inflight_bytes,
            amqp_disk_free_limit,
            advertised_kafka_addr,
            node_id,
            log_level,
            num_partitions,
            auto_create_topics,
            flush_messages,
            flush_ms,
            segment_bytes,
            retention_ms,
            retention_bytes,
            max_message_bytes,
            max_request_bytes,
            max_connections,
            max_inflight_requests,
            max_fetch_sessions,
            group_initial_rebalance_delay_ms,
            group_min_session_timeout_ms,
            group_max_session_timeout_ms,
            offsets_retention_minutes,
            offsets_retention_check_interval_ms,
            group_consumer_session_timeout_ms,
            group_consumer_heartbeat_interval_ms,
            partition_threads,
            shutdown_timeout_ms,
            log_rate_limit,
            controller_voters,
            cluster_addr,
            advertised_cluster_addr,
            node_heartbeat_ms,
            node_session_timeout_ms
        );
        Ok(*self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_parse_and_bad_ones_say_why() {
        let v = parse_voters("1@a:9093, 2@b:9093,3@c:9093").unwrap();
        assert_eq!(v[1], (2, "b:9093".to_string()));
        for bad in ["", "1a:9093", "x@a:1", "1@a", "1@a:1,1@b:2"] {
            assert!(parse_voters(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_fills_only_what_flags_left_unset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.toml");
        std::fs::write(
            &path,
            "node-id = 7\ndata-dir = \"/from/file\"\nflush-ms = 5\n",
        )
        .unwrap();
        let args = Box::new(ServeArgs {
            config: Some(path),
            node_id: Some(3),
            ..Default::default()
        })
        .with_file()
        .unwrap();
        assert_eq!(args.node_id, Some(3));
        assert_eq!(args.data_dir, Some(PathBuf::from("/from/file")));
        assert_eq!(args.flush_ms, Some(5));
    }
}
