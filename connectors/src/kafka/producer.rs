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

/// Where a produced record landed, from its delivery report.
pub type Delivered = std::result::Result<(i32, i64), KafkaError>;

struct Acks;

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<std::sync::mpsc::Sender<Delivered>>;
    fn delivery(&self, result: &DeliveryResult<'_>, reply: Self::DeliveryOpaque) {
        use rdkafka::message::Message;
        let _ = reply.send(match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((error, _)) => Err(error.clone()),
        });
    }
}

/// A producer that waits for each record's delivery report and returns its partition and offset,
/// as an application does before a read that must reflect its own write
/// (`wait_for=TOPIC:PARTITION:OFFSET`). It sends without lingering: one record at a time, as fast
/// as the broker acknowledges.
pub struct AckedProducer {
    producer: BaseProducer<Acks>,
    brokers: String,
}

impl AckedProducer {
    /// A producer to `brokers`.
    pub fn new(brokers: &str) -> Result<Self> {
        let producer = client_config(brokers)
            .set("linger.ms", "0")
            .set("enable.idempotence", "false")
            .create_with_context(Acks)
            .map_err(|source| Error::Client { brokers: brokers.to_string(), source })?;
        Ok(AckedProducer { producer, brokers: brokers.to_string() })
    }

    /// Produces `record` to `topic` and returns `(partition, offset)` once the broker has it.
    pub fn send(&self, topic: &str, record: &OutgoingRecord) -> Result<(i32, i64)> {
        let produce_error = |source| Error::Request {
            what: "produce".into(),
            topic: topic.into(),
            brokers: self.brokers.clone(),
            source,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let outgoing = BaseRecord::with_opaque_to(topic, Box::new(tx))
            .partition(record.partition)
            .key(&record.key)
            .payload(&record.value)
            .timestamp(record.timestamp);
        self.producer.send(outgoing).map_err(|(e, _)| produce_error(e))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            self.producer.poll(Duration::from_millis(1));
            match rx.try_recv() {
                Ok(delivered) => return delivered.map_err(produce_error),
                Err(_) if std::time::Instant::now() >= deadline => {
                    return Err(produce_error(KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)))
                }
                Err(_) => {}
            }
        }
    }
}
