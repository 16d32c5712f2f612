//! What the broker core's own tests share: a broker on a temporary directory, topics, batches.

use std::collections::BTreeMap;
use std::path::Path;

use actix::Addr;
use bytes::BytesMut;
use spool_store::LogConfig;

use crate::group::GroupConfig;
use crate::partition::{AppendBatches, PartitionActor, ValidatedBatch};
use crate::registry::CreateTopic;
use crate::{Broker, BrokerConfig};

/// A v2 batch header with `count` records of opaque bytes and a correct CRC.
pub(crate) fn test_batch(count: i32) -> BytesMut {
    test_batch_of(count, 20)
}

/// As [`test_batch`], with `bytes` bytes of records.
pub(crate) fn test_batch_of(count: i32, bytes: usize) -> BytesMut {
    let mut b = vec![0u8; 61];
    b[16] = 2;
    b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    b[35..43].copy_from_slice(&1_700_000_000_000i64.to_be_bytes());
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    b[57..61].copy_from_slice(&count.to_be_bytes());
    b.resize(61 + bytes, 7);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    BytesMut::from(&b[..])
}

/// A broker on `dir` with two partition threads, a one-node cluster.
pub(crate) async fn start_broker(dir: &Path, groups: GroupConfig) -> Broker {
    let cluster = crate::cluster_member::single_node_quorum(1, dir)
        .await
        .unwrap();
    Broker::start(
        BrokerConfig {
            node_id: 1,
            data_dir: dir.to_path_buf(),
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            default_partitions: 1,
            auto_create_topics: true,
            log_defaults: LogConfig::default(),
            partition_threads: 2,
            groups,
        },
        cluster,
    )
    .unwrap()
}

pub(crate) async fn create_topic(broker: &Broker, name: &str, partitions: i32) {
    broker
        .registry
        .send(CreateTopic {
            name: name.into(),
            partitions: Some(partitions),
            replication_factor: None,
            configs: BTreeMap::new(),
            validate_only: false,
        })
        .await
        .unwrap()
        .unwrap();
}

/// The partition's current actor, as the catalog publishes it.
pub(crate) fn partition(broker: &Broker, topic: &str, p: i32) -> Addr<PartitionActor> {
    broker
        .catalog
        .snapshot()
        .partition(topic, p)
        .unwrap()
        .local
        .clone()
        .unwrap()
}

/// Appends one batch of `records` records; returns its base offset.
pub(crate) async fn append(broker: &Broker, topic: &str, p: i32, records: i32) -> u64 {
    partition(broker, topic, p)
        .send(AppendBatches {
            batches: vec![ValidatedBatch::new(test_batch(records).freeze()).unwrap()],
        })
        .await
        .unwrap()
        .unwrap()
        .base_offset
}
