//! Producing records, for the demo, the tests and the benches (the pipelines' output goes through
//! [`crate::KafkaSink`]). Delivery failures are counted, not dropped: [`produce`] fails if any record was not
//! acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::error::{Error, Result};
use crate::kafka::client_config;

/// One record to produce.
#[derive(Clone, Debug)]
pub struct OutgoingRecord {
    /// Target partition.
    pub partition: i32,
    /// Key bytes.
    pub key: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Record timestamp, ms.
    pub timestamp: i64,
}

#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<KafkaError>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| error.clone());
        }
    }
}

/// Produces `records` to `topic` and waits until all are acknowledged; `progress` gets the count
/// sent so far. Returns the number produced.
pub fn produce(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = OutgoingRecord>,
    progress: &dyn Fn(u64),
) -> Result<u64> {
    produce_with(brokers, topic, records, &[], progress)
}

/// As [`produce`], with extra librdkafka producer settings (`compression.type`, ...).
pub fn produce_with(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = OutgoingRecord>,
    settings: &[(&str, &str)],
    progress: &dyn Fn(u64),
) -> Result<u64> {
    let mut config = client_config(brokers);
    for (key, value) in settings {
        config.set(*key, *value);
    }
    let producer: BaseProducer<Deliveries> = config
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000")
        .set("enable.idempotence", "false")
        .create_with_context(Deliveries::default())
        .map_err(|source| Error::Client { brokers: brokers.to_string(), source })?;
    let produce_error =
        |source| Error::Request { what: "produce".into(), topic: topic.into(), brokers: brokers.into(), source };
    let mut sent = 0u64;
    for record in records {
        let mut outgoing = BaseRecord::to(topic)
            .partition(record.partition)
            .key(&record.key)
            .payload(&record.value)
            .timestamp(record.timestamp);
        loop {
            match producer.send(outgoing) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    outgoing = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(produce_error(e)),
            }
        }
        sent += 1;
        if sent.is_multiple_of(10_000) {
            producer.poll(Duration::ZERO);
            progress(sent);
        }
    }
    producer.flush(Duration::from_secs(120)).map_err(produce_error)?;
    progress(sent);
    let context = producer.context();
    if let Some(error) = context.first_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(Error::Request {
            what: format!("produce ({} records not acknowledged)", context.failed.load(Ordering::Relaxed)),
            topic: topic.into(),
            brokers: brokers.into(),
            source: error,
        });
    }
    Ok(sent)
}
