//! Pipelines as values.
//!
//! A [`Pipeline`] is everything Kappa needs to run a dataflow that someone wrote once: its name
//! and version (which enter every checkpoint, so that a changed pipeline refuses the state of the
//! old one), the inputs it reads ([`Input`]: a default topic, a decoder and a [`Retention`] each),
//! and a build function from those inputs to one output collection whose rows know their key
//! ([`Keyed`]: what a Kafka key, an upsert or a served view is indexed by).
//!
//! What runs a pipeline knows it only through this trait: [`run`] runs one over given sources into
//! given sinks, a [`Job`] does the same with a builder, and `kappa-runner` gives any set of
//! pipelines the whole `kappa` command. [`DynPipeline`] is the object-safe face of a pipeline, so a
//! list of different pipelines is a `&[&dyn DynPipeline]`.
//!
//! Design and what is left: `papers/notes/20261201-pipeline-api.md`.
//!
//! # Examples
//!
//! ```
//! use kappa_engine::pipeline::{Input, InputInfo, Inputs, Job, Keyed, Pipeline};
//! use kappa_engine::{Collection, MemorySink, MemorySource, Record, Retention};
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
//! fn word(record: &Record) -> Result<(String, u64, isize), std::str::Utf8Error> {
//!     let text = std::str::from_utf8(record.value.as_deref().unwrap_or(b""))?;
//!     Ok((text.to_string(), record.timestamp.unwrap_or(0) as u64, 1))
//! }
//!
//! const WORDS: Input<String, std::str::Utf8Error> =
//!     Input { name: "words", topic: "words", about: "one word per record", decode: word, retention: Retention::Collapse };
//!
//! impl Pipeline for WordCounts {
//!     type Output = WordCount;
//!     fn name(&self) -> &str { "word-counts" }
//!     fn about(&self) -> &str { "per word, how many records carry it" }
//!     fn inputs(&self) -> Vec<InputInfo> { vec![WORDS.info()] }
//!     fn build<'s>(&self, inputs: &mut Inputs<'s, '_>) -> kappa_engine::Result<Collection<'s, WordCount>> {
//!         let words = inputs.read(&WORDS)?;
//!         Ok(words.count().map(|(word, n)| WordCount { word, records: n as u64 }))
//!     }
//! }
//!
//! let sink = MemorySink::new();
//! Job::new(WordCounts)
//!     .source("words", MemorySource::single("words", vec![(1_000, "a"), (2_000, "b"), (3_000, "a")]))
//!     .sink(sink.clone())
//!     .run()
//!     .expect("job runs");
//! let counts: Vec<(String, u64)> = sink.accumulated().into_iter().map(|(c, _)| (c.word, c.records)).collect();
//! assert_eq!(counts, vec![("a".to_string(), 2), ("b".to_string(), 1)]);
//! ```

use std::fmt::Display;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::checkpoint::CheckpointData;
use crate::error::{BoxError, Error, Result};
use crate::runtime::{execute, ClusterConfig, Context, JobOptions, JobReport, Sources};
use crate::sink::Sink;
use crate::source::{Record, SourceFactory};
use crate::time::Time;
use crate::{Collection, Diff, Retention};

/// A row that knows its key: the fields that identify it in a keyed output (a Kafka record's key,
/// an upsert topic's compaction key, a served view's lookup key).
///
/// Two rows with the same key are two versions of one entity (a post's like count before and
/// after a like); an upsert keeps the newest. A row whose every field is key (a set element) keys
/// by itself.
pub trait Keyed {
    /// The key fields, as a JSON value (an object of the key fields, by convention).
    fn key(&self) -> serde_json::Value;
}

/// What a pipeline outputs: ordered (the consistent sink sorts each time's updates), exchangeable
/// between workers, serializable and keyed.
pub trait Row: differential_dataflow::ExchangeData + Ord + Serialize + Keyed {}
impl<T: differential_dataflow::ExchangeData + Ord + Serialize + Keyed> Row for T {}

/// A decoder: a record's value, event timestamp (ms) and difference, or why it is malformed.
pub type Decoder<T, E> = fn(&Record) -> std::result::Result<(T, u64, Diff), E>;

/// One declared input of a pipeline: its name (what sources and `--topic INPUT=TOPIC` call it),
/// the topic it reads by default, and how its records become updates.
///
/// A `const` of this type is the usual way to declare one; [`Inputs::read`] reads it.
pub struct Input<T, E> {
    /// The input's name in the pipeline.
    pub name: &'static str,
    /// The topic it reads unless told otherwise.
    pub topic: &'static str,
    /// One line on what its records are.
    pub about: &'static str,
    /// A record's value, event timestamp (ms) and difference (+1 to add, −1 to retract), or the
    /// reason the record is malformed (handled by the job's bad-record policy).
    pub decode: Decoder<T, E>,
    /// How far back the pipeline looks at this input (how a checkpoint may compact it).
    pub retention: Retention,
}

impl<T, E> Input<T, E> {
    /// What the runner and `kappa pipelines` show of this input.
    pub fn info(&self) -> InputInfo {
        InputInfo {
            name: self.name.to_string(),
            topic: self.topic.to_string(),
            about: self.about.to_string(),
            retention: self.retention,
        }
    }
}

/// An input as the runner sees it, without its types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputInfo {
    /// The input's name in the pipeline.
    pub name: String,
    /// The topic it reads unless told otherwise.
    pub topic: String,
    /// One line on what its records are.
    pub about: String,
    /// How far back the pipeline looks at it.
    pub retention: Retention,
}

/// The declared inputs of a pipeline being built on one worker.
pub struct Inputs<'scope, 'c> {
    ctx: &'c mut Context<'scope>,
    declared: Vec<InputInfo>,
}

impl<'scope> Inputs<'scope, '_> {
    /// Reads a declared input as a collection (checkpointed when the job is restartable).
    pub fn read<T, E>(&mut self, input: &Input<T, E>) -> Result<Collection<'scope, T>>
    where
        T: CheckpointData,
        E: Display + 'static,
    {
        self.check_declared(input.name)?;
        self.ctx.durable_input(input.name, input.decode, input.retention)
    }

    /// Reads a declared input whose values cannot be checkpointed (no abomonation encoding):
    /// such a pipeline runs, but a job of it with a checkpoint is refused
    /// ([`Error::NotCheckpointable`]).
    pub fn read_transient<T, E>(&mut self, input: &Input<T, E>) -> Result<Collection<'scope, T>>
    where
        T: differential_dataflow::Data,
        E: Display + 'static,
    {
        self.check_declared(input.name)?;
        self.ctx.transient_input(input.name, input.decode)
    }

    fn check_declared(&self, name: &str) -> Result<()> {
        if self.declared.iter().any(|d| d.name == name) {
            return Ok(());
        }
        Err(Error::UndeclaredInput {
            name: name.to_string(),
            declared: self.declared.iter().map(|d| d.name.clone()).collect::<Vec<_>>().join(", "),
        })
    }

    /// The timely scope, for pipelines that build operators directly.
    pub fn scope(&self) -> timely::dataflow::Scope<'scope, Time> {
        self.ctx.scope()
    }
}

/// A dataflow written once, that Kappa can run over archives, live topics, or both.
///
/// Implement it on a small `Clone` value (a unit struct, or a struct of parameters); see the
/// [module docs](self) for an example.
pub trait Pipeline: Clone + Send + Sync + 'static {
    /// The output's rows.
    type Output: Row;
    /// Its name: `kappa replay --pipeline NAME`; checkpoints of another name are refused.
    fn name(&self) -> &str;
    /// Its version: raise it whenever a change alters what the pipeline computes or what its
    /// inputs keep, so that a checkpoint of the old version is refused instead of mixed with the
    /// new one.
    fn version(&self) -> u32 {
        1
    }
    /// One line on what it computes.
    fn about(&self) -> &str;
    /// The inputs it reads, each once, in a fixed order.
    fn inputs(&self) -> Vec<InputInfo>;
    /// One line on its output rows and their key.
    fn output_about(&self) -> &str {
        ""
    }
    /// Builds the dataflow on one worker: from its inputs (read through `inputs`) to its output.
    fn build<'s>(&self, inputs: &mut Inputs<'s, '_>) -> Result<Collection<'s, Self::Output>>;
}

/// Runs `pipeline` over `sources` (one per declared input, by input name) into `sink`, until every
/// input ends; see [`execute`]. With a checkpoint, the pipeline's name and version go into it.
pub fn run<P, S>(
    pipeline: &P,
    cluster: &ClusterConfig,
    mut options: JobOptions,
    sources: Sources,
    sink: S,
) -> Result<JobReport>
where
    P: Pipeline,
    S: Sink<P::Output>,
{
    let declared = pipeline.inputs();
    if let Some(missing) = declared.iter().find(|i| !sources.has(&i.name)) {
        return Err(Error::UnknownInput { name: missing.name.clone(), known: sources.names().join(", ") });
    }
    if let Some(checkpoint) = options.checkpoint.as_mut() {
        checkpoint.pipeline = pipeline.name().to_string();
        checkpoint.pipeline_version = pipeline.version();
    }
    let pipeline = pipeline.clone();
    execute(cluster, options, sources, move |ctx| {
        let output = pipeline.build(&mut Inputs { ctx, declared: declared.clone() })?;
        ctx.serve(pipeline.name(), output.clone());
        ctx.output(output, sink.clone());
        Ok(())
    })
}

/// A pipeline run without a command line: sources, a sink, options, then [`run`](Job::run).
pub struct Job<P: Pipeline> {
    pipeline: P,
    sources: Sources,
    sink: Option<BoxedSink<P::Output>>,
    options: JobOptions,
    cluster: ClusterConfig,
}

impl<P: Pipeline> Job<P> {
    /// A job of `pipeline` on one worker, with default options and no inputs yet.
    pub fn new(pipeline: P) -> Self {
        Job {
            pipeline,
            sources: Sources::new(),
            sink: None,
            options: JobOptions::default(),
            cluster: ClusterConfig::threads(1),
        }
    }
    /// Reads input `name` from `source`.
    pub fn source(mut self, name: &str, source: impl SourceFactory + 'static) -> Self {
        self.sources = self.sources.with(name, source);
        self
    }
    /// Reads input `name` from an already shared source.
    pub fn shared_source(mut self, name: &str, source: Arc<dyn SourceFactory>) -> Self {
        self.sources = self.sources.with_shared(name, source);
        self
    }
    /// Writes the output to `sink`.
    pub fn sink(mut self, sink: impl Sink<P::Output>) -> Self {
        self.sink = Some(BoxedSink::new(sink));
        self
    }
    /// The job's options (lateness, checkpoints, bad-record policy, ...).
    pub fn options(mut self, options: JobOptions) -> Self {
        self.options = options;
        self
    }
    /// Where the workers run.
    pub fn cluster(mut self, cluster: ClusterConfig) -> Self {
        self.cluster = cluster;
        self
    }
    /// Runs the job until every input ends (or the first failure).
    pub fn run(self) -> Result<JobReport> {
        let sink = self.sink.ok_or_else(|| Error::NoSink { pipeline: self.pipeline.name().to_string() })?;
        run(&self.pipeline, &self.cluster, self.options, self.sources, sink)
    }
}

/// A pipeline's output row as the runner's outputs take it: the row's JSON and its key's JSON,
/// already encoded (so outputs are chosen at run time, for any pipeline).
#[derive(Clone, Debug)]
pub struct JsonRow {
    /// The key fields, as JSON text; `None` when the sink reads no keys ([`Sink::uses_keys`]).
    pub key: Option<Box<serde_json::value::RawValue>>,
    /// The row, as JSON text.
    pub data: Box<serde_json::value::RawValue>,
}

impl JsonRow {
    /// Encodes `row`, and its key if `with_key`.
    pub fn encode<D: Serialize + Keyed>(row: &D, with_key: bool) -> std::result::Result<Self, serde_json::Error> {
        let key = if with_key { Some(serde_json::value::to_raw_value(&row.key())?) } else { None };
        Ok(JsonRow { key, data: serde_json::value::to_raw_value(row)? })
    }
}

impl Serialize for JsonRow {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.data.serialize(serializer)
    }
}

impl Keyed for JsonRow {
    fn key(&self) -> serde_json::Value {
        self.key.as_ref().and_then(|k| serde_json::from_str(k.get()).ok()).unwrap_or(serde_json::Value::Null)
    }
}

/// The object-safe part of [`Sink`]: what [`BoxedSink`] holds.
trait DynSink<D>: Send {
    fn write(&mut self, time: Time, updates: &[(D, Diff)]) -> std::result::Result<(), BoxError>;
    fn finish(&mut self, upper: Time) -> std::result::Result<(), BoxError>;
    fn advanced(&mut self, upper: Time) -> std::result::Result<(), BoxError>;
    fn rewrites_tail(&self) -> bool;
    fn uses_keys(&self) -> bool;
    fn resume(&mut self) -> std::result::Result<Time, BoxError>;
    fn durable_upper(&self) -> Option<Time>;
    fn partitioned(&self) -> bool;
    fn shard(&self, data: &D) -> u64;
    fn assign(&mut self, writer: Option<usize>, writers: usize) -> std::result::Result<(), BoxError>;
    fn clone_box(&self) -> Box<dyn DynSink<D>>;
}

impl<D, S: Sink<D>> DynSink<D> for S {
    fn write(&mut self, time: Time, updates: &[(D, Diff)]) -> std::result::Result<(), BoxError> {
        Sink::write(self, time, updates)
    }
    fn finish(&mut self, upper: Time) -> std::result::Result<(), BoxError> {
        Sink::finish(self, upper)
    }
    fn advanced(&mut self, upper: Time) -> std::result::Result<(), BoxError> {
        Sink::advanced(self, upper)
    }
    fn rewrites_tail(&self) -> bool {
        Sink::rewrites_tail(self)
    }
    fn uses_keys(&self) -> bool {
        Sink::uses_keys(self)
    }
    fn resume(&mut self) -> std::result::Result<Time, BoxError> {
        Sink::resume(self)
    }
    fn durable_upper(&self) -> Option<Time> {
        Sink::durable_upper(self)
    }
    fn partitioned(&self) -> bool {
        Sink::partitioned(self)
    }
    fn shard(&self, data: &D) -> u64 {
        Sink::shard(self, data)
    }
    fn assign(&mut self, writer: Option<usize>, writers: usize) -> std::result::Result<(), BoxError> {
        Sink::assign(self, writer, writers)
    }
    fn clone_box(&self) -> Box<dyn DynSink<D>> {
        Box::new(self.clone())
    }
}

/// Any sink behind one type, so outputs can be chosen at run time (a registry of output kinds
/// returns these). Clones share the one sink: only worker 0 ever writes to a funnelled sink (see
/// [`crate::sink`]), so the lock is never contended; a partitioned sink's clones each take a sink
/// of their own when assigned ([`Sink::assign`]).
pub struct BoxedSink<D>(Arc<Mutex<Box<dyn DynSink<D>>>>);

impl<D> Clone for BoxedSink<D> {
    fn clone(&self) -> Self {
        BoxedSink(self.0.clone())
    }
}

impl<D: 'static> BoxedSink<D> {
    /// Boxes `sink`.
    pub fn new(sink: impl Sink<D>) -> Self {
        BoxedSink(Arc::new(Mutex::new(Box::new(sink))))
    }
    fn with<R>(&self, f: impl FnOnce(&mut Box<dyn DynSink<D>>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl<D: 'static> Sink<D> for BoxedSink<D> {
    fn write(&mut self, time: Time, updates: &[(D, Diff)]) -> std::result::Result<(), BoxError> {
        self.with(|s| s.write(time, updates))
    }
    fn finish(&mut self, upper: Time) -> std::result::Result<(), BoxError> {
        self.with(|s| s.finish(upper))
    }
    fn advanced(&mut self, upper: Time) -> std::result::Result<(), BoxError> {
        self.with(|s| s.advanced(upper))
    }
    fn rewrites_tail(&self) -> bool {
        self.with(|s| s.rewrites_tail())
    }
    fn uses_keys(&self) -> bool {
        self.with(|s| s.uses_keys())
    }
    fn resume(&mut self) -> std::result::Result<Time, BoxError> {
        self.with(|s| s.resume())
    }
    fn durable_upper(&self) -> Option<Time> {
        self.with(|s| s.durable_upper())
    }
    fn partitioned(&self) -> bool {
        self.with(|s| s.partitioned())
    }
    fn shard(&self, data: &D) -> u64 {
        self.with(|s| s.shard(data))
    }
    fn assign(&mut self, writer: Option<usize>, writers: usize) -> std::result::Result<(), BoxError> {
        let mut own = self.with(|s| s.clone_box());
        own.assign(writer, writers)?;
        self.0 = Arc::new(Mutex::new(own));
        Ok(())
    }
}

/// A sink of [`JsonRow`]s that takes a pipeline's typed rows, encoding each one.
struct Encode<D> {
    inner: BoxedSink<JsonRow>,
    /// Whether the sink reads keys (asked once, on the first write).
    keys: Option<bool>,
    buffer: Vec<(JsonRow, Diff)>,
    _rows: std::marker::PhantomData<fn(D)>,
}

impl<D> Clone for Encode<D> {
    fn clone(&self) -> Self {
        Encode { inner: self.inner.clone(), keys: self.keys, buffer: Vec::new(), _rows: std::marker::PhantomData }
    }
}

impl<D: Serialize + Keyed + 'static> Sink<D> for Encode<D> {
    fn write(&mut self, time: Time, updates: &[(D, Diff)]) -> std::result::Result<(), BoxError> {
        self.buffer.clear();
        let with_key = *self.keys.get_or_insert_with(|| Sink::uses_keys(&self.inner));
        for (row, diff) in updates {
            self.buffer.push((JsonRow::encode(row, with_key)?, *diff));
        }
        Sink::write(&mut self.inner, time, &self.buffer)
    }
    fn finish(&mut self, upper: Time) -> std::result::Result<(), BoxError> {
        Sink::finish(&mut self.inner, upper)
    }
    fn advanced(&mut self, upper: Time) -> std::result::Result<(), BoxError> {
        Sink::advanced(&mut self.inner, upper)
    }
    fn rewrites_tail(&self) -> bool {
        Sink::rewrites_tail(&self.inner)
    }
    fn uses_keys(&self) -> bool {
        Sink::uses_keys(&self.inner)
    }
    fn resume(&mut self) -> std::result::Result<Time, BoxError> {
        Sink::resume(&mut self.inner)
    }
    fn durable_upper(&self) -> Option<Time> {
        Sink::durable_upper(&self.inner)
    }
    fn partitioned(&self) -> bool {
        Sink::partitioned(&self.inner)
    }
    /// Encodes the row to find its shard: a partitioned sink of encoded rows shards by what it
    /// writes (a Kafka sink by the encoded key), so the row is encoded once more to route it.
    fn shard(&self, data: &D) -> u64 {
        match JsonRow::encode(data, true) {
            Ok(row) => Sink::shard(&self.inner, &row),
            // It fails again when written, on its writer, and fails the job there.
            Err(_) => 0,
        }
    }
    fn assign(&mut self, writer: Option<usize>, writers: usize) -> std::result::Result<(), BoxError> {
        Sink::assign(&mut self.inner, writer, writers)
    }
}

/// The object-safe face of a [`Pipeline`], so that a list of different pipelines is a
/// `&[&dyn DynPipeline]`; every `Pipeline` is one.
pub trait DynPipeline: Send + Sync {
    /// [`Pipeline::name`].
    fn name(&self) -> &str;
    /// [`Pipeline::version`].
    fn version(&self) -> u32;
    /// [`Pipeline::about`].
    fn about(&self) -> &str;
    /// [`Pipeline::inputs`].
    fn inputs(&self) -> Vec<InputInfo>;
    /// [`Pipeline::output_about`].
    fn output_about(&self) -> &str;
    /// [`run`], into a sink of encoded rows.
    fn run_json(
        &self,
        cluster: &ClusterConfig,
        options: JobOptions,
        sources: Sources,
        sink: BoxedSink<JsonRow>,
    ) -> Result<JobReport>;
}

impl<P: Pipeline> DynPipeline for P {
    fn name(&self) -> &str {
        Pipeline::name(self)
    }
    fn version(&self) -> u32 {
        Pipeline::version(self)
    }
    fn about(&self) -> &str {
        Pipeline::about(self)
    }
    fn inputs(&self) -> Vec<InputInfo> {
        Pipeline::inputs(self)
    }
    fn output_about(&self) -> &str {
        Pipeline::output_about(self)
    }
    fn run_json(
        &self,
        cluster: &ClusterConfig,
        options: JobOptions,
        sources: Sources,
        sink: BoxedSink<JsonRow>,
    ) -> Result<JobReport> {
        run(
            self,
            cluster,
            options,
            sources,
            Encode { inner: sink, keys: None, buffer: Vec::new(), _rows: std::marker::PhantomData },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use object_store::memory::InMemory;
    use serde::Deserialize;

    use super::*;
    use crate::{CheckpointConfig, Codec, JsonLinesSink, MemorySink, MemorySource};

    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
    struct WordCount {
        word: String,
        records: u64,
    }

    impl Keyed for WordCount {
        fn key(&self) -> serde_json::Value {
            serde_json::json!({ "word": self.word })
        }
    }

    fn word(record: &Record) -> std::result::Result<(String, u64, Diff), std::str::Utf8Error> {
        let text = std::str::from_utf8(record.value.as_deref().unwrap_or(b""))?;
        Ok((text.to_string(), record.timestamp.unwrap_or(0) as u64, 1))
    }

    const WORDS: Input<String, std::str::Utf8Error> = Input {
        name: "words",
        topic: "words",
        about: "one word per record",
        decode: word,
        retention: Retention::Collapse,
    };
    const OTHER: Input<String, std::str::Utf8Error> =
        Input { name: "other", topic: "other", about: "never declared", decode: word, retention: Retention::Collapse };

    /// Word counts at a version; `undeclared` reads an input it does not declare.
    #[derive(Clone)]
    struct WordCounts {
        version: u32,
        undeclared: bool,
    }

    impl Pipeline for WordCounts {
        type Output = WordCount;
        fn name(&self) -> &str {
            "word-counts"
        }
        fn version(&self) -> u32 {
            self.version
        }
        fn about(&self) -> &str {
            "per word, how many records carry it"
        }
        fn inputs(&self) -> Vec<InputInfo> {
            vec![WORDS.info()]
        }
        fn build<'s>(&self, inputs: &mut Inputs<'s, '_>) -> Result<Collection<'s, WordCount>> {
            let words = if self.undeclared { inputs.read(&OTHER)? } else { inputs.read(&WORDS)? };
            Ok(words.count().map(|(word, n)| WordCount { word, records: n as u64 }))
        }
    }

    fn words() -> MemorySource {
        MemorySource::single("words", vec![(1_000, "a"), (2_000, "b"), (3_000, "a")])
    }

    /// Many words, one per poll with a pause after each: a job that lives long enough to checkpoint.
    struct Slow(MemorySource);

    impl SourceFactory for Slow {
        fn partitions(&self) -> std::result::Result<Vec<crate::PartitionId>, BoxError> {
            self.0.partitions()
        }
        fn open(
            &self,
            owned: &[(crate::PartitionId, Option<crate::Offset>)],
        ) -> std::result::Result<Box<dyn crate::PartitionedSource>, BoxError> {
            struct Reader(Box<dyn crate::PartitionedSource>);
            impl crate::PartitionedSource for Reader {
                fn poll(
                    &mut self,
                    out: &mut Vec<(usize, Record)>,
                    finished: &mut Vec<usize>,
                ) -> std::result::Result<crate::Poll, BoxError> {
                    std::thread::sleep(Duration::from_millis(1));
                    self.0.poll(out, finished)
                }
            }
            Ok(Box::new(Reader(self.0.open(owned)?)))
        }
    }

    fn slow_words() -> Slow {
        let words: Vec<(i64, &str)> = (0..300).map(|i| (i * 10, ["a", "b", "c"][i as usize % 3])).collect();
        Slow(MemorySource::single("words", words).with_batch(1))
    }

    fn checkpointed(store: Arc<InMemory>) -> JobOptions {
        JobOptions {
            checkpoint: Some(CheckpointConfig {
                store,
                prefix: object_store::path::Path::from("ckpt"),
                location: "memory:///ckpt".into(),
                every: Duration::from_millis(10),
                // Overwritten by `run` with the pipeline's own name and version.
                pipeline: "whatever".into(),
                pipeline_version: 0,
                fingerprint: String::new(),
                codec: Codec::Postcard,
                keep: 2,
            }),
            ..JobOptions::default()
        }
    }

    #[test]
    fn a_changed_pipeline_version_refuses_the_old_checkpoint_with_a_clear_error() {
        let store = Arc::new(InMemory::new());
        let dir = tempfile::tempdir().expect("tempdir");
        let output = dir.path().join("out.jsonl");
        let job = |version| {
            Job::new(WordCounts { version, undeclared: false })
                .source("words", slow_words())
                .sink(JsonLinesSink::new(Some(output.clone())))
                .options(checkpointed(store.clone()))
                .run()
        };
        assert!(job(1).expect("version 1 runs").checkpoints > 0, "version 1 checkpoints");
        job(1).expect("version 1 runs again from its own checkpoint");
        let error = job(2).expect_err("version 2 must not resume version 1's state").to_string();
        assert!(
            error.contains("version 1 of pipeline `word-counts`") && error.contains("version 2"),
            "the error names both versions: {error}"
        );
        assert!(error.contains("delete the checkpoint location"), "the error says what to do: {error}");
    }

    #[test]
    fn reading_an_undeclared_input_is_an_error_naming_the_declared_ones() {
        let error = Job::new(WordCounts { version: 1, undeclared: true })
            .source("words", words())
            .source("other", words())
            .sink(MemorySink::new())
            .run()
            .expect_err("undeclared input")
            .to_string();
        assert!(error.contains("`other`") && error.contains("(words)"), "{error}");
        let error = Job::new(WordCounts { version: 1, undeclared: false }).sink(MemorySink::new()).run();
        assert!(error.expect_err("no source").to_string().contains("`words`"));
    }

    #[test]
    fn encoded_rows_write_the_same_bytes_as_typed_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (typed, encoded) = (dir.path().join("typed.jsonl"), dir.path().join("encoded.jsonl"));
        let pipeline = WordCounts { version: 1, undeclared: false };
        Job::new(pipeline.clone())
            .source("words", words())
            .sink(JsonLinesSink::new(Some(typed.clone())))
            .run()
            .expect("typed");
        let sink = BoxedSink::new(JsonLinesSink::new(Some(encoded.clone())));
        DynPipeline::run_json(&pipeline, &ClusterConfig::threads(2), JobOptions::default(), words_sources(), sink)
            .expect("encoded");
        let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("output");
        assert_eq!(read(&encoded), read(&typed));
        assert!(read(&typed).contains(r#""data":{"word":"a","records":2}"#), "{}", read(&typed));
        let row = JsonRow::encode(&WordCount { word: "a".into(), records: 2 }, true).expect("encode");
        assert_eq!(row.key(), serde_json::json!({ "word": "a" }));
        let keyless = JsonRow::encode(&WordCount { word: "a".into(), records: 2 }, false).expect("encode");
        assert!(keyless.key.is_none(), "keys are encoded only for sinks that read them");
    }

    /// `-word` retracts one `word`.
    fn signed_word(record: &Record) -> std::result::Result<(String, u64, Diff), std::str::Utf8Error> {
        let (text, ts, _) = word(record)?;
        Ok(match text.strip_prefix('-') {
            Some(word) => (word.to_string(), ts, -1),
            None => (text, ts, 1),
        })
    }

    const SIGNED: Input<String, std::str::Utf8Error> = Input {
        name: "words",
        topic: "words",
        about: "a word, or -word to retract one",
        decode: signed_word,
        retention: Retention::Collapse,
    };

    #[derive(Clone)]
    struct TransientWords;

    impl Pipeline for TransientWords {
        type Output = WordCount;
        fn name(&self) -> &str {
            "transient-words"
        }
        fn about(&self) -> &str {
            "word counts over an input read without checkpoints"
        }
        fn inputs(&self) -> Vec<InputInfo> {
            vec![SIGNED.info()]
        }
        fn build<'s>(&self, inputs: &mut Inputs<'s, '_>) -> Result<Collection<'s, WordCount>> {
            Ok(inputs.read_transient(&SIGNED)?.count().map(|(word, n)| WordCount { word, records: n as u64 }))
        }
    }

    #[test]
    fn a_transient_input_keeps_its_decoders_retractions() {
        let sink = MemorySink::new();
        let source = MemorySource::single("words", vec![(1_000, "a"), (2_000, "a"), (3_000, "-a"), (4_000, "b")]);
        Job::new(TransientWords).source("words", source).sink(sink.clone()).run().expect("runs");
        let counts: Vec<(String, u64)> = sink.accumulated().into_iter().map(|(c, _)| (c.word, c.records)).collect();
        assert_eq!(counts, vec![("a".to_string(), 1), ("b".to_string(), 1)]);
    }

    fn words_sources() -> Sources {
        Sources::new().with("words", words())
    }
}
