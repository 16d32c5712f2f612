//! Bad input over a raw socket: each gets Kafka's error code or a clean close, and the broker
//! keeps serving everyone else.

mod common;

use std::io::Write;
use std::net::TcpStream;

use bytes::{Bytes, BytesMut};
use common::raw::{closed, connect, read_response, request};
use common::Spool;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use spool_actors::queues::record::{self, QueueRecord};

/// A valid batch of these values, from the broker's own record encoder.
fn batch(values: &[&str]) -> BytesMut {
    let records: Vec<QueueRecord> = values
        .iter()
        .map(|v| QueueRecord {
            value: Some(Bytes::from(v.to_string())),
            timestamp_ms: 1_700_000_000_000,
            ..QueueRecord::default()
        })
        .collect();
    BytesMut::from(&record::encode(&records).unwrap().bytes()[..])
}

fn produce(topic: &str, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])])
}

fn produce_error(s: &mut TcpStream, req: &ProduceRequest) -> i16 {
    s.write_all(&request(ApiKey::Produce, 9, req)).unwrap();
    let mut resp = read_response(s).expect("a produce response");
    let _header =
        ResponseHeader::decode(&mut resp, ApiKey::Produce.response_header_version(9)).unwrap();
    let body = ProduceResponse::decode(&mut resp, 9).unwrap();
    body.responses[0].partition_responses[0].error_code
}

/// The broker still answers a well-formed request on a fresh connection.
fn still_serving(spool: &Spool) {
    let mut s = connect(spool);
    s.write_all(&request(
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    ))
    .unwrap();
    assert!(read_response(&mut s).is_some(), "broker stopped answering");
}

#[test]
fn bad_frames_close_the_connection_and_nothing_else() {
    let spool = Spool::start_with(&["--max-request-bytes", "1048576"]);
    // A frame over the configured limit.
    let mut s = connect(&spool);
    s.write_all(&(10_000_000i32).to_be_bytes()).unwrap();
    assert!(closed(&mut s));
    // A negative size.
    let mut s = connect(&spool);
    s.write_all(&(-1i32).to_be_bytes()).unwrap();
    assert!(closed(&mut s));
    // Garbage that is framed correctly but is no request.
    let mut s = connect(&spool);
    s.write_all(&[0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
        .unwrap();
    assert!(closed(&mut s));
    // An unknown API key.
    let mut s = connect(&spool);
    let mut raw = request(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default());
    raw[4..6].copy_from_slice(&999i16.to_be_bytes());
    s.write_all(&raw).unwrap();
    assert!(closed(&mut s));
    // A truncated body: a Metadata v9 header followed by half a topic array.
    let mut s = connect(&spool);
    let mut raw = request(
        ApiKey::Metadata,
        9,
        &MetadataRequest::default().with_topics(Some(vec![])),
    );
    raw.truncate(raw.len() - 2);
    let len = (raw.len() - 4) as i32;
    raw[0..4].copy_from_slice(&len.to_be_bytes());
    s.write_all(&raw).unwrap();
    assert!(closed(&mut s));
    // An API that is not served (transactions are not advertised).
    let mut s = connect(&spool);
    s.write_all(&request(
        ApiKey::AddPartitionsToTxn,
        3,
        &AddPartitionsToTxnRequest::default(),
    ))
    .unwrap();
    assert!(closed(&mut s));
    still_serving(&spool);
}

#[test]
fn an_unknown_api_versions_version_gets_unsupported_version_at_v0() {
    let spool = Spool::start();
    let mut s = connect(&spool);
    let mut raw = request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    raw[6..8].copy_from_slice(&99i16.to_be_bytes());
    s.write_all(&raw).unwrap();
    let mut resp = read_response(&mut s).unwrap();
    let header = ResponseHeader::decode(&mut resp, 0).unwrap();
    assert_eq!(header.correlation_id, 7);
    let body = ApiVersionsResponse::decode(&mut resp, 0).unwrap();
    assert_eq!(body.error_code, 35);
    assert!(body
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));
}

#[test]
fn corrupt_and_oversized_batches_get_error_codes_and_are_not_written() {
    let spool = Spool::start_with(&["--max-message-bytes", "2000"]);
    let mut s = connect(&spool);
    // A good batch first, so the topic exists and holds one record.
    assert_eq!(
        produce_error(&mut s, &produce("raw", batch(&["good"]).freeze())),
        0
    );
    // CRC mismatch: CORRUPT_MESSAGE (2).
    let mut bad = batch(&["tampered"]);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert_eq!(produce_error(&mut s, &produce("raw", bad.freeze())), 2);
    // A length field running past the records: CORRUPT_MESSAGE.
    let mut cut = batch(&["cut"]);
    cut.truncate(cut.len() - 3);
    assert_eq!(produce_error(&mut s, &produce("raw", cut.freeze())), 2);
    // Old message format (magic 1): CORRUPT_MESSAGE.
    let mut old = batch(&["old"]);
    old[16] = 1;
    assert_eq!(produce_error(&mut s, &produce("raw", old.freeze())), 2);
    // Over max.message.bytes: MESSAGE_TOO_LARGE (10).
    let big = "x".repeat(5000);
    assert_eq!(
        produce_error(&mut s, &produce("raw", batch(&[&big]).freeze())),
        10
    );
    // An invalid topic name: INVALID_TOPIC_EXCEPTION (17).
    assert_eq!(
        produce_error(&mut s, &produce("bad topic!", batch(&["x"]).freeze())),
        17
    );
    // The connection is still usable and only the good record was written.
    assert_eq!(
        produce_error(&mut s, &produce("raw", batch(&["good2"]).freeze())),
        0
    );
    let got = common::consume(&spool.bootstrap(), "raw", 0, rdkafka::Offset::Beginning, 2);
    let values: Vec<String> = got.iter().map(common::value).collect();
    assert_eq!(values, ["good", "good2"]);
    still_serving(&spool);
}

#[test]
fn the_connection_limit_is_enforced() {
    let spool = Spool::start_with(&["--max-connections", "2"]);
    // Connections are counted until their task ends, which is asynchronous (the harness's own
    // readiness probe may still count for a moment), so the claim tested is the limit itself:
    // of three connections held at once, at most two are served and at least one is refused.
    let mut conns: Vec<TcpStream> = (0..3).map(|_| connect(&spool)).collect();
    let mut answered = 0;
    for c in conns.iter_mut() {
        c.write_all(&request(
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default(),
        ))
        .unwrap();
        if read_response(c).is_some() {
            answered += 1;
        }
    }
    assert!(
        (1..=2).contains(&answered),
        "{answered} of 3 served with a limit of 2"
    );
}

/// Every served ListOffsets version encodes (v1-v3 have no leader epoch field: an old client
/// such as Debian's kcat uses them).
#[test]
fn every_list_offsets_version_answers() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let spool = Spool::start();
    let mut s = connect(&spool);
    assert_eq!(
        produce_error(&mut s, &produce("lo", batch(&["a", "b"]).freeze())),
        0
    );
    for version in 1..=8 {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("lo")))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)])]);
        s.write_all(&request(ApiKey::ListOffsets, version, &req))
            .unwrap();
        let mut resp =
            read_response(&mut s).unwrap_or_else(|| panic!("ListOffsets v{version} answered"));
        ResponseHeader::decode(
            &mut resp,
            ApiKey::ListOffsets.response_header_version(version),
        )
        .unwrap();
        let body = ListOffsetsResponse::decode(&mut resp, version).unwrap();
        let p = &body.topics[0].partitions[0];
        assert_eq!((p.error_code, p.offset), (0, 2), "v{version}");
    }
}
