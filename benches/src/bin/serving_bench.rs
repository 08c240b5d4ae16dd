//! Serving: like counts run live on Tansu at a steady produce rate while HTTP clients on loopback
//! read them, and the same reads go to the PostgreSQL table that the job's Postgres output
//! maintains (what a user would otherwise serve from), in one run:
//!
//! - point lookups per second per core of the serving process (its CPU time, from `/proc`), with
//!   latency p50/p99 seen by the clients;
//! - read-your-writes: produce one like, then read its post with `wait_for=` the offset the
//!   delivery report gave; produce → visible p50/p99 (the answer must count the like);
//! - the same lookups against PostgreSQL (per core of the PostgreSQL server processes), and
//!   produce → visible there (poll the table until the like's row appears).
//!
//! Run with (`scripts/bench` runs it with the servers it starts):
//! `cargo build --release && cargo run --release -p kappa-benches --bin serving_bench -- \
//!   --brokers HOST:PORT --postgres postgres://USER@HOST:PORT/DB --out papers/results/serving.md`
//! (`KAPPA_TANSU_BIN` names the tansu binary that creates the topic.)

use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context as _};
use clap::Parser;
use kappa_connectors::kafka::producer::{produce, AckedProducer, OutgoingRecord};
use kappa_examples::like_counts::{Kind, Like};

#[derive(Parser)]
struct Args {
    /// Kafka (Tansu) bootstrap address.
    #[arg(long)]
    brokers: String,
    /// PostgreSQL for the side-by-side (the job's `--output postgres://...`); without it only
    /// Kappa's own serving is measured.
    #[arg(long)]
    postgres: Option<String>,
    /// Likes produced per second, steadily, across the partitions.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Distinct posts the steady traffic likes (and the lookups ask for).
    #[arg(long, default_value_t = 10_000)]
    posts: u64,
    /// Concurrent lookup clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Length of each measured phase.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    phase: Duration,
    /// Instead: produce → visible against the job's `--lateness-ms`, one job per value (no
    /// lookups, no PostgreSQL), e.g. `0,250,1000,2000`; a table per value into `--out`.
    #[arg(long, value_delimiter = ',')]
    lateness_sweep: Vec<u64>,
    /// The `kappa` binary (default: beside this one; `cargo build --release` builds it).
    #[arg(long)]
    kappa: Option<PathBuf>,
    /// Markdown file to write.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn record(partition: i32, like: &Like) -> OutgoingRecord {
    OutgoingRecord {
        partition,
        key: like.user.to_string().into_bytes(),
        value: serde_json::to_vec(like).expect("a like serialises"),
        timestamp: like.ts as i64,
    }
}

/// CPU seconds (user + system) of each process in `pids`, from `/proc`, with those of its
/// children that exited and were waited for: PostgreSQL's postmaster reaps every backend, so a
/// lookup client's backend that exits as its phase ends is still counted, in the postmaster's.
/// Keyed by pid and start time, so a pid reused in between is another process.
fn cpu_seconds(pids: &[u32]) -> std::collections::BTreeMap<(u32, u64), f64> {
    // Linux reports these in clock ticks of USER_HZ, 100 on every platform Linux runs on today.
    const TICKS_PER_SECOND: f64 = 100.0;
    pids.iter()
        .filter_map(|&pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command (which may hold spaces) in parentheses.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime, stime, cutime, cstime.
            let ticks = fields.get(11..15)?.iter().map(|f| f.parse::<f64>().ok()).sum::<Option<f64>>()?;
            let started: u64 = fields.get(19)?.parse().ok()?;
            Some(((pid, started), ticks / TICKS_PER_SECOND))
        })
        .collect()
}

/// CPU seconds spent between two readings: the totals' difference. A process that exits in
/// between has moved its whole time into its parent's children's time; counting it per process
/// (its `before` missing from `after`) would count its time before the phase again.
fn cpu_between(
    before: &std::collections::BTreeMap<(u32, u64), f64>,
    after: &std::collections::BTreeMap<(u32, u64), f64>,
) -> f64 {
    after.values().sum::<f64>() - before.values().sum::<f64>()
}

/// The PostgreSQL server's processes: its backends and background processes, as the server
/// itself lists them (`pg_stat_activity`), plus anything else named `postgres` (the postmaster).
fn postgres_pids(url: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = postgres::Client::connect(url, postgres::NoTls)
        .and_then(|mut c| c.query("SELECT pid FROM pg_stat_activity", &[]))
        .map(|rows| rows.iter().filter_map(|r| r.try_get::<_, i32>(0).ok()).map(|p| p as u32).collect())
        .unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        pids.extend(
            entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
            }),
        );
    }
    pids.sort_unstable();
    pids.dedup();
    if std::env::var_os("SERVING_BENCH_DEBUG").is_some() {
        eprintln!("postgres pids: {pids:?}");
    }
    pids
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.0}")
    }
}

/// One side's figures.
#[derive(Default)]
struct Figures {
    lookups: u64,
    seconds: f64,
    cpu: f64,
    latencies: Vec<Duration>,
    visible: Vec<Duration>,
    /// Of `visible`: until the broker acknowledged the record.
    acked: Vec<Duration>,
    wrong: u64,
}

impl Figures {
    fn row(&mut self, name: &str) -> String {
        self.latencies.sort();
        self.visible.sort();
        self.acked.sort();
        format!(
            "| {name} | {:.0} | {:.1} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            self.lookups as f64 / self.seconds,
            self.cpu,
            self.lookups as f64 / self.cpu.max(1e-9),
            ms(percentile(&self.latencies, 0.5)),
            ms(percentile(&self.latencies, 0.99)),
            self.visible.len(),
            ms(percentile(&self.visible, 0.5)),
            ms(percentile(&self.visible, 0.99)),
            ms(percentile(&self.acked, 0.5)),
            self.wrong,
        )
    }
}

/// The job: `kappa replay` live on the topic, serving, with the Postgres output when asked.
struct Job {
    child: Child,
    base: String,
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_job(args: &Args, topic: &str, postgres: Option<(&str, &str)>, lateness_ms: u64) -> anyhow::Result<Job> {
    let kappa = match &args.kappa {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("kappa"),
    };
    ensure!(kappa.exists(), "{} is missing: run `cargo build --release` first, or give --kappa", kappa.display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let address = format!("127.0.0.1:{port}");
    let mut command = Command::new(&kappa);
    command.args(["replay", "--pipeline", "like-counts", "--topic", topic, "--brokers", &args.brokers, "--then-live"]);
    command.args(["--serve", &address, "--lateness-ms", &lateness_ms.to_string()]);
    match postgres {
        Some((url, table)) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            command.args(["--output", &format!("{url}{sep}table={table}")]);
        }
        None => {
            command.args(["--output", "/dev/null"]);
        }
    }
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().context("start kappa")?;
    let stderr = child.stderr.take().context("stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("serving ") || line.contains("rror") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(120)).context("kappa did not start serving in 2 minutes")?;
    ensure!(line.contains("serving "), "kappa: {line}");
    Ok(Job { child, base: format!("http://{address}") })
}

/// A new topic of `args.partitions` partitions (Tansu creates no topic by itself).
fn new_topic(args: &Args) -> anyhow::Result<String> {
    let topic = format!("serving-bench-{}", now_ms());
    let tansu = std::env::var("KAPPA_TANSU_BIN").unwrap_or_else(|_| "tansu".into());
    let created = Command::new(&tansu)
        .args(["topic", "create", "--broker", &format!("tcp://{}", args.brokers)])
        .args(["--partitions", &args.partitions.to_string(), &topic])
        .output()
        .with_context(|| format!("run {tansu} topic create (set KAPPA_TANSU_BIN)"))?;
    ensure!(created.status.success(), "tansu topic create: {}", String::from_utf8_lossy(&created.stderr));
    Ok(topic)
}

/// Steady traffic into `topic` until the flag is set: the flag, the count produced, the thread.
type Traffic = (Arc<AtomicBool>, Arc<AtomicU64>, std::thread::JoinHandle<anyhow::Result<()>>);

fn steady_traffic(args: &Args, topic: &str) -> Traffic {
    // Steady traffic: one producer for the whole run, fed by an iterator that paces itself to
    // `rate` records a second (each stamped when it is produced) until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let traffic = {
        let (brokers, topic, stop, produced) =
            (args.brokers.clone(), topic.to_string(), stop.clone(), produced.clone());
        let (rate, partitions, posts) = (args.rate, args.partitions, args.posts);
        std::thread::spawn(move || -> anyhow::Result<()> {
            let started = Instant::now();
            let paced = (1u64..).map_while(|i| {
                let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                produced.fetch_add(1, Ordering::Relaxed);
                // A skewed choice of post (popular posts are liked more), deterministic.
                let post = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) % posts;
                let post = post * post / posts;
                let like = Like { ts: now_ms(), user: i % 100_000, post, kind: Kind::Like };
                Some(record((i % partitions as u64) as i32, &like))
            });
            produce(&brokers, &topic, paced, &|_| ())?;
            Ok(())
        })
    };
    (stop, produced, traffic)
}

/// Waits until the job's view answers.
fn warm_up(job: &Job) -> anyhow::Result<()> {
    kappa_engine::install_tls_provider();
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let warm = Instant::now();
    loop {
        let answered = http.get(format!("{}/views/like-counts/key?post=0", job.base)).send();
        if answered.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        ensure!(warm.elapsed() < Duration::from_secs(120), "the view did not answer in 2 minutes");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    Ok(())
}

/// Read-your-writes until `deadline`: a like of a post nobody else likes (`first` on), then a read
/// that waits for its offset.
fn ryw_trials(args: &Args, job: &Job, topic: &str, first: u64, deadline: Instant, figures: &mut Figures) {
    let producer = AckedProducer::new(&args.brokers).expect("producer");
    kappa_engine::install_tls_provider();
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let mut n = first;
    while Instant::now() < deadline {
        n += 1;
        let post = 1_000_000_000 + n;
        let like = Like { ts: now_ms(), user: n, post, kind: Kind::Like };
        let started = Instant::now();
        let (partition, offset) =
            producer.send(topic, &record((n % args.partitions as u64) as i32, &like)).expect("produce");
        figures.acked.push(started.elapsed());
        let url =
            format!("{}/views/like-counts/key?post={post}&wait_for={topic}:{partition}:{offset}&timeout=20s", job.base);
        let body = http.get(url).send().and_then(|r| r.text()).unwrap_or_default();
        let counted =
            serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| v["rows"][0]["likes"].as_u64() == Some(1));
        figures.visible.push(started.elapsed());
        figures.wrong += u64::from(!counted);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Produce → visible against the lateness, one job each.
fn sweep(args: &Args) -> anyhow::Result<()> {
    let mut md = format!(
        "Produce → visible (a `wait_for` read returning the like) against `--lateness-ms`: like counts live on \
         Tansu, {} partitions, {} likes/s steadily, one read-your-writes client for {:?} per setting, no other \
         load; each like is stamped when it is produced, so a lateness of L holds every time back by L.\n\n\
         | lateness ms | RYW trials | produce→visible p50 ms | produce→visible p99 ms | wrong answers |\n\
         |---|---:|---:|---:|---:|\n",
        args.partitions, args.rate, args.phase
    );
    for &lateness in &args.lateness_sweep {
        let topic = new_topic(args)?;
        let job = start_job(args, &topic, None, lateness)?;
        let (stop, _, traffic) = steady_traffic(args, &topic);
        warm_up(&job)?;
        let mut figures = Figures::default();
        ryw_trials(args, &job, &topic, 0, Instant::now() + args.phase, &mut figures);
        stop.store(true, Ordering::Relaxed);
        traffic.join().map_err(|_| anyhow::anyhow!("the traffic thread panicked"))??;
        figures.visible.sort();
        let row = format!(
            "| {lateness} | {} | {} | {} | {} |\n",
            figures.visible.len(),
            ms(percentile(&figures.visible, 0.5)),
            ms(percentile(&figures.visible, 0.99)),
            figures.wrong
        );
        eprint!("serving-bench: {row}");
        md += &row;
        ensure!(figures.wrong == 0, "lateness {lateness}: {} wrong answers", figures.wrong);
    }
    println!("{md}");
    if let Some(out) = &args.out {
        std::fs::File::create(out)?.write_all(format!("# Serving: freshness against lateness\n\n{md}").as_bytes())?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.lateness_sweep.is_empty() {
        return sweep(&args);
    }
    let topic = new_topic(&args)?;
    let table = topic.replace('-', "_");
    let job = start_job(&args, &topic, args.postgres.as_deref().map(|url| (url, table.as_str())), 0)?;
    eprintln!("serving-bench: job serving on {}", job.base);
    let (stop, produced, traffic) = steady_traffic(&args, &topic);
    let warm = Instant::now();
    warm_up(&job)?;
    let kappa_pid = job.child.id();
    let kappa = measure(
        &args,
        |client_index, deadline, figures| {
            kappa_engine::install_tls_provider();
            let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
            let mut i = client_index as u64;
            while Instant::now() < deadline {
                i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let post = (i >> 33) % args.posts;
                let started = Instant::now();
                let ok = http
                    .get(format!("{}/views/like-counts/key?post={post}", job.base))
                    .send()
                    .is_ok_and(|r| r.status().is_success() && r.bytes().is_ok());
                figures.latencies.push(started.elapsed());
                figures.lookups += 1;
                figures.wrong += u64::from(!ok);
            }
        },
        |trial, deadline, figures| ryw_trials(&args, &job, &topic, trial, deadline, figures),
        &|| vec![kappa_pid],
    );

    let mut postgres = None;
    if let Some(url) = &args.postgres {
        let select = format!("SELECT likes FROM {table} WHERE post = $1");
        postgres = Some(measure(
            &args,
            |client_index, deadline, figures| {
                let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect to PostgreSQL");
                let statement = client.prepare(&select).expect("prepare");
                let mut i = client_index as u64;
                while Instant::now() < deadline {
                    i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let post = ((i >> 33) % args.posts) as i64;
                    let started = Instant::now();
                    let ok = client.query(&statement, &[&post]).is_ok();
                    figures.latencies.push(started.elapsed());
                    figures.lookups += 1;
                    figures.wrong += u64::from(!ok);
                }
            },
            |trial, deadline, figures| {
                // What an application reading the table sees: produce, then poll until the row is there.
                let producer = AckedProducer::new(&args.brokers).expect("producer");
                let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect to PostgreSQL");
                let statement = client.prepare(&select).expect("prepare");
                let mut n = 500_000 + trial;
                while Instant::now() < deadline {
                    n += 1;
                    let post = 1_000_000_000 + n;
                    let like = Like { ts: now_ms(), user: n, post, kind: Kind::Like };
                    let started = Instant::now();
                    producer.send(&topic, &record((n % args.partitions as u64) as i32, &like)).expect("produce");
                    let counted = loop {
                        let rows = client.query(&statement, &[&(post as i64)]).unwrap_or_default();
                        if let Some(row) = rows.first() {
                            break row.try_get::<_, i64>(0).is_ok_and(|likes| likes == 1);
                        }
                        if started.elapsed() > Duration::from_secs(20) {
                            break false;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    };
                    figures.visible.push(started.elapsed());
                    figures.wrong += u64::from(!counted);
                    std::thread::sleep(Duration::from_millis(20));
                }
            },
            &|| postgres_pids(url),
        ));
    }
    stop.store(true, Ordering::Relaxed);
    traffic.join().map_err(|_| anyhow::anyhow!("the traffic thread panicked"))??;
    let rate = produced.load(Ordering::Relaxed) as f64 / warm.elapsed().as_secs_f64();

    let mut table_md = format!(
        "Like counts live on Tansu, {} partitions, {:.0} likes/s produced steadily (asked: {}), {} lookup \
         clients on loopback for {:?} per side, one read-your-writes client beside them; default job settings \
         (lateness 0, idle timeout 2s). Lookups per core: lookups per CPU-second of the serving process \
         (Kappa: the whole job, ingesting; PostgreSQL: its server processes).\n\n\
         | served from | lookups/s | server CPU s | lookups/s per core | lookup p50 ms | lookup p99 ms | RYW trials | produce→visible p50 ms | produce→visible p99 ms | of which produce ack p50 ms | wrong answers |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        args.partitions, rate, args.rate, args.clients, args.phase
    );
    let mut kappa = kappa;
    table_md += &(kappa.row("Kappa (HTTP view, `wait_for`)") + "\n");
    if let Some(mut pg) = postgres {
        table_md += &(pg.row("PostgreSQL (table kept by `--output postgres://`, polled)") + "\n");
        table_md += "\nServer CPU is read from `/proc` at the start and at the end of each phase: the \
                     processes' own time and that of their exited children (PostgreSQL's postmaster reaps \
                     the lookup clients' backends, which exit as the phase ends).\n";
    }
    println!("{table_md}");
    if let Some(out) = &args.out {
        std::fs::File::create(out)?.write_all(format!("# Serving\n\n{table_md}").as_bytes())?;
    }
    ensure!(kappa.wrong == 0, "Kappa gave {} wrong or failed answers", kappa.wrong);
    Ok(())
}

/// Runs `clients` lookup threads and one read-your-writes thread for one phase; the CPU time
/// of the processes `pids` lists (at the start and at the end) in between.
fn measure(
    args: &Args,
    lookup: impl Fn(usize, Instant, &mut Figures) + Sync,
    ryw: impl Fn(u64, Instant, &mut Figures) + Sync,
    pids: &(dyn Fn() -> Vec<u32> + Sync),
) -> Figures {
    let total = Mutex::new(Figures::default());
    let cpu_before = cpu_seconds(&pids());
    let started = Instant::now();
    let deadline = started + args.phase;
    // Read at the deadline, while the clients' connections (PostgreSQL's backends) still live.
    let cpu_after = Mutex::new(Default::default());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            *cpu_after.lock().expect("cpu") = cpu_seconds(&pids());
        });
        for c in 0..args.clients {
            let (total, lookup) = (&total, &lookup);
            scope.spawn(move || {
                let mut figures = Figures::default();
                lookup(c, deadline, &mut figures);
                let mut t = total.lock().expect("figures");
                t.lookups += figures.lookups;
                t.latencies.extend(figures.latencies);
                t.wrong += figures.wrong;
            });
        }
        let (total, ryw) = (&total, &ryw);
        scope.spawn(move || {
            let mut figures = Figures::default();
            ryw(0, deadline, &mut figures);
            let mut t = total.lock().expect("figures");
            t.visible.extend(figures.visible);
            t.acked.extend(figures.acked);
            t.wrong += figures.wrong;
        });
    });
    let mut figures = total.into_inner().expect("figures");
    figures.seconds = started.elapsed().as_secs_f64();
    let cpu_after = cpu_after.into_inner().expect("cpu");
    if std::env::var_os("SERVING_BENCH_DEBUG").is_some() {
        eprintln!("cpu before {cpu_before:?}\ncpu after {cpu_after:?}");
    }
    figures.cpu = cpu_between(&cpu_before, &cpu_after);
    figures
}
