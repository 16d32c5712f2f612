//! Group coordinator behaviour that needs time to pass: committed offsets expire once a group
//! has been empty for `offsets.retention.minutes`, and not before. (The expiry is written to the
//! offsets journal as a deletion frame, whose replay the journal's own tests cover.)

use std::time::{Duration, Instant};

use spool_store::LogConfig;

use crate::group::{CommitOffsets, FetchOffsets, GroupConfig};
use crate::group_registry::FindGroup;
use crate::offsets_journal::{now_ms, CommittedOffset};
use crate::{Broker, BrokerConfig};

fn start(dir: &std::path::Path, groups: GroupConfig) -> Broker {
    Broker::start(BrokerConfig {
        node_id: 1,
        data_dir: dir.to_path_buf(),
        advertised_host: "127.0.0.1".into(),
        advertised_port: 9092,
        default_partitions: 1,
        auto_create_topics: true,
        log_defaults: LogConfig::default(),
        partition_threads: 1,
        groups,
    })
    .unwrap()
}

async fn commit(broker: &Broker, group: &str, offset: i64) {
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
            ("t".to_string(), 0),
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
    let broker = start(dir.path(), short.clone());
    commit(&broker, "g", 42).await;
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
    let broker = start(dir.path(), config);
    commit(&broker, "g", 7).await;
    // Several expiry checks run meanwhile.
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(committed(&broker, "g").await, Some(7));
}
