//! Spool's AMQP 0-9-1 front end: RabbitMQ clients get task-queue semantics over Spool's log.

pub mod codec;
pub mod message;
