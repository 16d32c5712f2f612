//! A partition with a time-based flush policy also syncs once enough is unsynced, so a busy
//! partition's periodic fsync never has a whole interval of writes to push at once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::partition::{AppendBatches, DescribeLog, LogStatus, ValidatedBatch};
use crate::registry::CreateTopic;
use crate::test_support::{partition, start_broker, test_batch_of};

async fn append_mib(broker: &crate::Broker, mib: usize) {
    // Half a MiB a batch: under the default max.message.bytes.
    for _ in 0..2 {
        for _ in 0..mib {
            partition(broker, "t", 0)
                .send(AppendBatches {
                    batches: vec![ValidatedBatch::new(test_batch_of(1, 1 << 19).freeze()).unwrap()],
                })
                .await
                .unwrap()
                .unwrap();
        }
    }
}

async fn status(broker: &crate::Broker) -> LogStatus {
    partition(broker, "t", 0).send(DescribeLog).await.unwrap()
}

#[actix_rt::test]
async fn megabytes_unsynced_start_a_sync_long_before_flush_ms() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Default::default()).await;
    broker
        .registry
        .send(CreateTopic {
            name: "t".into(),
            partitions: Some(1),
            replication_factor: None,
            configs: BTreeMap::from([("flush.ms".to_string(), "3600000".to_string())]),
            validate_only: false,
        })
        .await
        .unwrap()
        .unwrap();
    // Under the threshold nothing starts a sync: the hour has not passed.
    append_mib(&broker, 2).await;
    let s = status(&broker).await;
    assert_eq!((s.high_watermark, s.flushed_offset), (4, 0));
    // Past it, a background sync covers what was written. It runs on a blocking thread, so
    // its completion is watched for (with a bound), not assumed.
    append_mib(&broker, 3).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(&broker).await;
        if s.flushed_offset >= 8 {
            break;
        }
        assert!(Instant::now() < deadline, "no sync after 5 MiB: {s:?}");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}
