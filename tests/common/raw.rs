//! Hand-built Kafka requests over a plain socket, for malformed input and error-code tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::Spool;

pub fn connect(spool: &Spool) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", spool.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A whole request frame, size prefix included.
pub fn request(api: ApiKey, version: i16, body: &impl Encodable) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("raw")));
    header
        .encode(&mut buf, api.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

/// The next response frame (header included), or `None` if the connection closed.
pub fn read_response(s: &mut TcpStream) -> Option<Bytes> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(Bytes::from(body))
}

/// True when the broker closed the connection (EOF) rather than answering.
pub fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0))
}

/// Sends a request and decodes its response; panics if the broker closes instead.
pub fn call<R: Decodable>(
    s: &mut TcpStream,
    api: ApiKey,
    version: i16,
    body: &impl Encodable,
) -> R {
    s.write_all(&request(api, version, body)).unwrap();
    let mut resp = read_response(s)
        .unwrap_or_else(|| panic!("{api:?} v{version}: connection closed instead of answering"));
    ResponseHeader::decode(&mut resp, api.response_header_version(version)).unwrap();
    R::decode(&mut resp, version)
        .unwrap_or_else(|e| panic!("{api:?} v{version}: undecodable response: {e}"))
}

/// Creates a topic with CreateTopics v7 and returns its id; panics unless it was created.
pub fn create_topic(s: &mut TcpStream, name: &str, partitions: i32) -> uuid::Uuid {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};
    let r: CreateTopicsResponse = call(
        s,
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_string())))
                .with_num_partitions(partitions)
                .with_replication_factor(1)]),
    );
    assert_eq!(r.topics[0].error_code, 0, "creating {name}");
    r.topics[0].topic_id
}
