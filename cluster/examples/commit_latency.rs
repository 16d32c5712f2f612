//! How long a metadata change takes to commit on a quorum of three members on loopback, each
//! with its own redb store (immediate durability: an fsync per log write), as issue 19 asks to
//! measure ("CreateTopics of one partition commits in under 50 ms p99 on three local nodes").
//!
//!     cargo run --release -p spool-cluster --example commit_latency -- [COMMANDS] [VOTERS]
//!
//! Proposes COMMANDS (default 500) topic creations one after another, through the controller and
//! through a follower (forwarded), and prints p50, p99 and max of each.

use std::time::{Duration, Instant};

use spool_cluster::metadata::{place, Command, NodeRecord, TopicRecord};
use spool_cluster::{NodeId, Quorum, QuorumConfig};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(500, |a| a.parse().expect("a count"));
    let voters_count: u64 = args.next().map_or(3, |a| a.parse().expect("a voter count"));
    let dirs: Vec<tempfile::TempDir> = (0..voters_count)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let voters: Vec<(NodeId, String)> = (1..=voters_count)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    let mut nodes = Vec::new();
    for (i, (id, addr)) in voters.iter().enumerate() {
        nodes.push(
            Quorum::start(QuorumConfig {
                node_id: *id,
                data_dir: dirs[i].path().to_path_buf(),
                listen: Some(addr.parse().unwrap()),
                voters: voters.clone(),
                advertised: addr.clone(),
                max_frame_bytes: 64 << 20,
                heartbeat: Duration::from_millis(250),
                propose_timeout: Duration::from_secs(10),
                node_heartbeat: Duration::from_secs(2),
                session_timeout: Duration::from_secs(9),
            })
            .await
            .unwrap(),
        );
    }
    for (id, addr) in &voters {
        let node = NodeRecord {
            id: *id,
            host: "127.0.0.1".into(),
            kafka_port: 9092,
            amqp_port: 5672,
            http_port: 8080,
            cluster_addr: addr.clone(),
            incarnation: 0,
            fenced: false,
        };
        nodes[0]
            .propose(Command::RegisterNode { node })
            .await
            .unwrap();
    }
    let controller = nodes[0].controller().expect("a controller");
    let ids: Vec<NodeId> = voters.iter().map(|(id, _)| *id).collect();
    let mut paths = vec![("through the controller", controller)];
    if let Some(follower) = ids.iter().find(|id| **id != controller) {
        paths.push(("through a follower (forwarded)", *follower));
    }
    for (label, via) in paths {
        let q = &nodes[via as usize - 1];
        let mut took = Vec::with_capacity(n);
        for i in 0..n {
            let m = q.metadata().borrow().metadata.clone();
            let topic = TopicRecord {
                name: format!("{label}-{i}"),
                id: [0; 16],
                configs: Default::default(),
                partitions: place(&m, &ids, 1, ids.len()).unwrap(),
            };
            let started = Instant::now();
            q.propose(Command::CreateTopic { topic }).await.unwrap();
            took.push(started.elapsed());
        }
        took.sort();
        println!(
            "{n} CreateTopic commits {label}, {voters_count} voters: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            percentile(&took, 0.5).as_secs_f64() * 1e3,
            percentile(&took, 0.99).as_secs_f64() * 1e3,
            took.last().unwrap().as_secs_f64() * 1e3,
        );
    }
    for q in nodes {
        q.shutdown().await;
    }
}
