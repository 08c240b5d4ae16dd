//! Consistent sinks.
//!
//! A [`Sink`] sees a timestamp's updates only once the dataflow's frontier has passed that
//! timestamp, and then all of them at once, consolidated and sorted: `(data, diff)` pairs with no
//! data repeated and no zero diff. All updates are routed to one worker (worker 0 of process 0),
//! so the written output is the same byte for byte whatever the number of workers or processes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use differential_dataflow::consolidation::consolidate;
use serde::Serialize;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;

use crate::error::{BoxError, Error};
use crate::runtime::Metrics;
use crate::time::Time;
use crate::{Collection, Diff};

/// Receives a pipeline's output, one completed timestamp at a time.
///
/// Handles are cloned onto every worker, but only worker 0's is ever written to, so resources
/// (files, connections) should be opened lazily, on the first call.
pub trait Sink<D>: Clone + Send + Sync + 'static {
    /// All updates at `time`, consolidated and sorted by data. Called once per time, in time order.
    fn write(&mut self, time: Time, updates: &[(D, Diff)]) -> Result<(), BoxError>;
    /// Called once the frontier is empty: every update has been written.
    fn finish(&mut self) -> Result<(), BoxError> {
        Ok(())
    }
    /// Called when every time before `upper` is complete and written (whether or not it had
    /// updates): for progress reports, latency measurements, durable progress records.
    fn advanced(&mut self, _upper: Time) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Attaches `sink` to `collection` behind the consistency protocol. Returns nothing: completion is
/// tracked by the runtime through `open_sinks`.
pub(crate) fn consistent_sink<D, S>(
    collection: Collection<'_, D>,
    mut sink: S,
    metrics: Arc<Metrics>,
    open_sinks: std::rc::Rc<std::cell::Cell<usize>>,
) where
    D: differential_dataflow::ExchangeData + Ord,
    S: Sink<D>,
{
    open_sinks.set(open_sinks.get() + 1);
    // Only worker 0 ever receives updates (the exchange below); only it may touch the sink, or
    // other workers would open (and truncate) the same file when they finish.
    let writes = collection.inner.scope().index() == 0;
    let mut pending: BTreeMap<Time, Vec<(D, Diff)>> = BTreeMap::new();
    let mut done = false;
    let mut last_upper: Option<Time> = None;
    let route_all_to_worker_zero = Exchange::new(|_update: &(D, Time, Diff)| 0u64);
    collection.inner.sink(route_all_to_worker_zero, "ConsistentSink", move |(input, frontier)| {
        input.for_each(|_time, data| {
            for (d, t, r) in data.drain(..) {
                pending.entry(t).or_default().push((d, r));
            }
        });
        if done || metrics.failed() {
            return;
        }
        while let Some(entry) = pending.first_entry() {
            let time = *entry.key();
            if frontier.less_equal(&time) {
                break;
            }
            let mut updates = entry.remove();
            consolidate(&mut updates);
            if !updates.is_empty() {
                if let Err(source) = sink.write(time, &updates) {
                    metrics.fail(Error::Sink { time, source });
                    return;
                }
            }
        }
        if writes {
            if let Some(&upper) = frontier.frontier().first() {
                if last_upper != Some(upper) {
                    last_upper = Some(upper);
                    if let Err(source) = sink.advanced(upper) {
                        metrics.fail(Error::Sink { time: upper, source });
                        return;
                    }
                }
            }
        }
        if frontier.is_empty() {
            let finished = if writes { sink.finish() } else { Ok(()) };
            if let Err(source) = finished {
                metrics.fail(Error::Sink { time: u64::MAX, source });
            }
            done = true;
            open_sinks.set(open_sinks.get() - 1);
        }
    });
}

/// Writes updates as JSON lines, `{"time":T,"diff":D,"data":{...}}`, to a file or to stdout.
pub struct JsonLinesSink {
    path: Option<PathBuf>,
    writer: Option<std::io::BufWriter<Box<dyn Write + Send + Sync>>>,
}

impl JsonLinesSink {
    /// Writes to `path` (created or truncated on the first write), or to stdout if `None`.
    pub fn new(path: Option<PathBuf>) -> Self {
        JsonLinesSink { path, writer: None }
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
        let writer = self.writer()?;
        for (data, diff) in updates {
            serde_json::to_writer(&mut *writer, &Line { time, diff: *diff, data })?;
            writer.write_all(b"\n")?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), BoxError> {
        // Create the file even when there was no update, so an empty result is visible as such.
        self.writer()?.flush()?;
        Ok(())
    }
}

/// Collects updates in memory, for tests. Clones share the same buffer.
pub struct MemorySink<D> {
    updates: Arc<Mutex<Vec<(D, Time, Diff)>>>,
    finished: Arc<Mutex<bool>>,
}

impl<D> Clone for MemorySink<D> {
    fn clone(&self) -> Self {
        MemorySink { updates: self.updates.clone(), finished: self.finished.clone() }
    }
}

impl<D> Default for MemorySink<D> {
    fn default() -> Self {
        MemorySink { updates: Arc::default(), finished: Arc::default() }
    }
}

impl<D: Clone + Ord> MemorySink<D> {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
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

impl<D: Clone + Send + 'static> Sink<D> for MemorySink<D> {
    fn write(&mut self, time: Time, updates: &[(D, Diff)]) -> Result<(), BoxError> {
        let mut all = self.updates.lock().map_err(|_| "memory sink poisoned")?;
        all.extend(updates.iter().map(|(d, r)| (d.clone(), time, *r)));
        Ok(())
    }

    fn finish(&mut self) -> Result<(), BoxError> {
        *self.finished.lock().map_err(|_| "memory sink poisoned")? = true;
        Ok(())
    }
}
