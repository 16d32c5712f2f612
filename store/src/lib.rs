//! Spool's storage layer: partition logs in segment files, and broker metadata in redb.
//!
//! This crate knows nothing about Kafka or AMQP. A log stores *frames*: a 12-byte header
//! (`base_offset: i64`, `length: i32`, both big-endian) followed by `length` payload bytes.
//! What the payload means is told to the log by a [`FrameFormat`] supplied by the caller; the
//! broker core supplies one for its batch format. See `docs/format.md` for the bytes on disk.

mod config;
mod disk;
mod error;
mod frame;
mod index;
mod log;
mod meta;
mod segment;

pub use config::{ConfigError, LogConfig};
pub use disk::{available_bytes, sync_everything};
pub use error::StoreError;
pub use frame::{FrameFormat, FrameInfo, WriterInfo, FRAME_HEADER_LEN};
pub use log::{AppendOutcome, Log, SyncJob};
pub use meta::{MetaStore, TopicRecord};
