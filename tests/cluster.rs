//! A cluster of real `spool` processes on loopback: three nodes form one metadata quorum,
//! every node sees every node, losing the controller elects another, and a node that comes
//! back registers again.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, Spool};
use serde_json::Value;

/// Three `spool serve` processes, voters of one quorum.
struct Cluster {
    nodes: Vec<Spool>,
    /// `--controller-voters` as every node was given it.
    voters: String,
}

impl Cluster {
    fn start(n: u64) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// `n` nodes, each also given `extra` flags.
    fn start_with(n: u64, extra: &[&str]) -> Cluster {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = (0..n as usize)
            .map(|i| {
                let id = (i + 1).to_string();
                let addr = format!("127.0.0.1:{}", ports[i]);
                let mut args = vec![
                    "--node-id",
                    &id,
                    "--controller-voters",
                    &voters,
                    "--cluster-addr",
                    &addr,
                ];
                args.extend_from_slice(extra);
                Spool::start_with(&args)
            })
            .collect();
        Cluster { nodes, voters }
    }

    fn node(&mut self, id: u64) -> &mut Spool {
        &mut self.nodes[id as usize - 1]
    }

    /// `GET /cluster` on node `id`.
    fn status(&self, id: u64) -> Value {
        let (code, body) = self.nodes[id as usize - 1].http_get("/cluster");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until every listed node's view satisfies `ok` (the state is published by each
    /// node as it applies the metadata; this asks each node in turn, at most for 30 s).
    fn until(&self, ids: &[u64], what: &str, ok: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let views: Vec<Value> = ids.iter().map(|id| self.status(*id)).collect();
            if views.iter().all(&ok) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the nodes never agreed on {what}: {views:#?}\n{}",
                self.nodes
                    .iter()
                    .map(|n| n.log())
                    .collect::<Vec<_>>()
                    .join("\n----\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Asks `ok` until it holds, for at most 10 s.
fn eventually(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The brokers a Kafka client is told of by the node at `bootstrap` (rdkafka's Metadata).
fn kafka_brokers(bootstrap: &str) -> Vec<(i32, u16)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = common::client_config(bootstrap).create().unwrap();
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let mut brokers: Vec<(i32, u16)> = md
        .brokers()
        .iter()
        .map(|b| (b.id(), b.port() as u16))
        .collect();
    brokers.sort_unstable();
    brokers
}

/// Sends node `id`'s inter-node listener a frame longer than any allowed, one that is not JSON,
/// and one from another cluster: each connection is closed (the last after a refusal), and
/// the node still answers.
fn bad_frames_are_refused(cluster: &Cluster, id: u64) {
    use std::io::{Read, Write};
    let addr = cluster
        .voters
        .split(',')
        .find_map(|v| v.strip_prefix(&format!("{id}@")))
        .unwrap()
        .to_string();
    let exchange = |bytes: &[u8]| -> Vec<u8> {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        let mut answer = Vec::new();
        // The node closes the connection: the read ends (a reset counts as the end too).
        let _ = s.read_to_end(&mut answer);
        answer
    };
    let frame = |body: &[u8]| {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    };
    assert!(exchange(&u32::MAX.to_be_bytes()).is_empty(), "oversized");
    assert!(exchange(&frame(b"not json")).is_empty(), "malformed");
    let foreign = frame(br#"{"cluster_id":"another-cluster","from":9,"body":"Heartbeat"}"#);
    let answer = exchange(&foreign);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.contains("Refused") && text.contains("another-cluster"),
        "{text}"
    );
    let (code, _) = cluster.nodes[id as usize - 1].http_get("/cluster");
    assert_eq!(code, 200);
}

fn registered(view: &Value) -> usize {
    view["nodes"].as_array().map_or(0, Vec::len)
}

#[test]
fn three_processes_form_one_cluster_and_elect_a_new_controller() {
    let mut cluster = Cluster::start(3);
    cluster.until(&[1, 2, 3], "three registered nodes", |v| {
        registered(v) == 3 && v["controller"].is_u64()
    });
    let views: Vec<Value> = (1..=3).map(|id| cluster.status(id)).collect();
    let cluster_id = views[0]["cluster_id"].clone();
    let controller = views[0]["controller"].as_u64().unwrap();
    for v in &views {
        assert_eq!(v["cluster_id"], cluster_id, "one cluster id: {views:#?}");
        assert_eq!(v["controller"].as_u64(), Some(controller));
        assert_eq!(v["voters"], serde_json::json!([1, 2, 3]));
    }
    let leaders = views.iter().filter(|v| v["role"] == "leader").count();
    assert_eq!(leaders, 1, "{views:#?}");
    // Each node's listeners are known to every node.
    let node2 = views[0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == 2)
        .unwrap()
        .clone();
    assert_eq!(
        node2["kafka_port"].as_u64(),
        Some(cluster.node(2).port as u64)
    );
    assert_eq!(
        node2["http_port"].as_u64(),
        Some(cluster.node(2).http_port as u64)
    );
    // Every registered, live node is ready.
    for id in 1..=3 {
        let (code, body) = cluster.node(id).http_get("/readyz");
        assert_eq!(code, 200, "node {id}: {body}");
    }
    // Kafka clients of any node are told of every node (each node projects what it applied).
    for id in 1..=3 {
        let bootstrap = cluster.node(id).bootstrap();
        eventually(&format!("node {id} listing three brokers"), || {
            kafka_brokers(&bootstrap).len() == 3
        });
    }

    // kafka-python's admin client on any node names the same controller and cluster id.
    for id in 1..=3 {
        let bootstrap = cluster.node(id).bootstrap();
        let script = "import sys, json\n\
            from kafka.admin import KafkaAdminClient\n\
            a = KafkaAdminClient(bootstrap_servers=sys.argv[1])\n\
            d = a.describe_cluster()\n\
            print(json.dumps({'controller': d['controller_id'], 'cluster': d['cluster_id'], \
            'brokers': len(d['brokers'])}))";
        let out = std::process::Command::new("python3")
            .args(["-c", script, &bootstrap])
            .output()
            .expect("python3 with kafka-python (installed by .ci/run)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            seen["controller"].as_u64(),
            Some(controller),
            "node {id}: {seen}"
        );
        assert_eq!(seen["cluster"], cluster_id, "node {id}: {seen}");
        assert_eq!(seen["brokers"], 3, "node {id}: {seen}");
    }

    // `spool cluster status` on any node prints the same cluster.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["cluster", "status", "--http-addr"])
        .arg(format!("127.0.0.1:{}", cluster.node(2).http_port))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    let cluster_id = cluster_id.as_str().unwrap();
    assert!(
        table.starts_with(&format!(
            "cluster {cluster_id}  controller: node {controller}"
        )),
        "{table}"
    );
    assert_eq!(
        table.lines().filter(|l| l.contains("voter")).count(),
        3,
        "{table}"
    );

    // Bad input on the inter-node listener closes that connection, and the node serves on.
    bad_frames_are_refused(&cluster, 1);

    // SIGKILL the controller: the other two elect another.
    cluster.node(controller).kill9();
    let others: Vec<u64> = (1..=3).filter(|id| *id != controller).collect();
    cluster.until(&others, "a new controller", |v| {
        v["controller"].as_u64().is_some_and(|c| c != controller)
    });

    // Each survivor's /metrics counts the change, and exactly one reports being controller.
    let metric = |id: u64, name: &str| -> i64 {
        let (_, text) = cluster.nodes[id as usize - 1].http_get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from node {id}'s metrics"))
    };
    eventually("each survivor counting a controller change", || {
        others
            .iter()
            .all(|id| metric(*id, "spool_cluster_controller_changes_total") >= 1)
    });
    let controllers: i64 = others
        .iter()
        .map(|id| metric(*id, "spool_cluster_controller"))
        .sum();
    assert_eq!(controllers, 1);

    // SIGTERM on a follower ends it in order, with status 0, quorum member included.
    let follower = *others.iter().max().unwrap();
    let (status, took) = cluster
        .node(follower)
        .terminate(Duration::from_secs(10))
        .expect("a cluster node still running 10 s after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    println!("SIGTERM to exit on a cluster node: {took:?}");
    cluster.node(follower).launch();

    // It comes back: it registers again (a new incarnation), and every node sees that.
    cluster.node(controller).launch();
    cluster.until(&[1, 2, 3], "the restarted node's new incarnation", |v| {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == controller && n["incarnation"] == 2)
            && v["cluster_id"] == cluster_id
    });
}

fn node_view(view: &Value, id: u64) -> Value {
    view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// A node that stops heartbeating (SIGSTOP) is fenced by the controller once its session runs
/// out; resumed, it registers again and is live, with a new incarnation.
#[test]
fn a_paused_node_is_fenced_and_comes_back_live() {
    let cluster = Cluster::start_with(
        3,
        &[
            "--node-heartbeat-ms",
            "200",
            "--node-session-timeout-ms",
            "1500",
        ],
    );
    cluster.until(&[1, 2, 3], "three live nodes", |v| {
        registered(v) == 3 && v["controller"].is_u64()
    });
    let controller = cluster.status(1)["controller"].as_u64().unwrap();
    let paused = (1..=3).find(|id| *id != controller).unwrap();
    let others: Vec<u64> = (1..=3).filter(|id| *id != paused).collect();
    cluster.nodes[paused as usize - 1].pause();
    cluster.until(&others, "the paused node fenced", |v| {
        node_view(v, paused)["fenced"] == true
    });
    // Kafka clients are no longer sent to it.
    let bootstrap = cluster.nodes[others[0] as usize - 1].bootstrap();
    eventually("the fenced node left out of Metadata", || {
        kafka_brokers(&bootstrap)
            .iter()
            .all(|(id, _)| *id as u64 != paused)
    });
    // The others stay live.
    for id in &others {
        assert_eq!(node_view(&cluster.status(others[0]), *id)["fenced"], false);
    }
    cluster.nodes[paused as usize - 1].resume();
    cluster.until(&[1, 2, 3], "the resumed node live again", |v| {
        let n = node_view(v, paused);
        n["fenced"] == false && n["incarnation"] == 2
    });
}

/// A fourth node, not among the voters, is an observer: the controller adds it as a learner,
/// it learns the metadata (every node, the controller) and registers like the others.
#[test]
fn an_observer_learns_the_metadata_without_voting() {
    let mut cluster = Cluster::start(3);
    let voters = cluster.voters.clone();
    let addr = format!("127.0.0.1:{}", free_port());
    cluster.nodes.push(Spool::start_with(&[
        "--node-id",
        "4",
        "--controller-voters",
        &voters,
        "--cluster-addr",
        &addr,
    ]));
    cluster.until(&[1, 2, 3, 4], "four registered nodes", |v| {
        registered(v) == 4 && v["controller"].is_u64()
    });
    let observer = cluster.status(4);
    assert_eq!(observer["role"], "learner", "{observer:#}");
    assert_eq!(observer["voters"], serde_json::json!([1, 2, 3]));
    assert_eq!(node_view(&observer, 4)["voter"], false);
    assert_eq!(
        node_view(&observer, 4)["cluster_addr"].as_str(),
        Some(addr.as_str())
    );
}

/// An observer that listens on every interface must say where others reach it.
#[test]
fn an_observer_without_a_reachable_address_is_refused_with_a_reason() {
    let voters = format!("1@127.0.0.1:{}", free_port());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(["serve", "--node-id", "4", "--controller-voters", &voters])
        .args(["--cluster-addr", "0.0.0.0:0"])
        .args([
            "--data-dir",
            tempfile::tempdir().unwrap().path().to_str().unwrap(),
        ])
        .args(["--kafka-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--amqp-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--advertised-cluster-addr"), "{err}");
}

/// A data directory from before the cluster existed (no `cluster.redb`) starts as a one-node
/// cluster whose id is the one its clients knew, with its topics and records as they were.
#[tokio::test(flavor = "multi_thread")]
async fn a_data_directory_from_before_the_cluster_is_upgraded_in_place() {
    let mut spool = Spool::start();
    common::create_topic(&spool.bootstrap(), "kept", 1).await;
    let p = common::producer(&spool.bootstrap(), &[("acks", "all")]);
    for i in 0..10 {
        let v = format!("v{i}");
        p.send(
            rdkafka::producer::FutureRecord::<(), _>::to("kept").payload(&v),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    let before: Value = serde_json::from_str(&spool.http_get("/cluster").1).unwrap();
    let (status, _) = spool.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success());
    // What a broker written before the cluster left: no quorum store.
    std::fs::remove_file(spool.data_dir().join("cluster.redb")).unwrap();
    spool.launch();
    let after: Value = serde_json::from_str(&spool.http_get("/cluster").1).unwrap();
    assert_eq!(after["cluster_id"], before["cluster_id"], "{after:#}");
    assert_eq!(registered(&after), 1);
    let (code, _) = spool.http_get("/readyz");
    assert_eq!(code, 200);
    let records = common::consume(
        &spool.bootstrap(),
        "kept",
        0,
        rdkafka::Offset::Beginning,
        10,
    );
    assert_eq!(records.len(), 10);
}
