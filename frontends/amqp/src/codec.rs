//! AMQP 0-9-1 framing with no I/O: bytes in, frames out, and frames to bytes. Frame parsing and
//! generation come from the `amq-protocol` crate; this module enforces the negotiated frame
//! size before buffering a frame, and tells a malformed frame from an incomplete one.

use amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame, WriteContext};
use bytes::{Buf, BytesMut};

/// The protocol header a 0-9-1 client sends first.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// Type, channel and size before a frame's payload, and the end octet after it.
const FRAME_OVERHEAD: usize = 8;
const FRAME_END: u8 = 0xCE;

/// Why the bytes are not a valid frame: each closes the connection with FRAME_ERROR (501)
/// or SYNTAX_ERROR (502).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("frame of {size} bytes exceeds the negotiated frame_max {max}")]
    TooLarge { size: usize, max: usize },
    #[error("frame does not end with 0xCE")]
    BadFrameEnd,
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    /// AMQP 0-9-1's protocol header (consumed).
    Amqp091,
    /// Anything else: answered with our header, then closed.
    Other,
    /// Too few bytes yet.
    Incomplete,
}

/// Checks the protocol header a connection starts with.
pub fn check_protocol_header(buf: &mut BytesMut) -> Greeting {
    if buf.len() < PROTOCOL_HEADER.len() {
        // A wrong first byte is known to be wrong at once.
        return if buf.iter().zip(PROTOCOL_HEADER).all(|(a, b)| a == b) {
            Greeting::Incomplete
        } else {
            Greeting::Other
        };
    }
    let ok = &buf[..8] == PROTOCOL_HEADER;
    buf.advance(8);
    if ok {
        Greeting::Amqp091
    } else {
        Greeting::Other
    }
}

/// Takes one whole frame off the front of `buf`, if one is there. `frame_max` bounds the
/// frame, overhead included (0: no limit).
pub fn decode(buf: &mut BytesMut, frame_max: usize) -> Result<Option<AMQPFrame>, CodecError> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let kind = buf[0];
    if !matches!(kind, 1 | 2 | 3 | 8) {
        return Err(CodecError::UnknownType(kind));
    }
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    let total = size + FRAME_OVERHEAD;
    if frame_max > 0 && total > frame_max {
        return Err(CodecError::TooLarge {
            size: total,
            max: frame_max,
        });
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    if buf[total - 1] != FRAME_END {
        return Err(CodecError::BadFrameEnd);
    }
    let frame = buf.split_to(total);
    match parse_frame(&frame[..]) {
        Ok((&[], f)) => Ok(Some(f)),
        Ok(_) => Err(CodecError::Malformed("trailing bytes in frame".into())),
        Err(e) => Err(CodecError::Malformed(
            format!("{e:?}").chars().take(200).collect(),
        )),
    }
}

/// Appends a frame's bytes to `out`.
pub fn encode(frame: &AMQPFrame, out: &mut Vec<u8>) {
    let taken = std::mem::take(out);
    match gen_frame(frame)(WriteContext::from(taken)) {
        Ok(ctx) => *out = ctx.write,
        // Frames we build always serialize; a failure is a bug, logged and dropped.
        Err(e) => tracing::error!(error = ?e, "could not encode an AMQP frame"),
    }
}

/// Appends a body frame carrying `payload`, the bytes `encode` writes for
/// `AMQPFrame::Body(channel, payload.to_vec())` without that copy of every delivered body.
pub fn encode_body(channel: u16, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(payload.len() + FRAME_OVERHEAD);
    out.push(3);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::{basic, AMQPClass};

    fn qos() -> AMQPFrame {
        AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: 10,
                global: false,
            })),
        )
    }

    #[test]
    fn frames_round_trip_and_arrive_in_pieces() {
        let mut bytes = Vec::new();
        encode(&qos(), &mut bytes);
        encode(&AMQPFrame::Heartbeat, &mut bytes);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in bytes {
            buf.extend_from_slice(&[b]);
            while let Some(f) = decode(&mut buf, 4096).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, vec![qos(), AMQPFrame::Heartbeat]);
    }

    #[test]
    fn body_frames_encode_as_amq_protocol_does() {
        for payload in [&b""[..], b"x", &[7u8; 1024][..]] {
            let (mut ours, mut theirs) = (vec![1u8], vec![1u8]);
            encode_body(258, payload, &mut ours);
            encode(&AMQPFrame::Body(258, payload.to_vec()), &mut theirs);
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn oversized_and_garbage_frames_are_refused_before_buffering() {
        let mut buf = BytesMut::from(&[1u8, 0, 1, 0x10, 0, 0, 0][..]);
        assert!(matches!(
            decode(&mut buf, 4096),
            Err(CodecError::TooLarge { .. })
        ));
        let mut buf = BytesMut::from(&[9u8, 0, 1, 0, 0, 0, 0][..]);
        assert_eq!(decode(&mut buf, 4096), Err(CodecError::UnknownType(9)));
        let mut buf = BytesMut::from(&[8u8, 0, 0, 0, 0, 0, 0, 0xAB][..]);
        assert_eq!(decode(&mut buf, 4096), Err(CodecError::BadFrameEnd));
        let mut buf = BytesMut::from(&[1u8, 0, 1, 0, 0, 0, 2, 0xff, 0xff, 0xCE][..]);
        assert!(matches!(
            decode(&mut buf, 4096),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn the_protocol_header_is_checked() {
        let mut buf = BytesMut::from(&b"AMQP\x00\x00\x09\x01rest"[..]);
        assert_eq!(check_protocol_header(&mut buf), Greeting::Amqp091);
        assert_eq!(&buf[..], b"rest");
        let mut short = BytesMut::from(&b"AMQ"[..]);
        assert_eq!(check_protocol_header(&mut short), Greeting::Incomplete);
        let mut http = BytesMut::from(&b"GET / HTTP"[..]);
        assert_eq!(check_protocol_header(&mut http), Greeting::Other);
    }
}
