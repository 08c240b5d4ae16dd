//! Like counts, replayed from an archive and continued live, against the batch reference.
//!
//! For random like histories (retractions, out-of-order timestamps, several partitions), split
//! between archive and live at random offsets, on 1 to 4 workers with random batchings and
//! segment sizes: the accumulated output at every completed timestamp equals the batch reference
//! over the records whose time is at most that timestamp.
//!
//! Re-run a failure with the seed proptest prints, or raise `PROPTEST_CASES` for a longer search.

use std::sync::Arc;

use bytes::Bytes;
use kappa_engine::{ClusterConfig, JobOptions, MemorySink, Record};
use kappa_examples::like_counts::{self, Kind, Like, PostLikes};
use kappa_proptests::{reference_times, split_input, SplitPartition};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Partition {
    likes: Vec<Like>,
    /// Records before this index are archived, the rest are read live.
    split: usize,
    /// Records per archived segment.
    segment: usize,
}

#[derive(Clone, Debug)]
struct Case {
    partitions: Vec<Partition>,
    workers: usize,
    batch: usize,
    lateness_ms: u64,
    /// Backfill granularity (0: exact times during the backfill too).
    granularity_ms: u64,
}

fn like() -> impl Strategy<Value = (u64, u64, bool, u64)> {
    (0u64..4, 0u64..3, prop::bool::weighted(0.65), 0u64..8_000)
}

fn partition() -> impl Strategy<Value = Partition> {
    prop::collection::vec(like(), 0..40).prop_flat_map(|raw| {
        let n = raw.len();
        let likes: Vec<Like> = raw
            .into_iter()
            .enumerate()
            .map(|(i, (user, post, is_like, jitter))| Like {
                // A steady clock with jitter of up to 8 s: disorder within and beyond the lateness.
                ts: 10_000 + i as u64 * 300 + jitter,
                user,
                post,
                kind: if is_like { Kind::Like } else { Kind::Unlike },
            })
            .collect();
        (Just(likes), 0..=n, 1usize..8).prop_map(|(likes, split, segment)| Partition { likes, split, segment })
    })
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(partition(), 1..4),
        1usize..=4,
        1usize..10,
        prop::sample::select(vec![0u64, 1_000, 5_000]),
        prop::sample::select(vec![0u64, 0, 1_000, 7_000]),
    )
        .prop_map(|(partitions, workers, batch, lateness_ms, granularity_ms)| Case {
            partitions,
            workers,
            batch,
            lateness_ms,
            granularity_ms,
        })
}

fn record(offset: usize, like: &Like) -> Record {
    Record {
        offset: offset as i64,
        timestamp: Some(like.ts as i64),
        key: Some(Bytes::from(like.user.to_string())),
        value: Some(Bytes::from(serde_json::to_vec(like).expect("serializes"))),
    }
}

/// The case's history served as an archive handed off to a live source.
fn build_source(case: &Case) -> Arc<dyn kappa_engine::SourceFactory> {
    let parts: Vec<SplitPartition> = case
        .partitions
        .iter()
        .map(|part| SplitPartition {
            records: part.likes.iter().enumerate().map(|(i, l)| record(i, l)).collect(),
            split: part.split,
            segment: part.segment,
        })
        .collect();
    split_input("likes", &parts, case.batch)
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let source = build_source(case);
    let sink = MemorySink::<PostLikes>::new();
    let options = JobOptions {
        lateness_ms: case.lateness_ms,
        backfill_granularity_ms: case.granularity_ms,
        ..JobOptions::default()
    };
    let report =
        like_counts::run(&ClusterConfig::threads(case.workers), options, source, sink.clone()).expect("the job runs");
    let total: usize = case.partitions.iter().map(|p| p.likes.len()).sum();
    prop_assert_eq!(report.records, total as u64, "every record read exactly once");
    prop_assert!(sink.is_finished());

    // (time, like) for every record, times by the definition; archived records' times rounded up
    // to the backfill granularity.
    let mut timed: Vec<(u64, Like)> = Vec::new();
    for part in &case.partitions {
        let ts: Vec<u64> = part.likes.iter().map(|l| l.ts).collect();
        let times = reference_times(&ts, case.lateness_ms).into_iter().enumerate().map(|(i, t)| {
            let g = case.granularity_ms;
            if i < part.split && g > 1 {
                t.div_ceil(g) * g
            } else {
                t
            }
        });
        timed.extend(times.zip(part.likes.iter().copied()));
    }
    let updates = sink.updates();
    let mut times: Vec<u64> = timed.iter().map(|(t, _)| *t).collect();
    times.sort();
    times.dedup();
    for (_, t, _) in &updates {
        prop_assert!(times.binary_search(t).is_ok(), "an update at time {} where no record has that time", t);
    }
    for &t in &times {
        let expected = like_counts::reference(timed.iter().filter(|(rt, _)| *rt <= t).map(|(_, l)| l));
        let actual = like_counts::final_result(updates.iter().filter(|(_, ut, _)| *ut <= t).map(|(d, _, r)| (*d, *r)));
        prop_assert_eq!(actual, Ok(expected), "accumulated output at time {} differs from the reference", t);
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn replay_then_live_equals_batch_at_every_time(case in case()) {
        run_case(&case)?;
    }
}

/// The same history gives the same `(data, time, diff)` output whatever the workers, batching and
/// split: output is a function of the records alone.
#[test]
fn output_is_identical_across_workers_batchings_and_splits() {
    let likes: Vec<Like> = (0..60u64)
        .map(|i| Like {
            ts: 1_000 + i * 250 + (i * 7919 % 6_000),
            user: i % 5,
            post: i % 3,
            kind: if i % 4 == 3 { Kind::Unlike } else { Kind::Like },
        })
        .collect();
    let mut outputs = Vec::new();
    for (workers, batch, split, segment) in [(1, 100, 0, 1), (2, 1, 30, 4), (4, 3, 60, 7), (3, 7, 13, 2)] {
        let case = Case {
            partitions: vec![
                Partition { likes: likes[..30].to_vec(), split: split.min(30), segment },
                Partition { likes: likes[30..].to_vec(), split: split / 2, segment },
            ],
            workers,
            batch,
            lateness_ms: 5_000,
            granularity_ms: 0,
        };
        run_case(&case).expect("matches the reference");
        let source = build_source(&case);
        let sink = MemorySink::<PostLikes>::new();
        like_counts::run(&ClusterConfig::threads(workers), JobOptions::default(), source, sink.clone()).expect("runs");
        outputs.push(sink.updates());
    }
    assert!(!outputs[0].is_empty());
    for other in &outputs[1..] {
        assert_eq!(&outputs[0], other);
    }
}
