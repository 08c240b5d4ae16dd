//! A replay from S3 survives the S3 endpoint going away and coming back: transient failures are
//! retried (object_store's retry policy) and the output is identical to an undisturbed replay.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kappa_engine::Record;
use kappa_replay::segment::encode_batch;
use kappa_replay::KappaLayout;
use object_store::ObjectStoreExt;

use crate::harness::{kappa_ok, unique, Moto, Outages};

#[test]
fn replay_from_s3_survives_an_outage_mid_replay_with_identical_output() {
    let moto = Moto::shared();
    let bucket = unique("outage");
    moto.create_bucket(&bucket);
    let url = format!("s3://{bucket}/a");
    let env = moto.env();
    // Many small segments, so the replay is still fetching when the outage starts.
    kappa_engine::install_tls_provider();
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&moto.endpoint)
        .with_allow_http(true)
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .with_region("us-east-1")
        .with_bucket_name(&bucket)
        .build()
        .expect("s3 client");
    let archive = kappa_replay::Archive::open("memory://outage-keys").expect("for keys");
    let events = kappa_examples::generator::like_stream(&kappa_examples::generator::LikeStreamConfig {
        partitions: 4,
        ..kappa_examples::generator::LikeStreamConfig::new(24_000)
    });
    let rt = kappa_replay::archive::runtime();
    for p in 0..4 {
        let records: Vec<Record> = events
            .iter()
            .filter(|(q, _)| *q == p)
            .enumerate()
            .map(|(i, (_, l))| Record {
                offset: i as i64,
                timestamp: Some(l.ts as i64),
                key: None,
                value: Some(serde_json::to_vec(l).expect("json").into()),
            })
            .collect();
        for chunk in records.chunks(40) {
            let mut bytes = Vec::new();
            encode_batch(chunk, &mut bytes);
            let key =
                KappaLayout::segment_key(&archive, "likes", p, chunk[0].offset, chunk[chunk.len() - 1].offset + 1);
            let key = object_store::path::Path::from(format!("a/{key}"));
            rt.block_on(store.put(&key, bytes.into())).expect("upload");
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (calm, disturbed) = (dir.path().join("calm.jsonl"), dir.path().join("disturbed.jsonl"));
    let args = ["replay", "--pipeline", "like-counts", "--topic", "likes", "--archive", &url, "--read-ahead-mib", "1"];
    kappa_ok(&[&args[..], &["--output", calm.to_str().expect("utf-8")]].concat(), &env);

    let outages = Outages::start(moto.endpoint.trim_start_matches("http://"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kappa"));
    child.args(args).args(["--output", disturbed.to_str().expect("utf-8")]);
    for (k, v) in &env {
        child.env(k, v);
    }
    child.env("AWS_ENDPOINT", outages.endpoint()).stdout(Stdio::null()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = child.spawn().expect("start replay");
    std::thread::sleep(Duration::from_millis(600));
    assert!(child.try_wait().expect("poll").is_none(), "the replay ended before the outage: make it longer");
    outages.outage(Duration::from_secs(3));
    let out = child.wait_with_output().expect("replay ends");
    assert!(out.status.success(), "the replay failed across the outage: {}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() > Duration::from_secs(3), "the replay waited out the outage");
    assert!(outages.cut.load(std::sync::atomic::Ordering::SeqCst) > 0, "the outage cut open connections");
    let (a, b) = (std::fs::read(&calm).expect("calm"), std::fs::read(&disturbed).expect("disturbed"));
    assert!(!a.is_empty());
    assert!(a == b, "output after an outage differs from an undisturbed replay");
}
