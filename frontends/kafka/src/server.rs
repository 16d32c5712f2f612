//! The TCP listener and the per-connection loop.
//!
//! A connection has a reader and a writer. The reader takes frames, refuses what is not served,
//! and starts a task per request; the writer sends the answers in request order. At most
//! `max_inflight_requests` requests per connection are in progress at once.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseKind};
use spool_actors::Broker;
use spool_metrics::live::{self, Frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::api_versions::is_supported;
use crate::codec::{self, FrameError};
use crate::fetch_session::FetchSessionCache;
use crate::handler::{self, Ctx};
use crate::misc;
use crate::turns::Turns;

/// Settings of the Kafka listener.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Largest request frame accepted (`socket.request.max.bytes`).
    pub max_request_bytes: usize,
    /// Connections accepted at once; more are closed on accept.
    pub max_connections: usize,
    /// Requests in progress per connection before the reader stops reading.
    pub max_inflight_requests: usize,
    /// Incremental fetch sessions kept at once
    /// (`max.incremental.fetch.session.cache.slots`); 0 turns them off.
    pub max_fetch_sessions: usize,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            max_request_bytes: 100 * 1024 * 1024,
            max_connections: 10_000,
            max_inflight_requests: 64,
            max_fetch_sessions: 1000,
        }
    }
}

/// Accepts Kafka connections on `listener` until the broker's shutdown begins, then stops
/// accepting and returns once every connection has written the answers to the requests it had
/// read and closed.
pub async fn serve(listener: TcpListener, broker: Broker, config: KafkaConfig) {
    let shutdown = broker.shutdown.clone();
    let ctx = Ctx {
        broker,
        fetch_sessions: Arc::new(FetchSessionCache::new(config.max_fetch_sessions)),
        peer: None,
        turns: Turns::default(),
        config: Arc::new(config),
    };
    let open = Arc::new(AtomicUsize::new(0));
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "kafka listener up");
    }
    let connections = TaskTracker::new();
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "accept failed");
                // Out of file descriptors and the like: do not spin on it.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= ctx.config.max_connections {
            warn!(%peer, limit = ctx.config.max_connections, "connection refused: too many connections");
            drop(stream);
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (ctx, open) = (ctx.clone(), open.clone());
        connections.spawn(async move {
            let _ = stream.set_nodelay(true);
            connection(stream, peer, ctx).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    connections.close();
    info!(
        connections = connections.len(),
        "kafka listener closed; answering what was read"
    );
    connections.wait().await;
}

/// The answer to one request: a response frame as chunks, or nothing (Produce with acks=0).
type Pending = oneshot::Receiver<Option<Vec<Bytes>>>;

async fn connection(stream: TcpStream, peer: SocketAddr, mut ctx: Ctx) {
    ctx.peer = Some(peer);
    ctx.turns = Turns::default();
    debug!(%peer, "kafka connection opened");
    live::connections(Frontend::Kafka, 1);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Pending>(ctx.config.max_inflight_requests);
    let writer = tokio::spawn(async move {
        while let Some(pending) = rx.recv().await {
            match pending.await {
                Ok(Some(chunks)) => {
                    if write_chunks(&mut wr, &chunks).await.is_err() {
                        break;
                    }
                    live::bytes_sent(Frontend::Kafka, chunks.iter().map(Bytes::len).sum());
                }
                Ok(None) => {}
                // The handler failed to produce an answer: close rather than reorder.
                Err(_) => break,
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // At shutdown the connection reads no more: the answers to what it read are written, then
    // it closes (clients retry elsewhere or after the restart).
    let stop = ctx.broker.shutdown.clone();
    let stop = stop.wait();
    tokio::pin!(stop);
    let reason = loop {
        let frame = match codec::take_frame(&mut buf, ctx.config.max_request_bytes) {
            Ok(Some(f)) => f,
            Ok(None) => match tokio::select! {
                biased;
                _ = &mut stop => break None,
                read = rd.read_buf(&mut buf) => read,
            } {
                Ok(0) if buf.is_empty() => break None,
                Ok(0) => break Some("connection closed mid-frame".to_string()),
                Ok(n) => {
                    live::bytes_received(Frontend::Kafka, n);
                    continue;
                }
                Err(e) => break Some(e.to_string()),
            },
            Err(e) => break Some(e.to_string()),
        };
        match accept_request(frame, &ctx) {
            Ok(pending) => {
                if tx.send(pending).await.is_err() {
                    break None;
                }
            }
            Err(e) => break Some(e.to_string()),
        }
    };
    if let Some(reason) = reason {
        // A frame the connection was closed for counts as a failed request.
        live::request(Frontend::Kafka, "frame", Duration::ZERO, true);
        warn!(%peer, %reason, "closing kafka connection");
    }
    drop(tx);
    let _ = writer.await;
    live::connections(Frontend::Kafka, -1);
    debug!(%peer, "kafka connection closed");
}

/// Writes a frame's chunks with as few vectored writes as the socket allows.
async fn write_chunks(wr: &mut OwnedWriteHalf, chunks: &[Bytes]) -> std::io::Result<()> {
    /// Slices per `writev`; well under every platform's IOV_MAX.
    const SLICES: usize = 64;
    let (mut index, mut within) = (0usize, 0usize);
    while index < chunks.len() {
        let slices: Vec<IoSlice<'_>> = std::iter::once(&chunks[index][within..])
            .chain(chunks[index + 1..].iter().map(|c| &c[..]))
            .take(SLICES)
            .map(IoSlice::new)
            .collect();
        let mut written = wr.write_vectored(&slices).await?;
        if written == 0 && slices.iter().any(|s| !s.is_empty()) {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while index < chunks.len() && written >= chunks[index].len() - within {
            written -= chunks[index].len() - within;
            index += 1;
            within = 0;
        }
        within += written;
    }
    Ok(())
}

/// Checks, decodes and starts handling one request frame.
fn accept_request(frame: BytesMut, ctx: &Ctx) -> Result<Pending, FrameError> {
    let (key, version) = codec::peek_api(&frame)?;
    let api = ApiKey::try_from(key).map_err(|_| FrameError::UnknownApiKey(key))?;
    let (res_tx, res_rx) = oneshot::channel();
    if !is_supported(api, version) {
        if api != ApiKey::ApiVersions {
            return Err(FrameError::UnsupportedVersion { api, version });
        }
        // KIP-511: answer an unknown ApiVersions version at v0 with the supported list.
        let correlation_id = i32::from_be_bytes(frame[4..8].try_into().unwrap());
        let body = ResponseKind::ApiVersions(
            misc::api_versions()
                .with_error_code(kafka_protocol::ResponseError::UnsupportedVersion.code()),
        );
        let chunks = codec::encode_response(correlation_id, api, 0, &body).map_err(|reason| {
            FrameError::BadBody {
                api,
                version,
                reason,
            }
        })?;
        let _ = res_tx.send(Some(chunks));
        return Ok(res_rx);
    }
    let (header, api, body) = codec::decode_request(frame)?;
    let turn = matches!(api, ApiKey::Produce | ApiKey::OffsetCommit).then(|| ctx.turns.take());
    let ctx = ctx.clone();
    let arrived = Instant::now();
    tokio::spawn(async move {
        let correlation_id = header.correlation_id;
        let out = match handler::handle(&ctx, &header, body, turn).await {
            None => None,
            Some(resp) => match codec::encode_response(correlation_id, api, version, &resp) {
                Ok(b) => Some(b),
                Err(reason) => {
                    warn!(?api, version, %reason, "response encoding failed");
                    return;
                }
            },
        };
        live::request(Frontend::Kafka, api_name(api), arrived.elapsed(), false);
        let _ = res_tx.send(out);
    });
    Ok(res_rx)
}

/// The name of an API as Kafka's request metrics spell it (`Produce`, `Fetch`, ...), made once.
fn api_name(api: ApiKey) -> &'static str {
    static NAMES: LazyLock<std::collections::HashMap<ApiKey, &'static str>> = LazyLock::new(|| {
        (0..1000)
            .filter_map(|k| ApiKey::try_from(k).ok())
            .map(|a| (a, &*format!("{a:?}").leak()))
            .collect()
    });
    NAMES.get(&api).copied().unwrap_or("Unknown")
}
