//! Kafka sources (and, later, sinks) for Kappa, over rdkafka.
//!
//! The data path never joins a consumer group: each worker's [`KafkaSource`] reader is a
//! `BaseConsumer` with an explicit assignment of the partitions the engine gave it, starting at
//! explicit offsets. That is what lets `kappa-replay` continue a partition at exactly the offset
//! its archive ends at, and what keeps partitions from moving between workers behind the engine's
//! back.
//!
//! Start reading at [`kafka::source`]; [`kafka::admin`] holds the metadata calls (partitions,
//! watermarks, topic creation) the command line and the handoff check use.
//!
//! # Examples
//!
//! ```no_run
//! use kappa_connectors::{KafkaSource, KafkaSourceConfig, ReadUntil};
//! use kappa_engine::{execute, ClusterConfig, JobOptions, JsonLinesSink, Sources};
//!
//! let likes = KafkaSource::new(KafkaSourceConfig::new("127.0.0.1:9092", "likes", ReadUntil::HighWatermarkAtStart));
//! execute(&ClusterConfig::threads(2), JobOptions::default(), Sources::new().with("likes", likes), |ctx| {
//!     let values = ctx.input("likes", |r| Ok((r.value.as_ref().map_or(0, |v| v.len()), r.timestamp.unwrap_or(0) as u64)))?;
//!     ctx.output(values.count(), JsonLinesSink::new(None));
//!     Ok(())
//! })
//! .expect("job runs");
//! ```
#![forbid(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]
// Errors name the topic and brokers they concern; they are built on the cold path only.
#![allow(clippy::result_large_err)]

mod error;
pub mod kafka;

pub use error::{Error, Result};
pub use kafka::sink::{KafkaSink, KafkaSinkConfig, Keyed, SinkMode};
pub use kafka::source::{KafkaSource, KafkaSourceConfig, ReadUntil};
