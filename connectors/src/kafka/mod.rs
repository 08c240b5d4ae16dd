//! Kafka, through rdkafka's bundled librdkafka.

pub mod admin;
pub mod source;

use rdkafka::ClientConfig;

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
        .set("fetch.wait.max.ms", "50")
        .set("log_level", "3");
    config
}
