//! Supervision: a partition actor that panics is replaced with its log recovered, while the
//! other partitions keep serving.

use std::time::Duration;

use crate::partition::{InjectPanic, ReadRecords};
use crate::registry::CountRestarts;
use crate::test_support::{append, create_topic, partition, start_broker, test_batch};

#[actix_rt::test]
async fn a_panicking_partition_is_restarted_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Default::default()).await;
    create_topic(&broker, "t", 2).await;
    let addr = |p: i32| partition(&broker, "t", p);
    for p in 0..2 {
        assert_eq!(append(&broker, "t", p, 3).await, 0);
    }
    let doomed = addr(0);
    assert!(doomed.send(InjectPanic::default()).await.is_err());
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
