//! A timely cluster of two processes gives the output of one worker, byte for byte.

use std::process::{Command, Stdio};

use kappa_engine::Record;
use kappa_examples::generator::{like_stream, LikeStreamConfig};
use kappa_replay::segment::encode_batch;
use kappa_replay::{Archive, KappaLayout};
use object_store::ObjectStoreExt;

use crate::harness::{free_port, kappa_ok};

#[test]
fn two_processes_of_two_workers_write_what_one_worker_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().join("archive").display());
    let archive = Archive::open(&url).expect("archive");
    let events = like_stream(&LikeStreamConfig { partitions: 5, ..LikeStreamConfig::new(20_000) });
    for p in 0..5 {
        let records: Vec<Record> = events
            .iter()
            .filter(|(q, _)| *q == p)
            .enumerate()
            .map(|(i, (_, like))| Record {
                offset: i as i64,
                timestamp: Some(like.ts as i64),
                key: None,
                value: Some(serde_json::to_vec(like).expect("serializes").into()),
            })
            .collect();
        for chunk in records.chunks(1_500) {
            let mut bytes = Vec::new();
            encode_batch(chunk, &mut bytes);
            let key =
                KappaLayout::segment_key(&archive, "likes", p, chunk[0].offset, chunk[chunk.len() - 1].offset + 1);
            kappa_replay::archive::runtime().block_on(archive.store.put(&key, bytes.into())).expect("put");
        }
    }
    let single = dir.path().join("single.jsonl");
    let base = ["replay", "--pipeline", "like-counts", "--topic", "likes", "--archive", &url];
    kappa_ok(&[&base[..], &["--workers", "1", "--output", single.to_str().expect("utf-8")]].concat(), &[]);

    let hostfile = dir.path().join("hosts");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).expect("hostfile");
    let clustered = dir.path().join("cluster.jsonl");
    let children: Vec<_> = (0..2)
        .map(|process| {
            Command::new(env!("CARGO_BIN_EXE_kappa"))
                .args(base)
                .args(["--workers", "2", "--processes", "2", "--process", &process.to_string()])
                .args(["--hostfile", hostfile.to_str().expect("utf-8")])
                .args(["--output", clustered.to_str().expect("utf-8")])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a cluster process")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("cluster process ends");
        assert!(out.status.success(), "cluster process failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (a, b) = (std::fs::read(&single).expect("single output"), std::fs::read(&clustered).expect("cluster output"));
    assert!(a.len() > 1_000);
    assert!(a == b, "the cluster's output differs from one worker's");
}
