//! Kafka sources and sinks for Kappa, over rdkafka, and database outputs.
//!
//! - **Sources** ([`KafkaSource`], in [`kafka::source`]). The data path never joins a consumer
//!   group: each worker's reader is a `BaseConsumer` with an explicit assignment of the partitions
//!   the engine gave it, starting at explicit offsets. That is what lets `kappa-replay` continue a
//!   partition at exactly the offset its archive ends at, and what keeps partitions from moving
//!   between workers behind the engine's back.
//! - **Sinks** ([`KafkaSink`], in [`kafka::sink`]). A pipeline's output as a changelog topic (one
//!   record per update) or an upsert topic (key → current row, a tombstone when it goes away; see
//!   [`SinkMode`]), written exactly once without broker transactions: each output partition's
//!   records form a deterministic sequence, the idempotent producer writes it in order, and
//!   progress records in `<topic>.kappa-progress` tell a restarted job where to go on. Kafka
//!   transactions are an option on top ([`KafkaSinkConfig::transactional`]).
//! - **Database outputs** ([`PostgresSink`], in [`postgres`]): rows upserted into a table keyed
//!   by the output's key fields, each run of completed times in one transaction with the job's
//!   progress row, so a restart neither repeats nor skips a time; and [`RedisSink`], in
//!   [`redis`](mod@redis): one hash per key, the progress key set in the same `MULTI`/`EXEC`. Both
//!   are stores of one [`UpsertSink`] ([`upsert`]).
//! - **Metadata** ([`kafka::admin`]): partitions, watermarks and topic creation, for the command
//!   line, the sink and the handoff check; [`kafka::producer`] produces records for the demo, the
//!   tests and the benches.
//!
//! # Examples
//!
//! Count the records of topic `likes` by value length, into the upsert topic `lengths`:
//!
//! ```no_run
//! use kappa_connectors::{KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig, Keyed, ReadUntil, SinkMode};
//! use kappa_engine::{execute, ClusterConfig, JobOptions, Sources};
//!
//! #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
//! struct Lengths {
//!     length: usize,
//!     records: isize,
//! }
//!
//! impl Keyed for Lengths {
//!     fn key(&self) -> serde_json::Value {
//!         serde_json::json!({ "length": self.length })
//!     }
//! }
//!
//! let likes = KafkaSource::new(KafkaSourceConfig::new("127.0.0.1:9092", "likes", ReadUntil::HighWatermarkAtStart));
//! let lengths =
//!     KafkaSink::new(KafkaSinkConfig { mode: SinkMode::Upsert, ..KafkaSinkConfig::new("127.0.0.1:9092", "lengths") });
//! execute(&ClusterConfig::threads(2), JobOptions::default(), Sources::new().with("likes", likes), move |ctx| {
//!     let sizes = ctx.input("likes", |r| {
//!         Ok::<_, String>((r.value.as_ref().map_or(0, |v| v.len()), r.timestamp.unwrap_or(0) as u64))
//!     })?;
//!     ctx.output(sizes.count().map(|(length, records)| Lengths { length, records }), lengths.clone());
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
pub mod postgres;
pub mod redis;
pub mod upsert;

pub use error::{Error, Result};
pub use kafka::sink::{KafkaSink, KafkaSinkConfig, Keyed, SinkMode};
pub use kafka::source::{KafkaSource, KafkaSourceConfig, ReadUntil};
pub use postgres::{PostgresSink, PostgresSinkConfig, PostgresTable};
pub use redis::{RedisHashes, RedisSink, RedisSinkConfig};
pub use upsert::UpsertSink;
