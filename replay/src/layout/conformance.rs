//! The conformance suite every archive layout passes: listing, order, offsets, CRC, handoff end,
//! damage reporting, and a segment missing from the middle of a partition. Each layout's test
//! writes the same history in its own format (plus whatever the format adds: relative offsets,
//! transactions) and calls [`check_layout`].

use std::collections::BTreeMap;

use bytes::Bytes;
use kappa_engine::{Offset, PartitionId, Record, SourceFactory};
use object_store::path::Path;
use object_store::ObjectStoreExt;

use crate::archive::{runtime, Archive};
use crate::error::Error;
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

/// Replays every partition of `topic`, failing with replay's own error (so tests can match the
/// variant, not only its text).
fn replay_all(replay: &ReplaySource, topic: &str) -> Result<BTreeMap<i32, Vec<Record>>, Error> {
    let ours = |e: kappa_engine::BoxError| match e.downcast::<Error>() {
        Ok(error) => *error,
        Err(other) => panic!("replay of `{topic}` failed with an error not of kappa-replay: {other}"),
    };
    let parts = replay.partitions().map_err(ours)?;
    let owned: Vec<(PartitionId, Option<Offset>)> = parts.iter().map(|p| (p.clone(), None)).collect();
    let mut reader = replay.open(&owned).map_err(ours)?;
    let (mut out, mut finished) = (Vec::new(), Vec::new());
    let mut polls = 0;
    while finished.len() < owned.len() {
        reader.poll(&mut out, &mut finished).map_err(ours)?;
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

fn get(archive: &Archive, key: &Path) -> Bytes {
    runtime().block_on(async { archive.store.get(key).await?.bytes().await }).expect("object exists")
}

/// Checks `archive` (whose layout is under test) against the `expected` records of `topic`, then
/// damages `victim` and checks the damage is reported by object, then deletes `missing` (a segment
/// in the middle of a partition, neither its first nor its last) and checks the hole is refused
/// by replay and listed by `verify` or, for a layout that cannot tell, stated by `inspect`.
pub(crate) fn check_layout(
    archive: &Archive,
    topic: &str,
    expected: &[(i32, Vec<Record>)],
    victim: &Path,
    missing: &Path,
) {
    check_layout_damaging(archive, topic, expected, victim, None, missing)
}

/// As [`check_layout`], damaging `victim` at byte `damage_at` (its middle when `None`): for a
/// format whose objects hold unchecked metadata beside checked data (Parquet's footer), where the
/// damage must land in the checked part to be seen.
pub(crate) fn check_layout_damaging(
    archive: &Archive,
    topic: &str,
    expected: &[(i32, Vec<Record>)],
    victim: &Path,
    damage_at: Option<usize>,
    missing: &Path,
) {
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
    assert!(summary.partitions.values().all(|p| p.holes.is_empty() && p.notes.iter().all(|n| !n.contains("offsets"))));
    let total: u64 = summary.partitions.values().map(|s| s.records).sum();
    assert_eq!(total, expected.iter().map(|(_, r)| r.len() as u64).sum::<u64>());

    // Damage: flip one byte in the middle of `victim`.
    let original = get(archive, victim);
    let mut bytes = original.to_vec();
    let middle = damage_at.unwrap_or(bytes.len() / 2);
    bytes[middle] ^= 0x5a;
    runtime().block_on(archive.store.put(victim, bytes.into())).expect("rewrite victim");
    let summary = summarize(archive, topic).expect("summarizes damaged");
    let damaged = summary.damaged();
    assert_eq!(damaged.len(), 1, "{}: exactly the victim is damaged: {damaged:?}", layout.name());
    assert_eq!(damaged[0].0, victim.to_string());
    let replay = ReplaySource::open(archive.clone(), topic).expect("opens");
    let error = replay_all(&replay, topic).expect_err("a damaged archive fails replay").to_string();
    assert!(error.contains(victim.as_ref()), "{}: error names the object: {error}", layout.name());
    assert!(error.contains("byte offset"), "{error}");
    runtime().block_on(archive.store.put(victim, original.into())).expect("restore victim");

    check_missing_segment(archive, topic, missing);
}

/// Deletes `missing`, a segment in the middle of its partition, and checks that replay refuses
/// the hole with [`Error::ArchiveHole`] and `verify` lists it, or, where the layout cannot tell a
/// hole from a legitimate offset gap, that `inspect` says so at the gap. Restores it after.
fn check_missing_segment(archive: &Archive, topic: &str, missing: &Path) {
    let layout = archive.layout.clone();
    let name = layout.name();
    let mut found = None;
    for p in runtime().block_on(layout.partitions(archive, topic)).expect("partitions list") {
        let segments = runtime().block_on(layout.segments(archive, topic, p)).expect("segments list");
        if let Some(i) = segments.iter().position(|s| s.key == *missing) {
            assert!(0 < i && i + 1 < segments.len(), "{name}: `{missing}` is a middle segment");
            found = Some((p, segments[i].base_offset, segments[i + 1].base_offset));
        }
    }
    let (partition, base, next) = found.unwrap_or_else(|| panic!("{name}: `{missing}` is a listed segment"));
    let bytes = get(archive, missing);
    runtime().block_on(archive.store.delete(missing)).expect("delete the middle segment");

    let summary = summarize(archive, topic).expect("summarizes an archive with a hole");
    let part = &summary.partitions[&partition];
    match layout.cannot_tell_holes() {
        None => {
            let replay = ReplaySource::open(archive.clone(), topic).and_then(|r| replay_all(&r, topic));
            match replay {
                Err(Error::ArchiveHole { topic: t, partition: p, expected_offset, found_offset, .. }) => {
                    assert_eq!((t.as_str(), p), (topic, partition), "{name}: the hole names topic and partition");
                    assert_eq!((expected_offset, found_offset), (base, next), "{name}: the hole's offsets");
                }
                other => panic!("{name}: replay over a missing segment must fail with ArchiveHole, got {other:?}"),
            }
            assert_eq!(part.holes.len(), 1, "{name}: verify lists the hole: {:?}", part.holes);
            assert_eq!((part.holes[0].expected_offset, part.holes[0].found_offset), (base, next));
            let listed = summary.damaged();
            assert!(
                listed.iter().any(|(_, why)| why.contains("has a hole") && why.contains(&format!("{base}..{next}"))),
                "{name}: verify's list shows the hole: {listed:?}"
            );
        }
        Some(reason) => {
            assert!(part.holes.is_empty(), "{name}: a layout that cannot tell reports no hole");
            let note = format!("offsets {base}..{next}");
            assert!(
                part.notes.iter().any(|n| n.contains(&note) && n.contains(reason)),
                "{name}: inspect says at the gap that it cannot tell: {:?}",
                part.notes
            );
            let replay = ReplaySource::open(archive.clone(), topic).expect("opens");
            replay_all(&replay, topic).expect("a layout that cannot tell replays on");
        }
    }
    runtime().block_on(archive.store.put(missing, bytes.into())).expect("restore the missing segment");
}
