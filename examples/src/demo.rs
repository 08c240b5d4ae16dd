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
//! 6. The same for the ranked feed (final feeds against the reference) and fraud alerts (at every
//!    time the alerts changed, and 200 more, against the reference at that time).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kappa_connectors::kafka::producer::{produce, OutgoingRecord};
use kappa_engine::{JobOptions, MemorySink};
use rdkafka::mocking::MockCluster;

use crate::generator::{like_records, like_stream, LikeStreamConfig};
use crate::like_counts::{self, PostLikes};
use kappa_runner::job::{open_input, ClusterArgs, InputSpec};
use kappa_runner::progress::{progress, ProgressWatcher};

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

/// Runs the demo; an error if anything fails or the result does not match the reference.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut mock = None;
    let (brokers, topic) = match &args.brokers {
        Some(brokers) => {
            let topic = format!("likes-demo-{}", std::process::id());
            kappa_connectors::kafka::admin::create_topic(brokers, &topic, args.partitions)?;
            (brokers.clone(), topic)
        }
        None => {
            let cluster = MockCluster::new(1).context("starting librdkafka's mock cluster")?;
            cluster.create_topic("likes", args.partitions, 1).context("creating topic `likes` on the mock cluster")?;
            let brokers = cluster.bootstrap_servers();
            mock = Some(cluster);
            (brokers, "likes".to_string())
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
        produce(&brokers, &topic, like_records(chunk), &|_| ())?;
        let written = kappa_runner::job::archive_topic(&archive, &brokers, &topic, &|_| ())?;
        archived += written.records;
        segments += written.partitions.values().map(|(_, _, s)| s).sum::<usize>();
        rounds += 1;
        bar.set_position(archived);
    }
    bar.finish_and_clear();
    println!("archived {archived} records into {segments} segments in {rounds} rounds at {url}");

    let bar = progress("producing live");
    produce(&brokers, &topic, like_records(&events[split..]), &|n| bar.set_position(n))?;
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
        remote_log_metadata: None,
        allow_lossy_table: false,
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

    let create = |topic: &str, partitions: i32| -> anyhow::Result<()> {
        match &mock {
            Some(cluster) => {
                cluster.create_topic(topic, partitions, 1).context("creating a topic on the mock cluster")?
            }
            None => kappa_connectors::kafka::admin::create_topic(&brokers, topic, partitions)?,
        }
        Ok(())
    };
    // On a real broker, fresh topic names, so that reruns never read an earlier run's records.
    let suffix = if args.brokers.is_some() { format!("-demo-{}", std::process::id()) } else { String::new() };
    let staging =
        Staging { brokers: &brokers, create: &create, dir: dir.path(), fraction: args.archive_fraction, suffix };
    verify_ranked_feed(&staging, &args)?;
    verify_fraud_alerts(&staging, &args)?;
    drop(Arc::new(dir));
    Ok(())
}

/// Where and how the demo stages a topic: produce, archive part of it, produce the rest.
struct Staging<'a> {
    brokers: &'a str,
    create: &'a dyn Fn(&str, i32) -> anyhow::Result<()>,
    dir: &'a std::path::Path,
    fraction: f64,
    suffix: String,
}

impl Staging<'_> {
    /// Creates `topic`, produces the first part of `events`, archives it, produces the rest, and
    /// returns the input replaying the archive then continuing live.
    fn stage<T: serde::Serialize>(
        &self,
        topic: &str,
        partitions: i32,
        events: &[(i32, T)],
        ts: impl Fn(&T) -> u64,
    ) -> anyhow::Result<Arc<dyn kappa_engine::SourceFactory>> {
        let topic = &format!("{topic}{}", self.suffix);
        (self.create)(topic, partitions)?;
        let records = |part: &[(i32, T)]| -> Vec<OutgoingRecord> {
            part.iter()
                .map(|(p, e)| OutgoingRecord {
                    partition: *p,
                    key: Vec::new(),
                    value: serde_json::to_vec(e).expect("events serialize"),
                    timestamp: ts(e) as i64,
                })
                .collect()
        };
        let split = ((events.len() as f64) * self.fraction.clamp(0.0, 1.0)) as usize;
        let url = format!("file://{}", self.dir.join(topic).display());
        let archive = kappa_replay::Archive::open(&url)?;
        produce(self.brokers, topic, records(&events[..split]), &|_| ())?;
        kappa_runner::job::archive_topic(&archive, self.brokers, topic, &|_| ())?;
        produce(self.brokers, topic, records(&events[split..]), &|_| ())?;
        let spec = InputSpec {
            topic: topic.to_string(),
            archive: Some(url),
            layout: None,
            cluster: None,
            brokers: Some(self.brokers.to_string()),
            then_live: true,
            exit_when_idle: Some(Duration::from_secs(1)),
            read_ahead_bytes: None,
            remote_log_metadata: None,
            allow_lossy_table: false,
        };
        Ok(open_input(&spec)?.source)
    }
}

fn verify_ranked_feed(staging: &Staging<'_>, args: &DemoArgs) -> anyhow::Result<()> {
    use crate::generator::{follow_stream, post_stream, social_likes, SocialConfig};
    use crate::ranked_feed::{self, FeedEntry};
    let config = SocialConfig { partitions: 4, seed: args.seed, ..SocialConfig::default() };
    let (follows, posts, likes) = (follow_stream(&config), post_stream(&config), social_likes(&config));
    let started = Instant::now();
    let sink = MemorySink::<FeedEntry>::new();
    // Twenty rounds of PageRank at every millisecond of history is work nobody needs: the backfill
    // is coarsened to minutes (the final feeds are identical), the live tail keeps exact times.
    let options = JobOptions { backfill_granularity_ms: 60_000, ..JobOptions::default() };
    ranked_feed::run(
        &args.cluster.config(),
        options,
        staging.stage("follows", 4, &follows, |f| f.ts)?,
        staging.stage("posts", 4, &posts, |p| p.ts)?,
        staging.stage("feed-likes", 4, &likes, |l| l.ts)?,
        sink.clone(),
    )?;
    let result: std::collections::BTreeSet<FeedEntry> = sink
        .accumulated()
        .into_iter()
        .map(|(row, n)| if n == 1 { Ok(row) } else { Err(anyhow::anyhow!("feed row {row:?} has multiplicity {n}")) })
        .collect::<anyhow::Result<_>>()?;
    let reference = ranked_feed::reference(
        follows.iter().map(|(_, f)| f),
        posts.iter().map(|(_, p)| p),
        likes.iter().map(|(_, l)| l),
    );
    println!(
        "ranked-feed: {} follow events, {} posts, {} likes; {} feed rows for {} users in {:.1}s",
        follows.len(),
        posts.len(),
        likes.len(),
        result.len(),
        result.iter().map(|r| r.user).collect::<std::collections::BTreeSet<_>>().len(),
        started.elapsed().as_secs_f64()
    );
    if result != reference {
        anyhow::bail!(
            "ranked-feed does NOT match the batch reference: {} rows differ",
            result.symmetric_difference(&reference).count()
        );
    }
    println!("verified: ranked-feed matches the batch reference");
    Ok(())
}

fn verify_fraud_alerts(staging: &Staging<'_>, args: &DemoArgs) -> anyhow::Result<()> {
    use crate::fraud_alerts::{self, Payment, Ring};
    use crate::generator::{payment_stream, PaymentConfig};
    let config = PaymentConfig { partitions: 4, seed: args.seed, ..PaymentConfig::default() };
    let payments = payment_stream(&config);
    let started = Instant::now();
    let sink = MemorySink::<Ring>::new();
    let options = JobOptions::default();
    let lateness = options.lateness_ms;
    fraud_alerts::run(
        &args.cluster.config(),
        options,
        staging.stage("payments", 4, &payments, |p| p.ts)?,
        sink.clone(),
    )?;
    let updates = sink.updates();

    // Dataflow times by the engine's definition: per partition, in offset (production) order.
    let mut assigners: std::collections::BTreeMap<i32, kappa_engine::TimeAssigner> = Default::default();
    let timed: Vec<(u64, Payment)> = payments
        .iter()
        .map(|(p, pay)| {
            (assigners.entry(*p).or_insert_with(|| kappa_engine::TimeAssigner::new(lateness)).assign(pay.ts), *pay)
        })
        .collect();
    // Check every time the output changed, and a spread of times in between.
    let (first, last) = (timed.iter().map(|t| t.0).min().unwrap_or(0), timed.iter().map(|t| t.0).max().unwrap_or(0));
    let mut checks: Vec<u64> = updates.iter().map(|(_, t, _)| *t).collect();
    checks.extend((0..200).map(|i| first + (last + fraud_alerts::WINDOW_MS - first) / 200 * i));
    checks.sort();
    checks.dedup();
    let mut alerted = std::collections::BTreeSet::new();
    for &t in &checks {
        let mut acc: std::collections::BTreeMap<Ring, isize> = Default::default();
        for (ring, ut, diff) in &updates {
            if *ut <= t {
                *acc.entry(*ring).or_default() += diff;
            }
        }
        acc.retain(|_, n| *n != 0);
        let actual: std::collections::BTreeSet<Ring> = acc.into_keys().collect();
        alerted.extend(actual.iter().map(|r| r.ring));
        if actual != fraud_alerts::reference_at(&timed, t) {
            anyhow::bail!("fraud-alerts does NOT match the batch reference at time {t}");
        }
    }
    println!(
        "fraud-alerts: {} payments, {} planted rings; {} rings alerted, checked at {} times in {:.1}s",
        payments.len(),
        config.rings,
        alerted.len(),
        checks.len(),
        started.elapsed().as_secs_f64()
    );
    if alerted.len() < config.rings {
        anyhow::bail!("fraud-alerts found {} rings, fewer than the {} planted", alerted.len(), config.rings);
    }
    println!("verified: fraud-alerts matches the batch reference");
    Ok(())
}
