//! Nexmark from a Tansu topic: every query over events produced to the broker equals its batch
//! reference.

use std::collections::BTreeMap;
use std::sync::Arc;

use kappa_connectors::kafka::producer::{produce, OutgoingRecord};
use kappa_connectors::{KafkaSource, KafkaSourceConfig, ReadUntil};
use kappa_engine::{ClusterConfig, JobOptions, MemorySink};
use kappa_examples::nexmark::{self, Query, Row};

use crate::harness::{kappa_ok, unique, Tansu};

/// A topic of `events`, two partitions.
fn nexmark_topic(tansu: &Tansu, events: &[nexmark::Event]) -> String {
    let topic = unique("nexmark");
    tansu.create_topic(&topic, 2);
    let records = nexmark::records(events).into_iter().enumerate().map(|(i, r)| OutgoingRecord {
        partition: (i % 2) as i32,
        key: Vec::new(),
        value: r.value.map(|v| v.to_vec()).unwrap_or_default(),
        timestamp: r.timestamp.unwrap_or(0),
    });
    produce(&tansu.brokers, &topic, records, &|_| ()).expect("produce nexmark events");
    topic
}

#[test]
fn nexmark_queries_over_a_tansu_topic_equal_their_references() {
    let tansu = Tansu::shared();
    let events = nexmark::generate_at(3_000, 200);
    let topic = nexmark_topic(&tansu, &events);
    for q in Query::ALL {
        let source =
            KafkaSource::try_new(KafkaSourceConfig::new(&tansu.brokers, &topic, ReadUntil::HighWatermarkAtStart))
                .expect("kafka source");
        let sink = MemorySink::new();
        nexmark::run(&ClusterConfig::threads(2), JobOptions::default(), q, Arc::new(source), sink.clone())
            .expect("the query runs");
        let got: BTreeMap<Row, i64> = sink.accumulated().into_iter().map(|(row, diff)| (row, diff as i64)).collect();
        assert_eq!(got, nexmark::reference(q, &events), "{q:?}");
    }
}

/// Every Nexmark query is a pipeline of the `kappa` command: listed by `kappa pipelines`, run by
/// `kappa replay --pipeline nexmark-qN`, its output file accumulating to the reference.
#[test]
fn every_nexmark_query_runs_from_the_command_line_and_equals_its_reference() {
    let tansu = Tansu::shared();
    let events = nexmark::generate_at(2_000, 200);
    let topic = nexmark_topic(&tansu, &events);
    let listing = String::from_utf8(kappa_ok(&["pipelines"], &[]).stdout).expect("utf-8");
    for name in ["like-counts", "ranked-feed", "fraud-alerts"] {
        assert!(listing.contains(&format!("{name} (version 1)")), "{name} listed:\n{listing}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, q) in Query::ALL.into_iter().enumerate() {
        let name = format!("nexmark-q{i}");
        assert!(listing.contains(&format!("{name} (version 1)")), "{name} listed:\n{listing}");
        let out = dir.path().join(format!("{name}.jsonl"));
        let args = ["replay", "--pipeline", &name, "--brokers", &tansu.brokers, "--topic", &topic, "-w", "2"];
        kappa_ok(&[&args[..], &["--output", out.to_str().expect("utf-8")]].concat(), &[]);
        let mut got: BTreeMap<Row, i64> = BTreeMap::new();
        for line in std::fs::read_to_string(&out).expect("output").lines() {
            let update: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let row: Row = serde_json::from_value(update["data"].clone()).expect("a row");
            *got.entry(row).or_default() += update["diff"].as_i64().expect("diff");
        }
        got.retain(|_, n| *n != 0);
        assert_eq!(got, nexmark::reference(q, &events), "{name} from the command line");
    }
}
