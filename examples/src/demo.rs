//! `kappa demo`: the whole idea, end to end, with nothing to set up.
//!
//! 1. Start librdkafka's in-process mock cluster (or use `--brokers`) and create topic `likes`.
//! 2. Produce the first part of a synthetic like stream; archive it to a local directory with
//!    the same code as `kappa archive write`.
//! 3. Produce the rest.
//! 4. Run like counts by replaying the archive, then continuing live at each partition's next
//!    offset, until caught up and idle.
//! 5. Compare the final result with the batch reference computed directly from the generated
//!    events, and print `verified: like-counts matches the batch reference`, or fail.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kappa_connectors::kafka::producer::{produce, OutgoingRecord};
use kappa_engine::{JobOptions, MemorySink};
use rdkafka::mocking::MockCluster;

use crate::generator::{like_stream, LikeStreamConfig};
use crate::job::{open_input, ClusterArgs, InputSpec};
use crate::like_counts::{self, Like, PostLikes};
use crate::progress::{progress, ProgressWatcher};

/// Options of `kappa demo`.
#[derive(clap::Args, Clone, Debug)]
pub struct DemoArgs {
    /// Number of like events to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Use this Kafka broker instead of the in-process mock cluster (a fresh topic is created).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// Share of the events archived before the rest is produced.
    #[arg(long, default_value_t = 0.6)]
    pub archive_fraction: f64,
    /// Also write the output updates as JSON lines to this file.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Seed of the generated stream.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where the workers run.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Events per partition produced between two archive runs, well inside the mock broker's retention.
const ROUND_EVENTS_PER_PARTITION: usize = 40_000;

fn outgoing(events: &[(i32, Like)]) -> impl Iterator<Item = OutgoingRecord> + '_ {
    events.iter().map(|(partition, like)| OutgoingRecord {
        partition: *partition,
        key: like.user.to_string().into_bytes(),
        value: serde_json::to_vec(like).expect("likes serialize"),
        timestamp: like.ts as i64,
    })
}

/// Runs the demo; an error if anything fails or the result does not match the reference.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mock;
    let (brokers, topic) = match &args.brokers {
        Some(brokers) => {
            let topic = format!("likes-demo-{}", std::process::id());
            kappa_connectors::kafka::admin::create_topic(brokers, &topic, args.partitions)?;
            (brokers.clone(), topic)
        }
        None => {
            mock = MockCluster::new(1).context("starting librdkafka's mock cluster")?;
            mock.create_topic("likes", args.partitions, 1).context("creating topic `likes` on the mock cluster")?;
            (mock.bootstrap_servers(), "likes".to_string())
        }
    };
    let live_per_partition = (args.events as f64 * (1.0 - args.archive_fraction)) / args.partitions.max(1) as f64;
    if args.brokers.is_none() && live_per_partition > 60_000.0 {
        anyhow::bail!(
            "the mock broker keeps about 100,000 records (5 MB) per partition, and the live part would put \
             {live_per_partition:.0} in each: raise --partitions or --archive-fraction"
        );
    }
    let config =
        LikeStreamConfig { partitions: args.partitions, seed: args.seed, ..LikeStreamConfig::new(args.events) };
    let events = like_stream(&config);
    let split = ((events.len() as f64) * args.archive_fraction.clamp(0.0, 1.0)) as usize;
    println!(
        "kappa demo: {} like events over {} partitions on {brokers} (topic `{topic}`)",
        events.len(),
        args.partitions
    );

    // The broker keeps only recent records (the mock cluster about 100,000 or 5 MB per
    // partition), as a real one with retention would; the archive keeps everything. So history is
    // produced in rounds, each archived before the next, as a periodic archiver would.
    let dir = tempfile::tempdir().context("creating a temporary archive directory")?;
    let url = format!("file://{}", dir.path().display());
    let archive = kappa_replay::Archive::open(&url)?;
    let round = ROUND_EVENTS_PER_PARTITION * args.partitions.max(1) as usize;
    let (mut archived, mut segments, mut rounds) = (0, 0, 0);
    let bar = progress("producing and archiving history");
    for chunk in events[..split].chunks(round) {
        produce(&brokers, &topic, outgoing(chunk), &|_| ())?;
        let written = kappa_replay::writer::write_archive(&archive, &brokers, &topic, &|_| ())?;
        archived += written.records;
        segments += written.partitions.values().map(|(_, _, s)| s).sum::<usize>();
        rounds += 1;
        bar.set_position(archived);
    }
    bar.finish_and_clear();
    println!("archived {archived} records into {segments} segments in {rounds} rounds at {url}");

    let bar = progress("producing live");
    produce(&brokers, &topic, outgoing(&events[split..]), &|n| bar.set_position(n))?;
    bar.finish_and_clear();

    let idle = Duration::from_secs(1);
    let spec = InputSpec {
        topic: topic.clone(),
        archive: Some(url.clone()),
        layout: None,
        cluster: None,
        brokers: Some(brokers.clone()),
        then_live: true,
        exit_when_idle: Some(idle),
        read_ahead_bytes: None,
    };
    let input = open_input(&spec)?;
    let replay = input.replay.clone().context("the demo replays an archive")?;
    let switched = input.switched_at.clone().context("the demo hands off to live")?;
    let options = JobOptions::default();
    let sink = MemorySink::<PostLikes>::new();
    let watcher = ProgressWatcher::new(progress("like-counts"), options.metrics.clone());
    let started = Instant::now();
    let report = like_counts::run(&args.cluster.config(), options, input.source, sink.clone())?;
    let finished = Instant::now();
    drop(watcher);

    let archived = replay.metrics().records.load(std::sync::atomic::Ordering::Relaxed);
    let live = report.records - archived;
    let switch = switched.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or(finished);
    let backfill_secs = switch.duration_since(started).as_secs_f64().max(1e-6);
    let live_secs = finished.saturating_duration_since(switch).saturating_sub(idle).as_secs_f64().max(1e-6);
    println!(
        "backfill: {archived} records from {} segments in {backfill_secs:.2}s ({:.0} records/s)",
        replay.segment_count(),
        archived as f64 / backfill_secs
    );
    println!(
        "live:     {live} records in {live_secs:.2}s ({:.0} records/s), then {idle:?} idle",
        live as f64 / live_secs
    );
    let updates = sink.updates();
    println!("output:   {} updates at {} distinct times", updates.len(), {
        let mut times: Vec<_> = updates.iter().map(|(_, t, _)| *t).collect();
        times.dedup();
        times.len()
    });
    if let Some(path) = &args.output {
        let mut text = String::new();
        for (data, time, diff) in &updates {
            text.push_str(&serde_json::json!({"time": time, "diff": diff, "data": data}).to_string());
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }

    let result = like_counts::final_result(updates.into_iter().map(|(d, _, r)| (d, r)))
        .map_err(|e| anyhow::anyhow!("the output is not a valid like-counts result: {e}"))?;
    let reference = like_counts::reference(events.iter().map(|(_, l)| l));
    let mut top: Vec<_> = result.iter().map(|(&post, &likes)| (likes, post)).collect();
    top.sort_by(|a, b| b.cmp(a));
    let top: Vec<String> = top.iter().take(5).map(|(likes, post)| format!("post {post}: {likes}")).collect();
    println!("top posts: {}", top.join(", "));
    if report.records != events.len() as u64 {
        anyhow::bail!("read {} records, but {} were produced", report.records, events.len());
    }
    if result != reference {
        let differing = reference.keys().chain(result.keys()).filter(|p| result.get(p) != reference.get(p)).count();
        anyhow::bail!("like-counts does NOT match the batch reference: {differing} posts differ");
    }
    println!("verified: like-counts matches the batch reference");
    drop(Arc::new(dir));
    Ok(())
}
