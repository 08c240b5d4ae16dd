//! The replay source: a topic archive as a Kappa input.
//!
//! Each worker replays the partitions it owns. Per partition, a task on the I/O runtime fetches
//! segments in offset order, a few ahead of the one being decoded, decodes and checks them
//! ([`decode_segment`](crate::segment::decode_segment): CRC of every batch, offsets against the
//! key), and hands decoded records to the worker through a bounded channel, so memory stays
//! bounded by the read-ahead whatever the archive's size.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryFutureExt};
use kappa_engine::{BoxError, Offset, PartitionId, PartitionedSource, Poll, Record, SourceFactory};
use object_store::ObjectStoreExt;
use tokio::sync::mpsc;

use crate::archive::{runtime, Archive};
use crate::error::{Error, Result};
use crate::layout::SegmentRef;
use crate::segment::decode_segment_rebased;

/// Segments fetched ahead of the one being decoded, per partition.
const READ_AHEAD: usize = 4;
/// Decoded segments waiting for the worker, per partition.
const CHANNEL_DEPTH: usize = 2;

/// Counters of a replay, shared by all its readers.
#[derive(Debug, Default)]
pub struct ReplayMetrics {
    /// Segment bytes fetched.
    pub bytes: AtomicU64,
    /// Segments decoded.
    pub segments: AtomicU64,
    /// Records decoded.
    pub records: AtomicU64,
}

/// A topic's archive as a [`SourceFactory`]: every partition, from its first archived offset to
/// its last, then ended.
#[derive(Clone)]
pub struct ReplaySource {
    archive: Archive,
    topic: String,
    segments: Arc<BTreeMap<i32, Vec<SegmentRef>>>,
    metrics: Arc<ReplayMetrics>,
}

impl ReplaySource {
    /// Lists the archive's segments of `topic`.
    pub fn open(archive: Archive, topic: &str) -> Result<Self> {
        let segments = runtime().block_on(async {
            let mut all = BTreeMap::new();
            for p in archive.layout.partitions(&archive, topic).await? {
                all.insert(p, archive.layout.segments(&archive, topic, p).await?);
            }
            Ok::<_, Error>(all)
        })?;
        if segments.values().all(Vec::is_empty) {
            return Err(Error::EmptyArchive { url: archive.url.clone(), topic: topic.to_string() });
        }
        Ok(ReplaySource { archive, topic: topic.to_string(), segments: Arc::new(segments), metrics: Arc::default() })
    }

    /// The topic replayed.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Per partition, the offset after the archive's last record: where live reading continues.
    pub fn end_offsets(&self) -> BTreeMap<i32, Offset> {
        self.segments.iter().filter_map(|(&p, segs)| Some((p, segs.last()?.next_offset))).collect()
    }

    /// Number of segments in the archive for this topic.
    pub fn segment_count(&self) -> usize {
        self.segments.values().map(Vec::len).sum()
    }

    /// Total bytes of those segments.
    pub fn total_bytes(&self) -> u64 {
        self.segments.values().flatten().map(|s| s.size).sum()
    }

    /// Counters of what has been read so far.
    pub fn metrics(&self) -> Arc<ReplayMetrics> {
        self.metrics.clone()
    }
}

impl SourceFactory for ReplaySource {
    fn partitions(&self) -> Result<Vec<PartitionId>, BoxError> {
        Ok(self.segments.keys().map(|&p| PartitionId::new(&self.topic, p)).collect())
    }

    fn open(&self, owned: &[(PartitionId, Option<Offset>)]) -> Result<Box<dyn PartitionedSource>, BoxError> {
        let mut channels = Vec::new();
        for (pid, start) in owned {
            let segments: Vec<SegmentRef> = self
                .segments
                .get(&pid.partition)
                .map(|segs| segs.iter().filter(|s| start.is_none_or(|o| s.next_offset > o)).cloned().collect())
                .unwrap_or_default();
            let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
            runtime().spawn(replay_partition(
                self.archive.clone(),
                segments,
                start.unwrap_or(Offset::MIN),
                tx,
                self.metrics.clone(),
            ));
            channels.push(Some(rx));
        }
        Ok(Box::new(ReplayReader { channels }))
    }
}

async fn replay_partition(
    archive: Archive,
    segments: Vec<SegmentRef>,
    from: Offset,
    tx: mpsc::Sender<Result<Vec<Record>>>,
    metrics: Arc<ReplayMetrics>,
) {
    let store = archive.store.clone();
    let mut fetches = futures::stream::iter(segments)
        .map(|segment| {
            let store = store.clone();
            async move {
                let bytes = store.get(&segment.key).and_then(|r| r.bytes()).await;
                bytes
                    .map(|b| (segment.clone(), b))
                    .map_err(|source| Error::ObjectStore { object: segment.key.to_string(), source })
            }
        })
        .buffered(READ_AHEAD);
    while let Some(fetched) = fetches.next().await {
        let decoded = fetched.and_then(|(segment, bytes)| {
            metrics.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            let records = decode_checked(&segment, &bytes, from)?;
            metrics.segments.fetch_add(1, Ordering::Relaxed);
            metrics.records.fetch_add(records.len() as u64, Ordering::Relaxed);
            Ok(records)
        });
        let failed = decoded.is_err();
        if tx.send(decoded).await.is_err() || failed {
            return;
        }
    }
}

/// Decodes a segment and checks that its records lie in the range its key claims: the batch
/// header's base offset is outside the CRC, so this is what catches damage there.
pub(crate) fn decode_checked(segment: &SegmentRef, bytes: &Bytes, from: Offset) -> Result<Vec<Record>> {
    decode_checked_summary(segment, bytes, from).map(|(records, _)| records)
}

/// As [`decode_checked`], with the segment's summary.
pub(crate) fn decode_checked_summary(
    segment: &SegmentRef,
    bytes: &Bytes,
    from: Offset,
) -> Result<(Vec<Record>, crate::segment::SegmentSummary)> {
    let object = segment.key.as_ref();
    let mut records = Vec::new();
    let base = segment.relative_offsets.then_some(segment.base_offset);
    let summary = decode_segment_rebased(object, bytes, from, base, &mut records)?;
    match summary.offsets {
        Some((first, last)) if first >= segment.base_offset && last < segment.next_offset => Ok((records, summary)),
        Some((first, last)) => Err(Error::Inconsistent {
            object: object.to_string(),
            reason: format!(
                "holds offsets {first}..={last}, but its key says {}..{}",
                segment.base_offset, segment.next_offset
            ),
        }),
        None => Err(Error::Inconsistent { object: object.to_string(), reason: "holds no record batch".into() }),
    }
}

struct ReplayReader {
    channels: Vec<Option<mpsc::Receiver<Result<Vec<Record>>>>>,
}

impl PartitionedSource for ReplayReader {
    fn poll(&mut self, out: &mut Vec<(usize, Record)>, finished: &mut Vec<usize>) -> Result<Poll, BoxError> {
        let mut any = false;
        for (index, slot) in self.channels.iter_mut().enumerate() {
            let Some(rx) = slot else { continue };
            match rx.try_recv() {
                Ok(Ok(records)) => {
                    any = true;
                    out.extend(records.into_iter().map(|r| (index, r)));
                }
                Ok(Err(error)) => return Err(error.into()),
                Err(mpsc::error::TryRecvError::Empty) => {}
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    *slot = None;
                    finished.push(index);
                }
            }
        }
        Ok(if any { Poll::Ready } else { Poll::Pending })
    }
}
