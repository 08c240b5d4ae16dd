//! Replaying what a real Tansu broker writes to S3 (moto) gives the output of consuming the topic
//! from the broker, for every compression codec librdkafka produces.

use kappa_connectors::kafka::producer::produce_with;
use kappa_examples::generator::{like_records, like_stream, LikeStreamConfig};
use kappa_examples::like_counts;

use crate::harness::{kappa_ok, unique, Moto, Tansu};

#[test]
fn tansu_s3_archives_replay_like_the_broker_for_every_codec() {
    let moto = Moto::shared();
    let bucket = unique("tansu");
    moto.create_bucket(&bucket);
    let env = moto.env();
    let tansu = Tansu::start_with_storage(&format!("s3://{bucket}/"), &env);
    let events = like_stream(&LikeStreamConfig { partitions: 2, ..LikeStreamConfig::new(1_500) });
    let records = like_records(&events);
    let dir = tempfile::tempdir().expect("tempdir");
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = unique(&format!("likes-{codec}"));
        tansu.create_topic(&topic, 2);
        // Several produce calls, so each partition holds several batch objects.
        for chunk in records.chunks(400) {
            produce_with(&tansu.brokers, &topic, chunk.to_vec(), &[("compression.type", codec)], &|_| ())
                .expect("produce");
        }
        let archive = format!("s3://{bucket}");
        let inspect = kappa_ok(&["archive", "inspect", &archive, "--topic", &topic], &env);
        let listing = String::from_utf8_lossy(&inspect.stdout);
        assert!(listing.contains("(layout tansu)"), "the layout is detected:\n{listing}");
        assert!(listing.lines().skip(2).all(|l| l.contains(codec)), "batches are {codec}:\n{listing}");
        kappa_ok(&["archive", "verify", &archive, "--topic", &topic], &env);

        let (from_s3, from_broker) = (dir.path().join(format!("{codec}-s3")), dir.path().join(format!("{codec}-k")));
        let base = ["replay", "--pipeline", "like-counts", "--topic", &topic];
        kappa_ok(&[&base[..], &["--archive", &archive, "--output", from_s3.to_str().expect("utf-8")]].concat(), &env);
        kappa_ok(
            &[&base[..], &["--brokers", &tansu.brokers, "--output", from_broker.to_str().expect("utf-8")]].concat(),
            &[],
        );
        let (a, b) = (std::fs::read(&from_s3).expect("s3 output"), std::fs::read(&from_broker).expect("broker output"));
        assert!(!a.is_empty());
        assert!(a == b, "{codec}: replaying Tansu's S3 archive differs from consuming the broker");

        let updates = String::from_utf8_lossy(&a)
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).expect("json");
                (serde_json::from_value(v["data"].clone()).expect("row"), v["diff"].as_i64().expect("diff") as isize)
            })
            .collect::<Vec<_>>();
        let result = like_counts::final_result(updates).expect("valid result");
        assert_eq!(result, like_counts::reference(events.iter().map(|(_, l)| l)), "{codec}");
    }
}
