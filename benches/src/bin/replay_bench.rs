//! Replay speed: like counts over one history, from a local archive, from S3 (moto), and consumed
//! from a Kafka-API broker (Tansu); with and without backfill granularity; on 1 and 2 workers.
//!
//! Also runs the same job over the same records already in memory (`memory`), to show what
//! replaying adds. Prints a table (records/s per worker, peak memory, read-ahead peak) and the time split between
//! fetching, batch decoding (decompression, CRC, record framing), JSON parsing and the dataflow,
//! and writes it as Markdown to `--out`. Each variant runs in its own process so its peak memory
//! is its own.
//!
//! Run with: `cargo run --release -p kappa-benches --bin replay_bench -- --records 10000000 \
//!   [--s3-endpoint http://127.0.0.1:PORT] [--brokers 127.0.0.1:PORT] --out papers/results/replay.md`
//! (`scripts/bench` starts moto and Tansu and passes them.)

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use kappa_engine::{BoxError, ClusterConfig, Diff, JobOptions, PartitionId, Sink, Time};
use kappa_examples::like_counts::{self, PostLikes};
use kappa_replay::segment::Codec;
use kappa_replay::Archive;
use kappa_runner::job::{open_input, InputSpec};
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
    /// Records per segment object.
    #[arg(long, default_value_t = 100_000)]
    segment_records: usize,
    /// Codec of the archived batches (none, gzip, snappy, lz4, zstd).
    #[arg(long, default_value = "zstd")]
    codec: String,
    /// moto's S3 endpoint; without it the S3 variants are skipped.
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// A Tansu (Kafka-API) broker; without it the broker variants are skipped.
    #[arg(long)]
    brokers: Option<String>,
    /// Markdown file to write the results to.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Measure the stages (fetch, decode, parse) alone, print them, and stop.
    #[arg(long)]
    stages_only: bool,
    /// Internal: run one variant (JSON) and print its result.
    #[arg(long, hide = true)]
    one: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Variant {
    source: String,
    url: String,
    brokers: Option<String>,
    workers: usize,
    granularity_ms: u64,
    s3_env: Vec<(String, String)>,
    /// `memory`: records handed over per partition per poll (a segment's, as the replay does).
    #[serde(default)]
    memory_batch: usize,
}

#[derive(Serialize, Deserialize, Debug)]
struct Outcome {
    records: u64,
    seconds: f64,
    updates: u64,
    peak_rss_bytes: u64,
    peak_read_ahead_bytes: u64,
}

/// Counts updates without keeping them, so the sink does not dominate memory.
#[derive(Clone, Default)]
struct CountingSink(Arc<std::sync::atomic::AtomicU64>);

impl Sink<PostLikes> for CountingSink {
    fn write(&mut self, _time: Time, updates: &[(PostLikes, Diff)]) -> Result<(), BoxError> {
        self.0.fetch_add(updates.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// Every record of the archive at `url`, per partition, decoded into memory (not timed): the
/// input of the `memory` variant, which runs the same job over records already in memory.
fn records_in_memory(url: &str) -> anyhow::Result<Vec<(PartitionId, Vec<kappa_engine::Record>)>> {
    use kappa_replay::archive::runtime;
    let archive = Archive::open(url)?;
    let layout = archive.layout.clone();
    let mut out = Vec::new();
    for p in runtime().block_on(layout.partitions(&archive, "likes"))? {
        let mut records = Vec::new();
        for segment in runtime().block_on(layout.segments(&archive, "likes", p))? {
            let bytes = runtime().block_on(archive.fetch(&segment.key))?;
            kappa_replay::segment::decode_segment(segment.key.as_ref(), &bytes, 0, &mut records)?;
        }
        out.push((PartitionId::new("likes", p), records));
    }
    Ok(out)
}

fn run_one(variant: &Variant) -> anyhow::Result<Outcome> {
    if variant.source == "memory" {
        let records = Arc::new(records_in_memory(&variant.url)?);
        let source = Arc::new(kappa_engine::MemorySource::shared(records).with_batch(variant.memory_batch));
        let options = JobOptions { backfill_granularity_ms: variant.granularity_ms, ..JobOptions::default() };
        let sink = CountingSink::default();
        let started = Instant::now();
        let report = like_counts::run(&ClusterConfig::threads(variant.workers), options, source, sink.clone())?;
        let seconds = started.elapsed().as_secs_f64();
        return Ok(Outcome {
            records: report.records,
            seconds,
            updates: sink.0.load(std::sync::atomic::Ordering::Relaxed),
            peak_rss_bytes: kappa_benches::peak_rss_bytes(),
            peak_read_ahead_bytes: 0,
        });
    }
    // The S3 settings reach this process through its environment (set by the parent).
    let spec = InputSpec {
        topic: "likes".into(),
        archive: (variant.source != "broker").then(|| variant.url.clone()),
        layout: None,
        cluster: None,
        brokers: variant.brokers.clone(),
        then_live: false,
        exit_when_idle: None,
        read_ahead_bytes: None,
        remote_log_metadata: None,
        allow_lossy_table: false,
    };
    let input = open_input(&spec)?;
    let options = JobOptions { backfill_granularity_ms: variant.granularity_ms, ..JobOptions::default() };
    let sink = CountingSink::default();
    let started = Instant::now();
    let report = like_counts::run(&ClusterConfig::threads(variant.workers), options, input.source, sink.clone())?;
    let seconds = started.elapsed().as_secs_f64();
    let peak_read_ahead_bytes =
        input.replay.map_or(0, |r| r.metrics().peak_read_ahead_bytes.load(std::sync::atomic::Ordering::Relaxed));
    Ok(Outcome {
        records: report.records,
        seconds,
        updates: sink.0.load(std::sync::atomic::Ordering::Relaxed),
        peak_rss_bytes: kappa_benches::peak_rss_bytes(),
        peak_read_ahead_bytes,
    })
}

fn codec(name: &str) -> anyhow::Result<Codec> {
    kappa_replay::segment::compression::CODECS
        .into_iter()
        .find(|c| c.name() == name)
        .with_context(|| format!("unknown codec `{name}`"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(one) = &args.one {
        let variant: Variant = serde_json::from_str(one)?;
        println!("{}", serde_json::to_string(&run_one(&variant)?)?);
        return Ok(());
    }
    let codec = codec(&args.codec)?;
    eprintln!("generating {} like events over {} partitions", args.records, args.partitions);
    let dir = tempfile::tempdir()?;
    let local_url = format!("file://{}", dir.path().display());
    let local = Archive::open(&local_url)?;
    let kappa_benches::LikeArchive { segments, partitions: per_partition } = kappa_benches::write_like_archive(
        &local_url,
        args.records,
        args.partitions,
        args.segment_records,
        codec,
        None,
    )?;
    let archive_bytes: u64 = segments.iter().map(|(_, b)| b.len() as u64).sum();
    eprintln!("archive: {} segments, {:.1} MiB ({codec:?})", segments.len(), archive_bytes as f64 / (1 << 20) as f64);

    // Stage costs, each measured alone over the whole local archive, on one thread.
    let t = Instant::now();
    let mut fetched = Vec::new();
    for (key, _) in &segments {
        fetched.push((
            key.clone(),
            kappa_replay::archive::runtime().block_on(async { local.store.get(key).await?.bytes().await })?,
        ));
    }
    let fetch_s = t.elapsed().as_secs_f64();
    // Decode and parse one segment at a time into a reused buffer, as the replay source does:
    // collecting all ten million records first measured page faults, not the decoder.
    let (mut decode, mut parse) = (Duration::ZERO, Duration::ZERO);
    let (mut decoded_count, mut parsed) = (0usize, 0usize);
    let mut decoded = Vec::with_capacity(args.segment_records);
    for (key, bytes) in &fetched {
        decoded.clear();
        let t = Instant::now();
        kappa_replay::segment::decode_segment(key.as_ref(), bytes, 0, &mut decoded)?;
        decode += t.elapsed();
        decoded_count += decoded.len();
        let t = Instant::now();
        for record in &decoded {
            parsed += usize::from(like_counts::decode(record).is_ok());
        }
        parse += t.elapsed();
    }
    let (decode_s, parse_s) = (decode.as_secs_f64(), parse.as_secs_f64());
    assert_eq!((decoded_count, parsed), (args.records, args.records));
    drop((fetched, decoded));
    eprintln!(
        "stages: fetch {fetch_s:.2} s, decode {decode_s:.2} s ({:.0} records/s), parse {parse_s:.2} s",
        args.records as f64 / decode_s
    );
    if args.stages_only {
        return Ok(());
    }

    let mut s3_env = Vec::new();
    let s3_url = match &args.s3_endpoint {
        Some(endpoint) => {
            s3_env = vec![
                ("AWS_ENDPOINT".to_string(), endpoint.clone()),
                ("AWS_ALLOW_HTTP".into(), "true".into()),
                ("AWS_ACCESS_KEY_ID".into(), "bench".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "bench".into()),
                ("AWS_REGION".into(), "us-east-1".into()),
            ];
            let bucket = format!("kappa-bench-{}", std::process::id());
            let status = Command::new("python3")
                .args(["-c", &format!("import boto3; boto3.client('s3', endpoint_url='{endpoint}', aws_access_key_id='x', aws_secret_access_key='x', region_name='us-east-1').create_bucket(Bucket='{bucket}')")])
                .status()?;
            anyhow::ensure!(status.success(), "cannot create bucket on {endpoint}");
            let url = format!("s3://{bucket}/history");
            kappa_engine::install_tls_provider();
            let store = object_store::aws::AmazonS3Builder::new()
                .with_endpoint(endpoint)
                .with_allow_http(true)
                .with_access_key_id("bench")
                .with_secret_access_key("bench")
                .with_region("us-east-1")
                .with_bucket_name(&bucket)
                .build()?;
            eprintln!("uploading the archive to {url}");
            for (key, bytes) in &segments {
                let key = object_store::path::Path::from(format!("history/{key}"));
                kappa_replay::archive::runtime().block_on(store.put(&key, bytes.clone().into()))?;
            }
            Some(url)
        }
        None => None,
    };
    drop(segments);

    let topic_ready = match &args.brokers {
        Some(brokers) => {
            eprintln!("producing {} records to {brokers}", args.records);
            let topic = "likes";
            let tansu = std::env::var("KAPPA_TANSU_BIN").unwrap_or_else(|_| "tansu".into());
            let status = Command::new(tansu)
                .args([
                    "topic",
                    "create",
                    "--broker",
                    &format!("tcp://{brokers}"),
                    "--partitions",
                    &args.partitions.to_string(),
                    topic,
                ])
                .status()?;
            anyhow::ensure!(status.success(), "cannot create the topic on {brokers}");
            let records = per_partition.iter().enumerate().flat_map(|(p, log)| {
                log.iter().map(move |r| kappa_connectors::kafka::producer::OutgoingRecord {
                    partition: p as i32,
                    key: r.key.as_ref().map(|k| k.to_vec()).unwrap_or_default(),
                    value: r.value.as_ref().map(|v| v.to_vec()).unwrap_or_default(),
                    timestamp: r.timestamp.unwrap_or(0),
                })
            });
            kappa_connectors::kafka::producer::produce_with(
                brokers,
                topic,
                records,
                &[("compression.type", codec.name())],
                &|_| (),
            )?;
            true
        }
        None => false,
    };
    drop(per_partition);

    let mut variants = Vec::new();
    for workers in [1usize, 2] {
        for granularity_ms in [0u64, 60_000] {
            let base = Variant {
                source: "local".into(),
                url: local_url.clone(),
                brokers: None,
                workers,
                granularity_ms,
                s3_env: vec![],
                memory_batch: 0,
            };
            variants.push(base.clone());
            if granularity_ms == 0 {
                variants.push(Variant { source: "memory".into(), memory_batch: args.segment_records, ..base.clone() });
            }
            if let Some(url) = &s3_url {
                variants.push(Variant {
                    source: "s3 (moto)".into(),
                    url: url.clone(),
                    s3_env: s3_env.clone(),
                    ..base.clone()
                });
            }
            if topic_ready && granularity_ms == 0 {
                variants.push(Variant {
                    source: "broker (tansu)".into(),
                    brokers: args.brokers.clone(),
                    ..base.clone()
                });
            }
        }
    }
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for variant in &variants {
        eprintln!(
            "running {} on {} worker(s), granularity {} ms",
            variant.source, variant.workers, variant.granularity_ms
        );
        let mut cmd = Command::new(&exe);
        cmd.arg("--one").arg(serde_json::to_string(variant)?);
        for (k, v) in &variant.s3_env {
            cmd.env(k, v);
        }
        let out = cmd.output()?;
        anyhow::ensure!(out.status.success(), "variant failed: {}", String::from_utf8_lossy(&out.stderr));
        let outcome: Outcome = serde_json::from_slice(&out.stdout)?;
        anyhow::ensure!(outcome.records == args.records as u64, "variant read {} records", outcome.records);
        rows.push((variant.clone(), outcome));
    }

    let machine = kappa_benches::machine(true);
    let mut md = String::new();
    md.push_str(&format!(
        "# Replay benchmark\n\nLike counts over {} records ({} partitions, {} MiB archive, {codec:?} batches of 1000, {} records per segment).\nMachine: {machine}. Command: `cargo run --release -p kappa-benches --bin replay_bench -- --records {}`.\n\n",
        args.records,
        args.partitions,
        archive_bytes >> 20,
        args.segment_records,
        args.records
    ));
    md.push_str("| source | workers | backfill granularity | seconds | records/s | records/s per worker | output updates | peak RSS MiB | read-ahead peak MiB |\n|---|---|---|---|---|---|---|---|---|\n");
    for (v, o) in &rows {
        let rate = o.records as f64 / o.seconds;
        md.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.0} | {:.0} | {} | {:.0} | {:.1} |\n",
            v.source,
            v.workers,
            if v.granularity_ms == 0 { "exact".to_string() } else { format!("{} ms", v.granularity_ms) },
            o.seconds,
            rate,
            rate / v.workers as f64,
            o.updates,
            o.peak_rss_bytes as f64 / (1 << 20) as f64,
            o.peak_read_ahead_bytes as f64 / (1 << 20) as f64,
        ));
    }
    let e2e = rows
        .iter()
        .find(|(v, _)| v.source == "local" && v.workers == 1 && v.granularity_ms == 0)
        .map(|(_, o)| o.seconds)
        .unwrap_or(f64::NAN);
    md.push_str(&format!(
        "\nTime split, each stage measured alone on one thread over the local archive, one segment at a time (the pipeline overlaps them):\n\n| stage | seconds | records/s |\n|---|---|---|\n| fetch (object store get) | {fetch_s:.2} | {:.0} |\n| batch decode (decompress, CRC, framing) | {decode_s:.2} | {:.0} |\n| record parse (JSON) | {parse_s:.2} | {:.0} |\n\nThe replay overlaps these stages with the dataflow (the read-ahead fetches and decodes on its own threads), so the dataflow's own share is not their difference to the end-to-end time.\n",
        args.records as f64 / fetch_s,
        args.records as f64 / decode_s,
        args.records as f64 / parse_s,
    ));
    for workers in [1, 2] {
        let find = |source: &str| {
            rows.iter()
                .find(|(v, _)| v.source == source && v.workers == workers && v.granularity_ms == 0)
                .map(|(_, o)| o.seconds)
        };
        if let (Some(local), Some(memory)) = (find("local"), find("memory")) {
            let adds = (local / memory - 1.0) * 100.0;
            md.push_str(&format!(
                "\nReplay from the local archive vs the same records already in memory, {workers} worker(s), exact times: \
                 {local:.2} s vs {memory:.2} s, replay adds {adds:.1}% (goal: at most 5%: {}).\n",
                if adds <= 5.0 { "met" } else { "not met" }
            ));
        }
    }
    if let Some(broker) = rows.iter().find(|(v, _)| v.source.starts_with("broker") && v.workers == 1) {
        md.push_str(&format!(
            "\nLocal archive vs consuming the broker, 1 worker, exact times: {:.1}x faster.\n",
            broker.1.seconds / e2e
        ));
    }
    print!("{md}");
    if let Some(path) = &args.out {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::File::create(path)?.write_all(md.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
