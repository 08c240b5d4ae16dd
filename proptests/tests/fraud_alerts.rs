//! Fraud alerts, replayed from an archive and continued live, against the batch reference, on the
//! property harness: random payment histories (several partitions, out-of-order timestamps,
//! payments expiring after an hour), archive/live splits, 1 to 4 workers, batchings,
//! granularities and restarts. The accumulated output at every completed time, including every
//! time a payment expires, equals the batch reference at that time.
//!
//! Re-run a failure with `cargo test -p kappa-proptests --test fraud_alerts`; raise
//! `PROPTEST_CASES` for a longer search.

use std::collections::BTreeSet;

use kappa_engine::Record;
use kappa_examples::fraud_alerts::{self, FraudAlerts, Payment, Ring, PAYMENTS, WINDOW_MS};
use kappa_proptests::harness::Harness;
use kappa_proptests::json_record;
use proptest::prelude::*;

/// About ten payments per hour per partition, disordered by up to 15 minutes.
fn payments() -> impl Strategy<Value = Vec<Payment>> {
    prop::collection::vec((0u64..7, 0u64..5, 1u64..9, 0u64..900_000), 0..25).prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (card, device, tens_of_thousands, jitter))| Payment {
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

fn record(payment: &Payment) -> Record {
    json_record(0, payment)
}

fn harness() -> Harness<FraudAlerts> {
    Harness::new(FraudAlerts)
        .input(&PAYMENTS, prop::collection::vec(payments(), 1..4), record)
        .reference(|at| {
            let timed: Vec<(u64, Payment)> =
                at.timed::<Payment>(fraud_alerts::INPUT).into_iter().map(|(t, p)| (t, *p)).collect();
            fraud_alerts::reference_at(&timed, at.time())
        })
        // Output changes when a payment arrives and when it expires, an hour later.
        .also_at(|t| vec![t + WINDOW_MS])
        .granularities([0, 0, 60_000])
}

#[test]
fn fraud_rings_equal_the_batch_reference_at_every_time() {
    harness().cases(256).check();
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
    // And the pipeline agrees on that history, whatever the harness does with it.
    Harness::new(FraudAlerts)
        .input(&PAYMENTS, Just(vec![ring]), record)
        .reference(|at| {
            let timed: Vec<(u64, Payment)> =
                at.timed::<Payment>(fraud_alerts::INPUT).into_iter().map(|(t, p)| (t, *p)).collect();
            fraud_alerts::reference_at(&timed, at.time())
        })
        .also_at(|t| vec![t + WINDOW_MS])
        .cases(16)
        .check();
}
