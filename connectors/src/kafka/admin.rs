//! Metadata requests: partitions, watermarks, topic creation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::error::{Error, Result};
use crate::kafka::{client_config, consumer, KappaConsumer};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The partition numbers of `topic`, sorted.
pub fn partitions(brokers: &str, topic: &str) -> Result<Vec<i32>> {
    let consumer = consumer(brokers)?;
    partitions_with(&consumer, brokers, topic)
}

pub(crate) fn partitions_with(consumer: &KappaConsumer, brokers: &str, topic: &str) -> Result<Vec<i32>> {
    let request = |source| Error::Request {
        what: "metadata".into(),
        topic: topic.to_string(),
        brokers: brokers.to_string(),
        source,
    };
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT).map_err(request)?;
    let mut out: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(Error::UnknownTopic { topic: topic.to_string(), brokers: brokers.to_string() });
    }
    Ok(out)
}

/// `(log start, high watermark)` of every partition of `topic`.
///
/// The high watermark is read twice: from `ListOffsets`, then confirmed by fetching from just
/// below it to the partition's end, where the fetch response's own high watermark is the truth.
/// The second step is there because some Kafka-API brokers answer `ListOffsets(latest)` with the
/// base offset of the last batch plus one rather than the offset after its last record (Tansu
/// 0.6.0 does), which would make an archive stop short and a handoff look like a gap.
pub fn watermarks(brokers: &str, topic: &str) -> Result<BTreeMap<i32, (i64, i64)>> {
    let consumer = consumer(brokers)?;
    let mut out = BTreeMap::new();
    for p in partitions_with(&consumer, brokers, topic)? {
        let marks = consumer.fetch_watermarks(topic, p, TIMEOUT).map_err(|source| Error::Request {
            what: format!("watermarks of partition {p}"),
            topic: topic.to_string(),
            brokers: brokers.to_string(),
            source,
        })?;
        out.insert(p, marks);
    }
    confirm_high_watermarks(&consumer, brokers, topic, &mut out)?;
    Ok(out)
}

fn confirm_high_watermarks(
    consumer: &KappaConsumer,
    brokers: &str,
    topic: &str,
    marks: &mut BTreeMap<i32, (i64, i64)>,
) -> Result<()> {
    let request = |source| Error::Request {
        what: "fetch to the end of each partition".into(),
        topic: topic.to_string(),
        brokers: brokers.to_string(),
        source,
    };
    let mut assignment = TopicPartitionList::new();
    let mut waiting = BTreeSet::new();
    for (&p, &(low, high)) in marks.iter() {
        if high > low {
            assignment.add_partition_offset(topic, p, Offset::Offset(high - 1)).map_err(request)?;
            waiting.insert(p);
        }
    }
    if waiting.is_empty() {
        return Ok(());
    }
    consumer.assign(&assignment).map_err(request)?;
    let deadline = Instant::now() + TIMEOUT;
    while !waiting.is_empty() {
        if Instant::now() > deadline {
            return Err(request(KafkaError::PartitionEOF(*waiting.first().expect("non-empty"))));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Err(KafkaError::PartitionEOF(p))) => {
                let position = consumer.position().map_err(request)?;
                if let Some(Offset::Offset(end)) = position.find_partition(topic, p).map(|e| e.offset()) {
                    if let Some(entry) = marks.get_mut(&p) {
                        entry.1 = entry.1.max(end);
                    }
                }
                waiting.remove(&p);
            }
            Some(Err(e)) => return Err(request(e)),
            Some(Ok(_)) | None => {}
        }
    }
    consumer.unassign().map_err(request)?;
    Ok(())
}

/// Creates `topic` with `partitions` partitions, the broker's default replication factor and the
/// broker's default topic configuration. An existing topic is not an error.
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    create_topic_with(brokers, topic, partitions, None, &[])
}

/// Creates `topic` with `partitions` partitions, `replication` replicas of each and the topic
/// configuration `config` (e.g. `[("cleanup.policy", "compact")]` for an upsert topic). An existing
/// topic is not an error, and is left as it is: its settings are neither checked nor changed.
///
/// `None` asks for the broker's default replication factor (its `default.replication.factor`),
/// sent as replication factor −1: brokers accept that since Kafka 2.4 (KIP-464, `CreateTopics`
/// version 4), and librdkafka refuses it, before sending, to brokers that predate it. Tansu
/// accepts it. librdkafka's mock cluster implements no `CreateTopics` at all, whatever the
/// replication factor: create topics there with `MockCluster::create_topic`.
pub fn create_topic_with(
    brokers: &str,
    topic: &str,
    partitions: i32,
    replication: Option<i32>,
    config: &[(&str, &str)],
) -> Result<()> {
    let request = |source| Error::Request {
        what: "create topic".into(),
        topic: topic.to_string(),
        brokers: brokers.to_string(),
        source,
    };
    let admin: AdminClient<DefaultClientContext> =
        client_config(brokers).create().map_err(|source| Error::Client { brokers: brokers.to_string(), source })?;
    let new = new_topic(topic, partitions, replication, config);
    let fut = admin.create_topics([&new], &AdminOptions::new().operation_timeout(Some(TIMEOUT)));
    let results = futures_lite_block_on(fut).map_err(request)?;
    for result in results {
        if let Err((_, code)) = result {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                return Err(request(KafkaError::AdminOp(code)));
            }
        }
    }
    Ok(())
}

/// The `CreateTopics` entry for [`create_topic_with`].
fn new_topic<'a>(
    topic: &'a str,
    partitions: i32,
    replication: Option<i32>,
    config: &[(&'a str, &'a str)],
) -> NewTopic<'a> {
    // −1: the broker's default (KIP-464).
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication.unwrap_or(-1)));
    config.iter().fold(new, |new, &(key, value)| new.set(key, value))
}

/// rdkafka's admin futures complete on librdkafka's own threads; a minimal executor is enough.
fn futures_lite_block_on<F: std::future::Future>(fut: F) -> F::Output {
    futures::executor::block_on(fut)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Checked against Tansu 0.6.0 by hand: −1 is accepted and the configuration is kept
    // (`cleanup.policy` reads back as `compact`). librdkafka's mock cluster has no `CreateTopics`
    // (a request times out whatever the replication factor), so it cannot check this.
    #[test]
    fn no_replication_asks_for_the_broker_default_and_config_is_passed_on() {
        let compact = [("cleanup.policy", "compact")];
        let new = new_topic("out", 4, None, &compact);
        assert_eq!((new.name, new.num_partitions), ("out", 4));
        assert!(matches!(new.replication, TopicReplication::Fixed(-1)), "{:?}", new.replication);
        assert_eq!(new.config, compact);
        let new = new_topic("out", 1, Some(3), &[]);
        assert!(matches!(new.replication, TopicReplication::Fixed(3)), "{:?}", new.replication);
        assert!(new.config.is_empty());
    }
}
