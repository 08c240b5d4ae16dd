//! The watermark board: what each worker knows of every partition's watermark in the job.
//!
//! Two things need to know about partitions a worker does not own:
//! 1. **The resumable frontier** `R`: the least watermark over *every* partition of the job,
//!    finished ones included. A finished partition drops out of the dataflow's frontier (so a
//!    short partition does not hold back a long replay), but a later run over more input gives its
//!    new records times at or after its watermark. So in a restartable job only times below `R`
//!    are final: sinks record durable progress at most up to `R`, checkpoints compact at most up to
//!    `R`, and a sink that cannot take back what it wrote (a Kafka topic) receives nothing at or
//!    after `R` (see [`crate::sink`]).
//! 2. **The greatest watermark of the active partitions** (those that delivered a record within
//!    the idle timeout): the value an idle partition's watermark advances to (see
//!    [`crate::clock`]). When every partition is quiet it is 0.
//! 3. **The greatest time assigned anywhere**: when every partition is quiet, a silent, caught-up
//!    partition advances just past it instead, so the last records before a quiet spell are
//!    complete (and visible) after the idle timeout rather than at the next record.
//!
//! Each worker's input operators post a summary of their own partitions on the board; a reporter
//! operator broadcasts the worker's summary to every worker (through timely, so it works across
//! processes); every worker's board collects the reports. A report is a lower bound of the
//! worker's current state (watermarks only rise), so the board's `R` is always safe to use, only
//! late. When every reporter has sent its last report (all inputs drained) and the broadcast's
//! frontier is empty, the board is *complete* and its `R` is the job's final resumable frontier.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::{source, Operator};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::Scope;

use crate::time::Time;

/// How often a worker reports changes of its summary.
const REPORT_EVERY: Duration = Duration::from_millis(20);

/// One input's partitions on this worker.
#[derive(Clone, Copy, Debug)]
struct Local {
    /// Least watermark over the owned partitions, finished ones included (`Time::MAX`: none).
    least: Time,
    /// Greatest watermark over the owned partitions that are active (0: none).
    greatest: Time,
    /// Whether every owned partition has finished.
    drained: bool,
    /// The greatest time assigned in any owned partition (0: none).
    seen: Time,
}

#[derive(Debug, Default)]
struct State {
    local: Vec<Local>,
    /// Per worker: its last reported (least, greatest, seen).
    reports: BTreeMap<u64, (Time, Time, Time)>,
    peers: usize,
    complete: bool,
    started: bool,
}

/// A worker's board (cheap to clone; clones share it).
#[derive(Clone, Debug, Default)]
pub(crate) struct Board(Rc<RefCell<State>>);

impl Board {
    /// Registers one input operator of this worker; returns its slot.
    pub fn register(&self) -> usize {
        let mut state = self.0.borrow_mut();
        state.local.push(Local { least: 0, greatest: 0, drained: false, seen: 0 });
        state.local.len() - 1
    }

    /// Posts the current summary of one input's owned partitions.
    pub fn post(&self, slot: usize, least: Time, greatest: Time, drained: bool, seen: Time) {
        if let Some(local) = self.0.borrow_mut().local.get_mut(slot) {
            *local = Local { least, greatest, drained, seen };
        }
    }

    fn local_summary(&self) -> (Time, Time, bool, Time) {
        let state = self.0.borrow();
        let least = state.local.iter().map(|l| l.least).min().unwrap_or(Time::MAX);
        let greatest = state.local.iter().map(|l| l.greatest).max().unwrap_or(0);
        let seen = state.local.iter().map(|l| l.seen).max().unwrap_or(0);
        (least, greatest, state.local.iter().all(|l| l.drained), seen)
    }

    /// A lower bound of the least watermark over every partition of the job (0 until every
    /// worker has reported).
    pub fn resumable(&self) -> Time {
        // This worker's own summary is newer than its last report.
        let (least, _, _, _) = self.local_summary();
        let state = self.0.borrow();
        if state.local.is_empty() {
            return Time::MAX;
        }
        if state.reports.len() < state.peers {
            return 0;
        }
        state.reports.values().map(|r| r.0).min().unwrap_or(Time::MAX).min(least)
    }

    /// The greatest watermark known of any active partition of the job (0: none is active).
    pub fn greatest(&self) -> Time {
        let (_, local, _, _) = self.local_summary();
        self.0.borrow().reports.values().map(|r| r.1).max().unwrap_or(0).max(local)
    }

    /// The greatest time known to be assigned in any partition of the job (0: none).
    pub fn seen(&self) -> Time {
        let (_, _, _, local) = self.local_summary();
        self.0.borrow().reports.values().map(|r| r.2).max().unwrap_or(0).max(local)
    }

    /// Whether every worker's last report has arrived: [`resumable`](Self::resumable) is final.
    pub fn complete(&self) -> bool {
        let state = self.0.borrow();
        state.complete || state.local.is_empty()
    }

    /// Builds the reporter and the collector in `scope`, once per worker (at its first input).
    pub fn install(&self, scope: Scope<'_, Time>) {
        if std::mem::replace(&mut self.0.borrow_mut().started, true) {
            return;
        }
        self.0.borrow_mut().peers = scope.peers();
        let worker = scope.index() as u64;
        let board = self.clone();
        let reports = source::<_, CapacityContainerBuilder<Vec<(u64, Time, Time, Time)>>, _, _>(
            scope,
            "WatermarkReports",
            move |capability, info| {
                let activator = scope.activator_for(info.address);
                let mut capability = Some(capability);
                let mut last = None;
                move |output| {
                    let Some(cap) = capability.as_ref() else { return };
                    let (least, greatest, drained, seen) = board.local_summary();
                    if last != Some((least, greatest, seen)) {
                        last = Some((least, greatest, seen));
                        output.session(cap).give((worker, least, greatest, seen));
                    }
                    if drained {
                        // The last report is sent: the collectors' frontier can now become empty.
                        capability = None;
                    } else {
                        activator.activate_after(REPORT_EVERY);
                    }
                }
            },
        );
        let board = self.clone();
        reports.broadcast().sink(Pipeline, "WatermarkBoard", move |(input, frontier)| {
            let mut state = board.0.borrow_mut();
            input.for_each(|_, data| {
                for (worker, least, greatest, seen) in data.drain(..) {
                    // A worker's reports arrive in order: its least only rises; its greatest
                    // active watermark falls to 0 when its partitions go quiet.
                    let entry = state.reports.entry(worker).or_insert((least, greatest, seen));
                    *entry = (entry.0.max(least), greatest, entry.2.max(seen));
                }
            });
            if frontier.is_empty() {
                state.complete = true;
            }
        });
    }
}
