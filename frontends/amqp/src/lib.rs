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
pub mod reply;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use spool_actors::Broker;
use tokio::net::TcpListener;
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
}

/// Published bytes on their way to the log, shared by every connection of the listener.
#[derive(Debug, Default)]
pub struct Inflight {
    bytes: AtomicUsize,
    /// Woken whenever bytes are released.
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
        }
    }
}

/// Accepts AMQP connections until the listener fails.
pub async fn serve(
    listener: TcpListener,
    broker: Broker,
    config: AmqpConfig,
) -> std::io::Result<()> {
    let config = Arc::new(config);
    let replies = connection::DirectReplies::default();
    let inflight = Arc::new(Inflight::default());
    let open = Arc::new(AtomicUsize::new(0));
    info!(addr = %listener.local_addr()?, "AMQP listener ready");
    loop {
        let (stream, peer) = listener.accept().await?;
        if open.load(Ordering::Relaxed) >= config.max_connections {
            warn!(%peer, limit = config.max_connections, "AMQP connection refused: limit reached");
            drop(stream);
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (broker, config, open) = (broker.clone(), config.clone(), open.clone());
        let (replies, inflight) = (replies.clone(), inflight.clone());
        tokio::spawn(async move {
            connection::serve(stream, peer, broker, config, replies, inflight).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}
