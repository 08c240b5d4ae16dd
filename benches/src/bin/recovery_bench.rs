//! Recovery: a like-counts job over a long archived history crashes near its end; restarting it
//! from its latest checkpoint is compared with replaying the whole history. Also: checkpoint size
//! and write time as the state grows, and the two checkpoint codecs (postcard, abomonation).
//!
//! Each job runs in its own process (this binary with `--phase`), so peak memory is its own.
//!
//! Run with: `cargo run --release -p kappa-benches --bin recovery_bench -- --records 10000000 \
//!   --out papers/results/recovery.md` (`scripts/bench` runs it).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use kappa_engine::checkpoint::{decode_part, encode_part, PartHeader};
use kappa_engine::{
    BoxError, ClusterConfig, Codec, JobOptions, JsonLinesSink, Offset, PartitionId, PartitionedSource, Poll, Record,
    SourceFactory,
};
use kappa_examples::like_counts;
use kappa_runner::job::{checkpoint_config, open_input, InputSpec};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Args {
    /// Like events in the history.
    #[arg(long, default_value_t = 10_000_000)]
    records: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Checkpoint interval.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    every: Duration,
    /// Markdown file to write.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the archives, checkpoints and outputs in this directory (for profiling a phase)
    /// instead of a temporary one.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Internal: run one phase (JSON) and print its outcome.
    #[arg(long, hide = true)]
    phase: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Phase {
    archive: String,
    output: String,
    checkpoint: Option<String>,
    every_ms: u64,
    codec: String,
    /// Crash (the source fails) after this many records.
    crash_after: Option<i64>,
    /// `JobOptions::max_partition_skew_ms` (absent: the default).
    #[serde(default = "default_skew")]
    skew_ms: Option<u64>,
}

fn default_skew() -> Option<u64> {
    Some(kappa_engine::DEFAULT_MAX_PARTITION_SKEW_MS)
}

#[derive(Serialize, Deserialize, Debug)]
struct Outcome {
    seconds: f64,
    records: u64,
    checkpoints: u64,
    peak_rss_bytes: u64,
    crashed: bool,
    /// Bytes of parts encoded (not copies), and checkpoint generations cut.
    #[serde(default)]
    checkpoint_bytes: u64,
    #[serde(default)]
    checkpoint_cuts: u64,
}

/// A source that fails after a number of records: the crash.
struct Crashing {
    inner: Arc<dyn SourceFactory>,
    left: Arc<AtomicI64>,
}

struct CrashingReader {
    inner: Box<dyn PartitionedSource>,
    left: Arc<AtomicI64>,
}

impl SourceFactory for Crashing {
    fn partitions(&self) -> Result<Vec<PartitionId>, BoxError> {
        self.inner.partitions()
    }
    fn open(&self, owned: &[(PartitionId, Option<Offset>)]) -> Result<Box<dyn PartitionedSource>, BoxError> {
        Ok(Box::new(CrashingReader { inner: self.inner.open(owned)?, left: self.left.clone() }))
    }
    fn backfill_end(&self, partition: &PartitionId) -> Option<Offset> {
        self.inner.backfill_end(partition)
    }
}

impl PartitionedSource for CrashingReader {
    fn poll(&mut self, out: &mut Vec<(usize, Record)>, finished: &mut Vec<usize>) -> Result<Poll, BoxError> {
        if self.left.load(Ordering::Relaxed) <= 0 {
            return Err("crash".into());
        }
        let before = out.len();
        let poll = self.inner.poll(out, finished)?;
        // Deliver exactly up to the crash point; the rest of the batch dies with the process.
        let left = self.left.load(Ordering::Relaxed).max(0) as usize;
        out.truncate(before + left.min(out.len() - before));
        self.left.fetch_sub((out.len() - before) as i64, Ordering::Relaxed);
        Ok(poll)
    }
    fn caught_up(&self, index: usize) -> Option<Offset> {
        self.inner.caught_up(index)
    }
    fn hold(&mut self, index: usize, held: bool) {
        self.inner.hold(index, held)
    }
}

fn codec_named(name: &str) -> Codec {
    if name == "abomonation" {
        Codec::Abomonation
    } else {
        Codec::Postcard
    }
}

fn run_phase(phase: &Phase) -> anyhow::Result<Outcome> {
    let spec = InputSpec {
        topic: "likes".into(),
        archive: Some(phase.archive.clone()),
        layout: None,
        cluster: None,
        brokers: None,
        then_live: false,
        exit_when_idle: None,
        read_ahead_bytes: None,
        remote_log_metadata: None,
        allow_lossy_table: false,
    };
    let input = open_input(&spec)?;
    let source: Arc<dyn SourceFactory> = match phase.crash_after {
        Some(n) => Arc::new(Crashing { inner: input.source, left: Arc::new(AtomicI64::new(n)) }),
        None => input.source,
    };
    let checkpoint = match &phase.checkpoint {
        Some(url) => Some(checkpoint_config(
            url,
            Duration::from_millis(phase.every_ms),
            "like-counts",
            "bench".into(),
            codec_named(&phase.codec),
        )?),
        None => None,
    };
    let options = JobOptions { checkpoint, max_partition_skew_ms: phase.skew_ms, ..JobOptions::default() };
    let sink = JsonLinesSink::new(Some(PathBuf::from(&phase.output)));
    let metrics = options.metrics.clone();
    let started = Instant::now();
    let result = like_counts::run(&ClusterConfig::threads(1), options, source, sink);
    let seconds = started.elapsed().as_secs_f64();
    let (records, checkpoints, crashed) = match result {
        Ok(report) => (report.records, report.checkpoints, false),
        Err(e) if phase.crash_after.is_some() && format!("{e:?}").contains("crash") => (metrics.records(), 0, true),
        Err(e) => return Err(e.into()),
    };
    Ok(Outcome {
        seconds,
        records,
        checkpoints,
        peak_rss_bytes: kappa_benches::peak_rss_bytes(),
        crashed,
        checkpoint_bytes: metrics.checkpoint_bytes(),
        checkpoint_cuts: metrics.checkpoint_cuts(),
    })
}

fn spawn_phase(phase: &Phase) -> anyhow::Result<Outcome> {
    let json = serde_json::to_string(phase)?;
    let out = Command::new(std::env::current_exe()?).arg("--phase").arg(json).output()?;
    anyhow::ensure!(out.status.success(), "phase failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Bytes of the parts of the newest complete checkpoint under a local checkpoint directory.
fn newest_checkpoint_bytes(dir: &std::path::Path) -> u64 {
    let mut generations: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|e| e.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.join("MANIFEST").exists()).collect())
        .unwrap_or_default();
    generations.sort();
    generations.last().map_or(0, |g| {
        std::fs::read_dir(g)
            .map(|e| e.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Encodes and decodes a state of `n` like pairs with `codec`: (bytes, encode s, decode s, write s).
fn codec_costs(n: usize, codec: Codec, dir: &std::path::Path) -> anyhow::Result<(usize, f64, f64, f64)> {
    let updates: Vec<((u64, u64), u64, isize)> =
        (0..n as u64).map(|i| ((i % 500_000, (i * 7_919) % 200_000), 1_700_000_000_000, 1)).collect();
    let header = PartHeader {
        input: "likes".into(),
        partition: PartitionId::new("likes", 0),
        next_offset: Some(n as i64),
        max_seen: Some(1_700_000_000_000),
        floor: 0,
        frontier: 1_700_000_000_001,
        data_type: std::any::type_name::<(u64, u64)>().into(),
        layout: None,
        updates: n as u64,
    };
    let t = Instant::now();
    let bytes = encode_part(&header, &updates, codec);
    let encode_s = t.elapsed().as_secs_f64();
    let store = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
    let t = Instant::now();
    let path = object_store::path::Path::from(format!("part-{n}-{codec:?}"));
    kappa_replay::archive::runtime().block_on(store.put(&path, bytes.clone().into()))?;
    let write_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (_, back) = decode_part::<(u64, u64)>("bench", &bytes)?;
    let decode_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(back.len() == n, "decoded {} of {n}", back.len());
    Ok((bytes.len(), encode_s, decode_s, write_s))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(phase) = &args.phase {
        println!("{}", serde_json::to_string(&run_phase(&serde_json::from_str(phase)?)?)?);
        return Ok(());
    }
    let temp = tempfile::tempdir()?;
    let dir_path = match &args.keep {
        Some(keep) => {
            std::fs::create_dir_all(keep)?;
            keep.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let dir = &dir_path;
    let machine = kappa_benches::machine(true);
    let mut md = format!(
        "# Recovery benchmark\n\nLike counts over {} archived records ({} partitions), 1 worker, checkpoints every {} to a local directory. The job crashes after 99% of the history and is restarted.\nMachine: {machine}. Command: `cargo run --release -p kappa-benches --bin recovery_bench -- --records {} --every {}`.\n\n",
        args.records,
        args.partitions,
        humantime::format_duration(args.every),
        args.records,
        humantime::format_duration(args.every)
    );
    md.push_str("| history | codec | run | seconds | records read | checkpoint MiB | MiB encoded per checkpoint | peak RSS MiB |\n|---|---|---|---|---|---|---|---|\n");
    // Two shapes of history: likes spread over a key space that grows with the history (the state
    // is nearly as large as the history), and likes churning over 500 users and 100 posts (the
    // state stays small however long the history).
    let shapes = [("wide", None), ("churn", Some((500u64, 100u64)))];
    for (shape, users_posts) in shapes {
        let archive = format!("file://{}", dir.join(format!("archive-{shape}")).display());
        eprintln!("{shape}: writing an archive of {} like events", args.records);
        kappa_benches::write_like_archive(
            &archive,
            args.records,
            args.partitions,
            100_000,
            kappa_replay::segment::Codec::Zstd,
            users_posts,
        )?;
        let full_out = dir.join(format!("out-{shape}-full.jsonl"));
        eprintln!("{shape}: full replay without checkpoints");
        let full = spawn_phase(&Phase {
            archive: archive.clone(),
            output: full_out.display().to_string(),
            checkpoint: None,
            every_ms: 0,
            codec: "postcard".into(),
            crash_after: None,
            skew_ms: default_skew(),
        })?;
        md.push_str(&format!(
            "| {shape} | | full replay, no checkpoints | {:.2} | {} | | | {:.0} |\n",
            full.seconds,
            full.records,
            mib(full.peak_rss_bytes)
        ));
        let crash_at = args.records as i64 - (args.records as i64 / 100);
        for codec in ["postcard", "abomonation"] {
            let ckpt_dir = dir.join(format!("ckpt-{shape}-{codec}"));
            let output = dir.join(format!("out-{shape}-{codec}.jsonl"));
            let base = Phase {
                archive: archive.clone(),
                output: output.display().to_string(),
                checkpoint: Some(format!("file://{}", ckpt_dir.display())),
                every_ms: args.every.as_millis() as u64,
                codec: codec.into(),
                crash_after: Some(crash_at),
                skew_ms: default_skew(),
            };
            eprintln!("{shape}/{codec}: running until the crash at record {crash_at}");
            let crashed = spawn_phase(&base)?;
            anyhow::ensure!(crashed.crashed, "the first run was meant to crash");
            let size = newest_checkpoint_bytes(&ckpt_dir);
            eprintln!("{shape}/{codec}: restarting from the latest checkpoint");
            let restored = spawn_phase(&Phase { crash_after: None, ..base.clone() })?;
            md.push_str(&format!(
                "| {shape} | {codec} | until the crash, checkpointing | {:.2} | {} | | {:.1} ({} checkpoints) | {:.0} |\n",
                crashed.seconds,
                crashed.records,
                mib(crashed.checkpoint_bytes) / crashed.checkpoint_cuts.max(1) as f64,
                crashed.checkpoint_cuts,
                mib(crashed.peak_rss_bytes)
            ));
            md.push_str(&format!(
                "| {shape} | {codec} | **restart from the checkpoint** | **{:.2}** | {} | {:.1} | | {:.0} |\n",
                restored.seconds,
                restored.records,
                mib(size),
                mib(restored.peak_rss_bytes)
            ));
            anyhow::ensure!(
                std::fs::read(&output)? == std::fs::read(&full_out)?,
                "{shape}/{codec}: the recovered output differs from the uninterrupted one"
            );
        }
    }
    md.push_str(
        "\nEvery recovered output is byte-identical to the uninterrupted run's (checked by the benchmark).\n\n",
    );

    md.push_str("## Checkpoint size and write time as state grows (one part, local directory)\n\n| state (like pairs) | codec | part MiB | encode s | write s | decode s | decode MB/s |\n|---|---|---|---|---|---|---|\n");
    for n in [100_000usize, 1_000_000, 5_000_000] {
        for codec in [Codec::Postcard, Codec::Abomonation] {
            let (bytes, encode_s, decode_s, write_s) = codec_costs(n, codec, dir)?;
            md.push_str(&format!(
                "| {n} | {codec:?} | {:.1} | {encode_s:.3} | {write_s:.3} | {decode_s:.3} | {:.0} |\n",
                mib(bytes as u64),
                bytes as f64 / 1e6 / decode_s.max(1e-9)
            ));
        }
    }
    print!("{md}");
    if let Some(path) = &args.out {
        std::fs::File::create(path)?.write_all(md.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
