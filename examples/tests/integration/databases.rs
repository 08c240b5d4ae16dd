//! Database outputs on real servers (PostgreSQL, Redis): a replay's table or hashes are the batch
//! reference's final state; a table that does not fit is refused; SIGKILLed restartable jobs end
//! with what an uninterrupted run leaves, every completed time applied exactly once (PostgreSQL:
//! an audit trigger on the progress row records each commit's range of times); and a second run
//! of one job is fenced off.

use std::collections::BTreeMap;
use std::time::Duration;

use kappa_connectors::kafka::producer::produce;
use kappa_examples::generator::{like_records, like_stream, LikeStreamConfig};
use kappa_examples::like_counts::{self, Like};

use crate::exactly_once::crash_trial_args;
use crate::harness::{kappa, kappa_job, kappa_ok, unique, Postgres, Redis, Tansu};

fn events(n: usize, seed: u64) -> Vec<(i32, Like)> {
    like_stream(&LikeStreamConfig { partitions: 2, seed, ..LikeStreamConfig::new(n) })
}

/// `post → likes` as the table holds it.
fn table(url: &str, table: &str) -> BTreeMap<u64, u64> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    client
        .query(&format!("SELECT post, likes FROM {table} ORDER BY post"), &[])
        .expect("the output table exists")
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
        .collect()
}

/// A topic holding `history`, archived, with `live` still to come.
fn archived_topic(tansu: &Tansu, history: &[(i32, Like)], dir: &std::path::Path) -> (String, String) {
    let topic = unique("likes");
    tansu.create_topic(&topic, 2);
    produce(&tansu.brokers, &topic, like_records(history), &|_| ()).expect("produce history");
    let archive = format!("file://{}", dir.join(&topic).display());
    kappa_ok(&["archive", "write", "--brokers", &tansu.brokers, "--topic", &topic, "--to", &archive], &[]);
    (topic, archive)
}

#[test]
fn a_replay_into_postgres_holds_the_reference_and_a_misfit_table_is_refused() {
    let (tansu, pg) = (Tansu::shared(), Postgres::shared());
    let dir = tempfile::tempdir().expect("tempdir");
    let history = events(5_000, 7);
    let (topic, archive) = archived_topic(&tansu, &history, dir.path());
    let db = pg.database();
    let output = format!("{db}?table=post_likes");
    kappa_ok(
        &["replay", "--pipeline", "like-counts", "--topic", &topic, "--archive", &archive, "--output", &output],
        &[],
    );
    let expected = like_counts::reference(history.iter().map(|(_, l)| l));
    assert!(expected.len() > 10);
    assert_eq!(table(&db, "post_likes"), expected, "the table is the final state");

    // A table of the same name that does not fit the rows.
    let mut client = postgres::Client::connect(&db, postgres::NoTls).expect("connect");
    client.batch_execute("CREATE TABLE misfit (post bigint PRIMARY KEY, label text)").expect("create");
    let out = kappa(
        &[
            "replay",
            "--pipeline",
            "like-counts",
            "--topic",
            &topic,
            "--archive",
            &archive,
            "--output",
            &format!("{db}?table=misfit"),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a misfit table must be refused");
    assert!(stderr.contains("does not fit") && stderr.contains("label text"), "the error says what differs: {stderr}");
}

/// Logs every change of the progress row: `(lower, upper)` of each commit, in commit order.
fn audit(url: &str) {
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS kappa_progress (job text PRIMARY KEY, upper numeric(20) NOT NULL);
             CREATE TABLE audit (id bigserial PRIMARY KEY, lower numeric(20), upper numeric(20));
             CREATE FUNCTION log_progress() RETURNS trigger AS $$
               BEGIN
                 INSERT INTO audit (lower, upper) VALUES (CASE WHEN TG_OP = 'UPDATE' THEN OLD.upper END, NEW.upper);
                 RETURN NEW;
               END $$ LANGUAGE plpgsql;
             CREATE TRIGGER audit_progress AFTER INSERT OR UPDATE ON kappa_progress
               FOR EACH ROW EXECUTE FUNCTION log_progress();",
        )
        .expect("install the audit");
}

/// The committed ranges `[lower, upper)` of times, in commit order.
fn commits(url: &str) -> Vec<(Option<String>, String)> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    client
        .query("SELECT lower::text, upper::text FROM audit ORDER BY id", &[])
        .expect("audit")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// A database output of the crash trials: its `--output`, what it holds, and what its commits say.
trait Target {
    fn output(&self) -> String;
    fn state(&self) -> BTreeMap<u64, u64>;
    /// Panics unless the commits applied every time once (where the database can tell).
    fn check_commits(&self, _trial: usize) {}
}

struct Table(String);

impl Target for Table {
    fn output(&self) -> String {
        format!("{}?table=post_likes", self.0)
    }
    fn state(&self) -> BTreeMap<u64, u64> {
        table(&self.0, "post_likes")
    }
    fn check_commits(&self, trial: usize) {
        // Every commit starts where the previous one ended: no time applied twice, none skipped.
        let commits = commits(&self.0);
        assert!(!commits.is_empty(), "trial {trial}: no commit was audited");
        let time = |t: &str| t.parse::<u64>().expect("a time");
        for (lower, upper) in &commits {
            assert!(
                lower.as_deref().is_none_or(|l| time(l) <= time(upper)),
                "trial {trial}: progress went back: {commits:?}"
            );
        }
        for pair in commits.windows(2) {
            assert_eq!(
                pair[1].0.as_deref(),
                Some(pair[0].1.as_str()),
                "trial {trial}: a commit did not start where the previous ended: {commits:?}"
            );
        }
    }
}

struct Hashes {
    url: String,
    prefix: String,
}

impl Target for Hashes {
    fn output(&self) -> String {
        format!("{}?prefix={}", self.url, self.prefix)
    }
    fn state(&self) -> BTreeMap<u64, u64> {
        hashes(&self.url, &self.prefix)
    }
}

/// `post → likes` as the hashes under `prefix` hold them.
fn hashes(url: &str, prefix: &str) -> BTreeMap<u64, u64> {
    let mut connection = redis::Client::open(url).and_then(|c| c.get_connection()).expect("connect");
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}:*")).query(&mut connection).expect("list the output's keys");
    keys.iter()
        .map(|key| {
            let (post, likes): (u64, u64) =
                redis::cmd("HMGET").arg(key).arg("post").arg("likes").query(&mut connection).expect("read a hash");
            (post, likes)
        })
        .collect()
}

/// SIGKILL trials of a restartable like-counts job (archive, then live) into a fresh output from
/// `fresh` each time: each must end as an uninterrupted run into another fresh output does.
fn crash_trials(fresh: &dyn Fn() -> Box<dyn Target>) {
    use rand::{Rng, SeedableRng};
    let tansu = Tansu::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let all = events(12_000, 31);
    let (history, live) = all.split_at(8_000);
    // The uninterrupted run, restartable like the trials, over every record already in the broker:
    // a restartable job's output holds only final times (those a later run over more input cannot
    // change; see the engine's `sink` module), so that, not the reference, is what a trial must equal.
    let expected = {
        let (topic, archive) = archived_topic(&tansu, &all, dir.path());
        let target = fresh();
        let checkpoint = format!("file://{}", dir.path().join("ckpt-reference").display());
        let args = crash_trial_args(&topic, &archive, &tansu.brokers, &target.output(), &checkpoint);
        kappa_ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        target.state()
    };
    assert!(expected.len() > 100, "the uninterrupted run's output has {} rows", expected.len());

    let trials: usize = std::env::var("KAPPA_CRASH_TRIALS").ok().and_then(|n| n.parse().ok()).unwrap_or(20) / 4;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(2027);
    let mut restored = 0;
    for trial in 0..trials.max(3) {
        let (topic, archive) = archived_topic(&tansu, history, dir.path());
        let target = fresh();
        let checkpoint = format!("file://{}", dir.path().join(format!("ckpt-{trial}")).display());
        let job = kappa_job(crash_trial_args(&topic, &archive, &tansu.brokers, &target.output(), &checkpoint), vec![]);
        let producer = {
            let (brokers, topic, live) = (tansu.brokers.clone(), topic.clone(), live.to_vec());
            std::thread::spawn(move || {
                for chunk in live.chunks(400) {
                    produce(&brokers, &topic, like_records(chunk), &|_| ()).expect("produce live records");
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let kills: Vec<Duration> =
            (0..rng.random_range(1..=2)).map(|_| Duration::from_millis(rng.random_range(200..2_500))).collect();
        let logs = job.run_with_kills(&kills, &|| producer.is_finished());
        producer.join().expect("producer");
        restored += logs.iter().filter(|l| l.contains("restoring from checkpoint")).count();
        assert_eq!(
            target.state(),
            expected,
            "trial {trial} (kills after {kills:?}): the output\n{}",
            logs.join("\n---\n")
        );
        target.check_commits(trial);
    }
    assert!(restored > 0, "no run restored a checkpoint: the trials did not exercise restarts");
}

#[test]
fn sigkilled_jobs_into_postgres_end_with_the_uninterrupted_table_each_time_applied_once() {
    let pg = Postgres::shared();
    crash_trials(&|| {
        let db = pg.database();
        audit(&db);
        Box::new(Table(db))
    });
}

#[test]
fn sigkilled_jobs_into_redis_end_with_the_uninterrupted_hashes() {
    let redis = Redis::shared();
    crash_trials(&|| Box::new(Hashes { url: redis.url.clone(), prefix: unique("likes") }));
}

#[test]
fn a_replay_into_redis_holds_the_reference() {
    let (tansu, redis) = (Tansu::shared(), Redis::shared());
    let dir = tempfile::tempdir().expect("tempdir");
    let history = events(5_000, 11);
    let (topic, archive) = archived_topic(&tansu, &history, dir.path());
    let prefix = unique("likes");
    let output = format!("{}?prefix={prefix}", redis.url);
    kappa_ok(
        &["replay", "--pipeline", "like-counts", "--topic", &topic, "--archive", &archive, "--output", &output],
        &[],
    );
    let expected = like_counts::reference(history.iter().map(|(_, l)| l));
    assert!(expected.len() > 10);
    assert_eq!(hashes(&redis.url, &prefix), expected, "one hash per post, none for posts without likes");
    let mut connection = redis.connection();
    let progress: String =
        redis::cmd("GET").arg(format!("kappa-progress:{prefix}")).query(&mut connection).expect("progress");
    assert_eq!(progress, u64::MAX.to_string(), "a finished job that cannot restart records every time as applied");
}

#[test]
fn a_redis_progress_key_that_is_not_kappas_is_refused_and_named() {
    let (tansu, redis) = (Tansu::shared(), Redis::shared());
    let dir = tempfile::tempdir().expect("tempdir");
    let (topic, archive) = archived_topic(&tansu, &events(500, 5), dir.path());
    let prefix = unique("likes");
    let mut connection = redis.connection();
    let progress = format!("kappa-progress:{prefix}");
    redis::cmd("SET").arg(&progress).arg("hello").query::<()>(&mut connection).expect("set");
    let output = format!("{}?prefix={prefix}", redis.url);
    let out = kappa(
        &["replay", "--pipeline", "like-counts", "--topic", &topic, "--archive", &archive, "--output", &output],
        &[],
    );
    assert!(!out.status.success(), "a foreign progress key must stop the job");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&progress) && stderr.contains("not a time"), "the error names the key: {stderr}");
    let left: String = redis::cmd("GET").arg(&progress).query(&mut connection).expect("get");
    assert_eq!(left, "hello", "nothing was written over it");
    assert!(hashes(&redis.url, &prefix).is_empty(), "no row was written");
}

/// Two runs of one job resume from the same progress; the first to commit wins, and the other
/// fails naming the job instead of applying the same times again.
fn a_second_run_is_fenced_off<S: kappa_engine::Sink<like_counts::PostLikes>>(
    sink: impl Fn() -> S,
    state: impl Fn() -> BTreeMap<u64, u64>,
) {
    let row = |likes| like_counts::PostLikes { post: 1, likes };
    let (mut first, mut second) = (sink(), sink());
    assert_eq!(first.resume().expect("resumes"), 0);
    assert_eq!(second.resume().expect("resumes"), 0);
    first.write(10, &[(row(1), 1)]).expect("writes");
    first.finish(11).expect("the first commit wins");
    second.write(10, &[(row(2), 1)]).expect("writes (buffered)");
    let error = second.finish(11).expect_err("the second run must not commit the same times");
    assert!(error.to_string().contains("another run of the same job"), "{error}");
    assert_eq!(state(), BTreeMap::from([(1, 1)]));
    // A restarted run (a fresh sink) goes on from there; its first commit may be a delete alone.
    let mut third = sink();
    assert_eq!(third.resume().expect("resumes"), 11);
    third.write(20, &[(row(1), -1)]).expect("writes");
    third.finish(21).expect("commits");
    assert_eq!(state(), BTreeMap::new(), "the row retracted after the restart is gone");
}

#[test]
fn a_second_run_of_the_same_job_is_fenced_off() {
    let pg = Postgres::shared();
    let db = pg.database();
    let config = kappa_connectors::PostgresSinkConfig::parse(&format!("{db}?table=fenced"), "like-counts", "job-a")
        .expect("parses");
    a_second_run_is_fenced_off(
        || kappa_connectors::PostgresSink::new(kappa_connectors::PostgresTable::new(config.clone())),
        || table(&db, "fenced"),
    );
}

/// The same for Redis: the progress key is watched from the moment a run read it.
#[test]
fn a_second_run_of_the_same_job_is_fenced_off_in_redis() {
    let redis = Redis::shared();
    let config = kappa_connectors::RedisSinkConfig::parse(&format!("{}?prefix={}", redis.url, unique("fenced")), "x");
    a_second_run_is_fenced_off(
        || kappa_connectors::RedisSink::new(kappa_connectors::RedisHashes::new(config.clone())),
        || hashes(&redis.url, &config.prefix),
    );
}
