//! Workers, processes, and running a job.
//!
//! [`execute`] starts timely workers as [`ClusterConfig`] says (threads in this process, or one
//! process of a cluster), builds the pipeline on every worker through a [`Context`], and steps the
//! workers until every sink has seen the empty frontier, or something failed.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timely::dataflow::operators::{Inspect, OkErr};
use timely::dataflow::Scope;
use timely::{CommunicationConfig, WorkerConfig};

use differential_dataflow::AsCollection;

use crate::error::{BadRecord, Error, Result};
use crate::input::partitioned_input;
use crate::sink::{consistent_sink, Sink};
use crate::source::{owner, Record, SourceFactory};
use crate::time::Time;
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
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            lateness_ms: 5_000,
            on_bad_record: BadRecordPolicy::Fail,
            backfill_granularity_ms: 0,
            metrics: Arc::default(),
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
}

/// What a finished job did (counted in this process).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobReport {
    /// Records read from all inputs.
    pub records: u64,
    /// Malformed records skipped under [`BadRecordPolicy::Skip`].
    pub bad_records: u64,
}

/// A pipeline's view of the worker it is being built on.
pub struct Context<'scope> {
    scope: Scope<'scope, Time>,
    sources: Arc<Sources>,
    options: JobOptions,
    open_sinks: Rc<Cell<usize>>,
}

impl<'scope> Context<'scope> {
    /// The timely scope, for pipelines that build operators directly.
    pub fn scope(&self) -> Scope<'scope, Time> {
        self.scope
    }

    /// Reads input `name` as a collection, decoding each record with `decode` into a value and the
    /// event timestamp (ms) from which its dataflow time is derived. Records `decode` rejects
    /// follow the job's [`BadRecordPolicy`].
    pub fn input<T, F>(&mut self, name: &str, decode: F) -> Result<Collection<'scope, T>>
    where
        T: differential_dataflow::Data,
        F: FnMut(&Record) -> Result<(T, u64), String> + 'static,
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
            partitions.into_iter().enumerate().filter(|(i, _)| owner(*i, peers) == index).map(|(_, p)| p).collect();
        let starts: Vec<_> = owned.iter().map(|p| (p.clone(), None)).collect();
        let reader = factory.open(&starts).map_err(wrap)?;
        let metrics = self.options.metrics.clone();
        let times = crate::input::TimePolicy {
            lateness_ms: self.options.lateness_ms,
            backfill_granularity_ms: self.options.backfill_granularity_ms,
        };
        let stream = partitioned_input(self.scope, name, reader, owned, times, decode, metrics);
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

    /// Sends `collection` to `sink`, one completed timestamp at a time (see [`crate::sink`]).
    pub fn output<D, S>(&mut self, collection: Collection<'scope, D>, sink: S)
    where
        D: differential_dataflow::ExchangeData + Ord,
        S: Sink<D>,
    {
        consistent_sink(collection, sink, self.options.metrics.clone(), self.open_sinks.clone());
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
    let sources = Arc::new(sources);
    let worker_metrics = metrics.clone();
    let guards = timely::execute(config, move |worker| {
        let open_sinks = Rc::new(Cell::new(0));
        let built = worker.dataflow::<Time, _, _>(|scope| {
            let mut ctx =
                Context { scope, sources: sources.clone(), options: options.clone(), open_sinks: open_sinks.clone() };
            pipeline(&mut ctx)
        });
        if let Err(error) = built {
            worker_metrics.fail(error);
        }
        while open_sinks.get() > 0 && !worker_metrics.failed() {
            worker.step_or_park(Some(Duration::from_millis(5)));
        }
        if worker_metrics.failed() {
            // Timely would otherwise keep stepping an input that will never complete.
            for dataflow in worker.installed_dataflows() {
                worker.drop_dataflow(dataflow);
            }
        }
    })
    .map_err(|reason| Error::Cluster { reason })?;
    for result in guards.join() {
        if let Err(reason) = result {
            return Err(Error::Worker { reason });
        }
    }
    if let Some(error) = metrics.take_error() {
        return Err(error);
    }
    Ok(JobReport { records: metrics.records(), bad_records: metrics.bad_records() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemorySink, MemorySource};

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
        assert_eq!(report.expect("job runs"), JobReport { records: 4, bad_records: 1 });
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
                let v = std::str::from_utf8(r.value.as_deref().unwrap_or_default()).map_err(|e| e.to_string())?;
                Ok((v.to_string(), r.timestamp.unwrap_or(0) as u64))
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
