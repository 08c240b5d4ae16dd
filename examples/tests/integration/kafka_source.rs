//! The Kafka source on Tansu: a job resumed at any offset reads every record from there on.

use std::time::{Duration, Instant};

use kappa_connectors::kafka::producer::{produce, OutgoingRecord};
use kappa_connectors::{KafkaSource, KafkaSourceConfig, ReadUntil};
use kappa_engine::{PartitionId, SourceFactory};

use crate::harness::{unique, Tansu};

/// Tansu 0.6.0 answers a fetch at an offset inside a batch with the batches that start after it
/// (skipping the rest of that batch; inside the last batch, with nothing). A checkpoint can resume
/// a partition at any offset, so the source must read every record from there regardless.
#[test]
fn a_partition_resumed_inside_a_batch_delivers_every_record_from_its_offset() {
    let tansu = Tansu::shared();
    let topic = unique("resume");
    tansu.create_topic(&topic, 1);
    // Two produce calls: two batches, offsets 0..20 and 20..40.
    let batch = |from: i64| {
        (0..20).map(move |i| OutgoingRecord { partition: 0, key: vec![], value: vec![b'x'; 10], timestamp: from + i })
    };
    produce(&tansu.brokers, &topic, batch(0), &|_| ()).expect("produce");
    produce(&tansu.brokers, &topic, batch(100), &|_| ()).expect("produce");
    for start in [0i64, 7, 19, 20, 27, 39, 40] {
        let config = KafkaSourceConfig::new(&tansu.brokers, &topic, ReadUntil::Idle(Duration::from_millis(1_500)));
        let source = KafkaSource::try_new(config).expect("source");
        let mut reader = source.open(&[(PartitionId::new(&topic, 0), Some(start))]).expect("open");
        let (mut out, mut finished) = (Vec::new(), Vec::new());
        let started = Instant::now();
        while finished.is_empty() {
            assert!(started.elapsed() < Duration::from_secs(30), "resumed at {start}: the source never went idle");
            reader.poll(&mut out, &mut finished).expect("poll");
            std::thread::sleep(Duration::from_millis(5));
        }
        let offsets: Vec<i64> = out.iter().map(|(_, record)| record.offset).collect();
        assert_eq!(offsets, (start..40).collect::<Vec<_>>(), "resumed at offset {start}");
    }
}
