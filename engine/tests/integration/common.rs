//! Sources and runs shared by the tests: a history of words over three partitions, a source over
//! a prefix of it that can claim part of it as backfill, and a live source that tests feed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kappa_engine::{
    execute, BoxError, CheckpointConfig, ClusterConfig, Codec, JobOptions, JobReport, JsonLinesSink, MemorySource,
    Offset, PartitionId, PartitionedSource, Poll, Record, Retention, SourceFactory, Sources, Time,
};
use object_store::ObjectStore;

/// Records of partition `p`: words with jittered timestamps; "-w" retracts a "w". Partition 2 is
/// short, so it finishes long before the others.
pub fn history() -> Vec<(PartitionId, Vec<Record>)> {
    (0..3u64)
        .map(|p| {
            let len = if p == 2 { 300 } else { 1_500 };
            let records = (0..len)
                .map(|i| {
                    let word = format!("{}w{}", if i % 7 == 3 { "-" } else { "" }, (i * 31 + p) % 23);
                    Record {
                        offset: i as Offset,
                        timestamp: Some((i * 10 + (i * 7919 + p) % 40) as i64),
                        key: None,
                        value: Some(Bytes::from(word)),
                    }
                })
                .collect();
            (PartitionId::new("words", p as i32), records)
        })
        .collect()
}

/// The first `fraction` (per thousand) of every partition of `history`.
pub fn prefix(history: &[(PartitionId, Vec<Record>)], per_mille: usize) -> Vec<(PartitionId, Vec<Record>)> {
    history.iter().map(|(p, r)| (p.clone(), r[..r.len() * per_mille / 1_000].to_vec())).collect()
}

/// A memory source whose records below `backfill` (per thousand of each partition) are backfill,
/// the rest live (all of them backfill: a replay of an archive alone).
#[derive(Clone)]
pub struct Backfilled {
    pub inner: MemorySource,
    pub ends: BTreeMap<PartitionId, Offset>,
}

impl Backfilled {
    pub fn new(records: Vec<(PartitionId, Vec<Record>)>, backfill_per_mille: usize) -> Self {
        let ends = records.iter().map(|(p, r)| (p.clone(), (r.len() * backfill_per_mille / 1_000) as Offset)).collect();
        Backfilled { inner: MemorySource::new(records).with_batch(7), ends }
    }
}

impl SourceFactory for Backfilled {
    fn partitions(&self) -> Result<Vec<PartitionId>, BoxError> {
        self.inner.partitions()
    }
    fn open(&self, owned: &[(PartitionId, Option<Offset>)]) -> Result<Box<dyn PartitionedSource>, BoxError> {
        self.inner.open(owned)
    }
    fn backfill_end(&self, partition: &PartitionId) -> Option<Offset> {
        self.ends.get(partition).copied()
    }
}

/// The word-count decoder: a word, its timestamp, +1 or -1.
pub fn decode(record: &Record) -> Result<(String, u64, isize), std::str::Utf8Error> {
    let text = std::str::from_utf8(record.value.as_deref().unwrap_or_default())?;
    let ts = record.timestamp.unwrap_or(0) as u64;
    Ok(match text.strip_prefix('-') {
        Some(word) => (word.to_string(), ts, -1),
        None => (text.to_string(), ts, 1),
    })
}

pub fn checkpoint(store: Arc<dyn ObjectStore>, granularity: u64) -> CheckpointConfig {
    CheckpointConfig {
        pipeline_version: 1,
        store,
        prefix: object_store::path::Path::from("ckpt"),
        location: "memory:///ckpt".into(),
        every: Duration::from_millis(10),
        pipeline: "count".into(),
        fingerprint: format!("lateness=50,granularity={granularity}"),
        codec: Codec::Postcard,
        keep: 2,
    }
}

pub struct Run {
    pub workers: usize,
    pub granularity: u64,
    pub idle_timeout: Option<Duration>,
    pub checkpoint: Option<CheckpointConfig>,
}

impl Run {
    pub fn plain(workers: usize) -> Self {
        Run { workers, granularity: 0, idle_timeout: None, checkpoint: None }
    }

    /// Counts words of `source` into the JSON-lines file `out`.
    pub fn count(&self, source: impl SourceFactory + 'static, out: &Path) -> kappa_engine::Result<JobReport> {
        let sink = JsonLinesSink::new(Some(out.to_path_buf()));
        let options = JobOptions {
            lateness_ms: 50,
            backfill_granularity_ms: self.granularity,
            idle_timeout: self.idle_timeout,
            checkpoint: self.checkpoint.clone(),
            ..JobOptions::default()
        };
        execute(&ClusterConfig::threads(self.workers), options, Sources::new().with("words", source), move |ctx| {
            let words = ctx.durable_input("words", decode, Retention::Collapse)?;
            ctx.output(words.count(), sink.clone());
            Ok(())
        })
    }
}

/// The updates of a JSON-lines output: `((word, count), time, diff)`.
pub fn updates(path: &Path) -> Vec<((String, isize), Time, isize)> {
    let text = std::fs::read_to_string(path).expect("output exists");
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let data =
                (v["data"][0].as_str().expect("word").to_string(), v["data"][1].as_i64().expect("count") as isize);
            (data, v["time"].as_u64().expect("time"), v["diff"].as_i64().expect("diff") as isize)
        })
        .collect()
}

/// The output accumulated at `time`: every update at or before it, consolidated.
pub fn at(updates: &[((String, isize), Time, isize)], time: Time) -> BTreeMap<(String, isize), isize> {
    let mut acc = BTreeMap::new();
    for (data, t, diff) in updates {
        if *t <= time {
            *acc.entry(data.clone()).or_insert(0) += diff;
        }
    }
    acc.retain(|_, d| *d != 0);
    acc
}

/// Every partition's records so far, shared by the test and the readers.
pub type FeedLog = Arc<Mutex<Vec<(PartitionId, Vec<Record>)>>>;

/// A live source the test feeds: records appear when pushed; a partition that has delivered
/// everything is caught up (as after a broker's partition EOF); all end when `stop` is set.
#[derive(Clone)]
pub struct Feed {
    pub partitions: FeedLog,
    pub stop: Arc<AtomicBool>,
    /// Crash after this many polls that delivered records, if set.
    pub crash_after: Option<usize>,
}

impl Feed {
    pub fn new(partitions: usize) -> Self {
        let parts = (0..partitions).map(|p| (PartitionId::new("words", p as i32), Vec::new())).collect();
        Feed { partitions: Arc::new(Mutex::new(parts)), stop: Arc::default(), crash_after: None }
    }
    pub fn push(&self, partition: usize, timestamp: i64, word: &str) {
        let mut parts = self.partitions.lock().expect("feed");
        let records = &mut parts[partition].1;
        let offset = records.len() as Offset;
        records.push(Record {
            offset,
            timestamp: Some(timestamp),
            key: None,
            value: Some(Bytes::from(word.to_string())),
        });
    }
}

struct FeedReader {
    feed: Feed,
    owned: Vec<(usize, usize)>,
    done: bool,
    polls: usize,
}

impl SourceFactory for Feed {
    fn partitions(&self) -> Result<Vec<PartitionId>, BoxError> {
        Ok(self.partitions.lock().expect("feed").iter().map(|(p, _)| p.clone()).collect())
    }
    fn open(&self, owned: &[(PartitionId, Option<Offset>)]) -> Result<Box<dyn PartitionedSource>, BoxError> {
        let parts = self.partitions.lock().expect("feed");
        let owned = owned
            .iter()
            .map(|(pid, start)| (parts.iter().position(|(p, _)| p == pid).expect("known"), start.unwrap_or(0) as usize))
            .collect();
        Ok(Box::new(FeedReader { feed: self.clone(), owned, done: false, polls: 0 }))
    }
}

impl PartitionedSource for FeedReader {
    fn poll(&mut self, out: &mut Vec<(usize, Record)>, finished: &mut Vec<usize>) -> Result<Poll, BoxError> {
        if self.done {
            return Ok(Poll::Pending);
        }
        let stop = self.feed.stop.load(Ordering::SeqCst);
        let parts = self.feed.partitions.lock().expect("feed");
        let before = out.len();
        for (index, (partition, next)) in self.owned.iter_mut().enumerate() {
            let records = &parts[*partition].1;
            out.extend(records[*next..].iter().take(3).cloned().map(|r| (index, r)));
            *next = (*next + 3).min(records.len());
        }
        if out.len() > before {
            self.polls += 1;
            if self.feed.crash_after.is_some_and(|n| self.polls > n) {
                return Err("simulated crash".into());
            }
        }
        let caught_up = self.owned.iter().all(|&(p, next)| next == parts[p].1.len());
        if stop && caught_up {
            finished.extend(0..self.owned.len());
            self.done = true;
        }
        Ok(Poll::Pending)
    }
    fn caught_up(&self, index: usize) -> Option<Offset> {
        let (partition, next) = self.owned[index];
        let parts = self.feed.partitions.lock().expect("feed");
        (next == parts[partition].1.len()).then_some(next as Offset)
    }
}
