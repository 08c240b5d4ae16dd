//! Restartable like counts over a growing history: several runs, each over a longer prefix of
//! every partition, with the archive growing between runs, random crashes (each followed by the
//! same run again), 1 or 2 workers, exact or coarsened backfill times. The output of the last run
//! must be what one uninterrupted run over all records writes: byte for byte with exact times, and
//! with a granularity the same final state and the same accumulated output at every coarse time
//! as the batch reference over exact times.
//!
//! Re-run a failure with the seed proptest prints, or raise `PROPTEST_CASES` for a longer search.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kappa_engine::{CheckpointConfig, ClusterConfig, Codec, JobOptions, JsonLinesSink, Record, SourceFactory};
use kappa_examples::like_counts::{self, Kind, Like, PostLikes};
use kappa_proptests::{reference_times, split_input, Crashing, SplitPartition};
use object_store::memory::InMemory;
use object_store::ObjectStore;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Run {
    /// Per partition: records this run sees (a prefix), and how many of them are archived.
    seen: Vec<(usize, usize)>,
    /// Crash after this many records, then run again.
    crash_after: Option<i64>,
}

#[derive(Clone, Debug)]
struct Case {
    partitions: Vec<Vec<Like>>,
    runs: Vec<Run>,
    workers: usize,
    granularity_ms: u64,
}

fn likes() -> impl Strategy<Value = Vec<Like>> {
    prop::collection::vec((0u64..4, 0u64..3, prop::bool::weighted(0.65), 0u64..8_000), 1..40).prop_map(|raw| {
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

/// Non-decreasing cut points in `0..=n`, the last one `n`: each run's prefix, or archive end.
fn growing(n: usize, runs: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..=n, runs).prop_map(move |mut cuts| {
        cuts.sort_unstable();
        if let Some(last) = cuts.last_mut() {
            *last = n;
        }
        cuts
    })
}

fn case() -> impl Strategy<Value = Case> {
    (prop::collection::vec(likes(), 1..3), 2usize..4, 1usize..=2, prop::sample::select(vec![0u64, 1_000]))
        .prop_flat_map(|(partitions, runs, workers, granularity_ms)| {
            let per_partition: Vec<_> = partitions
                .iter()
                .map(|p| (growing(p.len(), runs), prop::collection::vec(0.0f64..=1.0, runs)))
                .collect();
            let crashes = prop::collection::vec(prop::option::weighted(0.4, 1i64..60), runs);
            (Just(partitions), per_partition, crashes, Just(workers), Just(granularity_ms))
        })
        .prop_map(|(partitions, per_partition, crashes, workers, granularity_ms)| {
            let runs = (0..crashes.len())
                .map(|r| {
                    // Archive ends grow too: each run archives a fraction of what it sees, never
                    // less than the previous run archived.
                    let mut seen = Vec::new();
                    for (cuts, fractions) in &per_partition {
                        let prefix = cuts[r];
                        let previous = if r == 0 { 0 } else { archived_by(cuts, fractions, r - 1) };
                        let archived = ((prefix as f64 * fractions[r]) as usize).clamp(previous.min(prefix), prefix);
                        seen.push((prefix, archived));
                    }
                    Run { seen, crash_after: crashes[r] }
                })
                .collect();
            Case { partitions, runs, workers, granularity_ms }
        })
}

/// How many records run `r` archives of the partition with these cuts (the recursion of `case`).
fn archived_by(cuts: &[usize], fractions: &[f64], r: usize) -> usize {
    let mut archived = 0;
    for run in 0..=r {
        archived = ((cuts[run] as f64 * fractions[run]) as usize).clamp(archived.min(cuts[run]), cuts[run]);
    }
    archived
}

fn record(offset: usize, like: &Like) -> Record {
    Record {
        offset: offset as i64,
        timestamp: Some(like.ts as i64),
        key: Some(Bytes::from(like.user.to_string())),
        value: Some(Bytes::from(serde_json::to_vec(like).expect("serializes"))),
    }
}

fn source(case: &Case, run: &Run, crash_after: Option<i64>) -> Arc<dyn SourceFactory> {
    let parts: Vec<SplitPartition> = case
        .partitions
        .iter()
        .zip(&run.seen)
        .map(|(likes, &(prefix, archived))| SplitPartition {
            records: likes[..prefix].iter().enumerate().map(|(i, l)| record(i, l)).collect(),
            split: archived,
            segment: 3,
        })
        .collect();
    let inner = split_input("likes", &parts, 2);
    match crash_after {
        Some(n) => Arc::new(Crashing::new(inner, Arc::new(AtomicI64::new(n)))),
        None => inner,
    }
}

fn checkpoint(store: Arc<dyn ObjectStore>, granularity_ms: u64) -> CheckpointConfig {
    CheckpointConfig {
        pipeline_version: 1,
        store,
        prefix: object_store::path::Path::from("ckpt"),
        location: "memory:///ckpt".into(),
        every: Duration::from_millis(5),
        pipeline: "like-counts".into(),
        fingerprint: format!("granularity={granularity_ms}"),
        codec: Codec::Postcard,
        keep: 2,
    }
}

fn job(
    case: &Case,
    source: Arc<dyn SourceFactory>,
    out: &std::path::Path,
    store: Arc<dyn ObjectStore>,
) -> kappa_engine::Result<()> {
    let options = JobOptions {
        lateness_ms: 1_000,
        backfill_granularity_ms: case.granularity_ms,
        checkpoint: Some(checkpoint(store, case.granularity_ms)),
        ..JobOptions::default()
    };
    let sink = JsonLinesSink::new(Some(out.to_path_buf()));
    like_counts::run(&ClusterConfig::threads(case.workers), options, source, sink).map(|_| ())
}

/// `((post, likes), time, diff)` of a JSON-lines output.
fn updates(text: &str) -> Vec<(PostLikes, u64, isize)> {
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let row: PostLikes = serde_json::from_value(v["data"].clone()).expect("a row");
            (row, v["time"].as_u64().expect("time"), v["diff"].as_i64().expect("diff") as isize)
        })
        .collect()
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    for run in &case.runs {
        if run.crash_after.is_some() {
            let _ = job(case, source(case, run, run.crash_after), &out, store.clone());
        }
        job(case, source(case, run, None), &out, store.clone()).expect("the run completes");
    }
    let got = std::fs::read_to_string(&out).expect("output");
    if case.granularity_ms == 0 {
        // One uninterrupted run over all records, restartable as the others.
        let last = case.runs.last().expect("runs").clone();
        let reference = dir.path().join("reference.jsonl");
        job(case, source(case, &last, None), &reference, Arc::new(InMemory::new())).expect("reference run");
        prop_assert_eq!(got, std::fs::read_to_string(&reference).expect("reference"), "byte for byte");
        return Ok(());
    }
    // Exact times by the definition, for the reference.
    let mut timed: Vec<(u64, Like)> = Vec::new();
    for likes in &case.partitions {
        let ts: Vec<u64> = likes.iter().map(|l| l.ts).collect();
        timed.extend(reference_times(&ts, 1_000).into_iter().zip(likes.iter().copied()));
    }
    let updates = updates(&got);
    let g = case.granularity_ms;
    let last = timed.iter().map(|(t, _)| *t).max().unwrap_or(0);
    for t in (0..=last.div_ceil(g) * g).step_by(g as usize).chain([u64::MAX]) {
        let expected = like_counts::reference(timed.iter().filter(|(rt, _)| *rt <= t).map(|(_, l)| l));
        let actual = like_counts::final_result(updates.iter().filter(|(_, ut, _)| *ut <= t).map(|(d, _, r)| (*d, *r)));
        prop_assert_eq!(actual, Ok(expected), "accumulated output at coarse time {} differs from the reference", t);
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn reruns_over_a_growing_history_with_crashes_end_with_one_runs_output(case in case()) {
        run_case(&case)?;
    }
}
