//! The Kafka sink: a pipeline's output as a changelog topic or an upsert topic, exactly once.
//!
//! # Modes
//! - **changelog** (default): one record per update, key = the data's key fields (JSON), value
//!   `{"time","diff","data"}`.
//! - **upsert**: key → the row's current value; a tombstone (null value) when the key's row
//!   disappears. With `cleanup.policy=compact` the topic *is* the materialized view.
//!
//! # Exactly once, without broker transactions
//! The sink writes only completed timestamps (the engine's consistent sink guarantees that) and,
//! across restarts, never writes a record twice or skips one. It relies on determinism, not on
//! Kafka transactions (Tansu 0.6.0, the broker we test on, does not implement `EndTxn`):
//! 1. **A deterministic sequence per partition.** A time's updates arrive consolidated and sorted;
//!    each record goes to partition `crc32c(key) % partitions`; so the records of every output
//!    partition form one sequence that any run of the same job over the same input reproduces.
//! 2. **In order, no duplicates, no gaps within a run**: the idempotent producer.
//! 3. **A progress record**, every 100 ms while data flows and at the end, *after* a flush:
//!    `{"upper": U, "ends": {partition: offset}}` in `<topic>.kappa-progress`. All times below `U`
//!    are written, and end before those offsets.
//! 4. **Restart.** The sink reads the last progress record and where each partition ends now: the
//!    records beyond a partition's recorded end are the start of what the crashed run wrote for
//!    times `≥ U`. It returns `U` from [`Sink::resume`] (the engine recomputes from there,
//!    identically), and skips, per partition, every record up to that end, checking that each
//!    skipped record is byte for byte the one it would have written. A mismatch stops the job:
//!    the output was written by another job or the input changed. The tail is read as it is
//!    compared, [`TAIL_CHUNK`] records of a partition at a time, so a restart after a long
//!    stretch without progress holds a few chunks in memory, not the whole stretch.
//!
//! # Partitioned writing
//! The sink is [partitioned](Sink::partitioned): the shard of a row is its output partition, and
//! with `n` workers writer `w` writes the partitions `p` with `p % n == w`, with a producer of its
//! own (transactional id `<id>-<w>` when `n > 1`). Each writer's progress record, keyed
//! `<topic>#<w>/<n>`, names only its partitions. A partition's sequence is the one a single
//! writer would give it (a writer sees the time's rows of its partitions sorted, as one writer
//! sees all of them), so the topic holds the same records whatever the number of workers. A
//! restart takes, for each partition, the newest progress record that names it; a writer resumes
//! from the upper its partitions share. If they do not share one (the last run had another number
//! of workers and crashed mid-way), the job stops and says to restart once with that number.
//!
//! A restart assumes the previous run is dead (a crash, a kill); two runs writing at once are not
//! fenced. Consumers see a time's records as they are produced, not atomically: each record
//! carries its time (changelog) so a reader can group them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::marker::PhantomData;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kappa_engine::{BoxError, Diff, Sink, Time};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::TopicPartitionList;
use serde::{Deserialize, Serialize};

use crate::kafka::{admin, client_config, KappaConsumer};

/// Output rows that have a key (the record key, and what an upsert keeps one row per): the
/// engine's, so that a pipeline's rows are keyed once for every output.
pub use kappa_engine::Keyed;

/// How updates become records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SinkMode {
    /// One record per update.
    #[default]
    Changelog,
    /// Key → current value, tombstones for removed rows.
    Upsert,
}

/// Where and how to write.
#[derive(Clone, Debug)]
pub struct KafkaSinkConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// The output topic.
    pub topic: String,
    /// Changelog or upsert.
    pub mode: SinkMode,
    /// Partitions of the topics if the sink creates them.
    pub partitions: i32,
    /// Names the job in progress records, and is the `transactional.id` in transactional mode.
    pub transactional_id: String,
    /// Write in Kafka transactions (for brokers that implement them; Tansu 0.6.0 does not): a
    /// restart fences any older run, and `read_committed` readers see only whole flushes.
    pub transactional: bool,
}

impl KafkaSinkConfig {
    /// A changelog sink to `topic` whose transactional id derives from the topic.
    pub fn new(brokers: &str, topic: &str) -> Self {
        KafkaSinkConfig {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            mode: SinkMode::Changelog,
            partitions: 1,
            transactional_id: format!("kappa-{topic}"),
            transactional: false,
        }
    }

    /// The progress topic beside the output topic.
    pub fn progress_topic(&self) -> String {
        format!("{}.kappa-progress", self.topic)
    }
}

/// A record's key and value (`None`: a tombstone).
type KeyValue = (Vec<u8>, Option<Vec<u8>>);
/// What a progress record says of one partition: the upper, where the partition ended, and the
/// writer that recorded it.
type RecordedEnd = (Time, i64, Option<(usize, usize)>);

/// How often progress is recorded while data flows.
const COMMIT_EVERY: Duration = Duration::from_millis(100);
/// How often progress is recorded when no data flows.
const IDLE_COMMIT_EVERY: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(30);
/// Records of one partition's tail held at once while a restart compares it.
pub const TAIL_CHUNK: usize = 16_384;

/// Writes a pipeline's output to Kafka, exactly once (see the module docs).
pub struct KafkaSink<D> {
    config: KafkaSinkConfig,
    producer: Option<ThreadedProducer<Deliveries>>,
    /// Partitions of the output topic.
    partitions: i32,
    /// What the crashed run already wrote, to skip and check (restart only).
    tail: Option<Tail>,
    /// Whether records were sent since the last progress record.
    dirty: bool,
    /// Transactional mode: whether a transaction is open.
    in_transaction: bool,
    last_commit: Instant,
    /// Everything below this is written and recorded.
    durable: Option<Time>,
    /// Partitioned writing ([`Sink::assign`]): this clone's writer index and the writers; `None`
    /// for the only writer, which writes every partition.
    writer: Option<(usize, usize)>,
    _data: PhantomData<fn(D)>,
}

impl<D> Clone for KafkaSink<D> {
    fn clone(&self) -> Self {
        KafkaSink::new(self.config.clone())
    }
}

/// Delivery reports: where each output partition ends, and the first failure.
pub struct Deliveries {
    topic: String,
    ends: Mutex<BTreeMap<i32, i64>>,
    error: Mutex<Option<String>>,
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) if m.topic() == self.topic => {
                let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
                let end = ends.entry(m.partition()).or_insert(0);
                *end = (*end).max(m.offset() + 1);
            }
            Ok(_) => {}
            Err((e, _)) => {
                self.error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| e.to_string());
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Progress {
    upper: Time,
    ends: BTreeMap<i32, i64>,
    /// The writer that recorded it and how many there were (records of a single writer, and
    /// those written before partitioned writing, have neither).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    writer: Option<(usize, usize)>,
}

/// Serializes topic creation and metadata reads among this process's writers, which all assign
/// themselves at once when a job starts.
static TOPICS: Mutex<()> = Mutex::new(());

/// Records of the progress topic read at once when a restart looks back for progress records.
const PROGRESS_WINDOW: i64 = 256;

impl<D> KafkaSink<D> {
    /// A sink that connects lazily, on first use (only worker 0's clone ever does).
    pub fn new(config: KafkaSinkConfig) -> Self {
        KafkaSink {
            config,
            producer: None,
            partitions: 1,
            tail: None,
            dirty: false,
            in_transaction: false,
            last_commit: Instant::now(),
            durable: None,
            writer: None,
            _data: PhantomData,
        }
    }

    /// Whether this clone writes `partition`.
    fn owns(&self, partition: i32) -> bool {
        self.writer.is_none_or(|(w, n)| partition as usize % n == w)
    }

    /// The key of this writer's progress records.
    fn progress_key(&self) -> String {
        match self.writer {
            Some((w, n)) => format!("{}#{w}/{n}", self.config.topic),
            None => self.config.topic.clone(),
        }
    }

    /// Creates the topics if missing; learns the output topic's partitions.
    fn ensure_topics(&mut self) -> Result<(), BoxError> {
        let _creating = TOPICS.lock().unwrap_or_else(|p| p.into_inner());
        // An upsert topic *is* the view once compacted; the progress topic needs only its last
        // records. Replication is the broker's default.
        let compacted: &[(&str, &str)] = &[("cleanup.policy", "compact")];
        let output_config: &[(&str, &str)] = if self.config.mode == SinkMode::Upsert { compacted } else { &[] };
        for (topic, partitions, config) in [
            (self.config.topic.clone(), self.config.partitions, output_config),
            (self.config.progress_topic(), 1, compacted),
        ] {
            // Create only what is missing (some brokers, like librdkafka's mock, cannot create).
            if admin::partitions(&self.config.brokers, &topic).is_err() {
                admin::create_topic_with(&self.config.brokers, &topic, partitions, None, config)?;
            }
        }
        // Another process may have just created the topic: its metadata can take a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        let partitions = loop {
            match admin::partitions(&self.config.brokers, &self.config.topic) {
                Ok(partitions) => break partitions,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => return Err(e.into()),
            }
        };
        self.partitions = partitions.len().max(1) as i32;
        Ok(())
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> BoxError {
        format!(
            "kafka sink to topic `{}` on {}: {what} failed: {e}; check that the broker is up",
            self.config.topic, self.config.brokers
        )
        .into()
    }

    /// Creates the topics if missing and the idempotent producer.
    fn connect(&mut self) -> Result<(), BoxError> {
        if self.producer.is_some() {
            return Ok(());
        }
        self.ensure_topics()?;
        // Where each output partition ends now; delivery reports move the ends on.
        let ends = admin::watermarks(&self.config.brokers, &self.config.topic)?
            .into_iter()
            .filter(|(p, _)| self.owns(*p))
            .map(|(p, (_, high))| (p, high))
            .collect();
        let mut settings = client_config(&self.config.brokers);
        settings.set("enable.idempotence", "true").set("linger.ms", "5").set("message.timeout.ms", "300000");
        if self.config.transactional {
            let id = match self.writer {
                Some((w, n)) if n > 1 => format!("{}-{w}", self.config.transactional_id),
                _ => self.config.transactional_id.clone(),
            };
            settings.set("transactional.id", &id).set("transaction.timeout.ms", "300000");
        }
        let deliveries =
            Deliveries { topic: self.config.topic.clone(), ends: Mutex::new(ends), error: Mutex::default() };
        let producer: ThreadedProducer<Deliveries> =
            settings.create_with_context(deliveries).map_err(|e| self.failed("creating the producer", e))?;
        if self.config.transactional {
            // Fences every earlier producer with this id and aborts its open transaction.
            producer.init_transactions(TIMEOUT).map_err(|e| self.failed("initializing transactions", e))?;
        }
        self.producer = Some(producer);
        Ok(())
    }

    fn partition_of(&self, key: &[u8]) -> i32 {
        (crc32c::crc32c(key) % self.partitions as u32) as i32
    }

    /// Sends one record, unless the crashed run already wrote it (then checks it is the same).
    fn send(&mut self, topic: &str, partition: i32, key: &[u8], value: Option<&[u8]>) -> Result<(), BoxError> {
        if topic == self.config.topic {
            let expected = match self.tail.as_mut() {
                Some(tail) => tail.next(partition).map_err(|e| self.failed("reading what the crashed run wrote", e))?,
                None => None,
            };
            if let Some(expected) = expected {
                if expected.0 != key || expected.1.as_deref() != value {
                    return Err(format!(
                        "topic `{}` partition {partition} holds a record this job would not write there \
                         (key {}): it was written by another job, or the input changed; write to a new topic",
                        self.config.topic,
                        String::from_utf8_lossy(&expected.0)
                    )
                    .into());
                }
                return Ok(());
            }
            self.dirty = true;
        }
        let producer = self.producer.as_ref().ok_or("kafka sink used before it connected")?;
        if self.config.transactional && !self.in_transaction {
            producer.begin_transaction().map_err(|e| self.failed("beginning a transaction", e))?;
            self.in_transaction = true;
        }
        let producer = self.producer.as_ref().ok_or("kafka sink used before it connected")?;
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(key).partition(partition);
        if let Some(value) = value {
            record = record.payload(value);
        }
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((e, back)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                    std::thread::sleep(Duration::from_millis(5));
                    record = back;
                }
                Err((e, _)) => return Err(self.failed("producing", e)),
            }
        }
    }

    /// Flushes, then records that every time below `upper` is written.
    fn commit(&mut self, upper: Time) -> Result<(), BoxError> {
        let producer = self.producer.as_ref().ok_or("kafka sink used before it connected")?;
        producer.flush(TIMEOUT).map_err(|e| self.failed("flushing output", e))?;
        if let Some(error) = producer.context().error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(self.failed("delivering output", error));
        }
        let ends = producer.context().ends.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let progress = serde_json::to_vec(&Progress { upper, ends, writer: self.writer })?;
        let key = self.progress_key().into_bytes();
        self.send(&self.config.progress_topic(), 0, &key, Some(&progress))?;
        let producer = self.producer.as_ref().ok_or("kafka sink used before it connected")?;
        if self.in_transaction {
            // The data and the progress record become visible together, or not at all.
            producer.commit_transaction(TIMEOUT).map_err(|e| self.failed("committing the transaction", e))?;
            self.in_transaction = false;
        }
        producer.flush(TIMEOUT).map_err(|e| self.failed("flushing progress", e))?;
        if let Some(error) = producer.context().error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(self.failed("recording progress", error));
        }
        self.dirty = false;
        self.last_commit = Instant::now();
        self.durable = Some(upper);
        Ok(())
    }

    /// The newest progress record naming each of `partitions`: `(upper, end, writer)`. Reads the
    /// progress topic backwards, a window at a time, until every partition is named or the topic
    /// begins (a partition no record names has no durable output yet).
    fn recorded_progress(&self, partitions: &[i32]) -> Result<BTreeMap<i32, RecordedEnd>, BoxError> {
        let progress_topic = self.config.progress_topic();
        let marks = admin::watermarks(&self.config.brokers, &progress_topic)?;
        let (low, high) = marks.get(&0).copied().unwrap_or((0, 0));
        let mut found = BTreeMap::new();
        let (mut end, mut window) = (high, PROGRESS_WINDOW);
        let writer_prefix = format!("{}#", self.config.topic);
        while end > low && partitions.iter().any(|p| !found.contains_key(p)) {
            let start = low.max(end - window);
            // In transactional mode some offsets are commit markers, which are not read.
            for (key, value) in self.read(&progress_topic, 0, start, end)?.into_iter().rev() {
                let Some(value) = value else { continue };
                // Only this output's records (the topic is named after it; be strict anyway).
                let key = String::from_utf8_lossy(&key);
                if key != self.config.topic && !key.starts_with(&writer_prefix) {
                    continue;
                }
                let progress = serde_json::from_slice::<Progress>(&value).map_err(|e| {
                    format!("{progress_topic} holds a damaged progress record ({e}); write to a new topic")
                })?;
                for (partition, offset) in progress.ends {
                    found.entry(partition).or_insert((progress.upper, offset, progress.writer));
                }
            }
            end = start;
            window = window.saturating_mul(4);
        }
        Ok(found)
    }

    /// Reads `[from, to)` of one partition.
    fn read(&self, topic: &str, partition: i32, from: i64, to: i64) -> Result<Vec<KeyValue>, BoxError> {
        let mut out = Vec::new();
        if to <= from {
            return Ok(out);
        }
        // read_committed: records of aborted transactions (transactional mode) are not output.
        let consumer: crate::kafka::KappaConsumer = client_config(&self.config.brokers)
            .set("isolation.level", "read_committed")
            .create_with_context(crate::kafka::QuietEof)
            .map_err(|e| self.failed("creating a consumer", e))?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition, rdkafka::Offset::Offset(from))?;
        consumer.assign(&assignment)?;
        let deadline = Instant::now() + TIMEOUT;
        while (out.len() as i64) < to - from {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) if m.offset() < to => {
                    out.push((m.key().unwrap_or_default().to_vec(), m.payload().map(<[u8]>::to_vec)))
                }
                Some(Ok(_)) | Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(self.failed(&format!("reading {topic} partition {partition}"), e)),
                None if Instant::now() > deadline => return Err(self.failed("reading", "timed out")),
                None => {}
            }
        }
        Ok(out)
    }
}

/// What a crashed run wrote after its last progress record, per partition, read [`TAIL_CHUNK`]
/// records at a time as the restarted run compares it.
struct Tail {
    brokers: String,
    topic: String,
    partitions: BTreeMap<i32, PartitionTail>,
    /// The most records buffered at once (what the bounded-memory test checks).
    peak: usize,
}

struct PartitionTail {
    /// The next offset to read.
    next: i64,
    /// Where the partition ended when the run restarted.
    end: i64,
    /// Read, not yet compared: offset and record.
    buffer: VecDeque<(i64, KeyValue)>,
}

impl Tail {
    /// The next record the crashed run wrote to `partition`, or `None` once they are all compared.
    fn next(&mut self, partition: i32) -> Result<Option<KeyValue>, BoxError> {
        self.refill(partition)?;
        Ok(self.partitions.get_mut(&partition).and_then(|part| part.buffer.pop_front()).map(|(_, record)| record))
    }

    /// A partition with records still to compare, and the offset they start at. A partition whose
    /// buffer ran empty is read on first: its rest may be only transaction markers, which are none.
    fn left(&mut self) -> Result<Option<(i32, i64)>, BoxError> {
        let partitions: Vec<i32> = self.partitions.keys().copied().collect();
        for partition in partitions {
            self.refill(partition)?;
            let part = &self.partitions[&partition];
            if let Some((offset, _)) = part.buffer.front() {
                return Ok(Some((partition, *offset)));
            }
        }
        Ok(None)
    }

    /// Reads the next chunk of `partition` if its buffer is empty and records remain.
    fn refill(&mut self, partition: i32) -> Result<(), BoxError> {
        let Some(part) = self.partitions.get_mut(&partition) else { return Ok(()) };
        if !part.buffer.is_empty() || part.next >= part.end {
            return Ok(());
        }
        // A consumer per chunk: one re-assigned from chunk to chunk may still hand out what it
        // fetched ahead for the old position, or an end-of-partition event from it.
        let consumer: KappaConsumer = client_config(&self.brokers)
            .set("isolation.level", "read_committed")
            // librdkafka's read-ahead is the rest of the memory a restart holds: bounded.
            .set("queued.max.messages.kbytes", "8192")
            .create_with_context(crate::kafka::QuietEof)?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&self.topic, partition, rdkafka::Offset::Offset(part.next))?;
        consumer.assign(&assignment)?;
        let deadline = Instant::now() + TIMEOUT;
        while part.buffer.len() < TAIL_CHUNK && part.next < part.end {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) if m.partition() != partition || m.offset() < part.next => {}
                Some(Ok(m)) if m.offset() < part.end => {
                    let record = (m.key().unwrap_or_default().to_vec(), m.payload().map(<[u8]>::to_vec));
                    part.buffer.push_back((m.offset(), record));
                    // read_committed skips markers and aborted records: go by offset, not count.
                    part.next = m.offset() + 1;
                }
                Some(Ok(_)) => part.next = part.end,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) if p == partition => part.next = part.end,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => return Err(format!("reading {} partition {partition}: {e}", self.topic).into()),
                None if Instant::now() > deadline => {
                    return Err(format!(
                        "reading {} partition {partition} from offset {}: timed out",
                        self.topic, part.next
                    )
                    .into())
                }
                None => {}
            }
        }
        self.peak = self.peak.max(part.buffer.len());
        Ok(())
    }
}

#[derive(Serialize)]
struct Change<'a, D> {
    time: Time,
    diff: Diff,
    data: &'a D,
}

impl<D: Serialize + Keyed + 'static> Sink<D> for KafkaSink<D> {
    fn write(&mut self, time: Time, updates: &[(D, Diff)]) -> Result<(), BoxError> {
        self.connect()?;
        let topic = self.config.topic.clone();
        match self.config.mode {
            SinkMode::Changelog => {
                for (data, diff) in updates {
                    let key = serde_json::to_vec(&data.key())?;
                    let value = serde_json::to_vec(&Change { time, diff: *diff, data })?;
                    self.send(&topic, self.partition_of(&key), &key, Some(&value))?;
                }
            }
            SinkMode::Upsert => {
                // Per key: the row inserted at this time, or a tombstone if rows were only removed.
                let mut rows: BTreeMap<Vec<u8>, Option<&D>> = BTreeMap::new();
                for (data, diff) in updates {
                    let key = serde_json::to_vec(&data.key())?;
                    let slot = rows.entry(key).or_insert(None);
                    if *diff > 0 {
                        if slot.is_some() || *diff > 1 {
                            return Err(format!(
                                "upsert: key {} has more than one row at time {time}; its key fields do not identify \
                                 a row, use the changelog mode",
                                serde_json::to_string(&data.key())?
                            )
                            .into());
                        }
                        *slot = Some(data);
                    }
                }
                for (key, row) in rows {
                    let value = row.map(serde_json::to_vec).transpose()?;
                    self.send(&topic, self.partition_of(&key), &key, value.as_deref())?;
                }
            }
        }
        Ok(())
    }

    fn advanced(&mut self, upper: Time) -> Result<(), BoxError> {
        let skipping = match self.tail.as_mut() {
            Some(tail) => tail.left().map_err(|e| self.failed("reading what the crashed run wrote", e))?.is_some(),
            None => false,
        };
        if skipping {
            // Still re-deriving what the crashed run wrote: a progress record now would put the
            // partitions' ends past records of times at or after `upper`.
            return Ok(());
        }
        let due = if self.dirty {
            self.last_commit.elapsed() >= COMMIT_EVERY
        } else {
            // Nothing new: record progress now and then, so that checkpoints can be completed.
            self.durable.is_some_and(|d| d < upper) && self.last_commit.elapsed() >= IDLE_COMMIT_EVERY
        };
        if due {
            self.connect()?;
            self.commit(upper)?;
        }
        Ok(())
    }

    fn uses_keys(&self) -> bool {
        true
    }

    /// A topic cannot take back records, so a restartable job hands this sink only final times
    /// (see the engine's `sink` module); the progress record says `upper`, the resumable frontier.
    fn finish(&mut self, upper: Time) -> Result<(), BoxError> {
        self.connect()?;
        let left = match self.tail.as_mut() {
            Some(tail) => tail.left().map_err(|e| self.failed("reading what the crashed run wrote", e))?,
            None => None,
        };
        if let Some((partition, offset)) = left {
            return Err(format!(
                "topic `{}` partition {partition} holds more records than this job writes (from offset {offset} \
                 on): it was written by another job, or the input changed; write to a new topic",
                self.config.topic,
            )
            .into());
        }
        self.tail = None;
        self.commit(upper)
    }

    fn resume(&mut self) -> Result<Time, BoxError> {
        self.connect()?;
        let marks = admin::watermarks(&self.config.brokers, &self.config.topic)?;
        let mine: Vec<i32> = marks.keys().copied().filter(|p| self.owns(*p)).collect();
        if mine.is_empty() {
            // A writer with no partition (more workers than partitions) writes nothing, so nothing
            // of its output can be missing: it must not hold a restart or a checkpoint back.
            self.durable = Some(Time::MAX);
            return Ok(Time::MAX);
        }
        // Per partition of this writer, the newest progress record naming it: `(upper, end)`.
        let recorded = self.recorded_progress(&mine)?;
        let uppers: BTreeSet<Time> = mine.iter().map(|p| recorded.get(p).map_or(0, |r| r.0)).collect();
        if uppers.len() > 1 {
            let described: Vec<String> =
                mine.iter().map(|p| format!("partition {p} to {}", recorded.get(p).map_or(0, |r| r.0))).collect();
            let workers = recorded.values().filter_map(|r| r.2).map(|(_, n)| n).max().unwrap_or(1);
            return Err(format!(
                "topic `{}` was last recorded complete to different times for partitions this worker now writes ({}): \
                 the last run had {workers} worker(s) and stopped mid-way; restart once with --workers {workers}, then \
                 change the number of workers",
                self.config.topic,
                described.join(", ")
            )
            .into());
        }
        let upper = uppers.first().copied().unwrap_or(0);
        // What the crashed run wrote after its last progress record: the start of what this run
        // would write from `upper` on, partition by partition, read as it is compared.
        let mut partitions = BTreeMap::new();
        for partition in mine {
            let (log_start, high) = marks[&partition];
            let from = recorded.get(&partition).map_or(log_start, |r| r.1);
            if from < high {
                tracing::info!(
                    "{} partition {partition}: offsets {from}..{high} were written after the last progress record; \
                     checking them against what this run writes",
                    self.config.topic
                );
                partitions.insert(partition, PartitionTail { next: from, end: high, buffer: VecDeque::new() });
            }
        }
        self.tail = (!partitions.is_empty()).then(|| Tail {
            brokers: self.config.brokers.clone(),
            topic: self.config.topic.clone(),
            partitions,
            peak: 0,
        });
        self.durable = Some(upper);
        Ok(upper)
    }

    fn durable_upper(&self) -> Option<Time> {
        self.durable
    }

    fn partitioned(&self) -> bool {
        true
    }

    /// The row's output partition.
    fn shard(&self, data: &D) -> u64 {
        match serde_json::to_vec(&data.key()) {
            Ok(key) => self.partition_of(&key) as u64,
            // It fails again when written, on its writer, and fails the job there.
            Err(_) => 0,
        }
    }

    fn assign(&mut self, writer: Option<usize>, writers: usize) -> Result<(), BoxError> {
        self.ensure_topics()?;
        // A single writer writes as an unpartitioned sink does (its progress records unchanged).
        self.writer = writer.filter(|_| writers > 1).map(|w| (w, writers));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;

    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
    struct Row {
        id: u64,
        n: u64,
    }

    impl Keyed for Row {
        fn key(&self) -> serde_json::Value {
            serde_json::json!({ "id": self.id })
        }
    }

    fn committed(brokers: &str, topic: &str) -> Vec<String> {
        let sink = KafkaSink::<Row>::new(KafkaSinkConfig::new(brokers, topic));
        let (_, high) = admin::watermarks(brokers, topic).expect("watermarks")[&0];
        let records = sink.read(topic, 0, 0, high).expect("read");
        records.into_iter().map(|(_, v)| String::from_utf8(v.unwrap_or_default()).expect("utf-8")).collect()
    }

    #[test]
    fn a_transactional_sink_restarts_from_its_committed_progress_and_writes_each_time_once() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let brokers = cluster.bootstrap_servers();
        cluster.create_topic("out", 1, 1).expect("topic");
        cluster.create_topic("out.kappa-progress", 1, 1).expect("topic");
        let config = KafkaSinkConfig { transactional: true, ..KafkaSinkConfig::new(&brokers, "out") };
        let row = |id, n| Row { id, n };

        // The first run commits time 1, then crashes with time 2 written in an open transaction.
        let mut first = KafkaSink::<Row>::new(config.clone());
        assert_eq!(first.resume().expect("resume"), 0);
        first.write(1, &[(row(1, 1), 1), (row(2, 1), 1)]).expect("write");
        std::thread::sleep(COMMIT_EVERY);
        first.advanced(2).expect("commit");
        first.write(2, &[(row(1, 1), -1), (row(1, 2), 1)]).expect("write");
        if let Some(producer) = first.producer.as_ref() {
            producer.flush(TIMEOUT).expect("the open transaction's records reach the broker");
        }
        std::mem::forget(first);
        let times = |brokers: &str| -> Vec<u64> {
            committed(brokers, "out")
                .iter()
                .map(|v| serde_json::from_str::<serde_json::Value>(v).expect("json")["time"].as_u64().expect("time"))
                .collect()
        };
        // (librdkafka's mock broker does not hide open transactions from read_committed readers, so
        // what a reader sees now is not checked here.)

        // The restart fences it, learns that time 2 is the first missing one, and writes it.
        let mut second = KafkaSink::<Row>::new(config);
        assert_eq!(second.resume().expect("resume"), 2);
        second.write(2, &[(row(1, 1), -1), (row(1, 2), 1)]).expect("write");
        second.finish(Time::MAX).expect("finish");

        assert_eq!(times(&brokers), vec![1, 1, 2, 2], "each time once, in order, nothing of the aborted transaction");
    }

    #[test]
    fn a_restart_compares_a_long_tail_a_chunk_at_a_time_and_finds_a_mismatch_deep_in_it() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let brokers = cluster.bootstrap_servers();
        cluster.create_topic("long", 2, 1).expect("topic");
        cluster.create_topic("long.kappa-progress", 1, 1).expect("topic");
        let config = KafkaSinkConfig::new(&brokers, "long");
        let rows: Vec<(Row, Diff)> = (0..3 * TAIL_CHUNK as u64).map(|id| (Row { id, n: 1 }, 1)).collect();

        // The first run writes three chunks' worth per partition or so, and dies before any progress record.
        let mut first = KafkaSink::<Row>::new(config.clone());
        assert_eq!(first.resume().expect("resume"), 0);
        first.write(1, &rows).expect("write");
        first.producer.as_ref().expect("connected").flush(TIMEOUT).expect("flush");
        std::mem::forget(first);

        // A run whose input changed deep in the tail stops, naming the partition.
        let mut changed = rows.clone();
        changed.last_mut().expect("rows").0.n = 2;
        let mut wrong = KafkaSink::<Row>::new(config.clone());
        assert_eq!(wrong.resume().expect("resume"), 0);
        let error = wrong.write(1, &changed).expect_err("the changed record is found").to_string();
        assert!(error.contains("holds a record this job would not write"), "{error}");

        // The same input: everything is skipped and checked, never more than a chunk held.
        let mut second = KafkaSink::<Row>::new(config);
        assert_eq!(second.resume().expect("resume"), 0);
        second.write(1, &rows).expect("write");
        let peak = second.tail.as_ref().expect("a tail to compare").peak;
        assert!(peak > 0 && peak <= TAIL_CHUNK, "held {peak} records at once");
        second.finish(Time::MAX).expect("finish");
        let written: i64 =
            admin::watermarks(&brokers, "long").expect("watermarks").values().map(|(_, high)| high).sum();
        assert_eq!(written, rows.len() as i64, "nothing written twice");
    }

    fn partition_values(brokers: &str, topic: &str) -> BTreeMap<i32, Vec<String>> {
        let sink = KafkaSink::<Row>::new(KafkaSinkConfig::new(brokers, topic));
        admin::watermarks(brokers, topic)
            .expect("watermarks")
            .into_iter()
            .map(|(p, (_, high))| {
                let records = sink.read(topic, p, 0, high).expect("read");
                (
                    p,
                    records
                        .into_iter()
                        .map(|(_, v)| String::from_utf8(v.unwrap_or_default()).expect("utf-8"))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn two_writers_write_what_one_writes_and_each_resumes_from_its_own_progress() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let brokers = cluster.bootstrap_servers();
        for topic in ["one", "two"] {
            cluster.create_topic(topic, 4, 1).expect("topic");
            cluster.create_topic(&format!("{topic}.kappa-progress"), 1, 1).expect("topic");
        }
        // At time t every id's row moves from n = t - 1 to n = t: sorted, consolidated updates.
        let at = |t: u64| -> Vec<(Row, Diff)> {
            let mut rows: Vec<(Row, Diff)> = (0..40)
                .flat_map(|id| [(Row { id, n: t - 1 }, -1), (Row { id, n: t }, 1)])
                .filter(|(row, _)| row.n > 0)
                .collect();
            rows.sort();
            rows
        };
        let mut one = KafkaSink::<Row>::new(KafkaSinkConfig::new(&brokers, "one"));
        assert_eq!(one.resume().expect("resume"), 0);
        for t in 1..=3 {
            one.write(t, &at(t)).expect("write");
        }
        one.finish(Time::MAX).expect("finish");

        let writer = |w: usize| {
            let mut sink = KafkaSink::<Row>::new(KafkaSinkConfig::new(&brokers, "two"));
            sink.assign(Some(w), 2).expect("assign");
            sink
        };
        let mine = |sink: &KafkaSink<Row>, t: u64, w: u64| -> Vec<(Row, Diff)> {
            at(t).into_iter().filter(|(row, _)| sink.shard(row) % 2 == w).collect()
        };
        // Writer 0 writes everything; writer 1 records time 1 complete, writes time 2 and dies.
        let mut zero = writer(0);
        assert_eq!(zero.resume().expect("resume"), 0);
        for t in 1..=3 {
            let rows = mine(&zero, t, 0);
            zero.write(t, &rows).expect("write");
        }
        zero.finish(Time::MAX).expect("finish");
        let mut first = writer(1);
        assert_eq!(first.resume().expect("resume"), 0);
        let rows = mine(&first, 1, 1);
        first.write(1, &rows).expect("write");
        std::thread::sleep(COMMIT_EVERY);
        first.advanced(2).expect("progress");
        let rows = mine(&first, 2, 1);
        first.write(2, &rows).expect("write");
        first.producer.as_ref().expect("connected").flush(TIMEOUT).expect("flush");
        std::mem::forget(first);

        // One worker cannot take over partitions recorded complete to different times.
        let error = KafkaSink::<Row>::new(KafkaSinkConfig::new(&brokers, "two"))
            .resume()
            .expect_err("partitions disagree")
            .to_string();
        assert!(error.contains("restart once with --workers 2"), "{error}");

        // Writer 1 again: it resumes from its own progress, checks what it wrote of time 2, goes on.
        let mut again = writer(1);
        assert_eq!(again.resume().expect("resume"), 2);
        for t in 2..=3 {
            let rows = mine(&again, t, 1);
            again.write(t, &rows).expect("write");
        }
        again.finish(Time::MAX).expect("finish");

        let expected = partition_values(&brokers, "one");
        assert_eq!(expected.values().filter(|records| !records.is_empty()).count(), 4, "rows in every partition");
        assert_eq!(
            partition_values(&brokers, "two"),
            expected,
            "each partition's records, once, in one writer's order"
        );
        // Now every partition is complete to the end: one worker can take the output over.
        let mut single = KafkaSink::<Row>::new(KafkaSinkConfig::new(&brokers, "two"));
        assert_eq!(single.resume().expect("resume"), Time::MAX);
    }

    #[test]
    fn a_writer_without_partitions_never_holds_a_restart_back() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let brokers = cluster.bootstrap_servers();
        cluster.create_topic("narrow", 1, 1).expect("topic");
        cluster.create_topic("narrow.kappa-progress", 1, 1).expect("topic");
        // Two workers, one partition: worker 1 owns none, so all it has written is all there is.
        let mut idle = KafkaSink::<Row>::new(KafkaSinkConfig::new(&brokers, "narrow"));
        idle.assign(Some(1), 2).expect("assign");
        assert_eq!(idle.resume().expect("resume"), Time::MAX);
        let mut busy = KafkaSink::<Row>::new(KafkaSinkConfig::new(&brokers, "narrow"));
        busy.assign(Some(0), 2).expect("assign");
        assert_eq!(busy.resume().expect("resume"), 0, "worker 0 owns the partition, with nothing durable yet");
    }
}
