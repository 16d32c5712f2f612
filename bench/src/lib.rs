//! `spool bench run` and `spool bench report`: the comparison harness. Workloads come from
//! files (`bench/workloads/`), run through drivers that are real clients of their systems
//! (Spool over Kafka, AMQP or HTTP; RabbitMQ; NATS JetStream; any Kafka broker), and results
//! are saved as JSON that `report` turns into tables and plots.

pub mod cli;
pub mod driver;
pub mod drivers;
pub mod message;
pub mod procstat;
pub mod recorder;
pub mod report;
pub mod result;
pub mod runner;
pub mod workload;
