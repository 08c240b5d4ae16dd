//! Workers, processes, and running a job.
//!
//! [`execute`] starts timely workers as [`ClusterConfig`] says (threads in this process, or one
//! process of a cluster), builds the pipeline on every worker through a [`Context`], and steps the
//! workers until every sink has seen the empty frontier, or something failed.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timely::dataflow::operators::{Inspect, OkErr};
use timely::dataflow::Scope;
use timely::{CommunicationConfig, WorkerConfig};

use differential_dataflow::AsCollection;

use crate::checkpoint::{
    decode_part, encode_part, CheckpointConfig, CheckpointData, Codec, DurableProgress, PartHeader, Restored,
    Retention, Writer,
};
use crate::clock::{ClockStore, PartitionClock};
use crate::error::{BadRecord, Error, Result};
use crate::input::{partitioned_input, Durable, OutputFrontiers, Timekeeping};
use crate::serve::ServedView;
use crate::sink::{consistent_sink, Sink, SinkDurability};
use crate::source::{owner, PartitionId, Record, SourceFactory};
use crate::time::Time;
use crate::watermarks::Board;
use crate::Collection;

/// Where the workers run: threads of this process, or one process of a timely cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Worker threads per process.
    pub workers: usize,
    /// Number of processes in the cluster.
    pub processes: usize,
    /// This process's index, `0..processes`.
    pub process: usize,
    /// File with one `host:port` line per process (timely's format); required when `processes > 1`.
    pub hostfile: Option<PathBuf>,
}

impl ClusterConfig {
    /// `n` worker threads in this process.
    pub fn threads(n: usize) -> Self {
        ClusterConfig { workers: n.max(1), processes: 1, process: 0, hostfile: None }
    }

    fn timely(&self) -> Result<timely::Config> {
        let threads = self.workers.max(1);
        let communication = if self.processes <= 1 {
            if threads == 1 {
                CommunicationConfig::Thread
            } else {
                CommunicationConfig::Process(threads)
            }
        } else {
            let path = self.hostfile.as_ref().ok_or_else(|| Error::Cluster {
                reason: format!("--processes {} needs --hostfile with one host:port line per process", self.processes),
            })?;
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Cluster { reason: format!("cannot read hostfile {}: {e}", path.display()) })?;
            let addresses: Vec<String> =
                text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
            if addresses.len() < self.processes || self.process >= self.processes {
                return Err(Error::Cluster {
                    reason: format!(
                        "hostfile {} lists {} addresses for {} processes (this is process {})",
                        path.display(),
                        addresses.len(),
                        self.processes,
                        self.process
                    ),
                });
            }
            CommunicationConfig::Cluster {
                threads,
                process: self.process,
                addresses: addresses[..self.processes].to_vec(),
                report: false,
                zerocopy: false,
            }
        };
        Ok(timely::Config { communication, worker: WorkerConfig::default() })
    }
}

/// What to do with a record the pipeline's decoder rejects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BadRecordPolicy {
    /// Stop the job with an error naming topic, partition and offset.
    #[default]
    Fail,
    /// Go on, and count it in [`JobReport::bad_records`].
    Skip,
}

/// Per-process counters and the first failure, shared by all local workers.
#[derive(Debug, Default)]
pub struct Metrics {
    records: AtomicU64,
    bad_records: AtomicU64,
    checkpoint_bytes: AtomicU64,
    checkpoint_cuts: AtomicU64,
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
}

impl Metrics {
    /// Records read by all inputs of this process so far.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }
    /// Bad records skipped so far.
    pub fn bad_records(&self) -> u64 {
        self.bad_records.load(Ordering::Relaxed)
    }
    pub(crate) fn add_records(&self, n: u64) {
        self.records.fetch_add(n, Ordering::Relaxed);
    }
    /// Bytes of checkpoint parts this process has encoded and queued for upload so far (parts
    /// copied inside the store from an earlier generation are not counted: they cost no encoding
    /// and, on S3, no upload).
    pub fn checkpoint_bytes(&self) -> u64 {
        self.checkpoint_bytes.load(Ordering::Relaxed)
    }
    /// Checkpoint generations this process has cut parts for so far (completed or not).
    pub fn checkpoint_cuts(&self) -> u64 {
        self.checkpoint_cuts.load(Ordering::Relaxed)
    }
    pub(crate) fn add_checkpoint_bytes(&self, bytes: u64) {
        self.checkpoint_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    pub(crate) fn add_checkpoint_cut(&self) {
        self.checkpoint_cuts.fetch_add(1, Ordering::Relaxed);
    }
    /// Whether the job has failed.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
    /// Records the first failure and tells every worker to stop.
    pub(crate) fn fail(&self, error: Error) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(error);
        }
        self.failed.store(true, Ordering::Relaxed);
    }
    fn take_error(&self) -> Option<Error> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Settings of one job.
#[derive(Clone, Debug)]
pub struct JobOptions {
    /// How far behind a partition's largest timestamp a record may arrive and keep its own time.
    pub lateness_ms: u64,
    /// What to do with malformed records.
    pub on_bad_record: BadRecordPolicy,
    /// During a backfill, round record times up to a multiple of this many ms (0: don't). The
    /// final state is the same; intermediate outputs are coarser, and differential dataflow
    /// consolidates far more. Live records keep their exact times.
    pub backfill_granularity_ms: u64,
    /// Counters the caller can watch while the job runs (progress bars).
    pub metrics: Arc<Metrics>,
    /// Checkpoints: makes the job restartable (see [`crate::checkpoint`]). Every input must then
    /// be a [`Context::durable_input`] and every sink durable.
    pub checkpoint: Option<CheckpointConfig>,
    /// How long a live partition may stay silent, once the broker has confirmed it has no more
    /// records, before its watermark advances to the job's greatest watermark, so that one idle
    /// partition does not hold back every result ([`crate::clock`]; `None`: never). Results then
    /// reach the sinks within the lateness plus this timeout plus a poll. Archive replays never
    /// advance a partition this way.
    pub idle_timeout: Option<Duration>,
    /// How far a record's timestamp may lie ahead of its partition's watermark plus lateness; a
    /// timestamp further ahead is a bad record ([`crate::time`]).
    pub max_timestamp_jump_ms: u64,
    /// How far (ms of event time) a partition's watermark may run ahead of the least watermark of
    /// the worker's other open partitions before the input asks its source to hold it back
    /// ([`PartitionedSource::hold`](crate::PartitionedSource::hold); `None`: never). A replay
    /// then reads its partitions side by side in event time, so the output frontier, and with it
    /// the checkpoints' compaction frontier, follows the records read: less state waits ahead of
    /// the frontier, results come out steadily, and a restart recomputes less. Times never depend
    /// on it (a record's time is a function of its own partition).
    pub max_partition_skew_ms: Option<u64>,
    /// Serve the output where the workers keep it ([`crate::serve`]): each worker arranges its
    /// keys' rows and answers reads of them. A job that serves keeps its workers, and its views,
    /// up after its inputs end, until [`Views::stop`](crate::serve::Views::stop).
    pub serve: Option<crate::serve::Views>,
}

/// Default of [`JobOptions::lateness_ms`]: none. A record's time is then its timestamp raised to
/// the greatest earlier in its partition, and a time is complete as soon as every partition has
/// moved past it, which is what makes results visible within milliseconds of their records
/// (`papers/notes/20261202-serving.md`). A lateness of `L` keeps records up to `L` ms out of
/// order at their own times and delays every result by `L`.
pub const DEFAULT_LATENESS_MS: u64 = 0;

/// Default of [`JobOptions::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default of [`JobOptions::max_partition_skew_ms`]: 10 s of event time.
pub const DEFAULT_MAX_PARTITION_SKEW_MS: u64 = 10_000;
/// Default of [`JobOptions::max_timestamp_jump_ms`]: 365 days.
pub const DEFAULT_MAX_TIMESTAMP_JUMP_MS: u64 = 365 * 24 * 3_600 * 1_000;

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            lateness_ms: DEFAULT_LATENESS_MS,
            on_bad_record: BadRecordPolicy::Fail,
            backfill_granularity_ms: 0,
            metrics: Arc::default(),
            checkpoint: None,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_timestamp_jump_ms: DEFAULT_MAX_TIMESTAMP_JUMP_MS,
            max_partition_skew_ms: Some(DEFAULT_MAX_PARTITION_SKEW_MS),
            serve: None,
        }
    }
}

/// The inputs of a job, by the names the pipeline reads them under.
#[derive(Clone, Default)]
pub struct Sources {
    inputs: BTreeMap<String, Arc<dyn SourceFactory>>,
}

impl Sources {
    /// No inputs.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds `factory` as input `name`.
    pub fn with(mut self, name: impl Into<String>, factory: impl SourceFactory + 'static) -> Self {
        self.inputs.insert(name.into(), Arc::new(factory));
        self
    }
    /// Adds an already shared factory as input `name`.
    pub fn with_shared(mut self, name: impl Into<String>, factory: Arc<dyn SourceFactory>) -> Self {
        self.inputs.insert(name.into(), factory);
        self
    }
    /// Whether input `name` has a source.
    pub fn has(&self, name: &str) -> bool {
        self.inputs.contains_key(name)
    }
    /// The inputs' names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.inputs.keys().cloned().collect()
    }
}

/// What a finished job did (counted in this process).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobReport {
    /// Records read from all inputs.
    pub records: u64,
    /// Malformed records skipped under [`BadRecordPolicy::Skip`].
    pub bad_records: u64,
    /// Checkpoints completed (manifests written) by this process.
    pub checkpoints: u64,
}

/// A pipeline's view of the worker it is being built on.
pub struct Context<'scope> {
    scope: Scope<'scope, Time>,
    sources: Arc<Sources>,
    options: JobOptions,
    open_sinks: Rc<Cell<usize>>,
    durability: Option<Arc<Durability>>,
    output_frontiers: OutputFrontiers,
    board: Board,
    served: Rc<RefCell<Vec<Box<dyn ServedView>>>>,
    /// The workers of process 0, the writers of a partitioned sink ([`Sink::partitioned`]).
    local_workers: usize,
    /// Sinks built so far on this worker: a sink's ordinal, the same on every worker.
    sinks_built: usize,
}

/// Encodes and decodes one input's parts (bound to its data type by `durable_input`).
pub(crate) type PartEncoder<T> = Box<dyn Fn(&PartHeader, &[(T, Time, crate::Diff)]) -> Vec<u8>>;
type PartDecoder<T> = Box<dyn Fn(&str, &[u8]) -> Result<(PartHeader, crate::checkpoint::Updates<T>)>>;
struct PartCodec<T> {
    encode: PartEncoder<T>,
    decode: PartDecoder<T>,
}

/// A process's share of a restartable job: what was restored, and where new checkpoints go.
struct Durability {
    config: CheckpointConfig,
    restored: Option<Restored>,
    writer: Arc<Writer>,
    expected: Arc<Mutex<BTreeSet<(String, PartitionId)>>>,
    progress: Arc<DurableProgress>,
    clock: Arc<ClockStore>,
}

impl<'scope> Context<'scope> {
    /// The timely scope, for pipelines that build operators directly.
    pub fn scope(&self) -> Scope<'scope, Time> {
        self.scope
    }

    /// Reads input `name` as a collection, decoding each record with `decode` into a value and the
    /// event timestamp (ms) from which its dataflow time is derived. Records `decode` rejects
    /// follow the job's [`BadRecordPolicy`].
    ///
    /// Such an input cannot be checkpointed: a job with [`JobOptions::checkpoint`] must read its
    /// inputs with [`durable_input`](Self::durable_input).
    ///
    /// The decoder's error is any displayable reason (a `serde_json::Error`, a pipeline's own
    /// error enum); it becomes the bad record's reason.
    pub fn input<T, E, F>(&mut self, name: &str, mut decode: F) -> Result<Collection<'scope, T>>
    where
        T: differential_dataflow::Data,
        E: std::fmt::Display,
        F: FnMut(&Record) -> std::result::Result<(T, u64), E> + 'static,
    {
        if self.durability.is_some() {
            return Err(Error::NotCheckpointable { input: name.to_string() });
        }
        self.build_input(name, move |r| decode(r).map(|(v, ts)| (v, ts, 1)).map_err(|e| e.to_string()), None)
    }

    /// [`input`](Self::input) with the decoder's differences kept: what
    /// [`Inputs::read_transient`](crate::Inputs::read_transient) reads.
    pub(crate) fn transient_input<T, E, F>(&mut self, name: &str, mut decode: F) -> Result<Collection<'scope, T>>
    where
        T: differential_dataflow::Data,
        E: std::fmt::Display,
        F: FnMut(&Record) -> std::result::Result<(T, u64, crate::Diff), E> + 'static,
    {
        if self.durability.is_some() {
            return Err(Error::NotCheckpointable { input: name.to_string() });
        }
        self.build_input(name, move |r| decode(r).map_err(|e| e.to_string()), None)
    }

    /// Reads input `name` as a collection that checkpoints can save and restore: `decode` turns
    /// each record into a value, its event timestamp (ms) and a difference, so that records that
    /// cancel (a like and its unlike) consolidate in the checkpoint. `retention` says how far back
    /// the pipeline looks at this input ([`Retention`]). Without [`JobOptions::checkpoint`] this is
    /// an ordinary input.
    pub fn durable_input<T, E, F>(
        &mut self,
        name: &str,
        mut decode: F,
        retention: Retention,
    ) -> Result<Collection<'scope, T>>
    where
        T: CheckpointData,
        E: std::fmt::Display,
        F: FnMut(&Record) -> std::result::Result<(T, u64, crate::Diff), E> + 'static,
    {
        let decode = move |r: &Record| decode(r).map_err(|e| e.to_string());
        let codec = self.durability.as_ref().map_or(Codec::Postcard, |d| d.config.codec);
        let codec = PartCodec {
            encode: Box::new(move |h: &PartHeader, u: &[(T, Time, crate::Diff)]| encode_part(h, u, codec)),
            decode: Box::new(|object: &str, bytes: &[u8]| decode_part::<T>(object, bytes)),
        };
        self.build_input(name, decode, Some((retention, codec)))
    }

    fn build_input<T, F>(
        &mut self,
        name: &str,
        decode: F,
        durable: Option<(Retention, PartCodec<T>)>,
    ) -> Result<Collection<'scope, T>>
    where
        T: differential_dataflow::Data,
        F: FnMut(&Record) -> Result<(T, u64, crate::Diff), String> + 'static,
    {
        let factory = self.sources.inputs.get(name).ok_or_else(|| Error::UnknownInput {
            name: name.to_string(),
            known: self.sources.inputs.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        let wrap = |source| Error::Source { input: name.to_string(), source };
        let mut partitions = factory.partitions().map_err(wrap)?;
        partitions.sort();
        let (index, peers) = (self.scope.index(), self.scope.peers());
        let owned: Vec<_> =
            partitions.iter().enumerate().filter(|(i, _)| owner(*i, peers) == index).map(|(_, p)| p.clone()).collect();
        let mut durable_state = None;
        let mut restored_coverage = vec![None; owned.len()];
        let mut starts: Vec<_> = owned.iter().map(|p| (p.clone(), None)).collect();
        // The partitions' recorded time decisions, settled with this run's backfill ends and
        // recorded before any record is read (see `crate::clock`).
        let clock_store = self.durability.as_ref().map(|d| d.clock.clone());
        let mut clocks = Vec::with_capacity(owned.len());
        for pid in &owned {
            let recorded = match &clock_store {
                Some(store) => store.load(name, pid)?,
                None => None,
            };
            let (clock, changed) = PartitionClock::settle(recorded, factory.backfill_end(pid));
            // Boundaries matter only where times are coarsened (and the fingerprint refuses a
            // checkpoint of another granularity); advances are recorded either way.
            let coarsens = self.options.backfill_granularity_ms > 1;
            if let (Some(store), true, true) = (&clock_store, changed, coarsens) {
                store.save(name, pid, &clock)?;
            }
            clocks.push(clock);
        }
        if let (Some(d), Some((retention, codec))) = (self.durability.clone(), durable) {
            if index == 0 {
                let mut expected = d.expected.lock().unwrap_or_else(|p| p.into_inner());
                expected.extend(partitions.iter().map(|p| (name.to_string(), p.clone())));
            }
            let mut restored = Vec::new();
            for (i, (pid, start)) in starts.iter_mut().enumerate() {
                let part = match d.restored.as_ref().and_then(|r| r.parts.get(&(name.to_string(), pid.clone()))) {
                    Some(chain) => {
                        // A base and its deltas: their updates together are the state, and the
                        // last part says where the partition stood.
                        let mut last = None;
                        let mut updates = Vec::new();
                        for (object, bytes) in chain {
                            let (header, mut part) = (codec.decode)(object, bytes)?;
                            updates.append(&mut part);
                            last = Some(header);
                        }
                        let header = last.ok_or_else(|| Error::Checkpoint {
                            object: format!("{name} partition {pid}"),
                            reason: "the checkpoint lists no part for it".into(),
                        })?;
                        crate::checkpoint::compact(&mut updates, header.frontier, retention);
                        *start = header.next_offset;
                        if let Some(next) = header.next_offset {
                            let latest = updates.iter().map(|u| u.1).max().unwrap_or(0);
                            restored_coverage[i] = Some((next, latest));
                        }
                        Some((header, updates, chain.iter().map(|(object, _)| object.clone()).collect()))
                    }
                    None => None,
                };
                restored.push(part);
            }
            durable_state = Some(Durable {
                input: name.to_string(),
                retention,
                encode: codec.encode,
                every_ms: d.config.every.as_millis().max(1) as u64,
                writer: d.writer.clone(),
                output_frontier: self.output_frontiers.clone(),
                restored,
            });
        }
        let reader = factory.open(&starts).map_err(wrap)?;
        let metrics = self.options.metrics.clone();
        let times = crate::input::TimePolicy {
            lateness_ms: self.options.lateness_ms,
            backfill_granularity_ms: self.options.backfill_granularity_ms,
            max_timestamp_jump_ms: self.options.max_timestamp_jump_ms,
            max_partition_skew_ms: self.options.max_partition_skew_ms,
            idle_timeout: self.options.idle_timeout,
        };
        let coverage = self.options.serve.as_ref().map(|views| views.coverage_writer(&owned, &restored_coverage));
        let timekeeping = Timekeeping { clocks, store: clock_store, board: self.board.clone(), coverage };
        let stream =
            partitioned_input(self.scope, name, reader, owned, times, decode, metrics, durable_state, timekeeping);
        let (good, bad) = stream.ok_err(|(result, time, diff)| match result {
            Ok(value) => Ok((value, time, diff)),
            Err(bad) => Err((bad, time, diff)),
        });
        self.handle_bad_records(bad);
        Ok(good.as_collection())
    }

    /// Bad records are data; the policy is applied here, in the dataflow, on the worker that read
    /// them.
    fn handle_bad_records(&mut self, bad: timely::dataflow::StreamVec<'scope, Time, (BadRecord, Time, crate::Diff)>) {
        let metrics = self.options.metrics.clone();
        let policy = self.options.on_bad_record;
        bad.inspect(move |(record, _, _)| match policy {
            BadRecordPolicy::Fail => metrics.fail(Error::BadRecord(record.clone())),
            BadRecordPolicy::Skip => {
                let seen = metrics.bad_records.fetch_add(1, Ordering::Relaxed);
                if seen < 10 {
                    tracing::warn!("skipping {record}");
                }
            }
        });
    }

    /// Serves `collection` as the view `name` (when the job serves, [`JobOptions::serve`]): every
    /// worker arranges the rows of the keys it owns and answers reads of them ([`crate::serve`]).
    pub fn serve<D: crate::Row>(&mut self, name: &str, collection: Collection<'scope, D>) {
        if let Some(views) = &self.options.serve {
            views.add_name(name);
            crate::serve::serve(name, collection, &self.served);
        }
    }

    /// Sends `collection` to `sink`, one completed timestamp at a time (see [`crate::sink`]).
    pub fn output<D, S>(&mut self, collection: Collection<'scope, D>, sink: S)
    where
        D: differential_dataflow::ExchangeData + Ord,
        S: Sink<D>,
    {
        let durable = self.durability.as_ref().map(|d| SinkDurability {
            progress: d.progress.clone(),
            restored_frontier: d.restored.as_ref().map_or(0, |r| r.frontier),
        });
        let writers = if sink.partitioned() { self.local_workers } else { 1 };
        self.sinks_built += 1;
        consistent_sink(
            collection,
            sink,
            crate::sink::SinkSetup {
                ordinal: self.sinks_built - 1,
                writers,
                metrics: self.options.metrics.clone(),
                open_sinks: self.open_sinks.clone(),
                frontiers: self.output_frontiers.clone(),
                board: self.board.clone(),
                durable,
            },
        );
    }
}

/// Runs a job: builds `pipeline` on every worker and steps the workers until every output is
/// complete, or the first failure.
pub fn execute<F>(cluster: &ClusterConfig, options: JobOptions, sources: Sources, pipeline: F) -> Result<JobReport>
where
    F: for<'s> Fn(&mut Context<'s>) -> Result<()> + Send + Sync + 'static,
{
    let config = cluster.timely()?;
    let metrics = options.metrics.clone();
    let durability = match &options.checkpoint {
        Some(checkpoint) => {
            let restored = crate::checkpoint::restore(checkpoint)?;
            let expected = Arc::new(Mutex::new(BTreeSet::new()));
            let progress = Arc::new(DurableProgress::default());
            let failed = metrics.clone();
            let clock = Arc::new(ClockStore::new(checkpoint.store.clone(), &checkpoint.prefix)?);
            let writer = Writer::start(
                checkpoint.clone(),
                cluster.process == 0,
                expected.clone(),
                progress.clone(),
                metrics.clone(),
                Arc::new(move |e| failed.fail(e)),
            )?;
            Some(Arc::new(Durability {
                config: checkpoint.clone(),
                restored,
                writer: Arc::new(writer),
                expected,
                progress,
                clock,
            }))
        }
        None => None,
    };
    let sources = Arc::new(sources);
    let worker_metrics = metrics.clone();
    let worker_durability = durability.clone();
    let serving = options.serve.clone();
    let local_workers = cluster.workers.max(1);
    let guards = timely::execute(config, move |worker| {
        let open_sinks = Rc::new(Cell::new(0));
        let served: Rc<RefCell<Vec<Box<dyn ServedView>>>> = Rc::default();
        let mut server = serving
            .as_ref()
            .map(|views| views.worker(worker.index() % local_workers, worker.index(), worker.peers(), local_workers));
        let built = worker.dataflow::<Time, _, _>(|scope| {
            let mut ctx = Context {
                scope,
                sources: sources.clone(),
                options: options.clone(),
                open_sinks: open_sinks.clone(),
                durability: worker_durability.clone(),
                output_frontiers: OutputFrontiers::default(),
                board: Board::default(),
                served: served.clone(),
                local_workers,
                sinks_built: 0,
            };
            pipeline(&mut ctx)
        });
        if let Err(error) = built {
            worker_metrics.fail(error);
        }
        while open_sinks.get() > 0 && !worker_metrics.failed() {
            worker.step_or_park(Some(Duration::from_millis(5)));
            if let Some(server) = server.as_mut() {
                server.serve(&mut served.borrow_mut());
            }
        }
        // A serving job keeps answering after its inputs end, until told to stop.
        while let Some(server) = server.as_mut().filter(|s| !s.stopped() && !worker_metrics.failed()) {
            worker.step_or_park(Some(Duration::from_millis(50)));
            server.serve(&mut served.borrow_mut());
        }
        if worker_metrics.failed() {
            // Timely would otherwise keep stepping an input that will never complete.
            for dataflow in worker.installed_dataflows() {
                worker.drop_dataflow(dataflow);
            }
        }
    })
    .map_err(|reason| Error::Cluster { reason })?;
    let joined: Vec<_> = guards.join();
    let mut checkpoints = 0;
    if let Some(d) = &durability {
        d.writer.close();
        checkpoints = d.writer.completed.load(Ordering::Relaxed);
    }
    for result in joined {
        if let Err(reason) = result {
            return Err(Error::Worker { reason });
        }
    }
    if let Some(error) = metrics.take_error() {
        return Err(error);
    }
    Ok(JobReport { records: metrics.records(), bad_records: metrics.bad_records(), checkpoints })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BoxError, MemorySink, MemorySource};

    fn decode_number(rec: &Record) -> std::result::Result<(u64, u64), String> {
        let text = std::str::from_utf8(rec.value.as_deref().unwrap_or_default()).map_err(|e| e.to_string())?;
        let n = text.parse::<u64>().map_err(|e| format!("not a number: {e}"))?;
        Ok((n, rec.timestamp.unwrap_or(0) as u64))
    }

    fn run(policy: BadRecordPolicy, workers: usize) -> (Result<JobReport>, MemorySink<(u64, isize)>) {
        let src =
            MemorySource::single("n", vec![(1_000, "1"), (9_000, "2"), (2_000, "x"), (20_000, "1")]).with_batch(1);
        let sink = MemorySink::new();
        let handle = sink.clone();
        let options = JobOptions { on_bad_record: policy, ..JobOptions::default() };
        let report = execute(&ClusterConfig::threads(workers), options, Sources::new().with("n", src), move |ctx| {
            let numbers = ctx.input("n", decode_number)?;
            ctx.output(numbers.count(), handle.clone());
            Ok(())
        });
        (report, sink)
    }

    #[test]
    fn skip_policy_counts_bad_records_and_goes_on() {
        let (report, sink) = run(BadRecordPolicy::Skip, 2);
        assert_eq!(report.expect("job runs"), JobReport { records: 4, bad_records: 1, checkpoints: 0 });
        assert_eq!(sink.accumulated(), vec![((1, 2), 1), ((2, 1), 1)]);
        assert!(sink.is_finished());
    }

    #[test]
    fn fail_policy_names_topic_partition_and_offset() {
        let (report, _) = run(BadRecordPolicy::Fail, 1);
        let message = report.expect_err("bad record fails the job").to_string();
        assert!(message.contains("topic `n` partition 0 at offset 2"), "{message}");
    }

    #[test]
    fn sink_sees_each_time_once_in_order_with_late_records_raised() {
        let (_, sink) = run(BadRecordPolicy::Skip, 1);
        let times: Vec<_> = sink.updates().iter().map(|(_, t, _)| *t).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        // "1" at 1000, "2" at 9000, then "1" at 20000 retracts (1,1) and asserts (1,2).
        assert_eq!(
            sink.updates(),
            vec![((1, 1), 1_000, 1), ((2, 1), 9_000, 1), ((1, 1), 20_000, -1), ((1, 2), 20_000, 1)]
        );
    }

    /// The `(writer, writers)` of every `assign` call.
    type Assigned = Arc<Mutex<Vec<(Option<usize>, usize)>>>;
    /// `(writer, time, row, diff)` of every update written.
    type Written = Arc<Mutex<Vec<(usize, Time, u64, isize)>>>;

    /// A partitioned sink that records which writer wrote what, and when.
    #[derive(Clone, Default)]
    struct Sharded {
        writer: Option<usize>,
        assigned: Assigned,
        written: Written,
    }

    impl Sink<(u64, isize)> for Sharded {
        fn write(&mut self, time: Time, updates: &[((u64, isize), crate::Diff)]) -> std::result::Result<(), BoxError> {
            let writer = self.writer.ok_or("a writer must be assigned before it writes")?;
            let mut written = self.written.lock().expect("lock");
            written.extend(updates.iter().map(|((n, count), diff)| (writer, time, *n * 1_000 + *count as u64, *diff)));
            Ok(())
        }
        fn partitioned(&self) -> bool {
            true
        }
        fn shard(&self, data: &(u64, isize)) -> u64 {
            data.0
        }
        fn assign(&mut self, writer: Option<usize>, writers: usize) -> std::result::Result<(), BoxError> {
            self.writer = writer;
            self.assigned.lock().expect("lock").push((writer, writers));
            Ok(())
        }
    }

    #[test]
    fn a_partitioned_sink_writes_each_shard_on_its_own_worker_with_the_funnelled_updates() {
        let records: Vec<(i64, String)> = (0..400).map(|i| (1_000 + 10 * i, ((i * 7) % 13).to_string())).collect();
        let run = |workers: usize, partitioned: bool| {
            let src = MemorySource::single("n", records.iter().map(|(t, v)| (*t, v.as_str())).collect()).with_batch(7);
            let funnel = MemorySink::new();
            let sharded = Sharded::default();
            let (f, s) = (funnel.clone(), sharded.clone());
            execute(
                &ClusterConfig::threads(workers),
                JobOptions::default(),
                Sources::new().with("n", src),
                move |ctx| {
                    let counts = ctx.input("n", decode_number)?.count();
                    if partitioned {
                        ctx.output(counts, s.clone());
                    } else {
                        ctx.output(counts, f.clone());
                    }
                    Ok(())
                },
            )
            .expect("job runs");
            (funnel, sharded)
        };
        let (reference, _) = run(1, false);
        let expected: Vec<(Time, u64, isize)> =
            reference.updates().iter().map(|((n, c), t, d)| (*t, n * 1_000 + *c as u64, *d)).collect();
        assert!(expected.len() > 100, "the run should have many updates");
        for workers in [1, 2, 3] {
            let (_, sharded) = run(workers, true);
            let assigned = sharded.assigned.lock().expect("lock").clone();
            let writers: BTreeSet<usize> = assigned.iter().filter_map(|(w, _)| *w).collect();
            assert_eq!(writers, (0..workers).collect(), "every worker is a writer, once");
            assert!(assigned.iter().all(|(_, n)| *n == workers));
            let written = sharded.written.lock().expect("lock").clone();
            for (writer, _, data, _) in &written {
                assert_eq!((*data / 1_000) as usize % workers, *writer, "row {data} on writer {writer}");
            }
            for writer in 0..workers {
                // Each writer gets the subsequence of the funnelled updates its shards own: same
                // times, same order, all of a time at once.
                let mine: Vec<(Time, u64, isize)> =
                    written.iter().filter(|u| u.0 == writer).map(|u| (u.1, u.2, u.3)).collect();
                let theirs: Vec<(Time, u64, isize)> =
                    expected.iter().filter(|u| (u.1 / 1_000) as usize % workers == writer).copied().collect();
                assert_eq!(mine, theirs, "writer {writer} of {workers}");
            }
        }
    }

    #[test]
    fn missing_hostfile_is_a_clear_error() {
        let cluster = ClusterConfig { workers: 1, processes: 2, process: 0, hostfile: None };
        let err = cluster.timely().expect_err("needs a hostfile").to_string();
        assert!(err.contains("--hostfile"), "{err}");
    }
}

#[cfg(test)]
mod file_sink_tests {
    use super::*;
    use crate::{JsonLinesSink, MemorySource};

    #[test]
    fn only_worker_zero_writes_the_output_file() {
        let dir = std::env::temp_dir().join(format!("kappa-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("out.jsonl");
        let values: Vec<(i64, String)> = (0..2_000).map(|i| (i * 10, (i % 97).to_string())).collect();
        let src = MemorySource::single("n", values.iter().map(|(t, v)| (*t, v.as_str())).collect()).with_batch(7);
        let sink = JsonLinesSink::new(Some(path.clone()));
        execute(&ClusterConfig::threads(4), JobOptions::default(), Sources::new().with("n", src), move |ctx| {
            let words = ctx.input("n", |r| {
                let v = std::str::from_utf8(r.value.as_deref().unwrap_or_default())?;
                Ok::<_, std::str::Utf8Error>((v.to_string(), r.timestamp.unwrap_or(0) as u64))
            })?;
            ctx.output(words, sink.clone());
            Ok(())
        })
        .expect("job runs");
        let text = std::fs::read_to_string(&path).expect("output written");
        assert_eq!(text.lines().count(), 2_000, "one line per record, none lost to another worker's truncation");
        assert!(text.lines().all(|l| l.starts_with("{\"time\":")));
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod restart_tests {
    use super::*;
    use crate::source::{Offset, PartitionedSource, Poll};
    use crate::{Codec, JsonLinesSink, MemorySource, Retention};
    use bytes::Bytes;
    use object_store::memory::InMemory;
    use object_store::ObjectStore;

    /// A source that hands out records slowly and fails (a "crash") after `crash_after` of them.
    struct Crashing {
        inner: MemorySource,
        /// Records left before the crash, shared by all readers.
        left: Option<Arc<std::sync::atomic::AtomicI64>>,
    }

    impl Crashing {
        fn after(records: Option<i64>) -> Self {
            Crashing { inner: history(), left: records.map(|n| Arc::new(std::sync::atomic::AtomicI64::new(n))) }
        }
    }

    struct CrashingReader {
        inner: Box<dyn PartitionedSource>,
        left: Option<Arc<std::sync::atomic::AtomicI64>>,
    }

    impl SourceFactory for Crashing {
        fn partitions(&self) -> std::result::Result<Vec<PartitionId>, crate::BoxError> {
            self.inner.partitions()
        }
        fn open(
            &self,
            owned: &[(PartitionId, Option<Offset>)],
        ) -> std::result::Result<Box<dyn PartitionedSource>, crate::BoxError> {
            Ok(Box::new(CrashingReader { inner: self.inner.open(owned)?, left: self.left.clone() }))
        }
    }

    impl PartitionedSource for CrashingReader {
        fn poll(
            &mut self,
            out: &mut Vec<(usize, Record)>,
            finished: &mut Vec<usize>,
        ) -> std::result::Result<Poll, crate::BoxError> {
            std::thread::sleep(Duration::from_millis(1));
            if self.left.as_ref().is_some_and(|left| left.load(Ordering::SeqCst) <= 0) {
                return Err("simulated crash".into());
            }
            let before = out.len();
            let poll = self.inner.poll(out, finished)?;
            if let Some(left) = self.left.as_ref() {
                left.fetch_sub((out.len() - before) as i64, Ordering::SeqCst);
            }
            Ok(poll)
        }
    }

    /// Reads a fast partition (10 s of event time per record) beside a slow one (0.1 s per
    /// record) and records how far ahead of the slow one the fast one's delivered records got.
    struct Skewed {
        inner: MemorySource,
        lead: Arc<std::sync::atomic::AtomicU64>,
    }

    struct SkewedReader {
        inner: Box<dyn PartitionedSource>,
        newest: [u64; 2],
        lead: Arc<std::sync::atomic::AtomicU64>,
    }

    impl SourceFactory for Skewed {
        fn partitions(&self) -> std::result::Result<Vec<PartitionId>, crate::BoxError> {
            self.inner.partitions()
        }
        fn open(
            &self,
            owned: &[(PartitionId, Option<Offset>)],
        ) -> std::result::Result<Box<dyn PartitionedSource>, crate::BoxError> {
            Ok(Box::new(SkewedReader { inner: self.inner.open(owned)?, newest: [0; 2], lead: self.lead.clone() }))
        }
    }

    impl PartitionedSource for SkewedReader {
        fn poll(
            &mut self,
            out: &mut Vec<(usize, Record)>,
            finished: &mut Vec<usize>,
        ) -> std::result::Result<Poll, crate::BoxError> {
            let before = out.len();
            let poll = self.inner.poll(out, finished)?;
            for (index, record) in &out[before..] {
                self.newest[*index] = self.newest[*index].max(record.timestamp.unwrap_or(0) as u64);
            }
            // Only while the slow partition still has records to give.
            if self.newest[1] < 99_900 {
                let lead = self.newest[0].saturating_sub(self.newest[1]);
                self.lead.fetch_max(lead, Ordering::SeqCst);
            }
            Ok(poll)
        }
        fn hold(&mut self, index: usize, held: bool) {
            self.inner.hold(index, held)
        }
    }

    fn skewed_lead(skew: Option<u64>) -> u64 {
        let step = |p: i32, ms: i64| {
            let records =
                (0..1_000i64).map(|i| Record { offset: i, timestamp: Some(i * ms), key: None, value: None }).collect();
            (PartitionId::new("s", p), records)
        };
        let lead = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let source =
            Skewed { inner: MemorySource::new(vec![step(0, 10_000), step(1, 100)]).with_batch(1), lead: lead.clone() };
        let sink = crate::MemorySink::new();
        let out = sink.clone();
        let options = JobOptions { max_partition_skew_ms: skew, ..JobOptions::default() };
        execute(&ClusterConfig::threads(1), options, Sources::new().with("s", source), move |ctx| {
            let records = ctx.input("s", |r| Ok::<_, String>((r.offset, r.timestamp.unwrap_or(0) as u64)))?;
            ctx.output(records.map(|_| ()).count(), out.clone());
            Ok(())
        })
        .expect("runs");
        assert_eq!(sink.accumulated(), vec![(((), 2_000), 1)]);
        lead.load(Ordering::SeqCst)
    }

    #[test]
    fn a_partition_ahead_in_event_time_is_held_until_the_others_catch_up() {
        // Unheld, the fast partition ends 10,000 s of event time ahead of the slow one.
        assert!(skewed_lead(None) > 1_000_000, "the fast partition should run ahead without holds");
        // Held beyond 10 s: it leads by at most the skew plus the record that crossed it.
        let lead = skewed_lead(Some(10_000));
        assert!(lead <= 10_000 + 10_000, "the fast partition ran {lead} ms ahead");
    }

    fn history() -> MemorySource {
        // Three partitions of words with jittered timestamps; "-w" retracts a "w".
        let partitions = (0..3)
            .map(|p| {
                let records = (0..1_500u64)
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
            .collect();
        MemorySource::new(partitions).with_batch(5)
    }

    fn decode(record: &Record) -> std::result::Result<(String, u64, crate::Diff), String> {
        let text = std::str::from_utf8(record.value.as_deref().unwrap_or_default()).map_err(|e| e.to_string())?;
        let ts = record.timestamp.unwrap_or(0) as u64;
        Ok(match text.strip_prefix('-') {
            Some(word) => (word.to_string(), ts, -1),
            None => (text.to_string(), ts, 1),
        })
    }

    fn config(store: Arc<dyn ObjectStore>, pipeline: &str, codec: Codec) -> CheckpointConfig {
        CheckpointConfig {
            pipeline_version: 1,
            store,
            prefix: object_store::path::Path::from("ckpt"),
            location: "memory:///ckpt".into(),
            every: Duration::from_millis(15),
            pipeline: pipeline.into(),
            fingerprint: "lateness=50".into(),
            codec,
            keep: 2,
        }
    }

    fn run(
        source: Crashing,
        out: &std::path::Path,
        checkpoint: Option<CheckpointConfig>,
        workers: usize,
    ) -> Result<JobReport> {
        let sink = JsonLinesSink::new(Some(out.to_path_buf()));
        let options = JobOptions { lateness_ms: 50, checkpoint, ..JobOptions::default() };
        execute(&ClusterConfig::threads(workers), options, Sources::new().with("words", source), move |ctx| {
            let words = ctx.durable_input("words", decode, Retention::Collapse)?;
            ctx.output(words.count(), sink.clone());
            Ok(())
        })
    }

    #[test]
    fn crashed_and_restarted_runs_write_the_uninterrupted_output_byte_for_byte() {
        let dir = tempfile::tempdir().expect("temp dir");
        let reference = dir.path().join("reference.jsonl");
        run(Crashing::after(None), &reference, None, 2).expect("uninterrupted run");
        let expected = std::fs::read_to_string(&reference).expect("reference output");
        assert!(expected.lines().count() > 100);

        for (codec, workers) in [(Codec::Postcard, 2), (Codec::Abomonation, 1)] {
            let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let out = dir.path().join(format!("restarted-{codec:?}.jsonl"));
            let mut restored_runs = 0;
            for crash_after in [900, 1_200, 600] {
                let crashing = Crashing::after(Some(crash_after));
                let err = run(crashing, &out, Some(config(store.clone(), "count", codec)), workers)
                    .expect_err("the run crashes");
                assert!(err.to_string().contains("words"), "{err}");
            }
            let report = run(Crashing::after(None), &out, Some(config(store.clone(), "count", codec)), workers)
                .expect("the last run completes");
            if report.records < 4_500 {
                restored_runs += 1;
            }
            assert_eq!(std::fs::read_to_string(&out).expect("output"), expected, "{codec:?}");
            assert!(restored_runs > 0, "the last run restored a checkpoint instead of reading all 4,500 records");
        }
    }

    #[test]
    fn an_unchanged_partition_is_copied_into_later_checkpoints_not_encoded_again() {
        // Partition 0 ends after 5 records; partition 1 goes on for 600 polls.
        let record = |offset: i64, word: &str| Record {
            offset,
            timestamp: Some(offset * 10),
            key: None,
            value: Some(bytes::Bytes::copy_from_slice(word.as_bytes())),
        };
        // Its timestamps lie ahead of the other's, so that its watermark does not hold the
        // checkpoint frontier (the least watermark of all partitions) back.
        let short: Vec<Record> = (0..5).map(|o| Record { timestamp: Some(100_000), ..record(o, "a") }).collect();
        let long: Vec<Record> = (0..600).map(|o| record(o, ["b", "c"][o as usize % 2])).collect();
        let source = || Crashing {
            inner: MemorySource::new(vec![
                (PartitionId::new("words", 0), short.clone()),
                (PartitionId::new("words", 1), long.clone()),
            ])
            .with_batch(1),
            left: None,
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let out = dir.path().join("out.jsonl");
        run(source(), &out, Some(config(store.clone(), "count", Codec::Postcard)), 2).expect("runs");
        let manifest = crate::checkpoint::runtime().expect("runtime").block_on(async {
            use futures::TryStreamExt;
            use object_store::ObjectStoreExt;
            let prefix = object_store::path::Path::from("ckpt");
            let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await.expect("lists");
            let newest = objects
                .iter()
                .map(|o| o.location.to_string())
                .filter(|name| name.ends_with("/MANIFEST"))
                .max()
                .expect("a complete checkpoint");
            let bytes = store.get(&newest.as_str().into()).await.expect("reads").bytes().await.expect("reads");
            serde_json::from_slice::<crate::checkpoint::Manifest>(&bytes).expect("a manifest")
        });
        let frontier_of = |partition: &str| {
            let name = manifest.parts.iter().find(|n| n.contains(partition)).expect("a part per partition");
            crate::checkpoint::PartName::parse(name).expect("a part name").frontier
        };
        assert!(
            frontier_of("+words+0+") < frontier_of("+words+1+"),
            "the finished partition's part keeps the frontier it was encoded at, in later generations: {:?}",
            manifest.parts
        );
        // And a run restored from such a checkpoint ends with the same output.
        let expected = std::fs::read_to_string(&out).expect("output");
        run(source(), &out, Some(config(store, "count", Codec::Postcard)), 1).expect("runs again, restored");
        assert_eq!(std::fs::read_to_string(&out).expect("output"), expected);
    }

    /// Every complete checkpoint in `store`, oldest first: its directory, manifest, and the sizes of
    /// its objects by name.
    fn complete_checkpoints(
        store: &Arc<dyn ObjectStore>,
    ) -> Vec<(String, crate::checkpoint::Manifest, BTreeMap<String, usize>)> {
        crate::checkpoint::runtime().expect("runtime").block_on(async {
            use futures::TryStreamExt;
            use object_store::ObjectStoreExt;
            let objects: Vec<_> = store.list(None).try_collect().await.expect("lists");
            let mut manifests: Vec<String> =
                objects.iter().map(|o| o.location.to_string()).filter(|name| name.ends_with("/MANIFEST")).collect();
            manifests.sort();
            let mut found = Vec::new();
            for path in manifests {
                let bytes = store.get(&path.as_str().into()).await.expect("reads").bytes().await.expect("reads");
                let manifest: crate::checkpoint::Manifest = serde_json::from_slice(&bytes).expect("a manifest");
                let dir = path.trim_end_matches("MANIFEST").to_string();
                let sizes = objects
                    .iter()
                    .filter_map(|o| Some((o.location.to_string().strip_prefix(&dir)?.to_string(), o.size as usize)))
                    .collect();
                found.push((dir, manifest, sizes));
            }
            found
        })
    }

    #[test]
    fn a_growing_partition_checkpoints_deltas_and_restores_from_its_chain() {
        // One partition whose state grows with every record (distinct words): a full part per
        // checkpoint would re-encode all of it each time.
        let records: Vec<Record> = (0..3_000i64)
            .map(|i| Record {
                offset: i,
                timestamp: Some(i * 10),
                key: None,
                value: Some(Bytes::from(format!("w{i}"))),
            })
            .collect();
        let source = |left: Option<i64>| Crashing {
            inner: MemorySource::new(vec![(PartitionId::new("words", 0), records.clone())]).with_batch(5),
            left: left.map(|n| Arc::new(std::sync::atomic::AtomicI64::new(n))),
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let reference = dir.path().join("reference.jsonl");
        run(source(None), &reference, None, 1).expect("uninterrupted run");
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let out = dir.path().join("out.jsonl");
        run(source(Some(2_500)), &out, Some(config(store.clone(), "count", Codec::Postcard)), 1)
            .expect_err("the run crashes");
        // The kept checkpoints are consecutive: a base follows a long chain, a delta a base, so
        // one of them is a chain of several parts.
        let kept = complete_checkpoints(&store);
        let (chain_dir, manifest, sizes) =
            kept.iter().max_by_key(|(_, m, _)| m.parts.len()).expect("a complete checkpoint").clone();
        let chain: Vec<crate::checkpoint::PartName> =
            manifest.parts.iter().map(|n| crate::checkpoint::PartName::parse(n).expect("a part name")).collect();
        assert!(chain.len() > 1, "the partition's state is a base and deltas: {:?}", manifest.parts);
        assert!(chain.iter().enumerate().all(|(i, p)| p.seq == i as u32 && p.len == chain.len() as u32));
        let bytes: Vec<usize> = manifest.parts.iter().map(|n| sizes[n]).collect();
        // (Each part carries a header of a few hundred bytes.)
        assert!(
            bytes[1..].iter().sum::<usize>() <= bytes[0] + 512 * bytes.len(),
            "the deltas together stay about the base's size: {bytes:?}"
        );
        assert!(bytes.last() < bytes.first(), "the newest delta is smaller than the base: {bytes:?}");
        // A restart from the chain (newer checkpoints removed) goes on exactly.
        crate::checkpoint::runtime().expect("runtime").block_on(async {
            use futures::TryStreamExt;
            use object_store::ObjectStoreExt;
            let objects: Vec<_> = store.list(None).try_collect().await.expect("lists");
            for o in objects.iter().filter(|o| o.location.to_string().as_str() > chain_dir.as_str()) {
                if !o.location.to_string().starts_with(&chain_dir) {
                    store.delete(&o.location).await.expect("deletes");
                }
            }
        });
        let report = run(source(None), &out, Some(config(store, "count", Codec::Postcard)), 1).expect("restarts");
        assert!(report.records < 3_000, "restored rather than replayed: read {}", report.records);
        assert_eq!(std::fs::read_to_string(&out).expect("output"), std::fs::read_to_string(&reference).expect("ref"));
    }

    #[test]
    fn checkpoints_of_another_pipeline_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let out = dir.path().join("a.jsonl");
        let _ = run(Crashing::after(Some(3_000)), &out, Some(config(store.clone(), "count", Codec::Postcard)), 1);
        let err =
            run(Crashing::after(None), &out, Some(config(store, "other", Codec::Postcard)), 1).expect_err("refused");
        assert!(err.to_string().contains("belongs to pipeline `count`"), "{err}");
    }

    #[test]
    fn a_damaged_newest_checkpoint_falls_back_to_an_older_one_or_a_full_replay() {
        let dir = tempfile::tempdir().expect("temp dir");
        let reference = dir.path().join("reference.jsonl");
        run(Crashing::after(None), &reference, None, 1).expect("uninterrupted run");
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let out = dir.path().join("out.jsonl");
        let _ = run(Crashing::after(Some(3_000)), &out, Some(config(store.clone(), "count", Codec::Postcard)), 1);
        // Damage every part of the newest complete checkpoint.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            use futures::TryStreamExt;
            use object_store::ObjectStoreExt;
            let all: Vec<_> = store.list(None).try_collect().await.expect("list");
            let newest = all
                .iter()
                .filter(|o| o.location.filename() == Some("MANIFEST"))
                .map(|o| o.location.to_string())
                .max()
                .expect("a checkpoint was completed");
            let dir = newest.trim_end_matches("MANIFEST");
            for object in all
                .iter()
                .filter(|o| o.location.to_string().starts_with(dir) && o.location.to_string().ends_with(".part"))
            {
                store.put(&object.location, object_store::PutPayload::from(b"garbage".to_vec())).await.expect("put");
            }
        });
        run(Crashing::after(None), &out, Some(config(store, "count", Codec::Postcard)), 1)
            .expect("falls back and completes");
        assert_eq!(std::fs::read_to_string(&out).expect("output"), std::fs::read_to_string(&reference).expect("ref"));
    }
}
