//! The conformance suite every archive layout passes: listing, order, offsets, CRC, handoff end,
//! damage reporting. Each layout's test writes the same history in its own format (plus whatever
//! the format adds: relative offsets, transactions) and calls [`check_layout`].

use std::collections::BTreeMap;

use bytes::Bytes;
use kappa_engine::{Offset, PartitionId, Record, SourceFactory};
use object_store::path::Path;
use object_store::ObjectStoreExt;

use crate::archive::{runtime, Archive};
use crate::inspect::summarize;
use crate::source::ReplaySource;

/// The history every layout's test writes: 3 partitions, records at offsets starting at 5
/// (as after retention), values of assorted sizes.
pub(crate) fn history() -> Vec<(i32, Vec<Record>)> {
    (0..3)
        .map(|p| {
            let records = (0..(40 + p as i64 * 13))
                .map(|i| Record {
                    offset: 5 + i,
                    timestamp: Some(1_000 * i + p as i64),
                    key: (i % 3 != 0).then(|| Bytes::from(format!("k{i}"))),
                    value: Some(Bytes::from("v".repeat((i % 17) as usize + 1))),
                })
                .collect();
            (p, records)
        })
        .collect()
}

fn replay_all(replay: &ReplaySource, topic: &str) -> Result<BTreeMap<i32, Vec<Record>>, String> {
    let parts = replay.partitions().map_err(|e| e.to_string())?;
    let owned: Vec<(PartitionId, Option<Offset>)> = parts.iter().map(|p| (p.clone(), None)).collect();
    let mut reader = replay.open(&owned).map_err(|e| e.to_string())?;
    let (mut out, mut finished) = (Vec::new(), Vec::new());
    let mut polls = 0;
    while finished.len() < owned.len() {
        reader.poll(&mut out, &mut finished).map_err(|e| e.to_string())?;
        polls += 1;
        assert!(polls < 1_000_000, "replay of `{topic}` never finishes");
        std::thread::yield_now();
    }
    let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    for (index, record) in out {
        by_partition.entry(owned[index].0.partition).or_default().push(record);
    }
    Ok(by_partition)
}

/// Checks `archive` (whose layout is under test) against the `expected` records of `topic`, then
/// damages `victim` and checks the damage is reported by object.
pub(crate) fn check_layout(archive: &Archive, topic: &str, expected: &[(i32, Vec<Record>)], victim: &Path) {
    let layout = archive.layout.clone();
    let partitions = runtime().block_on(layout.partitions(archive, topic)).expect("partitions list");
    assert_eq!(partitions, expected.iter().map(|(p, _)| *p).collect::<Vec<_>>(), "{}: partitions", layout.name());
    for (p, records) in expected {
        let segments = runtime().block_on(layout.segments(archive, topic, *p)).expect("segments list");
        assert!(!segments.is_empty());
        assert!(segments.windows(2).all(|w| w[0].next_offset <= w[1].base_offset), "{}: ordered", layout.name());
        assert_eq!(segments[0].base_offset, records[0].offset, "{}: first offset", layout.name());
    }

    let replay = ReplaySource::open(archive.clone(), topic).expect("opens");
    let ends = replay.end_offsets();
    let replayed = replay_all(&replay, topic).expect("replays");
    for (p, records) in expected {
        assert_eq!(replayed.get(p), Some(records), "{}: partition {p} replays its records in order", layout.name());
        assert!(ends[p] > records.last().expect("non-empty").offset, "{}: handoff end", layout.name());
    }
    let summary = summarize(archive, topic).expect("summarizes");
    assert!(summary.damaged().is_empty(), "{}: {:?}", layout.name(), summary.damaged());
    let total: u64 = summary.partitions.values().map(|s| s.records).sum();
    assert_eq!(total, expected.iter().map(|(_, r)| r.len() as u64).sum::<u64>());

    // Damage: flip one byte in the middle of `victim`.
    let mut bytes =
        runtime().block_on(async { archive.store.get(victim).await?.bytes().await }).expect("victim exists").to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    runtime().block_on(archive.store.put(victim, bytes.into())).expect("rewrite victim");
    let summary = summarize(archive, topic).expect("summarizes damaged");
    let damaged = summary.damaged();
    assert_eq!(damaged.len(), 1, "{}: exactly the victim is damaged: {damaged:?}", layout.name());
    assert_eq!(damaged[0].0, victim.to_string());
    let replay = ReplaySource::open(archive.clone(), topic).expect("opens");
    let error = replay_all(&replay, topic).expect_err("a damaged archive fails replay");
    assert!(error.contains(victim.as_ref()), "{}: error names the object: {error}", layout.name());
    assert!(error.contains("byte offset"), "{error}");
}
