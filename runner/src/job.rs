//! Wiring shared by the command line, the demo and the tests.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kappa_connectors::{KafkaSource, KafkaSourceConfig, ReadUntil};
use kappa_engine::SourceFactory;
use kappa_replay::{Archive, Handoff, ReplaySource};

/// Where a job's input comes from.
#[derive(Clone, Debug)]
pub struct InputSpec {
    /// The topic.
    pub topic: String,
    /// Replay this archive first (URL), if any.
    pub archive: Option<String>,
    /// The archive's layout (`kappa`, `tansu`); detected when `None`.
    pub layout: Option<String>,
    /// The Tansu cluster, when the archive holds several.
    pub cluster: Option<String>,
    /// Continue on (or read only from) these brokers, if any.
    pub brokers: Option<String>,
    /// After the archive, continue live on `brokers`.
    pub then_live: bool,
    /// When reading live, stop once caught up and idle this long.
    pub exit_when_idle: Option<Duration>,
    /// Read-ahead byte budget of the replay (default 256 MiB).
    pub read_ahead_bytes: Option<u64>,
    /// For a `kip405` archive: the brokers whose `__remote_log_metadata` topic says which
    /// uploads are valid.
    pub remote_log_metadata: Option<String>,
    /// For an `iceberg` archive: replay a table that may have lost records (with a warning)
    /// instead of refusing it.
    pub allow_lossy_table: bool,
}

/// The topic in which Kafka records the state of every tiered segment.
pub const REMOTE_LOG_METADATA_TOPIC: &str = "__remote_log_metadata";

/// Opens the archive at `url` in `layout` (detected when `None`). With `remote_log_metadata`
/// (brokers), the archive must be KIP-405's, and the brokers' `__remote_log_metadata` topic is read
/// whole first: only the uploads it calls finished are replayed.
pub fn open_archive(
    url: &str,
    layout: Option<&str>,
    cluster: Option<&str>,
    remote_log_metadata: Option<&str>,
    allow_lossy_table: bool,
) -> anyhow::Result<Archive> {
    let mut archive = Archive::open_layout(url, layout, cluster)?;
    if allow_lossy_table {
        archive = archive.allowing_lossy_tables()?;
    }
    let Some(brokers) = remote_log_metadata else { return Ok(archive) };
    if archive.layout.name() != "kip405" {
        anyhow::bail!(
            "--remote-log-metadata applies to KIP-405 archives only; the archive at {url} has layout `{}` (choose \
             --layout kip405 if it is one)",
            archive.layout.name()
        );
    }
    let topic = REMOTE_LOG_METADATA_TOPIC;
    let records = kappa_connectors::kafka::source::read_to_end(brokers, topic, Duration::from_secs(120))
        .with_context(|| format!("reading the remote log metadata from {brokers}"))?;
    let mut metadata = kappa_replay::layout::remote_log_metadata::RemoteLogMetadata::default();
    for (partition, record) in records {
        let Some(value) = record.value else { continue };
        let at = format!("{topic} partition {partition} offset {}", record.offset);
        metadata.apply(&at, &value)?;
    }
    tracing::info!(records = metadata.records, orphan_updates = metadata.orphan_updates, "remote log metadata read");
    let layout = kappa_replay::Kip405Layout { metadata: Some(Arc::new(metadata)) };
    Ok(Archive { layout: Arc::new(layout), ..archive })
}

/// An opened input, with the replay (if any) for its counters.
pub struct OpenedInput {
    /// The source to run the pipeline on.
    pub source: Arc<dyn SourceFactory>,
    /// The archive replay, if the input has one.
    pub replay: Option<ReplaySource>,
    /// When this process switched from archive to live, for handoff inputs.
    pub switched_at: Option<Arc<Mutex<Option<Instant>>>>,
}

/// Opens the input `spec` describes: archive only, broker only, or archive then broker.
pub fn open_input(spec: &InputSpec) -> anyhow::Result<OpenedInput> {
    let until = match spec.exit_when_idle {
        Some(idle) => ReadUntil::Idle(idle),
        None => ReadUntil::Forever,
    };
    match (&spec.archive, &spec.brokers) {
        (Some(url), brokers) => {
            let archive = open_archive(
                url,
                spec.layout.as_deref(),
                spec.cluster.as_deref(),
                spec.remote_log_metadata.as_deref(),
                spec.allow_lossy_table,
            )?;
            let mut replay = ReplaySource::open(archive, &spec.topic)?;
            if let Some(bytes) = spec.read_ahead_bytes {
                replay = replay.with_read_ahead_bytes(bytes);
            }
            if !spec.then_live {
                return Ok(OpenedInput { source: Arc::new(replay.clone()), replay: Some(replay), switched_at: None });
            }
            let brokers = brokers.as_deref().context("--then-live needs --brokers HOST:PORT")?;
            let live = KafkaSource::try_new(KafkaSourceConfig::new(brokers, &spec.topic, until))?;
            let marks = kappa_connectors::kafka::admin::watermarks(brokers, &spec.topic)?;
            let handoff = Handoff::new(replay.clone(), Arc::new(live), &marks)?;
            let switched_at = Some(handoff.switched_at());
            Ok(OpenedInput { source: Arc::new(handoff), replay: Some(replay), switched_at })
        }
        (None, Some(brokers)) => {
            let until =
                if spec.then_live || spec.exit_when_idle.is_some() { until } else { ReadUntil::HighWatermarkAtStart };
            let live = KafkaSource::try_new(KafkaSourceConfig::new(brokers, &spec.topic, until))?;
            Ok(OpenedInput { source: Arc::new(live), replay: None, switched_at: None })
        }
        (None, None) => anyhow::bail!("give --archive URL, --brokers HOST:PORT, or both"),
    }
}

/// Where the workers run, as command-line flags (timely's names).
#[derive(clap::Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Worker threads per process.
    #[arg(long, short = 'w', default_value_t = 1)]
    pub workers: usize,
    /// Processes in the cluster.
    #[arg(long, short = 'n', default_value_t = 1)]
    pub processes: usize,
    /// This process's index, 0..processes.
    #[arg(long, short = 'p', default_value_t = 0)]
    pub process: usize,
    /// File with one host:port line per process.
    #[arg(long, short = 'f')]
    pub hostfile: Option<std::path::PathBuf>,
}

impl ClusterArgs {
    /// The engine's cluster configuration.
    pub fn config(&self) -> kappa_engine::ClusterConfig {
        kappa_engine::ClusterConfig {
            workers: self.workers,
            processes: self.processes,
            process: self.process,
            hostfile: self.hostfile.clone(),
        }
    }
}

/// Opens the output `--output` names: `kafka:TOPIC` (needs brokers), `postgres://...` (a table,
/// `?table=NAME`, by default the pipeline's name), `redis://...` (hashes under `?prefix=NAME`, by
/// default the pipeline's name) or a file path; `None` is stdout. These arms are
/// the registry of output kinds: a new kind is a new arm.
pub fn output<D: serde::Serialize + kappa_engine::Keyed + Send + 'static>(
    spec: Option<&str>,
    brokers: Option<&str>,
    upsert: bool,
    transactional: bool,
    partitions: i32,
    job: &str,
) -> anyhow::Result<kappa_engine::BoxedSink<D>> {
    anyhow::ensure!(
        partitions == 1 || spec.is_some_and(|s| s.starts_with("kafka:")),
        "--output-partitions is for --output kafka:TOPIC"
    );
    if let Some(url) = spec.filter(|s| s.starts_with("postgres://") || s.starts_with("postgresql://")) {
        anyhow::ensure!(!upsert && !transactional, "--upsert and --kafka-transactions are for --output kafka:TOPIC");
        let config = kappa_connectors::PostgresSinkConfig::parse(url, job, job)?;
        return Ok(kappa_engine::BoxedSink::new(kappa_connectors::PostgresSink::<D>::new(
            kappa_connectors::PostgresTable::new(config),
        )));
    }
    if let Some(url) = spec.filter(|s| s.starts_with("redis://") || s.starts_with("rediss://")) {
        anyhow::ensure!(!upsert && !transactional, "--upsert and --kafka-transactions are for --output kafka:TOPIC");
        let config = kappa_connectors::RedisSinkConfig::parse(url, job);
        return Ok(kappa_engine::BoxedSink::new(kappa_connectors::RedisSink::<D>::new(
            kappa_connectors::RedisHashes::new(config),
        )));
    }
    match spec.and_then(|s| s.strip_prefix("kafka:")) {
        Some(topic) => {
            let brokers = brokers.context("--output kafka:TOPIC needs --brokers HOST:PORT")?;
            anyhow::ensure!(!topic.is_empty(), "--output kafka:TOPIC needs a topic name");
            let mut config = kappa_connectors::KafkaSinkConfig::new(brokers, topic);
            config.transactional_id = format!("kappa-{job}-{topic}");
            if upsert {
                config.mode = kappa_connectors::SinkMode::Upsert;
            }
            config.transactional = transactional;
            config.partitions = partitions;
            Ok(kappa_engine::BoxedSink::new(kappa_connectors::KafkaSink::<D>::new(config)))
        }
        None => {
            anyhow::ensure!(
                !upsert && !transactional,
                "--upsert and --kafka-transactions are for --output kafka:TOPIC"
            );
            Ok(kappa_engine::BoxedSink::new(kappa_engine::JsonLinesSink::new(spec.map(std::path::PathBuf::from))))
        }
    }
}

/// The checkpoint settings of a job from its flags: `url` (any archive URL scheme), how often,
/// and what identifies the job (`pipeline`, and `fingerprint`: settings that change results).
pub fn checkpoint_config(
    url: &str,
    every: Duration,
    pipeline: &str,
    fingerprint: String,
    codec: kappa_engine::Codec,
) -> anyhow::Result<kappa_engine::CheckpointConfig> {
    // The pipeline's version is filled in by the engine from the pipeline itself.
    let archive = Archive::open(url).with_context(|| format!("opening checkpoint location {url}"))?;
    anyhow::ensure!(every >= Duration::from_millis(10), "--checkpoint-every must be at least 10ms");
    Ok(kappa_engine::CheckpointConfig {
        store: archive.store,
        prefix: archive.prefix,
        location: url.to_string(),
        every,
        pipeline: pipeline.to_string(),
        pipeline_version: 1,
        fingerprint,
        codec,
        keep: 2,
    })
}

/// Copies every partition of Kafka topic `topic` on `brokers` into `archive`, appending what is
/// new since the archive's end, up to the high watermarks read now: `kappa archive write`.
/// `progress` is called with the number of records copied so far.
pub fn archive_topic(
    archive: &kappa_replay::Archive,
    brokers: &str,
    topic: &str,
    progress: &dyn Fn(u64),
) -> anyhow::Result<kappa_replay::writer::WriteReport> {
    let marks = kappa_connectors::kafka::admin::watermarks(brokers, topic)?;
    let highs = marks.iter().map(|(&p, &(_, high))| (p, high)).collect();
    let source = KafkaSource::try_new(KafkaSourceConfig::new(brokers, topic, ReadUntil::Offsets(highs)))?;
    Ok(kappa_replay::writer::write_archive(archive, topic, &marks, &source, progress)?)
}
