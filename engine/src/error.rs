//! The engine's error type.

use crate::source::PartitionId;

/// A boxed error from a plug-in (source, sink) that the engine passes through unchanged.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A source failed to open or to read.
    #[error("input `{input}` failed")]
    Source {
        /// The input's name in the pipeline.
        input: String,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// A malformed record under the `fail` policy.
    #[error("{0}")]
    BadRecord(BadRecord),
    /// A sink failed to write.
    #[error("sink failed at time {time}")]
    Sink {
        /// The timestamp being written.
        time: u64,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// The pipeline asked for an input that was not supplied.
    #[error("the pipeline reads input `{name}` but no source was given for it (known: {known})")]
    UnknownInput {
        /// The missing input name.
        name: String,
        /// The inputs that were supplied.
        known: String,
    },
    /// A pipeline read an input it did not declare.
    #[error(
        "the pipeline reads input `{name}`, which is not among its declared inputs ({declared}): add it to `inputs()`"
    )]
    UndeclaredInput {
        /// The input read.
        name: String,
        /// The declared inputs.
        declared: String,
    },
    /// A job was run without a sink.
    #[error("job of pipeline `{pipeline}` has no sink: give one with `.sink(..)`")]
    NoSink {
        /// The pipeline.
        pipeline: String,
    },
    /// A checkpointed job reads an input that cannot be checkpointed.
    #[error("input `{input}` is read with Context::input, which checkpoints cannot save; the pipeline must read it with Context::durable_input, or run without --checkpoint")]
    NotCheckpointable {
        /// The input's name in the pipeline.
        input: String,
    },
    /// The cluster configuration is unusable.
    #[error("cluster configuration: {reason}")]
    Cluster {
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint location holds checkpoints this job must not use (another pipeline, other
    /// settings, another format). Not a fallback case: using them would give wrong results.
    #[error("checkpoint at {location} cannot be used by this job: {reason}; point --checkpoint elsewhere or delete it to start from scratch")]
    CheckpointIncompatible {
        /// The checkpoint location.
        location: String,
        /// What differs.
        reason: String,
    },
    /// Writing or reading a checkpoint failed.
    #[error("checkpoint object {object}: {reason}")]
    Checkpoint {
        /// The object.
        object: String,
        /// What went wrong.
        reason: String,
    },
    /// A read of a served view cannot be answered as asked.
    #[error("view `{view}`: {reason}")]
    Query {
        /// The view.
        view: String,
        /// What is wrong with the read.
        reason: String,
    },
    /// A worker thread panicked or could not start.
    #[error("worker failed: {reason}")]
    Worker {
        /// What happened.
        reason: String,
    },
}

/// A record that could not be decoded. Bad records are data: they flow beside the good ones and
/// the job's [`BadRecordPolicy`](crate::BadRecordPolicy) decides what happens to them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct BadRecord {
    /// Where the record came from.
    pub partition: PartitionId,
    /// Its offset in that partition.
    pub offset: i64,
    /// Why it was rejected.
    pub reason: String,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "malformed record in topic `{}` partition {} at offset {}: {}",
            self.partition.topic, self.partition.partition, self.offset, self.reason
        )
    }
}
