//! kafka-python (a pure-Python client) against the real broker, through a script.

mod common;

use common::{run_python_client, Spool};

#[test]
fn kafka_python_produces_consumes_and_administers() {
    let spool = Spool::start();
    run_python_client(
        &spool,
        "kafka_python_client.py",
        &spool.bootstrap(),
        "kafka-python: all ok",
    );
}
