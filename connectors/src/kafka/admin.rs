//! Metadata requests: partitions, watermarks, topic creation.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;

use crate::error::{Error, Result};
use crate::kafka::{client_config, consumer, KappaConsumer};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The partition numbers of `topic`, sorted.
pub fn partitions(brokers: &str, topic: &str) -> Result<Vec<i32>> {
    let consumer = consumer(brokers)?;
    partitions_with(&consumer, brokers, topic)
}

pub(crate) fn partitions_with(
    consumer: &KappaConsumer,
    brokers: &str,
    topic: &str,
) -> Result<Vec<i32>> {
    let request = |source| Error::Request {
        what: "metadata".into(),
        topic: topic.to_string(),
        brokers: brokers.to_string(),
        source,
    };
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(request)?;
    let mut out: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(Error::UnknownTopic {
            topic: topic.to_string(),
            brokers: brokers.to_string(),
        });
    }
    Ok(out)
}

/// `(log start, high watermark)` of every partition of `topic`.
pub fn watermarks(brokers: &str, topic: &str) -> Result<BTreeMap<i32, (i64, i64)>> {
    let consumer = consumer(brokers)?;
    let mut out = BTreeMap::new();
    for p in partitions_with(&consumer, brokers, topic)? {
        let marks = consumer
            .fetch_watermarks(topic, p, TIMEOUT)
            .map_err(|source| Error::Request {
                what: format!("watermarks of partition {p}"),
                topic: topic.to_string(),
                brokers: brokers.to_string(),
                source,
            })?;
        out.insert(p, marks);
    }
    Ok(out)
}

/// Creates `topic` with `partitions` partitions (replication 1). An existing topic is not an error.
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(brokers)
            .create()
            .map_err(|source| Error::Client {
                brokers: brokers.to_string(),
                source,
            })?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let fut = admin.create_topics(
        [&new],
        &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
    );
    let results = futures_lite_block_on(fut).map_err(|source| Error::Request {
        what: "create topic".into(),
        topic: topic.to_string(),
        brokers: brokers.to_string(),
        source,
    })?;
    for result in results {
        if let Err((_, code)) = result {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                return Err(Error::Request {
                    what: "create topic".into(),
                    topic: topic.to_string(),
                    brokers: brokers.to_string(),
                    source: rdkafka::error::KafkaError::AdminOp(code),
                });
            }
        }
    }
    Ok(())
}

/// rdkafka's admin futures complete on librdkafka's own threads; a minimal executor is enough.
fn futures_lite_block_on<F: std::future::Future>(fut: F) -> F::Output {
    futures::executor::block_on(fut)
}
