//! Engine overhead: like counts and Nexmark q4 run by Kappa and by a bare timely/differential
//! program, side by side in the same run, over the same records.
//!
//! Both read the same JSON records from memory (4 partitions), parse them and derive the same
//! times (timestamp raised to the partition's watermark, lateness 5 s), and run the same
//! differential operators (the pipelines' own functions, which are plain differential dataflow).
//! What differs is the runtime: Kappa's partitioned source operator with capabilities at the
//! watermarks, bad-record routing, and the consistent sink (every update exchanged to worker 0 and
//! consolidated per completed time); the bare program feeds an `InputSession`, advances it to the
//! least watermark after each batch, and only probes the output.
//!
//! Run with: `cargo run --release -p kappa-benches --bin overhead_bench -- --records 2000000 \
//!   --out papers/results/overhead.md` (`scripts/bench` runs it).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use differential_dataflow::input::Input;
use kappa_engine::{
    BoxError, ClusterConfig, Diff, JobOptions, MemorySource, PartitionId, Record, Sink, Time, TimeAssigner,
};
use kappa_examples::generator::{like_stream, LikeStreamConfig};
use kappa_examples::{like_counts, nexmark};

#[derive(Parser)]
struct Args {
    /// Records per run (likes; Nexmark events).
    #[arg(long, default_value_t = 2_000_000)]
    records: usize,
    /// Markdown file to write.
    #[arg(long)]
    out: Option<PathBuf>,
}

const PARTITIONS: usize = 4;
const BATCH: usize = 10_000;
const LATENESS_MS: u64 = 5_000;

#[derive(Clone, Default)]
struct Counting(Arc<AtomicU64>);

impl<D: Clone + 'static> Sink<D> for Counting {
    fn write(&mut self, _time: Time, updates: &[(D, Diff)]) -> Result<(), BoxError> {
        self.0.fetch_add(updates.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Records spread over the partitions, offsets per partition.
fn partitioned(records: Vec<Record>, topic: &str) -> Vec<(PartitionId, Vec<Record>)> {
    let mut logs: Vec<Vec<Record>> = vec![Vec::new(); PARTITIONS];
    for (i, record) in records.into_iter().enumerate() {
        let log = &mut logs[i % PARTITIONS];
        log.push(Record { offset: log.len() as i64, ..record });
    }
    logs.into_iter().enumerate().map(|(p, log)| (PartitionId::new(topic, p as i32), log)).collect()
}

/// The bare program: each worker feeds its partitions, batch by batch, into an input session.
fn bare<D, F, B>(workers: usize, logs: Arc<Vec<(PartitionId, Vec<Record>)>>, decode: F, build: B) -> f64
where
    D: differential_dataflow::ExchangeData + std::hash::Hash,
    F: Fn(&Record) -> Option<(D, u64, isize)> + Send + Sync + 'static,
    B: for<'s> Fn(
            differential_dataflow::VecCollection<'s, u64, D, isize>,
        ) -> timely::dataflow::operators::probe::Handle<u64>
        + Send
        + Sync
        + 'static,
{
    let started = Instant::now();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, collection) = scope.new_collection::<D, isize>();
            (input, build(collection))
        });
        let mine: Vec<&Vec<Record>> =
            logs.iter().enumerate().filter(|(i, _)| i % peers == index).map(|(_, (_, log))| log).collect();
        let mut assigners = vec![TimeAssigner::new(LATENESS_MS); mine.len()];
        let mut at = vec![0usize; mine.len()];
        while at.iter().zip(&mine).any(|(a, log)| *a < log.len()) {
            for (p, log) in mine.iter().enumerate() {
                let end = (at[p] + BATCH).min(log.len());
                for record in &log[at[p]..end] {
                    if let Some((data, ts, diff)) = decode(record) {
                        input.update_at(data, assigners[p].assign(ts), diff);
                    }
                }
                at[p] = end;
            }
            let open = (0..mine.len()).filter(|&p| at[p] < mine[p].len());
            let least = open.map(|p| assigners[p].watermark()).min().unwrap_or(u64::MAX - 1);
            input.advance_to(least.max(*input.time()));
            input.flush();
            worker.step();
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    })
    .expect("timely runs")
    .join()
    .into_iter()
    .for_each(|r| r.expect("worker"));
    started.elapsed().as_secs_f64()
}

/// Seconds for a Kappa job whose output `build` makes, filtered away before the sink: where the
/// difference to the bare program lies.
fn without_sink<D, B>(workers: usize, logs: &[(PartitionId, Vec<Record>)], input: &str, build: B) -> anyhow::Result<f64>
where
    D: differential_dataflow::ExchangeData + Ord,
    B: for<'s> Fn(&mut kappa_engine::Context<'s>) -> kappa_engine::Result<kappa_engine::Collection<'s, D>>
        + Send
        + Sync
        + 'static,
{
    let started = Instant::now();
    let source = Arc::new(MemorySource::new(logs.to_vec()).with_batch(BATCH));
    let sources = kappa_engine::Sources::new().with_shared(input, source);
    kappa_engine::execute(&ClusterConfig::threads(workers), JobOptions::default(), sources, move |ctx| {
        let output = build(ctx)?;
        ctx.output(output.filter(|_| false), Counting::default());
        Ok(())
    })?;
    Ok(started.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let machine = kappa_benches::machine(false);
    let mut md = format!(
        "# Engine overhead\n\n{} records over {PARTITIONS} partitions from memory, the same parsing, times and differential operators; Kappa versus a bare timely/differential program, in the same run.\nMachine: {machine}. Command: `cargo run --release -p kappa-benches --bin overhead_bench -- --records {}`.\n\n| pipeline | workers | Kappa s | Kappa, output dropped before the sink, s | bare s | Kappa / bare |\n|---|---|---|---|---|---|\n",
        args.records, args.records
    );
    let likes: Vec<Record> = like_stream(&LikeStreamConfig { partitions: 1, ..LikeStreamConfig::new(args.records) })
        .into_iter()
        .map(|(_, like)| Record {
            offset: 0,
            timestamp: Some(like.ts as i64),
            key: None,
            value: Some(bytes::Bytes::from(serde_json::to_vec(&like).expect("json"))),
        })
        .collect();
    let like_logs = Arc::new(partitioned(likes, like_counts::INPUT));
    let events = nexmark::records(&nexmark::generate(args.records));
    let nexmark_logs = Arc::new(partitioned(events, nexmark::INPUT));

    for workers in [1usize, 2] {
        // like counts
        let started = Instant::now();
        like_counts::run(
            &ClusterConfig::threads(workers),
            JobOptions::default(),
            Arc::new(MemorySource::new(like_logs.to_vec()).with_batch(BATCH)),
            Counting::default(),
        )?;
        let kappa_s = started.elapsed().as_secs_f64();
        // Where the difference lies: the same job with its output filtered away before the sink.
        let no_sink_s = without_sink(workers, &like_logs, like_counts::INPUT, |ctx| {
            Ok(like_counts::like_counts(like_counts::read_pairs(ctx, like_counts::INPUT)?))
        })?;
        let bare_s = bare(
            workers,
            like_logs.clone(),
            |r| like_counts::decode_pair(r).ok(),
            |pairs| like_counts::like_counts(pairs).probe().0,
        );
        md.push_str(&format!(
            "| like counts | {workers} | {kappa_s:.2} | {no_sink_s:.2} | {bare_s:.2} | {:.2} |\n",
            kappa_s / bare_s
        ));

        // Nexmark q4
        let started = Instant::now();
        nexmark::run(
            &ClusterConfig::threads(workers),
            JobOptions::default(),
            nexmark::Query::Q4,
            Arc::new(MemorySource::new(nexmark_logs.to_vec()).with_batch(BATCH)),
            Counting::default(),
        )?;
        let kappa_s = started.elapsed().as_secs_f64();
        let no_sink_s = without_sink(workers, &nexmark_logs, nexmark::INPUT, |ctx| {
            Ok(nexmark::query(nexmark::Query::Q4, ctx.input(nexmark::INPUT, nexmark::decode)?))
        })?;
        let bare_s = bare(
            workers,
            nexmark_logs.clone(),
            |r| nexmark::decode(r).ok().map(|(e, ts)| (e, ts, 1)),
            |events| nexmark::query(nexmark::Query::Q4, events).probe().0,
        );
        md.push_str(&format!(
            "| Nexmark q4 | {workers} | {kappa_s:.2} | {no_sink_s:.2} | {bare_s:.2} | {:.2} |\n",
            kappa_s / bare_s
        ));
        eprintln!("{workers} worker(s) done");
    }
    md.push_str("\nGoal: Kappa within 10% of the bare program (ratio at most 1.10).\n");
    print!("{md}");
    if let Some(path) = &args.out {
        std::fs::File::create(path)?.write_all(md.as_bytes())?;
    }
    Ok(())
}
