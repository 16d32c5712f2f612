//! The inter-node link: a client per peer for openraft's RPCs and forwarded commands, and the
//! listener that answers them. One TCP connection per peer and purpose, one call at a time on
//! it, each with a deadline; a connection that fails is dropped and made again on the next call.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::frame::{self, Body, Decoded, Envelope};
use crate::metadata::NodeId;
use crate::TypeConfig;

/// The cluster id a node puts in its frames and expects in others' (empty until known).
#[derive(Clone, Default)]
pub struct ClusterId(Arc<RwLock<String>>);

impl ClusterId {
    /// The id now.
    pub fn get(&self) -> String {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Learns the id (from the metadata).
    pub fn set(&self, id: &str) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = id.to_string();
    }

    /// True when a frame naming `theirs` may be taken: either side may not know the id yet.
    pub fn accepts(&self, theirs: &str) -> bool {
        let ours = self.get();
        ours.is_empty() || theirs.is_empty() || ours == theirs
    }
}

/// What every connection of a node shares.
#[derive(Clone)]
pub struct LinkConfig {
    pub node_id: NodeId,
    pub cluster_id: ClusterId,
    /// Largest frame read or written.
    pub max_frame_bytes: usize,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection could be made: the peer is down or unreachable.
    #[error("node {node} at {addr} is unreachable: {source}")]
    Unreachable {
        node: NodeId,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The connection failed or timed out during the call.
    #[error("call to node {node} failed: {source}")]
    Network {
        node: NodeId,
        #[source]
        source: std::io::Error,
    },
    /// The peer refused the frame (another cluster).
    #[error("node {node} refused the call: {text}")]
    Refused { node: NodeId, text: String },
}

/// One connection to one peer.
pub struct Peer {
    link: LinkConfig,
    target: NodeId,
    addr: String,
    conn: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Peer {
    /// A peer at `addr`; the connection is made on the first call.
    pub fn new(link: LinkConfig, target: NodeId, addr: String) -> Peer {
        Peer {
            link,
            target,
            addr,
            conn: None,
            buf: Vec::new(),
        }
    }

    /// Sends `body` and waits up to `ttl` for the answer.
    pub async fn call(&mut self, body: Body, ttl: Duration) -> Result<Body, CallError> {
        let result = tokio::time::timeout(ttl, self.call_inner(body)).await;
        let outcome = match result {
            Ok(r) => r,
            Err(_) => Err(CallError::Network {
                node: self.target,
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"),
            }),
        };
        if outcome.is_err() {
            self.conn = None;
            self.buf.clear();
        }
        outcome
    }

    async fn call_inner(&mut self, body: Body) -> Result<Body, CallError> {
        let (node, addr) = (self.target, self.addr.clone());
        if self.conn.is_none() {
            let connect =
                tokio::time::timeout(self.link.connect_timeout, TcpStream::connect(&addr));
            let stream = match connect.await {
                Ok(Ok(s)) => s,
                Ok(Err(source)) => return Err(CallError::Unreachable { node, addr, source }),
                Err(_) => {
                    let source =
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                    return Err(CallError::Unreachable { node, addr, source });
                }
            };
            let _ = stream.set_nodelay(true);
            self.conn = Some(stream);
        }
        let stream = self.conn.as_mut().expect("connected");
        let bytes = frame::encode(&Envelope {
            cluster_id: self.link.cluster_id.get(),
            from: self.link.node_id,
            body,
        });
        let net = |source| CallError::Network { node, source };
        stream.write_all(&bytes).await.map_err(net)?;
        let reply = read_frame(stream, &mut self.buf, self.link.max_frame_bytes)
            .await
            .map_err(net)?
            .ok_or_else(|| net(std::io::ErrorKind::UnexpectedEof.into()))?;
        match reply.body {
            Body::Refused(text) => Err(CallError::Refused { node, text }),
            body => Ok(body),
        }
    }
}

/// Reads the next frame from `stream` (`None` at a clean end of stream).
pub async fn read_frame(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<Envelope>> {
    loop {
        match frame::decode(buf, max) {
            Ok(Decoded::Frame(envelope, used)) => {
                buf.drain(..used);
                return Ok(Some(*envelope));
            }
            Ok(Decoded::Incomplete) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Makes openraft's per-peer clients.
#[derive(Clone)]
pub struct Network {
    pub link: LinkConfig,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer::new(self.link.clone(), target, node.addr.clone())
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

fn rpc_error<E: std::error::Error>(
    e: CallError,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    match e {
        CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

fn remote<E: std::error::Error>(text: String) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(text)))
}

fn unexpected<E: std::error::Error>(
    body: Body,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    remote(format!("unexpected answer {body:?}"))
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self.call(Body::Append(rpc), option.hard_ttl()).await {
            Ok(Body::AppendReply(Ok(r))) => Ok(r),
            Ok(Body::AppendReply(Err(text))) => Err(remote(text)),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(rpc_error(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.call(Body::Snapshot(rpc), option.hard_ttl()).await {
            Ok(Body::SnapshotReply(Ok(r))) => Ok(r),
            Ok(Body::SnapshotReply(Err(text))) => Err(remote(text)),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(rpc_error(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self.call(Body::Vote(rpc), option.hard_ttl()).await {
            Ok(Body::VoteReply(Ok(r))) => Ok(r),
            Ok(Body::VoteReply(Err(text))) => Err(remote(text)),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(rpc_error(e)),
        }
    }
}

/// What answers a request that arrived over the link.
pub trait Responder: Clone + Send + Sync + 'static {
    /// The answer to `body`, sent by node `from`.
    fn respond(&self, from: NodeId, body: Body) -> impl std::future::Future<Output = Body> + Send;
}

/// Serves the link on `listener` until the task is dropped: each connection in a task of its
/// own, frames answered in order.
pub async fn serve<R: Responder>(listener: TcpListener, link: LinkConfig, responder: R) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "inter-node accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (link, responder) = (link.clone(), responder.clone());
        tokio::spawn(async move {
            let mut stream = stream;
            let _ = stream.set_nodelay(true);
            let mut buf = Vec::new();
            loop {
                let envelope = match read_frame(&mut stream, &mut buf, link.max_frame_bytes).await {
                    Ok(Some(e)) => e,
                    Ok(None) => return,
                    Err(e) => {
                        debug!(%peer, error = %e, "inter-node connection closed");
                        return;
                    }
                };
                let body = if link.cluster_id.accepts(&envelope.cluster_id) {
                    responder.respond(envelope.from, envelope.body).await
                } else {
                    warn!(%peer, theirs = %envelope.cluster_id, ours = %link.cluster_id.get(), "frame from another cluster refused");
                    Body::Refused(format!(
                        "this node belongs to cluster '{}', not '{}'",
                        link.cluster_id.get(),
                        envelope.cluster_id
                    ))
                };
                let refused = matches!(body, Body::Refused(_));
                let reply = frame::encode(&Envelope {
                    cluster_id: link.cluster_id.get(),
                    from: link.node_id,
                    body,
                });
                if stream.write_all(&reply).await.is_err() || refused {
                    return;
                }
            }
        });
    }
}
