//! Like counts, replayed from an archive and continued live, against the batch reference, on the
//! property harness: random like histories (retractions, out-of-order timestamps, several
//! partitions), random archive/live splits, 1 to 4 workers, random batchings, lateness and backfill
//! granularities, and crash-and-restart from checkpoints. The accumulated output at every completed
//! time equals the batch reference over the records whose time is at most that time.
//!
//! Re-run a failure with `cargo test -p kappa-proptests --test like_counts`: the failing seed is
//! saved in `like_counts.proptest-regressions`. Raise `PROPTEST_CASES` for a longer search.

use std::sync::Arc;

use bytes::Bytes;
use kappa_engine::{ClusterConfig, JobOptions, MemorySink, Record};
use kappa_examples::like_counts::{self, Kind, Like, LikeCounts, PostLikes, LIKES};
use kappa_proptests::harness::Harness;
use kappa_proptests::{split_input, SplitPartition};
use proptest::prelude::*;

/// One partition's likes: a steady clock with jitter of up to 8 s, so disorder within and beyond
/// the lateness.
fn likes() -> impl Strategy<Value = Vec<Like>> {
    prop::collection::vec((0u64..4, 0u64..3, prop::bool::weighted(0.65), 0u64..8_000), 0..40).prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (user, post, is_like, jitter))| Like {
                ts: 10_000 + i as u64 * 300 + jitter,
                user,
                post,
                kind: if is_like { Kind::Like } else { Kind::Unlike },
            })
            .collect()
    })
}

fn record(like: &Like) -> Record {
    Record {
        offset: 0,
        timestamp: Some(like.ts as i64),
        key: Some(Bytes::from(like.user.to_string())),
        value: Some(Bytes::from(serde_json::to_vec(like).expect("serializes"))),
    }
}

fn rows(counts: std::collections::BTreeMap<u64, u64>) -> Vec<PostLikes> {
    counts.into_iter().map(|(post, likes)| PostLikes { post, likes }).collect()
}

fn harness() -> Harness<LikeCounts> {
    Harness::new(LikeCounts)
        .input(&LIKES, prop::collection::vec(likes(), 1..4), record)
        .reference(|at| rows(like_counts::reference(at.events::<Like>(like_counts::INPUT))))
}

#[test]
fn replay_then_live_equals_batch_at_every_time() {
    harness().cases(512).check();
}

/// The harness is not a test that cannot fail: a reference that forgets unlikes is caught, at the
/// time of the first unlike that changes a count, with the shrunk history.
#[test]
fn a_wrong_reference_fails_at_the_first_differing_time() {
    let failure = Harness::new(LikeCounts)
        .input(&LIKES, prop::collection::vec(likes(), 1..4), record)
        .reference(|at| {
            let likes_only: Vec<&Like> =
                at.events::<Like>(like_counts::INPUT).into_iter().filter(|l| l.kind == Kind::Like).collect();
            rows(like_counts::reference(likes_only))
        })
        .lateness([0])
        .granularities([0])
        .restarts(false)
        .persist_failures(false)
        .cases(256)
        .try_check()
        .expect_err("a reference that ignores unlikes differs");
    let time = failure.first_differing_time().expect("fails at a time, not in the run");
    // Shrunk, the history is one like and the unlike that takes it back; with lateness 0 and no
    // disorder left to shrink away, the unlike's time is its timestamp, and that is where they part.
    assert!(failure.case.contains("Unlike"), "the shrunk history shows the unlike:\n{failure}");
    assert!(failure.case.contains(&format!("ts: {time}")), "the first differing time is the unlike's:\n{failure}");
    let text = failure.to_string();
    assert!(text.contains(&format!("at time {time}")) && text.contains("only in the reference"), "{text}");
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
        let records = |likes: &[Like]| -> Vec<Record> {
            likes.iter().enumerate().map(|(i, l)| Record { offset: i as i64, ..record(l) }).collect()
        };
        let parts = vec![
            SplitPartition { records: records(&likes[..30]), split: split.min(30), segment },
            SplitPartition { records: records(&likes[30..]), split: split / 2, segment },
        ];
        let source: Arc<dyn kappa_engine::SourceFactory> = split_input(like_counts::INPUT, &parts, batch);
        let sink = MemorySink::<PostLikes>::new();
        like_counts::run(&ClusterConfig::threads(workers), JobOptions::default(), source, sink.clone()).expect("runs");
        outputs.push(sink.updates());
    }
    assert!(!outputs[0].is_empty());
    for other in &outputs[1..] {
        assert_eq!(&outputs[0], other);
    }
}
