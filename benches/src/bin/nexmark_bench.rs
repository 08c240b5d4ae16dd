//! Nexmark q0–q8 in process: events/s per worker, on 1 and 2 workers.
//!
//! Events come from the `nexmark` crate's generator, serialized as the JSON records a Kafka topic
//! would hold, and are fed from memory over 4 partitions (decoding is part of the measured work).
//! The sink counts updates and keeps nothing.
//!
//! Run with: `cargo run --release -p kappa-benches --bin nexmark_bench -- --events 1000000 \
//!   --out papers/results/nexmark.md` (`scripts/bench` runs it).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use kappa_engine::{BoxError, ClusterConfig, Diff, JobOptions, MemorySource, PartitionId, Sink, Time};
use kappa_examples::nexmark::{self, Query, Row};

#[derive(Parser)]
struct Args {
    /// Events per run.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Markdown file to write.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Clone, Default)]
struct Counting(Arc<AtomicU64>);

/// Partitioned (see the engine's `sink` module): every worker counts the rows of its shards.
impl Sink<Row> for Counting {
    fn write(&mut self, _time: Time, updates: &[(Row, Diff)]) -> Result<(), BoxError> {
        self.0.fetch_add(updates.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    fn partitioned(&self) -> bool {
        true
    }
    fn shard(&self, data: &Row) -> u64 {
        differential_dataflow::Hashable::hashed(data)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    eprintln!("generating {} nexmark events", args.events);
    let events = nexmark::generate(args.events);
    let partitions = 4;
    let mut logs: Vec<Vec<kappa_engine::Record>> = vec![Vec::new(); partitions];
    for (i, record) in nexmark::records(&events).into_iter().enumerate() {
        let log = &mut logs[i % partitions];
        log.push(kappa_engine::Record { offset: log.len() as i64, ..record });
    }
    drop(events);
    let source = MemorySource::new(
        logs.into_iter().enumerate().map(|(p, log)| (PartitionId::new(nexmark::INPUT, p as i32), log)).collect(),
    )
    .with_batch(10_000);
    let machine = kappa_benches::machine(false);
    let mut md = format!(
        "# Nexmark benchmark\n\n{} events of the `nexmark` generator (JSON records over 4 partitions, decoded in the run), in process.\nMachine: {machine}. Command: `cargo run --release -p kappa-benches --bin nexmark_bench -- --events {}`.\n\n| query | workers | seconds | events/s | events/s per worker | output updates |\n|---|---|---|---|---|---|\n",
        args.events, args.events
    );
    let bar = kappa_runner::progress::counted((Query::ALL.len() * 2) as u64, "nexmark runs");
    for q in Query::ALL {
        for workers in [1usize, 2] {
            let sink = Counting::default();
            let started = Instant::now();
            let report = nexmark::run(
                &ClusterConfig::threads(workers),
                JobOptions::default(),
                q,
                Arc::new(source.clone()),
                sink.clone(),
            )?;
            let seconds = started.elapsed().as_secs_f64();
            anyhow::ensure!(report.records == args.events as u64, "{q:?} read {} events", report.records);
            let rate = args.events as f64 / seconds;
            md.push_str(&format!(
                "| {q:?} | {workers} | {seconds:.2} | {rate:.0} | {:.0} | {} |\n",
                rate / workers as f64,
                sink.0.load(Ordering::Relaxed)
            ));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    md.push_str("\nGoals (per worker): q0 at least 1,000,000 events/s, q4 at least 300,000 events/s.\n");
    print!("{md}");
    if let Some(path) = &args.out {
        std::fs::File::create(path)?.write_all(md.as_bytes())?;
    }
    Ok(())
}
