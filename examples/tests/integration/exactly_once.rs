//! Exactly-once output: the Kafka sink's two modes, and restarts after SIGKILL and broker restarts
//! ending with the output an uninterrupted run writes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kappa_connectors::kafka::producer::produce;
use kappa_examples::generator::{like_records, like_stream, LikeStreamConfig};
use kappa_examples::like_counts::{self, Like, PostLikes};

use crate::harness::{consume_committed, kappa_job, kappa_ok, manifests, unique, Moto, Tansu};

fn events(n: usize, seed: u64) -> Vec<(i32, Like)> {
    like_stream(&LikeStreamConfig { partitions: 2, seed, ..LikeStreamConfig::new(n) })
}

/// `kappa replay` of like counts from `topic` on `brokers` into `output`, plus `extra`; without an
/// `--exit-when-idle` in `extra`, it exits after 2 s idle. A Kafka output has three partitions
/// unless `extra` says otherwise, so that the trials' two workers both write (partitioned output).
fn replay_args<'a>(topic: &'a str, brokers: &'a str, output: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args =
        vec!["replay", "--pipeline", "like-counts", "--topic", topic, "--brokers", brokers, "--output", output];
    if !extra.contains(&"--exit-when-idle") {
        args.extend(["--exit-when-idle", "2s"]);
    }
    if output.starts_with("kafka:") && !extra.contains(&"--output-partitions") {
        args.extend(["--output-partitions", "3"]);
    }
    args.extend_from_slice(extra);
    args
}

#[test]
fn kafka_changelog_holds_the_file_output_and_upsert_holds_the_final_view() {
    let tansu = Tansu::shared();
    let all = events(4_000, 5);
    let topic = unique("likes");
    tansu.create_topic(&topic, 2);
    produce(&tansu.brokers, &topic, like_records(&all), &|_| ()).expect("produce");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("out.jsonl");
    kappa_ok(&replay_args(&topic, &tansu.brokers, file.to_str().expect("utf-8"), &[]), &[]);
    let lines: Vec<String> = std::fs::read_to_string(&file).expect("file").lines().map(String::from).collect();
    assert!(lines.len() > 100);

    let changelog = unique("counts");
    // One partition: its records are the file's lines in order.
    let one = ["--output-partitions", "1"];
    kappa_ok(&replay_args(&topic, &tansu.brokers, &format!("kafka:{changelog}"), &one), &[]);
    let records = consume_committed(&tansu.brokers, &changelog);
    let values: Vec<String> = records.iter().map(|(_, v)| v.clone().expect("changelog has no tombstones")).collect();
    assert_eq!(values, lines, "the changelog topic holds the file's updates, in order");
    assert!(records.iter().all(|(k, _)| k.starts_with("{\"post\":")), "keyed by the row's key fields");

    let upsert = unique("view");
    kappa_ok(&replay_args(&topic, &tansu.brokers, &format!("kafka:{upsert}"), &["--upsert", "-w", "2"]), &[]);
    let mut view: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in consume_committed(&tansu.brokers, &upsert) {
        match value {
            Some(v) => view.insert(key, v),
            None => view.remove(&key),
        };
    }
    let expected = like_counts::reference(all.iter().map(|(_, l)| l));
    let got: BTreeMap<u64, u64> = view
        .values()
        .map(|v| serde_json::from_str::<PostLikes>(v).expect("a row"))
        .map(|row| (row.post, row.likes))
        .collect();
    assert_eq!(got, expected, "the upsert topic, compacted, is the final result");
}

/// Produces `events` into `topic` in chunks, pausing between them: live traffic.
fn produce_slowly(brokers: String, topic: String, events: Vec<(i32, Like)>) -> std::thread::JoinHandle<()> {
    produce_with_stall(brokers, topic, events, None)
}

/// As [`produce_slowly`], stalling for `stall.1` before chunk `stall.0`: a producer slower than
/// the job's idle exit, as a loaded machine makes one.
fn produce_with_stall(
    brokers: String,
    topic: String,
    events: Vec<(i32, Like)>,
    stall: Option<(usize, Duration)>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for (index, chunk) in events.chunks(400).enumerate() {
            if let Some((_, pause)) = stall.filter(|&(at, _)| at == index) {
                std::thread::sleep(pause);
            }
            produce(&brokers, &topic, like_records(chunk), &|_| ()).expect("produce live records");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// What an output holds: the file's bytes, or the topic's committed records.
fn output_of(brokers: &str, output: &str) -> Vec<String> {
    match output.strip_prefix("kafka:") {
        Some(topic) => consume_committed(brokers, topic).into_iter().map(|(k, v)| format!("{k} {v:?}")).collect(),
        None => std::fs::read_to_string(output).expect("output file").lines().map(String::from).collect(),
    }
}

/// Compared with an uninterrupted run too, so without idle advances (see `live_job_args`).
pub(crate) fn crash_trial_args(
    topic: &str,
    archive: &str,
    brokers: &str,
    output: &str,
    checkpoint: &str,
) -> Vec<String> {
    let extra = [
        "--archive",
        archive,
        "--then-live",
        "--idle-timeout",
        "off",
        "--checkpoint",
        checkpoint,
        "--checkpoint-every",
        "150ms",
        "-w",
        "2",
    ];
    replay_args(topic, brokers, output, &extra).into_iter().map(String::from).collect()
}

#[test]
fn sigkill_at_random_moments_then_the_same_command_ends_with_the_uninterrupted_output() {
    use rand::{Rng, SeedableRng};
    let tansu = Tansu::shared();
    let all = events(16_000, 21);
    let (history, live) = all.split_at(10_000);
    // The uninterrupted runs, over the same records, all of them already in the broker.
    let dir = tempfile::tempdir().expect("tempdir");
    let expected_file = uninterrupted_output(&tansu, &all, dir.path().join("reference.jsonl").to_str().expect("utf-8"));
    let expected_kafka = uninterrupted_output(&tansu, &all, &format!("kafka:{}", unique("reference")));
    assert!(expected_file.len() > 1_000);

    let trials: usize = std::env::var("KAPPA_CRASH_TRIALS").ok().and_then(|n| n.parse().ok()).unwrap_or(20);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(2026);
    let mut restored = 0;
    for trial in 0..trials {
        let topic = unique("likes");
        tansu.create_topic(&topic, 2);
        produce(&tansu.brokers, &topic, like_records(history), &|_| ()).expect("produce history");
        let archive = format!("file://{}", dir.path().join(format!("archive-{trial}")).display());
        kappa_ok(&["archive", "write", "--brokers", &tansu.brokers, "--topic", &topic, "--to", &archive], &[]);
        let output = if trial % 2 == 0 {
            dir.path().join(format!("out-{trial}.jsonl")).to_str().expect("utf-8").to_string()
        } else {
            format!("kafka:{}", unique("out"))
        };
        let checkpoint = format!("file://{}", dir.path().join(format!("ckpt-{trial}")).display());
        let job = kappa_job(
            crash_trial_args(&topic, &archive, &tansu.brokers, &output, &checkpoint),
            vec![("RUST_LOG".into(), "kappa_connectors=info".into())],
        );
        // One to three kills, early (backfill) or later (live).
        let kills: Vec<Duration> =
            (0..rng.random_range(1..=3)).map(|_| Duration::from_millis(rng.random_range(150..3_000))).collect();
        // Every fourth trial the producer stalls for longer than the job's idle exit (2 s) before
        // its last chunk, as CI's loaded machines once made it: a run ends on its own before the
        // input is complete, and the next run goes on over the rest.
        let stall = (trial % 4 == 3).then_some((live.len().div_ceil(400) - 1, Duration::from_millis(2_600)));
        let producer = produce_with_stall(tansu.brokers.clone(), topic.clone(), live.to_vec(), stall);
        let logs = job.run_with_kills(&kills, &|| producer.is_finished());
        producer.join().expect("producer");
        if logs.len() > kills.len() + 1 {
            eprintln!(
                "trial {trial}: {} runs for {} kills (a run ended before the input was complete)",
                logs.len(),
                kills.len()
            );
        }
        restored += logs.iter().filter(|l| l.contains("restoring from checkpoint")).count();
        let expected = if trial % 2 == 0 { &expected_file } else { &expected_kafka };
        let got = output_of(&tansu.brokers, &output);
        if &got != expected {
            let dump = std::env::temp_dir().join(format!("kappa-crash-trial-{trial}"));
            let _ = std::fs::write(dump.with_extension("got"), got.join("\n"));
            let _ = std::fs::write(dump.with_extension("expected"), expected.join("\n"));
        }
        assert!(
            &got == expected,
            "trial {trial} (kills after {kills:?}, output {output}): {} records, expected {}; first difference at {:?}\nlogs:\n{}",
            got.len(),
            expected.len(),
            got.iter().zip(expected.iter()).position(|(a, b)| a != b),
            logs.join("\n---\n")
        );
    }
    assert!(restored > 0, "no run restored a checkpoint: the trials did not exercise checkpoints");
}

/// A restartable like-counts job reading `topic` live from `brokers`.
/// Live jobs here are compared with an uninterrupted run over records already in the broker,
/// whose times hold no idle advances; a broker restart can leave one partition silent while the
/// other reconnects, so idle advances are off (they are tested in `reruns.rs`).
fn live_job_args(topic: &str, brokers: &str, output: &str, checkpoint: &str, idle: &str, every: &str) -> Vec<String> {
    let extra =
        ["--exit-when-idle", idle, "--idle-timeout", "off", "--checkpoint", checkpoint, "--checkpoint-every", every];
    replay_args(topic, brokers, output, &extra).into_iter().map(String::from).collect()
}

/// The output of an uninterrupted like-counts run over `events`, all in the broker, into `output`
/// (a file path or `kafka:TOPIC`), restartable like the trials (a restartable job's Kafka output
/// holds only final times; see the engine's `sink` module).
fn uninterrupted_output(tansu: &Tansu, events: &[(i32, Like)], output: &str) -> Vec<String> {
    let topic = unique("likes");
    tansu.create_topic(&topic, 2);
    produce(&tansu.brokers, &topic, like_records(events), &|_| ()).expect("produce");
    let checkpoints = tempfile::tempdir().expect("tempdir");
    let checkpoint = format!("file://{}", checkpoints.path().display());
    kappa_ok(&replay_args(&topic, &tansu.brokers, output, &["--checkpoint", &checkpoint]), &[]);
    output_of(&tansu.brokers, output)
}

#[test]
fn restarting_the_broker_mid_run_ends_with_the_uninterrupted_output() {
    let moto = Moto::shared();
    let bucket = unique("tansu-restart");
    moto.create_bucket(&bucket);
    let env = moto.env();
    // Durable broker storage (S3 on moto), so that a restart keeps the topics.
    let mut tansu = Tansu::start_with_storage(&format!("s3://{bucket}/"), &env);
    let all = events(6_000, 31);
    let (history, live) = all.split_at(2_000);
    let expected = uninterrupted_output(&tansu, &all, &format!("kafka:{}", unique("reference")));

    let topic = unique("likes");
    tansu.create_topic(&topic, 2);
    produce(&tansu.brokers, &topic, like_records(history), &|_| ()).expect("produce history");
    let dir = tempfile::tempdir().expect("tempdir");
    let output = format!("kafka:{}", unique("out"));
    let checkpoint = format!("file://{}", dir.path().join("ckpt").display());
    let job = kappa_job(live_job_args(&topic, &tansu.brokers, &output, &checkpoint, "6s", "200ms"), vec![])
        .run_until_success();
    let (first, second) = live.split_at(live.len() / 2);
    produce_slowly(tansu.brokers.clone(), topic.clone(), first.to_vec()).join().expect("produce");
    tansu.restart(Duration::from_secs(1));
    produce_slowly(tansu.brokers.clone(), topic.clone(), second.to_vec()).join().expect("produce");
    let logs = job.join().expect("job");
    let got = output_of(&tansu.brokers, &output);
    assert!(got == expected, "{} records, expected {}; logs:\n{}", got.len(), expected.len(), logs.join("\n---\n"));
}

#[test]
fn a_damaged_or_missing_newest_checkpoint_falls_back_and_says_so() {
    let tansu = Tansu::shared();
    let all = events(12_000, 41);
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = uninterrupted_output(&tansu, &all, dir.path().join("reference.jsonl").to_str().expect("utf-8"));

    for damage in ["corrupt", "missing"] {
        let topic = unique("likes");
        tansu.create_topic(&topic, 2);
        let output = dir.path().join(format!("{damage}.jsonl")).to_str().expect("utf-8").to_string();
        let ckpt_dir = dir.path().join(format!("ckpt-{damage}"));
        let checkpoint = format!("file://{}", ckpt_dir.display());
        let job = kappa_job(live_job_args(&topic, &tansu.brokers, &output, &checkpoint, "2s", "100ms"), vec![]);
        let producer = produce_slowly(tansu.brokers.clone(), topic.clone(), all.clone());
        // Kill once two checkpoints are complete.
        let mut child = job.spawn();
        let deadline = Instant::now() + Duration::from_secs(60);
        while manifests(&ckpt_dir).len() < 2 {
            assert!(Instant::now() < deadline, "no two checkpoints within a minute");
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let newest = manifests(&ckpt_dir).pop().expect("a manifest");
        let generation = newest.parent().expect("generation directory").to_path_buf();
        match damage {
            "corrupt" => {
                for part in std::fs::read_dir(&generation).expect("parts").filter_map(Result::ok) {
                    if part.path().extension().is_some_and(|e| e == "part") {
                        let mut bytes = std::fs::read(part.path()).expect("part");
                        let middle = bytes.len() / 2;
                        bytes[middle] ^= 0xff;
                        std::fs::write(part.path(), bytes).expect("damage part");
                    }
                }
            }
            _ => std::fs::remove_dir_all(&generation).expect("remove the newest checkpoint"),
        }
        let logs = job.run_with_kills(&[], &|| producer.is_finished());
        producer.join().expect("producer");
        let log = logs.join("\n");
        if damage == "corrupt" {
            assert!(log.contains("falling back to the previous one") && log.contains("CRC-32C"), "{log}");
        }
        assert!(log.contains("restoring from checkpoint"), "an older checkpoint is used:\n{log}");
        assert!(output_of(&tansu.brokers, &output) == expected, "{damage}: the output differs; logs:\n{log}");
    }
}
