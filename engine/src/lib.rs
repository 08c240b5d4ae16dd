//! Kappa's runtime over timely dataflow and differential dataflow.
//!
//! The engine turns *partitioned, ordered inputs* (think: Kafka topic partitions, whether read
//! live from a broker or replayed from an archive) into differential-dataflow collections with
//! **deterministic times**, and delivers results to sinks **one completed timestamp at a time**.
//! It knows nothing of Kafka or of archive layouts: `kappa-connectors` and `kappa-replay` plug into
//! the [`Source`](source::PartitionedSource) trait defined here. It does use object storage (the
//! `object_store` crate), for one thing of its own: checkpoints and the recorded time decisions
//! beside them ([`checkpoint`], [`clock`]).
//!
//! Where to start reading:
//! 1. [`time`]: how a record's dataflow time is derived from its partition's records alone.
//! 2. [`source`]: the partitioned-source trait, and which worker owns which partition.
//! 3. [`input`]: the timely operator that reads a source, stamps times and holds capabilities.
//! 4. [`sink`]: the consistent sink, which hands a timestamp's consolidated updates to a
//!    [`Sink`] only once the frontier has passed it.
//! 5. [`runtime`]: workers, processes, and the [`execute`] entry point that ties them together;
//!    [`pipeline`]: a dataflow as a value ([`Pipeline`]) that runners, the `kappa` command and the
//!    property harness take.
//! 6. [`checkpoint`] and [`clock`]: restarting a job, and the decisions (backfill boundaries, idle
//!    advances) that keep its times the same across restarts; [`watermarks`]: what every worker
//!    knows of all partitions' watermarks (the resumable frontier, the idle target).
//!
//! # Examples
//!
//! Count words per partition-independent key from an in-memory source, on two workers:
//!
//! ```
//! use kappa_engine::{execute, ClusterConfig, JobOptions, MemorySink, MemorySource, Sources};
//!
//! let source = MemorySource::single("words", vec![(1_000, "a"), (2_000, "b"), (3_000, "a")]);
//! let sink = MemorySink::new();
//! let out = sink.clone();
//! let report = execute(
//!     &ClusterConfig::threads(2),
//!     JobOptions::default(),
//!     Sources::new().with("words", source),
//!     move |ctx| {
//!         // A decoder returns a value and its event time, or any displayable reason to reject
//!         // the record (which the job's bad-record policy then handles).
//!         let words = ctx.input("words", |rec| {
//!             let text = std::str::from_utf8(rec.value.as_deref().unwrap_or(b""))?;
//!             Ok::<_, std::str::Utf8Error>((text.to_string(), rec.timestamp.unwrap_or(0) as u64))
//!         })?;
//!         ctx.output(words.count(), out.clone());
//!         Ok(())
//!     },
//! )
//! .expect("job runs");
//! assert_eq!(report.records, 3);
//! assert_eq!(sink.accumulated(), vec![(("a".to_string(), 2), 1), (("b".to_string(), 1), 1)]);
//! ```
#![forbid(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod checkpoint;
pub mod clock;
mod error;
pub mod input;
pub mod pipeline;
pub mod runtime;
pub mod serve;
pub mod sink;
pub mod source;
pub mod time;
pub mod watermarks;

pub use checkpoint::{CheckpointConfig, Codec, Retention};
pub use error::{BadRecord, BoxError, Error, Result};
pub use pipeline::{BoxedSink, Input, InputInfo, Inputs, Job, JsonRow, Keyed, Pipeline, Row};
pub use runtime::{
    execute, BadRecordPolicy, ClusterConfig, Context, JobOptions, JobReport, Metrics, Sources, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LATENESS_MS, DEFAULT_MAX_PARTITION_SKEW_MS, DEFAULT_MAX_TIMESTAMP_JUMP_MS,
};
pub use sink::{JsonLinesSink, MemorySink, Sink};
pub use source::{MemorySource, Offset, PartitionId, PartitionedSource, Poll, Record, SourceFactory};
pub use time::{Time, TimeAssigner, TimestampError, MAX_TIMESTAMP_MS};

/// The differential-dataflow this engine runs on, so a pipeline crate's operators
/// (`kappa_engine::differential_dataflow::operators::...`) are always of the same version.
pub use differential_dataflow;
/// The timely dataflow this engine runs on (see [`differential_dataflow`](mod@differential_dataflow)).
pub use timely;

/// Difference type of every Kappa collection: a signed 64-bit count, exact under retraction.
pub type Diff = isize;

/// A differential-dataflow collection in a Kappa dataflow, at millisecond [`Time`].
pub type Collection<'scope, D> = differential_dataflow::VecCollection<'scope, Time, D, Diff>;

/// Installs ring as rustls' process-wide crypto provider, once; later calls do nothing.
///
/// Kappa's HTTP clients (S3 through `object_store`, the serving layer's forwarding between
/// processes) use rustls with ring rather than aws-lc-rs, whose C build was the slowest part of a
/// fresh clone's build. reqwest then needs a process-wide provider before its first client is
/// built (it panics without one), so Kappa's crates call this wherever they build one; a program
/// that builds its own `reqwest` client or `object_store::aws::AmazonS3` store calls it first.
pub fn install_tls_provider() {
    // An error means a provider is installed already (this one, or the program's own): keep it.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
