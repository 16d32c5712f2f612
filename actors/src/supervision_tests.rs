//! Supervision: a partition actor that panics is replaced with its log recovered, while the
//! other partitions keep serving.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::BytesMut;
use spool_store::LogConfig;

use crate::partition::{AppendBatches, InjectPanic, ReadRecords, ValidatedBatch};
use crate::registry::{CountRestarts, CreateTopic};
use crate::{Broker, BrokerConfig};

/// A v2 batch header with `count` records of opaque bytes and a correct CRC.
pub(crate) fn test_batch(count: i32) -> BytesMut {
    let mut b = vec![0u8; 61];
    b[16] = 2;
    b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    b[35..43].copy_from_slice(&1_700_000_000_000i64.to_be_bytes());
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    b[57..61].copy_from_slice(&count.to_be_bytes());
    b.extend_from_slice(&[7u8; 20]);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    BytesMut::from(&b[..])
}

#[actix_rt::test]
async fn a_panicking_partition_is_restarted_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerConfig {
        node_id: 1,
        data_dir: dir.path().to_path_buf(),
        advertised_host: "127.0.0.1".into(),
        advertised_port: 9092,
        default_partitions: 2,
        auto_create_topics: true,
        log_defaults: LogConfig::default(),
        partition_threads: 2,
        groups: Default::default(),
    })
    .unwrap();
    broker
        .registry
        .send(CreateTopic {
            name: "t".into(),
            partitions: Some(2),
            replication_factor: None,
            configs: BTreeMap::new(),
            validate_only: false,
        })
        .await
        .unwrap()
        .unwrap();
    let addr = |p: i32| {
        broker
            .catalog
            .snapshot()
            .partition("t", p)
            .unwrap()
            .local
            .clone()
            .unwrap()
    };
    for p in 0..2 {
        let r = addr(p)
            .send(AppendBatches {
                batches: vec![ValidatedBatch::new(test_batch(3).freeze()).unwrap()],
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.base_offset, 0);
    }
    let doomed = addr(0);
    assert!(doomed.send(InjectPanic).await.is_err());
    // The other partition serves throughout.
    let other = addr(1)
        .send(ReadRecords {
            offset: 0,
            max_bytes: 1 << 20,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(other.high_watermark, 3);
    // Wait for the watchdog's replacement to be published (an event, not a fixed sleep).
    let mut restarted = None;
    for _ in 0..100 {
        let a = addr(0);
        if a.connected() && a != doomed {
            restarted = Some(a);
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let fresh = restarted.expect("partition 0 was restarted");
    let read = fresh
        .send(ReadRecords {
            offset: 0,
            max_bytes: 1 << 20,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.high_watermark, 3);
    assert_eq!(read.records.len(), test_batch(3).len());
    assert_eq!(broker.registry.send(CountRestarts).await.unwrap(), 1);
}
