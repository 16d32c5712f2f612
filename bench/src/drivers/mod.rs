//! The drivers, each a real client of its system.

pub mod amqp;
pub mod kafka;
pub mod nats;
