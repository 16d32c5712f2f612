//! pika (RabbitMQ's Python client) against the AMQP facade, through a script: work queue,
//! properties and headers, priorities, TTL, delivery limit, reply codes, authentication.

mod common;

use std::process::Command;

use common::Spool;

#[test]
fn pika_works_queues_and_gets_rabbitmq_errors() {
    let spool = Spool::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/pika_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(spool.amqp_port.to_string())
        .output()
        .expect("python3 runs (install the packages with .ci/run)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pika script failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nbroker log:\n{}",
        spool.log()
    );
    assert!(stdout.contains("pika: all ok"));
}
