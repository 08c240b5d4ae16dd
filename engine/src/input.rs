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

use std::sync::Arc;
use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, Stream};

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

/// Builds the input operator for one worker over the partitions it `owned`.
pub(crate) fn partitioned_input<'scope, T, F>(
    scope: Scope<'scope, Time>,
    name: &str,
    mut reader: Box<dyn PartitionedSource>,
    owned: Vec<PartitionId>,
    times: TimePolicy,
    mut decode: F,
    metrics: Arc<Metrics>,
) -> DecodedStream<'scope, T>
where
    T: Clone + 'static,
    F: FnMut(&Record) -> Result<(T, u64), String> + 'static,
{
    let input_name = name.to_string();
    source::<_, CapacityContainerBuilder<Vec<_>>, _, _>(scope, name, move |capability, info| {
        let activator = scope.activator_for(info.address);
        let mut assigners = vec![TimeAssigner::new(times.lateness_ms); owned.len()];
        let mut open = vec![true; owned.len()];
        let mut capability = (!owned.is_empty()).then_some(capability);
        let (mut records, mut finished) = (Vec::new(), Vec::new());
        move |output| {
            let Some(cap) = capability.as_mut() else {
                return;
            };
            if metrics.failed() {
                return;
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
                        Ok((value, timestamp)) => {
                            (Ok(value), times.coarsen(assigners[index].assign(timestamp), backfill), 1)
                        }
                        Err(reason) => {
                            let bad = BadRecord { partition: owned[index].clone(), offset: record.offset, reason };
                            (Err(bad), times.coarsen(assigners[index].watermark(), backfill), 1)
                        }
                    };
                    session.give(update);
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
                None => capability = None,
            }
        }
    })
}
