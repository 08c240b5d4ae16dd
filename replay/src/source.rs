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
use futures::StreamExt;
use kappa_engine::{BoxError, Offset, PartitionId, PartitionedSource, Poll, Record, SourceFactory};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::archive::{runtime, Archive};
use crate::error::{Error, Result};
use crate::layout::SegmentRef;
use crate::segment::{decode_segment_with, DecodeOptions};

/// Segments fetched ahead of the one being decoded, per partition (within the byte budget).
const READ_AHEAD: usize = 4;
/// Default byte budget for segments fetched but not yet handed to the dataflow, all partitions.
pub const DEFAULT_READ_AHEAD_BYTES: u64 = 256 << 20;
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
    /// Partitions whose archive part has been fully read.
    pub partitions_done: AtomicU64,
    /// Most bytes of the read-ahead budget in use at once (KiB granularity).
    pub peak_read_ahead_bytes: AtomicU64,
}

/// A topic's archive as a [`SourceFactory`]: every partition, from its first archived offset to
/// its last, then ended.
#[derive(Clone)]
pub struct ReplaySource {
    archive: Archive,
    topic: String,
    segments: Arc<BTreeMap<i32, Vec<SegmentRef>>>,
    metrics: Arc<ReplayMetrics>,
    budget: Arc<Semaphore>,
    budget_kib: u32,
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
        let budget_kib = kib(DEFAULT_READ_AHEAD_BYTES);
        Ok(ReplaySource {
            archive,
            topic: topic.to_string(),
            segments: Arc::new(segments),
            metrics: Arc::default(),
            budget: Arc::new(Semaphore::new(budget_kib as usize)),
            budget_kib,
        })
    }

    /// Bounds the bytes of segments fetched but not yet handed to the dataflow, over all
    /// partitions of this process (default [`DEFAULT_READ_AHEAD_BYTES`]). A segment larger than
    /// the budget is fetched alone.
    pub fn with_read_ahead_bytes(mut self, bytes: u64) -> Self {
        self.budget_kib = kib(bytes).max(1);
        self.budget = Arc::new(Semaphore::new(self.budget_kib as usize));
        self
    }

    /// Number of partitions in the archive.
    pub fn partition_count(&self) -> usize {
        self.segments.len()
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
        self.segments.values().flatten().fold(0u64, |sum, s| sum.saturating_add(s.size))
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
        let mut names = Vec::new();
        for (pid, start) in owned {
            let segments: Vec<SegmentRef> = self
                .segments
                .get(&pid.partition)
                .map(|segs| segs.iter().filter(|s| start.is_none_or(|o| s.next_offset > o)).cloned().collect())
                .unwrap_or_default();
            let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
            let budget = Budget { semaphore: self.budget.clone(), kib: self.budget_kib };
            runtime().spawn(replay_partition(
                self.archive.clone(),
                segments,
                start.unwrap_or(Offset::MIN),
                tx,
                self.metrics.clone(),
                budget,
            ));
            channels.push(Some(rx));
            names.push(format!("{} partition {}", pid.topic, pid.partition));
        }
        let held = vec![false; channels.len()];
        Ok(Box::new(ReplayReader { channels, names, held }))
    }

    /// Every archived record is backfill.
    fn backfill_end(&self, partition: &PartitionId) -> Option<Offset> {
        Some(self.segments.get(&partition.partition).and_then(|s| s.last()).map_or(0, |s| s.next_offset))
    }
}

fn kib(bytes: u64) -> u32 {
    bytes.div_ceil(1024).min(u64::from(u32::MAX >> 3)) as u32
}

/// The read-ahead byte budget, in KiB permits.
#[derive(Clone)]
struct Budget {
    semaphore: Arc<Semaphore>,
    kib: u32,
}

/// Decoded records with the budget their segment holds until the worker takes them.
type Chunk = (Vec<Record>, OwnedSemaphorePermit);

/// What a partition's replay task sends: chunks, then `None` once it has read every segment. A
/// task that stops without the `None` (it panicked) is an error, never the partition's end: ending
/// there would hand off live past records never read.
type Item = Result<Option<Chunk>>;

async fn replay_partition(
    archive: Archive,
    segments: Vec<SegmentRef>,
    from: Offset,
    tx: mpsc::Sender<Item>,
    metrics: Arc<ReplayMetrics>,
    budget: Budget,
) {
    let store = archive.store.clone();
    // Permits are taken in offset order (`then`), before a fetch starts: a fetch that holds
    // permits can always complete, so partitions competing for the budget cannot deadlock.
    let fetches = futures::stream::iter(segments)
        .then(|segment| {
            let budget = budget.clone();
            let metrics = metrics.clone();
            async move {
                let wanted = kib(segment.size).clamp(1, budget.kib);
                let permit =
                    budget.semaphore.clone().acquire_many_owned(wanted).await.expect("the budget is never closed");
                let in_use = u64::from(budget.kib).saturating_sub(budget.semaphore.available_permits() as u64) * 1024;
                metrics.peak_read_ahead_bytes.fetch_max(in_use, Ordering::Relaxed);
                (segment, permit)
            }
        })
        .map(|(segment, permit)| {
            let store = store.clone();
            async move {
                let bytes = crate::layout::fetch_segment(store.as_ref(), &segment).await;
                bytes.map(|b| (segment.clone(), b, permit))
            }
        })
        .buffered(READ_AHEAD);
    let mut fetches = std::pin::pin!(fetches);
    while let Some(fetched) = fetches.next().await {
        let decoded = fetched.and_then(|(segment, bytes, permit)| {
            metrics.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            // A panic in a decoder on bytes from outside is a bug, but it must fail the replay
            // naming the object, not end the task silently.
            let records =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_checked(&segment, &bytes, from)))
                    .unwrap_or_else(|panic| {
                        let why = crate::error::panic_message(panic.as_ref());
                        Err(Error::Inconsistent {
                            object: segment.key.to_string(),
                            reason: format!("decoding it panicked ({why}); please report this with the object"),
                        })
                    })?;
            metrics.segments.fetch_add(1, Ordering::Relaxed);
            metrics.records.fetch_add(records.len() as u64, Ordering::Relaxed);
            Ok(Some((records, permit)))
        });
        let failed = decoded.is_err();
        if tx.send(decoded).await.is_err() || failed {
            return;
        }
    }
    if tx.send(Ok(None)).await.is_ok() {
        metrics.partitions_done.fetch_add(1, Ordering::Relaxed);
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
    let (bytes, found_aborts) = segment.transform.apply_with_aborts(object, bytes)?;
    let bytes = &bytes;
    let aborted: std::borrow::Cow<[crate::segment::AbortedTxn]> = if found_aborts.is_empty() {
        std::borrow::Cow::Borrowed(&segment.aborted[..])
    } else {
        std::borrow::Cow::Owned(segment.aborted.iter().copied().chain(found_aborts).collect())
    };
    let mut records = Vec::new();
    let options = DecodeOptions {
        from: Some(from),
        base: segment.relative_offsets.then_some(segment.base_offset),
        aborted: &aborted,
    };
    let summary = decode_segment_with(object, bytes, &options, &mut records)?;
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
    channels: Vec<Option<mpsc::Receiver<Item>>>,
    /// Per channel, `topic partition N`, for the error when a task stops early.
    names: Vec<String>,
    /// Partitions the input holds back (ahead in event time): their channels are not read, so
    /// their tasks stop at the read-ahead budget and the decoding goes to the others.
    held: Vec<bool>,
}

impl PartitionedSource for ReplayReader {
    fn poll(&mut self, out: &mut Vec<(usize, Record)>, finished: &mut Vec<usize>) -> Result<Poll, BoxError> {
        let mut any = false;
        for (index, slot) in self.channels.iter_mut().enumerate() {
            let Some(rx) = slot else { continue };
            if self.held[index] {
                continue;
            }
            match rx.try_recv() {
                Ok(Ok(None)) => {
                    *slot = None;
                    finished.push(index);
                }
                Ok(Ok(Some((records, _permit)))) => {
                    // The permit is released here: the records now belong to the dataflow.
                    any = true;
                    out.extend(records.into_iter().map(|r| (index, r)));
                }
                Ok(Err(error)) => return Err(error.into()),
                Err(mpsc::error::TryRecvError::Empty) => {}
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Err(Error::Inconsistent {
                        object: self.names[index].clone(),
                        reason: "its replay stopped before the end of the archive (the task reading it failed; see \
                                 the log above); nothing after it was handed on"
                            .into(),
                    }
                    .into());
                }
            }
        }
        Ok(if any { Poll::Ready } else { Poll::Pending })
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
    use crate::layout::KappaLayout;
    use crate::segment::encode_batch;
    use kappa_engine::{execute, ClusterConfig, JobOptions, MemorySink, Sources};
    use object_store::ObjectStoreExt;

    fn archive_with(name: &str, partitions: i32, segments: i64, per_segment: i64) -> Archive {
        let archive = Archive::open(&format!("memory://{name}")).expect("memory archive");
        for p in 0..partitions {
            for s in 0..segments {
                let records: Vec<Record> = (0..per_segment)
                    .map(|i| {
                        let offset = s * per_segment + i;
                        Record {
                            offset,
                            timestamp: Some(offset * 10),
                            key: None,
                            value: Some(Bytes::from(vec![7u8; 300])),
                        }
                    })
                    .collect();
                let mut bytes = Vec::new();
                encode_batch(&records, &mut bytes);
                let key = KappaLayout::segment_key(&archive, "t", p, s * per_segment, (s + 1) * per_segment);
                runtime().block_on(archive.store.put(&key, bytes.into())).expect("put");
            }
        }
        archive
    }

    #[test]
    fn a_budget_smaller_than_one_segment_still_replays_everything_in_order() {
        let archive = archive_with("tiny-budget", 3, 40, 20);
        let replay = ReplaySource::open(archive, "t").expect("opens").with_read_ahead_bytes(1);
        assert_eq!(replay.end_offsets(), BTreeMap::from([(0, 800), (1, 800), (2, 800)]));
        let sink = MemorySink::new();
        let out = sink.clone();
        let report =
            execute(&ClusterConfig::threads(2), JobOptions::default(), Sources::new().with("t", replay), move |ctx| {
                let offsets =
                    ctx.input("t", |r| Ok::<_, std::convert::Infallible>((r.offset, r.offset as u64 * 10)))?;
                ctx.output(offsets.map(|_| ()).count(), out.clone());
                Ok(())
            })
            .expect("runs");
        assert_eq!(report.records, 2_400);
        assert_eq!(sink.accumulated(), vec![(((), 2_400), 1)]);
    }

    #[test]
    fn a_replay_task_that_stops_without_its_end_is_an_error_not_the_partitions_end() {
        let (tx, rx) = mpsc::channel::<Item>(1);
        let mut reader =
            ReplayReader { channels: vec![Some(rx)], names: vec!["t partition 3".into()], held: vec![false] };
        drop(tx);
        let (mut out, mut finished) = (Vec::new(), Vec::new());
        let error = reader.poll(&mut out, &mut finished).expect_err("a task that died is not an end");
        assert!(error.to_string().contains("t partition 3") && finished.is_empty(), "{error}");
        let (tx, rx) = mpsc::channel::<Item>(1);
        tx.try_send(Ok(None)).expect("send the end");
        drop(tx);
        let mut reader =
            ReplayReader { channels: vec![Some(rx)], names: vec!["t partition 3".into()], held: vec![false] };
        reader.poll(&mut out, &mut finished).expect("an end");
        assert_eq!(finished, vec![0]);
    }
}
