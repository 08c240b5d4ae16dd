//! The handoff refuses to continue live across a gap: here on librdkafka's mock cluster, whose
//! retention (about 5 MB per partition) lets a test move the log start past an archive.

use kappa_connectors::kafka::producer::{produce, OutgoingRecord};
use kappa_runner::job::{open_input, InputSpec};
use rdkafka::mocking::MockCluster;

fn records(n: usize, size: usize) -> impl Iterator<Item = OutgoingRecord> {
    (0..n).map(move |i| OutgoingRecord { partition: 0, key: vec![], value: vec![b'x'; size], timestamp: i as i64 })
}

#[test]
fn archive_ending_before_the_log_start_is_an_error_naming_the_missing_offsets() {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic("likes", 1, 1).expect("topic");
    let brokers = mock.bootstrap_servers();
    produce(&brokers, "likes", records(10, 1), &|_| ()).expect("produce");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().display());
    let archive = kappa_replay::Archive::open(&url).expect("archive");
    kappa_runner::job::archive_topic(&archive, &brokers, "likes", &|_| ()).expect("archive write");
    produce(&brokers, "likes", records(800, 10_000), &|_| ()).expect("produce past retention");

    let spec = InputSpec {
        topic: "likes".into(),
        archive: Some(url),
        layout: None,
        cluster: None,
        brokers: Some(brokers),
        then_live: true,
        exit_when_idle: Some(std::time::Duration::from_secs(1)),
        read_ahead_bytes: None,
        remote_log_metadata: None,
        allow_lossy_table: false,
    };
    let error = open_input(&spec).err().expect("a gap must be refused");
    let message = format!("{error:#}");
    assert!(message.contains("topic `likes` partition 0 ends at offset 10"), "{message}");
    assert!(message.contains("offsets 10.."), "{message}");
}
