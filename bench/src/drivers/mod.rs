//! The drivers, each a real client of its system.

pub mod amqp;
pub mod http;
pub mod kafka;
pub mod nats;
