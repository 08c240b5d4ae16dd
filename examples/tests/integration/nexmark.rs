//! Nexmark from a Tansu topic: every query over events produced to the broker equals its batch
//! reference.

use std::collections::BTreeMap;
use std::sync::Arc;

use kappa_connectors::kafka::producer::{produce, OutgoingRecord};
use kappa_connectors::{KafkaSource, KafkaSourceConfig, ReadUntil};
use kappa_engine::{ClusterConfig, JobOptions, MemorySink};
use kappa_examples::nexmark::{self, Query, Row};

use crate::harness::{unique, Tansu};

#[test]
fn nexmark_queries_over_a_tansu_topic_equal_their_references() {
    let tansu = Tansu::shared();
    let events = nexmark::generate_at(3_000, 200);
    let topic = unique("nexmark");
    tansu.create_topic(&topic, 2);
    let records = nexmark::records(&events).into_iter().enumerate().map(|(i, r)| OutgoingRecord {
        partition: (i % 2) as i32,
        key: Vec::new(),
        value: r.value.map(|v| v.to_vec()).unwrap_or_default(),
        timestamp: r.timestamp.unwrap_or(0),
    });
    produce(&tansu.brokers, &topic, records, &|_| ()).expect("produce nexmark events");
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
