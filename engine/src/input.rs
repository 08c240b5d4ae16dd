//! The input operator: reads a worker's partitions, stamps deterministic times, holds capabilities.
//!
//! Per activation the operator polls its [`PartitionedSource`] once and, for every record:
//! 1. applies the partition's recorded idle advances that lie at or before the record
//!    ([`crate::clock`]);
//! 2. decodes it with the pipeline's decoder into a value, an event timestamp and a difference,
//!    and checks the timestamp ([`TimeAssigner::check`]);
//! 3. assigns the record's time with its partition's [`TimeAssigner`], rounded up to the backfill
//!    granularity if the record lies before the partition's recorded backfill end;
//! 4. emits `(Ok(value) | Err(bad record), time, diff)`.
//!
//! Then, for every live partition the source says is caught up and that has been silent for the
//! idle timeout, it may decide to advance the partition's watermark to the job's greatest
//! ([`crate::watermarks`]), recording the decision durably first (restartable jobs).
//!
//! It then downgrades its capability to the least watermark among the partitions still open, so
//! the dataflow's frontier passes a time exactly when no owned partition can produce a record at
//! it any more. A finished partition drops out of that minimum; when none is left the capability
//! is released. A source error is recorded and the capability is *kept*: a failed input must never
//! look like a completed one to the sinks.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, Stream};

use crate::checkpoint::{compact, CutPart, PartBody, PartHeader, PartName, Retention, Updates, Writer};
use crate::clock::{ClockStore, PartitionClock};
use crate::error::{BadRecord, Error};
use crate::runtime::Metrics;
use crate::source::{PartitionId, PartitionedSource, Poll, Record};
use crate::time::{Time, TimeAssigner};
use crate::watermarks::Board;
use crate::Diff;

/// Decoded records and bad ones, as one stream of differential updates.
pub type DecodedStream<'scope, T> = Stream<'scope, Time, Vec<(Result<T, BadRecord>, Time, Diff)>>;

/// How an input turns record timestamps into dataflow times.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimePolicy {
    pub lateness_ms: u64,
    pub backfill_granularity_ms: u64,
    /// How far a timestamp may jump ahead of its partition's watermark plus lateness.
    pub max_timestamp_jump_ms: u64,
    /// How long a caught-up live partition may stay silent before its watermark advances.
    pub idle_timeout: Option<Duration>,
    /// How far a partition may run ahead of the least watermark before it is held back.
    pub max_partition_skew_ms: Option<u64>,
}

impl TimePolicy {
    /// `time` rounded up to the backfill granularity when the record is a backfill. Rounding up
    /// keeps the time at or above the capability (the watermark), so frontiers stay correct.
    fn coarsen(&self, time: Time, backfill: bool) -> Time {
        let g = self.backfill_granularity_ms;
        if backfill && g > 1 {
            time.div_ceil(g).saturating_mul(g)
        } else {
            time
        }
    }
}

/// How long an input waits before polling a source that had nothing.
const BACKOFF: Duration = Duration::from_millis(2);

/// What a durable input adds to the operator: where its state goes, and what it starts from.
pub(crate) struct Durable<T> {
    pub input: String,
    pub retention: Retention,
    /// Encodes a part (the codec, bound to `T`).
    pub encode: crate::runtime::PartEncoder<T>,
    pub every_ms: u64,
    pub writer: Arc<Writer>,
    /// The frontiers of this worker's sinks: the output computed so far.
    pub output_frontier: OutputFrontiers,
    /// Per owned partition, the state restored from a checkpoint: the header of its chain's last
    /// part, the chain's updates (compacted), and the chain's objects in order.
    pub restored: Vec<Option<(PartHeader, Updates<T>, Vec<String>)>>,
}

/// The input frontier of each of a worker's sinks (all workers see the same global frontiers).
#[derive(Clone, Default)]
pub(crate) struct OutputFrontiers(Rc<RefCell<Vec<Time>>>);

impl OutputFrontiers {
    pub fn register(&self) -> usize {
        self.0.borrow_mut().push(0);
        self.0.borrow().len() - 1
    }
    pub fn set(&self, sink: usize, frontier: Time) {
        self.0.borrow_mut()[sink] = frontier;
    }
    /// Every output before this time has been computed (0 before any sink exists).
    pub fn least(&self) -> Time {
        self.0.borrow().iter().copied().min().unwrap_or(0)
    }
}

/// One owned partition's state, kept only for durable inputs.
///
/// Its checkpointed form is a chain of parts (see [`PartName`]): a base holding the whole state
/// when it was written, then a delta per later checkpoint holding only the updates of the records
/// read since the part before. A checkpoint of a partition that changed writes one delta and
/// copies the rest of the chain inside the store; of one that did not, copies the chain. A base is
/// written again (and the chain restarts) when the deltas together outgrow the base or the chain
/// reaches [`MAX_CHAIN`] parts, so a restore reads at most twice the state and a few parts.
struct PartitionLog<T> {
    next_offset: Option<crate::source::Offset>,
    /// The updates already in the chain's parts.
    updates: Vec<(T, Time, Diff)>,
    /// The updates of records read since the last part: the next delta.
    fresh: Vec<(T, Time, Diff)>,
    fresh_compacted: usize,
    /// Updates in the chain's base, and in its deltas.
    base_len: usize,
    delta_len: usize,
    /// The partition's chain as last written (or restored); `None`: the next part is a base.
    written: Option<WrittenChain>,
    /// Whether a record arrived since that chain's last part.
    dirty: bool,
}

/// A partition's chain of parts already in the store, in order, and what its last part said.
struct WrittenChain {
    parts: Vec<(PartName, object_store::path::Path)>,
    next_offset: Option<crate::source::Offset>,
    floor: Time,
}

/// The longest chain of parts before a base is written again.
const MAX_CHAIN: usize = 16;

fn generation(every_ms: u64) -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    now.as_millis() as u64 / every_ms.max(1)
}

/// One owned partition's timekeeping.
struct PartitionTime {
    assigner: TimeAssigner,
    open: bool,
    /// The recorded decisions (backfill end, idle advances).
    clock: PartitionClock,
    /// Recorded advances this run has yet to reach, by increasing offset.
    pending: VecDeque<(crate::source::Offset, Time)>,
    /// When the partition last delivered a record (or the reader started).
    last_record: Instant,
    /// When this run last decided an idle advance for it.
    last_advance: Option<Instant>,
}

impl PartitionTime {
    /// Applies the recorded advances that lie at or before `offset`.
    fn reach(&mut self, offset: crate::source::Offset) {
        while let Some(&(at, watermark)) = self.pending.front() {
            if at > offset {
                break;
            }
            self.assigner.advance_to(watermark);
            self.pending.pop_front();
        }
    }
}

/// What an input needs to keep its partitions' times: the settled clocks (one per owned partition,
/// already recorded), where to record new decisions, and the board.
pub(crate) struct Timekeeping {
    pub clocks: Vec<PartitionClock>,
    pub store: Option<Arc<ClockStore>>,
    pub board: Board,
    /// Where served views learn which offsets their times reflect (jobs that serve).
    pub coverage: Option<crate::serve::CoverageWriter>,
}

/// Builds the input operator for one worker over the partitions it `owned`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn partitioned_input<'scope, T, F>(
    scope: Scope<'scope, Time>,
    name: &str,
    mut reader: Box<dyn PartitionedSource>,
    owned: Vec<PartitionId>,
    times: TimePolicy,
    mut decode: F,
    metrics: Arc<Metrics>,
    durable: Option<Durable<T>>,
    timekeeping: Timekeeping,
) -> DecodedStream<'scope, T>
where
    T: differential_dataflow::Data,
    F: FnMut(&Record) -> Result<(T, u64, Diff), String> + 'static,
{
    let input_name = name.to_string();
    let Timekeeping { clocks, store: clock_store, board, mut coverage } = timekeeping;
    let board_slot = board.register();
    board.install(scope);
    if owned.is_empty() {
        // Nothing to read here: this worker's part of the input is drained from the start.
        board.post(board_slot, Time::MAX, 0, true, 0);
    }
    source::<_, CapacityContainerBuilder<Vec<_>>, _, _>(scope, name, move |capability, info| {
        let activator = scope.activator_for(info.address);
        let started = Instant::now();
        let mut parts: Vec<PartitionTime> = clocks
            .into_iter()
            .map(|clock| PartitionTime {
                assigner: TimeAssigner::new(times.lateness_ms),
                open: true,
                pending: clock.advances.iter().copied().collect(),
                clock,
                last_record: started,
                last_advance: None,
            })
            .collect();
        let mut capability = (!owned.is_empty()).then_some(capability);
        let (mut records, mut finished) = (Vec::new(), Vec::new());
        // Partitions asked to be held back, running ahead of the others in event time.
        let mut held = vec![false; parts.len()];
        // Durable inputs: the partitions' logs, and the restored updates still to be emitted.
        let mut durable = durable;
        let mut logs: Vec<PartitionLog<T>> = Vec::new();
        let mut to_restore: Vec<(T, Time, Diff)> = Vec::new();
        let mut last_generation = 0;
        if let Some(d) = durable.as_mut() {
            last_generation = generation(d.every_ms);
            for (index, restored) in std::mem::take(&mut d.restored).into_iter().enumerate() {
                let mut log = PartitionLog {
                    next_offset: None,
                    updates: Vec::new(),
                    fresh: Vec::new(),
                    fresh_compacted: 0,
                    base_len: 0,
                    delta_len: 0,
                    written: None,
                    dirty: true,
                };
                if let Some((header, updates, objects)) = restored {
                    let chain: Option<Vec<(PartName, object_store::path::Path)>> = objects
                        .iter()
                        .map(|object| {
                            let path = object_store::path::Path::parse(object).ok()?;
                            let name = PartName::parse(object.rsplit('/').next()?)?;
                            Some((name, path))
                        })
                        .collect();
                    if let Some(chain) = chain.filter(|c| !c.is_empty()) {
                        log.written =
                            Some(WrittenChain { parts: chain, next_offset: header.next_offset, floor: header.floor });
                        log.dirty = false;
                    }
                    let part = &mut parts[index];
                    part.assigner = TimeAssigner::resume(times.lateness_ms, header.max_seen, header.floor);
                    if let Some(next) = header.next_offset {
                        // Advances before the restored offset are in the restored floor.
                        part.pending.retain(|&(at, _)| at >= next);
                    }
                    log.next_offset = header.next_offset;
                    to_restore.extend(updates.iter().cloned());
                    log.base_len = updates.len();
                    log.updates = updates;
                }
                logs.push(log);
            }
        }
        move |output| {
            if metrics.failed() {
                return;
            }
            if let Some(d) = durable.as_ref() {
                // A checkpoint is cut by every input operator on its own clock tick; the writer
                // completes the generation once every partition's part has arrived.
                let now = generation(d.every_ms);
                if now > last_generation {
                    last_generation = now;
                    // Never compact past the resumable frontier: a later run over more input
                    // gives new records times at or after it (see `crate::watermarks`).
                    let frontier = d.output_frontier.least().min(board.resumable());
                    for (index, log) in logs.iter_mut().enumerate() {
                        let floor = parts[index].assigner.floor();
                        let header = PartHeader {
                            input: d.input.clone(),
                            partition: owned[index].clone(),
                            next_offset: log.next_offset,
                            max_seen: parts[index].assigner.max_seen(),
                            floor,
                            frontier,
                            data_type: std::any::type_name::<T>().to_string(),
                            layout: None,
                            updates: 0,
                        };
                        cut_partition(d, now, log, header);
                    }
                }
                if capability.is_none() {
                    // Finished partitions still belong in every later checkpoint.
                    activator.activate_after(Duration::from_millis(d.every_ms.max(1)));
                    return;
                }
            }
            let Some(cap) = capability.as_mut() else {
                return;
            };
            if !to_restore.is_empty() {
                // The restored state, at its own (compacted) times, before any new record.
                let mut session = output.session(&*cap);
                for (value, time, diff) in to_restore.drain(..) {
                    session.give((Ok(value), time, diff));
                }
            }
            records.clear();
            finished.clear();
            let poll = match reader.poll(&mut records, &mut finished) {
                Ok(poll) => poll,
                Err(source) => {
                    metrics.fail(Error::Source { input: input_name.clone(), source });
                    return;
                }
            };
            let now = Instant::now();
            let delivered = !records.is_empty();
            if !records.is_empty() {
                metrics.add_records(records.len() as u64);
                // Every time we give is at least the capability's: the capability sits at the least
                // watermark of the open partitions, and no partition assigns below its watermark.
                let mut session = output.session(&*cap);
                for (index, record) in records.drain(..) {
                    let part = &mut parts[index];
                    part.reach(record.offset);
                    part.last_record = now;
                    let backfill = part.clock.is_backfill(record.offset);
                    if !backfill && !part.clock.live && times.backfill_granularity_ms > 1 {
                        // The first exact time past the boundary: from now on the boundary is
                        // fixed, and that must be on record before the time is used.
                        part.clock.live = true;
                        if let Some(store) = clock_store.as_ref() {
                            if let Err(e) = store.save(&input_name, &owned[index], &part.clock) {
                                metrics.fail(e);
                                return;
                            }
                        }
                    }
                    let bad =
                        |reason: String| BadRecord { partition: owned[index].clone(), offset: record.offset, reason };
                    let decoded = decode(&record).map_err(bad).and_then(|(value, timestamp, diff)| {
                        match part.assigner.check(timestamp, times.max_timestamp_jump_ms) {
                            Ok(()) => Ok((value, timestamp, diff)),
                            Err(e) => Err(BadRecord {
                                partition: owned[index].clone(),
                                offset: record.offset,
                                reason: e.to_string(),
                            }),
                        }
                    });
                    let update = match decoded {
                        Ok((value, timestamp, diff)) => {
                            let time = times.coarsen(part.assigner.assign(timestamp), backfill);
                            if let Some(log) = logs.get_mut(index) {
                                log.fresh.push((value.clone(), time, diff));
                            }
                            (Ok(value), time, diff)
                        }
                        Err(bad) => (Err(bad), times.coarsen(part.assigner.watermark(), backfill), 1),
                    };
                    if let Some(log) = logs.get_mut(index) {
                        log.next_offset = Some(record.offset + 1);
                        log.dirty = true;
                    }
                    if let Some(coverage) = coverage.as_mut() {
                        coverage.record(index, record.offset, update.1);
                    }
                    session.give(update);
                }
                if let Some(coverage) = coverage.as_mut() {
                    coverage.flush();
                }
                if let Some(d) = durable.as_ref() {
                    // Consolidate now and then, so memory follows the state, not the history.
                    let frontier = d.output_frontier.least().min(board.resumable());
                    for log in logs.iter_mut().filter(|l| l.fresh.len() > 2 * l.fresh_compacted + 4_096) {
                        compact(&mut log.fresh, frontier, d.retention);
                        log.fresh_compacted = log.fresh.len();
                    }
                }
            }
            for &index in &finished {
                parts[index].open = false;
            }
            if let Some(skew) = times.max_partition_skew_ms {
                // Side by side in event time (`JobOptions::max_partition_skew_ms`). A hold lasts
                // only while the source keeps delivering: a poll that brought nothing releases
                // every hold, so holding can slow a partition down but never stall the input.
                let least = parts.iter().filter(|p| p.open).map(|p| p.assigner.watermark()).min();
                for (index, part) in parts.iter().enumerate() {
                    let ahead = least.is_some_and(|least| part.assigner.watermark() > least.saturating_add(skew));
                    let hold = delivered && part.open && ahead;
                    if hold != held[index] {
                        reader.hold(index, hold);
                        held[index] = hold;
                    }
                }
            }
            // Caught-up partitions: recorded advances at their position apply; silent ones may
            // advance to the job's greatest watermark, a decision recorded before it is used.
            for (index, part) in parts.iter_mut().enumerate() {
                // Silent for the timeout; while it stays silent, the target is followed: every
                // quarter timeout when each advance is a durable write (a restartable job), at
                // once when decisions live only in this run's memory.
                let follow = if clock_store.is_some() {
                    times.idle_timeout.map_or(Duration::ZERO, |i| i / 4)
                } else {
                    Duration::ZERO
                };
                let silent = times.idle_timeout.is_some_and(|idle| {
                    now.duration_since(part.last_record) >= idle
                        && part.last_advance.is_none_or(|at| now.duration_since(at) >= follow)
                });
                if !part.open || (part.pending.is_empty() && !silent) {
                    continue;
                }
                let Some(position) = reader.caught_up(index) else { continue };
                part.reach(position);
                // The active partitions lead; when none is active, just past the greatest time
                // assigned anywhere (so the last records before a quiet spell complete); before
                // any record at all, nothing.
                let target = match (board.greatest(), board.seen()) {
                    (0, 0) => continue,
                    (0, seen) => seen.saturating_add(1),
                    (greatest, _) => greatest,
                };
                if !silent || target <= part.assigner.watermark() || part.clock.is_backfill(position) {
                    continue;
                }
                part.last_advance = Some(now);
                part.clock.record_advance(position, target);
                if let Some(store) = clock_store.as_ref() {
                    if let Err(e) = store.save(&input_name, &owned[index], &part.clock) {
                        metrics.fail(e);
                        return;
                    }
                }
                tracing::debug!("{} idle at offset {position}: watermark advanced to {target}", owned[index]);
                part.assigner.advance_to(target);
            }
            let least_all = parts.iter().map(|p| p.assigner.watermark()).min().unwrap_or(Time::MAX);
            // Only partitions that are still delivering lead the silent ones: when every
            // partition is quiet there is nothing to follow, and no decision is made.
            let active =
                |p: &&PartitionTime| times.idle_timeout.is_some_and(|idle| now.duration_since(p.last_record) < idle);
            let greatest = parts.iter().filter(active).map(|p| p.assigner.watermark()).max().unwrap_or(0);
            let drained = parts.iter().all(|p| !p.open);
            let seen =
                parts.iter().map(|p| p.assigner.max_seen().unwrap_or(0).max(p.assigner.floor())).max().unwrap_or(0);
            board.post(board_slot, least_all, greatest, drained, seen);
            let least = parts.iter().filter(|p| p.open).map(|p| p.assigner.watermark()).min();
            match least {
                Some(time) => {
                    cap.downgrade(&time);
                    match poll {
                        Poll::Ready => activator.activate(),
                        Poll::Pending => activator.activate_after(BACKOFF),
                    }
                }
                None => {
                    capability = None;
                    if durable.is_some() {
                        activator.activate();
                    }
                }
            }
        }
    })
}

/// Cuts one partition's part of checkpoint `generation` (see [`PartitionLog`]): copies of its
/// chain when nothing arrived since the chain's last part; otherwise the chain's copies and one
/// delta, or a new base. `header` describes the partition now (its update count is filled in).
fn cut_partition<T: differential_dataflow::Data>(
    d: &Durable<T>,
    generation: u64,
    log: &mut PartitionLog<T>,
    mut header: PartHeader,
) {
    let unchanged =
        log.written.as_ref().is_some_and(|w| !log.dirty && w.next_offset == log.next_offset && w.floor == header.floor);
    let extend = log.written.as_ref().is_some_and(|w| {
        w.parts.len() < MAX_CHAIN && log.delta_len + log.fresh.len() <= log.base_len.max(1) && !unchanged
    });
    // The parts of the new chain: what is copied (from where) and what is encoded.
    let mut chain: Vec<(PartName, PartBody)> = Vec::new();
    if unchanged || extend {
        // Nothing arrived since its last part (a finished or silent partition), or little: the
        // chain's parts, compacted at earlier frontiers, restore the same state (compaction only
        // merges times below the frontier, and nothing below it is output again), so they are
        // copied inside the store rather than encoded again.
        let written = log.written.as_ref().expect("checked above");
        let len = (written.parts.len() + usize::from(extend)) as u32;
        for (seq, (name, path)) in written.parts.iter().enumerate() {
            let renamed = PartName { seq: seq as u32, len, ..name.clone() };
            chain.push((renamed, PartBody::CopyOf(path.clone())));
        }
        if extend {
            compact(&mut log.fresh, header.frontier, d.retention);
            header.updates = log.fresh.len() as u64;
            let name = PartName::new(&d.input, &header.partition, header.frontier, len - 1, len);
            chain.push((name, PartBody::Encoded((d.encode)(&header, &log.fresh))));
        }
    } else {
        log.updates.append(&mut log.fresh);
        compact(&mut log.updates, header.frontier, d.retention);
        header.updates = log.updates.len() as u64;
        let name = PartName::new(&d.input, &header.partition, header.frontier, 0, 1);
        chain.push((name, PartBody::Encoded((d.encode)(&header, &log.updates))));
    }
    let mut parts = Vec::with_capacity(chain.len());
    let mut sent = true;
    for (name, body) in chain {
        let rendered = name.render();
        sent = d.writer.send(CutPart { generation, name: rendered.clone(), body });
        if !sent {
            // The generation is skipped (uploads are behind): it is never completed.
            break;
        }
        parts.push((name, d.writer.part_path(generation, &rendered)));
    }
    let fresh = log.fresh.len();
    log.updates.append(&mut log.fresh);
    log.fresh_compacted = 0;
    if !sent {
        // What was cut never reaches the store, so the chain in it no longer ends where this
        // partition's updates do: the next part is a base.
        log.written = None;
        log.dirty = true;
        return;
    }
    if extend {
        log.delta_len += fresh;
    } else if !unchanged {
        log.base_len = log.updates.len();
        log.delta_len = 0;
    }
    log.written = Some(WrittenChain { parts, next_offset: header.next_offset, floor: header.floor });
    log.dirty = false;
}
