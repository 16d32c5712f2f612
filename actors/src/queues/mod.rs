//! Queues: a log read with per-record delivery state, for the AMQP facade (and any front end
//! that wants task-queue semantics over a topic).

pub mod delivery;
pub mod queue;
mod queue_partition;
pub mod record;
pub mod registry;
pub mod routing;
pub mod state_journal;
