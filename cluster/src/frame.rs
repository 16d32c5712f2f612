//! The inter-node link's frames, as a codec that does no I/O: a 4-byte big-endian length, then
//! the JSON of an [`Envelope`]. Every frame names the cluster and the sending node, so a frame
//! from something that is not a node of this cluster is refused.

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::metadata::{Command, NodeId, Outcome};
use crate::TypeConfig;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// One frame: who sent it, for which cluster, and what it carries.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's cluster id (empty until the node has learned it).
    pub cluster_id: String,
    pub from: NodeId,
    pub body: Body,
}

/// A request or its answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Body {
    Vote(VoteRequest<NodeId>),
    Append(AppendEntriesRequest<TypeConfig>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A command for the controller, forwarded by a node that is not it.
    Propose(Command),
    /// A node tells the controller it is alive.
    Heartbeat,
    /// A node that is not a voter (an observer) asks the controller to add it as a learner at
    /// `addr`, so that it receives the metadata.
    AddLearner {
        addr: String,
    },
    VoteReply(Result<VoteResponse<NodeId>, String>),
    AppendReply(Result<AppendEntriesResponse<NodeId>, String>),
    SnapshotReply(Result<InstallSnapshotResponse<NodeId>, String>),
    /// The outcome of a forwarded command; `Err` when it could not be committed (the text says
    /// why, with the leader if known).
    ProposeReply(Result<Outcome, ProposeError>),
    /// The controller heard the heartbeat (or the receiver is not the controller).
    HeartbeatReply(Result<(), ProposeError>),
    /// The learner was added (or the receiver is not the controller).
    AddLearnerReply(Result<(), ProposeError>),
    /// The frame was refused (another cluster, a malformed body).
    Refused(String),
}

/// Why a forwarded command was not committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// The receiver is not the controller; it names the controller when it knows one.
    #[error("node is not the controller (controller: {leader:?})")]
    NotController { leader: Option<NodeId> },
    /// The quorum could not commit it (no quorum, shutting down).
    #[error("the metadata quorum could not commit the change: {0}")]
    Unavailable(String),
}

/// What decoding found in the buffer.
#[derive(Debug)]
pub enum Decoded {
    /// A whole frame, and the bytes it took.
    Frame(Box<Envelope>, usize),
    /// Not enough bytes yet.
    Incomplete,
}

/// Why a frame could not be decoded; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("inter-node frame of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed inter-node frame: {0}")]
    Malformed(#[source] serde_json::Error),
}

/// Encodes one frame.
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    let body = serde_json::to_vec(envelope).expect("frames serialize");
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes the frame at the start of `buf`, if it is all there. A length over `max` is refused
/// before anything is buffered for it.
pub fn decode(buf: &[u8], max: usize) -> Result<Decoded, FrameError> {
    let Some(head) = buf.get(..HEADER_LEN) else {
        return Ok(Decoded::Incomplete);
    };
    let len = u32::from_be_bytes(head.try_into().expect("4 bytes")) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(Decoded::Incomplete);
    };
    let envelope = serde_json::from_slice(body).map_err(FrameError::Malformed)?;
    Ok(Decoded::Frame(Box::new(envelope), HEADER_LEN + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            cluster_id: "c".into(),
            from: 2,
            body: Body::Propose(Command::DeleteTopic { name: "t".into() }),
        }
    }

    #[test]
    fn a_frame_decodes_once_whole() {
        let bytes = encode(&envelope());
        for cut in 0..bytes.len() {
            assert!(matches!(
                decode(&bytes[..cut], 1 << 20),
                Ok(Decoded::Incomplete)
            ));
        }
        let Ok(Decoded::Frame(e, used)) = decode(&bytes, 1 << 20) else {
            panic!("no frame");
        };
        assert_eq!((e.from, e.cluster_id.as_str(), used), (2, "c", bytes.len()));
    }

    #[test]
    fn oversized_and_malformed_frames_are_refused() {
        let mut huge = (u32::MAX).to_be_bytes().to_vec();
        huge.extend_from_slice(b"{");
        assert!(matches!(
            decode(&huge, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        let mut junk = 5u32.to_be_bytes().to_vec();
        junk.extend_from_slice(b"nope!");
        assert!(matches!(
            decode(&junk, 1 << 20),
            Err(FrameError::Malformed(_))
        ));
    }
}
