//! A property harness for any pipeline: its output at every completed time equals a plain-Rust
//! batch reference over the records whose time is at most that time.
//!
//! A user hands [`Harness`] three things: the [`Pipeline`], a proptest strategy for each input's
//! history (events per partition, in offset order, and how an event becomes a [`Record`]), and the
//! reference, a function from the events up to a time ([`At`]) to the output rows at that time.
//! The harness then searches, over random histories, every way a Kappa job may meet them:
//!
//! 1. **Archive and live.** Each partition is served from an in-memory archive up to a random
//!    offset (in random segment sizes) and live after it, through the same handoff the replay
//!    command uses ([`split_input`]).
//! 2. **Workers and batching.** 1 to 4 worker threads; live records delivered a random number per
//!    poll.
//! 3. **Time settings.** A lateness and a backfill granularity from the harness's lists: with a
//!    granularity, archived records' times are rounded up, and the reference is evaluated at the
//!    coarse times (the final state must be the same).
//! 4. **Restarts.** With checkpoints, a run that crashes after a random number of records and is
//!    run again, or a run over a prefix of every partition (the archive shorter too) followed by a
//!    run over everything, each into a sink that either takes back its tail (as a file) or receives
//!    only final times (as a Kafka topic). The latter holds the times below the resumable frontier
//!    (the least watermark over every partition; `kappa_engine::sink`): it is checked there, and
//!    must hold nothing later.
//!
//! Record times follow the definition, computed here independently of the engine:
//! [`reference_times`] per partition, rounded up for backfill records, where which records are
//! backfill follows the recorded-boundary rule of `kappa_engine::clock`. The check is then, at
//! every record time (and any time [`Harness::also_at`] adds): the output accumulated up to that
//! time equals the reference's rows, with multiplicities; and no output update falls at any other
//! time. A failure reports the first differing time, the rows only in the output and only in the
//! reference, and the shrunk history with the way it was run; proptest saves the failing seed beside
//! the test (`*.proptest-regressions`), so the next `cargo test` runs it first.
//!
//! Idle-partition advances are off in these runs (`JobOptions::idle_timeout: None`): they are
//! decisions a job records, not functions of the records, and `kappa_engine::clock` tests them.
//!
//! # Examples
//!
//! ```
//! use kappa_proptests::harness::Harness;
//! use kappa_engine::pipeline::{Input, InputInfo, Inputs, Keyed, Pipeline};
//! use kappa_engine::{Collection, Record, Retention};
//! use proptest::prelude::*;
//! use serde::Serialize;
//!
//! /// Per word, how many records carry it.
//! #[derive(Clone)]
//! struct WordCounts;
//!
//! #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
//! struct WordCount { word: String, records: u64 }
//!
//! impl Keyed for WordCount {
//!     fn key(&self) -> serde_json::Value { serde_json::json!({ "word": self.word }) }
//! }
//!
//! /// A word at a time, as a record: the value is the word, the record timestamp its time.
//! fn record(&(ts, ref word): &(u64, String)) -> Record {
//!     Record { offset: 0, timestamp: Some(ts as i64), key: None, value: Some(word.clone().into()) }
//! }
//!
//! fn decode(record: &Record) -> Result<(String, u64, isize), std::str::Utf8Error> {
//!     let word = std::str::from_utf8(record.value.as_deref().unwrap_or(b""))?;
//!     Ok((word.to_string(), record.timestamp.unwrap_or(0) as u64, 1))
//! }
//!
//! const WORDS: Input<String, std::str::Utf8Error> =
//!     Input { name: "words", topic: "words", about: "one word per record", decode, retention: Retention::Collapse };
//!
//! impl Pipeline for WordCounts {
//!     type Output = WordCount;
//!     fn name(&self) -> &str { "word-counts" }
//!     fn about(&self) -> &str { "per word, how many records carry it" }
//!     fn inputs(&self) -> Vec<InputInfo> { vec![WORDS.info()] }
//!     fn build<'s>(&self, inputs: &mut Inputs<'s, '_>) -> kappa_engine::Result<Collection<'s, WordCount>> {
//!         Ok(inputs.read(&WORDS)?.count().map(|(word, n)| WordCount { word, records: n as u64 }))
//!     }
//! }
//!
//! let word = (1_000u64..20_000, prop::sample::select(vec!["a", "b", "c"])).prop_map(|(ts, w)| (ts, w.to_string()));
//! Harness::new(WordCounts)
//!     .input(&WORDS, prop::collection::vec(prop::collection::vec(word, 0..12), 1..3), record)
//!     .reference(|at| {
//!         let mut counts = std::collections::BTreeMap::<String, u64>::new();
//!         for (_, word) in at.events::<(u64, String)>("words") {
//!             *counts.entry(word.clone()).or_default() += 1;
//!         }
//!         counts.into_iter().map(|(word, records)| WordCount { word, records }).collect::<Vec<_>>()
//!     })
//!     .cases(8)
//!     .check();
//! ```

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt::{self, Debug};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use kappa_engine::pipeline::{Input, Pipeline};
use kappa_engine::{
    BadRecordPolicy, CheckpointConfig, ClusterConfig, Codec, Diff, JobOptions, MemorySink, Record, SourceFactory,
    Sources, Time,
};
use object_store::memory::InMemory;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};

use crate::{reference_times, split_input, Crashing, SplitPartition};

/// Partitions per input whose archive split and segment size are drawn independently; further
/// partitions reuse these draws (cyclically).
const LAYOUTS: usize = 8;

/// The property harness for one pipeline; see the [module docs](self).
pub struct Harness<P: Pipeline> {
    pipeline: P,
    inputs: Vec<InputSpec>,
    reference: Option<Reference<P::Output>>,
    also_at: Option<Arc<dyn Fn(Time) -> Vec<Time> + Send + Sync>>,
    lateness: Vec<u64>,
    granularities: Vec<u64>,
    max_workers: usize,
    restarts: bool,
    cases: u32,
    persist: bool,
}

type Reference<D> = Arc<dyn Fn(&At<'_>) -> Vec<D> + Send + Sync>;
type Timestamp = Arc<dyn Fn(&Record) -> Option<u64> + Send + Sync>;

struct InputSpec {
    name: String,
    topic: String,
    strategy: BoxedStrategy<History>,
    /// The decoder's event timestamp, or `None` for a record it rejects.
    timestamp: Timestamp,
}

/// One input's generated history: its events per partition in offset order, and their records.
#[derive(Clone)]
struct History {
    events: Arc<dyn Events>,
    records: Arc<Vec<Vec<Record>>>,
}

impl Debug for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.events.fmt_all(f)
    }
}

/// A history's events without their type, for [`At`] to hand back typed.
trait Events: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn fmt_all(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
    fn fmt_partition(&self, partition: usize, from: usize, to: usize, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}

impl<V: Debug + Send + Sync + 'static> Events for Vec<Vec<V>> {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn fmt_all(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Debug::fmt(self, f)
    }
    fn fmt_partition(&self, partition: usize, from: usize, to: usize, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self[partition][from..to]).finish()
    }
}

/// How a case restarts its job.
#[derive(Clone, Debug)]
enum Restart {
    /// One uninterrupted run, without checkpoints.
    None,
    /// A checkpointed run that crashes once this share (‰) of all records was delivered, then the
    /// same run again.
    Crash { after_per_mille: u16, rewrites_tail: bool, abomonation: bool },
    /// A checkpointed run over this share (‰) of every partition (archiving no more than that),
    /// finished, then a run over everything.
    Grow { prefix_per_mille: u16, rewrites_tail: bool },
}

/// One generated case: the histories and how the job meets them.
#[derive(Clone)]
pub struct Case {
    inputs: Vec<(String, History)>,
    /// Per input, per partition (cyclically): archived share (‰) and records per segment.
    layouts: Vec<Vec<(u16, usize)>>,
    workers: usize,
    batch: usize,
    lateness_ms: u64,
    granularity_ms: u64,
    restart: Restart,
}

/// How one partition is served in a case.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Records.
    len: usize,
    /// Records archived in the final run.
    split: usize,
    segment: usize,
    /// The first run's prefix and archive ([`Restart::Grow`]; else the whole partition and `split`).
    first_len: usize,
    first_split: usize,
}

impl Case {
    fn layout(&self, input: usize, partition: usize) -> Layout {
        let len = self.inputs[input].1.records[partition].len();
        let (share, segment) = self.layouts[input][partition % LAYOUTS];
        let split = len * usize::from(share) / 1000;
        let (first_len, first_split) = match self.restart {
            Restart::Grow { prefix_per_mille, .. } => {
                let prefix = len * usize::from(prefix_per_mille) / 1000;
                (prefix, split.min(prefix))
            }
            _ => (len, split),
        };
        Layout { len, split, segment, first_len, first_split }
    }

    fn total_records(&self) -> usize {
        self.inputs.iter().map(|(_, h)| h.records.iter().map(Vec::len).sum::<usize>()).sum()
    }
}

impl Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} worker(s), {} live record(s) per poll, lateness {} ms, backfill granularity {} ms, restart: {}",
            self.workers,
            self.batch,
            self.lateness_ms,
            self.granularity_ms,
            match &self.restart {
                Restart::None => "none (one run, no checkpoints)".to_string(),
                Restart::Crash { after_per_mille, rewrites_tail, abomonation } => format!(
                    "crash after {} of {} records, then run again (sink {} its tail, {} checkpoints)",
                    self.total_records() * usize::from(*after_per_mille) / 1000,
                    self.total_records(),
                    if *rewrites_tail { "rewrites" } else { "never rewrites" },
                    if *abomonation { "abomonation" } else { "postcard" }
                ),
                Restart::Grow { rewrites_tail, .. } => format!(
                    "a first run over the prefixes marked `|`, then one over everything (sink {} its tail)",
                    if *rewrites_tail { "rewrites" } else { "never rewrites" }
                ),
            }
        )?;
        for (i, (name, history)) in self.inputs.iter().enumerate() {
            for p in 0..history.records.len() {
                let l = self.layout(i, p);
                write!(f, "  {name}/{p}: archived (segments of {}) ", l.segment)?;
                history.events.fmt_partition(p, 0, l.split, f)?;
                write!(f, ", live ")?;
                history.events.fmt_partition(p, l.split, l.len, f)?;
                if matches!(self.restart, Restart::Grow { .. }) {
                    write!(f, "; first run: {} archived, {} in all", l.first_split, l.first_len)?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

/// The events of every input whose time is at most [`At::time`]: what a reference computes from.
pub struct At<'a> {
    time: Time,
    inputs: &'a [Timed<'a>],
}

/// One input's history with each record's time (`None`: rejected by the decoder).
struct Timed<'a> {
    name: &'a str,
    history: &'a History,
    times: Vec<Vec<Option<Time>>>,
}

impl<'a> At<'a> {
    /// The time the reference is asked about.
    pub fn time(&self) -> Time {
        self.time
    }

    /// Input `input`'s events with their times, for those whose time is at most [`time`](At::time)
    /// and that its decoder accepts: partition by partition, in offset order.
    ///
    /// # Panics
    /// If the harness has no input `input`, or its events are not `V`s.
    pub fn timed<V: 'static>(&self, input: &str) -> Vec<(Time, &'a V)> {
        let timed = self.inputs.iter().find(|t| t.name == input).unwrap_or_else(|| {
            let known: Vec<&str> = self.inputs.iter().map(|t| t.name).collect();
            panic!("the reference reads input `{input}`, which the harness was not given (it has {known:?})")
        });
        let events: &'a Vec<Vec<V>> = timed.history.events.as_any().downcast_ref().unwrap_or_else(|| {
            panic!("the reference reads input `{input}` as {} events, which is not the type its strategy generates", {
                std::any::type_name::<V>()
            })
        });
        let mut out = Vec::new();
        for (events, times) in events.iter().zip(&timed.times) {
            for (event, time) in events.iter().zip(times) {
                if let Some(t) = time.filter(|t| *t <= self.time) {
                    out.push((t, event));
                }
            }
        }
        out
    }

    /// Input `input`'s events whose time is at most [`time`](At::time), as [`timed`](At::timed)
    /// gives them, without the times.
    pub fn events<V: 'static>(&self, input: &str) -> Vec<&'a V> {
        self.timed(input).into_iter().map(|(_, v)| v).collect()
    }
}

/// Why a case failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mismatch {
    /// The output accumulated up to `time` differs from the reference at `time`, and at no earlier
    /// time.
    AtTime {
        /// The first time they differ.
        time: Time,
        /// Rows (with their surplus multiplicity) the output has and the reference has not.
        only_in_output: Vec<String>,
        /// Rows (with their surplus multiplicity) the reference has and the output has not.
        only_in_reference: Vec<String>,
    },
    /// The output has an update at a time no record has.
    StrayTime {
        /// The update's time.
        time: Time,
        /// The update.
        update: String,
    },
    /// The job failed, read a wrong number of records, or rejected other records than the decoder.
    Run(String),
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::AtTime { time, only_in_output, only_in_reference } => {
                writeln!(f, "the output accumulated at time {time} differs from the reference (first differing time):")?;
                for row in only_in_output {
                    writeln!(f, "  only in the output:    {row}")?;
                }
                for row in only_in_reference {
                    writeln!(f, "  only in the reference: {row}")?;
                }
                Ok(())
            }
            Mismatch::StrayTime { time, update } => writeln!(
                f,
                "the output has an update at time {time}, where no record's time is (nor any time `also_at` gives): {update}"
            ),
            Mismatch::Run(reason) => writeln!(f, "{reason}"),
        }
    }
}

/// A failed [`Harness::try_check`]: the first mismatch of the shrunk case, and that case.
#[derive(Debug)]
pub struct Failure {
    /// The pipeline's name.
    pub pipeline: String,
    /// What differed.
    pub mismatch: Mismatch,
    /// The shrunk case: histories, archive/live layout, workers, settings, restart.
    pub case: String,
    /// Where proptest saved the failing seed, if it did.
    pub saved_in: Option<String>,
}

impl Failure {
    /// The first time at which output and reference differ, if that is what failed.
    pub fn first_differing_time(&self) -> Option<Time> {
        match self.mismatch {
            Mismatch::AtTime { time, .. } => Some(time),
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "pipeline `{}` differs from its batch reference", self.pipeline)?;
        write!(f, "{}", self.mismatch)?;
        writeln!(f, "shrunk case:\n{}", self.case)?;
        let test = std::thread::current().name().unwrap_or("<this test>").to_string();
        match &self.saved_in {
            Some(file) => writeln!(
                f,
                "the failing seed is saved in {file}: `cargo test {test}` runs it first from now on (commit the file)"
            ),
            None => writeln!(f, "re-run with `cargo test {test}`; raise PROPTEST_CASES to search longer"),
        }
    }
}

impl<P: Pipeline> Harness<P>
where
    P::Output: Debug,
{
    /// A harness for `pipeline`, with no inputs or reference yet; 64 cases unless `PROPTEST_CASES`
    /// says otherwise.
    pub fn new(pipeline: P) -> Self {
        Harness {
            pipeline,
            inputs: Vec::new(),
            reference: None,
            also_at: None,
            lateness: vec![0, 1_000, 5_000],
            granularities: vec![0, 0, 1_000, 7_000],
            max_workers: 4,
            restarts: true,
            cases: 64,
            persist: true,
        }
    }

    /// Generates input `input`'s history with `partitions`: events per partition, in offset order.
    /// `encode` makes an event's record (its offset is set by the harness); the input's decoder
    /// reads it back as the job will.
    pub fn input<T, E, V>(
        mut self,
        input: &Input<T, E>,
        partitions: impl Strategy<Value = Vec<Vec<V>>> + Send + Sync + 'static,
        encode: fn(&V) -> Record,
    ) -> Self
    where
        V: Debug + Send + Sync + 'static,
        T: 'static,
        E: 'static,
    {
        let decode = input.decode;
        let strategy = partitions
            .prop_map(move |events: Vec<Vec<V>>| {
                let records = events
                    .iter()
                    .map(|p| {
                        p.iter().enumerate().map(|(offset, v)| Record { offset: offset as i64, ..encode(v) }).collect()
                    })
                    .collect();
                History { events: Arc::new(events), records: Arc::new(records) }
            })
            .boxed();
        self.inputs.push(InputSpec {
            name: input.name.to_string(),
            topic: input.topic.to_string(),
            strategy,
            timestamp: Arc::new(move |r| decode(r).ok().map(|(_, ts, _)| ts)),
        });
        self
    }

    /// The batch reference: the output rows at [`At::time`], from the events up to that time.
    pub fn reference<F, I>(mut self, reference: F) -> Self
    where
        F: Fn(&At<'_>) -> I + Send + Sync + 'static,
        I: IntoIterator<Item = P::Output>,
    {
        self.reference = Some(Arc::new(move |at| reference(at).into_iter().collect()));
        self
    }

    /// Times besides the records' own at which the output may change, given each record's time: a
    /// window's expiry (`|t| vec![t + WINDOW_MS]`). They are checked too.
    pub fn also_at(mut self, times: impl Fn(Time) -> Vec<Time> + Send + Sync + 'static) -> Self {
        self.also_at = Some(Arc::new(times));
        self
    }

    /// The lateness settings to draw from (default 0, 1 s, 5 s).
    pub fn lateness(mut self, lateness_ms: impl IntoIterator<Item = u64>) -> Self {
        self.lateness = lateness_ms.into_iter().collect();
        self
    }

    /// The backfill granularities to draw from (default 0 twice, 1 s, 7 s; 0 is exact times).
    pub fn granularities(mut self, granularity_ms: impl IntoIterator<Item = u64>) -> Self {
        self.granularities = granularity_ms.into_iter().collect();
        self
    }

    /// The most worker threads a case runs on (default 4).
    pub fn max_workers(mut self, workers: usize) -> Self {
        self.max_workers = workers.max(1);
        self
    }

    /// Whether cases crash and restart from checkpoints (default yes). A pipeline whose inputs
    /// cannot be checkpointed (read with `read_transient`) must turn this off.
    pub fn restarts(mut self, restarts: bool) -> Self {
        self.restarts = restarts;
        self
    }

    /// How many cases to run unless `PROPTEST_CASES` is set.
    pub fn cases(mut self, cases: u32) -> Self {
        self.cases = cases;
        self
    }

    /// Whether a failing seed is saved beside the calling test (default yes; off for tests that
    /// expect a failure).
    pub fn persist_failures(mut self, persist: bool) -> Self {
        self.persist = persist;
        self
    }

    /// Runs the search; panics with the [`Failure`] if a case fails.
    #[track_caller]
    pub fn check(self) {
        let source = std::panic::Location::caller().file();
        if let Err(failure) = self.search(source) {
            panic!("{failure}");
        }
    }

    /// Runs the search; returns the shrunk failure instead of panicking.
    #[track_caller]
    pub fn try_check(self) -> Result<(), Box<Failure>> {
        let source = std::panic::Location::caller().file();
        self.search(source)
    }

    fn search(self, source_file: &'static str) -> Result<(), Box<Failure>> {
        assert!(!self.inputs.is_empty(), "the harness has no input: add one with `.input(..)`");
        let declared = self.pipeline.inputs();
        for d in &declared {
            assert!(
                self.inputs.iter().any(|i| i.name == d.name),
                "pipeline `{}` reads input `{}`: give the harness a strategy for it with `.input(..)`",
                self.pipeline.name(),
                d.name
            );
        }
        assert!(self.reference.is_some(), "the harness has no reference: add one with `.reference(..)`");
        let from_env = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok());
        let config = Config {
            cases: from_env.unwrap_or(self.cases),
            source_file: Some(source_file),
            failure_persistence: if self.persist {
                Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions")))
            } else {
                None
            },
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let strategy = self.strategy();
        let result = runner.run(&strategy, |case| self.run_case(&case).map_err(|m| TestCaseError::fail(m.to_string())));
        match result {
            Ok(()) => Ok(()),
            Err(TestError::Abort(reason)) => panic!("the property search gave up: {reason}"),
            Err(TestError::Fail(reason, case)) => {
                // The shrunk case fails deterministically; run it once more for the structured mismatch.
                let mismatch = self.run_case(&case).err().unwrap_or(Mismatch::Run(reason.message().to_string()));
                let saved_in = self.persist.then(|| {
                    let path = std::path::Path::new(source_file).with_extension("proptest-regressions");
                    path.display().to_string()
                });
                Err(Box::new(Failure {
                    pipeline: self.pipeline.name().to_string(),
                    mismatch,
                    case: format!("{case:?}"),
                    saved_in,
                }))
            }
        }
    }

    fn strategy(&self) -> impl Strategy<Value = Case> {
        let names: Vec<String> = self.inputs.iter().map(|i| i.name.clone()).collect();
        let histories: Vec<BoxedStrategy<History>> = self.inputs.iter().map(|i| i.strategy.clone()).collect();
        let layouts =
            prop::collection::vec(prop::collection::vec((0u16..=1000, 1usize..8), LAYOUTS), self.inputs.len());
        let restart = if self.restarts {
            prop_oneof![
                5 => Just(Restart::None),
                3 => (0u16..1000, any::<bool>(), any::<bool>()).prop_map(|(after_per_mille, rewrites_tail, abomonation)| {
                    Restart::Crash { after_per_mille, rewrites_tail, abomonation }
                }),
                2 => (0u16..=1000, any::<bool>())
                    .prop_map(|(prefix_per_mille, rewrites_tail)| Restart::Grow { prefix_per_mille, rewrites_tail }),
            ]
            .boxed()
        } else {
            Just(Restart::None).boxed()
        };
        (
            histories,
            layouts,
            1..=self.max_workers,
            1usize..10,
            prop::sample::select(self.lateness.clone()),
            prop::sample::select(self.granularities.clone()),
            restart,
        )
            .prop_map(move |(histories, layouts, workers, batch, lateness_ms, granularity_ms, restart)| Case {
                inputs: names.iter().cloned().zip(histories).collect(),
                layouts,
                workers,
                batch,
                lateness_ms,
                granularity_ms,
                restart,
            })
    }

    /// Every record's time by the definition (`None`: the decoder rejects it), per input.
    fn times(&self, case: &Case) -> Vec<Vec<Vec<Option<Time>>>> {
        let g = case.granularity_ms;
        let restart_grows = matches!(case.restart, Restart::Grow { .. });
        self.inputs
            .iter()
            .zip(&case.inputs)
            .enumerate()
            .map(|(i, (spec, (_, history)))| {
                let layouts: Vec<Layout> = (0..history.records.len()).map(|p| case.layout(i, p)).collect();
                // A run whose input has no archived record at all reads it live only: no boundary.
                let archived = |split: fn(&Layout) -> usize| layouts.iter().any(|l| split(l) > 0);
                let (first_archived, last_archived) = (archived(|l| l.first_split), archived(|l| l.split));
                history
                    .records
                    .iter()
                    .zip(&layouts)
                    .map(|(records, l)| {
                        let boundary = self::boundary(restart_grows, g, l, first_archived, last_archived);
                        let stamps: Vec<Option<u64>> = records.iter().map(|r| (spec.timestamp)(r)).collect();
                        let good: Vec<u64> = stamps.iter().flatten().copied().collect();
                        let mut times = reference_times(&good, case.lateness_ms).into_iter();
                        stamps
                            .iter()
                            .enumerate()
                            .map(|(offset, ts)| {
                                ts.map(|_| {
                                    let t = times.next().expect("one time per accepted record");
                                    if g > 1 && boundary.is_some_and(|end| offset < end) {
                                        t.div_ceil(g) * g
                                    } else {
                                        t
                                    }
                                })
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }

    fn sources(&self, case: &Case, first: bool, crash: Option<&Arc<AtomicI64>>) -> Sources {
        let mut sources = Sources::new();
        for (i, (spec, (_, history))) in self.inputs.iter().zip(&case.inputs).enumerate() {
            let parts: Vec<SplitPartition> = history
                .records
                .iter()
                .enumerate()
                .map(|(p, records)| {
                    let l = case.layout(i, p);
                    let (len, split) = if first { (l.first_len, l.first_split) } else { (l.len, l.split) };
                    SplitPartition { records: records[..len].to_vec(), split, segment: l.segment }
                })
                .collect();
            let input = split_input(&spec.topic, &parts, case.batch);
            let input: Arc<dyn SourceFactory> = match crash {
                Some(left) => Arc::new(Crashing::new(input, left.clone()).slow(Duration::from_millis(1))),
                None => input,
            };
            sources = sources.with_shared(spec.name.clone(), input);
        }
        sources
    }

    fn run_case(&self, case: &Case) -> Result<(), Mismatch> {
        let times = self.times(case);
        let total = case.total_records() as u64;
        let rejected = times.iter().flatten().flatten().filter(|t| t.is_none()).count() as u64;
        let cluster = ClusterConfig::threads(case.workers);
        let options = |checkpoint: Option<CheckpointConfig>| JobOptions {
            lateness_ms: case.lateness_ms,
            backfill_granularity_ms: case.granularity_ms,
            on_bad_record: BadRecordPolicy::Skip,
            idle_timeout: None,
            checkpoint,
            ..JobOptions::default()
        };
        let run_failed = |what: &str, e: kappa_engine::Error| Mismatch::Run(format!("{what} failed: {}", chain(&e)));
        let checkpoint = |abomonation: bool| CheckpointConfig {
            store: Arc::new(InMemory::new()),
            prefix: object_store::path::Path::from("harness"),
            location: "memory:///harness".into(),
            every: Duration::from_millis(5),
            // `pipeline::run` sets both from the pipeline.
            pipeline: String::new(),
            pipeline_version: 0,
            fingerprint: format!("lateness={} granularity={}", case.lateness_ms, case.granularity_ms),
            codec: if abomonation { Codec::Abomonation } else { Codec::Postcard },
            keep: 2,
        };
        let run = |sources, options, sink: &MemorySink<P::Output>| {
            kappa_engine::pipeline::run(&self.pipeline, &cluster, options, sources, sink.clone())
        };
        let sink = match case.restart {
            Restart::None => {
                let sink = MemorySink::new();
                let report =
                    run(self.sources(case, false, None), options(None), &sink).map_err(|e| run_failed("the run", e))?;
                if report.records != total {
                    return Err(Mismatch::Run(format!("the job read {} records of {total}", report.records)));
                }
                if report.bad_records != rejected {
                    return Err(Mismatch::Run(format!(
                        "the job rejected {} records where the decoder rejects {rejected}: a timestamp the engine \
                         refuses (beyond JobOptions::max_timestamp_jump_ms of its partition's watermark, or past year \
                         9999)? keep generated timestamps within those bounds",
                        report.bad_records
                    )));
                }
                sink
            }
            Restart::Crash { after_per_mille, rewrites_tail, abomonation } => {
                let sink = MemorySink::restartable(rewrites_tail);
                let checkpoint = checkpoint(abomonation);
                let left = Arc::new(AtomicI64::new((total as i64) * i64::from(after_per_mille) / 1000));
                match run(self.sources(case, false, Some(&left)), options(Some(checkpoint.clone())), &sink) {
                    Ok(_) => {}
                    Err(e) if chain(&e).contains(crate::CRASH) => {}
                    Err(e) => return Err(run_failed("the run to crash", e)),
                }
                run(self.sources(case, false, None), options(Some(checkpoint)), &sink)
                    .map_err(|e| run_failed("the run after the crash", e))?;
                sink
            }
            Restart::Grow { rewrites_tail, .. } => {
                let sink = MemorySink::restartable(rewrites_tail);
                let checkpoint = checkpoint(false);
                run(self.sources(case, true, None), options(Some(checkpoint.clone())), &sink)
                    .map_err(|e| run_failed("the run over the prefixes", e))?;
                run(self.sources(case, false, None), options(Some(checkpoint)), &sink)
                    .map_err(|e| run_failed("the run over everything", e))?;
                sink
            }
        };
        if !sink.is_finished() {
            return Err(Mismatch::Run("the job ended without finishing its sink".into()));
        }
        // A restartable job hands a sink that cannot take back its tail only final times: those
        // below the resumable frontier, which a later run over more input cannot change.
        let final_below = match case.restart {
            Restart::Crash { rewrites_tail: false, .. } | Restart::Grow { rewrites_tail: false, .. } => {
                Some(self.resumable_frontier(case))
            }
            _ => None,
        };
        self.compare(case, &times, sink.updates(), final_below)
    }

    /// The resumable frontier by the definition: the least watermark over every partition of
    /// every input (its largest accepted timestamp minus the lateness; 0 with none).
    fn resumable_frontier(&self, case: &Case) -> Time {
        let mut least = Time::MAX;
        for (spec, (_, history)) in self.inputs.iter().zip(&case.inputs) {
            for records in history.records.iter() {
                let largest = records.iter().filter_map(|r| (spec.timestamp)(r)).max();
                least = least.min(largest.map_or(0, |ts| ts.saturating_sub(case.lateness_ms)));
            }
        }
        least
    }

    /// Checks the output at every time that matters, below `final_below` if given (the times a
    /// sink that never takes back its tail holds).
    fn compare(
        &self,
        case: &Case,
        times: &[Vec<Vec<Option<Time>>>],
        mut updates: Vec<(P::Output, Time, Diff)>,
        final_below: Option<Time>,
    ) -> Result<(), Mismatch> {
        let mut check: Vec<Time> = times.iter().flatten().flatten().flatten().copied().collect();
        if let Some(also) = &self.also_at {
            let more: Vec<Time> = check.iter().flat_map(|&t| also(t)).collect();
            check.extend(more);
        }
        check.sort_unstable();
        check.dedup();
        updates.sort_by_key(|u| u.1);
        if let Some(r) = final_below {
            if let Some((row, time, _)) = updates.iter().find(|u| u.1 >= r) {
                return Err(Mismatch::Run(format!(
                    "a sink that cannot take back its tail received {row:?} at time {time}, at or after the \
                     resumable frontier {r}: a later run over more input could still change that time"
                )));
            }
            check.retain(|&t| t < r);
        }
        if let Some((row, time, diff)) = updates.iter().find(|u| check.binary_search(&u.1).is_err()) {
            return Err(Mismatch::StrayTime { time: *time, update: format!("{row:?} with diff {diff}") });
        }
        let timed: Vec<Timed<'_>> = case
            .inputs
            .iter()
            .zip(times)
            .map(|((name, history), times)| Timed { name, history, times: times.clone() })
            .collect();
        let reference = self.reference.as_ref().expect("checked in search");
        let mut accumulated: BTreeMap<&P::Output, Diff> = BTreeMap::new();
        let mut next = updates.iter().peekable();
        for &t in &check {
            while let Some((row, _, diff)) = next.next_if(|u| u.1 <= t) {
                let n = accumulated.entry(row).or_default();
                *n += diff;
                if *n == 0 {
                    accumulated.remove(row);
                }
            }
            let mut expected: BTreeMap<P::Output, Diff> = BTreeMap::new();
            for row in reference(&At { time: t, inputs: &timed }) {
                *expected.entry(row).or_default() += 1;
            }
            let mut only_in_output = Vec::new();
            let mut only_in_reference = Vec::new();
            for (row, &n) in &accumulated {
                let e = expected.get(*row).copied().unwrap_or(0);
                if n > e {
                    only_in_output.push(multiplicity(row, n - e));
                } else if n < e {
                    only_in_reference.push(multiplicity(row, e - n));
                }
            }
            for (row, &e) in &expected {
                if !accumulated.contains_key(row) {
                    only_in_reference.push(multiplicity(row, e));
                }
            }
            if !only_in_output.is_empty() || !only_in_reference.is_empty() {
                return Err(Mismatch::AtTime { time: t, only_in_output, only_in_reference });
            }
        }
        Ok(())
    }
}

/// Where a partition's backfill ends, as `kappa_engine::clock` records and keeps it: a run with
/// an archive records its archive end, unless it has no archived record of the input at all; a
/// later run keeps the recorded end once an earlier run read a record past it with its exact time
/// (only with a granularity is that recorded), and may otherwise move it forward.
fn boundary(grows: bool, granularity_ms: u64, l: &Layout, first_archived: bool, last_archived: bool) -> Option<usize> {
    let last = last_archived.then_some(l.split);
    if !grows {
        return last;
    }
    let first = first_archived.then_some(l.first_split);
    let read_past = granularity_ms > 1 && l.first_len > first.unwrap_or(0);
    if read_past {
        first
    } else {
        first.max(last)
    }
}

fn multiplicity(row: &impl Debug, n: Diff) -> String {
    if n == 1 {
        format!("{row:?}")
    } else {
        format!("{row:?} ×{n}")
    }
}

/// An error with its causes, as one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
