//! Guarantees off the happy path, with the `kappa` command on Tansu: a finished restartable job
//! run again over more input (daily), with the archive re-written between runs, with file and
//! Kafka outputs, with and without a backfill granularity; and a live topic with one silent
//! partition.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kappa_connectors::kafka::producer::{produce, OutgoingRecord};
use kappa_examples::generator::{like_records, like_stream, LikeStreamConfig};
use kappa_examples::like_counts::Like;

use crate::harness::{consume_committed, kappa_ok, unique, Tansu};

fn events(n: usize, seed: u64) -> Vec<(i32, Like)> {
    like_stream(&LikeStreamConfig { partitions: 2, seed, ..LikeStreamConfig::new(n) })
}

/// Updates of a JSON-lines output as `(data, time, diff)`.
fn updates(lines: &[String]) -> Vec<(String, u64, i64)> {
    lines
        .iter()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            (v["data"].to_string(), v["time"].as_u64().expect("time"), v["diff"].as_i64().expect("diff"))
        })
        .collect()
}

fn at(updates: &[(String, u64, i64)], time: u64) -> BTreeMap<String, i64> {
    let mut acc = BTreeMap::new();
    for (data, t, diff) in updates {
        if *t <= time {
            *acc.entry(data.clone()).or_insert(0) += diff;
        }
    }
    acc.retain(|_, d| *d != 0);
    acc
}

fn output_lines(brokers: &str, output: &str) -> Vec<String> {
    match output.strip_prefix("kafka:") {
        Some(topic) => consume_committed(brokers, topic).into_iter().map(|(k, v)| format!("{k} {v:?}")).collect(),
        None => std::fs::read_to_string(output).expect("output file").lines().map(String::from).collect(),
    }
}

/// Runs like counts over `days` of events, as an operator would each day: produce the day's
/// events, re-write the archive (some days), then the same `kappa replay` command. Returns the
/// output, and the output of one uninterrupted run over everything.
fn daily(tansu: &Tansu, output: &str, reference: &str, extra: &[&str]) -> (Vec<String>, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = events(3_000, 41);
    let topic = unique("likes");
    tansu.create_topic(&topic, 2);
    let archive = format!("file://{}", dir.path().join("archive").display());
    let checkpoint = format!("file://{}", dir.path().join("checkpoint").display());
    let brokers = tansu.brokers.as_str();
    let command = |output: &str, checkpoint: &str| -> Vec<String> {
        let mut args = vec!["replay", "--pipeline", "like-counts", "--topic", &topic, "--archive", &archive];
        args.extend(["--then-live", "--brokers", brokers, "--exit-when-idle", "2s", "--output", output]);
        // Idle advances are timing-dependent decisions (tested below); these runs compare with one
        // run that makes none.
        args.extend(["--checkpoint", checkpoint, "--checkpoint-every", "100ms", "--idle-timeout", "off"]);
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect()
    };
    for (day, chunk) in all.chunks(1_000).enumerate() {
        produce(brokers, &topic, like_records(chunk), &|_| ()).expect("produce the day's events");
        // The archive catches up on days 1 and 3; on day 2 the job reads the new events live.
        if day != 1 {
            kappa_ok(&["archive", "write", "--brokers", brokers, "--topic", &topic, "--to", &archive], &[]);
        }
        let args = command(output, &checkpoint);
        kappa_ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    }
    let fresh = format!("file://{}", dir.path().join("fresh-checkpoint").display());
    let args = command(reference, &fresh);
    kappa_ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    (output_lines(brokers, output), output_lines(brokers, reference))
}

#[test]
fn daily_reruns_over_more_input_end_with_the_uninterrupted_output_byte_for_byte() {
    let tansu = Tansu::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("daily.jsonl");
    let reference = dir.path().join("reference.jsonl");
    let (got, expected) =
        daily(&tansu, file.to_str().expect("utf-8"), reference.to_str().expect("utf-8"), &["-w", "2"]);
    assert!(expected.len() > 1_000, "{} lines", expected.len());
    assert_eq!(got.len(), expected.len(), "as many lines as one run over all records");
    assert_eq!(got, expected, "byte for byte");
    let (topic, reference) = (format!("kafka:{}", unique("daily")), format!("kafka:{}", unique("reference")));
    let (got, expected) = daily(&tansu, &topic, &reference, &[]);
    assert!(expected.len() > 1_000, "{} records", expected.len());
    assert_eq!(got, expected, "the topic holds what one run over all records writes");
}

#[test]
fn daily_reruns_with_a_backfill_granularity_agree_at_every_coarse_time() {
    let tansu = Tansu::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("daily.jsonl");
    let reference = dir.path().join("reference.jsonl");
    let extra = ["--backfill-granularity", "1s"];
    let (got, expected) = daily(&tansu, file.to_str().expect("utf-8"), reference.to_str().expect("utf-8"), &extra);
    let (got, expected) = (updates(&got), updates(&expected));
    let final_state = at(&got, u64::MAX);
    assert!(final_state.values().all(|&d| d == 1), "every row once, none counted twice: {final_state:?}");
    assert_eq!(final_state, at(&expected, u64::MAX), "the same final state");
    let last = expected.iter().map(|u| u.1).max().expect("updates");
    let first = expected.iter().map(|u| u.1).min().expect("updates");
    for time in (first / 1_000 * 1_000..=last + 1_000).step_by(1_000) {
        assert_eq!(at(&got, time), at(&expected, time), "output accumulated at coarse time {time}");
    }
}

/// One like on partition 0 at event time `ts`.
fn like_on_partition_0(ts: u64, i: u64) -> OutgoingRecord {
    let like = Like { ts, user: 2 * i, post: i % 5, kind: kappa_examples::like_counts::Kind::Like };
    like_records(&[(0, like)]).remove(0)
}

#[test]
fn a_live_topic_with_one_silent_partition_delivers_within_the_bound_and_restarts_exactly() {
    let tansu = Tansu::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique("likes");
    tansu.create_topic(&topic, 2);
    let out = dir.path().join("live.jsonl");
    let checkpoint = format!("file://{}", dir.path().join("checkpoint").display());
    let command = |extra: &[&str], out: &std::path::Path, checkpoint: &str| -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kappa"));
        cmd.args([
            "replay",
            "--pipeline",
            "like-counts",
            "--topic",
            &topic,
            "--brokers",
            &tansu.brokers,
            "--then-live",
        ])
        .args(["--lateness-ms", "1000", "--output", out.to_str().expect("utf-8")])
        .args(["--checkpoint", checkpoint, "--checkpoint-every", "100ms"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        cmd
    };
    let mut job = command(&["--idle-timeout", "1s"], &out, &checkpoint).spawn().expect("start kappa");
    // Live traffic on partition 0 only, event time running with the clock.
    let start = 1_700_000_000_000u64;
    let began = Instant::now();
    let mut i = 0;
    let mut delivered_within = None;
    while began.elapsed() < Duration::from_secs(20) && delivered_within.is_none() {
        let ts = start + began.elapsed().as_millis() as u64;
        produce(&tansu.brokers, &topic, [like_on_partition_0(ts, i)], &|_| ()).expect("produce");
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
        // Everything up to 3 s of event time ago is complete (lateness 1 s): it must be out by
        // now, although partition 1 never delivered a record.
        if began.elapsed() > Duration::from_secs(4) {
            let bound = start + began.elapsed().as_millis() as u64 - 3_000;
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if updates(&text.lines().map(String::from).collect::<Vec<_>>()).iter().any(|u| u.1 >= bound) {
                delivered_within = Some(began.elapsed());
            }
        }
    }
    job.kill().expect("SIGKILL kappa");
    let _ = job.wait();
    assert!(
        delivered_within.is_some(),
        "no result within lateness + idle timeout + 1 s while one partition was silent"
    );
    // More live records, then the same command again: it restarts and ends when idle.
    for j in 0..20 {
        produce(&tansu.brokers, &topic, [like_on_partition_0(start + 30_000 + j * 10, i + j)], &|_| ())
            .expect("produce");
    }
    let status = command(&["--exit-when-idle", "2s", "--idle-timeout", "1s"], &out, &checkpoint)
        .status()
        .expect("restart kappa");
    assert!(status.success(), "the restarted job completes");
    let restarted = std::fs::read_to_string(&out).expect("output");
    // The same records with the same recorded decisions (the clock beside the checkpoints, and
    // no new ones) give the same output, byte for byte.
    let decisions = dir.path().join("decisions");
    std::fs::create_dir_all(&decisions).expect("dir");
    let copied = Command::new("cp")
        .args(["-r", dir.path().join("checkpoint/clock").to_str().expect("utf-8"), decisions.to_str().expect("utf-8")])
        .status()
        .expect("cp");
    assert!(copied.success(), "the live job recorded its decisions under clock/");
    let replayed = dir.path().join("replayed.jsonl");
    let status = command(
        &["--exit-when-idle", "2s", "--idle-timeout", "off"],
        &replayed,
        &format!("file://{}", decisions.display()),
    )
    .status()
    .expect("replay");
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(&replayed).expect("replayed"),
        restarted,
        "same records, same decisions, same output"
    );
}
