//! Supervision: a partition actor that panics is replaced with its log recovered, while the
//! other partitions keep serving; a group coordinator that panics is replaced with its offsets.

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

/// A group coordinator that panics is restarted by its registry at once (not on the next
/// lookup), with its committed offsets; a deleted group's coordinator is not restarted.
#[actix_rt::test]
async fn a_panicking_coordinator_is_restarted_with_its_offsets_and_a_deleted_one_is_not() {
    use crate::group::{CommitOffsets, DeleteGroup, FetchOffsets};
    use crate::group_registry::{FindGroup, ForgetGroup, ListGroupCoordinators};
    use crate::offsets_journal::CommittedOffset;
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), Default::default()).await;
    let find = |create: bool| {
        broker.groups.send(FindGroup {
            group_id: "g".into(),
            create,
        })
    };
    let first = find(true).await.unwrap().unwrap().unwrap();
    let committed = CommittedOffset {
        offset: 42,
        leader_epoch: -1,
        metadata: String::new(),
        commit_ms: 1,
    };
    first
        .send(CommitOffsets {
            member_id: String::new(),
            instance_id: None,
            generation: -1,
            offsets: vec![(("t".into(), 0), committed.clone())],
        })
        .await
        .unwrap()
        .unwrap();
    assert!(first.send(InjectPanic::default()).await.is_err());
    // The registry's list (which never restarts anything itself) shows the new coordinator
    // once the end notice has been handled.
    let mut fresh = None;
    for _ in 0..100 {
        let listed = broker.groups.send(ListGroupCoordinators).await.unwrap();
        if let Some(a) = listed.into_iter().find(|a| a.connected() && *a != first) {
            fresh = Some(a);
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let fresh = fresh.expect("the coordinator was restarted");
    let offsets = fresh.send(FetchOffsets { partitions: None }).await.unwrap();
    assert_eq!(offsets, vec![(("t".into(), 0), Some(committed))]);

    // Deleted: stopped on purpose, and not restarted.
    fresh.send(DeleteGroup).await.unwrap().unwrap();
    broker
        .groups
        .send(ForgetGroup {
            group_id: "g".into(),
        })
        .await
        .unwrap();
    assert!(find(false).await.unwrap().unwrap().is_none());
    assert!(broker
        .groups
        .send(ListGroupCoordinators)
        .await
        .unwrap()
        .is_empty());
}
