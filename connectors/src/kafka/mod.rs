//! Kafka, through rdkafka's bundled librdkafka.

pub mod admin;
pub mod producer;
pub mod sink;
pub mod source;

use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

/// Client context of Kappa's consumers: reaching a partition's end is an expected event, handled
/// where it is polled, not an error to log.
#[derive(Clone, Copy, Debug, Default)]
pub struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if !eof {
            tracing::warn!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for QuietEof {}

/// A consumer with Kappa's settings and context.
pub type KappaConsumer = rdkafka::consumer::BaseConsumer<QuietEof>;

/// Creates a [`KappaConsumer`] for `brokers`.
pub fn consumer(brokers: &str) -> crate::Result<KappaConsumer> {
    client_config(brokers)
        .create_with_context(QuietEof)
        .map_err(|source| crate::Error::Client { brokers: brokers.to_string(), source })
}

/// Client settings shared by every Kappa Kafka client: no consumer group state is ever used for
/// positions (offsets are explicit), so auto-commit is off.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", "kappa")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "error")
        // How long the broker may hold a fetch. On Tansu it shows up whole in produce → visible
        // (serving_bench: 50 ms gave a p50 of 83 ms, 10 ms gives 28 ms), so it is short, at the
        // price of more fetch requests while a topic is quiet.
        .set("fetch.wait.max.ms", "10")
        .set("log_level", "3");
    config
}
