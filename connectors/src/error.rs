//! The connectors' error type.

/// Result with the connectors' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A Kafka operation failed.
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
    /// Consuming failed.
    #[error("consuming topic `{topic}` failed")]
    Consume {
        /// The topic.
        topic: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
}
