//! Spool's Kafka front end: frames requests off TCP, decodes them with the `kafka-protocol`
//! crate, turns them into broker messages, and chooses every Kafka error code. Connections are
//! independent; on each, requests are handled concurrently and answered in order.

mod admin;
mod api_versions;
mod chunked_buf;
mod codec;
mod configs;
mod consumer_groups;
mod error_codes;
mod fetch;
mod fetch_session;
mod groups;
mod handler;
mod list_offsets;
mod metadata;
mod misc;
mod produce;
mod server;
mod turns;

pub use codec::{FrameError, MAX_FRAME_HEADER};
pub use server::{serve, KafkaConfig};
