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
//! Like counts also run on Pathway (PyPI `pathway`, a differential-dataflow engine with a Python
//! API: what a user would pick instead of Kappa for a Python pipeline) at 1 and 2 threads: the
//! same like events as a JSON lines file, read in static mode by `benches/peers/pathway_like_counts.py`
//! under the virtualenv's Python (`KAPPA_PATHWAY_PYTHON`, default
//! `~/.cache/kappa-tools/pathway-venv/bin/python`; `scripts/bench` installs it). Its output is
//! checked against the same batch reference before its time counts; a wrong result is reported
//! as failed. A second table sets every engine's like counts against its CPU time, so engines
//! are compared per core, not only by wall time on however many cores they kept busy.
//!
//! Run with: `cargo run --release -p kappa-benches --features dbsp --bin overhead_bench -- \
//!   --records 2000000 --out papers/results/overhead.md` (`scripts/bench` runs it).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use differential_dataflow::input::Input;
use kappa_engine::{
    BoxError, ClusterConfig, Diff, JobOptions, MemorySource, PartitionId, Record, Sink, Time, TimeAssigner,
};
use kappa_examples::generator::{like_stream, LikeStreamConfig};
use kappa_examples::like_counts::PostLikes;
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

/// Partitioned (see the engine's `sink` module): every worker counts the rows of its shards, as a
/// Kafka output with a partition per worker writes them.
impl<D: Clone + std::hash::Hash + 'static> Sink<D> for Counting {
    fn write(&mut self, _time: Time, updates: &[(D, Diff)]) -> Result<(), BoxError> {
        self.0.fetch_add(updates.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    fn partitioned(&self) -> bool {
        true
    }
    fn shard(&self, data: &D) -> u64 {
        differential_dataflow::Hashable::hashed(data)
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
    D: differential_dataflow::ExchangeData + Ord + std::hash::Hash,
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
    /// CPU seconds of Kappa's run, all threads (`None` where /proc is missing).
    kappa_cpu: Option<f64>,
    /// Updates Kappa's sink received: one set per completed event time.
    kappa_updates: u64,
    no_sink: f64,
    bare: f64,
    /// The bare program with one time per round, as DBSP has it.
    bare_per_round: f64,
    /// DBSP's seconds and output updates: one set per transaction.
    peer: Option<(f64, u64)>,
    /// CPU seconds of DBSP's run.
    peer_cpu: Option<f64>,
}

fn timed<T, E: Into<anyhow::Error>>(run: impl FnOnce() -> Result<T, E>) -> anyhow::Result<f64> {
    let started = Instant::now();
    run().map_err(Into::into)?;
    Ok(started.elapsed().as_secs_f64())
}

/// CPU seconds this process has used so far, user and system, over all its threads, exited ones
/// included (Linux `/proc/self/stat`, fields 14 and 15, in ticks of USER_HZ, which Linux fixes
/// at 100 for user space); `None` where there is no /proc. Per-core figures divide by this: wall
/// time alone would favour an engine that keeps more cores busy for the same work.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Runs `run`, returning its result and the CPU seconds it took.
fn cpu_of<T>(run: impl FnOnce() -> T) -> (T, Option<f64>) {
    let before = process_cpu_seconds();
    let out = run();
    (out, before.zip(process_cpu_seconds()).map(|(b, a)| a - b))
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

/// Pathway, the Python peer: found, run as a child process, and its output checked.
mod pathway {
    use super::*;
    use std::process::{Command, Stdio};

    /// The version `scripts/bench` installs.
    pub const VERSION: &str = "0.33.0";

    /// Like counts on Pathway; found through the crate's directory so the bench runs from anywhere.
    const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/pathway_like_counts.py");

    /// The virtualenv `scripts/bench` installs Pathway into: `$KAPPA_TOOLS/pathway-venv`, by
    /// default under `~/.cache/kappa-tools` (where scripts/lib/servers.sh keeps its tools).
    fn venv() -> PathBuf {
        let tools = std::env::var_os("KAPPA_TOOLS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/kappa-tools"));
        tools.join("pathway-venv")
    }

    /// The last non-empty line of a child's output: a Python traceback's last line names the error.
    fn last_line(bytes: &[u8]) -> String {
        let text = String::from_utf8_lossy(bytes);
        text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(no output)").trim().to_string()
    }

    /// A Python that imports Pathway.
    pub struct Pathway {
        python: PathBuf,
        /// `pathway.__version__`, as the table names it.
        pub version: String,
    }

    /// Pathway if `KAPPA_PATHWAY_PYTHON` (default: the virtualenv's Python) imports it; otherwise
    /// why not, and how to install it.
    pub fn find() -> Result<Pathway, String> {
        let python =
            std::env::var_os("KAPPA_PATHWAY_PYTHON").map(PathBuf::from).unwrap_or_else(|| venv().join("bin/python"));
        let venv = venv();
        let install = format!(
            "install it with `python3 -m venv {0} && {0}/bin/pip install pathway=={VERSION}` (scripts/bench does this when it is missing), or set KAPPA_PATHWAY_PYTHON to a Python that has it",
            venv.display()
        );
        let probe = Command::new(&python)
            .args(["-c", "import pathway; print(pathway.__version__)"])
            .stdin(Stdio::null())
            .output();
        match probe {
            Err(e) => Err(format!("cannot run {}: {e}; {install}", python.display())),
            Ok(out) if !out.status.success() => {
                Err(format!("{} cannot import pathway ({}); {install}", python.display(), last_line(&out.stderr)))
            }
            Ok(out) => Ok(Pathway { python, version: String::from_utf8_lossy(&out.stdout).trim().to_string() }),
        }
    }

    /// One output row of the script: Pathway's jsonlines writer adds the change's `diff` (and `time`).
    #[derive(serde::Deserialize)]
    struct Row {
        post: u64,
        likes: u64,
        diff: isize,
    }

    /// What the script prints when its run is done.
    #[derive(serde::Deserialize)]
    struct Report {
        threads: usize,
        seconds: f64,
        cpu_seconds: f64,
    }

    impl Pathway {
        /// Like counts over the JSON lines in `input` on `threads` threads: wall and CPU seconds of
        /// the run, or, if it failed or its result differs from `reference`, why (never a time).
        pub fn like_counts(
            &self,
            threads: usize,
            input: &Path,
            output: &Path,
            reference: &BTreeMap<u64, u64>,
        ) -> Result<(f64, f64), String> {
            // A previous run's output must not pass for this one's.
            match std::fs::remove_file(output) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(format!("cannot remove the previous output {}: {e}", output.display()))
                }
                _ => {}
            }
            let run = Command::new(&self.python)
                .arg(SCRIPT)
                .arg(input)
                .arg(output)
                .env("PATHWAY_THREADS", threads.to_string())
                .env("PATHWAY_PROCESSES", "1")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run {} {SCRIPT}: {e}", self.python.display()))?;
            if !run.status.success() {
                return Err(format!("{SCRIPT} {}: {}", run.status, last_line(&run.stderr)));
            }
            let stdout = String::from_utf8_lossy(&run.stdout);
            let report: Report =
                stdout.lines().rev().find_map(|l| serde_json::from_str(l).ok()).ok_or_else(|| {
                    format!("{SCRIPT} printed no timing line (its stdout: {})", last_line(&run.stdout))
                })?;
            if report.threads != threads {
                return Err(format!("{SCRIPT} ran {} threads, not the {threads} asked for", report.threads));
            }
            let text = std::fs::read_to_string(output)
                .map_err(|e| format!("{SCRIPT} left no readable output {}: {e}", output.display()))?;
            let rows = text
                .lines()
                .map(|l| serde_json::from_str::<Row>(l).map_err(|e| format!("output line {l:?}: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            let result = like_counts::final_result(
                rows.into_iter().map(|r| (PostLikes { post: r.post, likes: r.likes }, r.diff)),
            )?;
            if &result != reference {
                let wrong = reference.keys().chain(result.keys()).collect::<std::collections::BTreeSet<_>>();
                let wrong = wrong.into_iter().filter(|k| result.get(k) != reference.get(k)).count();
                return Err(format!(
                    "its like counts differ from the batch reference on {wrong} of {} posts",
                    reference.len()
                ));
            }
            Ok((report.seconds, report.cpu_seconds))
        }
    }
}

/// Medians of one engine's like-count runs at one thread count: wall seconds and CPU seconds
/// (`None` if any run's CPU time is unknown).
struct Cost {
    seconds: f64,
    cpu: Option<f64>,
}

impl Cost {
    fn of(runs: impl IntoIterator<Item = (f64, Option<f64>)>) -> Cost {
        let (wall, cpu): (Vec<f64>, Vec<Option<f64>>) = runs.into_iter().unzip();
        Cost { seconds: median(wall), cpu: cpu.into_iter().collect::<Option<Vec<f64>>>().map(median) }
    }

    /// Records per CPU-second: the per-core rate.
    fn per_cpu(&self, records: usize) -> Option<f64> {
        self.cpu.map(|cpu| records as f64 / cpu)
    }
}

/// One row of the per-core table; `kappa` (Kappa's cost at the same threads) gives the last
/// column, Kappa's lead per core: its records per CPU-second over this engine's.
fn per_core_row(engine: &str, threads: usize, records: usize, cost: &Cost, kappa: Option<&Cost>) -> String {
    let cpu = cost.cpu.map_or("-".to_string(), |c| format!("{c:.2}"));
    let per_cpu = cost.per_cpu(records).map_or("-".to_string(), |r| format!("{r:.0}"));
    let lead = kappa
        .and_then(|k| k.per_cpu(records).zip(cost.per_cpu(records)))
        .map_or("-".to_string(), |(k, e)| format!("{:.2}", k / e));
    format!(
        "| {engine} | {threads} | {:.2} | {:.0} | {cpu} | {per_cpu} | {lead} |\n",
        cost.seconds,
        records as f64 / cost.seconds
    )
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
    // Pathway reads the same like events as a JSON lines file (the same serialization as the
    // records' values above), from a temporary directory that goes when the bench ends.
    let pathway = pathway::find().map_err(|why| eprintln!("overhead_bench: Pathway left out of the table: {why}")).ok();
    let pathway_dir = tempfile::tempdir()?;
    let pathway_input = pathway_dir.path().join("likes.jsonl");
    let pathway_output = pathway_dir.path().join("like_counts.jsonl");
    if pathway.is_some() {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&pathway_input)?);
        for (_, like) in &like_events {
            serde_json::to_writer(&mut file, like)?;
            file.write_all(b"\n")?;
        }
        file.flush()?;
    }
    let mut per_core = String::new();
    let mut pathway_failed = false;
    let generated = nexmark::generate(args.records);
    let q4_reference = nexmark::reference(nexmark::Query::Q4, &generated);
    let events = nexmark::records(&generated);
    let nexmark_logs = Arc::new(partitioned(events, nexmark::INPUT));

    for workers in [1usize, 2] {
        // The runs of one row alternate, `--repeat` rounds, and each cell is the median: the
        // machine's noise (a few percent from run to run) then hits every column alike.
        let mut like_runs = Vec::new();
        let mut q4_runs = Vec::new();
        let mut pathway_runs: Vec<Result<(f64, f64), String>> = Vec::new();
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
            let (kappa, kappa_cpu) = cpu_of(|| {
                timed(|| {
                    like_counts::run(
                        &ClusterConfig::threads(workers),
                        JobOptions::default(),
                        Arc::new(MemorySource::shared(like_logs.clone()).with_batch(BATCH)),
                        output.clone(),
                    )
                })
            });
            let kappa = kappa?;
            // Where the difference lies: the same job with its output filtered away before the sink.
            let no_sink = without_sink(workers, &like_logs, like_counts::INPUT, |ctx| {
                Ok(like_counts::like_counts(like_counts::read_pairs(ctx, like_counts::INPUT)?))
            })?;
            let (bare, bare_per_round) = (bare_likes(false), bare_likes(true));
            let (peer, peer_cpu) = cpu_of(|| peer::like_counts(workers, &like_logs, &like_reference));
            like_runs.push(Times {
                kappa,
                kappa_cpu,
                kappa_updates: output.0.load(Ordering::Relaxed),
                no_sink,
                bare,
                bare_per_round,
                peer: peer?,
                peer_cpu,
            });
            if let Some(pathway) = &pathway {
                let run = pathway.like_counts(workers, &pathway_input, &pathway_output, &like_reference);
                if let Err(why) = &run {
                    eprintln!("overhead_bench: Pathway at {workers} thread(s) FAILED, reported as failed: {why}");
                }
                pathway_runs.push(run);
            }
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
                // The per-core table covers like counts, the query every peer runs.
                kappa_cpu: None,
                kappa_updates: output.0.load(Ordering::Relaxed),
                no_sink: without_sink(workers, &nexmark_logs, nexmark::INPUT, |ctx| {
                    Ok(nexmark::query(nexmark::Query::Q4, ctx.input(nexmark::INPUT, nexmark::decode)?))
                })?,
                bare: bare_q4(false),
                bare_per_round: bare_q4(true),
                peer: peer::q4(workers, &nexmark_logs, &q4_reference)?,
                peer_cpu: None,
            });
        }
        md.push_str(&row("like counts", workers, &like_runs));
        md.push_str(&row("Nexmark q4", workers, &q4_runs));
        let kappa = Cost::of(like_runs.iter().map(|t| (t.kappa, t.kappa_cpu)));
        per_core.push_str(&per_core_row("Kappa", workers, args.records, &kappa, None));
        let dbsp: Option<Vec<(f64, Option<f64>)>> =
            like_runs.iter().map(|t| t.peer.map(|p| (p.0, t.peer_cpu))).collect();
        if let Some(dbsp) = dbsp {
            per_core.push_str(&per_core_row("DBSP", workers, args.records, &Cost::of(dbsp), Some(&kappa)));
        }
        if let Some(pathway) = &pathway {
            let engine = format!("Pathway {}", pathway.version);
            match pathway_runs.into_iter().collect::<Result<Vec<_>, _>>() {
                Ok(runs) => {
                    let cost = Cost::of(runs.into_iter().map(|(s, cpu)| (s, Some(cpu))));
                    per_core.push_str(&per_core_row(&engine, workers, args.records, &cost, Some(&kappa)));
                }
                Err(why) => {
                    pathway_failed = true;
                    // Markdown cells hold no pipes or line breaks.
                    let why = why.replace('|', "/").replace('\n', " ");
                    per_core.push_str(&format!("| {engine} | {workers} | FAILED: {why} | - | - | - | - |\n"));
                }
            }
        }
        eprintln!("{workers} worker(s) done");
    }
    md.push_str(
        "\nKappa and the bare program give every record its event time (milliseconds, raised to the partition's watermark) and Kappa's sink receives the output at every completed time; DBSP runs one transaction per round of 10,000 records per partition, so its output has one set of changes per round (fewer updates: changes within a round cancel). The column 'bare, one time per round' runs the bare differential program at DBSP's granularity: the engines compared like for like.\n\nGoals: Kappa within 10% of the bare program (ratio at most 1.10), and faster than DBSP (ratio below 1).\n",
    );
    md.push_str(&format!(
        "\n## Like counts per core\n\nThe same {} like events; records/s is records over wall seconds, records per CPU-second is records over the CPU time (user and system, all threads) the run took, the rate per core kept busy; Kappa's lead per core is Kappa's records per CPU-second over the engine's at the same threads (above 1: Kappa ahead). Medians of {} runs.\n\n| engine | threads | s | records/s | CPU s | records per CPU-second | Kappa's lead per core |\n|---|---|---|---|---|---|---|\n{per_core}\n",
        args.records, args.repeat
    ));
    match &pathway {
        Some(p) => md.push_str(&format!(
            "Pathway {} (PyPI `pathway`), like counts in its Python API (`benches/peers/pathway_like_counts.py`, the same definition: per (user, post) the likes minus unlikes, a pair counted while positive): the like events as a JSON lines file read with `pw.io.jsonlines.read(mode=\"static\")`, so the whole file is one commit and the result is computed once, where Kappa maintains it at every completed event time; `PATHWAY_THREADS` 1 and 2, one process. Its seconds and CPU seconds cover `pw.run()` (reading and parsing the file, the dataflow, writing the output), not starting Python or importing Pathway; Kappa and DBSP read the records from memory. Every Pathway run's output is summed and checked against the batch reference before its time counts{}.\n\n",
            p.version,
            if pathway_failed { "; a run that failed the check is marked FAILED and has no time" } else { "" }
        )),
        None => md.push_str(&format!(
            "Pathway was not run: no Python with `pathway` found (`scripts/bench` installs Pathway {} into a virtualenv).\n\n",
            pathway::VERSION
        )),
    }
    md.push_str("Goal: Kappa ahead of DBSP and Pathway per core (lead above 1).\n");
    print!("{md}");
    if let Some(path) = &args.out {
        std::fs::File::create(path)?.write_all(md.as_bytes())?;
    }
    Ok(())
}
