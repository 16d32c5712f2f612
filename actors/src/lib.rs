//! Spool's broker core. Partitions are actors; the topic registry supervises them and is the
//! one place cluster metadata is produced. Front ends talk to the core only through the
//! messages defined here and the read-only [`Catalog`].

pub mod assignor;
pub mod broker;
pub mod catalog;
pub mod cluster_member;
pub mod consumer_group;
mod error;
pub mod faults;
pub mod group;
pub mod group_consumer;
pub mod group_lag;
pub mod group_registry;
pub mod journal;
pub mod offsets_journal;
pub mod partition;
pub mod partition_offsets;
mod producer_state;
pub mod queues;
pub mod record_batch;
pub mod registry;
pub mod supervision;

pub use broker::{Broker, BrokerConfig};
pub use catalog::{Catalog, CatalogSnapshot, NodeInfo, PartitionInfo, TopicInfo};
pub use error::BrokerError;

#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod samples_tests;
#[cfg(test)]
mod supervision_tests;
#[cfg(test)]
mod sync_ahead_tests;
#[cfg(test)]
mod test_support;
