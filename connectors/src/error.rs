//! The connectors' error type.

/// Result with the connectors' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A Kafka, PostgreSQL or Redis operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client could not be created (bad configuration).
    #[error("cannot create a Kafka client for brokers `{brokers}`")]
    Client {
        /// The bootstrap servers.
        brokers: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The topic does not exist on the brokers, or has no partitions.
    #[error("topic `{topic}` not found on brokers `{brokers}`; create it first, or check --brokers")]
    UnknownTopic {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
    },
    /// A metadata or offset request failed.
    #[error("{what} for topic `{topic}` failed (brokers `{brokers}`); is the broker reachable?")]
    Request {
        /// What was being asked.
        what: String,
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Reading a whole topic (up to its high watermarks) failed or did not finish.
    #[error("reading topic `{topic}` to its end on brokers `{brokers}` failed: {reason}")]
    ReadToEnd {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
        /// What went wrong.
        reason: String,
    },
    /// Consuming failed.
    #[error("consuming topic `{topic}` failed")]
    Consume {
        /// The topic.
        topic: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A PostgreSQL statement, connection or transaction failed.
    #[error("PostgreSQL output table `{table}`: {what} failed")]
    Postgres {
        /// The output table.
        table: String,
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: Box<postgres::Error>,
    },
    /// The output table exists but does not fit the pipeline's rows.
    #[error("PostgreSQL output table `{table}` does not fit the output: {reason}")]
    TableMismatch {
        /// The output table.
        table: String,
        /// What differs, and what to do.
        reason: String,
    },
    /// The job's progress moved since this run read it: another run of the job is writing.
    #[error(
        "output `{table}`: the progress of job `{job}` is no longer {expected}, where this run resumed: another \
         run of the same job is writing to it; stop one of them"
    )]
    Fenced {
        /// The output (table or key prefix).
        table: String,
        /// The job (its progress row or key).
        job: String,
        /// The progress this run resumed from.
        expected: u64,
    },
    /// A Redis command, connection or transaction failed.
    #[error("Redis output `{prefix}`: {what} failed")]
    Redis {
        /// The output's key prefix.
        prefix: String,
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: Box<redis::RedisError>,
    },
}
