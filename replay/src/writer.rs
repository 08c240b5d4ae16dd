//! `kappa archive write`: copy a topic from a broker into an archive, appending what is new.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use kappa_engine::{Offset, Record};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;

use object_store::ObjectStoreExt;

use crate::archive::{runtime, Archive};
use crate::error::{Error, Result};
use crate::layout::KappaLayout;
use crate::segment::encode_batch;

/// Records per RecordBatch in a written segment.
const BATCH_RECORDS: usize = 1000;
/// A segment is closed once it holds this many records...
const SEGMENT_RECORDS: usize = 100_000;
/// ...or this many bytes of record values and keys.
const SEGMENT_BYTES: usize = 16 << 20;

/// What one `archive write` run copied, per partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Partition → (first offset copied, offset after the last copied, segments written).
    pub partitions: BTreeMap<i32, (Offset, Offset, usize)>,
    /// Records copied in all.
    pub records: u64,
}

/// Copies every partition of `topic` from `brokers` into `archive`, from where the archive ends
/// (or the log starts) up to the high watermark read at the start of the run.
///
/// `progress` is called with the number of records copied so far.
pub fn write_archive(archive: &Archive, brokers: &str, topic: &str, progress: &dyn Fn(u64)) -> Result<WriteReport> {
    let marks = kappa_connectors::kafka::admin::watermarks(brokers, topic)?;
    let layout = archive.layout.clone();
    let mut assignment = TopicPartitionList::new();
    let mut pending: HashMap<i32, (Offset, Offset)> = HashMap::new();
    let mut report = WriteReport::default();
    for (&partition, &(log_start, high)) in &marks {
        let existing = runtime().block_on(layout.segments(archive, topic, partition))?;
        let start = match existing.last() {
            Some(last) if last.next_offset < log_start => {
                return Err(Error::HandoffGap {
                    topic: topic.to_string(),
                    partition,
                    archive_end: last.next_offset,
                    log_start,
                })
            }
            Some(last) => last.next_offset,
            None => log_start,
        };
        if start < high {
            assignment
                .add_partition_offset(topic, partition, rdkafka::Offset::Offset(start))
                .map_err(|source| Error::Consume { topic: topic.to_string(), source: Box::new(source) })?;
            pending.insert(partition, (start, high));
        }
    }
    if pending.is_empty() {
        return Ok(report);
    }
    let consumer = kappa_connectors::kafka::consumer(brokers)?;
    consumer
        .assign(&assignment)
        .map_err(|source| Error::Consume { topic: topic.to_string(), source: Box::new(source) })?;

    let mut buffers: HashMap<i32, (Vec<Record>, usize)> = HashMap::new();
    let mut open: HashMap<i32, (Offset, Offset)> = pending.clone();
    let flush = |partition: i32, records: &mut Vec<Record>, report: &mut WriteReport| -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for chunk in records.chunks(BATCH_RECORDS) {
            encode_batch(chunk, &mut bytes);
        }
        let (base, next) = (records[0].offset, records[records.len() - 1].offset + 1);
        let key = KappaLayout::segment_key(archive, topic, partition, base, next);
        runtime()
            .block_on(archive.store.put(&key, Bytes::from(bytes).into()))
            .map_err(|source| Error::ObjectStore { object: key.to_string(), source })?;
        let entry = report.partitions.entry(partition).or_insert((base, next, 0));
        entry.1 = next;
        entry.2 += 1;
        records.clear();
        Ok(())
    };
    while !open.is_empty() {
        let message = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                // The log's end: whatever the consumer does not show up to the high watermark
                // (transaction markers) is not data.
                if let Some(&(_, high)) = open.get(&p) {
                    let at_end = consumer
                        .position()
                        .ok()
                        .and_then(|tpl| tpl.find_partition(topic, p)?.offset().to_raw())
                        .is_some_and(|pos| pos >= high);
                    if at_end {
                        let (records, _) = buffers.entry(p).or_default();
                        flush(p, records, &mut report)?;
                        open.remove(&p);
                    }
                }
                continue;
            }
            Some(Err(source)) => return Err(Error::Consume { topic: topic.to_string(), source: Box::new(source) }),
            Some(Ok(m)) => m,
        };
        let p = message.partition();
        let Some(&(_, high)) = open.get(&p) else {
            continue;
        };
        let offset = message.offset();
        if offset >= high {
            continue;
        }
        let (records, bytes) = buffers.entry(p).or_default();
        let record = Record {
            offset,
            timestamp: message.timestamp().to_millis(),
            key: message.key().map(Bytes::copy_from_slice),
            value: message.payload().map(Bytes::copy_from_slice),
        };
        *bytes += record.key.as_ref().map_or(0, |k| k.len()) + record.value.as_ref().map_or(0, |v| v.len());
        records.push(record);
        report.records += 1;
        if report.records % 10_000 == 0 {
            progress(report.records);
        }
        if records.len() >= SEGMENT_RECORDS || *bytes >= SEGMENT_BYTES || offset + 1 >= high {
            flush(p, records, &mut report)?;
            *bytes = 0;
        }
        if offset + 1 >= high {
            open.remove(&p);
        }
    }
    progress(report.records);
    Ok(report)
}
