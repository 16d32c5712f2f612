//! Group coordinator behaviour seen from inside the broker: committed offsets expire once a
//! group has been empty for `offsets.retention.minutes`, and not before (the expiry is written to
//! the offsets journal as a deletion frame, whose replay the journal's own tests cover); lag is
//! the distance from a commit to the high watermark.

use std::time::{Duration, Instant};

use crate::group::{CommitOffsets, FetchOffsets, GroupConfig};
use crate::group_registry::FindGroup;
use crate::offsets_journal::{now_ms, CommittedOffset};
use crate::test_support::{append, create_topic, start_broker};
use crate::Broker;

async fn commit(broker: &Broker, group: &str, partition: i32, offset: i64) {
    let addr = broker
        .groups
        .send(FindGroup {
            group_id: group.into(),
            create: true,
        })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    addr.send(CommitOffsets {
        member_id: String::new(),
        instance_id: None,
        generation: -1,
        offsets: vec![(
            ("t".to_string(), partition),
            CommittedOffset {
                offset,
                leader_epoch: -1,
                metadata: "m".into(),
                commit_ms: now_ms(),
            },
        )],
    })
    .await
    .unwrap()
    .unwrap();
}

async fn committed(broker: &Broker, group: &str) -> Option<i64> {
    let addr = broker
        .groups
        .send(FindGroup {
            group_id: group.into(),
            create: false,
        })
        .await
        .unwrap()
        .unwrap()?;
    let got = addr
        .send(FetchOffsets {
            partitions: Some(vec![("t".to_string(), 0)]),
        })
        .await
        .unwrap();
    got[0].1.as_ref().map(|c| c.offset)
}

#[actix_rt::test]
async fn offsets_of_an_empty_group_expire_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let short = GroupConfig {
        offsets_retention: Duration::from_millis(300),
        offsets_retention_check_interval: Duration::from_millis(50),
        ..GroupConfig::default()
    };
    let broker = start_broker(dir.path(), short).await;
    commit(&broker, "g", 0, 42).await;
    let committed_at = Instant::now();
    assert_eq!(committed(&broker, "g").await, Some(42));
    // Expiry runs on the coordinator's timer: wait for it, bounded.
    while committed(&broker, "g").await.is_some() {
        assert!(
            committed_at.elapsed() < Duration::from_secs(10),
            "never expired"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        committed_at.elapsed() >= Duration::from_millis(300),
        "expired before the retention"
    );
}

#[actix_rt::test]
async fn offsets_within_the_retention_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = GroupConfig {
        offsets_retention: Duration::from_secs(3600),
        offsets_retention_check_interval: Duration::from_millis(20),
        ..GroupConfig::default()
    };
    let broker = start_broker(dir.path(), config).await;
    commit(&broker, "g", 0, 7).await;
    // Several expiry checks run meanwhile.
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(committed(&broker, "g").await, Some(7));
}

#[actix_rt::test]
async fn lag_is_the_distance_from_the_commit_to_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), GroupConfig::default()).await;
    create_topic(&broker, "t", 2).await;
    append(&broker, "t", 0, 5).await;
    append(&broker, "t", 1, 3).await;
    commit(&broker, "g", 0, 2).await;
    commit(&broker, "g", 1, 3).await;

    let lag = broker.group_lag().await;
    assert_eq!(lag.len(), 1);
    let g = &lag[0];
    assert_eq!((g.group.as_str(), g.state, g.members), ("g", "Empty", 0));
    let per_partition: Vec<(i32, i64, i64, i64)> = g
        .partitions
        .iter()
        .map(|p| (p.partition, p.committed, p.end, p.lag))
        .collect();
    assert_eq!(per_partition, vec![(0, 2, 5, 3), (1, 3, 3, 0)]);
}
