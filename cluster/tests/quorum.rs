//! Three quorum members on loopback ports, each with its own store: the quorum forms, commands
//! proposed on any node commit once and reach every node, the controller's loss elects
//! another, and a member that comes back catches up.

use std::sync::Arc;
use std::time::Duration;

use spool_cluster::frame::ProposeError;
use spool_cluster::metadata::{place, Command, TopicRecord};
use spool_cluster::store::Applied;
use spool_cluster::{NodeId, Outcome, Quorum, QuorumConfig};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(id: NodeId, dir: &std::path::Path, voters: &[(NodeId, String)]) -> QuorumConfig {
    let addr = voters.iter().find(|(v, _)| *v == id).unwrap().1.clone();
    QuorumConfig {
        node_id: id,
        data_dir: dir.to_path_buf(),
        listen: Some(addr.parse().unwrap()),
        voters: voters.to_vec(),
        advertised: addr.clone(),
        max_frame_bytes: 16 << 20,
        heartbeat: Duration::from_millis(100),
        propose_timeout: Duration::from_secs(3),
        node_heartbeat: Duration::from_millis(500),
        session_timeout: Duration::from_secs(60),
    }
}

/// Waits (on the node's own notifications, bounded) until its metadata satisfies `ok`.
async fn until(q: &Quorum, what: &str, ok: impl Fn(&Applied) -> bool) {
    let mut rx = q.metadata();
    let wait = rx.wait_for(|a| ok(a));
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("node never saw {what}"))
        .unwrap();
}

fn topic(name: &str, m: &spool_cluster::Metadata) -> TopicRecord {
    TopicRecord {
        name: name.into(),
        id: [7; 16],
        configs: Default::default(),
        partitions: place(m, &[1, 2, 3], 3, 3).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_agree_fail_over_and_catch_up() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let voters: Vec<(NodeId, String)> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    let mut nodes: Vec<Option<Arc<Quorum>>> = Vec::new();
    for id in 1..=3u64 {
        let q = Quorum::start(config(id, dirs[id as usize - 1].path(), &voters))
            .await
            .unwrap();
        nodes.push(Some(q));
    }
    let node =
        |nodes: &Vec<Option<Arc<Quorum>>>, id: NodeId| nodes[id as usize - 1].clone().unwrap();

    // Every node may propose the bootstrap; exactly one takes effect.
    let mut outcomes = Vec::new();
    for id in 1..=3 {
        let boot = Command::Bootstrap {
            cluster_id: format!("cluster-of-{id}"),
            topics: vec![],
            definitions: vec![],
        };
        outcomes.push(node(&nodes, id).propose(boot).await.unwrap());
    }
    assert_eq!(
        outcomes.iter().filter(|o| **o == Outcome::Done).count(),
        1,
        "{outcomes:?}"
    );
    let cluster_id = node(&nodes, 1)
        .metadata()
        .borrow()
        .metadata
        .cluster_id
        .clone();
    for id in 1..=3 {
        let want = cluster_id.clone();
        until(&node(&nodes, id), "the cluster id", move |a| {
            a.metadata.cluster_id == want
        })
        .await;
    }

    // Registered nodes, then a topic proposed through a node that is not the controller.
    for id in 1..=3 {
        let reg = Command::RegisterNode {
            node: spool_cluster::metadata::NodeRecord {
                id,
                host: "127.0.0.1".into(),
                kafka_port: 9092,
                amqp_port: 5672,
                http_port: 8080,
                cluster_addr: voters[id as usize - 1].1.clone(),
                incarnation: 0,
                fenced: false,
            },
        };
        assert!(matches!(
            node(&nodes, id).propose(reg).await.unwrap(),
            Outcome::Registered { incarnation: 1 }
        ));
    }
    let controller = node(&nodes, 1).controller().expect("a controller");
    let follower = (1..=3).find(|id| *id != controller).unwrap();
    let m = node(&nodes, follower).metadata().borrow().metadata.clone();
    let created = node(&nodes, follower)
        .propose(Command::CreateTopic {
            topic: topic("orders", &m),
        })
        .await
        .unwrap();
    assert_eq!(created, Outcome::Done);
    for id in 1..=3 {
        until(&node(&nodes, id), "the topic", |a| {
            a.metadata.topics.contains_key("orders")
        })
        .await;
    }
    // The same command again is refused, once, everywhere.
    let again = node(&nodes, controller)
        .propose(Command::CreateTopic {
            topic: topic("orders", &m),
        })
        .await
        .unwrap();
    assert!(matches!(again, Outcome::Refused(_)));

    // The controller stops: another is elected and changes go on.
    let old = nodes[controller as usize - 1].take().unwrap();
    old.shutdown().await;
    drop(old);
    let survivor = (1..=3).find(|id| *id != controller).unwrap();
    let deleted = node(&nodes, survivor)
        .propose(Command::DeleteTopic {
            name: "orders".into(),
        })
        .await
        .unwrap();
    assert_eq!(deleted, Outcome::Done);
    let new_controller = node(&nodes, survivor).controller().unwrap();
    assert_ne!(new_controller, controller);

    // The old controller comes back from its store and catches up.
    let back = Quorum::start(config(
        controller,
        dirs[controller as usize - 1].path(),
        &voters,
    ))
    .await
    .unwrap();
    until(&back, "the deletion", |a| {
        a.metadata.cluster_id == cluster_id && !a.metadata.topics.contains_key("orders")
    })
    .await;
    nodes[controller as usize - 1] = Some(back);

    // With two members gone there is no quorum: a change is refused as unavailable.
    let lone = (1..=3).find(|id| *id != survivor).unwrap();
    for id in [lone] {
        nodes[id as usize - 1].take().unwrap().shutdown().await;
    }
    let other = (1..=3).find(|id| *id != survivor && *id != lone).unwrap();
    nodes[other as usize - 1].take().unwrap().shutdown().await;
    let alone = node(&nodes, survivor);
    let refused = alone
        .propose(Command::DeleteTopic { name: "x".into() })
        .await;
    assert!(
        matches!(
            refused,
            Err(ProposeError::Unavailable(_)) | Err(ProposeError::NotController { .. })
        ),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_voter_leads_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let voters = vec![(1, format!("127.0.0.1:{}", free_port()))];
    let mut cfg = config(1, dir.path(), &voters);
    cfg.heartbeat = Duration::from_millis(250);
    let started = std::time::Instant::now();
    let q = Quorum::start(cfg).await.unwrap();
    let out = q
        .propose(Command::Bootstrap {
            cluster_id: "solo".into(),
            topics: vec![],
            definitions: vec![],
        })
        .await
        .unwrap();
    assert_eq!(out, Outcome::Done);
    println!(
        "single voter: first commit {:?} after start",
        started.elapsed()
    );
}
