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
//! With the crate's `dbsp` feature (scripts/bench turns it on) a third column runs the same
//! queries on DBSP, Feldera's engine (`kappa_benches::peer`), over the same records in the same
//! rounds; its final output is checked against the batch reference before its time is reported.
//!
//! Run with: `cargo run --release -p kappa-benches --features dbsp --bin overhead_bench -- \
//!   --records 2000000 --out papers/results/overhead.md` (`scripts/bench` runs it).

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
    /// Runs per cell; the table shows the median.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
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
///
/// `per_round`: every update of a round (`BATCH` records of every partition) at the round's
/// number instead of its event time, as DBSP's one transaction per round has it.
fn bare<D, F, B>(
    workers: usize,
    logs: Arc<Vec<(PartitionId, Vec<Record>)>>,
    per_round: bool,
    decode: F,
    build: B,
) -> f64
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
        let mut round = 0u64;
        while at.iter().zip(&mine).any(|(a, log)| *a < log.len()) {
            for (p, log) in mine.iter().enumerate() {
                let end = (at[p] + BATCH).min(log.len());
                for record in &log[at[p]..end] {
                    if let Some((data, ts, diff)) = decode(record) {
                        let time = if per_round { round } else { assigners[p].assign(ts) };
                        input.update_at(data, time, diff);
                    }
                }
                at[p] = end;
            }
            round += 1;
            let open = (0..mine.len()).filter(|&p| at[p] < mine[p].len());
            let least = open.map(|p| assigners[p].watermark()).min().unwrap_or(u64::MAX - 1);
            input.advance_to(if per_round { round } else { least.max(*input.time()) });
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
fn without_sink<D, B>(
    workers: usize,
    logs: &Arc<Vec<(PartitionId, Vec<Record>)>>,
    input: &str,
    build: B,
) -> anyhow::Result<f64>
where
    D: differential_dataflow::ExchangeData + Ord,
    B: for<'s> Fn(&mut kappa_engine::Context<'s>) -> kappa_engine::Result<kappa_engine::Collection<'s, D>>
        + Send
        + Sync
        + 'static,
{
    let started = Instant::now();
    let source = Arc::new(MemorySource::shared(logs.clone()).with_batch(BATCH));
    let sources = kappa_engine::Sources::new().with_shared(input, source);
    kappa_engine::execute(&ClusterConfig::threads(workers), JobOptions::default(), sources, move |ctx| {
        let output = build(ctx)?;
        ctx.output(output.filter(|_| false), Counting::default());
        Ok(())
    })?;
    Ok(started.elapsed().as_secs_f64())
}

/// One run's seconds per column (`peer` is `None` without the `dbsp` feature).
struct Times {
    kappa: f64,
    /// Updates Kappa's sink received: one set per completed event time.
    kappa_updates: u64,
    no_sink: f64,
    bare: f64,
    /// The bare program with one time per round, as DBSP has it.
    bare_per_round: f64,
    /// DBSP's seconds and output updates: one set per transaction.
    peer: Option<(f64, u64)>,
}

fn timed<T, E: Into<anyhow::Error>>(run: impl FnOnce() -> Result<T, E>) -> anyhow::Result<f64> {
    let started = Instant::now();
    run().map_err(Into::into)?;
    Ok(started.elapsed().as_secs_f64())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One table row: the median of each column over the runs; the DBSP cells say how to get them
/// when the peer is not built.
fn row(pipeline: &str, workers: usize, runs: &[Times]) -> String {
    let kappa = median(runs.iter().map(|t| t.kappa).collect());
    let no_sink = median(runs.iter().map(|t| t.no_sink).collect());
    let bare = median(runs.iter().map(|t| t.bare).collect());
    let per_round = median(runs.iter().map(|t| t.bare_per_round).collect());
    let peer: Option<Vec<f64>> = runs.iter().map(|t| t.peer.map(|p| p.0)).collect();
    let (peer, versus) = match peer.map(median) {
        Some(p) => (format!("{p:.2}"), format!("{:.2}", kappa / p)),
        None => ("not built (`--features dbsp`)".to_string(), "-".to_string()),
    };
    let updates = match (runs[0].kappa_updates, runs[0].peer) {
        (k, Some((_, d))) => format!("{k} / {d}"),
        (k, None) => format!("{k} / -"),
    };
    format!(
        "| {pipeline} | {workers} | {kappa:.2} | {no_sink:.2} | {bare:.2} | {per_round:.2} | {peer} | {:.2} | {versus} | {updates} |\n",
        kappa / bare
    )
}

/// The DBSP runs, each checked against the batch reference; `None` without the `dbsp` feature.
mod peer {
    use super::*;
    use std::collections::BTreeMap;

    #[cfg(feature = "dbsp")]
    pub fn like_counts(
        workers: usize,
        logs: &[(PartitionId, Vec<Record>)],
        reference: &BTreeMap<u64, u64>,
    ) -> anyhow::Result<Option<(f64, u64)>> {
        let run = kappa_benches::peer::like_counts(workers, logs, BATCH)?;
        if &run.output != reference {
            let wrong = reference.iter().filter(|(k, v)| run.output.get(*k) != Some(*v)).count();
            anyhow::bail!("DBSP's like counts differ from the batch reference on {wrong} of {} posts", reference.len());
        }
        Ok(Some((run.seconds, run.updates)))
    }

    #[cfg(feature = "dbsp")]
    pub fn q4(
        workers: usize,
        logs: &[(PartitionId, Vec<Record>)],
        reference: &BTreeMap<nexmark::Row, i64>,
    ) -> anyhow::Result<Option<(f64, u64)>> {
        let run = kappa_benches::peer::q4(workers, logs, BATCH)?;
        let rows: BTreeMap<nexmark::Row, i64> = run
            .output
            .iter()
            .map(|(&category, &average)| (vec![nexmark::Value::Int(category), nexmark::Value::Int(average)], 1))
            .collect();
        anyhow::ensure!(&rows == reference, "DBSP's q4 differs from the batch reference");
        Ok(Some((run.seconds, run.updates)))
    }

    #[cfg(not(feature = "dbsp"))]
    pub fn like_counts(
        _: usize,
        _: &[(PartitionId, Vec<Record>)],
        _: &BTreeMap<u64, u64>,
    ) -> anyhow::Result<Option<(f64, u64)>> {
        Ok(None)
    }

    #[cfg(not(feature = "dbsp"))]
    pub fn q4(
        _: usize,
        _: &[(PartitionId, Vec<Record>)],
        _: &BTreeMap<nexmark::Row, i64>,
    ) -> anyhow::Result<Option<(f64, u64)>> {
        Ok(None)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let machine = kappa_benches::machine(false);
    let mut md = format!(
        "# Engine overhead\n\n{} records over {PARTITIONS} partitions from memory, the same parsing, times and differential operators; Kappa versus a bare timely/differential program and DBSP, in the same run; each cell the median of {} runs.\nMachine: {machine}. Command: `cargo run --release -p kappa-benches --features dbsp --bin overhead_bench -- --records {} --repeat {}`.\n\n| pipeline | workers | Kappa s | Kappa, output dropped before the sink, s | bare s | bare, one time per round, s | DBSP s | Kappa / bare | Kappa / DBSP | output updates, Kappa / DBSP |\n|---|---|---|---|---|---|---|---|---|---|\n",
        args.records, args.repeat, args.records, args.repeat
    );
    let like_events: Vec<_> = like_stream(&LikeStreamConfig { partitions: 1, ..LikeStreamConfig::new(args.records) });
    let likes: Vec<Record> = like_events
        .iter()
        .map(|(_, like)| Record {
            offset: 0,
            timestamp: Some(like.ts as i64),
            key: None,
            value: Some(bytes::Bytes::from(serde_json::to_vec(like).expect("json"))),
        })
        .collect();
    let like_reference = like_counts::reference(like_events.iter().map(|(_, like)| like));
    let like_logs = Arc::new(partitioned(likes, like_counts::INPUT));
    let generated = nexmark::generate(args.records);
    let q4_reference = nexmark::reference(nexmark::Query::Q4, &generated);
    let events = nexmark::records(&generated);
    let nexmark_logs = Arc::new(partitioned(events, nexmark::INPUT));

    for workers in [1usize, 2] {
        // The runs of one row alternate, `--repeat` rounds, and each cell is the median: the
        // machine's noise (a few percent from run to run) then hits every column alike.
        let mut like_runs = Vec::new();
        let mut q4_runs = Vec::new();
        // The bare programs, at event-time granularity or at DBSP's (one time per round).
        let bare_likes = |per_round| {
            bare(
                workers,
                like_logs.clone(),
                per_round,
                |r| like_counts::decode_pair(r).ok(),
                |pairs| like_counts::like_counts(pairs).probe().0,
            )
        };
        let bare_q4 = |per_round| {
            bare(
                workers,
                nexmark_logs.clone(),
                per_round,
                |r| nexmark::decode(r).ok().map(|(e, ts)| (e, ts, 1)),
                |events| nexmark::query(nexmark::Query::Q4, events).probe().0,
            )
        };
        for _ in 0..args.repeat {
            let output = Counting::default();
            like_runs.push(Times {
                kappa: timed(|| {
                    like_counts::run(
                        &ClusterConfig::threads(workers),
                        JobOptions::default(),
                        Arc::new(MemorySource::shared(like_logs.clone()).with_batch(BATCH)),
                        output.clone(),
                    )
                })?,
                kappa_updates: output.0.load(Ordering::Relaxed),
                // Where the difference lies: the same job with its output filtered away before the sink.
                no_sink: without_sink(workers, &like_logs, like_counts::INPUT, |ctx| {
                    Ok(like_counts::like_counts(like_counts::read_pairs(ctx, like_counts::INPUT)?))
                })?,
                bare: bare_likes(false),
                bare_per_round: bare_likes(true),
                peer: peer::like_counts(workers, &like_logs, &like_reference)?,
            });
            let output = Counting::default();
            q4_runs.push(Times {
                kappa: timed(|| {
                    nexmark::run(
                        &ClusterConfig::threads(workers),
                        JobOptions::default(),
                        nexmark::Query::Q4,
                        Arc::new(MemorySource::shared(nexmark_logs.clone()).with_batch(BATCH)),
                        output.clone(),
                    )
                })?,
                kappa_updates: output.0.load(Ordering::Relaxed),
                no_sink: without_sink(workers, &nexmark_logs, nexmark::INPUT, |ctx| {
                    Ok(nexmark::query(nexmark::Query::Q4, ctx.input(nexmark::INPUT, nexmark::decode)?))
                })?,
                bare: bare_q4(false),
                bare_per_round: bare_q4(true),
                peer: peer::q4(workers, &nexmark_logs, &q4_reference)?,
            });
        }
        md.push_str(&row("like counts", workers, &like_runs));
        md.push_str(&row("Nexmark q4", workers, &q4_runs));
        eprintln!("{workers} worker(s) done");
    }
    md.push_str(
        "\nKappa and the bare program give every record its event time (milliseconds, raised to the partition's watermark) and Kappa's sink receives the output at every completed time; DBSP runs one transaction per round of 10,000 records per partition, so its output has one set of changes per round (fewer updates: changes within a round cancel). The column 'bare, one time per round' runs the bare differential program at DBSP's granularity: the engines compared like for like.\n\nGoals: Kappa within 10% of the bare program (ratio at most 1.10), and faster than DBSP (ratio below 1).\n",
    );
    print!("{md}");
    if let Some(path) = &args.out {
        std::fs::File::create(path)?.write_all(md.as_bytes())?;
    }
    Ok(())
}
