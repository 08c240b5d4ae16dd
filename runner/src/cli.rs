//! The `kappa` command over any set of pipelines: `archive write|inspect|verify`, `replay`,
//! `pipelines`, plus whatever extra subcommands the program adds ([`Extra`]).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use clap::{CommandFactory, FromArgMatches};
use kappa_engine::pipeline::DynPipeline;
use kappa_engine::{BadRecordPolicy, JobOptions};

use crate::job::{open_input, output, ClusterArgs, InputSpec};
use crate::progress::{progress, replay_bar, ProgressWatcher, ReplayProgress};

#[derive(Parser)]
#[command(
    name = "kappa",
    version,
    about = "Exact incremental dataflows over a topic's whole history: replay from tiered storage, continue live"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Archive tools.
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// Run a pipeline over a topic archive, optionally continuing live on the broker.
    Replay(Box<ReplayArgs>),
    /// List the pipelines this command runs, with their inputs (default topics) and outputs.
    Pipelines,
}

#[derive(Subcommand)]
enum ArchiveCommand {
    /// Copy every partition of a topic, up to its current end, into an archive; appends only what is new.
    Write {
        /// Kafka bootstrap servers, host:port.
        #[arg(long)]
        brokers: String,
        /// The topic to archive.
        #[arg(long)]
        topic: String,
        /// Archive URL: file:///dir, s3://bucket/prefix (AWS_* environment), or a directory.
        #[arg(long)]
        to: String,
    },
    /// Per partition: segments, offset ranges, timestamps, record counts, codecs, damage (reads every batch).
    Inspect {
        /// Archive URL.
        url: String,
        /// The topic.
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        layout: LayoutArgs,
    },
    /// Read and check every segment; list every damaged object and exit non-zero if there is any.
    Verify {
        /// Archive URL.
        url: String,
        /// The topic.
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        layout: LayoutArgs,
    },
}

/// Which layout an archive has.
#[derive(Args, Clone, Debug, Default)]
struct LayoutArgs {
    /// The archive's layout; detected from its keys when not given.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(kappa_replay::layout::LAYOUTS))]
    layout: Option<String>,
    /// The Tansu cluster to read, when the archive holds several.
    #[arg(long)]
    cluster: Option<String>,
    /// KIP-405 archives: read Kafka's `__remote_log_metadata` topic on these brokers and replay
    /// only uploads whose latest state is COPY_SEGMENT_FINISHED (without it, every upload with a
    /// manifest is a candidate). Either way uploads off the leader-epoch lineage are dropped, and
    /// `inspect` says which rule applied and what it dropped.
    #[arg(long, value_name = "BROKERS")]
    remote_log_metadata: Option<String>,
    /// Iceberg tables: replay a table that may have lost records (rows deleted or upserted,
    /// invalid records dropped) as it is, with a warning, instead of refusing it.
    #[arg(long)]
    allow_lossy_table: bool,
}

impl LayoutArgs {
    fn open(&self, url: &str) -> anyhow::Result<kappa_replay::Archive> {
        crate::job::open_archive(
            url,
            self.layout.as_deref(),
            self.cluster.as_deref(),
            self.remote_log_metadata.as_deref(),
            self.allow_lossy_table,
        )
    }
}

/// The pipelines this process runs, set once by [`main_with`].
static PIPELINES: std::sync::OnceLock<Vec<&'static dyn DynPipeline>> = std::sync::OnceLock::new();

fn pipelines() -> Vec<&'static dyn DynPipeline> {
    PIPELINES.get().cloned().unwrap_or_default()
}

fn pipeline_names() -> Vec<&'static str> {
    pipelines().into_iter().map(|p| p.name()).collect()
}

fn find_pipeline(name: &str) -> anyhow::Result<&'static dyn DynPipeline> {
    pipelines().into_iter().find(|p| p.name() == name).with_context(|| {
        format!("no pipeline `{name}` (known: {}); `kappa pipelines` lists them", pipeline_names().join(", "))
    })
}

/// A subcommand a program adds to the `kappa` command (the shipped binary adds `demo`): its
/// clap definition, and what runs it.
pub struct Extra {
    /// The subcommand, with its arguments.
    pub command: clap::Command,
    /// Runs it from its parsed arguments.
    pub run: fn(&clap::ArgMatches) -> anyhow::Result<()>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OnBadRecord {
    /// Stop with an error naming topic, partition and offset.
    Fail,
    /// Go on; count them and print the count at the end.
    Skip,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CheckpointCodec {
    /// Safe serde encoding.
    Postcard,
    /// A memory copy, behind a checksum.
    Abomonation,
}

#[derive(Args)]
struct ReplayArgs {
    /// The pipeline to run (`kappa pipelines` lists them); optional in a program of one pipeline.
    #[arg(long)]
    pipeline: Option<String>,
    /// The topic an input reads: `TOPIC` for a pipeline with one input, or `INPUT=TOPIC` (repeatable)
    /// to rename any input; inputs not named read the topic of their own name.
    #[arg(long)]
    topic: Vec<String>,
    /// Archive URL to replay first.
    #[arg(long)]
    archive: Option<String>,
    #[command(flatten)]
    layout: LayoutArgs,
    /// After the archive, continue on the broker at each partition's next offset.
    #[arg(long, requires = "brokers")]
    then_live: bool,
    /// Kafka bootstrap servers, host:port.
    #[arg(long)]
    brokers: Option<String>,
    /// Once live and caught up, exit after this long without new records (e.g. 3s, 500ms; a bare
    /// number is seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_idle)]
    exit_when_idle: Option<Duration>,
    /// Where the output goes: a file of JSON lines (default: stdout), or `kafka:TOPIC` on
    /// --brokers (a changelog: one record per update). Kafka output is written exactly once without
    /// broker transactions: each partition's records form a deterministic sequence, sent by the
    /// idempotent producer, and progress records tell a restarted job where to go on
    /// (--kafka-transactions adds transactions).
    ///
    /// `postgres://user@host:port/db[?table=NAME]`: upsert rows into a table (default: the
    /// pipeline's name) keyed by the output's key fields, deleting retracted rows; each run of
    /// completed times is one transaction with the job's row in `kappa_progress`, so a restart
    /// neither repeats nor skips a time. The table is created if missing; one that does not fit the
    /// rows is refused.
    ///
    /// `redis://host:port[/db][?prefix=NAME]`: one hash per key, `NAME:KEY` (default: the
    /// pipeline's name), deleted when its row goes away; each run of completed times is one
    /// MULTI/EXEC with the progress key `kappa-progress:NAME`.
    #[arg(long, value_name = "FILE|kafka:TOPIC|postgres://...|redis://...")]
    output: Option<String>,
    /// With --output kafka:TOPIC: write key -> current row, and a tombstone when a row goes away,
    /// so that a compacted topic is the materialized view.
    #[arg(long)]
    upsert: bool,
    /// With --output kafka:TOPIC: write in Kafka transactions (brokers that implement them; Tansu
    /// 0.6.0 does not). A restart then fences any older run of the job.
    #[arg(long)]
    kafka_transactions: bool,
    /// With --output kafka:TOPIC: the partitions of the output topic when the job creates it (an
    /// existing topic keeps its own). Each worker writes the partitions it owns (partition p on
    /// worker p % --workers), so more partitions than one let more workers write.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    output_partitions: i32,
    /// Make the job restartable: save its state to this location (file:///dir, s3://bucket/prefix)
    /// every --checkpoint-every. Run the same command again after a crash: it goes on from the
    /// latest checkpoint, and the output ends exactly as an uninterrupted run's.
    #[arg(long, value_name = "URL")]
    checkpoint: Option<String>,
    /// How often to checkpoint (e.g. 200ms, 10s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "10s")]
    checkpoint_every: Duration,
    /// How checkpoints encode state: postcard (safe serde) or abomonation (a memory copy, read
    /// back only from bytes kappa wrote, behind a checksum).
    #[arg(long, value_enum, default_value = "postcard")]
    checkpoint_codec: CheckpointCodec,
    /// What to do with malformed records.
    #[arg(long, value_enum, default_value = "fail")]
    on_bad_record: OnBadRecord,
    /// Allowed lateness, ms: how far behind its partition's largest timestamp a record keeps its
    /// own time (a later one is raised to that largest minus the lateness). Every result waits this
    /// long for stragglers: 0, the default, makes results visible as soon as every partition has
    /// moved past them; raise it when records arrive out of order and must keep their own times.
    #[arg(long, default_value_t = kappa_engine::DEFAULT_LATENESS_MS)]
    lateness_ms: u64,
    /// During the backfill, round record times up to this granularity (e.g. 1s, 1m): far more
    /// consolidation, the same final state; live records keep exact times.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    backfill_granularity: Option<Duration>,
    /// Bytes of segments fetched ahead of the dataflow, at most, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    read_ahead_mib: u64,
    /// A live partition that the broker confirms has no more records and that stays silent this
    /// long has its watermark advanced to the job's greatest, so results do not wait for it (the
    /// decision is recorded with the checkpoints; `off`: never). Results of a topic with one silent
    /// partition then arrive within the lateness plus this timeout.
    #[arg(long, value_name = "DURATION|off", value_parser = parse_optional_duration, default_value = "2s")]
    idle_timeout: OptionalDuration,
    /// A record whose timestamp lies further than this ahead of its partition's watermark plus
    /// lateness is malformed (handled by --on-bad-record), so one far-future timestamp cannot pin
    /// the partition's time there.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "365days")]
    max_timestamp_jump: Duration,
    /// While it replays, a partition whose event time runs this far ahead of the slowest of its
    /// worker's partitions waits for them, so the output (and the checkpoints) follow the records
    /// read instead of the slowest partition; record times never depend on it (`off`: read each
    /// partition as fast as it decodes).
    #[arg(long, value_name = "DURATION|off", value_parser = parse_optional_duration, default_value = "10s")]
    max_partition_skew: OptionalDuration,
    /// Serve the output over HTTP on this address (HOST:PORT): point lookups by key, scans in key
    /// order, reads that wait until given Kafka offsets are reflected (`wait_for=TOPIC:P:OFFSET`),
    /// and Server-Sent Events subscriptions; the README's "Serving results" shows each. Each worker
    /// answers for the keys it owns, from the arrangement the job keeps. With --serve the job keeps
    /// serving after its inputs end, until interrupted.
    #[arg(long, value_name = "HOST:PORT")]
    serve: Option<String>,
    /// How much history (in the output's time, ms of event time) served views keep distinct:
    /// reads and subscription resumes may name times this recent.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "60s")]
    serve_retention: Duration,
    /// A subscriber that falls this many updates behind is disconnected, with the time to resume from.
    #[arg(long, value_name = "UPDATES", default_value_t = 100_000)]
    serve_buffer: usize,
    /// In a cluster (--processes N), every process's --serve address, HOST:PORT,..., in process
    /// order: any process then answers any read, forwarding a lookup to the key's owner and reading
    /// scans and subscriptions from every process. Without it a process answers the keys its own
    /// workers own (421 for others).
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',', requires = "serve")]
    serve_peers: Vec<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// A duration flag that can be switched off.
#[derive(Clone, Copy, Debug)]
struct OptionalDuration(Option<Duration>);

fn parse_optional_duration(text: &str) -> Result<OptionalDuration, String> {
    match text {
        "off" | "never" | "none" => Ok(OptionalDuration(None)),
        _ => humantime::parse_duration(text)
            .map(|d| OptionalDuration(Some(d)))
            .map_err(|e| format!("{e}: give a duration such as 2s or 500ms, or `off`")),
    }
}

/// The whole `kappa` command over `pipelines`: parses the process's arguments, runs the
/// subcommand, prints an error as one line with its causes, and returns the exit code.
pub fn main(pipelines: &[&'static dyn DynPipeline]) -> ExitCode {
    main_with(pipelines, Vec::new())
}

/// As [`main`], with extra subcommands.
pub fn main_with(pipelines: &[&'static dyn DynPipeline], extra: Vec<Extra>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let _ = PIPELINES.set(pipelines.to_vec());
    let names = pipeline_names();
    // A program of its own pipelines is named after its binary in help and errors.
    let program = std::env::args_os()
        .next()
        .and_then(|arg0| std::path::Path::new(&arg0).file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "kappa".to_string());
    let mut command = Cli::command().bin_name(program).mut_subcommand("replay", |replay| {
        replay.mut_arg("pipeline", |arg| arg.value_parser(clap::builder::PossibleValuesParser::new(names)))
    });
    for e in &extra {
        command = command.subcommand(e.command.clone());
    }
    let matches = command.get_matches();
    let result = match matches.subcommand() {
        Some((name, args)) if extra.iter().any(|e| e.command.get_name() == name) => {
            let e = extra.iter().find(|e| e.command.get_name() == name).expect("just found");
            (e.run)(args)
        }
        _ => Cli::from_arg_matches(&matches).map_err(anyhow::Error::from).and_then(run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Archive(ArchiveCommand::Write { brokers, topic, to }) => archive_write(&brokers, &topic, &to),
        Command::Archive(ArchiveCommand::Inspect { url, topic, layout }) => archive_inspect(&url, &topic, &layout),
        Command::Archive(ArchiveCommand::Verify { url, topic, layout }) => archive_verify(&url, &topic, &layout),
        Command::Replay(args) => replay(*args),
        Command::Pipelines => {
            list_pipelines();
            Ok(())
        }
    }
}

/// One readable line: the error and its causes.
fn error_chain(error: &anyhow::Error) -> String {
    error.chain().map(|e| e.to_string()).collect::<Vec<_>>().join(": ")
}

fn archive_write(brokers: &str, topic: &str, to: &str) -> anyhow::Result<()> {
    let archive = kappa_replay::Archive::open(to)?;
    let bar = progress(&format!("archiving {topic}"));
    let started = Instant::now();
    let report = crate::job::archive_topic(&archive, brokers, topic, &|n| bar.set_position(n))
        .with_context(|| format!("archiving topic `{topic}` from {brokers} to {to}"))?;
    bar.finish_and_clear();
    for (p, (from, to, segments)) in &report.partitions {
        println!("partition {p}: offsets {from}..{to} in {segments} new segment(s)");
    }
    println!("archived {} records of `{topic}` in {:.1}s", report.records, started.elapsed().as_secs_f64());
    Ok(())
}

fn archive_inspect(url: &str, topic: &str, layout: &LayoutArgs) -> anyhow::Result<()> {
    let archive = layout.open(url)?;
    let summary = kappa_replay::inspect::summarize(&archive, topic)?;
    println!("archive {url} (layout {}), topic `{topic}`", archive.layout.name());
    println!(
        "{:>9} {:>8} {:>12} {:>24} {:>10} {:>8} {:>32} {:>12} {:>8}",
        "partition", "segments", "bytes", "offsets", "records", "control", "timestamps (ms)", "codecs", "damaged"
    );
    for (p, s) in &summary.partitions {
        let offsets = s.offsets.map_or("-".into(), |(a, b)| format!("{a}..{b}"));
        let times = s.timestamps.map_or("-".into(), |(a, b)| format!("{a}..={b}"));
        let codecs = s.codecs.iter().map(|c| c.name()).collect::<Vec<_>>().join(",");
        println!(
            "{p:>9} {:>8} {:>12} {offsets:>24} {:>10} {:>8} {times:>32} {codecs:>12} {:>8}",
            s.segments,
            s.bytes,
            s.records,
            s.control_batches,
            s.damaged.len()
        );
    }
    if let Some(note) = summary.transactions_note() {
        println!("{note}");
    }
    for (p, s) in &summary.partitions {
        for note in &s.notes {
            println!("partition {p}: {note}");
        }
    }
    for (key, reason) in summary.damaged() {
        println!("damaged: {key}: {reason}");
    }
    Ok(())
}

fn archive_verify(url: &str, topic: &str, layout: &LayoutArgs) -> anyhow::Result<()> {
    let archive = layout.open(url)?;
    let summary = kappa_replay::inspect::summarize(&archive, topic)?;
    let segments: usize = summary.partitions.values().map(|p| p.segments).sum();
    let damaged = summary.damaged();
    for (key, reason) in &damaged {
        println!("damaged: {key}: {reason}");
    }
    if damaged.is_empty() {
        println!("ok: {segments} segments of `{topic}` in {url} read and checked, no damage");
        Ok(())
    } else {
        anyhow::bail!("{} of {segments} segments of `{topic}` are damaged (listed above)", damaged.len())
    }
}

/// `kappa pipelines`: each pipeline, its version, inputs and output.
fn list_pipelines() {
    for pipeline in pipelines() {
        println!("{} (version {}): {}", pipeline.name(), pipeline.version(), pipeline.about());
        for input in pipeline.inputs() {
            let retention = match input.retention {
                kappa_engine::Retention::Collapse => "all history".to_string(),
                kappa_engine::Retention::Window { ms } => {
                    format!("the last {}", humantime::format_duration(Duration::from_millis(ms)))
                }
            };
            println!(
                "  input  {:<10} topic `{}`: {} (looks back at {retention})",
                input.name, input.topic, input.about
            );
        }
        println!("  output {}", pipeline.output_about());
    }
}

fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    if args.archive.is_none() && args.brokers.is_none() {
        anyhow::bail!("give --archive URL (and --then-live --brokers HOST:PORT to continue live), or --brokers alone");
    }
    let pipeline = match &args.pipeline {
        Some(name) => find_pipeline(name)?,
        None => match pipelines().as_slice() {
            [only] => *only,
            _ => anyhow::bail!(
                "choose the pipeline to run with --pipeline NAME (known: {}); `kappa pipelines` lists them",
                pipeline_names().join(", ")
            ),
        },
    };
    let declared = pipeline.inputs();
    let topics = topics_of(pipeline.name(), &declared, &args.topic)?;
    let open = |input: &str| -> anyhow::Result<crate::job::OpenedInput> {
        let spec = InputSpec {
            topic: topics[input].clone(),
            archive: args.archive.clone(),
            layout: args.layout.layout.clone(),
            cluster: args.layout.cluster.clone(),
            brokers: args.brokers.clone(),
            then_live: args.then_live,
            exit_when_idle: args.exit_when_idle,
            read_ahead_bytes: Some(args.read_ahead_mib.max(1) << 20),
            remote_log_metadata: args.layout.remote_log_metadata.clone(),
            allow_lossy_table: args.layout.allow_lossy_table,
        };
        open_input(&spec).with_context(|| format!("opening input `{input}` (topic `{}`)", topics[input]))
    };
    let inputs: Vec<_> = declared.iter().map(|i| open(&i.name)).collect::<anyhow::Result<_>>()?;
    let pipeline_name = pipeline.name().to_string();
    let checkpoint = match &args.checkpoint {
        Some(url) => {
            anyhow::ensure!(
                args.output.is_some(),
                "--checkpoint needs --output FILE or --output kafka:TOPIC: a restarted job goes on from the output's \
                 durable progress, which standard output does not keep"
            );
            // Settings that change record times or results: a checkpoint taken under others is refused.
            let fingerprint = format!(
                "lateness_ms={} backfill_granularity_ms={} max_timestamp_jump_ms={} topics={:?}",
                args.lateness_ms,
                args.backfill_granularity.map_or(0, |d| d.as_millis()),
                args.max_timestamp_jump.as_millis(),
                topics
            );
            let codec = match args.checkpoint_codec {
                CheckpointCodec::Postcard => kappa_engine::Codec::Postcard,
                CheckpointCodec::Abomonation => kappa_engine::Codec::Abomonation,
            };
            Some(crate::job::checkpoint_config(url, args.checkpoint_every, &pipeline_name, fingerprint, codec)?)
        }
        None => None,
    };
    let options = JobOptions {
        checkpoint,
        lateness_ms: args.lateness_ms,
        on_bad_record: match args.on_bad_record {
            OnBadRecord::Fail => BadRecordPolicy::Fail,
            OnBadRecord::Skip => BadRecordPolicy::Skip,
        },
        backfill_granularity_ms: args.backfill_granularity.map_or(0, |d| d.as_millis() as u64),
        idle_timeout: args.idle_timeout.0,
        max_timestamp_jump_ms: u64::try_from(args.max_timestamp_jump.as_millis()).unwrap_or(u64::MAX),
        max_partition_skew_ms: args.max_partition_skew.0.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        serve: None,
        ..JobOptions::default()
    };
    let mut options = options;
    if let Some(address) = &args.serve {
        let retention = u64::try_from(args.serve_retention.as_millis()).unwrap_or(u64::MAX);
        let views = kappa_engine::serve::Views::new(retention);
        anyhow::ensure!(
            args.serve_peers.is_empty() || args.serve_peers.len() == args.cluster.processes,
            "--serve-peers lists {} addresses for {} processes: give every process's --serve address, in process order",
            args.serve_peers.len(),
            args.cluster.processes
        );
        let peers = args
            .serve_peers
            .iter()
            .map(|p| if p.starts_with("http://") { p.clone() } else { format!("http://{p}") })
            .collect();
        let settings =
            kappa_serve::Settings { subscriber_buffer: args.serve_buffer.max(1), peers, ..Default::default() };
        let server = kappa_serve::start(address, views.clone(), settings)?;
        // On its own line, for scripts and tests that wait for it.
        eprintln!("serving {pipeline_name} on http://{}", server.address());
        std::mem::forget(server);
        options.serve = Some(views);
    }
    let name = pipeline_name.clone();
    let watcher = match &inputs[0].replay {
        Some(replay) => {
            let totals = ReplayProgress {
                metrics: replay.metrics(),
                total_bytes: replay.total_bytes(),
                partitions: replay.partition_count(),
            };
            replay_bar(&name, &totals, options.metrics.clone())
        }
        None => ProgressWatcher::new(progress(&name), options.metrics.clone()),
    };
    let started = Instant::now();
    let cluster = args.cluster.config();
    let mut sources = kappa_engine::Sources::new();
    for (info, input) in declared.iter().zip(&inputs) {
        sources = sources.with_shared(info.name.clone(), input.source.clone());
    }
    let sink = output(
        args.output.as_deref(),
        args.brokers.as_deref(),
        args.upsert,
        args.kafka_transactions,
        args.output_partitions,
        &pipeline_name,
    )?;
    let report = pipeline.run_json(&cluster, options, sources, sink);
    drop(watcher);
    let report = report.with_context(|| format!("running {} over {:?}", pipeline_name, topics))?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "processed {} records in {seconds:.1}s ({:.0} records/s)",
        report.records,
        report.records as f64 / seconds.max(1e-9)
    );
    if matches!(args.on_bad_record, OnBadRecord::Skip) {
        eprintln!("skipped {} malformed record(s)", report.bad_records);
    }
    if args.checkpoint.is_some() {
        eprintln!("wrote {} checkpoint(s)", report.checkpoints);
    }
    Ok(())
}

/// `--exit-when-idle`: a duration as the other duration flags take it (`3s`, `500ms`), or a bare
/// number of seconds (`3`, `0.5`), as the flag took before.
fn parse_idle(value: &str) -> Result<Duration, String> {
    match value.parse::<f64>() {
        Ok(seconds) => Duration::try_from_secs_f64(seconds).map_err(|e| format!("{value} seconds: {e}")),
        Err(_) => humantime::parse_duration(value).map_err(|e| e.to_string()),
    }
}

/// Which topic each input of `pipeline` reads, from `--topic` values.
fn topics_of(
    pipeline: &str,
    declared: &[kappa_engine::InputInfo],
    given: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let names: Vec<&str> = declared.iter().map(|i| i.name.as_str()).collect();
    let mut topics: std::collections::BTreeMap<String, String> =
        declared.iter().map(|i| (i.name.clone(), i.topic.clone())).collect();
    for value in given {
        match value.split_once('=') {
            Some((input, topic)) => {
                anyhow::ensure!(
                    topics.contains_key(input),
                    "--topic {value}: {pipeline} has no input `{input}` (its inputs: {})",
                    names.join(", ")
                );
                topics.insert(input.to_string(), topic.to_string());
            }
            None if names.len() == 1 => {
                topics.insert(names[0].to_string(), value.clone());
            }
            None => anyhow::bail!(
                "--topic {value}: {pipeline} reads several inputs ({}); name one as INPUT=TOPIC",
                names.join(", ")
            ),
        }
    }
    Ok(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle_of(value: &str) -> Result<Option<Duration>, clap::Error> {
        let args = ["kappa", "replay", "--pipeline", "like-counts", "--brokers", "b:9092", "--exit-when-idle", value];
        match Cli::try_parse_from(args)?.command {
            Command::Replay(replay) => Ok(replay.exit_when_idle),
            _ => unreachable!("a replay command"),
        }
    }

    #[test]
    fn exit_when_idle_takes_durations_and_bare_seconds() {
        assert_eq!(idle_of("3s").expect("parses"), Some(Duration::from_secs(3)));
        assert_eq!(idle_of("500ms").expect("parses"), Some(Duration::from_millis(500)));
        assert_eq!(idle_of("1m 30s").expect("parses"), Some(Duration::from_secs(90)));
        assert_eq!(idle_of("2").expect("parses"), Some(Duration::from_secs(2)));
        assert_eq!(idle_of("0.25").expect("parses"), Some(Duration::from_millis(250)));
        for bad in ["-1", "soon", "3 parsecs"] {
            assert!(idle_of(bad).is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn output_help_does_not_promise_transactions_by_default() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let replay = cli.find_subcommand_mut("replay").expect("replay");
        let output = replay.get_arguments().find(|a| a.get_id() == "output").expect("--output");
        let help = output.get_long_help().or(output.get_help()).expect("help").to_string();
        assert!(help.contains("without") && help.contains("idempotent"), "{help}");
    }
}
