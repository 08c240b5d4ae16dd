//! Archive, replay and handoff through the `kappa` command, against real servers.

use std::collections::BTreeMap;
use std::path::Path;

use kappa_connectors::kafka::producer::{produce, OutgoingRecord};
use kappa_examples::generator::{like_records, like_stream, LikeStreamConfig};
use kappa_examples::like_counts::{self, Like, PostLikes};

use crate::harness::{kappa, kappa_ok, unique, Moto, Tansu};

fn produce_likes(tansu: &Tansu, topic: &str, events: &[(i32, Like)]) {
    produce(&tansu.brokers, topic, like_records(events), &|_| ()).expect("produce to tansu");
}

/// Sums `diff` per `data` over a JSON-lines output file.
fn summed_output(path: &Path) -> BTreeMap<u64, u64> {
    let text = std::fs::read_to_string(path).expect("output file exists");
    let updates = text.lines().map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        let data: PostLikes = serde_json::from_value(v["data"].clone()).expect("data is a post-likes row");
        (data, v["diff"].as_i64().expect("diff is an integer") as isize)
    });
    like_counts::final_result(updates).expect("a valid like-counts result")
}

fn events(n: usize, partitions: i32, seed: u64) -> Vec<(i32, Like)> {
    like_stream(&LikeStreamConfig { partitions, seed, ..LikeStreamConfig::new(n) })
}

fn reference(events: &[(i32, Like)]) -> BTreeMap<u64, u64> {
    like_counts::reference(events.iter().map(|(_, l)| l))
}

fn replay_then_live(topic: &str, archive: &str, brokers: &str, out: &Path, env: &[(&str, String)], workers: &str) {
    kappa_ok(
        &[
            "replay",
            "--pipeline",
            "like-counts",
            "--topic",
            topic,
            "--archive",
            archive,
            "--then-live",
            "--brokers",
            brokers,
            "--exit-when-idle",
            "3s",
            "--output",
            out.to_str().expect("utf-8 path"),
            "--workers",
            workers,
        ],
        env,
    );
}

#[test]
fn tansu_archive_then_live_equals_batch_whatever_the_split() {
    let tansu = Tansu::shared();
    let all = events(3_000, 3, 7);
    for (split, workers) in [(1_000, "1"), (2_950, "2")] {
        let topic = unique("likes");
        tansu.create_topic(&topic, 3);
        produce_likes(&tansu, &topic, &all[..split]);
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = format!("file://{}", dir.path().join("archive").display());
        kappa_ok(&["archive", "write", "--brokers", &tansu.brokers, "--topic", &topic, "--to", &archive], &[]);
        produce_likes(&tansu, &topic, &all[split..]);
        let out = dir.path().join("out.jsonl");
        replay_then_live(&topic, &archive, &tansu.brokers, &out, &[], workers);
        assert_eq!(summed_output(&out), reference(&all), "split at {split}, {workers} worker(s)");
    }
}

#[test]
fn s3_archive_on_moto_gives_the_same_output_as_a_local_one() {
    let tansu = Tansu::shared();
    let moto = Moto::shared();
    let bucket = unique("kappa-archive");
    moto.create_bucket(&bucket);
    let env = moto.env();
    let all = events(2_000, 2, 11);
    let topic = unique("likes");
    tansu.create_topic(&topic, 2);
    produce_likes(&tansu, &topic, &all[..1_200]);
    let dir = tempfile::tempdir().expect("tempdir");
    let local = format!("file://{}", dir.path().join("archive").display());
    let s3 = format!("s3://{bucket}/history/v1");
    kappa_ok(&["archive", "write", "--brokers", &tansu.brokers, "--topic", &topic, "--to", &local], &[]);
    kappa_ok(&["archive", "write", "--brokers", &tansu.brokers, "--topic", &topic, "--to", &s3], &env);
    produce_likes(&tansu, &topic, &all[1_200..]);

    let inspect = kappa_ok(&["archive", "inspect", &s3, "--topic", &topic], &env);
    let listing = String::from_utf8_lossy(&inspect.stdout);
    // One row per partition (partition, segments, bytes, offsets, records, ...): both partitions,
    // holding the 1 200 records archived.
    let rows: Vec<Vec<&str>> = listing
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|columns| columns.len() >= 5 && columns[0].parse::<i32>().is_ok())
        .collect();
    let records: u64 = rows.iter().map(|columns| columns[4].parse::<u64>().expect("a records column")).sum();
    assert!(
        listing.contains("(layout kappa)") && rows.iter().map(|c| c[0]).eq(["0", "1"]) && records == 1_200,
        "inspect lists both partitions and the 1200 archived records:\n{listing}"
    );

    let (out_local, out_s3) = (dir.path().join("local.jsonl"), dir.path().join("s3.jsonl"));
    replay_then_live(&topic, &local, &tansu.brokers, &out_local, &[], "2");
    replay_then_live(&topic, &s3, &tansu.brokers, &out_s3, &env, "1");
    let (a, b) = (std::fs::read(&out_local).expect("local output"), std::fs::read(&out_s3).expect("s3 output"));
    assert!(!a.is_empty());
    assert!(a == b, "replaying from S3 on 1 worker and from a directory on 2 must write identical updates");
    assert_eq!(summed_output(&out_s3), reference(&all));
}

#[test]
fn second_archive_write_appends_only_what_is_new() {
    let tansu = Tansu::shared();
    let all = events(900, 2, 3);
    let topic = unique("likes");
    tansu.create_topic(&topic, 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = format!("file://{}", dir.path().display());
    produce_likes(&tansu, &topic, &all[..500]);
    let first = kappa_ok(&["archive", "write", "--brokers", &tansu.brokers, "--topic", &topic, "--to", &archive], &[]);
    assert!(String::from_utf8_lossy(&first.stdout).contains("archived 500 records"));
    produce_likes(&tansu, &topic, &all[500..]);
    let second = kappa_ok(&["archive", "write", "--brokers", &tansu.brokers, "--topic", &topic, "--to", &archive], &[]);
    assert!(String::from_utf8_lossy(&second.stdout).contains("archived 400 records"), "{second:?}");
    let third = kappa_ok(&["archive", "write", "--brokers", &tansu.brokers, "--topic", &topic, "--to", &archive], &[]);
    assert!(String::from_utf8_lossy(&third.stdout).contains("archived 0 records"));

    // Replaying the archive alone now gives the whole answer.
    let out = dir.path().join("out.jsonl");
    let out_arg = out.to_str().expect("utf-8");
    kappa_ok(
        &["replay", "--pipeline", "like-counts", "--topic", &topic, "--archive", &archive, "--output", out_arg],
        &[],
    );
    assert_eq!(summed_output(&out), reference(&all));
}

#[test]
fn flipped_byte_in_a_segment_names_object_and_offset() {
    let tansu = Tansu::shared();
    let topic = unique("likes");
    tansu.create_topic(&topic, 1);
    produce_likes(&tansu, &topic, &events(300, 1, 5));
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = format!("file://{}", dir.path().display());
    kappa_ok(&["archive", "write", "--brokers", &tansu.brokers, "--topic", &topic, "--to", &archive], &[]);
    let segment_dir = dir.path().join("kappa").join(&topic).join("0000000000");
    let segment =
        std::fs::read_dir(&segment_dir).expect("segment directory").next().expect("a segment").expect("entry");
    let mut bytes = std::fs::read(segment.path()).expect("read segment");
    bytes[200] ^= 0x40;
    std::fs::write(segment.path(), bytes).expect("write damaged segment");

    let out = kappa(&["replay", "--pipeline", "like-counts", "--topic", &topic, "--archive", &archive], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a damaged archive must fail the replay");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let name = segment.file_name().to_string_lossy().to_string();
    assert!(stderr.contains(&name), "error names the object: {stderr}");
    assert!(stderr.contains("byte offset 17"), "error names the byte offset (the batch CRC): {stderr}");
}

#[test]
fn malformed_records_fail_by_default_and_are_counted_when_skipped() {
    let tansu = Tansu::shared();
    let topic = unique("likes");
    tansu.create_topic(&topic, 1);
    let mut records = like_records(&events(50, 1, 9));
    records.insert(
        20,
        OutgoingRecord { partition: 0, key: vec![], value: b"{\"ts\":1,\"user\":2}".to_vec(), timestamp: 0 },
    );
    produce(&tansu.brokers, &topic, records, &|_| ()).expect("produce");
    let args = ["replay", "--pipeline", "like-counts", "--topic", &topic, "--brokers", &tansu.brokers];

    let failed = kappa(&args, &[]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success());
    assert!(stderr.contains(&format!("topic `{topic}` partition 0 at offset 20")), "{stderr}");

    let skipped = kappa_ok(&[&args[..], &["--on-bad-record", "skip", "--output", "/dev/null"]].concat(), &[]);
    assert!(String::from_utf8_lossy(&skipped.stderr).contains("skipped 1 malformed record(s)"));
}

#[test]
fn demo_runs_end_to_end_and_verifies() {
    let out = kappa_ok(&["demo", "--events", "200000", "--workers", "2"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for pipeline in ["like-counts", "ranked-feed", "fraud-alerts"] {
        assert!(stdout.contains(&format!("verified: {pipeline} matches the batch reference")), "{stdout}");
    }
}

/// The records of `topic` in the Kappa archive at `url`, per partition, in offset order.
fn archived_records(url: &str, topic: &str) -> Vec<(i32, Vec<kappa_engine::Record>)> {
    use kappa_replay::archive::runtime;
    let archive = kappa_replay::Archive::open(url).expect("opens the kappa archive");
    let layout = archive.layout.clone();
    let partitions = runtime().block_on(layout.partitions(&archive, topic)).expect("partitions");
    partitions
        .into_iter()
        .map(|p| {
            let mut records = Vec::new();
            for segment in runtime().block_on(layout.segments(&archive, topic, p)).expect("segments") {
                let bytes = runtime().block_on(archive.fetch(&segment.key)).expect("segment");
                kappa_replay::segment::decode_segment(segment.key.as_ref(), &bytes, 0, &mut records).expect("decodes");
            }
            (p, records)
        })
        .collect()
}

#[test]
fn redpanda_archive_replays_then_hands_off_live_at_the_next_kafka_offset() {
    use kappa_replay::layout::redpanda::{write_fixture, FixtureBatch, FixturePartition};
    use kappa_replay::segment::{encode_batch_full, BatchOptions, Codec};
    let tansu = Tansu::shared();
    let all = events(2_400, 2, 23);
    let topic = unique("likes");
    tansu.create_topic(&topic, 2);
    produce_likes(&tansu, &topic, &all[..1_500]);
    let dir = tempfile::tempdir().expect("tempdir");
    let kappa_archive = format!("file://{}", dir.path().join("kappa-layout").display());
    kappa_ok(&["archive", "write", "--brokers", &tansu.brokers, "--topic", &topic, "--to", &kappa_archive], &[]);

    // The same history as Redpanda would have uploaded it: segments of 100 Kafka offsets, each
    // opening with a raft configuration batch (raft offsets run ahead of Kafka's), every codec,
    // the oldest segment of each partition in a spillover manifest.
    let codecs = [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd];
    let partitions: Vec<FixturePartition> = archived_records(&kappa_archive, &topic)
        .into_iter()
        .map(|(partition, records)| FixturePartition {
            partition,
            revision: 42,
            start_delta: 1,
            segments: records
                .chunks(100)
                .enumerate()
                .map(|(n, segment)| {
                    let mut batches = vec![FixtureBatch::Internal { kind: 2, offsets: 1 }];
                    for batch in segment.chunks(30) {
                        let mut bytes = Vec::new();
                        let options = BatchOptions { codec: codecs[n % codecs.len()], ..BatchOptions::default() };
                        encode_batch_full(batch, &options, &mut bytes);
                        batches.push(FixtureBatch::Kafka { bytes, aborted: false });
                    }
                    batches
                })
                .collect(),
            spillover: 1,
            padding: 0,
        })
        .collect();
    let redpanda = format!("file://{}", dir.path().join("redpanda-bucket").display());
    let bucket = kappa_replay::Archive::open_layout(&redpanda, Some("redpanda"), None).expect("opens the bucket");
    kappa_replay::archive::runtime().block_on(write_fixture(&bucket, &topic, &partitions)).expect("writes");
    produce_likes(&tansu, &topic, &all[1_500..]);

    let inspect = kappa_ok(&["archive", "inspect", &redpanda, "--topic", &topic], &[]);
    let listing = String::from_utf8_lossy(&inspect.stdout);
    assert!(listing.contains("(layout redpanda)"), "the layout is detected from the keys:\n{listing}");
    kappa_ok(&["archive", "verify", &redpanda, "--topic", &topic, "--layout", "redpanda"], &[]);

    let out = dir.path().join("out.jsonl");
    kappa_ok(
        &[
            "replay",
            "--pipeline",
            "like-counts",
            "--topic",
            &topic,
            "--archive",
            &redpanda,
            "--layout",
            "redpanda",
            "--then-live",
            "--brokers",
            &tansu.brokers,
            "--exit-when-idle",
            "3s",
            "--output",
            out.to_str().expect("utf-8 path"),
        ],
        &[],
    );
    assert_eq!(summed_output(&out), reference(&all), "archive then live: no gap, no duplicate");
}

/// Writes one uncompressed KIP-405 upload (Aiven's layout, a single fixed chunk) of `records`
/// as segment `id` of partition 0, with the manifest's `remoteLogSegmentMetadata`.
fn kip405_upload(dir: &Path, topic: &str, id: &str, records: &[kappa_engine::Record], epoch: i32) {
    let mut plain = Vec::new();
    for batch in records.chunks(50) {
        kappa_replay::segment::encode_batch(batch, &mut plain);
    }
    let (base, end, n) = (records[0].offset, records[records.len() - 1].offset, plain.len());
    let manifest = serde_json::json!({
        "chunkIndex": {"type": "fixed", "originalChunkSize": n, "originalFileSize": n,
                       "transformedChunkSize": n, "finalTransformedChunkSize": n},
        "segmentIndexes": {}, "compression": false,
        "remoteLogSegmentMetadata": {"startOffset": base, "endOffset": end,
                                     "segmentLeaderEpochs": {epoch.to_string(): base}},
    });
    let partition = dir.join(format!("{topic}-AAAAAAAAAAAAAAAAAAAAAA")).join("0");
    std::fs::create_dir_all(&partition).expect("mkdir");
    std::fs::write(partition.join(format!("{base:020}-{id}.log")), plain).expect("write log");
    std::fs::write(partition.join(format!("{base:020}-{id}.rsm-manifest")), manifest.to_string())
        .expect("write manifest");
}

#[test]
fn kip405_replay_with_remote_log_metadata_reads_only_finished_uploads_then_hands_off() {
    use kappa_replay::layout::remote_log_metadata::{encode, uuid_string, MetadataRecord, RemoteSegment, SegmentState};
    let tansu = Tansu::shared();
    let all = events(1_000, 1, 31);
    let topic = unique("likes");
    tansu.create_topic(&topic, 1);
    produce_likes(&tansu, &topic, &all[..400]);
    let dir = tempfile::tempdir().expect("tempdir");
    let kappa_archive = format!("file://{}", dir.path().join("kappa-layout").display());
    kappa_ok(&["archive", "write", "--brokers", &tansu.brokers, "--topic", &topic, "--to", &kappa_archive], &[]);
    let records = archived_records(&kappa_archive, &topic).remove(0).1;
    assert_eq!(records.len(), 400);

    // Offsets 0..=199 and 200..=399 uploaded and finished; a second upload at 200 covering more
    // offsets, with other records, whose copy never finished (a crashed upload): without the
    // metadata, it would be read as the upload covering the most offsets.
    let bucket = dir.path().join("tiered");
    let ids: Vec<String> = (1..=3u8).map(|n| uuid_string(&[n; 16])).collect();
    kip405_upload(&bucket, &topic, &ids[0], &records[..200], 0);
    kip405_upload(&bucket, &topic, &ids[1], &records[200..], 0);
    let other: Vec<kappa_engine::Record> = kappa_examples::generator::like_records(&events(300, 1, 99))
        .into_iter()
        .enumerate()
        .map(|(i, r)| kappa_engine::Record {
            offset: 200 + i as i64,
            timestamp: Some(r.timestamp),
            key: Some(r.key.into()),
            value: Some(r.value.into()),
        })
        .collect();
    kip405_upload(&bucket, &topic, &ids[2], &other, 0);

    let metadata_topic = "__remote_log_metadata";
    tansu.create_topic(metadata_topic, 1);
    let mut events_out = Vec::new();
    for (n, (start, end)) in [(0, 199), (200, 399), (200, 499)].into_iter().enumerate() {
        let id = [n as u8 + 1; 16];
        let segment = RemoteSegment {
            start_offset: start,
            end_offset: end,
            leader_epochs: [(0, start)].into(),
            state: SegmentState::CopyStarted,
        };
        events_out.push(encode(&MetadataRecord::Segment {
            topic: topic.clone(),
            topic_id: [0; 16],
            partition: 0,
            id,
            segment,
        }));
        if n < 2 {
            let state = SegmentState::CopyFinished;
            events_out.push(encode(&MetadataRecord::Update {
                topic: topic.clone(),
                topic_id: [0; 16],
                partition: 0,
                id,
                state,
            }));
        }
    }
    let outgoing = events_out
        .into_iter()
        .map(|value| OutgoingRecord { partition: 0, key: vec![], value, timestamp: 0 })
        .collect::<Vec<_>>();
    produce(&tansu.brokers, metadata_topic, outgoing, &|_| ()).expect("produce the metadata");
    produce_likes(&tansu, &topic, &all[400..]);

    let url = format!("file://{}", bucket.display());
    let flags = ["--layout", "kip405", "--remote-log-metadata", &tansu.brokers];
    let inspect = kappa_ok(&[&["archive", "inspect", &url, "--topic", &topic][..], &flags].concat(), &[]);
    let listing = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        listing.contains(&format!("dropped upload {} at offset 200: its state is COPY_SEGMENT_STARTED", ids[2])),
        "inspect says what the metadata dropped:\n{listing}"
    );
    let run = |extra: &[&str], out: &Path| {
        let args = [
            &["replay", "--pipeline", "like-counts", "--topic", &topic, "--archive", &url][..],
            extra,
            &["--then-live", "--brokers", &tansu.brokers, "--exit-when-idle", "3s"],
            &["--output", out.to_str().expect("utf-8 path")],
        ]
        .concat();
        kappa_ok(&args, &[]);
    };
    let out = dir.path().join("with-metadata.jsonl");
    run(&flags, &out);
    assert_eq!(summed_output(&out), reference(&all), "finished uploads, then live from offset 400");
    let without = dir.path().join("without.jsonl");
    run(&["--layout", "kip405"], &without);
    assert_ne!(summed_output(&without), reference(&all), "without the metadata the unfinished upload is read");
}

/// Writes `records` as the Iceberg table `kafka.{table}` in `warehouse` (file:// or s3://) with
/// `scripts/iceberg_tables.py` (pyiceberg), in `vendor`'s mapping; returns the table's location.
#[cfg(feature = "iceberg")]
fn iceberg_table(
    scratch: &Path,
    warehouse: &str,
    table: &str,
    vendor: &str,
    records: &[(i32, Vec<kappa_engine::Record>)],
    extra: &[&str],
    env: &[(&str, String)],
) -> String {
    use base64::Engine as _;
    let b64 = |b: &Option<bytes::Bytes>| b.as_ref().map(|b| base64::engine::general_purpose::STANDARD.encode(b));
    let mut lines = String::new();
    for (p, rs) in records {
        for r in rs {
            let line = serde_json::json!({"partition": p, "offset": r.offset, "timestamp_ms": r.timestamp,
                                          "key": b64(&r.key), "value": b64(&r.value)});
            lines.push_str(&format!("{line}\n"));
        }
    }
    let input = scratch.join(format!("{table}.jsonl"));
    std::fs::write(&input, lines).expect("write records");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/iceberg_tables.py");
    let catalog = scratch.join(format!("{table}.catalog.db"));
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(&script).args(["--warehouse", warehouse, "--table", &format!("kafka.{table}"), "--vendor", vendor]);
    cmd.arg("--records").arg(&input).arg("--catalog-db").arg(&catalog).args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd.output().expect("python3 runs");
    assert!(
        output.status.success(),
        "scripts/iceberg_tables.py failed (python3 -m pip install 'pyiceberg[pyarrow,sql-sqlite]', or run \
         scripts/test):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the script prints JSON");
    out["location"].as_str().expect("a location").to_string()
}

#[cfg(feature = "iceberg")]
#[test]
fn iceberg_tables_of_every_vendor_replay_then_hand_off_live_at_the_next_offset() {
    let tansu = Tansu::shared();
    let moto = Moto::shared();
    let bucket = unique("kappa-iceberg");
    moto.create_bucket(&bucket);
    let s3_env = moto.env();
    let dir = tempfile::tempdir().expect("tempdir");
    for (n, (vendor, on_s3)) in [("redpanda", false), ("automq", false), ("aiven", true)].into_iter().enumerate() {
        let all = events(2_000, 2, 40 + n as u64);
        let topic = unique("likes");
        tansu.create_topic(&topic, 2);
        produce_likes(&tansu, &topic, &all[..1_300]);
        let kappa_archive = format!("file://{}", dir.path().join(format!("kappa-{vendor}")).display());
        kappa_ok(&["archive", "write", "--brokers", &tansu.brokers, "--topic", &topic, "--to", &kappa_archive], &[]);
        // The topic's history as the vendor's Iceberg table, in several commits.
        let (warehouse, env) = if on_s3 {
            (format!("s3://{bucket}/warehouse"), s3_env.clone())
        } else {
            (format!("file://{}", dir.path().join("warehouse").display()), Vec::new())
        };
        let history = archived_records(&kappa_archive, &topic);
        let table = iceberg_table(dir.path(), &warehouse, vendor, vendor, &history, &["--commits", "4"], &env);
        produce_likes(&tansu, &topic, &all[1_300..]);

        let inspect = kappa_ok(&["archive", "inspect", &table, "--topic", &topic], &env);
        let listing = String::from_utf8_lossy(&inspect.stdout);
        assert!(
            listing.contains("(layout iceberg)") && listing.contains(&format!("({vendor} mapping), snapshot ")),
            "{vendor}: inspect detects the table and names its mapping and snapshot:\n{listing}"
        );
        kappa_ok(&["archive", "verify", &table, "--topic", &topic, "--layout", "iceberg"], &env);
        let out = dir.path().join(format!("{vendor}.jsonl"));
        replay_then_live(&topic, &table, &tansu.brokers, &out, &env, "2");
        assert_eq!(summed_output(&out), reference(&all), "{vendor}: table then live: no gap, no duplicate");
    }
}

#[cfg(feature = "iceberg")]
#[test]
fn an_iceberg_table_that_lost_rows_is_refused_unless_allowed() {
    let tansu = Tansu::shared();
    let all = events(600, 2, 77);
    let topic = unique("likes");
    tansu.create_topic(&topic, 2);
    produce_likes(&tansu, &topic, &all);
    let dir = tempfile::tempdir().expect("tempdir");
    let kappa_archive = format!("file://{}", dir.path().join("kappa").display());
    kappa_ok(&["archive", "write", "--brokers", &tansu.brokers, "--topic", &topic, "--to", &kappa_archive], &[]);
    let warehouse = format!("file://{}", dir.path().join("warehouse").display());
    let history = archived_records(&kappa_archive, &topic);
    let table =
        iceberg_table(dir.path(), &warehouse, "upserted", "automq", &history, &["--delete-offsets", "0:3,1:5"], &[]);
    let refused = kappa(&["archive", "inspect", &table, "--topic", &topic], &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a table that lost rows is refused by default");
    assert!(stderr.contains("deleted or rewrote rows") && stderr.contains("--allow-lossy-table"), "{stderr}");
    let allowed = kappa_ok(&["archive", "inspect", &table, "--topic", &topic, "--allow-lossy-table"], &[]);
    let listing = String::from_utf8_lossy(&allowed.stdout);
    assert!(listing.contains("lossy table replayed as it is"), "{listing}");
    let archived: u64 = history.iter().map(|(_, r)| r.len() as u64).sum();
    let listed: u64 = listing
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|columns| columns.len() >= 5 && columns[0].parse::<i32>().is_ok())
        .map(|columns| columns[4].parse::<u64>().expect("a records column"))
        .sum();
    assert_eq!(listed, archived - 2, "replayed as it is: the two deleted rows are gone:\n{listing}");
}
