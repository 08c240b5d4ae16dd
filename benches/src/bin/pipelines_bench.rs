//! Pipeline benchmarks: fraud-alerts throughput and alert latency; ranked-feed latency of one
//! follow/unfollow against recomputing the batch reference from scratch.
//!
//! Inputs are fed through an in-process channel source, so the figures are the engine's and the
//! pipeline's, not a broker's. Latency is wall time from handing the engine an event (plus a later
//! "tick" that lets the partition's watermark pass it) until the sink reports that event's time
//! complete. Lateness is 0 here, so a time completes as soon as a later record arrives.
//!
//! Run with: `cargo run --release -p kappa-benches --bin pipelines_bench -- [--users 100000
//!   --edges 1000000] [--updates 1000] --out papers/results/pipelines.md` (`scripts/bench` runs it).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use kappa_engine::{
    BoxError, ClusterConfig, Diff, JobOptions, Offset, PartitionId, PartitionedSource, Poll, Record, Sink,
    SourceFactory, Time,
};
use kappa_examples::fraud_alerts::{self, Payment, Ring};
use kappa_examples::like_counts::Like;
use kappa_examples::ranked_feed::{self, Follow, FollowKind, Post};

#[derive(Parser)]
struct Args {
    /// Users of the follow graph.
    #[arg(long, default_value_t = 10_000)]
    users: u64,
    /// Follow edges.
    #[arg(long, default_value_t = 100_000)]
    edges: usize,
    /// Follow/unfollow updates whose latency is measured.
    #[arg(long, default_value_t = 200)]
    updates: usize,
    /// Updates whose reach (ranks changed) is also computed in plain Rust.
    #[arg(long, default_value_t = 20)]
    footprint_samples: usize,
    /// Payments for the fraud throughput run.
    #[arg(long, default_value_t = 300_000)]
    payments: usize,
    /// Markdown file to write.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A one-partition source fed by a channel; the partition ends when the sender is dropped.
struct ChannelSource {
    topic: String,
    rx: Mutex<Option<Receiver<Vec<u8>>>>,
}

impl ChannelSource {
    fn new(topic: &str) -> (Self, Sender<Vec<u8>>) {
        let (tx, rx) = channel();
        (ChannelSource { topic: topic.into(), rx: Mutex::new(Some(rx)) }, tx)
    }
}

impl SourceFactory for ChannelSource {
    fn partitions(&self) -> Result<Vec<PartitionId>, BoxError> {
        Ok(vec![PartitionId::new(&self.topic, 0)])
    }
    fn open(&self, owned: &[(PartitionId, Option<Offset>)]) -> Result<Box<dyn PartitionedSource>, BoxError> {
        let rx = if owned.is_empty() { None } else { self.rx.lock().map_err(|_| "poisoned")?.take() };
        Ok(Box::new(ChannelReader { rx, next: 0 }))
    }
}

struct ChannelReader {
    rx: Option<Receiver<Vec<u8>>>,
    next: Offset,
}

impl PartitionedSource for ChannelReader {
    fn poll(&mut self, out: &mut Vec<(usize, Record)>, finished: &mut Vec<usize>) -> Result<Poll, BoxError> {
        let Some(rx) = &self.rx else { return Ok(Poll::Pending) };
        loop {
            match rx.try_recv() {
                Ok(value) => {
                    out.push((
                        0,
                        Record { offset: self.next, timestamp: None, key: None, value: Some(Bytes::from(value)) },
                    ));
                    self.next += 1;
                    if out.len() >= 10_000 {
                        return Ok(Poll::Ready);
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(Poll::Pending),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    self.rx = None;
                    finished.push(0);
                    return Ok(Poll::Pending);
                }
            }
        }
    }
}

/// Remembers when each time became complete, and counts updates.
#[derive(Clone, Default)]
struct Watch {
    upper: Arc<Mutex<(Time, u64)>>,
}

impl<D: Clone + 'static> Sink<D> for Watch {
    fn write(&mut self, _time: Time, updates: &[(D, Diff)]) -> Result<(), BoxError> {
        self.upper.lock().map_err(|_| "poisoned")?.1 += updates.len() as u64;
        Ok(())
    }
    fn advanced(&mut self, upper: Time) -> Result<(), BoxError> {
        self.upper.lock().map_err(|_| "poisoned")?.0 = upper;
        Ok(())
    }
}

impl Watch {
    fn updates(&self) -> u64 {
        self.upper.lock().expect("watch").1
    }

    fn wait_past(&self, time: Time) -> Duration {
        let start = Instant::now();
        while self.upper.lock().expect("watch").0 <= time {
            std::thread::sleep(Duration::from_micros(50));
        }
        start.elapsed()
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("serializes")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn lcg(state: &mut u64) -> u64 {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *state >> 33
}

fn ranked_feed_latency(args: &Args, md: &mut String) -> anyhow::Result<()> {
    let (follows, tx_f) = ChannelSource::new("follows");
    let (posts, tx_p) = ChannelSource::new("posts");
    let (likes, tx_l) = ChannelSource::new("likes");
    let watch = Watch::default();
    let options = JobOptions { lateness_ms: 0, ..JobOptions::default() };
    let sink = watch.clone();
    let job = std::thread::spawn(move || {
        ranked_feed::run(&ClusterConfig::threads(2), options, Arc::new(follows), Arc::new(posts), Arc::new(likes), sink)
    });
    // The graph, all at time 1: power-law followees.
    let mut rng = 42u64;
    let mut edges = BTreeSet::new();
    while edges.len() < args.edges {
        let u = lcg(&mut rng) % args.users;
        let r = (lcg(&mut rng) % 1_000_000) as f64 / 1_000_000.0;
        let v = ((r * r * r) * args.users as f64) as u64;
        if u != v {
            edges.insert((u, v));
        }
    }
    let load = Instant::now();
    for &(u, v) in &edges {
        tx_f.send(json(&Follow { ts: 1, follower: u, followee: v, kind: FollowKind::Follow }))?;
    }
    let post_list: Vec<Post> =
        (0..args.users / 2).map(|post| Post { ts: 1, post, author: lcg(&mut rng) % args.users }).collect();
    for post in &post_list {
        tx_p.send(json(post))?;
    }
    let like_list: Vec<Like> = (0..args.users)
        .map(|user| Like {
            ts: 1,
            user,
            post: lcg(&mut rng) % (args.users / 2),
            kind: kappa_examples::like_counts::Kind::Like,
        })
        .collect();
    for like in &like_list {
        tx_l.send(json(like))?;
    }
    // Lets every input's watermark pass `t - 1` (lateness is 0): a post and a like by nobody, and
    // an unfollow of a pair never followed (its net count stays below zero: no edge).
    let tick = |t: u64| -> anyhow::Result<()> {
        tx_f.send(json(&Follow { ts: t, follower: u64::MAX, followee: u64::MAX - 1, kind: FollowKind::Unfollow }))?;
        tx_p.send(json(&Post { ts: t, post: u64::MAX - t, author: u64::MAX }))?;
        tx_l.send(json(&Like {
            ts: t,
            user: u64::MAX,
            post: u64::MAX,
            kind: kappa_examples::like_counts::Kind::Like,
        }))?;
        Ok(())
    };
    tick(2)?;
    watch.wait_past(1);
    let load_s = load.elapsed().as_secs_f64();
    eprintln!("ranked-feed: loaded {} edges in {load_s:.1}s", edges.len());

    let mut latencies = Vec::new();
    let mut footprints = Vec::new();
    let mut t = 3u64;
    let edge_list: Vec<(u64, u64)> = edges.iter().copied().collect();
    let mut current = edges.clone();
    let mut ranks_changed = Vec::new();
    let progress = kappa_runner::progress::counted(args.updates as u64, "ranked-feed updates");
    for i in 0..args.updates {
        // Toggle one edge of the original graph: every measured update is a single follow or unfollow.
        let (u, v) = edge_list[(lcg(&mut rng) as usize) % edge_list.len()];
        let kind = if current.remove(&(u, v)) {
            FollowKind::Unfollow
        } else {
            current.insert((u, v));
            FollowKind::Follow
        };
        if i < args.footprint_samples {
            // How far one change reaches: users whose final rank differs (plain Rust, before/after).
            let before = csr_ranks(args.users, &current_without_toggle(&current, (u, v), kind));
            let after = csr_ranks(args.users, &current);
            ranks_changed.push(before.iter().zip(&after).filter(|(a, b)| a != b).count());
        }
        let updates_before = watch.updates();
        let sent = Instant::now();
        tx_f.send(json(&Follow { ts: t, follower: u, followee: v, kind }))?;
        tick(t + 1)?;
        watch.wait_past(t);
        latencies.push(sent.elapsed().as_secs_f64() * 1_000.0);
        footprints.push(watch.updates() - updates_before);
        progress.inc(1);
        t += 2;
    }
    progress.finish_and_clear();
    drop((tx_f, tx_p, tx_l));
    job.join().map_err(|_| anyhow::anyhow!("job panicked"))??;
    latencies.sort_by(f64::total_cmp);
    footprints.sort_unstable();

    // The batch alternative, on the final graph: the batch reference (BTreeMaps, obviously correct),
    // and PageRank alone over flat arrays (a lower bound on any from-scratch recompute).
    let follows: Vec<Follow> =
        current.iter().map(|&(u, v)| Follow { ts: 1, follower: u, followee: v, kind: FollowKind::Follow }).collect();
    let started = Instant::now();
    let feeds = ranked_feed::reference(&follows, &post_list, &like_list);
    let reference_ms = started.elapsed().as_secs_f64() * 1_000.0;
    let started = Instant::now();
    let ranks = csr_ranks(args.users, &current);
    let csr_ms = started.elapsed().as_secs_f64() * 1_000.0;
    assert!(ranks.iter().any(|&r| r > 0) && !feeds.is_empty());
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    let footprint_p50 = footprints[footprints.len() / 2];
    let changed_mean = ranks_changed.iter().sum::<usize>() as f64 / ranks_changed.len().max(1) as f64;
    md.push_str(&format!(
        "## ranked-feed: one follow/unfollow until the output is complete\n\n\
         {users} users, {edges} edges, {posts} posts, 2 workers; graph loaded (the whole pipeline computed from \
         scratch by the engine) in {load_s:.1} s. {n} updates, each a single follow or unfollow of a random edge.\n\n\
         | measure | ms |\n|---|---|\n\
         | update p50 | {p50:.1} |\n| update p99 | {p99:.1} |\n\
         | recompute: the batch reference (ranks and all feeds, BTreeMaps) | {reference_ms:.1} |\n\
         | recompute: PageRank alone over flat arrays | {csr_ms:.1} |\n\n\
         p50 speed-up over the batch reference: {speedup:.2}x; over flat-array PageRank alone: {speedup_csr:.2}x. Goal: 100x.\n\n\
         Reach of one update: it changes the final rank of {changed_mean:.0} of {users} users on average \
         (first {samples} updates, computed in plain Rust before and after), and the engine emits {footprint_p50} \
         output updates at p50 (the feed rows whose score or order changed, retracted and re-inserted) \
         against {rows} feed rows in all.\n\n",
        users = args.users,
        edges = edges.len(),
        posts = post_list.len(),
        n = args.updates,
        speedup = reference_ms / p50,
        speedup_csr = csr_ms / p50,
        samples = ranks_changed.len(),
        rows = feeds.len(),
    ));
    Ok(())
}

/// The edge set before the toggle that produced `current`.
fn current_without_toggle(current: &BTreeSet<(u64, u64)>, edge: (u64, u64), kind: FollowKind) -> BTreeSet<(u64, u64)> {
    let mut before = current.clone();
    match kind {
        FollowKind::Unfollow => before.insert(edge),
        FollowKind::Follow => before.remove(&edge),
    };
    before
}

/// PageRank by the definition over flat arrays (users are `0..users`): the fastest plain recompute.
fn csr_ranks(users: u64, edges: &BTreeSet<(u64, u64)>) -> Vec<u64> {
    let n = users as usize;
    let mut degree = vec![0u64; n];
    let mut present = vec![false; n];
    for &(u, v) in edges {
        degree[u as usize] += 1;
        present[u as usize] = true;
        present[v as usize] = true;
    }
    let mut ranks: Vec<u64> = present.iter().map(|&p| if p { 1_000_000 } else { 0 }).collect();
    for _ in 0..ranked_feed::ROUNDS {
        let mut next: Vec<u64> = present.iter().map(|&p| if p { 150_000 } else { 0 }).collect();
        for &(u, v) in edges {
            next[v as usize] += ranks[u as usize] * 85 / (100 * degree[u as usize]);
        }
        ranks = next;
    }
    ranks
}

fn fraud(args: &Args, md: &mut String) -> anyhow::Result<()> {
    md.push_str(
        "## fraud-alerts\n\n| workers | payments | seconds | payments/s | per worker |\n|---|---|---|---|---|\n",
    );
    for workers in [1usize, 2] {
        let (payments, tx) = ChannelSource::new("payments");
        let watch = Watch::default();
        let sink = watch.clone();
        let options = JobOptions { lateness_ms: 0, ..JobOptions::default() };
        let started = Instant::now();
        let job = std::thread::spawn(move || {
            fraud_alerts::run(&ClusterConfig::threads(workers), options, Arc::new(payments), sink)
        });
        let mut rng = 7u64;
        for i in 0..args.payments as u64 {
            let card = lcg(&mut rng) % 50_000;
            let device = if lcg(&mut rng).is_multiple_of(50) { lcg(&mut rng) % 50_000 } else { card };
            tx.send(json(&Payment {
                ts: 1_000_000 + i * 10,
                payment: i,
                card,
                device,
                merchant: 1,
                amount_cents: 1 + lcg(&mut rng) % 20_000,
            }))?;
        }
        drop(tx);
        job.join().map_err(|_| anyhow::anyhow!("job panicked"))??;
        let secs = started.elapsed().as_secs_f64();
        let rate = args.payments as f64 / secs;
        md.push_str(&format!(
            "| {workers} | {} | {secs:.2} | {rate:.0} | {:.0} |\n",
            args.payments,
            rate / workers as f64
        ));
    }

    // Latency: steady traffic, then the payment that completes a ring.
    let (payments, tx) = ChannelSource::new("payments");
    let watch = Watch::default();
    let rings = Arc::new(Mutex::new(0u64));
    #[derive(Clone)]
    struct Alerts(Watch, Arc<Mutex<u64>>);
    impl Sink<Ring> for Alerts {
        fn write(&mut self, t: Time, u: &[(Ring, Diff)]) -> Result<(), BoxError> {
            *self.1.lock().map_err(|_| "poisoned")? += u.iter().filter(|(_, d)| *d > 0).count() as u64;
            self.0.write(t, u)
        }
        fn advanced(&mut self, upper: Time) -> Result<(), BoxError> {
            <Watch as Sink<Ring>>::advanced(&mut self.0, upper)
        }
    }
    let sink = Alerts(watch.clone(), rings.clone());
    let options = JobOptions { lateness_ms: 0, ..JobOptions::default() };
    let job =
        std::thread::spawn(move || fraud_alerts::run(&ClusterConfig::threads(2), options, Arc::new(payments), sink));
    let mut rng = 9u64;
    let mut t = 1_000_000u64;
    for i in 0..50_000u64 {
        let card = lcg(&mut rng) % 50_000;
        tx.send(json(&Payment { ts: t, payment: i, card, device: card, merchant: 1, amount_cents: 100 }))?;
        t += 10;
    }
    tx.send(json(&Payment { ts: t, payment: 0, card: 1, device: 1, merchant: 1, amount_cents: 1 }))?;
    watch.wait_past(t - 1);
    let mut latencies = Vec::new();
    for r in 0..50u64 {
        let (a, b, c) = (900_000 + 3 * r, 900_001 + 3 * r, 900_002 + 3 * r);
        let device = 800_000 + r;
        for (k, card) in [a, b].into_iter().enumerate() {
            tx.send(json(&Payment { ts: t + k as u64, payment: 0, card, device, merchant: 1, amount_cents: 40_000 }))?;
        }
        t += 2;
        tx.send(json(&Payment { ts: t, payment: 1, card: 77, device: 77, merchant: 1, amount_cents: 1 }))?;
        watch.wait_past(t - 1);
        let before = *rings.lock().expect("rings");
        let sent = Instant::now();
        tx.send(json(&Payment { ts: t + 1, payment: 0, card: c, device, merchant: 1, amount_cents: 40_000 }))?;
        tx.send(json(&Payment { ts: t + 2, payment: 1, card: 77, device: 77, merchant: 1, amount_cents: 1 }))?;
        watch.wait_past(t + 1);
        latencies.push(sent.elapsed().as_secs_f64() * 1_000.0);
        assert!(*rings.lock().expect("rings") > before, "the ring-completing payment raised an alert");
        t += 3;
    }
    drop(tx);
    job.join().map_err(|_| anyhow::anyhow!("job panicked"))??;
    latencies.sort_by(f64::total_cmp);
    md.push_str(&format!(
        "\nRing-completing payment to its alert (2 workers, 50,000 payments of background state, 50 rings): p50 {:.2} ms, p99 {:.2} ms.\n\n",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    ));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let machine = kappa_benches::machine(false);
    let mut md = format!("# Pipeline benchmarks\n\nMachine: {machine}. Command: `cargo run --release -p kappa-benches --bin pipelines_bench -- --users {} --edges {} --updates {} --payments {}`.\n\n", args.users, args.edges, args.updates, args.payments);
    fraud(&args, &mut md)?;
    ranked_feed_latency(&args, &mut md)?;
    print!("{md}");
    if let Some(path) = &args.out {
        std::fs::File::create(path)?.write_all(md.as_bytes())?;
    }
    Ok(())
}
