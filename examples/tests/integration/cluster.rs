//! A timely cluster of two processes × two workers gives the output of one worker, byte for byte,
//! for every pipeline.

use std::path::Path;
use std::process::{Command, Stdio};

use kappa_engine::Record;
use kappa_examples::generator::{
    follow_stream, like_stream, payment_stream, post_stream, social_likes, LikeStreamConfig, PaymentConfig,
    SocialConfig,
};
use kappa_replay::segment::encode_batch;
use kappa_replay::{Archive, KappaLayout};
use object_store::ObjectStoreExt;

use crate::harness::{free_port, kappa_ok};

/// Writes `events` as topic `topic` into the archive at `url`, in segments of 1,500 records.
fn write_topic<T: serde::Serialize>(url: &str, topic: &str, events: &[(i32, T)], ts: impl Fn(&T) -> u64) {
    let archive = Archive::open(url).expect("archive");
    let partitions = events.iter().map(|(p, _)| *p).max().map_or(0, |p| p + 1);
    for p in 0..partitions {
        let records: Vec<Record> = events
            .iter()
            .filter(|(q, _)| *q == p)
            .enumerate()
            .map(|(i, (_, e))| Record {
                offset: i as i64,
                timestamp: Some(ts(e) as i64),
                key: None,
                value: Some(serde_json::to_vec(e).expect("serializes").into()),
            })
            .collect();
        for chunk in records.chunks(1_500) {
            let mut bytes = Vec::new();
            encode_batch(chunk, &mut bytes);
            let key = KappaLayout::segment_key(&archive, topic, p, chunk[0].offset, chunk[chunk.len() - 1].offset + 1);
            kappa_replay::archive::runtime().block_on(archive.store.put(&key, bytes.into())).expect("put");
        }
    }
}

/// Runs `kappa replay` with `args` on one worker, then as 2 processes × 2 workers, and checks the
/// outputs are identical and not trivial.
fn single_equals_cluster(dir: &Path, args: &[&str]) {
    let single = dir.join("single.jsonl");
    kappa_ok(&[args, &["--workers", "1", "--output", single.to_str().expect("utf-8")]].concat(), &[]);
    let hostfile = dir.join("hosts");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).expect("hostfile");
    let clustered = dir.join("cluster.jsonl");
    let args: Vec<String> =
        args.iter().copied().chain(["--output", clustered.to_str().expect("utf-8")]).map(String::from).collect();
    let children: Vec<_> = (0..2).map(|process| cluster_process(&args, &hostfile, process)).collect();
    for child in children {
        let out = child.wait_with_output().expect("cluster process ends");
        assert!(out.status.success(), "cluster process failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (a, b) = (std::fs::read(&single).expect("single output"), std::fs::read(&clustered).expect("cluster output"));
    assert!(a.len() > 500, "the output is not trivial");
    assert!(a == b, "the cluster's output differs from one worker's ({:?})", &args[..args.len() - 2]);
}

#[test]
fn like_counts_on_two_processes_writes_what_one_worker_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().join("archive").display());
    let events = like_stream(&LikeStreamConfig { partitions: 5, ..LikeStreamConfig::new(20_000) });
    write_topic(&url, "likes", &events, |l| l.ts);
    single_equals_cluster(dir.path(), &["replay", "--pipeline", "like-counts", "--topic", "likes", "--archive", &url]);
}

#[test]
fn fraud_alerts_on_two_processes_writes_what_one_worker_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().join("archive").display());
    let events = payment_stream(&PaymentConfig { payments: 10_000, ..PaymentConfig::default() });
    write_topic(&url, "payments", &events, |p| p.ts);
    single_equals_cluster(dir.path(), &["replay", "--pipeline", "fraud-alerts", "--archive", &url]);
}

#[test]
fn ranked_feed_on_two_processes_writes_what_one_worker_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().join("archive").display());
    let config = SocialConfig { users: 150, follows: 1_200, posts: 200, likes: 3_000, ..SocialConfig::default() };
    write_topic(&url, "follows", &follow_stream(&config), |f| f.ts);
    write_topic(&url, "posts", &post_stream(&config), |p| p.ts);
    write_topic(&url, "feed-likes", &social_likes(&config), |l| l.ts);
    single_equals_cluster(
        dir.path(),
        &[
            "replay",
            "--pipeline",
            "ranked-feed",
            "--topic",
            "likes=feed-likes",
            "--archive",
            &url,
            "--backfill-granularity",
            "10s",
        ],
    );
}

/// Starts `kappa` with `args` as process `process` of a 2 × 2 cluster.
fn cluster_process(args: &[String], hostfile: &Path, process: usize) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_kappa"))
        .args(args)
        .args(["--workers", "2", "--processes", "2", "--process", &process.to_string()])
        .args(["--hostfile", hostfile.to_str().expect("utf-8")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a cluster process")
}

#[test]
fn a_killed_cluster_restarts_from_its_checkpoint_and_writes_what_one_worker_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().join("archive").display());
    let events = like_stream(&LikeStreamConfig { partitions: 5, ..LikeStreamConfig::new(600_000) });
    write_topic(&url, "likes", &events, |l| l.ts);
    let base = ["replay", "--pipeline", "like-counts", "--topic", "likes", "--archive", &url];
    let single = dir.path().join("single.jsonl");
    kappa_ok(&[&base[..], &["--output", single.to_str().expect("utf-8")]].concat(), &[]);

    let output = dir.path().join("cluster.jsonl");
    let checkpoints = dir.path().join("ckpt");
    let checkpoint_url = format!("file://{}", checkpoints.display());
    let args: Vec<String> = base
        .iter()
        .copied()
        .chain(["--output", output.to_str().expect("utf-8"), "--checkpoint", &checkpoint_url])
        .chain(["--checkpoint-every", "100ms"])
        .map(String::from)
        .collect();
    let hostfile = dir.path().join("hosts");
    // Kill both processes once a checkpoint is complete, then run the same commands again.
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).expect("hostfile");
    let mut first: Vec<_> = (0..2).map(|p| cluster_process(&args, &hostfile, p)).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let has_manifest = || {
        std::fs::read_dir(&checkpoints)
            .map(|d| d.filter_map(Result::ok).any(|g| g.path().join("MANIFEST").exists()))
            .unwrap_or(false)
    };
    while !has_manifest() && first.iter_mut().all(|c| c.try_wait().expect("wait").is_none()) {
        assert!(std::time::Instant::now() < deadline, "no checkpoint within a minute");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(first.iter_mut().all(|c| c.try_wait().expect("wait").is_none()), "the cluster is killed mid-run");
    for child in &mut first {
        let _ = child.kill();
        let _ = child.wait();
    }
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).expect("hostfile");
    let second: Vec<_> = (0..2).map(|p| cluster_process(&args, &hostfile, p)).collect();
    let mut logs = String::new();
    for child in second {
        let out = child.wait_with_output().expect("cluster process ends");
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "cluster process failed: {logs}");
    }
    assert!(logs.contains("restoring from checkpoint"), "the restart used the checkpoint:\n{logs}");
    let (a, b) = (std::fs::read(&single).expect("single output"), std::fs::read(&output).expect("cluster output"));
    assert!(a == b, "the restarted cluster's output differs from one worker's");
}
