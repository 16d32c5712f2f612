//! `spool bench --client wire`: produce and fetch with a minimal Kafka client that does no
//! per-record work (pre-encoded batches out, batch headers read on the way in), so the figure is
//! the broker's and the network's, not a client library's. librdkafka spends most of a core per
//! 500k records; on a small machine that, not the broker, sets the librdkafka figures.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::{bail, Context};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use spool_actors::queues::record::{self, QueueRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Produce v8 and Fetch v11: the newest non-flexible versions, simplest to frame by hand.
const PRODUCE_VERSION: i16 = 8;
const FETCH_VERSION: i16 = 11;
/// Records per batch, and produce requests in flight on the connection.
const BATCH_RECORDS: usize = 256;
const IN_FLIGHT: usize = 4;

/// What one phase moved.
pub struct Moved {
    pub records: u64,
    pub bytes: u64,
    pub secs: f64,
}

/// Writes `records` records of `record_size` bytes round-robin over `partitions` with `acks`.
pub async fn produce(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    records: u64,
    record_size: usize,
    acks: i16,
) -> anyhow::Result<Moved> {
    let mut conn = Conn::connect(bootstrap).await?;
    let batch = encode_batch(record_size)?;
    let per_request = BATCH_RECORDS as u64 * partitions as u64;
    let requests = records.div_ceil(per_request);
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(
                (0..partitions)
                    .map(|p| {
                        PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(batch.clone()))
                    })
                    .collect(),
            )]);
    let start = Instant::now();
    let mut in_flight = VecDeque::new();
    for _ in 0..requests {
        if in_flight.len() == IN_FLIGHT {
            check_produce(conn.receive(in_flight.pop_front().unwrap()).await?)?;
        }
        in_flight.push_back(
            conn.send(ApiKey::Produce, PRODUCE_VERSION, &request)
                .await?,
        );
    }
    while let Some(id) = in_flight.pop_front() {
        check_produce(conn.receive(id).await?)?;
    }
    let written = requests * per_request;
    Ok(Moved {
        records: written,
        bytes: written * record_size as u64,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// Reads every partition from offset 0 until `records` records have arrived.
pub async fn fetch(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    records: u64,
) -> anyhow::Result<Moved> {
    let mut conn = Conn::connect(bootstrap).await?;
    let mut offsets = vec![0i64; partitions as usize];
    let (mut got, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    while got < records {
        let request = FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(64 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(
                    offsets
                        .iter()
                        .enumerate()
                        .map(|(p, &o)| {
                            FetchPartition::default()
                                .with_partition(p as i32)
                                .with_fetch_offset(o)
                                .with_partition_max_bytes(8 << 20)
                        })
                        .collect(),
                )]);
        let id = conn.send(ApiKey::Fetch, FETCH_VERSION, &request).await?;
        let mut body = conn.receive(id).await?;
        let response = FetchResponse::decode(&mut body, FETCH_VERSION)?;
        for t in &response.responses {
            for p in &t.partitions {
                if p.error_code != 0 {
                    bail!(
                        "fetch of partition {} failed: error {}",
                        p.partition_index,
                        p.error_code
                    );
                }
                let Some(mut set) = p.records.clone() else {
                    continue;
                };
                bytes += set.len() as u64;
                // Whole batches: base offset (8), length (4), then 11 bytes to the last offset delta.
                while set.len() >= 27 {
                    let base = set.get_i64();
                    let len = set.get_i32() as usize;
                    if set.len() < len {
                        break;
                    }
                    let delta = i32::from_be_bytes(set[11..15].try_into().unwrap());
                    got += delta as u64 + 1;
                    offsets[p.partition_index as usize] = base + delta as i64 + 1;
                    set.advance(len);
                }
            }
        }
    }
    Ok(Moved {
        records: got,
        bytes,
        secs: start.elapsed().as_secs_f64(),
    })
}

fn check_produce(mut body: Bytes) -> anyhow::Result<()> {
    let response = ProduceResponse::decode(&mut body, PRODUCE_VERSION)?;
    for t in &response.responses {
        for p in &t.partition_responses {
            if p.error_code != 0 {
                bail!(
                    "produce to partition {} failed: error {}",
                    p.index,
                    p.error_code
                );
            }
        }
    }
    Ok(())
}

/// One uncompressed batch of `BATCH_RECORDS` records, sent again and again (the broker assigns
/// offsets, so the same bytes are valid every time).
fn encode_batch(record_size: usize) -> anyhow::Result<Bytes> {
    let value = Bytes::from(
        (0..record_size)
            .map(|i| (i * 31 % 251) as u8)
            .collect::<Vec<_>>(),
    );
    let record = QueueRecord {
        value: Some(value),
        timestamp_ms: spool_actors::offsets_journal::now_ms(),
        ..QueueRecord::default()
    };
    let records = vec![record; BATCH_RECORDS];
    Ok(record::encode(&records)?.bytes().clone())
}

/// A connection with pipelined requests, answered in order: the minimal Kafka client that the
/// wire benchmark and `spool groups` use.
pub(crate) struct Conn {
    stream: TcpStream,
    next_id: i32,
    api: VecDeque<(i32, ApiKey, i16)>,
    buf: BytesMut,
}

impl Conn {
    pub(crate) async fn connect(bootstrap: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(bootstrap)
            .await
            .with_context(|| format!("connecting to {bootstrap}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            next_id: 0,
            api: VecDeque::new(),
            buf: BytesMut::with_capacity(1 << 20),
        })
    }

    pub(crate) async fn send(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &impl Encodable,
    ) -> anyhow::Result<i32> {
        self.next_id += 1;
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.next_id)
            .with_client_id(Some(StrBytes::from_static_str("spool-bench")))
            .encode(&mut frame, api.request_header_version(version))?;
        body.encode(&mut frame, version)?;
        let size = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&frame).await?;
        self.api.push_back((self.next_id, api, version));
        Ok(self.next_id)
    }

    /// Sends one request and decodes its response.
    pub(crate) async fn call<R: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &impl Encodable,
    ) -> anyhow::Result<R> {
        let id = self.send(api, version, body).await?;
        let mut bytes = self.receive(id).await?;
        R::decode(&mut bytes, version)
    }

    /// The body of the response to request `id`, which must be the oldest one outstanding.
    pub(crate) async fn receive(&mut self, id: i32) -> anyhow::Result<Bytes> {
        let (want, api, version) = self.api.pop_front().context("nothing outstanding")?;
        anyhow::ensure!(want == id, "responses are taken in request order");
        loop {
            if self.buf.len() >= 4 {
                let size = i32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
                if self.buf.len() >= 4 + size {
                    self.buf.advance(4);
                    let mut body = self.buf.split_to(size).freeze();
                    let header =
                        ResponseHeader::decode(&mut body, api.response_header_version(version))?;
                    anyhow::ensure!(header.correlation_id == id, "correlation id mismatch");
                    return Ok(body);
                }
                self.buf.reserve(4 + size - self.buf.len());
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("broker closed the connection");
            }
        }
    }
}

/// Commits one offset `commits` times, one request at a time, as a consumer committing after
/// each record does, and returns each commit's round trip in microseconds.
pub async fn commit_latencies(
    bootstrap: &str,
    topic: &str,
    commits: u64,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, OffsetCommitRequest, OffsetCommitResponse};
    const VERSION: i16 = 8;
    let mut conn = Conn::connect(bootstrap).await?;
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    for i in 0..commits {
        // Generation -1: a commit for an empty group, as admin tools and assign()-ing
        // consumers make; the broker's path is the same as a member's.
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("spool-bench-commits")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(i as i64)])]);
        let start = Instant::now();
        let id = conn.send(ApiKey::OffsetCommit, VERSION, &request).await?;
        let mut body = conn.receive(id).await?;
        hist.record(start.elapsed().as_micros() as u64)?;
        let response = OffsetCommitResponse::decode(&mut body, VERSION)?;
        let code = response.topics[0].partitions[0].error_code;
        anyhow::ensure!(code == 0, "commit failed: error {code}");
    }
    Ok(hist)
}
