//! Partitioned, ordered inputs.
//!
//! An input is a set of partitions, each an ordered log of records with offsets (a Kafka topic
//! partition is the model). Every partition is read by exactly one worker, chosen by
//! [`owner`]; within a partition, records reach the dataflow in offset order, which is what makes
//! [time assignment](crate::time) deterministic.
//!
//! Implementations live outside the engine: the Kafka source in `kappa-connectors`, the archive
//! replay source and the archive-to-live handoff in `kappa-replay`. [`MemorySource`] is here for
//! tests and examples.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::BoxError;

/// A record's position in its partition.
pub type Offset = i64;

/// One partition of one topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionId {
    /// Topic name.
    pub topic: String,
    /// Partition number within the topic.
    pub partition: i32,
}

impl PartitionId {
    /// The partition `partition` of `topic`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        PartitionId { topic: topic.into(), partition }
    }
}

impl std::fmt::Display for PartitionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A record as stored in a partition: the unit every source delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Offset within the partition.
    pub offset: Offset,
    /// The record's own timestamp (Kafka's), milliseconds, if it has one.
    pub timestamp: Option<i64>,
    /// Key bytes.
    pub key: Option<Bytes>,
    /// Value bytes.
    pub value: Option<Bytes>,
}

/// What a [`PartitionedSource::poll`] call found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// More records may be available right away: poll again soon.
    Ready,
    /// Nothing available now: back off briefly before polling again.
    Pending,
}

/// A worker's reader over the partitions it owns.
pub trait PartitionedSource {
    /// Appends available records to `out` as `(index, record)`, where `index` is the partition's
    /// position in the list given to [`SourceFactory::open`], each partition's records in offset
    /// order; appends to `finished` the index of every partition that has ended for good.
    fn poll(&mut self, out: &mut Vec<(usize, Record)>, finished: &mut Vec<usize>) -> Result<Poll, BoxError>;

    /// A hint: deliver no records of the partition at `index` for now (`held`), or again
    /// (`!held`). The input operator holds a partition that runs too far ahead of the others in
    /// event time ([`JobOptions::max_partition_skew_ms`](crate::JobOptions::max_partition_skew_ms)),
    /// so that a backfill reads its partitions side by side and the output frontier follows the
    /// records read. A source may ignore it (the default); records' times never depend on it.
    fn hold(&mut self, _index: usize, _held: bool) {}

    /// Whether the partition at `index` has delivered every record the broker holds, *as the
    /// broker confirmed* (Kafka's partition EOF), and where it stands: the offset of the next
    /// record it would deliver. `None` when the source cannot tell (an archive, or a reader still
    /// fetching). Only a partition that is caught up may be declared idle
    /// ([`JobOptions::idle_timeout`](crate::JobOptions::idle_timeout)).
    fn caught_up(&self, _index: usize) -> Option<Offset> {
        None
    }
}

/// Knows an input's partitions and opens readers over subsets of them.
pub trait SourceFactory: Send + Sync {
    /// Every partition of this input, in a stable order.
    fn partitions(&self) -> Result<Vec<PartitionId>, BoxError>;
    /// Opens a reader over `owned`, each starting at the given offset (or at the beginning).
    fn open(&self, owned: &[(PartitionId, Option<Offset>)]) -> Result<Box<dyn PartitionedSource>, BoxError>;

    /// Where `partition`'s backfill ends: records at lower offsets are history replayed from an
    /// archive, whose times may be coarsened
    /// ([`JobOptions::backfill_granularity_ms`](crate::JobOptions::backfill_granularity_ms)).
    /// `None` (the default): no record of this input is backfill.
    fn backfill_end(&self, _partition: &PartitionId) -> Option<Offset> {
        None
    }
}

/// The worker that reads partition number `index` of an input with `partitions` sorted partitions.
///
/// Spreads partitions round-robin over all workers of the cluster.
pub fn owner(index: usize, peers: usize) -> usize {
    index % peers.max(1)
}

/// An in-memory input for tests and examples: fixed records, delivered in configurable batches.
#[derive(Clone)]
pub struct MemorySource {
    partitions: Arc<Vec<(PartitionId, Vec<Record>)>>,
    batch: usize,
}

impl MemorySource {
    /// An input with the given partitions and their records (each in offset order).
    pub fn new(partitions: Vec<(PartitionId, Vec<Record>)>) -> Self {
        MemorySource::shared(Arc::new(partitions))
    }

    /// An input over partitions shared with the caller, not copied: a benchmark or test can run
    /// many jobs over the same records.
    pub fn shared(partitions: Arc<Vec<(PartitionId, Vec<Record>)>>) -> Self {
        MemorySource { partitions, batch: 1024 }
    }

    /// One partition (`topic`/0) of `(timestamp, value)` records at offsets 0, 1, ...
    pub fn single(topic: &str, records: Vec<(i64, &str)>) -> Self {
        let records = records
            .into_iter()
            .enumerate()
            .map(|(i, (ts, v))| Record {
                offset: i as Offset,
                timestamp: Some(ts),
                key: None,
                value: Some(Bytes::copy_from_slice(v.as_bytes())),
            })
            .collect();
        Self::new(vec![(PartitionId::new(topic, 0), records)])
    }

    /// Delivers at most `batch` records per partition per poll (at least 1).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }
}

impl SourceFactory for MemorySource {
    fn partitions(&self) -> Result<Vec<PartitionId>, BoxError> {
        Ok(self.partitions.iter().map(|(p, _)| p.clone()).collect())
    }

    fn open(&self, owned: &[(PartitionId, Option<Offset>)]) -> Result<Box<dyn PartitionedSource>, BoxError> {
        let mut readers = Vec::new();
        for (pid, start) in owned {
            let (_, records) = self
                .partitions
                .iter()
                .find(|(p, _)| p == pid)
                .ok_or_else(|| format!("memory source has no partition {pid}"))?;
            let from = start.map_or(0, |s| records.partition_point(|r| r.offset < s));
            readers.push((self.partitions.clone(), pid.clone(), from));
        }
        let held = vec![false; owned.len()];
        Ok(Box::new(MemoryReader { readers, batch: self.batch, done: vec![false; owned.len()], held }))
    }
}

/// Every partition's records, shared by all readers of a [`MemorySource`].
type MemoryLog = Arc<Vec<(PartitionId, Vec<Record>)>>;

struct MemoryReader {
    /// Per owned partition: the log, the partition, and the next index to deliver.
    readers: Vec<(MemoryLog, PartitionId, usize)>,
    batch: usize,
    done: Vec<bool>,
    /// Partitions the caller asked to hold back ([`PartitionedSource::hold`]).
    held: Vec<bool>,
}

impl PartitionedSource for MemoryReader {
    fn poll(&mut self, out: &mut Vec<(usize, Record)>, finished: &mut Vec<usize>) -> Result<Poll, BoxError> {
        for (index, (all, pid, next)) in self.readers.iter_mut().enumerate() {
            if self.done[index] || self.held[index] {
                continue;
            }
            let records = &all.iter().find(|(p, _)| p == pid).expect("partition checked at open").1;
            let end = (*next + self.batch).min(records.len());
            out.extend(records[*next..end].iter().cloned().map(|r| (index, r)));
            *next = end;
            if end == records.len() {
                self.done[index] = true;
                finished.push(index);
            }
        }
        Ok(Poll::Ready)
    }

    fn hold(&mut self, index: usize, held: bool) {
        if let Some(slot) = self.held.get_mut(index) {
            *slot = held;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_source_starts_at_the_requested_offset_and_finishes() {
        let src = MemorySource::single("t", vec![(1, "a"), (2, "b"), (3, "c")]).with_batch(1);
        let mut reader = src.open(&[(PartitionId::new("t", 0), Some(1))]).expect("opens");
        let (mut out, mut fin) = (Vec::new(), Vec::new());
        while fin.is_empty() {
            reader.poll(&mut out, &mut fin).expect("polls");
        }
        let offsets: Vec<_> = out.iter().map(|(_, r)| r.offset).collect();
        assert_eq!(offsets, vec![1, 2]);
    }

    #[test]
    fn ownership_spreads_partitions_over_all_workers() {
        let owners: Vec<_> = (0..6).map(|i| owner(i, 4)).collect();
        assert_eq!(owners, vec![0, 1, 2, 3, 0, 1]);
    }
}
