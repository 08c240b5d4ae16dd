//! Fraud alerts, replayed from an archive and continued live, against the batch reference.
//!
//! For random payment histories (several partitions, out-of-order timestamps, payments expiring
//! after an hour), split between archive and live at random offsets, on 1 to 4 workers: the
//! accumulated output at every completed timestamp equals the batch reference at that time.

use std::collections::BTreeSet;

use kappa_engine::{ClusterConfig, JobOptions, MemorySink};
use kappa_examples::fraud_alerts::{self, Payment, Ring, WINDOW_MS};
use kappa_proptests::{accumulated_at, json_record, reference_times, split_input, SplitPartition};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Case {
    partitions: Vec<(Vec<Payment>, usize, usize)>,
    workers: usize,
    batch: usize,
}

fn payments() -> impl Strategy<Value = Vec<Payment>> {
    prop::collection::vec((0u64..7, 0u64..5, 1u64..9, 0u64..900_000), 0..25).prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (card, device, tens_of_thousands, jitter))| Payment {
                // About ten payments per hour per partition, disordered by up to 15 minutes.
                ts: 10_000_000 + i as u64 * 400_000 + jitter,
                payment: i as u64,
                card,
                device,
                merchant: 1,
                amount_cents: tens_of_thousands * 10_000,
            })
            .collect()
    })
}

fn case() -> impl Strategy<Value = Case> {
    let partition = payments().prop_flat_map(|ps| {
        let n = ps.len();
        (Just(ps), 0..=n, 1usize..6)
    });
    (prop::collection::vec(partition, 1..4), 1usize..=4, 1usize..8).prop_map(|(partitions, workers, batch)| Case {
        partitions,
        workers,
        batch,
    })
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let parts: Vec<SplitPartition> = case
        .partitions
        .iter()
        .map(|(ps, split, segment)| SplitPartition {
            records: ps.iter().enumerate().map(|(i, p)| json_record(i, p)).collect(),
            split: *split,
            segment: *segment,
        })
        .collect();
    let source = split_input("payments", &parts, case.batch);
    let sink = MemorySink::<Ring>::new();
    let report = fraud_alerts::run(&ClusterConfig::threads(case.workers), JobOptions::default(), source, sink.clone())
        .expect("the job runs");
    let total: usize = case.partitions.iter().map(|(ps, _, _)| ps.len()).sum();
    prop_assert_eq!(report.records, total as u64);

    let mut timed = Vec::new();
    for (ps, _, _) in &case.partitions {
        let ts: Vec<u64> = ps.iter().map(|p| p.ts).collect();
        timed.extend(reference_times(&ts, JobOptions::default().lateness_ms).into_iter().zip(ps.iter().copied()));
    }
    // Outputs change only when a payment arrives or expires.
    let mut times: Vec<u64> = timed.iter().flat_map(|(t, _)| [*t, t + WINDOW_MS]).collect();
    times.sort();
    times.dedup();
    let updates = sink.updates();
    for (_, t, _) in &updates {
        prop_assert!(times.binary_search(t).is_ok(), "an update at time {} when nothing arrived or expired", t);
    }
    for &t in &times {
        let expected = fraud_alerts::reference_at(&timed, t);
        let actual = accumulated_at(&updates, t).map_err(TestCaseError::fail)?;
        prop_assert_eq!(actual, expected, "accumulated output at time {} differs from the reference", t);
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn fraud_rings_equal_the_batch_reference_at_every_time(case in case()) {
        run_case(&case)?;
    }
}

/// A planted ring is found exactly while its payments are active.
#[test]
fn a_planted_ring_alerts_and_then_expires() {
    let p = |i: u64, card, device| Payment {
        ts: 1_000_000 + i * 1_000,
        payment: i,
        card,
        device,
        merchant: 9,
        amount_cents: 40_000,
    };
    let ring = vec![p(0, 3, 1), p(1, 4, 1), p(2, 4, 2), p(3, 8, 2)];
    let timed: Vec<(u64, Payment)> = ring.iter().map(|p| (p.ts, *p)).collect();
    let alert = Ring { ring: 3, cards: 3, devices: 2, amount_cents: 160_000 };
    assert_eq!(fraud_alerts::reference_at(&timed, 1_003_000), BTreeSet::from([alert]));
    assert!(fraud_alerts::reference_at(&timed, 1_000_000 + WINDOW_MS + 1_000).is_empty());
    let case = Case { partitions: vec![(ring, 2, 1)], workers: 2, batch: 1 };
    run_case(&case).expect("matches the reference");
}
