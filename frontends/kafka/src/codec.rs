//! Sans-io framing and decoding: a Kafka frame is a big-endian `i32` size then that many bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};

use crate::chunked_buf::ChunkedBuf;

/// Bytes of the size prefix.
pub const MAX_FRAME_HEADER: usize = 4;

/// Why a frame or request could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("negative frame size {0}")]
    Negative(i32),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("malformed request header: {0}")]
    BadHeader(String),
    #[error("{api:?} v{version} is not supported")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("malformed {api:?} v{version} request: {reason}")]
    BadBody {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// Takes one whole frame from `buf` if it holds one.
pub fn take_frame(buf: &mut BytesMut, limit: usize) -> Result<Option<BytesMut>, FrameError> {
    if buf.len() < MAX_FRAME_HEADER {
        return Ok(None);
    }
    let size = i32::from_be_bytes(buf[..4].try_into().unwrap());
    if size < 0 {
        return Err(FrameError::Negative(size));
    }
    let size = size as usize;
    if size > limit {
        return Err(FrameError::TooLarge { size, limit });
    }
    if buf.len() < MAX_FRAME_HEADER + size {
        buf.reserve(MAX_FRAME_HEADER + size - buf.len());
        return Ok(None);
    }
    buf.advance(MAX_FRAME_HEADER);
    Ok(Some(buf.split_to(size)))
}

/// The API key and version at the start of a frame, read before anything else.
pub fn peek_api(frame: &[u8]) -> Result<(i16, i16), FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::BadHeader(
            "shorter than a request header".into(),
        ));
    }
    Ok((
        i16::from_be_bytes([frame[0], frame[1]]),
        i16::from_be_bytes([frame[2], frame[3]]),
    ))
}

/// Decodes a request whose API and version were already checked as supported.
pub fn decode_request(frame: BytesMut) -> Result<(RequestHeader, ApiKey, RequestKind), FrameError> {
    let mut bytes: Bytes = frame.freeze();
    let (key, version) = peek_api(&bytes)?;
    let api = ApiKey::try_from(key).map_err(|_| FrameError::UnknownApiKey(key))?;
    let header = decode_request_header_from_buffer(&mut bytes)
        .map_err(|e| FrameError::BadHeader(e.to_string()))?;
    let body = RequestKind::decode(api, &mut bytes, version).map_err(|e| FrameError::BadBody {
        api,
        version,
        reason: e.to_string(),
    })?;
    Ok((header, api, body))
}

/// Encodes a response frame (size prefix included) for a request of `api` at `version`, as
/// chunks for one vectored write: the record sets of a Fetch response are referenced, not copied.
pub fn encode_response(
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    body: &ResponseKind,
) -> Result<Vec<Bytes>, String> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api.response_header_version(version);
    let ResponseKind::Fetch(fetch) = body else {
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0);
        header
            .encode(&mut buf, header_version)
            .map_err(|e| e.to_string())?;
        body.encode(&mut buf, version).map_err(|e| e.to_string())?;
        let size = frame_size(buf.len())?;
        buf[..MAX_FRAME_HEADER].copy_from_slice(&size);
        return Ok(vec![buf.freeze()]);
    };
    let records: Vec<Bytes> = fetch
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .filter_map(|p| p.records.clone())
        .collect();
    let mut buf = ChunkedBuf::new(&records);
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| e.to_string())?;
    fetch.encode(&mut buf, version).map_err(|e| e.to_string())?;
    let size = frame_size(buf.len())?;
    let mut chunks = buf.into_chunks();
    // The first chunk holds the size placeholder: it is owned, never spliced.
    let mut first = BytesMut::from(std::mem::take(&mut chunks[0]));
    first[..MAX_FRAME_HEADER].copy_from_slice(&size);
    chunks[0] = first.freeze();
    Ok(chunks)
}

/// The size prefix of a frame of `len` bytes, prefix included.
fn frame_size(len: usize) -> Result<[u8; MAX_FRAME_HEADER], String> {
    i32::try_from(len - MAX_FRAME_HEADER)
        .map(i32::to_be_bytes)
        .map_err(|_| format!("response of {len} bytes is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};

    #[test]
    fn spliced_fetch_responses_encode_as_the_crate_does() {
        let big = Bytes::from((0..20_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let partition = |i, records: &Bytes| {
            PartitionData::default()
                .with_partition_index(i)
                .with_high_watermark(42)
                .with_records(Some(records.clone()))
        };
        let response =
            FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic(TopicName(
                    kafka_protocol::protocol::StrBytes::from_static_str("t"),
                ))
                .with_partitions(vec![
                    partition(0, &big),
                    partition(1, &Bytes::from_static(b"small")),
                    partition(2, &big.slice(100..9000)),
                ])]);
        for version in [4, 11, 12, 16, 18] {
            let body = ResponseKind::Fetch(response.clone());
            let chunks = encode_response(9, ApiKey::Fetch, version, &body).unwrap();
            assert!(chunks.len() > 2, "v{version}: nothing spliced");
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            let mut plain = BytesMut::new();
            plain.put_i32(joined.len() as i32 - 4);
            ResponseHeader::default()
                .with_correlation_id(9)
                .encode(&mut plain, ApiKey::Fetch.response_header_version(version))
                .unwrap();
            body.encode(&mut plain, version).unwrap();
            assert_eq!(joined, &plain[..], "v{version}");
        }
    }

    #[test]
    fn frames_are_taken_whole_and_limits_enforced() {
        let mut buf = BytesMut::new();
        buf.put_i32(3);
        buf.put_slice(b"ab");
        assert!(take_frame(&mut buf, 10).unwrap().is_none());
        buf.put_slice(b"c");
        assert_eq!(&take_frame(&mut buf, 10).unwrap().unwrap()[..], b"abc");
        buf.put_i32(11);
        assert!(matches!(
            take_frame(&mut buf, 10),
            Err(FrameError::TooLarge { .. })
        ));
        let mut neg = BytesMut::new();
        neg.put_i32(-5);
        assert!(matches!(
            take_frame(&mut neg, 10),
            Err(FrameError::Negative(-5))
        ));
    }
}
