//! Spool's AMQP 0-9-1 front end: RabbitMQ clients (lapin, pika, amqplib, kombu) get task-queue
//! semantics over Spool's log. `codec` frames bytes, `connection` runs the handshake and the
//! connection loop, `channel` turns methods into broker messages, `message` maps messages to
//! records, and `reply` holds every AMQP reply code Spool sends.

pub mod auth;
pub mod channel;
pub mod codec;
pub mod confirms;
pub mod connection;
pub mod message;
mod method_name;
pub mod reattach;
pub mod reply;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use spool_actors::Broker;
use spool_metrics::live;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Settings of the AMQP listener.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// Largest frame, overhead included (offered in connection.tune).
    pub frame_max: u32,
    /// Most channels per connection.
    pub channel_max: u16,
    /// Heartbeat offered, in seconds (0: none).
    pub heartbeat_s: u16,
    /// Largest message body accepted.
    pub max_message_bytes: u64,
    /// Connections accepted at once; more are closed at accept.
    pub max_connections: usize,
    /// Users and passwords (PLAIN and AMQPLAIN).
    pub users: Vec<(String, String)>,
    /// `guest` only from loopback, as RabbitMQ does.
    pub guest_loopback_only: bool,
    /// Bytes of published messages not yet appended, across connections, before publishing
    /// connections are blocked (`connection.blocked`) and their sockets no longer read.
    pub max_inflight_bytes: usize,
    /// The directory whose file system holds the data, watched for `disk_free_limit`.
    pub data_dir: PathBuf,
    /// Free bytes below which publishing connections are blocked ("low on disk"), as
    /// RabbitMQ's `disk_free_limit` (default 50 MB, as there).
    pub disk_free_limit: u64,
}

/// How often free disk space is looked at.
const DISK_CHECK: Duration = Duration::from_secs(1);

/// What blocks publishers, shared by every connection of the listener: published bytes on
/// their way to the log, and the disk alarm.
#[derive(Debug, Default)]
pub struct Inflight {
    bytes: AtomicUsize,
    /// Free disk space is below `disk_free_limit`.
    disk_low: AtomicBool,
    /// Woken whenever bytes are released or the disk alarm clears.
    released: tokio::sync::Notify,
}

impl Inflight {
    pub fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn release(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::Relaxed);
        self.released.notify_waiters();
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn disk_low(&self) -> bool {
        self.disk_low.load(Ordering::Relaxed)
    }

    /// Raises or clears the disk alarm; clearing it wakes blocked connections.
    fn set_disk_low(&self, low: bool) {
        if self.disk_low.swap(low, Ordering::Relaxed) && !low {
            self.released.notify_waiters();
        }
    }

    /// Resolves at the next release (guaranteed from the moment it is called).
    pub fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.released.notified()
    }
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat_s: 60,
            max_message_bytes: 16 * 1024 * 1024,
            max_connections: 10_000,
            users: vec![("guest".into(), "guest".into())],
            guest_loopback_only: true,
            max_inflight_bytes: 64 * 1024 * 1024,
            data_dir: PathBuf::from("."),
            disk_free_limit: 50_000_000,
        }
    }
}

/// Accepts AMQP connections until the listener fails or the broker's shutdown begins; at
/// shutdown every connection is closed with 320 CONNECTION_FORCED, as RabbitMQ closes them, and
/// this returns once all have ended.
pub async fn serve(
    listener: TcpListener,
    broker: Broker,
    config: AmqpConfig,
) -> std::io::Result<()> {
    let config = Arc::new(config);
    let replies = connection::DirectReplies::default();
    let inflight = Arc::new(Inflight::default());
    // The alarm is right before the first client is served.
    check_disk(&config, &inflight);
    tokio::spawn(watch_disk(config.clone(), inflight.clone()));
    let open = Arc::new(AtomicUsize::new(0));
    info!(addr = %listener.local_addr()?, "AMQP listener ready");
    let connections = TaskTracker::new();
    let stop = broker.shutdown.clone();
    let stop = stop.wait();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = &mut stop => break,
            accepted = listener.accept() => accepted?,
        };
        if open.load(Ordering::Relaxed) >= config.max_connections {
            warn!(%peer, limit = config.max_connections, "AMQP connection refused: limit reached");
            drop(stream);
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (broker, config, open) = (broker.clone(), config.clone(), open.clone());
        let (replies, inflight) = (replies.clone(), inflight.clone());
        connections.spawn(async move {
            connection::serve(stream, peer, broker, config, replies, inflight).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    connections.close();
    info!(
        connections = connections.len(),
        "AMQP listener closed; closing connections"
    );
    connections.wait().await;
    Ok(())
}

/// Raises the disk alarm while free space under the data directory is below the limit, and
/// clears it when space comes back. Runs as long as the listener.
async fn watch_disk(config: Arc<AmqpConfig>, inflight: Arc<Inflight>) {
    let mut tick = tokio::time::interval(DISK_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (config, inflight) = (config.clone(), inflight.clone());
        if tokio::task::spawn_blocking(move || check_disk(&config, &inflight))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// One look at the free space (a statvfs: blocking, if briefly).
fn check_disk(config: &AmqpConfig, inflight: &Inflight) {
    let free = match spool_store::available_bytes(&config.data_dir) {
        Ok(free) => free,
        Err(e) => {
            return warn!(error = %e, "free disk space unknown; the disk alarm stays as it is")
        }
    };
    let low = free < config.disk_free_limit;
    live::disk(free, config.disk_free_limit, low);
    if low != inflight.disk_low() {
        let limit = config.disk_free_limit;
        if low {
            warn!(
                free,
                limit, "disk alarm: free space below the limit, AMQP publishers blocked"
            );
        } else {
            info!(free, limit, "disk alarm cleared");
        }
    }
    inflight.set_disk_low(low);
}
