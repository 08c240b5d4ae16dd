//! `kappa archive write`: copy a topic from any source (a broker, for the command) into an
//! archive, appending what is new.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kappa_engine::{Offset, PartitionId, Poll, Record, SourceFactory};

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

/// A segment ready to write: its key's offsets and its records.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment {
    base: Offset,
    next: Offset,
    records: Vec<Record>,
}

/// When a segment is closed.
#[derive(Clone, Copy, Debug)]
struct Limits {
    records: usize,
    bytes: usize,
}

const LIMITS: Limits = Limits { records: SEGMENT_RECORDS, bytes: SEGMENT_BYTES };

/// One partition being copied: its open segment and where that segment's key starts.
///
/// Keys are contiguous: a segment starts where the previous one ended (or where the run started),
/// not at its first record, and ends after its last record, or at the high watermark once the
/// partition's end is reached. Offsets that hold no record (transaction markers, compacted or
/// aborted records) thus lie inside some segment's range, so a gap between keys can only be a
/// missing object, which replay refuses.
#[derive(Debug)]
struct PartitionCopy {
    /// Where the open segment starts.
    base: Offset,
    /// The high watermark read at the start of the run: copying stops there.
    high: Offset,
    records: Vec<Record>,
    bytes: usize,
    limits: Limits,
}

impl PartitionCopy {
    fn new(start: Offset, high: Offset, limits: Limits) -> Self {
        PartitionCopy { base: start, high, records: Vec::new(), bytes: 0, limits }
    }

    /// Adds a record the consumer delivered; returns the segment it closed, if any. Records at or
    /// past the high watermark, or before the open segment, are not this run's.
    fn push(&mut self, record: Record) -> Option<Segment> {
        if record.offset >= self.high || record.offset < self.base {
            return None;
        }
        // `offset < high <= i64::MAX`, so `offset + 1` cannot overflow.
        let next = record.offset + 1;
        self.bytes += record.key.as_ref().map_or(0, |k| k.len()) + record.value.as_ref().map_or(0, |v| v.len());
        self.records.push(record);
        if next >= self.high {
            return self.finish();
        }
        if self.records.len() >= self.limits.records || self.bytes >= self.limits.bytes {
            return Some(self.close(next));
        }
        None
    }

    /// The partition's end is reached: the open segment, ending at the high watermark, if it holds
    /// any record (an object with no batch cannot be read back; the next run starts from here).
    fn finish(&mut self) -> Option<Segment> {
        (!self.records.is_empty()).then(|| self.close(self.high))
    }

    fn done(&self) -> bool {
        self.base >= self.high
    }

    fn close(&mut self, next: Offset) -> Segment {
        self.bytes = 0;
        let segment = Segment { base: self.base, next, records: std::mem::take(&mut self.records) };
        self.base = next;
        segment
    }
}

/// Copies every partition of `topic` from `source` into `archive`, from where the archive ends
/// (or the log starts) up to the high watermark read at the start of the run.
///
/// `marks` gives each partition's `(log start, high watermark)`, as the broker reports them
/// (`kappa_connectors::kafka::admin::watermarks`); `source` is any reader of the topic
/// (`kappa_connectors::KafkaSource` reading up to those high watermarks, for `kappa archive
/// write`), opened here at each partition's start. A partition is complete when the source
/// delivers its record just before the high watermark, or says the partition ended (the offsets
/// between its last record and the watermark hold no data, such as transaction markers, and lie
/// inside the last segment's range). `progress` is called with the number of records copied so
/// far.
pub fn write_archive(
    archive: &Archive,
    topic: &str,
    marks: &BTreeMap<i32, (Offset, Offset)>,
    source: &dyn SourceFactory,
    progress: &dyn Fn(u64),
) -> Result<WriteReport> {
    let layout = archive.layout.clone();
    let mut owned: Vec<(PartitionId, Option<Offset>)> = Vec::new();
    let mut open: Vec<PartitionCopy> = Vec::new();
    let mut report = WriteReport::default();
    for (&partition, &(log_start, high)) in marks {
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
            owned.push((PartitionId::new(topic, partition), Some(start)));
            open.push(PartitionCopy::new(start, high, LIMITS));
        }
    }
    if open.is_empty() {
        return Ok(report);
    }
    let failed = |source| Error::Consume { topic: topic.to_string(), source };
    let mut reader = source.open(&owned).map_err(failed)?;

    let write = |partition: i32, segment: Segment, report: &mut WriteReport| -> Result<()> {
        let mut bytes = Vec::new();
        for chunk in segment.records.chunks(BATCH_RECORDS) {
            encode_batch(chunk, &mut bytes);
        }
        let key = KappaLayout::segment_key(archive, topic, partition, segment.base, segment.next);
        runtime()
            .block_on(archive.store.put(&key, Bytes::from(bytes).into()))
            .map_err(|source| Error::ObjectStore { object: key.to_string(), source })?;
        let entry = report.partitions.entry(partition).or_insert((segment.base, segment.next, 0));
        entry.1 = segment.next;
        entry.2 += 1;
        Ok(())
    };
    let (mut records, mut finished) = (Vec::new(), Vec::new());
    while open.iter().any(|copy| !copy.done()) {
        records.clear();
        finished.clear();
        let poll = reader.poll(&mut records, &mut finished).map_err(failed)?;
        for (index, record) in records.drain(..) {
            let (partition, copy) = (owned[index].0.partition, &mut open[index]);
            if copy.done() {
                continue;
            }
            let copied = (copy.base..copy.high).contains(&record.offset);
            let closed = copy.push(record);
            if copied {
                report.records += 1;
                if report.records.is_multiple_of(10_000) {
                    progress(report.records);
                }
            }
            if let Some(segment) = closed {
                write(partition, segment, &mut report)?;
            }
        }
        for &index in &finished {
            let (partition, copy) = (owned[index].0.partition, &mut open[index]);
            if let Some(segment) = copy.finish() {
                write(partition, segment, &mut report)?;
            }
            // Nothing more to copy this run, written or not.
            copy.base = copy.high;
        }
        if poll == Poll::Pending {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    progress(report.records);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: Offset) -> Record {
        Record { offset, timestamp: Some(offset), key: None, value: Some(Bytes::from("v")) }
    }

    fn copy_all(start: Offset, high: Offset, offsets: &[Offset], limits: Limits) -> Vec<(Offset, Offset, usize)> {
        let mut copy = PartitionCopy::new(start, high, limits);
        let mut out: Vec<Segment> = offsets.iter().filter_map(|&o| copy.push(record(o))).collect();
        out.extend(copy.finish());
        out.iter().map(|s| (s.base, s.next, s.records.len())).collect()
    }

    #[test]
    fn written_keys_are_contiguous_across_offsets_without_records() {
        // Offsets 12 and 13 are transaction markers, 17..20 the partition's trailing markers: the
        // consumer never delivers them.
        let limits = Limits { records: 2, bytes: usize::MAX };
        let segments = copy_all(10, 20, &[10, 11, 14, 15, 16], limits);
        assert_eq!(segments, vec![(10, 12, 2), (12, 16, 2), (16, 20, 1)]);
        assert!(segments.windows(2).all(|w| w[0].1 == w[1].0), "each segment starts where the previous ends");
        // A run that starts at the archive's end starts its first key there, whatever the first
        // record delivered.
        assert_eq!(copy_all(100, 110, &[103, 104], LIMITS), vec![(100, 110, 2)]);
    }

    #[test]
    fn records_outside_the_run_are_not_copied() {
        assert_eq!(copy_all(10, 12, &[9, 10, 11, 12, 13], LIMITS), vec![(10, 12, 2)]);
        assert_eq!(copy_all(10, 12, &[], LIMITS), vec![]);
    }

    #[test]
    fn any_source_archives_and_a_second_run_appends_only_what_is_new() {
        let archive = Archive::open("memory://writer-any-source").expect("opens");
        let partition = |offsets: &[Offset]| offsets.iter().map(|&o| record(o)).collect::<Vec<_>>();
        // Partition 1 ends in offsets without records (markers) before its high watermark.
        let history = vec![
            (PartitionId::new("t", 0), partition(&[0, 1, 2, 3])),
            (PartitionId::new("t", 1), partition(&[0, 2, 3])),
        ];
        let source = kappa_engine::MemorySource::new(history.clone()).with_batch(2);
        let marks = BTreeMap::from([(0, (0, 4)), (1, (0, 6))]);
        let report = write_archive(&archive, "t", &marks, &source, &|_| ()).expect("writes");
        assert_eq!(report.records, 7);
        assert_eq!(report.partitions, BTreeMap::from([(0, (0, 4, 1)), (1, (0, 6, 1))]));
        // More records since: only they are copied.
        let mut grown = history;
        grown[0].1.extend(partition(&[4, 5]));
        let source = kappa_engine::MemorySource::new(grown);
        let marks = BTreeMap::from([(0, (0, 6)), (1, (0, 6))]);
        let report = write_archive(&archive, "t", &marks, &source, &|_| ()).expect("appends");
        assert_eq!(report.partitions, BTreeMap::from([(0, (4, 6, 1))]));
        let replay = crate::ReplaySource::open(archive, "t").expect("replays");
        assert_eq!(replay.end_offsets(), BTreeMap::from([(0, 6), (1, 6)]));
    }

    #[test]
    fn an_archive_written_across_offset_gaps_replays_without_a_hole() {
        let archive = Archive::open("memory://writer-contiguous").expect("opens");
        let limits = Limits { records: 4, bytes: usize::MAX };
        let mut copy = PartitionCopy::new(0, 12, limits);
        let offsets = [0, 1, 4, 5, 6, 9];
        for segment in
            offsets.iter().filter_map(|&o| copy.push(record(o))).collect::<Vec<_>>().into_iter().chain(copy.finish())
        {
            let mut bytes = Vec::new();
            encode_batch(&segment.records, &mut bytes);
            let key = KappaLayout::segment_key(&archive, "t", 0, segment.base, segment.next);
            runtime().block_on(archive.store.put(&key, bytes.into())).expect("put");
        }
        let replay = crate::ReplaySource::open(archive.clone(), "t").expect("no hole: keys are contiguous");
        assert_eq!(replay.end_offsets(), BTreeMap::from([(0, 12)]), "the end is the high watermark");
        let summary = crate::inspect::summarize(&archive, "t").expect("summarizes");
        assert!(summary.damaged().is_empty(), "{:?}", summary.damaged());
        assert_eq!(summary.partitions[&0].records, offsets.len() as u64);
    }
}
