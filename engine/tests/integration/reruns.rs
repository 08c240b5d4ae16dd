//! A finished restartable job run again over more input (a daily backfill, a job that exited when
//! its input went idle) must end with what one uninterrupted run over all the records gives.

use std::sync::Arc;

use kappa_engine::{MemorySource, Time};
use object_store::memory::InMemory;
use object_store::ObjectStore;

use crate::common::{at, checkpoint, history, prefix, updates, Backfilled, Run};

#[test]
fn reruns_over_growing_input_end_with_the_uninterrupted_output_byte_for_byte() {
    let dir = tempfile::tempdir().expect("temp dir");
    let all = history();
    let reference = dir.path().join("reference.jsonl");
    Run::plain(1).count(MemorySource::new(all.clone()).with_batch(7), &reference).expect("uninterrupted run");
    let expected = std::fs::read_to_string(&reference).expect("reference");
    assert!(expected.lines().count() > 1_000);
    for workers in [1, 2] {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let out = dir.path().join(format!("daily-{workers}.jsonl"));
        // Day one sees 30% of each partition, day two 60%, day three everything, then a rerun
        // with nothing new.
        for per_mille in [300, 600, 1_000, 1_000] {
            let run = Run { checkpoint: Some(checkpoint(store.clone(), 0)), ..Run::plain(workers) };
            run.count(MemorySource::new(prefix(&all, per_mille)).with_batch(7), &out).expect("run completes");
        }
        let got = std::fs::read_to_string(&out).expect("output");
        assert_eq!(got.lines().count(), expected.lines().count(), "{workers} workers: as many lines");
        assert_eq!(got, expected, "{workers} workers: byte for byte");
    }
}

/// With a backfill granularity, records before the backfill's end get coarse times. A record read
/// live by one run is in the archive by the next; it must keep its exact time.
fn granular_reruns(live: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let all = history();
    let reference = dir.path().join("reference.jsonl");
    Run::plain(1).count(MemorySource::new(all.clone()).with_batch(7), &reference).expect("uninterrupted run");
    let exact = updates(&reference);
    let granularity = 200;
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let out = dir.path().join("granular.jsonl");
    // With live reading: run one reads half the history, its first half archived (backfill), the
    // rest live; run two the whole history, three quarters of it now archived. A replay alone
    // reads only archived records, and the archive grows between runs.
    let runs = if live {
        [(prefix(&all, 500), 500), (all.clone(), 750), (all.clone(), 1_000)]
    } else {
        [(prefix(&all, 300), 1_000), (prefix(&all, 700), 1_000), (all.clone(), 1_000)]
    };
    for (records, backfill) in runs {
        let run = Run { granularity, checkpoint: Some(checkpoint(store.clone(), granularity)), ..Run::plain(2) };
        run.count(Backfilled::new(records, backfill), &out).expect("run completes");
    }
    let coarse = updates(&out);
    let last = exact.iter().map(|u| u.1).max().expect("updates");
    let final_state = at(&coarse, Time::MAX);
    assert!(final_state.values().all(|&d| d == 1), "every row once, none retracted twice: {final_state:?}");
    assert_eq!(final_state, at(&exact, Time::MAX), "final state");
    for time in (0..=last + granularity).step_by(granularity as usize) {
        assert_eq!(at(&coarse, time), at(&exact, time), "output accumulated at coarse time {time}");
    }
}

#[test]
fn granular_reruns_after_the_backfill_grew_agree_with_exact_times_at_every_coarse_time() {
    granular_reruns(true);
}

#[test]
fn granular_replays_of_a_growing_archive_agree_with_exact_times_at_every_coarse_time() {
    granular_reruns(false);
}
