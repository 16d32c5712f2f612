//! One AMQP connection: the handshake (protocol header, start, tune, open), then a loop that
//! reads frames, writes deliveries and confirms, and keeps heartbeats. One task owns the
//! connection and all its channels, so frames of a channel are handled in order.

use spool_metrics::live::{self, Frontend};

use crate::method_name::method_name;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{connection, AMQPClass, BasicProperties};
use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
pub use spool_actors::queues::delivery::{next_consumer_id, ConsumerId};
use spool_actors::queues::queue::{
    AddConsumer, ConsumerEvent, QueueActor, ReleaseAll, RemoveConsumer,
};
use spool_actors::queues::registry::ConnectionClosed;
use spool_actors::Broker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::channel::Channel;
use crate::codec::{self, CodecError};
use crate::reply::{self, AmqpError};
use crate::{AmqpConfig, Inflight};

/// Connection ids, for exclusive queues.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Deliveries buffered per connection before the queues hold back (their credit).
const DELIVERY_BUFFER: usize = 4096;

/// Something that finished off the connection's task and must be told to the client.
#[derive(Debug)]
pub enum Event {
    /// A publish in confirm mode was appended (or failed) on every queue it reached.
    Confirmed { channel: u16, seq: u64, ok: bool },
    /// The queue `name`, whose actor ended, has a new one (`None`: the queue was deleted
    /// meanwhile). See `crate::reattach`.
    QueueBack {
        name: String,
        addr: Option<actix::Addr<QueueActor>>,
    },
    /// A consumer could not attach to its queue's new actor (another connection's exclusive
    /// consumer got there first): it is cancelled.
    ReattachRefused { consumer: ConsumerId },
    /// The actor a consumer was attaching to ended before it took the consumer.
    ReattachFailed { queue: QueueHandle },
}

/// The pseudo-queue of RabbitMQ's direct reply-to: consumers of it get replies published to
/// the name their requests carried, with no queue in between.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Direct reply-to names in use on this listener, with where their replies go.
pub type DirectReplies =
    Arc<std::sync::Mutex<HashMap<String, (mpsc::Sender<ConsumerEvent>, ConsumerId)>>>;

/// A queue's address as this connection's consumers and unsettled deliveries hold it:
/// cloning an actix `Addr` allocates (a new sender's task and park flag), and a delivery
/// would clone it twice.
pub type QueueHandle = Arc<QueueRef>;

/// A queue's name and the actor serving it when the handle was made: when that actor ends,
/// the name finds the next one (see `crate::reattach`).
#[derive(Debug)]
pub struct QueueRef {
    pub name: String,
    pub addr: actix::Addr<QueueActor>,
}

impl QueueRef {
    /// A handle on queue `name`'s actor `addr`.
    pub fn handle(name: &str, addr: actix::Addr<QueueActor>) -> QueueHandle {
        Arc::new(QueueRef {
            name: name.to_string(),
            addr,
        })
    }
}

impl std::ops::Deref for QueueRef {
    type Target = actix::Addr<QueueActor>;

    fn deref(&self) -> &Self::Target {
        &self.addr
    }
}

/// What a consume asked for, so that the consumer can attach again to a restarted queue.
#[derive(Debug, Clone, Copy)]
pub struct ConsumeParams {
    pub prefetch: u32,
    pub auto_ack: bool,
    pub exclusive: bool,
    pub priority: i32,
}

impl ConsumeParams {
    /// The queue message that attaches `consumer` with these parameters.
    pub fn attach(&self, consumer: ConsumerId, sink: mpsc::Sender<ConsumerEvent>) -> AddConsumer {
        AddConsumer {
            consumer,
            prefetch: self.prefetch,
            auto_ack: self.auto_ack,
            exclusive: self.exclusive,
            priority: self.priority,
            sink,
        }
    }
}

/// A consumer of this connection: where its deliveries go.
pub struct ConsumerRef {
    pub channel: u16,
    /// As every basic.deliver carries it.
    pub tag: ShortString,
    pub queue: QueueHandle,
    pub no_ack: bool,
    /// Cancelled: deliveries still arriving for it go back to the queue.
    pub cancelled: bool,
    pub params: ConsumeParams,
    /// Its queue's actor ended and its notice ([`ConsumerEvent::QueueLost`]) arrived before the
    /// consumer was attached to the next actor.
    pub noticed: bool,
    /// Attached to its queue's next actor before the ended actor's notice arrived: deliveries
    /// arriving until it does came from the ended actor, and are claimed from the new one.
    pub draining: bool,
}

/// State shared by the connection and its channels.
pub struct Connection {
    pub id: u64,
    pub broker: Broker,
    pub config: Arc<AmqpConfig>,
    pub frame_max: usize,
    pub channel_max: u16,
    pub channels: HashMap<u16, Channel>,
    /// Channels closed by the server, awaiting the client's close-ok.
    pub closing: std::collections::HashSet<u16>,
    pub consumers: HashMap<ConsumerId, ConsumerRef>,
    pub deliveries: mpsc::Sender<ConsumerEvent>,
    pub events: mpsc::UnboundedSender<Event>,
    pub out: Vec<u8>,
    /// Direct reply-to consumers of this connection: (channel, tag, reply name) by id.
    pub reply_consumers: HashMap<ConsumerId, (u16, String, String)>,
    pub replies: DirectReplies,
    pub inflight: Arc<Inflight>,
    /// This connection has published (only publishers are blocked).
    pub publisher: bool,
    /// A publish of this connection took the bytes in flight over the limit.
    pub overflowed: bool,
    /// Publishes waiting to be appended together (see `Connection::flush_publishes`).
    pub staged: crate::channel::Staged,
    /// Publish flushes so far: a queue of many partitions gets each flush in the next one.
    pub flushes: u64,
    /// Channels with confirms decided and not yet sent.
    pub confirming: Vec<u16>,
    /// Settlements waiting to be sent together (see `Connection::flush_settles`).
    pub settles: crate::channel::StagedSettles,
    /// Settlements sent and not yet handled by their queue: one that its queue's actor never
    /// handled (it ended) comes back, to be sent to the next actor.
    pub settling: crate::reattach::Settling,
    /// Queues whose actor ended, while this connection finds the next one.
    pub reattaching: crate::reattach::Reattaching,
}

impl Connection {
    /// Queues one frame for writing.
    pub fn send(&mut self, frame: AMQPFrame) {
        codec::encode(&frame, &mut self.out);
    }

    /// Queues a method frame.
    pub fn method(&mut self, channel: u16, class: AMQPClass) {
        self.send(AMQPFrame::Method(channel, class));
    }

    /// Queues a message: its method, content header and body frames.
    pub fn content(
        &mut self,
        channel: u16,
        class: AMQPClass,
        props: BasicProperties,
        body: &Bytes,
    ) {
        self.method(channel, class);
        self.send(AMQPFrame::Header(
            channel,
            AMQPContentHeader {
                class_id: 60,
                body_size: body.len() as u64,
                properties: props,
            },
        ));
        let chunk = self.frame_max.saturating_sub(8).max(1);
        for part in body.chunks(chunk) {
            codec::encode_body(channel, part, &mut self.out);
        }
    }
}

/// Serves one accepted connection until it closes.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Broker,
    config: Arc<AmqpConfig>,
    replies: DirectReplies,
    inflight: Arc<Inflight>,
) {
    let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    let (deliveries_tx, deliveries_rx) = mpsc::channel(DELIVERY_BUFFER);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let mut conn = Connection {
        id,
        broker: broker.clone(),
        config: config.clone(),
        frame_max: config.frame_max as usize,
        channel_max: config.channel_max,
        channels: HashMap::new(),
        closing: Default::default(),
        consumers: HashMap::new(),
        deliveries: deliveries_tx,
        events: events_tx,
        out: Vec::new(),
        reply_consumers: HashMap::new(),
        replies,
        inflight,
        publisher: false,
        overflowed: false,
        staged: Default::default(),
        flushes: 0,
        confirming: Vec::new(),
        settles: Default::default(),
        settling: Default::default(),
        reattaching: Default::default(),
    };
    let mut io = Io {
        stream,
        buf: BytesMut::with_capacity(64 * 1024),
    };
    match handshake(&mut conn, &mut io, peer).await {
        Ok(Some(heartbeat)) => {
            info!(connection = id, %peer, "AMQP connection open");
            live::connections(Frontend::Amqp, 1);
            match run(&mut conn, &mut io, heartbeat, deliveries_rx, events_rx).await {
                End::ClientClosed => {
                    debug!(connection = id, "AMQP connection closed by the client")
                }
                End::ServerClosed(e) => {
                    info!(connection = id, code = e.code, reason = %e.text, "AMQP connection closed by the broker")
                }
                End::Io(e) => debug!(connection = id, error = %e, "AMQP connection lost"),
            }
            live::connections(Frontend::Amqp, -1);
        }
        Ok(None) => {}
        Err(e) => debug!(connection = id, %peer, error = %e, "AMQP handshake failed"),
    }
    cleanup(&mut conn).await;
    let _ = io.stream.shutdown().await;
}

struct Io {
    stream: TcpStream,
    buf: BytesMut,
}

impl Io {
    /// Reads the next frame (waiting for more bytes as needed).
    async fn frame(&mut self, frame_max: usize) -> Result<AMQPFrame, AmqpError> {
        loop {
            match codec::decode(&mut self.buf, frame_max) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(codec_error(e)),
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| AmqpError::connection(reply::CONNECTION_FORCED, e))?;
            live::bytes_received(Frontend::Amqp, n);
            if n == 0 {
                return Err(AmqpError::connection(
                    reply::CONNECTION_FORCED,
                    "peer closed",
                ));
            }
        }
    }

    async fn flush(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        if !out.is_empty() {
            self.stream.write_all(out).await?;
            live::bytes_sent(Frontend::Amqp, out.len());
            out.clear();
        }
        Ok(())
    }
}

fn codec_error(e: CodecError) -> AmqpError {
    match e {
        CodecError::Malformed(_) => AmqpError::connection(reply::SYNTAX_ERROR, e),
        _ => AmqpError::connection(reply::FRAME_ERROR, e),
    }
}

fn server_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    // Only what Spool honours.
    for cap in [
        "connection.blocked",
        "publisher_confirms",
        "basic.nack",
        "consumer_cancel_notify",
        "per_consumer_qos",
        "authentication_failure_close",
        "direct_reply_to",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut t = FieldTable::default();
    t.insert("product".into(), AMQPValue::LongString("Spool".into()));
    t.insert(
        "version".into(),
        AMQPValue::LongString(env!("CARGO_PKG_VERSION").into()),
    );
    t.insert("platform".into(), AMQPValue::LongString("Rust".into()));
    t.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    t
}

/// Protocol header, start/start-ok (authentication), tune/tune-ok, open/open-ok. Returns the
/// heartbeat interval, or `None` when the connection was refused.
async fn handshake(
    conn: &mut Connection,
    io: &mut Io,
    peer: SocketAddr,
) -> Result<Option<u16>, AmqpError> {
    let deadline = Duration::from_secs(10);
    loop {
        match codec::check_protocol_header(&mut io.buf) {
            codec::Greeting::Amqp091 => break,
            codec::Greeting::Other => {
                // Not 0-9-1: tell the client which protocol we speak, then close.
                let mut header = codec::PROTOCOL_HEADER.to_vec();
                let _ = io.flush(&mut header).await;
                return Ok(None);
            }
            codec::Greeting::Incomplete => {
                let read = tokio::time::timeout(deadline, io.stream.read_buf(&mut io.buf)).await;
                match read {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return Ok(None),
                }
            }
        }
    }
    conn.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: server_properties(),
            mechanisms: "PLAIN AMQPLAIN".into(),
            locales: "en_US".into(),
        })),
    );
    flush(conn, io).await?;
    let start_ok = match tokio::time::timeout(deadline, io.frame(conn.frame_max)).await {
        Ok(Ok(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::StartOk(s))))) => {
            s
        }
        Ok(Ok(_)) => {
            return refuse(
                conn,
                io,
                AmqpError::connection(reply::COMMAND_INVALID, "expected connection.start-ok"),
            )
            .await
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(None),
    };
    if let Err(e) = crate::auth::check(&conn.config, &start_ok, peer) {
        warn!(%peer, reason = %e.text, "AMQP login refused");
        return refuse(conn, io, e).await;
    }
    conn.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
            channel_max: conn.config.channel_max,
            frame_max: conn.config.frame_max,
            heartbeat: conn.config.heartbeat_s,
        })),
    );
    flush(conn, io).await?;
    let mut heartbeat = conn.config.heartbeat_s;
    loop {
        match tokio::time::timeout(deadline, io.frame(conn.frame_max)).await {
            Ok(Ok(AMQPFrame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::TuneOk(t)),
            ))) => {
                if t.frame_max != 0 {
                    if t.frame_max < 4096 || t.frame_max > conn.config.frame_max {
                        return refuse(
                            conn,
                            io,
                            AmqpError::connection(
                                reply::NOT_ALLOWED,
                                format!(
                                    "frame_max {} outside [4096, {}]",
                                    t.frame_max, conn.config.frame_max
                                ),
                            ),
                        )
                        .await;
                    }
                    conn.frame_max = t.frame_max as usize;
                }
                if t.channel_max != 0 {
                    conn.channel_max = t.channel_max.min(conn.config.channel_max);
                }
                heartbeat = t.heartbeat;
            }
            Ok(Ok(AMQPFrame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Open(o)),
            ))) => {
                let vhost = o.virtual_host.as_str();
                if vhost != "/" && !vhost.is_empty() {
                    return refuse(
                        conn,
                        io,
                        AmqpError::connection(
                            reply::ACCESS_REFUSED,
                            format!("vhost '{vhost}' not found"),
                        ),
                    )
                    .await;
                }
                conn.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
                );
                flush(conn, io).await?;
                return Ok(Some(heartbeat));
            }
            Ok(Ok(AMQPFrame::Heartbeat)) => {}
            Ok(Ok(_)) => {
                return refuse(
                    conn,
                    io,
                    AmqpError::connection(
                        reply::COMMAND_INVALID,
                        "expected connection.tune-ok or connection.open",
                    ),
                )
                .await
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(None),
        }
    }
}

async fn refuse(
    conn: &mut Connection,
    io: &mut Io,
    e: AmqpError,
) -> Result<Option<u16>, AmqpError> {
    close_connection(conn, &e);
    let _ = flush(conn, io).await;
    // Give the client a moment to read the close before the socket goes.
    let _ = tokio::time::timeout(Duration::from_millis(500), io.frame(0)).await;
    Ok(None)
}

async fn flush(conn: &mut Connection, io: &mut Io) -> Result<(), AmqpError> {
    conn.send_confirms();
    io.flush(&mut conn.out)
        .await
        .map_err(|e| AmqpError::connection(reply::CONNECTION_FORCED, e))
}

fn close_connection(conn: &mut Connection, e: &AmqpError) {
    conn.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: e.code,
            reply_text: ShortString::from(truncate(&e.text)),
            class_id: e.class_id,
            method_id: e.method_id,
        })),
    );
}

/// Reply texts are short strings (255 bytes at most).
pub fn truncate(text: &str) -> String {
    let mut end = text.len().min(255);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

enum End {
    ClientClosed,
    ServerClosed(AmqpError),
    Io(String),
}

async fn run(
    conn: &mut Connection,
    io: &mut Io,
    heartbeat_s: u16,
    mut deliveries: mpsc::Receiver<ConsumerEvent>,
    mut events: mpsc::UnboundedReceiver<Event>,
) -> End {
    let beat = (heartbeat_s > 0).then(|| Duration::from_secs(heartbeat_s as u64));
    let mut ticker = tokio::time::interval(beat.map_or(Duration::from_secs(3600), |b| b / 2));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut blocked = false;
    let stop = conn.broker.shutdown.clone();
    let stop = stop.wait();
    tokio::pin!(stop);
    loop {
        // Flow control: while published bytes on their way to the log exceed the limit, a
        // publishing connection is told so and its socket is not read.
        let inflight = conn.inflight.clone();
        let released = inflight.released();
        let memory = inflight.bytes() > conn.config.max_inflight_bytes;
        let disk = inflight.disk_low();
        let over = conn.publisher && (memory || disk);
        // A publish that went over the limit blocks at least once, however fast it lands.
        if !blocked && (over || std::mem::take(&mut conn.overflowed)) {
            blocked = true;
            conn.method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
                    reason: if disk && !memory {
                        "low on disk"
                    } else {
                        "low on memory"
                    }
                    .into(),
                })),
            );
        }
        if blocked && !over {
            blocked = false;
            conn.method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Unblocked(connection::Unblocked {})),
            );
        }
        if let Err(e) = flush(conn, io).await {
            return End::Io(e.text);
        }
        let step: Result<(), AmqpError> = tokio::select! {
            // RabbitMQ's words when a node stops: clients reconnect, as they do after a restart.
            _ = &mut stop => Err(AmqpError::connection(
                reply::CONNECTION_FORCED,
                "broker forced connection closure with reason 'shutdown'",
            )),
            _ = released, if blocked => Ok(()),
            read = io.stream.read_buf(&mut io.buf), if !blocked => match read {
                Ok(0) => return End::Io("peer closed".into()),
                Err(e) => return End::Io(e.to_string()),
                Ok(n) => {
                    live::bytes_received(Frontend::Amqp, n);
                    last_heard = Instant::now();
                    let mut result = Ok(());
                    loop {
                        match codec::decode(&mut io.buf, conn.frame_max) {
                            Ok(Some(frame)) => {
                                match handle_frame(conn, frame).await {
                                    Ok(true) => {}
                                    Ok(false) => {
                                        let _ = flush(conn, io).await;
                                        return End::ClientClosed;
                                    }
                                    Err(e) => { result = Err(e); break; }
                                }
                            }
                            Ok(None) => break,
                            Err(e) => { result = Err(codec_error(e)); break; }
                        }
                    }
                    // Everything published in this read goes out as one append per queue,
                    // and everything settled as one message per consumer.
                    conn.flush_settles();
                    result.and_then(|()| conn.flush_publishes())
                }
            },
            Some(ev) = deliveries.recv() => {
                conn.consumer_event(ev);
                while let Ok(ev) = deliveries.try_recv() {
                    conn.consumer_event(ev);
                }
                Ok(())
            },
            Some(lost) = conn.settling.next(), if !conn.settling.is_empty() => {
                if let Some(lost) = lost {
                    conn.settle_lost(lost);
                }
                Ok(())
            },
            Some(ev) = events.recv() => {
                conn.event(ev);
                while let Ok(ev) = events.try_recv() {
                    conn.event(ev);
                }
                Ok(())
            },
            _ = ticker.tick(), if beat.is_some() => {
                let beat = beat.expect("guarded");
                if last_heard.elapsed() > beat * 2 {
                    Err(AmqpError::connection(reply::CONNECTION_FORCED, format!("missed heartbeats from client, timeout: {}s", beat.as_secs())))
                } else {
                    conn.send(AMQPFrame::Heartbeat);
                    Ok(())
                }
            },
        };
        if let Err(e) = step {
            if e.connection {
                close_connection(conn, &e);
                let _ = flush(conn, io).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), io.frame(0)).await;
                return End::ServerClosed(e);
            }
        }
        if let Err(e) = flush(conn, io).await {
            return End::Io(e.text);
        }
    }
}

/// Handles one frame; `Ok(false)` when the client closed the connection.
async fn handle_frame(conn: &mut Connection, frame: AMQPFrame) -> Result<bool, AmqpError> {
    match frame {
        AMQPFrame::Heartbeat => Ok(true),
        AMQPFrame::ProtocolHeader(_) | AMQPFrame::InvalidHeartbeat(_) => Err(
            AmqpError::connection(reply::FRAME_ERROR, "unexpected frame"),
        ),
        AMQPFrame::Method(0, AMQPClass::Connection(m)) => match m {
            connection::AMQPMethod::Close(_) => {
                // What the connection held is released before close-ok: a client that has
                // its close answered finds its exclusive queues gone.
                cleanup(conn).await;
                conn.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                Ok(false)
            }
            connection::AMQPMethod::CloseOk(_) => Ok(false),
            // Flow control from a client is accepted and otherwise ignored.
            connection::AMQPMethod::Blocked(_) | connection::AMQPMethod::Unblocked(_) => Ok(true),
            other => Err(AmqpError::connection(
                reply::COMMAND_INVALID,
                format!(
                    "unexpected connection method {:?}",
                    std::mem::discriminant(&other)
                ),
            )),
        },
        AMQPFrame::Method(0, _) | AMQPFrame::Header(0, _) | AMQPFrame::Body(0, _) => {
            Err(AmqpError::connection(
                reply::COMMAND_INVALID,
                "channel 0 carries only connection methods",
            ))
        }
        frame => {
            let channel = frame.channel_id();
            let method = match &frame {
                AMQPFrame::Method(_, m) => Some((method_name(m), Instant::now())),
                _ => None,
            };
            let result = conn.channel_frame(channel, frame).await;
            if let Some((name, started)) = method {
                live::request(Frontend::Amqp, name, started.elapsed(), result.is_err());
            }
            if let Err(e) = result {
                if e.connection {
                    return Err(e);
                }
                conn.close_channel(channel, &e);
            }
            Ok(true)
        }
    }
}

/// Returns what a closing connection held to its queues and deletes its exclusive queues.
/// Runs when the client's close arrives and again when the connection ends (then with nothing
/// left to release).
async fn cleanup(conn: &mut Connection) {
    live::channels(-(conn.channels.len() as i64));
    // Publishes read before the end are appended, as a broker that had received them would.
    let _ = conn.flush_publishes();
    conn.flush_settles();
    for (_, mut ch) in conn.channels.drain() {
        ch.release_all();
    }
    // Its direct reply-to names go: a reply to one of them is unroutable from now on.
    {
        let mut replies = conn.replies.lock().expect("replies lock");
        for (_, (_, _, name)) in conn.reply_consumers.drain() {
            replies.remove(&name);
        }
    }
    for (id, c) in conn.consumers.drain() {
        c.queue.do_send(RemoveConsumer {
            consumer: id,
            requeue: true,
        });
        c.queue.do_send(ReleaseAll { consumer: id });
    }
    let _ = conn
        .broker
        .queues
        .send(ConnectionClosed {
            connection: conn.id,
        })
        .await;
}
