//! kafka-python (a pure-Python client) against the real broker, through a script.

mod common;

use std::process::Command;

use common::Spool;

#[test]
fn kafka_python_produces_consumes_and_administers() {
    let spool = Spool::start();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/kafka_python_client.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(spool.bootstrap())
        .output()
        .expect("python3 runs (install the packages with .ci/run)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kafka-python script failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nbroker log:\n{}",
        spool.log()
    );
    assert!(stdout.contains("kafka-python: all ok"));
}
