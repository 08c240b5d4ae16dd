//! Property tests of Kappa's pipelines against plain-Rust batch references.
//!
//! Start with [`harness`]: the property harness any pipeline's tests call with the pipeline, a
//! strategy for each input's history and a batch reference. Our own pipelines' tests in `tests/`
//! run on it. Below it, this library holds the pieces it is made of: the reference semantics of
//! dataflow time ([`reference_times`]), written independently of the engine's implementation,
//! [`split_input`], which serves a history partly from an archive and partly "live", and
//! [`Crashing`], a source that fails part-way, for restart tests.
#![forbid(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kappa_engine::{BoxError, MemorySource, Offset, PartitionId, PartitionedSource, Poll, Record, SourceFactory};
use kappa_replay::segment::encode_batch;
use kappa_replay::{Archive, Handoff, KappaLayout, ReplaySource};
use object_store::ObjectStoreExt;

/// One partition of a test history and how it is served.
#[derive(Clone, Debug)]
pub struct SplitPartition {
    /// The partition's records, offsets 0, 1, ...
    pub records: Vec<Record>,
    /// Records before this index come from the archive, the rest from the live source.
    pub split: usize,
    /// Records per archived segment (at least 1).
    pub segment: usize,
}

/// Serves `topic` as an archive (in a fresh in-memory store, segments of the given sizes) handed
/// off to a live in-memory source delivering `batch` records per poll, exactly as the replay
/// command joins an archive to a broker.
pub fn split_input(topic: &str, partitions: &[SplitPartition], batch: usize) -> Arc<dyn SourceFactory> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("memory://proptest-{topic}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let archive = Archive::open(&name).expect("memory archive");
    let mut live = Vec::new();
    for (p, part) in partitions.iter().enumerate() {
        for chunk in part.records[..part.split].chunks(part.segment.max(1)) {
            let mut bytes = Vec::new();
            encode_batch(chunk, &mut bytes);
            let (base, next) = (chunk[0].offset, chunk[chunk.len() - 1].offset + 1);
            let key = KappaLayout::segment_key(&archive, topic, p as i32, base, next);
            kappa_replay::archive::runtime().block_on(archive.store.put(&key, bytes.into())).expect("put");
        }
        live.push((PartitionId::new(topic, p as i32), part.records.clone()));
    }
    let live = MemorySource::new(live).with_batch(batch);
    let watermarks: BTreeMap<i32, (i64, i64)> =
        partitions.iter().enumerate().map(|(p, part)| (p as i32, (0, part.records.len() as i64))).collect();
    match ReplaySource::open(archive, topic) {
        Ok(replay) => Arc::new(Handoff::new(replay, Arc::new(live), &watermarks).expect("no gap by construction")),
        // Nothing archived at all: the whole history is live.
        Err(kappa_replay::Error::EmptyArchive { .. }) => Arc::new(live),
        Err(e) => panic!("archive fails to open: {e}"),
    }
}

/// A record at `offset` whose value is `value` as JSON.
pub fn json_record<T: serde::Serialize>(offset: usize, value: &T) -> Record {
    let json = serde_json::to_vec(value).expect("test values serialize");
    Record { offset: offset as i64, timestamp: None, key: None, value: Some(bytes::Bytes::from(json)) }
}
/// Dataflow times by the definition: for each partition, in offset order, a record's time is its
/// timestamp raised to the largest timestamp seen before it in that partition minus `lateness_ms`.
///
/// ```
/// assert_eq!(kappa_proptests::reference_times(&[10_000, 2_000, 9_000], 5_000), vec![10_000, 5_000, 9_000]);
/// ```
pub fn reference_times(timestamps: &[u64], lateness_ms: u64) -> Vec<u64> {
    let mut largest: Option<u64> = None;
    timestamps
        .iter()
        .map(|&ts| {
            let floor = largest.map_or(0, |m| m.saturating_sub(lateness_ms));
            largest = Some(largest.map_or(ts, |m| m.max(ts)));
            ts.max(floor)
        })
        .collect()
}

/// The output collection at time `t`: updates at times up to `t`, summed per row. Fails if a row
/// is left with a multiplicity other than 0 or 1, which a set-valued pipeline never produces.
pub fn accumulated_at<D: Ord + Clone + std::fmt::Debug>(
    updates: &[(D, u64, isize)],
    t: u64,
) -> Result<BTreeSet<D>, String> {
    let mut sums: BTreeMap<&D, isize> = BTreeMap::new();
    for (row, time, diff) in updates {
        if *time <= t {
            *sums.entry(row).or_default() += diff;
        }
    }
    let mut out = BTreeSet::new();
    for (row, n) in sums {
        match n {
            0 => {}
            1 => {
                out.insert(row.clone());
            }
            n => return Err(format!("row {row:?} has multiplicity {n} at time {t}")),
        }
    }
    Ok(out)
}

/// The reason a [`Crashing`] source fails with.
pub const CRASH: &str = "simulated crash";

/// A source that fails ([`CRASH`]) once a budget of records, shared by every reader and every
/// input holding the same counter, is used up: a crash at a chosen moment, for restart tests.
pub struct Crashing {
    inner: Arc<dyn SourceFactory>,
    left: Arc<AtomicI64>,
    pause: Option<Duration>,
}

impl Crashing {
    /// Wraps `inner`; readers fail at the first poll after `left` reaches 0.
    pub fn new(inner: Arc<dyn SourceFactory>, left: Arc<AtomicI64>) -> Self {
        Crashing { inner, left, pause: None }
    }

    /// Sleeps `pause` before each poll, so that a job lives long enough to checkpoint.
    pub fn slow(mut self, pause: Duration) -> Self {
        self.pause = Some(pause);
        self
    }
}

struct CrashingReader {
    inner: Box<dyn PartitionedSource>,
    left: Arc<AtomicI64>,
    pause: Option<Duration>,
}

impl SourceFactory for Crashing {
    fn partitions(&self) -> Result<Vec<PartitionId>, BoxError> {
        self.inner.partitions()
    }
    fn open(&self, owned: &[(PartitionId, Option<Offset>)]) -> Result<Box<dyn PartitionedSource>, BoxError> {
        Ok(Box::new(CrashingReader { inner: self.inner.open(owned)?, left: self.left.clone(), pause: self.pause }))
    }
    fn backfill_end(&self, partition: &PartitionId) -> Option<Offset> {
        self.inner.backfill_end(partition)
    }
}

impl PartitionedSource for CrashingReader {
    fn poll(&mut self, out: &mut Vec<(usize, Record)>, finished: &mut Vec<usize>) -> Result<Poll, BoxError> {
        if self.left.load(Ordering::SeqCst) <= 0 {
            return Err(CRASH.into());
        }
        if let Some(pause) = self.pause {
            std::thread::sleep(pause);
        }
        let before = out.len();
        let poll = self.inner.poll(out, finished)?;
        self.left.fetch_sub((out.len() - before) as i64, Ordering::SeqCst);
        Ok(poll)
    }
    fn caught_up(&self, index: usize) -> Option<Offset> {
        self.inner.caught_up(index)
    }
    fn hold(&mut self, index: usize, held: bool) {
        self.inner.hold(index, held)
    }
}
