//! The input operator: reads a worker's partitions, stamps deterministic times, holds capabilities.
//!
//! Per activation the operator polls its [`PartitionedSource`] once and, for every record:
//! 1. decodes it with the pipeline's decoder into a value and an event timestamp;
//! 2. assigns the record's time with its partition's [`TimeAssigner`];
//! 3. emits `(Ok(value) | Err(bad record), time, +1)`.
//!
//! It then downgrades its capability to the least watermark among the partitions still open, so
//! the dataflow's frontier passes a time exactly when no owned partition can produce a record at
//! it any more. A finished partition drops out of that minimum; when none is left the capability
//! is released. A source error is recorded and the capability is *kept*: a failed input must never
//! look like a completed one to the sinks.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, Stream};

use crate::checkpoint::{compact, part_object_name, CutPart, PartHeader, Retention, Updates, Writer};
use crate::error::{BadRecord, Error};
use crate::runtime::Metrics;
use crate::source::{PartitionId, PartitionedSource, Poll, Record};
use crate::time::{Time, TimeAssigner};
use crate::Diff;

/// Decoded records and bad ones, as one stream of differential updates.
pub type DecodedStream<'scope, T> = Stream<'scope, Time, Vec<(Result<T, BadRecord>, Time, Diff)>>;

/// How an input turns record timestamps into dataflow times.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimePolicy {
    pub lateness_ms: u64,
    pub backfill_granularity_ms: u64,
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
    /// Per owned partition, the part restored from a checkpoint.
    pub restored: Vec<Option<(PartHeader, Updates<T>)>>,
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
struct PartitionLog<T> {
    next_offset: Option<crate::source::Offset>,
    updates: Vec<(T, Time, Diff)>,
    compacted_len: usize,
}

fn generation(every_ms: u64) -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    now.as_millis() as u64 / every_ms.max(1)
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
) -> DecodedStream<'scope, T>
where
    T: differential_dataflow::Data,
    F: FnMut(&Record) -> Result<(T, u64, Diff), String> + 'static,
{
    let input_name = name.to_string();
    source::<_, CapacityContainerBuilder<Vec<_>>, _, _>(scope, name, move |capability, info| {
        let activator = scope.activator_for(info.address);
        let mut assigners = vec![TimeAssigner::new(times.lateness_ms); owned.len()];
        let mut open = vec![true; owned.len()];
        let mut capability = (!owned.is_empty()).then_some(capability);
        let (mut records, mut finished) = (Vec::new(), Vec::new());
        // Durable inputs: the partitions' logs, and the restored updates still to be emitted.
        let mut durable = durable;
        let mut logs: Vec<PartitionLog<T>> = Vec::new();
        let mut to_restore: Vec<(T, Time, Diff)> = Vec::new();
        let mut last_generation = 0;
        if let Some(d) = durable.as_mut() {
            last_generation = generation(d.every_ms);
            for (index, restored) in std::mem::take(&mut d.restored).into_iter().enumerate() {
                let mut log = PartitionLog { next_offset: None, updates: Vec::new(), compacted_len: 0 };
                if let Some((header, updates)) = restored {
                    assigners[index] = TimeAssigner::resume(times.lateness_ms, header.max_seen);
                    log.next_offset = header.next_offset;
                    to_restore.extend(updates.iter().cloned());
                    log.compacted_len = updates.len();
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
                    let frontier = d.output_frontier.least();
                    for (index, log) in logs.iter_mut().enumerate() {
                        compact(&mut log.updates, frontier, d.retention);
                        log.compacted_len = log.updates.len();
                        let header = PartHeader {
                            input: d.input.clone(),
                            partition: owned[index].clone(),
                            next_offset: log.next_offset,
                            max_seen: assigners[index].max_seen(),
                            frontier,
                            data_type: std::any::type_name::<T>().to_string(),
                            updates: log.updates.len() as u64,
                        };
                        d.writer.send(CutPart {
                            generation: now,
                            name: part_object_name(&d.input, &owned[index], frontier),
                            bytes: (d.encode)(&header, &log.updates),
                        });
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
            if !records.is_empty() {
                metrics.add_records(records.len() as u64);
                // Every time we give is at least the capability's: the capability sits at the least
                // watermark of the open partitions, and no partition assigns below its watermark.
                let backfill = reader.backfilling();
                let mut session = output.session(&*cap);
                for (index, record) in records.drain(..) {
                    let update = match decode(&record) {
                        Ok((value, timestamp, diff)) => {
                            let time = times.coarsen(assigners[index].assign(timestamp), backfill);
                            if let Some(log) = logs.get_mut(index) {
                                log.updates.push((value.clone(), time, diff));
                            }
                            (Ok(value), time, diff)
                        }
                        Err(reason) => {
                            let bad = BadRecord { partition: owned[index].clone(), offset: record.offset, reason };
                            (Err(bad), times.coarsen(assigners[index].watermark(), backfill), 1)
                        }
                    };
                    if let Some(log) = logs.get_mut(index) {
                        log.next_offset = Some(record.offset + 1);
                    }
                    session.give(update);
                }
                if let Some(d) = durable.as_ref() {
                    // Consolidate now and then, so memory follows the state, not the history.
                    for log in logs.iter_mut().filter(|l| l.updates.len() > 2 * l.compacted_len + 4_096) {
                        compact(&mut log.updates, d.output_frontier.least(), d.retention);
                        log.compacted_len = log.updates.len();
                    }
                }
            }
            for &index in &finished {
                open[index] = false;
            }
            let least = (0..owned.len()).filter(|&i| open[i]).map(|i| assigners[i].watermark()).min();
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
