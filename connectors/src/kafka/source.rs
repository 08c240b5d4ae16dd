//! The Kafka source: explicit assignment, explicit start offsets, explicit end.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kappa_engine::{BoxError, Offset, PartitionId, PartitionedSource, Poll, Record, SourceFactory};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;

use crate::error::{Error, Result};
use crate::kafka::admin;

/// Where a Kafka input ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadUntil {
    /// Each partition's high watermark as read when the source was created.
    HighWatermarkAtStart,
    /// These offsets (exclusive), per partition; partitions not listed end at once.
    Offsets(BTreeMap<i32, Offset>),
    /// Never: follow the topic forever.
    Forever,
    /// Follow the topic; a reader stops once every partition it owns has reached the broker's end
    /// and no record has arrived for this long.
    Idle(Duration),
}

/// Settings of a [`KafkaSource`].
#[derive(Clone, Debug)]
pub struct KafkaSourceConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic to read.
    pub topic: String,
    /// Where to stop.
    pub until: ReadUntil,
}

impl KafkaSourceConfig {
    /// Reads `topic` from `brokers` until `until`.
    pub fn new(brokers: &str, topic: &str, until: ReadUntil) -> Self {
        KafkaSourceConfig { brokers: brokers.to_string(), topic: topic.to_string(), until }
    }
}

/// A topic on a Kafka-API broker as a Kappa input. Partitions (and, for
/// [`ReadUntil::HighWatermarkAtStart`], end offsets) are read once, at creation, so every worker
/// of the process agrees on them.
pub struct KafkaSource {
    config: KafkaSourceConfig,
    partitions: Result<Vec<i32>, String>,
    ends: Option<BTreeMap<i32, Offset>>,
}

impl KafkaSource {
    /// Connects to the brokers and reads the topic's partitions.
    pub fn new(config: KafkaSourceConfig) -> Self {
        match Self::try_new(config.clone()) {
            Ok(source) => source,
            Err(e) => KafkaSource { config, partitions: Err(error_chain(&e)), ends: None },
        }
    }

    /// As [`KafkaSource::new`], returning the error instead of deferring it to the job's start.
    pub fn try_new(config: KafkaSourceConfig) -> Result<Self> {
        let (partitions, ends) = match &config.until {
            ReadUntil::HighWatermarkAtStart => {
                let marks = admin::watermarks(&config.brokers, &config.topic)?;
                (marks.keys().copied().collect(), Some(marks.into_iter().map(|(p, (_, hi))| (p, hi)).collect()))
            }
            ReadUntil::Offsets(ends) => (admin::partitions(&config.brokers, &config.topic)?, Some(ends.clone())),
            ReadUntil::Forever | ReadUntil::Idle(_) => (admin::partitions(&config.brokers, &config.topic)?, None),
        };
        Ok(KafkaSource { config, partitions: Ok(partitions), ends })
    }
}

/// Every record of `topic`, from each partition's start to its high watermark as read now, in
/// offset order per partition: for small metadata topics (`__remote_log_metadata`, say), read
/// whole before a job starts. Fails if the topic is not read to its end within `timeout`.
pub fn read_to_end(brokers: &str, topic: &str, timeout: Duration) -> Result<Vec<(i32, Record)>> {
    let failed = |reason: String| Error::ReadToEnd { topic: topic.to_string(), brokers: brokers.to_string(), reason };
    let source = KafkaSource::try_new(KafkaSourceConfig::new(brokers, topic, ReadUntil::HighWatermarkAtStart))?;
    let owned: Vec<(PartitionId, Option<Offset>)> =
        source.partitions().map_err(|e| failed(e.to_string()))?.into_iter().map(|p| (p, None)).collect();
    let mut reader = source.open(&owned).map_err(|e| failed(error_chain(&*e)))?;
    let (mut out, mut finished) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + timeout;
    while finished.len() < owned.len() {
        match reader.poll(&mut out, &mut finished).map_err(|e| failed(error_chain(&*e)))? {
            Poll::Ready => {}
            _ if Instant::now() > deadline => {
                return Err(failed(format!(
                    "not at its end after {timeout:?} ({} records read); is the broker reachable?",
                    out.len()
                )))
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    Ok(out.into_iter().map(|(index, record)| (owned[index].0.partition, record)).collect())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl SourceFactory for KafkaSource {
    fn partitions(&self) -> Result<Vec<PartitionId>, BoxError> {
        let parts = self.partitions.as_ref().map_err(|e| BoxError::from(e.clone()))?;
        Ok(parts.iter().map(|&p| PartitionId::new(&self.config.topic, p)).collect())
    }

    fn open(&self, owned: &[(PartitionId, Option<Offset>)]) -> Result<Box<dyn PartitionedSource>, BoxError> {
        let topic = &self.config.topic;
        let consumer = crate::kafka::consumer(&self.config.brokers)?;
        let mut assignment = TopicPartitionList::new();
        let mut index_of = HashMap::new();
        let mut ends = Vec::new();
        let mut starts = Vec::new();
        for (index, (pid, start)) in owned.iter().enumerate() {
            let offset = start.map_or(rdkafka::Offset::Beginning, rdkafka::Offset::Offset);
            assignment.add_partition_offset(topic, pid.partition, offset)?;
            index_of.insert(pid.partition, index);
            ends.push(self.ends.as_ref().map(|e| e.get(&pid.partition).copied().unwrap_or(0)));
            starts.push(start.unwrap_or(0));
        }
        if !owned.is_empty() {
            consumer.assign(&assignment).map_err(|source| Error::Consume { topic: topic.clone(), source })?;
        }
        let idle = match self.config.until {
            ReadUntil::Idle(d) => Some(d),
            _ => None,
        };
        Ok(Box::new(KafkaReader {
            consumer,
            topic: topic.clone(),
            index_of,
            open: vec![true; owned.len()],
            at_end: vec![false; owned.len()],
            positioned: owned.iter().map(|(_, start)| start.is_some()).collect(),
            skip_below: starts.clone(),
            next: starts,
            ends,
            idle,
            last_record: Instant::now(),
            started: false,
            resume: owned.iter().map(|(_, start)| start.filter(|&x| x > 0).map(Resume::new)).collect(),
        }))
    }
}

/// A partition resumed at an offset that a delivered record has not yet confirmed.
///
/// A broker should answer a fetch at offset `X` with the batch that contains `X` (the client
/// drops the records before `X`). Tansu 0.6.0 answers with the batches that *start* at or after
/// `X`: resumed inside a batch, it silently skips the rest of that batch, or, inside the last
/// batch, returns nothing at all. So a resumed partition is read from `from ≤ X` and records
/// before `X` are dropped; the resume is confirmed once the first record delivered after a seek
/// lies at or before `X` (then every record from `X` on follows, batches being contiguous). If
/// the first record lies past `X`, or neither a record nor the partition's end arrives within
/// [`RESUME_PATIENCE`], the reader seeks further back (4× each time) and tries again; from the log
/// start, a first record past `X` is a real gap (compaction, transaction markers) and is accepted.
/// Reaching the partition's end with nothing delivered also confirms the start.
#[derive(Debug)]
struct Resume {
    /// The offset the job needs next.
    want: Offset,
    /// Where the current fetch started.
    from: Offset,
    /// How far back of `want` the next retreat goes.
    back: Offset,
    /// When the current fetch started.
    sought: Instant,
}

/// How long a resumed partition may deliver neither a record nor its end before the reader seeks
/// further back.
const RESUME_PATIENCE: Duration = Duration::from_millis(500);

impl Resume {
    fn new(want: Offset) -> Self {
        Resume { want, from: want, back: 1_024, sought: Instant::now() }
    }
}

/// Records handed to the engine per poll, at most.
const POLL_BUDGET: usize = 8192;
/// How long to wait for a partition's watermarks when an empty partition reaches its end.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);

struct KafkaReader {
    consumer: crate::kafka::KappaConsumer,
    topic: String,
    index_of: HashMap<i32, usize>,
    open: Vec<bool>,
    /// Whether the partition has reached the broker's end since its last record.
    at_end: Vec<bool>,
    /// Whether `next` is known to be the partition's position (a start offset was given, a record
    /// was delivered, or the end of an empty partition was looked up).
    positioned: Vec<bool>,
    next: Vec<Offset>,
    ends: Vec<Option<Offset>>,
    idle: Option<Duration>,
    last_record: Instant,
    started: bool,
    /// Per partition: a start not yet confirmed (see [`Resume`]).
    resume: Vec<Option<Resume>>,
    /// Per partition: records before this offset are dropped (read again after seeking back).
    skip_below: Vec<Offset>,
}

impl KafkaReader {
    fn partition_of(&self, index: usize) -> Option<i32> {
        self.index_of.iter().find(|(_, &i)| i == index).map(|(&p, _)| p)
    }

    /// Seeks a resumed partition further back of the offset it needs (see [`Resume`]); returns
    /// `false` when it already reads from the log start.
    fn retreat(&mut self, index: usize) -> Result<bool, BoxError> {
        let Some(partition) = self.partition_of(index) else { return Ok(false) };
        let (low, _) = self
            .consumer
            .fetch_watermarks(&self.topic, partition, WATERMARK_TIMEOUT)
            .map_err(|source| Error::Consume { topic: self.topic.clone(), source })?;
        let Some(resume) = self.resume[index].as_mut() else { return Ok(false) };
        if resume.from <= low {
            return Ok(false);
        }
        resume.from = resume.want.saturating_sub(resume.back).max(low);
        resume.back = resume.back.saturating_mul(4);
        resume.sought = Instant::now();
        let from = resume.from;
        self.at_end[index] = false;
        tracing::debug!(
            "{} partition {partition}: confirming offset {} by reading from {from}",
            self.topic,
            resume.want
        );
        self.consumer
            .seek(&self.topic, partition, rdkafka::Offset::Offset(from), WATERMARK_TIMEOUT)
            .map_err(|source| Error::Consume { topic: self.topic.clone(), source })?;
        Ok(true)
    }

    /// Resumed partitions that delivered nothing for a while: seek further back. (Whether the
    /// broker holds records past the start cannot be asked: Tansu 0.6.0's ListOffsets answers
    /// with its last batch's first offset plus one. An end of partition after the seek, with
    /// nothing delivered, confirms the start instead.)
    fn check_resumes(&mut self) -> Result<(), BoxError> {
        for index in 0..self.resume.len() {
            let waited = self.resume[index].as_ref().is_some_and(|r| r.sought.elapsed() >= RESUME_PATIENCE);
            if self.open[index] && waited && !self.retreat(index)? {
                // From the log start already: the fetches deliver a record or reach the end.
                if let Some(r) = self.resume[index].as_mut() {
                    r.sought = Instant::now();
                }
            }
        }
        Ok(())
    }

    fn close(&mut self, index: usize, finished: &mut Vec<usize>) {
        if self.open[index] {
            self.open[index] = false;
            finished.push(index);
        }
    }
}

impl PartitionedSource for KafkaReader {
    fn poll(&mut self, out: &mut Vec<(usize, Record)>, finished: &mut Vec<usize>) -> Result<Poll, BoxError> {
        if !self.started {
            self.started = true;
            for index in 0..self.open.len() {
                if self.ends[index].is_some_and(|end| self.next[index] >= end) {
                    self.close(index, finished);
                }
            }
        }
        if !self.open.iter().any(|&o| o) {
            return Ok(Poll::Pending);
        }
        let mut delivered = 0;
        while delivered < POLL_BUDGET {
            let message = match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    if let Some(&index) = self.index_of.get(&p) {
                        self.at_end[index] = true;
                        // An end before any record does not confirm the start by itself: Tansu
                        // answers a fetch inside its last batch with nothing, and then its end. So
                        // read from further back until a record at or before the start shows up
                        // (or the fetch starts at the log start, where nothing can hide).
                        if self.resume[index].is_some() && self.retreat(index)? {
                            continue;
                        }
                        // Nothing delivered since a fetch from at or before the log start: nothing
                        // lies at or after the start, so nothing was skipped.
                        self.resume[index] = None;
                        if !self.positioned[index] {
                            // Read from the beginning and nothing delivered: the consumer has no
                            // position yet, so ask where the partition ends (once).
                            if let Ok((_, high)) = self.consumer.fetch_watermarks(&self.topic, p, WATERMARK_TIMEOUT) {
                                self.next[index] = self.next[index].max(high);
                                self.positioned[index] = true;
                            }
                        }
                    }
                    continue;
                }
                Some(Err(source)) => return Err(Error::Consume { topic: self.topic.clone(), source }.into()),
                Some(Ok(message)) => message,
            };
            let Some(&index) = self.index_of.get(&message.partition()) else {
                continue;
            };
            if !self.open[index] {
                continue;
            }
            let offset = message.offset();
            if let Some(resume) = self.resume[index].as_ref() {
                // The first record since the last seek: at or before the start, the start is
                // confirmed; past it, seek further back unless already at the log start.
                if offset > resume.want {
                    drop(message);
                    if self.retreat(index)? {
                        continue;
                    }
                    self.resume[index] = None;
                    // A real gap (from the log start, the first record lies past the start): read
                    // that record again, from its own offset.
                    let Some(partition) = self.partition_of(index) else { continue };
                    self.consumer
                        .seek(&self.topic, partition, rdkafka::Offset::Offset(offset), WATERMARK_TIMEOUT)
                        .map_err(|source| Error::Consume { topic: self.topic.clone(), source })?;
                    continue;
                }
                self.resume[index] = None;
            }
            if offset < self.skip_below[index] {
                continue;
            }
            if self.ends[index].is_some_and(|end| offset >= end) {
                self.close(index, finished);
                continue;
            }
            out.push((
                index,
                Record {
                    offset,
                    timestamp: message.timestamp().to_millis(),
                    key: message.key().map(Bytes::copy_from_slice),
                    value: message.payload().map(Bytes::copy_from_slice),
                },
            ));
            delivered += 1;
            self.next[index] = offset + 1;
            self.positioned[index] = true;
            self.at_end[index] = false;
            self.last_record = Instant::now();
            if self.ends[index].is_some_and(|end| offset + 1 >= end) {
                self.close(index, finished);
            }
        }
        self.check_resumes()?;
        // A fixed end can be hidden behind records the consumer never shows (transaction
        // markers): reaching the broker's end at or past it also ends the partition.
        for index in 0..self.open.len() {
            if self.open[index] && self.at_end[index] {
                if let Some(end) = self.ends[index] {
                    let position = self.consumer.position().ok().and_then(|tpl| {
                        let p = self.index_of.iter().find(|(_, &i)| i == index).map(|(&p, _)| p)?;
                        tpl.find_partition(&self.topic, p)?.offset().to_raw()
                    });
                    if position.is_some_and(|pos| pos >= end) {
                        self.close(index, finished);
                    }
                }
            }
        }
        if let Some(idle) = self.idle {
            let caught_up = (0..self.open.len()).all(|i| !self.open[i] || (self.at_end[i] && self.resume[i].is_none()));
            if caught_up && self.last_record.elapsed() >= idle {
                for index in 0..self.open.len() {
                    self.close(index, finished);
                }
            }
        }
        Ok(if delivered == POLL_BUDGET { Poll::Ready } else { Poll::Pending })
    }

    /// After a partition EOF from the broker and no record since: the consumer's position.
    fn caught_up(&self, index: usize) -> Option<Offset> {
        if !self.open.get(index).copied().unwrap_or(false) || !self.at_end[index] || self.resume[index].is_some() {
            return None;
        }
        let partition = self.partition_of(index)?;
        // The position is the next offset to fetch; it is at least what was delivered. Before any
        // record it may be unset: then what `positioned` vouches for.
        let position = self
            .consumer
            .position()
            .ok()
            .and_then(|tpl| tpl.find_partition(&self.topic, partition)?.offset().to_raw().filter(|&o| o >= 0));
        match position {
            Some(offset) => Some(offset.max(self.next[index])),
            None => self.positioned[index].then_some(self.next[index]),
        }
    }
}
