//! What metrics are built from: partition offsets and queue counts, seen from inside the broker.

use crate::group::GroupConfig;
use crate::partition::queue_append;
use crate::queues::record::{encode, QueueRecord};
use crate::queues::registry::DeclareQueue;
use crate::test_support::{append, create_topic, start_broker};

#[actix_rt::test]
async fn partition_offsets_and_queue_counts_follow_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), GroupConfig::default()).await;
    create_topic(&broker, "t", 2).await;
    append(&broker, "t", 0, 5).await;
    let declared = broker
        .queues
        .send(DeclareQueue {
            name: "q".into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: Default::default(),
            connection: 1,
        })
        .await
        .unwrap()
        .unwrap();
    let q = broker
        .catalog
        .snapshot()
        .partition("q", 0)
        .unwrap()
        .local
        .clone()
        .unwrap();
    let record = QueueRecord {
        value: Some(bytes::Bytes::from_static(b"task")),
        ..QueueRecord::default()
    };
    for _ in 0..3 {
        queue_append(&q, vec![encode(std::slice::from_ref(&record)).unwrap()])
            .await
            .unwrap()
            .unwrap();
    }
    let offsets = broker.partition_offsets();
    let of = |topic: &str, partition| {
        offsets
            .iter()
            .find(|p| p.topic == topic && p.partition == partition)
            .cloned()
    };
    let t0 = of("t", 0).unwrap();
    assert_eq!(
        (
            t0.topic.as_str(),
            t0.partition,
            t0.log_start_offset,
            t0.high_watermark
        ),
        ("t", 0, 0, 5)
    );
    assert!(t0.size_bytes > 0 && t0.segments == 1, "{t0:?}");
    assert_eq!(of("t", 1).map(|p| p.high_watermark), Some(0));
    assert_eq!(of("q", 0).map(|p| p.high_watermark), Some(3));
    let counts = broker.queue_counts().await;
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].0, declared.name);
    assert_eq!(
        (
            counts[0].1.ready,
            counts[0].1.unacked,
            counts[0].1.consumers
        ),
        (3, 0, 0)
    );
}
