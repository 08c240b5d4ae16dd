//! Consistent sinks.
//!
//! A [`Sink`] sees a timestamp's updates only once the dataflow's frontier has passed that
//! timestamp, and then all of them at once, consolidated and sorted: `(data, diff)` pairs with no
//! data repeated and no zero diff. By default all updates are routed to one worker (worker 0 of
//! process 0), so the written output is the same byte for byte whatever the number of workers or
//! processes.
//!
//! # Partitioned output
//! Funnelling every update through one worker makes that worker the ceiling of a job whose
//! output is large. A sink whose output is itself partitioned (a Kafka topic's partitions, a
//! counter) says so ([`Sink::partitioned`]) and names each row's *shard* ([`Sink::shard`]); every
//! worker of process 0 is then a *writer*, and writer `w` of `n` receives, consolidates and writes
//! the rows whose shard is `w` modulo `n`, each through its own clone of the sink (told which
//! writer it is by [`Sink::assign`]). The guarantees are per writer and so per shard: each writer
//! sees a time's updates of its shards only once the frontier has passed the time, all at once,
//! sorted by data (so a shard receives exactly the subsequence a funnelled sink would give it),
//! and keeps its own durable progress; a checkpoint waits for the slowest writer. Writers are
//! process 0's workers, because process 0 is where checkpoints are gated on durable progress;
//! in a cluster of several processes the others compute and route but do not write.
//!
//! # Final and provisional times (restartable jobs)
//! A restartable job may be run again over more input: a daily backfill, a job that stopped when
//! its input went idle. Its inputs' partitions finish when the input ends, and the dataflow's
//! frontier then passes every time, but a later run gives each partition's new records times at
//! or after that partition's watermark. So only times below the *resumable frontier* `R` (the
//! least watermark over every partition, finished ones included; [`crate::watermarks`]) are
//! final. The sink's durable progress ([`Sink::advanced`], [`Sink::finish`]) never passes `R`;
//! times at or after it are *provisional*. A sink that can take back its tail
//! ([`Sink::rewrites_tail`]: a file truncates to its progress record) receives them, so a finished
//! job's file holds the whole answer over the input so far, and the next run rewrites the tail.
//! A sink that cannot (a Kafka topic) receives them only once they are final.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use differential_dataflow::consolidation::consolidate;
use serde::Serialize;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use crate::checkpoint::DurableProgress;
use crate::error::{BoxError, Error};
use crate::input::OutputFrontiers;
use crate::runtime::Metrics;
use crate::time::Time;
use crate::watermarks::Board;
use crate::{Collection, Diff};

/// Receives a pipeline's output, one completed timestamp at a time.
///
/// Handles are cloned onto every worker, but only worker 0's is ever written to (or, for a
/// [`partitioned`](Self::partitioned) sink, each writer's), so resources (files, connections)
/// should be opened lazily, on the first call.
pub trait Sink<D>: Clone + Send + Sync + 'static {
    /// All updates at `time`, consolidated and sorted by data. Called once per time, in time order.
    fn write(&mut self, time: Time, updates: &[(D, Diff)]) -> Result<(), BoxError>;
    /// Called once the frontier is empty: every update this run computes has been written.
    /// `upper` is the resumable frontier (`Time::MAX` in a job that cannot restart): times before
    /// it are final, and a durable progress record says at most `upper`; times at or after it were
    /// written only if [`rewrites_tail`](Self::rewrites_tail), and a later run over more input
    /// rewrites them (see the module docs).
    fn finish(&mut self, _upper: Time) -> Result<(), BoxError> {
        Ok(())
    }
    /// Called when every time before `upper` is complete, final and written (whether or not it
    /// had updates): for progress reports, latency measurements, durable progress records.
    fn advanced(&mut self, _upper: Time) -> Result<(), BoxError> {
        Ok(())
    }
    /// Whether the sink can take back what it wrote at or after its durable progress, as a file
    /// truncated to its progress record can. Only then does a restartable job hand it provisional
    /// times (see the module docs); otherwise it receives each time once the time is final.
    fn rewrites_tail(&self) -> bool {
        false
    }
    /// Whether the sink reads rows' keys ([`Keyed`](crate::Keyed)), as a Kafka topic does for its
    /// record keys: when not, outputs chosen at run time do not encode them.
    fn uses_keys(&self) -> bool {
        false
    }
    /// For a restartable job (one with checkpoints): called once, before any write, to learn the
    /// time from which this sink needs updates, every earlier time having been durably written by
    /// an earlier run of the same job. The sink also discards anything it holds beyond that point
    /// (a half-written time). Fresh sinks return 0.
    fn resume(&mut self) -> Result<Time, BoxError> {
        Err("this sink cannot resume (it keeps no durable progress); write to a file or a Kafka topic".into())
    }
    /// The time below which everything written so far is durable. Restartable jobs only cut
    /// checkpoints that this covers.
    fn durable_upper(&self) -> Option<Time> {
        None
    }
    /// Whether every worker of process 0 writes the rows of its own shards (see "Partitioned
    /// output" in the module docs) instead of worker 0 writing all of them.
    fn partitioned(&self) -> bool {
        false
    }
    /// A partitioned sink's shard of `data` (writer `shard % writers` writes it): a pure function
    /// of the row and of what [`assign`](Self::assign) learned, the same on every worker.
    fn shard(&self, _data: &D) -> u64 {
        0
    }
    /// A partitioned sink: called once on every worker's clones, before any other call. `writer`
    /// is `Some(w)` on the clone that writes the shards `w` modulo `writers`, `None` on a clone
    /// that only computes shards to route rows. A clone that shares state with others (as
    /// [`BoxedSink`](crate::BoxedSink) does) takes a state of its own here.
    fn assign(&mut self, _writer: Option<usize>, _writers: usize) -> Result<(), BoxError> {
        Ok(())
    }
}

/// How a sink of a restartable job reports durability.
pub(crate) struct SinkDurability {
    pub progress: Arc<DurableProgress>,
    /// The frontier of the restored checkpoint: the sink must already be past it.
    pub restored_frontier: Time,
}

/// What the runtime hands a sink's operator.
pub(crate) struct SinkSetup {
    /// The sink's ordinal among the job's sinks (the same on every worker).
    pub ordinal: usize,
    /// Writers: 1, or process 0's workers for a partitioned sink.
    pub writers: usize,
    pub metrics: Arc<Metrics>,
    /// Completion is tracked by the runtime through this count.
    pub open_sinks: std::rc::Rc<std::cell::Cell<usize>>,
    pub frontiers: OutputFrontiers,
    pub board: Board,
    pub durable: Option<SinkDurability>,
}

/// Attaches `sink` to `collection` behind the consistency protocol.
pub(crate) fn consistent_sink<D, S>(collection: Collection<'_, D>, mut sink: S, setup: SinkSetup)
where
    D: differential_dataflow::ExchangeData + Ord,
    S: Sink<D>,
{
    let SinkSetup { ordinal, writers, metrics, open_sinks, frontiers, board, durable } = setup;
    open_sinks.set(open_sinks.get() + 1);
    let scope = collection.inner.scope();
    // Only writers ever receive updates (the exchange below); only they may touch the sink, or
    // other workers would open (and truncate) the same file when they finish. Timely numbers the
    // workers of process `p` from `p * workers`, so writers `0..writers` are process 0's.
    let writer = (scope.index() < writers).then_some(scope.index());
    let writes = writer.is_some();
    // The clone that computes each row's writer, on every worker.
    let mut router = sink.clone();
    if sink.partitioned() {
        // One writer needs no routing: its router is never asked for a shard.
        let routed = if writers > 1 { router.assign(None, writers) } else { Ok(()) };
        if let Err(source) = routed.and_then(|()| sink.assign(writer, writers)) {
            metrics.fail(Error::Sink { time: 0, source });
        }
    }
    let resumable = durable.is_some();
    // Updates not yet complete, in arrival order. One flat buffer, sorted only when the frontier
    // moves: cheaper than a map lookup per update when most times are distinct milliseconds.
    let mut pending: Vec<(Time, D, Diff)> = Vec::new();
    let mut complete: Vec<(Time, D, Diff)> = Vec::new();
    let mut group: Vec<(D, Diff)> = Vec::new();
    let mut sorted_upto: Option<Time> = None;
    let mut done = false;
    let mut last_upper: Option<Time> = None;
    let frontier_slot = frontiers.register();
    // Restartable jobs: times before `resume_from` were written by an earlier run.
    let mut resume_from: Option<Time> = None;
    let durable_slot = match (&durable, writer) {
        (Some(d), Some(w)) => Some(d.progress.register(ordinal, w, writers)),
        _ => None,
    };
    let to_writer = Exchange::new(
        move |update: &(D, Time, Diff)| {
            if writers > 1 {
                router.shard(&update.0) % writers as u64
            } else {
                0
            }
        },
    );
    let mut builder = OperatorBuilder::new("ConsistentSink".to_string(), scope);
    let mut input = builder.new_input(collection.inner, to_writer);
    let activator = scope.activator_for(builder.operator_info().address);
    // `build_reschedule`: the sink stays incomplete (scheduled) until it has finished, even once
    // its input frontier is empty, because finishing may wait for the board's last reports.
    builder.build_reschedule(move |_capabilities| {
        move |input_frontiers| {
            let frontier = &input_frontiers[0];
            input.for_each(|_time, data| pending.extend(data.drain(..).map(|(d, t, r)| (t, d, r))));
            frontiers.set(frontier_slot, frontier.frontier().first().copied().unwrap_or(Time::MAX));
            if done || metrics.failed() {
                return !done;
            }
            if let (Some(d), true, None) = (&durable, writes, resume_from) {
                match sink.resume() {
                    Ok(from) if from < d.restored_frontier => {
                        let reason = format!(
                            "the sink's durable progress ends at time {from}, before the restored checkpoint's frontier {}; \
                             the output was removed or replaced: delete the checkpoint location to recompute from the beginning",
                            d.restored_frontier
                        );
                        metrics.fail(Error::Sink { time: from, source: reason.into() });
                        return !done;
                    }
                    Ok(from) => {
                        if let Some(slot) = durable_slot {
                            d.progress.set(slot, from);
                        }
                        resume_from = Some(from);
                    }
                    Err(source) => {
                        metrics.fail(Error::Sink { time: 0, source });
                        return !done;
                    }
                }
            }
            let finishing = frontier.is_empty();
            if finishing && resumable && !board.complete() {
                // The final resumable frontier is a few reports away.
                activator.activate_after(std::time::Duration::from_millis(2));
                return !done;
            }
            let skip_below = resume_from.unwrap_or(0);
            let upper = frontier.frontier().first().copied().unwrap_or(Time::MAX);
            // Times below `settled` are final: no later run over more input changes them.
            let resumable_upper = if resumable { board.resumable() } else { Time::MAX };
            let settled = upper.min(resumable_upper);
            let write_upper = if !resumable || sink.rewrites_tail() { upper } else { settled };
            if !pending.is_empty() && sorted_upto != Some(write_upper) {
                sorted_upto = Some(write_upper);
                // Complete times out of the buffer, in arrival order; then ordered by time alone (a
                // stable sort on integers, which finds the runs operators emit in time order), and
                // each time's group consolidated by data (cheap when it arrives sorted, as one
                // operator's output at one time does).
                complete.clear();
                complete.extend(pending.extract_if(.., |u| u.0 < write_upper));
                complete.sort_by_key(|u| u.0);
                let mut ready = complete.drain(..).peekable();
                while let Some((time, data, diff)) = ready.next() {
                    group.clear();
                    group.push((data, diff));
                    while let Some((_, data, diff)) = ready.next_if(|u| u.0 == time) {
                        group.push((data, diff));
                    }
                    consolidate(&mut group);
                    if time < skip_below {
                        // Written by an earlier run; by determinism this run computed the same updates.
                        continue;
                    }
                    if !group.is_empty() {
                        if let Err(source) = sink.write(time, &group) {
                            metrics.fail(Error::Sink { time, source });
                            return !done;
                        }
                    }
                }
            }
            if writes && !finishing && last_upper != Some(settled) && settled > skip_below {
                last_upper = Some(settled);
                if let Err(source) = sink.advanced(settled) {
                    metrics.fail(Error::Sink { time: settled, source });
                    return !done;
                }
                if let (Some(d), Some(slot), Some(durable_upper)) = (&durable, durable_slot, sink.durable_upper()) {
                    d.progress.set(slot, durable_upper);
                }
            }
            if finishing {
                let finished = if writes { sink.finish(resumable_upper.max(skip_below)) } else { Ok(()) };
                if let Err(source) = finished {
                    metrics.fail(Error::Sink { time: u64::MAX, source });
                }
                if let (Some(d), Some(slot), Some(durable_upper)) = (&durable, durable_slot, sink.durable_upper()) {
                    d.progress.set(slot, durable_upper);
                }
                done = true;
                open_sinks.set(open_sinks.get() - 1);
            }
            !done
        }
    });
}

/// Writes updates as JSON lines, `{"time":T,"diff":D,"data":{...}}`, to a file or to stdout.
///
/// In a restartable job ([`Sink::resume`]) the file keeps a progress record beside it,
/// `<file>.progress`: the time below which the file is complete and the file's length at that
/// point, written (after an fsync of the file, by atomic rename) at most every 50 ms and at the
/// end. A restarted job truncates the file to that length and goes on from that time, so the file
/// ends byte for byte as an uninterrupted run would have left it. The file also receives the
/// provisional tail of a finished run (times at or after the resumable frontier, see the module
/// docs): it stands after the recorded length, so the next run over more input replaces it.
pub struct JsonLinesSink {
    path: Option<PathBuf>,
    writer: Option<std::io::BufWriter<Box<dyn Write + Send + Sync>>>,
    /// Restartable mode: the file, the bytes written so far, the durable upper, the last sync.
    file: Option<std::fs::File>,
    written: u64,
    durable: Option<Time>,
    last_sync: Option<std::time::Instant>,
    /// Restartable mode: `(time, length before it)` of each time written since the last sync, to
    /// find the length at a progress record's upper when provisional times follow it.
    starts: std::collections::VecDeque<(Time, u64)>,
}

/// How often a restartable file sink records its progress.
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

#[derive(Serialize, serde::Deserialize)]
struct FileProgress {
    upper: Time,
    bytes: u64,
}

impl JsonLinesSink {
    /// Writes to `path` (created or truncated on the first write), or to stdout if `None`.
    pub fn new(path: Option<PathBuf>) -> Self {
        JsonLinesSink {
            path,
            writer: None,
            file: None,
            written: 0,
            durable: None,
            last_sync: None,
            starts: Default::default(),
        }
    }

    fn progress_path(path: &std::path::Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".progress");
        PathBuf::from(name)
    }

    fn writer(&mut self) -> Result<&mut std::io::BufWriter<Box<dyn Write + Send + Sync>>, BoxError> {
        if self.writer.is_none() {
            let inner: Box<dyn Write + Send + Sync> = match &self.path {
                Some(path) => Box::new(
                    std::fs::File::create(path)
                        .map_err(|e| format!("cannot create output file {}: {e}", path.display()))?,
                ),
                None => Box::new(std::io::stdout()),
            };
            self.writer = Some(std::io::BufWriter::with_capacity(1 << 20, inner));
        }
        Ok(self.writer.as_mut().expect("just set"))
    }

    /// Makes everything written so far durable and records `upper` as the progress, with the
    /// file's length where the first time at or after `upper` begins.
    fn sync(&mut self, upper: Time) -> Result<(), BoxError> {
        let (Some(path), Some(file)) = (self.path.clone(), self.file.as_ref()) else { return Ok(()) };
        while self.starts.front().is_some_and(|&(time, _)| time < upper) {
            self.starts.pop_front();
        }
        let bytes = self.starts.front().map_or(self.written, |&(_, start)| start);
        if let Some(writer) = self.writer.as_mut() {
            writer.flush()?;
        }
        file.sync_data().map_err(|e| format!("cannot sync output file {}: {e}", path.display()))?;
        let progress = Self::progress_path(&path);
        let temporary = progress.with_extension("progress.tmp");
        std::fs::write(&temporary, serde_json::to_vec(&FileProgress { upper, bytes })?)
            .map_err(|e| format!("cannot write {}: {e}", temporary.display()))?;
        std::fs::rename(&temporary, &progress).map_err(|e| format!("cannot write {}: {e}", progress.display()))?;
        self.durable = Some(upper);
        self.last_sync = Some(std::time::Instant::now());
        Ok(())
    }
}

impl Clone for JsonLinesSink {
    fn clone(&self) -> Self {
        JsonLinesSink::new(self.path.clone())
    }
}

#[derive(Serialize)]
struct Line<'a, D> {
    time: Time,
    diff: Diff,
    data: &'a D,
}

impl<D: Serialize + 'static> Sink<D> for JsonLinesSink {
    fn write(&mut self, time: Time, updates: &[(D, Diff)]) -> Result<(), BoxError> {
        let mut buffer = Vec::with_capacity(64 * updates.len());
        for (data, diff) in updates {
            serde_json::to_writer(&mut buffer, &Line { time, diff: *diff, data })?;
            buffer.push(b'\n');
        }
        if self.file.is_some() {
            self.starts.push_back((time, self.written));
        }
        self.written += buffer.len() as u64;
        self.writer()?.write_all(&buffer)?;
        Ok(())
    }

    fn advanced(&mut self, upper: Time) -> Result<(), BoxError> {
        if self.file.is_some() && self.last_sync.is_none_or(|at| at.elapsed() >= SYNC_EVERY) {
            self.sync(upper)?;
        } else if let Some(writer) = self.writer.as_mut() {
            // Readers of the file see each completed time now, not at the next sync (which waits
            // for the next advance and may never come while the input is quiet).
            writer.flush()?;
        }
        Ok(())
    }

    fn finish(&mut self, upper: Time) -> Result<(), BoxError> {
        // Create the file even when there was no update, so an empty result is visible as such.
        self.writer()?.flush()?;
        self.sync(upper)
    }

    fn rewrites_tail(&self) -> bool {
        true
    }

    fn resume(&mut self) -> Result<Time, BoxError> {
        let path = self.path.clone().ok_or("standard output cannot resume: write the output to a file")?;
        let progress = Self::progress_path(&path);
        let (upper, bytes) = match std::fs::read(&progress) {
            Ok(text) => {
                let p: FileProgress = serde_json::from_slice(&text).map_err(|e| {
                    format!("{} is damaged ({e}); remove it and the output to start over", progress.display())
                })?;
                (p.upper, p.bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, 0),
            Err(e) => return Err(format!("cannot read {}: {e}", progress.display()).into()),
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open output file {}: {e}", path.display()))?;
        let length = file.metadata()?.len();
        if length < bytes {
            return Err(format!(
                "output file {} has {length} bytes but its progress record says {bytes} were written: it was changed \
                 outside kappa; remove it and {} to start over",
                path.display(),
                progress.display()
            )
            .into());
        }
        // Drop whatever a crashed run wrote after its last progress record.
        file.set_len(bytes)?;
        let mut append = file.try_clone()?;
        std::io::Seek::seek(&mut append, std::io::SeekFrom::Start(bytes))?;
        self.writer = Some(std::io::BufWriter::with_capacity(1 << 20, Box::new(append)));
        self.file = Some(file);
        self.written = bytes;
        self.durable = Some(upper);
        Ok(upper)
    }

    fn durable_upper(&self) -> Option<Time> {
        self.durable
    }
}

/// Collects updates in memory, for tests. Clones share the same buffer.
///
/// [`MemorySink::new`] cannot resume, so a job with checkpoints refuses it;
/// [`MemorySink::restartable`] keeps durable progress as a file or a Kafka topic does (in memory,
/// shared by its clones), so that a test can crash a checkpointed job and run it again into the
/// same sink.
pub struct MemorySink<D> {
    updates: Arc<Mutex<Vec<(D, Time, Diff)>>>,
    finished: Arc<Mutex<bool>>,
    /// `Some(rewrites_tail)` when restartable.
    restartable: Option<bool>,
    /// Restartable: the time below which the updates held are durable.
    durable: Arc<Mutex<Option<Time>>>,
}

impl<D> Clone for MemorySink<D> {
    fn clone(&self) -> Self {
        MemorySink {
            updates: self.updates.clone(),
            finished: self.finished.clone(),
            restartable: self.restartable,
            durable: self.durable.clone(),
        }
    }
}

impl<D> Default for MemorySink<D> {
    fn default() -> Self {
        MemorySink { updates: Arc::default(), finished: Arc::default(), restartable: None, durable: Arc::default() }
    }
}

impl<D: Clone + Ord> MemorySink<D> {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty sink that a restartable job can resume: its progress is durable as soon as the
    /// job reports it ([`Sink::advanced`], [`Sink::finish`]), and [`Sink::resume`] drops what was
    /// written after it, as a file truncated to its progress record. With `rewrites_tail` it also
    /// receives a finished run's provisional times, as a file does; without, it receives only
    /// final times, as a Kafka topic does.
    pub fn restartable(rewrites_tail: bool) -> Self {
        MemorySink { restartable: Some(rewrites_tail), ..Self::default() }
    }

    /// Every update written so far, in the order written.
    pub fn updates(&self) -> Vec<(D, Time, Diff)> {
        self.updates.lock().expect("memory sink poisoned").clone()
    }

    /// The output collection at the end: diffs summed per data, zeros dropped, sorted.
    pub fn accumulated(&self) -> Vec<(D, Diff)> {
        let mut all: Vec<(D, Diff)> = self.updates().into_iter().map(|(d, _, r)| (d, r)).collect();
        consolidate(&mut all);
        all
    }

    /// Whether the sink saw the frontier become empty.
    pub fn is_finished(&self) -> bool {
        *self.finished.lock().expect("memory sink poisoned")
    }
}

impl<D: Clone + Send + 'static> MemorySink<D> {
    fn set_durable(&self, upper: Time) -> Result<(), BoxError> {
        if self.restartable.is_some() {
            *self.durable.lock().map_err(|_| "memory sink poisoned")? = Some(upper);
        }
        Ok(())
    }
}

impl<D: Clone + Send + 'static> Sink<D> for MemorySink<D> {
    fn write(&mut self, time: Time, updates: &[(D, Diff)]) -> Result<(), BoxError> {
        let mut all = self.updates.lock().map_err(|_| "memory sink poisoned")?;
        all.extend(updates.iter().map(|(d, r)| (d.clone(), time, *r)));
        Ok(())
    }

    fn advanced(&mut self, upper: Time) -> Result<(), BoxError> {
        self.set_durable(upper)
    }

    fn finish(&mut self, upper: Time) -> Result<(), BoxError> {
        self.set_durable(upper)?;
        *self.finished.lock().map_err(|_| "memory sink poisoned")? = true;
        Ok(())
    }

    fn rewrites_tail(&self) -> bool {
        self.restartable.unwrap_or(true)
    }

    fn resume(&mut self) -> Result<Time, BoxError> {
        if self.restartable.is_none() {
            return Err("this memory sink cannot resume: make it with MemorySink::restartable".into());
        }
        let upper = self.durable.lock().map_err(|_| "memory sink poisoned")?.unwrap_or(0);
        self.updates.lock().map_err(|_| "memory sink poisoned")?.retain(|(_, time, _)| *time < upper);
        *self.finished.lock().map_err(|_| "memory sink poisoned")? = false;
        Ok(upper)
    }

    fn durable_upper(&self) -> Option<Time> {
        self.durable.lock().ok().and_then(|d| *d)
    }
}
