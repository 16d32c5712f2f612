//! pika (RabbitMQ's Python client) against the AMQP facade, through a script: work queue,
//! properties and headers, priorities, TTL, delivery limit, dead-lettering, reply codes,
//! authentication.

mod common;

use common::{run_python_client, Spool};

#[test]
fn pika_works_queues_and_gets_rabbitmq_errors() {
    let spool = Spool::start();
    run_python_client(
        &spool,
        "pika_client.py",
        &spool.amqp_port.to_string(),
        "pika: all ok",
    );
}
